"""The client against the real local pool, in every api-version of the contract."""
from __future__ import annotations

import asyncio
import io
import os
import time
import uuid

import pytest
from fault_server import CountingTransport
from test_client_auth import FakeCredential

from remote_kernel.sessions import (
    SUPPORTED_API_VERSIONS,
    AzureIdentity,
    BadRequest,
    RemoteAuthenticationError,
    RemoteFileNotFound,
    SessionsClient,
    StaticToken,
)

V2_WITH_SESSIONS = ("2025-02-02-preview", "2025-10-02-preview")
NAMES = ["plain.txt", "with space.csv", "données été.txt", "日本語 ファイル.bin", "odd#name%20(1).txt"]


def run(coro, deadline: float = 90):
    return asyncio.run(asyncio.wait_for(coro, deadline))


def client_for(pool, version: str, **kwargs) -> SessionsClient:
    kwargs.setdefault("auth", StaticToken(pool.token))
    return SessionsClient(pool.endpoint, kwargs.pop("identifier", str(uuid.uuid4())), api_version=version, **kwargs)


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_executions_return_values_keep_state_and_report_failures_and_timeouts(pool, version):
    async def scenario():
        transport = CountingTransport()
        async with client_for(pool, version, transport=transport) as client:
            first = await client.execute("print('hi')\n1+1")
            assert len(transport.requests) == 1  # one synchronous cell, one request
            assert first.succeeded and first.stdout == "hi\n" and first.result == 2 and first.has_result

            quiet = await client.execute("x = 40")
            assert quiet.succeeded and not quiet.has_result and quiet.result is None
            assert (await client.execute("x + 2")).result == 42
            assert (await client.execute("'a' + 'b'")).result == "ab"
            assert (await client.execute("{'k': [1, 2.5, None]}")).result == "{'k': [1, 2.5, None]}"  # display text

            failed = await client.execute("1/0")
            assert failed.failed and failed.error.name == "ZeroDivisionError"
            assert failed.error.message == "division by zero" and "ZeroDivisionError" in failed.error.traceback
            assert (await client.execute("x")).result == 40  # a failure keeps the state

            timed_out = await client.execute("import time\ntime.sleep(30)", timeout=1)
            assert timed_out.failed and timed_out.error.name == "ExecutionTimeout"
            assert (await client.execute("1+1")).result == 2  # and the session still answers

    run(scenario())


def test_jupyter_repr_asks_for_the_ipython_text_where_the_version_has_it(pool):
    async def scenario():
        async with client_for(pool, "2025-10-02-preview") as client:
            assert (await client.execute("'nan'", jupyter_repr=True)).result == "'nan'"
            assert (await client.execute("'nan'")).result == "nan"
        async with client_for(pool, "2025-02-02-preview") as client:
            assert (await client.execute("'nan'", jupyter_repr=True)).result == "nan"  # not in this version

    run(scenario())


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_an_open_figure_comes_back_as_a_png_image(pool, version):
    async def scenario():
        async with client_for(pool, version) as client:
            execution = await client.execute(
                "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])",
                timeout=120)
            assert execution.succeeded, execution.stderr
            assert execution.image is not None and execution.image.format == "png"
            assert execution.image.data.startswith(b"\x89PNG\r\n\x1a\n")
            assert (await client.execute("len(plt.get_fignums())")).result == 0  # the figure was closed

    run(scenario())


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_every_file_operation_works_with_spaces_and_unicode_in_names(pool, version, tmp_path):
    contents = {name: f"{name}\n".encode() * (i + 1) + os.urandom(1000 * i) for i, name in enumerate(NAMES)}

    async def scenario():
        async with client_for(pool, version) as client:
            for name, data in contents.items():
                source = tmp_path / "source.bin"
                source.write_bytes(data)
                seen = []
                uploaded = await client.upload(source, name, progress=lambda d, t, seen=seen: seen.append((d, t)))
                assert uploaded.name == name and uploaded.size == len(data)
                assert seen[-1] == (len(data), len(data))

            listed = {f.name: f.size for f in await client.list_files()}
            assert {name: len(data) for name, data in contents.items()}.items() <= listed.items()

            for name, data in contents.items():
                assert (await client.file_info(name)).size == len(data)
                target = tmp_path / f"down-{NAMES.index(name)}"
                assert await client.download(name, target) == len(data)
                assert target.read_bytes() == data
                buffer = io.BytesIO()
                assert await client.download(f"/mnt/data/{name}", buffer) == len(data)
                assert buffer.getvalue() == data

            # the files are the session's own: the code sees them in /mnt/data
            seen_by_code = await client.execute(f"import os\nos.path.getsize('/mnt/data/{NAMES[3]}')")
            assert seen_by_code.result == len(contents[NAMES[3]])

            await client.delete_file(NAMES[1])
            with pytest.raises(RemoteFileNotFound):
                await client.file_info(NAMES[1])
            with pytest.raises(RemoteFileNotFound):
                await client.delete_file(NAMES[1])
            with pytest.raises(RemoteFileNotFound):
                await client.download(NAMES[1], tmp_path / "missing.bin")
            assert not (tmp_path / "missing.bin").exists()
            assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            assert NAMES[1] not in {f.name for f in await client.list_files()}

    run(scenario())


