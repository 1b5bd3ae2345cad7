"""The kernel's settings for its embedded pool, limits that are clamped, and failing fast where waiting cannot help."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import start_pool
from jupyter_client.manager import KernelManager
from kernel_support import (
    KERNEL_NAME,
    ROOT,
    embedded_env,
    errors_of,
    install_kernelspec,
    kernel,
    pool_env,
    run,
    text_of,
    wait_for,
)

from remote_kernel.kernel.config import KernelConfig

HOSTED = "https://eastus.dynamicsessions.io/subscriptions/s/resourceGroups/g/sessionPools/p"


def embedded_pool_argv(km: KernelManager) -> list[str]:
    """The command line of the kernel's embedded pool (its child `remote_kernel pool`)."""
    found: list[list[str]] = []

    def pool_is_up() -> bool:
        found[:] = [p.cmdline() for p in psutil.Process(km.provisioner.pid).children(recursive=True)
                    if "pool" in p.cmdline() and "remote_kernel" in p.cmdline()]
        return bool(found)

    wait_for(pool_is_up, timeout=30, what="the embedded pool to start")
    return found[0]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_the_kernels_limits_reach_its_embedded_pool():
    env = {**embedded_env(), "REMOTE_KERNEL_MEMORY": "300M", "REMOTE_KERNEL_TIMEOUT": "600",
           "REMOTE_KERNEL_DISK": "2G", "REMOTE_KERNEL_EGRESS": "disabled"}
    with kernel(env) as (km, kc):
        argv = embedded_pool_argv(km)
        assert option(argv, "--memory") == "300M"
        assert option(argv, "--disk") == "2G"
        assert option(argv, "--egress") == "disabled"
        assert option(argv, "--max-execution-time") == "600"  # past the hosted cap: the local pool takes it
        _, outputs = run(kc, "%session")
        shown = text_of(outputs)
        assert "300M  (REMOTE_KERNEL_MEMORY)" in shown and "600 s" in shown
        # the limit binds: 700 MB does not fit in 300M (with the default 1G it does, below)
        reply, outputs = run(kc, "x = bytearray(700 << 20)\nlen(x)")
        assert reply["status"] == "error", outputs
        error = errors_of(outputs)[0]
        assert error["ename"] in ("MemoryError", "SessionLost"), error
        if error["ename"] == "SessionLost":  # killed by the memory cgroup: the setting that raises it is named
            assert "REMOTE_KERNEL_MEMORY" in text_of(outputs, "stderr")
    with kernel(embedded_env()) as (km, kc):
        reply, outputs = run(kc, "x = bytearray(700 << 20)\nlen(x)")
        assert reply["status"] == "ok", outputs


def test_a_bad_embedded_setting_is_reported_on_the_first_cell():
    with kernel({**embedded_env(), "REMOTE_KERNEL_MEMORY": "lots"}) as (km, kc):
        reply, outputs = run(kc, "1 + 1")
        assert reply["status"] == "error"
        assert "REMOTE_KERNEL_MEMORY" in errors_of(outputs)[0]["evalue"]


def test_embedded_settings_with_an_endpoint_are_said_to_be_ignored_once(pool):
    env = pool_env(pool, str(uuid.uuid4()), REMOTE_KERNEL_MEMORY="2G")
    with kernel(env) as (km, kc):
        reply, outputs = run(kc, "print('hi')")
        assert reply["status"] == "ok"
        assert "REMOTE_KERNEL_MEMORY only sets up the embedded local pool" in text_of(outputs, "stderr")
        assert text_of(outputs, "stdout") == "hi\n"
        _, outputs = run(kc, "print('again')")
        assert text_of(outputs, "stderr") == ""


@pytest.mark.parametrize("raw, expected", [("600", 220.0), ("100", 100.0)])
def test_a_hosted_pool_caps_the_cell_time_limit_and_says_so(raw, expected):
    settings = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": HOSTED, "REMOTE_KERNEL_TIMEOUT": raw})
    assert settings.timeout == expected and settings.execution_limit == 220.0
    clamped = [n for n in settings.notices if "REMOTE_KERNEL_TIMEOUT" in n]
    assert bool(clamped) == (expected != float(raw))
    if clamped:
        assert "220" in clamped[0]
    local = KernelConfig.from_env({"REMOTE_KERNEL_TIMEOUT": raw})  # the embedded pool takes any limit
    assert local.timeout == float(raw) and not local.notices


def test_the_pools_execution_limit_binds():
    """`--max-execution-time` caps what a request asks for (220 by default, as the hosted service)."""
    pool = start_pool("--max-execution-time", "2", "--ready-sessions", "0")
    try:
        answer = httpx.post(f"{pool.endpoint}/executions", headers=pool.headers, timeout=60,
                            params={"api-version": "2025-10-02-preview", "identifier": str(uuid.uuid4())},
                            json={"code": "import time\ntime.sleep(30)", "timeoutInSeconds": 100}).json()
        # stopped at the pool's limit: at the request's 100 s the 30 s cell would have succeeded
        assert answer["status"] == "Failed" and answer["error"]["error"]["code"] == "ExecutionTimeout", answer
    finally:
        pool.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_loopback_endpoint_fails_fast_and_no_session_is_deleted_at_exit():
    install_kernelspec()
    env = {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "REMOTE_KERNEL_AUTH": "none"}
    log = Path(tempfile.mkstemp(prefix="rk-kernel-", suffix=".log")[1])
    km = KernelManager(kernel_name=KERNEL_NAME)
    with open(log, "wb") as stderr:
        km.start_kernel(env=env, cwd=str(ROOT), stderr=stderr)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        started = time.monotonic()
        reply, outputs = run(kc, "1 + 1")
        elapsed = time.monotonic() - started
        assert reply["status"] == "error" and reply["ename"] == "ServiceUnavailable"
        assert "cannot connect" in errors_of(outputs)[0]["evalue"]
        assert elapsed < 5, elapsed  # was 11 s of retries; a loopback refusal is given up after 0.5 s
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert "could not delete session" not in log.read_text(errors="replace")
    log.unlink()


def test_pool_cli_refuses_a_nonsense_execution_limit():
    done = subprocess.run([sys.executable, "-m", "remote_kernel", "pool", "--max-execution-time", "0", "--port", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "--max-execution-time" in done.stderr
