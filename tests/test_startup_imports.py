"""Start-up imports only what the first answer needs, and the kernel's embedded pool stops cleanly.

A heavy module reached through a dependency (the MCP SDK's jsonschema built an RFC 3987 grammar at
import: seconds of every pool's start) comes back silently; these tests name the modules that a
pool must not have loaded when it starts listening, and a kernel after it is imported and has
answered kernel_info. Each runs in a fresh interpreter (a subprocess), where sys.modules is its own.
Not timed: what is measured is what is loaded, and the time is the benchmark's (docs/benchmarks.md).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kernel_support import embedded_env, install_kernelspec, run, start_new_kernel, text_of

ROOT = Path(__file__).resolve().parent.parent

#: never needed before a pool's first answer: the MCP server (loaded on its first request), its
#: schema validation and models, TLS certificates (only with --tls), the client side and the kernel
POOL_MUST_NOT_LOAD = ("mcp", "jsonschema", "rfc3987_syntax", "lark", "pydantic", "pydantic_core", "sse_starlette",
                      "cryptography", "certifi", "httpx", "httpcore", "IPython", "ipykernel", "jupyter_client",
                      "debugpy", "remote_kernel.pool.mcp_server", "remote_kernel.pool.tls", "remote_kernel.kernel",
                      "remote_kernel.sessions")
#: never needed by a kernel until its first cell (the sessions client comes then), nor ever (the pool's
#: server side, ipykernel's debugger: this kernel has none)
KERNEL_MUST_NOT_LOAD = ("debugpy", "httpx", "httpcore", "h11", "certifi", "idna", "anyio", "mcp", "jsonschema",
                        "rfc3987_syntax", "lark", "pydantic", "cryptography", "starlette", "uvicorn", "jedi",
                        "remote_kernel.sessions.client", "remote_kernel.pool")

#: runs the pool command with one change: when it starts serving (listening, no request yet), it
#: prints the names of its loaded modules
POOL_PROBE = """
import json, sys
from remote_kernel.pool import web
serving = web.PoolServer.main_loop
async def main_loop(self):
    print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
    await serving(self)
web.PoolServer.main_loop = main_loop
from remote_kernel.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: a kernel (with an endpoint: no embedded pool) made and asked for its kernel_info, then its modules
KERNEL_PROBE = """
import json, logging, sys
from remote_kernel.kernel.kernel import RemoteKernel
kernel = RemoteKernel(log=logging.getLogger("probe"))
assert kernel.kernel_info["implementation"] == "remote_kernel"
print("MODULES " + json.dumps(sorted(sys.modules)), flush=True)
"""


def loaded(names: list[str], forbidden: tuple[str, ...]) -> list[str]:
    """The forbidden modules (or any of their submodules) among `names`."""
    return sorted(name for name in names if any(name == bad or name.startswith(bad + ".") for bad in forbidden))


def pool_modules(*options: str) -> list[str]:
    folder = tempfile.mkdtemp(prefix="rk-imp-")  # short: a socket path holds ~107 bytes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "REMOTE_KERNEL_TOKEN": "startup-imports-token"}
    process = subprocess.Popen([sys.executable, "-c", POOL_PROBE, "pool", "--socket", f"{folder}/pool.sock",
                                "--ready-sessions", "0", *options], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("MODULES "):
                return json.loads(line[len("MODULES "):])
        raise AssertionError(f"the pool exited ({process.wait()}) before serving: {process.stderr.read()}")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_pool_without_mcp_starts_serving_without_the_mcp_sdk_tls_or_the_client_side():
    names = pool_modules("--mcp", "off")
    assert "uvicorn" in names and "starlette" in names  # the probe saw a serving pool
    assert loaded(names, POOL_MUST_NOT_LOAD) == []


def test_a_pool_with_mcp_on_loads_the_sdk_only_at_the_first_mcp_request():
    names = pool_modules()  # --mcp on is the default
    assert "uvicorn" in names
    assert loaded(names, POOL_MUST_NOT_LOAD) == []


def test_a_kernel_loads_neither_its_client_nor_the_debugger_before_its_first_cell():
    env = {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9", "REMOTE_KERNEL_TOKEN": "probe",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    answer = subprocess.run([sys.executable, "-c", KERNEL_PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120)
    assert answer.returncode == 0, answer.stderr
    names = json.loads(answer.stdout.split("MODULES ", 1)[1])
    assert "ipykernel.kernelbase" in names  # the probe made a kernel
    assert loaded(names, KERNEL_MUST_NOT_LOAD) == []


def pool_pids(kernel_pid: int) -> list[int]:
    """The kernel's embedded pool: its child running `remote_kernel pool`."""
    found = []
    for task in Path(f"/proc/{kernel_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"remote_kernel" in argv and b"pool" in argv:
                found.append(int(child))
    return found


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie not yet reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_embedded_pool_stops_by_itself_when_the_kernel_shuts_down(tmp_path):
    """No "did not stop within … killing it" in the kernel's log: the pool stops on its own, within the
    kernel's shutdown timeout, and its process is gone."""
    install_kernelspec()
    log = tmp_path / "kernel.log"
    with log.open("w") as stderr:
        km, kc = start_new_kernel(env=embedded_env(), cwd=str(ROOT), stderr=stderr)
        try:
            reply, outputs = run(kc, "import sys; print(sys.version_info[0])")
            assert reply["status"] == "ok" and text_of(outputs, "stdout").strip() == "3"
            deadline = time.monotonic() + 60
            while not pool_pids(km.provisioner.process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            pools = pool_pids(km.provisioner.process.pid)
            assert len(pools) == 1
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    deadline = time.monotonic() + 10
    while not gone(pools[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pools[0])
    assert "did not stop" not in log.read_text() and "killing it" not in log.read_text()


def test_a_kernels_shutdown_says_goodbye_as_ipykernels_does():
    """remote-python leaves without the interpreter's finalization once its clean-up is done
    (kernel/__main__.py): the shutdown reply, its broadcast on IOPub and the exit status are ipykernel's."""
    install_kernelspec()
    seen = {}
    for name in ("python3", "remote-python"):
        km, kc = start_new_kernel(kernel_name=name, env=embedded_env(), cwd=str(ROOT), stderr=subprocess.DEVNULL)
        try:
            run(kc, "x = 1")
            kc.control_channel.send(kc.session.msg("shutdown_request", {"restart": False}))
            reply = kc.control_channel.get_msg(timeout=30)
            after = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    after.append(kc.get_iopub_msg(timeout=1)["msg_type"])
                except Exception:  # queue.Empty: nothing more
                    break
            seen[name] = (reply["msg_type"], reply["content"], after, km.provisioner.process.wait(30))
        finally:
            kc.stop_channels()
            km.cleanup_resources()
    assert seen["remote-python"] == seen["python3"]
    assert seen["python3"][0] == "shutdown_reply" and seen["python3"][3] == 0
