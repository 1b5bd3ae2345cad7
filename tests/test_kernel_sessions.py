"""The kernel's session lifecycle through jupyter_client: interrupt, shutdown, restart, lost sessions, failures."""
from __future__ import annotations

import socket
import uuid

import pytest
from kernel_support import (
    KERNEL_NAME,
    ROOT,
    collect,
    errors_of,
    install_kernelspec,
    kernel,
    listed_sessions,
    pool_delete_session,
    pool_env,
    pool_get,
    result_of,
    run,
    start_new_kernel,
    text_of,
    wait_for,
)

from remote_kernel.sessions import RetryPolicy

LOST = "remote session was lost"


def remote_files(pool, identifier: str) -> set[str]:
    response = pool_get(pool, "files", identifier)
    response.raise_for_status()
    return {entry.get("name") for entry in response.json().get("value", [])}


def test_interrupt_during_sleep_replies_and_keeps_state(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        run(kc, "x = 41")
        msg_id = kc.execute("import time\nopen('/mnt/data/sleeping', 'w').close()\ntime.sleep(60)")
        wait_for(lambda: "sleeping" in remote_files(pool, identifier), timeout=30, what="the cell to start")
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)  # not the sleep's 60 s
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        errors = errors_of(collect(kc, msg_id))
        assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
        # the remote code stopped (else this would wait behind the sleep) and the state is kept
        reply, outputs = run(kc, "x + 1", timeout=20)
        assert reply["status"] == "ok" and result_of(outputs) == "42"


def test_shutdown_deletes_the_session(pool):
    identifier = str(uuid.uuid4())
    install_kernelspec()
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, env=pool_env(pool, identifier), cwd=str(ROOT))
    try:
        run(kc, "x = 1")
        assert identifier in listed_sessions(pool)
    finally:
        kc.stop_channels()
    km.shutdown_kernel(now=False)
    assert identifier not in listed_sessions(pool)  # deleted by the kernel itself, before it exited


def test_keep_session_leaves_the_session_for_later(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier, REMOTE_KERNEL_KEEP_SESSION="1")) as (km, kc):
        run(kc, "kept = 'still here'")
    assert identifier in listed_sessions(pool)
    with kernel(pool_env(pool, identifier)) as (km, kc):
        _, outputs = run(kc, "kept")
        assert result_of(outputs) == "'still here'"


def test_restart_starts_a_fresh_session(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        run(kc, "before_restart = 1")
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=60)
        reply, outputs = run(kc, "before_restart")
        assert reply["status"] == "error" and reply["ename"] == "NameError"
        assert LOST not in text_of(outputs)


def test_session_deleted_behind_the_kernels_back_is_reported_once_and_the_next_cell_works(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        run(kc, "x = 1")
        assert pool_delete_session(pool, identifier).status_code in (200, 204)
        reply, outputs = run(kc, "y = 2\ny")
        assert reply["status"] == "ok" and result_of(outputs) == "2"
        assert LOST in text_of(outputs, "stderr")
        reply, outputs = run(kc, "y * 2")
        assert result_of(outputs) == "4" and LOST not in text_of(outputs)
        reply, _ = run(kc, "x")
        assert reply["ename"] == "NameError"


def test_killed_worker_is_reported_as_lost_state_and_the_next_cell_works(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        run(kc, "x = 1")
        reply, outputs = run(kc, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert reply["status"] == "error" and reply["ename"] == "SessionLost"
        assert len(errors_of(outputs)) == 1
        reply, outputs = run(kc, "'x' in dir()")
        assert reply["status"] == "ok" and result_of(outputs) == "False"
        assert text_of(outputs).count(LOST) <= 1


def test_unreachable_endpoint_gives_a_clear_error_and_the_kernel_stays_alive():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {"POOL_MANAGEMENT_ENDPOINT": f"http://127.0.0.1:{port}", "REMOTE_KERNEL_AUTH": "none"}
    from kernel_support import embedded_env

    with kernel({**embedded_env(), **env}) as (km, kc):
        # retried with backoff, then given up within the client's bound (RetryPolicy.total), not forever
        reply, outputs = run(kc, "1 + 1", timeout=RetryPolicy.total + 60)
        assert reply["status"] == "error" and reply["ename"] == "ServiceUnavailable"
        error, = errors_of(outputs)
        assert f"127.0.0.1:{port}" in error["evalue"] and "POOL_MANAGEMENT_ENDPOINT" in error["evalue"]
        assert km.is_alive()
        reply, _ = run(kc, "%lsmagic")
        assert reply["status"] == "ok"


def test_bad_configuration_is_shown_on_the_first_cell():
    from kernel_support import embedded_env

    env = {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9", "REMOTE_KERNEL_AUTH": "kerberos"}
    with kernel(env) as (km, kc):
        reply, outputs = run(kc, "1 + 1")
        assert reply["ename"] == "ConfigurationError" and "REMOTE_KERNEL_AUTH" in reply["evalue"]
        assert km.is_alive()


@pytest.mark.parametrize("api_version", ["2024-02-02-preview", "2025-02-02-preview"])
def test_older_api_versions_show_cells_the_same_way(pool, api_version):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier, REMOTE_KERNEL_API_VERSION=api_version)) as (km, kc):
        reply, outputs = run(kc, "print('hello'); 6 * 7")
        assert text_of(outputs, "stdout") == "hello\n" and result_of(outputs) == "42"
        _, outputs = run(kc, "'ab'")
        assert result_of(outputs) == "'ab'"
        _, outputs = run(kc, "import pandas as pd\npd.DataFrame({'x': [1, 2]})")
        assert result_of(outputs).split() == ["x", "0", "1", "1", "2"]
        reply, outputs = run(kc, "1 / 0")
        assert reply["ename"] == "ZeroDivisionError" and reply["evalue"] == "division by zero"
        assert [m["msg_type"] for m in outputs] == ["error"]
        _, outputs = run(kc, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
        assert any("image/png" in m["content"].get("data", {}) for m in outputs)


def test_the_kernels_own_pool_has_the_first_cells_session_ready_and_nothing_rides_with_that_cell():
    """Issue 27: with no endpoint, the session for the first cell is prepared while the kernel starts (the
    shim goes in on its own, out of the session's history); a pool elsewhere is not touched before a cell."""
    import asyncio

    from kernel_support import embedded_env

    from remote_kernel.kernel.config import KernelConfig
    from remote_kernel.kernel.languages import PYTHON
    from remote_kernel.kernel.remote import RemoteSession

    remote = RemoteSession(KernelConfig.from_env(embedded_env()), PYTHON)
    assert remote.embedded is not None

    async def first_cell() -> str:
        warming = remote.warm_up()
        assert warming is not None and remote.warm_up() is warming  # once
        await asyncio.wait({warming}, timeout=60)
        assert remote.rich.installed and remote.rich.refused is None
        client = await remote.client()
        assert await remote.install_rich(client, "x = 1") == ""  # nothing to put before the first cell
        execution = await client.execute("x = 1\nprint(len(In), sorted(k for k in dir() if k[:2] == '_i' and k[2:].isdigit()))")
        await client.aclose()
        return execution.stdout

    try:
        assert asyncio.run(first_cell()) == "2 ['_i1']\n"  # as a fresh ipykernel after one cell
    finally:
        remote.stop_pool()

    hosted = RemoteSession(KernelConfig.from_env({**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": "https://example.invalid"}),
                           PYTHON)

    async def not_touched() -> None:
        assert hosted.warm_up() is None

    asyncio.run(not_touched())
