"""The lean transport of a pool on a Unix socket (sessions/unix_transport.py), against a real pool.

SessionsClient uses it for every `http+unix://` endpoint (the kernel's embedded pool): the same
answers and errors as httpx's own transport, connections kept between requests, an idle
connection the server closed never reused, a cancelled request's connection never reused.
"""
from __future__ import annotations

import asyncio
import io
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT

from remote_kernel.pool.web import KEEP_ALIVE
from remote_kernel.sessions import SessionsClient, StaticToken, unix_transport
from remote_kernel.sessions.models import ServiceUnavailable
from remote_kernel.sessions.unix_transport import UnixSocketTransport


@pytest.fixture(scope="module")
def socket_pool():
    folder = Path(tempfile.mkdtemp(prefix="rk-uds-"))
    token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if k != "POOL_MANAGEMENT_ENDPOINT"}
    env["REMOTE_KERNEL_TOKEN"] = token
    process = subprocess.Popen([sys.executable, "-m", "remote_kernel", "pool", "--socket", str(folder / "pool.sock"),
                                "--ready-sessions", "1", "--data-root", str(folder / "data")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    endpoint = None
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode()
        if line.startswith("export POOL_MANAGEMENT_ENDPOINT="):
            endpoint = line.split("=", 1)[1].strip()
            break
    assert endpoint and endpoint.startswith("http+unix://"), "the pool did not start on its socket"
    threading.Thread(target=process.stdout.read, daemon=True).start()
    yield endpoint, token
    process.terminate()
    process.wait(20)


def client_of(socket_pool) -> SessionsClient:
    endpoint, token = socket_pool
    return SessionsClient(endpoint, str(uuid.uuid4()), auth=StaticToken(token))


def transport_of(client: SessionsClient) -> UnixSocketTransport:
    transport = client._http._transport
    assert isinstance(transport, UnixSocketTransport)
    return transport


def test_executions_files_and_errors_go_through_one_kept_connection(socket_pool):
    async def scenario():
        async with client_of(socket_pool) as client:
            transport = transport_of(client)
            assert (await client.execute("x = 6 * 7\nx")).result == 42
            for _ in range(5):
                assert (await client.execute("x")).result == 42
            assert len(transport._idle) == 1  # one connection, kept between requests
            failed = await client.execute("1 / 0")
            assert failed.error is not None and failed.error.name == "ZeroDivisionError"
            data = os.urandom(5 << 20)
            await client.upload(io.BytesIO(data), "big.bin")
            back = io.BytesIO()
            await client.download("big.bin", back)
            assert back.getvalue() == data
            assert "big.bin" in [f.name for f in await client.list_files()]
            assert len(transport._idle) == 1

    asyncio.run(scenario())


def test_an_idle_connection_the_server_closed_is_not_reused(socket_pool, monkeypatch):
    monkeypatch.setattr(unix_transport, "KEEPALIVE_EXPIRY", 3600.0)  # only the server's closing counts here

    async def scenario():
        async with client_of(socket_pool) as client:
            transport = transport_of(client)
            await client.execute("1")
            kept = transport._idle[0]
            deadline = time.monotonic() + KEEP_ALIVE + 30
            while kept.reusable():  # the pool closes idle connections after KEEP_ALIVE seconds
                assert time.monotonic() < deadline, "the server never closed the idle connection"
                await asyncio.sleep(0.2)
            assert (await client.execute("2")).result == 2
            assert transport._idle and transport._idle[0] is not kept

    asyncio.run(scenario())


def test_a_cancelled_execution_drops_its_connection_and_the_next_request_works(socket_pool):
    async def scenario():
        async with client_of(socket_pool) as client:
            transport = transport_of(client)
            await client.execute("import time")
            task = asyncio.create_task(client.execute("time.sleep(30)", timeout=60))
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert transport._idle == []  # the cancelled exchange's connection is closed, not kept
            assert (await asyncio.wait_for(client.execute("'after'"), 60)).result == "after"

    asyncio.run(scenario())


def test_a_socket_nobody_listens_on_is_a_connection_error_that_says_so(tmp_path):
    async def scenario():
        path = tmp_path / "gone.sock"
        async with SessionsClient(f"http+unix://{str(path).replace('/', '%2F')}", "x",
                                  auth=StaticToken("t")) as client:
            with pytest.raises(ServiceUnavailable, match="cannot connect"):
                await client.execute("1")

    asyncio.run(scenario())