@pytest.mark.parametrize("version", ("2024-10-02-preview", "2025-10-02-preview"))
def test_v2_reaches_files_in_a_folder(pool, version):
    async def scenario():
        async with client_for(pool, version) as client:
            await client.execute("import os\nos.makedirs('/mnt/data/reports', exist_ok=True)")
            await client.upload(io.BytesIO(b"q1"), "reports/q 1.csv")
            assert [(f.name, f.size) for f in await client.list_files("reports")] == [("q 1.csv", 2)]
            root = {f.name: f for f in await client.list_files()}
            assert root["reports"].is_directory
            assert (await client.file_info("reports/q 1.csv")).size == 2
            buffer = io.BytesIO()
            await client.download("reports/q 1.csv", buffer)
            assert buffer.getvalue() == b"q1"

    run(scenario())


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_deleting_the_session_forgets_its_state_and_the_identifier_can_be_reused(pool, version):
    async def scenario():
        async with client_for(pool, version) as client:
            await client.execute("kept = 1")
            await client.upload(io.BytesIO(b"bye"), "bye.txt")
            if version in V2_WITH_SESSIONS:
                info = await client.session_info()
                assert info.identifier == client.identifier
            else:
                with pytest.raises(BadRequest, match="2025-02-02-preview"):
                    await client.session_info()

            await client.delete_session()
            await client.delete_session()  # already gone: still fine

            fresh = await client.execute("'kept' in globals()")
            assert fresh.succeeded and fresh.result is False
            assert "bye.txt" not in {f.name for f in await client.list_files()}

    run(scenario())


def test_one_cell_costs_one_request_and_the_token_is_fetched_once(pool):
    class PoolCredential(FakeCredential):
        def get_token(self, scope):
            super().get_token(scope)
            return type("Access", (), {"token": pool.token, "expires_on": int(time.time() + 3600)})()

    async def scenario():
        transport = CountingTransport()
        credential = PoolCredential()
        auth = AzureIdentity(credential=credential)
        async with client_for(pool, "2025-10-02-preview", auth=auth, transport=transport) as client:
            for i in range(4):
                assert (await client.execute(f"{i} * 2")).result == i * 2
            await client.list_files()
        assert len(transport.requests) == 5
        assert len(credential.calls) == 1

    run(scenario())


def test_cancelling_an_execution_interrupts_the_code_in_the_pool(pool):
    async def scenario():
        async with client_for(pool, "2025-10-02-preview") as client, \
                client_for(pool, "2025-10-02-preview", identifier=client.identifier) as watcher:
            await client.execute("import time, pathlib")
            task = asyncio.create_task(client.execute(
                "started = True\npathlib.Path('/mnt/data/started').write_text('1')\n"
                "time.sleep(120)\nfinished = True", timeout=200))
            deadline = time.monotonic() + 30
            while True:  # wait until the code is surely running
                try:
                    await watcher.file_info("started")
                    break
                except RemoteFileNotFound:
                    assert time.monotonic() < deadline, "the execution never started"
                    await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = await asyncio.wait_for(client.execute("(started, 'finished' in globals())"), 60)
            assert after.result == "(True, False)"  # a tuple is its display text

    run(scenario())


def test_a_wrong_token_is_an_authentication_error(pool):
    async def scenario():
        async with client_for(pool, "2025-10-02-preview", auth=StaticToken("wrong-token")) as client:
            with pytest.raises(RemoteAuthenticationError) as caught:
                await client.execute("1")
        assert caught.value.status_code == 401 and "wrong-token" not in caught.value.message

    run(scenario())


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_a_folder_longer_than_one_listing_page_is_listed_whole_in_every_version(pool, version):
    """The pool answers a listing in pages (a nextLink past 10,000 entries, v1 answers too): the client
    follows them, whatever the api-version, so no entry is silently left out."""
    async def scenario():
        async with client_for(pool, version) as client:
            made = await client.execute("for i in range(10_050):\n"
                                        "    open(f'/mnt/data/f{i:05}.txt', 'w').close()\n'made'")
            assert made.succeeded, made
            return await client.list_files()

    names = [entry.name for entry in run(scenario(), deadline=180)]
    assert len(names) == len(set(names)) == 10_050
    assert {"f00000.txt", "f09999.txt", "f10000.txt", "f10049.txt"} <= {name.rsplit("/", 1)[-1] for name in names}
