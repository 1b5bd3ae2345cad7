"""Faults, driven through real kernels and a real pool: nothing hangs, nothing is lost silently."""
from __future__ import annotations

import json
import os
import queue
import socket
import stat
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import uvicorn
from conftest import start_pool
from kernel_support import (
    KERNEL_NAME,
    ROOT,
    collect,
    embedded_env,
    errors_of,
    install_kernelspec,
    kernel,
    pool_env,
    pool_get,
    result_of,
    run,
    start_new_kernel,
    text_of,
    wait_for,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LOST = "remote session was lost"


@contextmanager
def logged_kernel(env: dict[str, str], log_path: Path):
    """A kernel whose own stdout and stderr (its log) go to a file."""
    install_kernelspec()
    with open(log_path, "wb") as log:
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, env=env, cwd=str(ROOT), startup_timeout=60,
                                  stdout=log, stderr=log)
        try:
            yield km, kc
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_processes(pool) -> list[psutil.Process]:
    """The session workers of a pool (inside their sandboxes)."""
    found = []
    for process in psutil.Process(pool.process.pid).children(recursive=True):
        try:
            command = process.cmdline()
            if command and "bwrap" not in command[0] and any("python_worker" in part for part in command):
                found.append(process)
        except psutil.Error:
            pass
    return found


class Gateway:
    """A loopback HTTP front that forwards to a real pool, or misbehaves on purpose."""

    def __init__(self, pool, handler) -> None:
        self.pool = pool
        self.handler = handler
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, str | None]] = []  # (path, token seen)
        app = Starlette(routes=[Route("/{path:path}", self._route, methods=["GET", "POST", "DELETE"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _route(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ") or None
        self.requests.append((request.url.path, token))
        return await self.handler(self, request, token)

    async def forward(self, request: Request) -> Response:
        async with httpx.AsyncClient(timeout=300) as client:
            upstream = await client.request(request.method, f"{self.pool.endpoint}{request.url.path}",
                                            params=request.query_params, content=await request.body(),
                                            headers={"Authorization": f"Bearer {self.pool.token}",
                                                     "Content-Type": request.headers.get("content-type", "")})
        headers = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")}
        return Response(upstream.content, upstream.status_code, headers=headers)

    def __enter__(self) -> Gateway:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, what="the gateway to start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_for_output(kc, msg_id: str, marker: str, timeout: float = 60) -> list[dict]:
    """The IOPub messages of a running request up to the stream text that contains `marker`."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while marker not in text_of(seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{marker!r} not printed within {timeout} s")
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            seen.append(msg)
    return seen


def test_a_worker_killed_mid_cell_is_reported_at_once_and_the_pool_serves_others():
    pool = start_pool("--ready-sessions", "0")
    try:
        identifier, bystander = str(uuid.uuid4()), str(uuid.uuid4())
        with kernel(pool_env(pool, identifier)) as (km, kc):
            run(kc, "x = 1")
            msg_id = kc.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
            wait_for_output(kc, msg_id, "sleeping")  # the cell is in its sleep
            worker, = worker_processes(pool)
            worker.kill()
            reply = kc.get_shell_msg(timeout=30)  # not the sleep's 60 s: the loss is seen at once
            assert reply["parent_header"]["msg_id"] == msg_id
            assert reply["content"]["ename"] == "SessionLost"
            error, = errors_of(collect(kc, msg_id))
            assert "lost" in error["evalue"].lower()
            served = httpx.post(f"{pool.endpoint}/executions", params={"api-version": "2025-10-02-preview",
                                                                       "identifier": bystander},
                                json={"code": "6 * 7"}, headers=pool.headers, timeout=60)
            assert served.json()["result"]["executionResult"] == 42
            reply, outputs = run(kc, "'x' in dir()")
            assert reply["status"] == "ok" and result_of(outputs) == "False"
            assert text_of(outputs).count(LOST) <= 1
            reply, outputs = run(kc, "y = 3\ny")
            assert result_of(outputs) == "3" and LOST not in text_of(outputs)
    finally:
        pool.stop()


def test_a_pool_killed_and_restarted_on_the_same_port_is_reported_then_works():
    port = free_port()
    pool = start_pool("--ready-sessions", "0", port=port)
    identifier = str(uuid.uuid4())
    try:
        with kernel(pool_env(pool, identifier, REMOTE_KERNEL_TIMEOUT="20")) as (km, kc):
            run(kc, "x = 1")
            pool.process.kill()
            pool.process.wait()
            reply, outputs = run(kc, "x", timeout=90)
            assert reply["status"] == "error" and reply["ename"] == "ServiceUnavailable"
            assert f"127.0.0.1:{port}" in errors_of(outputs)[0]["evalue"]
            assert km.is_alive()
            pool = start_pool("--ready-sessions", "0", port=port, token=pool.token)
            reply, outputs = run(kc, "'x' in dir()", timeout=90)
            assert reply["status"] == "ok" and result_of(outputs) == "False"
            assert LOST in text_of(outputs, "stderr")
            reply, outputs = run(kc, "1 + 1")
            assert result_of(outputs) == "2" and LOST not in text_of(outputs)
    finally:
        pool.stop()


FAKE_AZ = """#!{python}
# A stand-in for the Azure CLI: each call mints a new token that expires {life} s from now.
import json, sys, time
count_file = {count_file!r}
n = int(open(count_file).read() or 0) + 1 if __import__("os").path.exists(count_file) else 1
open(count_file, "w").write(str(n))
expires = int(time.time() + {life})
print(json.dumps({{"accessToken": f"minted-{{n}}-{{expires}}", "expires_on": expires, "tokenType": "Bearer"}}))
"""


def expiry(token: str | None) -> int:
    """When a token minted by FAKE_AZ expires (epoch seconds)."""
    return int((token or "minted-0-0").split("-")[2])


def test_a_token_that_expires_mid_notebook_is_refreshed_and_no_cell_fails(pool, tmp_path):
    """Tokens live 300.5 to 301.5 s (expiry in whole seconds); the client renews them 300 s before
    expiry, so about every second of this notebook."""
    az = tmp_path / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable, life=301.5, count_file=str(tmp_path / "count")))
    az.chmod(az.stat().st_mode | stat.S_IEXEC)

    async def check_token(gateway: Gateway, request: Request, token: str | None) -> Response:
        parts = (token or "").split("-")
        if len(parts) != 3 or parts[0] != "minted" or int(parts[2]) - 300 < time.time():
            return JSONResponse({"error": {"code": "Unauthorized", "message": "expired token"}}, 401)
        return await gateway.forward(request)

    env = {**embedded_env(), "REMOTE_KERNEL_AUTH": "azure", "REMOTE_KERNEL_IDENTIFIER": str(uuid.uuid4()),
           "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",  # only the CLI: nothing but loopback is contacted
           "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    with Gateway(pool, check_token) as gateway:
        env["POOL_MANAGEMENT_ENDPOINT"] = gateway.endpoint
        with kernel(env) as (km, kc):
            for i in range(4):
                reply, outputs = run(kc, f"n = {i}\nn")
                assert reply["status"] == "ok", reply
                assert result_of(outputs) == str(i)
                used = gateway.requests[-1][1]  # let the token age past its refresh point
                wait_for(lambda used=used: time.time() > expiry(used) - 300, timeout=5, what="the token to age")
    tokens = {token for _, token in gateway.requests}
    assert len(tokens) >= 3  # renewed along the way
    assert int((tmp_path / "count").read_text()) == len(tokens)  # fetched once per token, not per request


def test_a_429_storm_is_retried_within_bounds_then_reported_as_pool_full(pool):
    async def always_full(gateway: Gateway, request: Request, token: str | None) -> Response:
        return JSONResponse({"error": {"code": "SessionsCountExceedsLimit", "message": "pool is full"}}, 429,
                            headers={"Retry-After": "1"})

    with Gateway(pool, always_full) as gateway:
        env = {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": gateway.endpoint, "REMOTE_KERNEL_TOKEN": "t"}
        with kernel(env) as (km, kc):
            started = time.monotonic()
            reply, outputs = run(kc, "1 + 1", timeout=120)
            waited = time.monotonic() - started
            assert reply["status"] == "error" and reply["ename"] == "PoolFull"
            assert "full" in errors_of(outputs)[0]["evalue"].lower()
            assert len(gateway.requests) > 1  # it did retry
            assert waited >= 1.0  # honouring Retry-After
            assert km.is_alive()


def test_disk_full_during_an_upload_fails_clearly_and_leaves_no_partial_file(tmp_path):
    pool = start_pool("--disk", "8M", "--ready-sessions", "0")
    try:
        identifier = str(uuid.uuid4())
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(20 << 20))
        with kernel(pool_env(pool, identifier)) as (km, kc):
            reply, outputs = run(kc, f"%upload {big} big.bin", timeout=120)
            assert reply["status"] == "error"
            message = errors_of(outputs)[0]["evalue"]
            assert "room" in message or "space" in message.lower(), message
            reply, outputs = run(kc, "import os\nsorted(os.listdir('/mnt/data'))")
            assert result_of(outputs) == "[]"  # not even a temporary
        assert pool_get(pool, "files", identifier).json()["value"] == []
    finally:
        pool.stop()


def test_the_token_never_appears_in_logs_outputs_or_the_session(tmp_path):
    """A whole run — cells, magics, a failure, a wrong token — and the token shows up nowhere."""
    pool = start_pool("--ready-sessions", "1", "--log-level", "debug")
    kernel_log = tmp_path / "kernel.log"
    try:
        identifier = str(uuid.uuid4())
        seen: list[str] = []
        local = tmp_path / "data.txt"
        local.write_text("some data\n")
        with logged_kernel(pool_env(pool, identifier), kernel_log) as (km, kc):
            for code in ("%session", "print('hi')\n1 + 1", "1/0", f"%upload {local} data.txt", "%files",
                         "import os, glob\nprint(dict(os.environ))\n"
                         "print([open(p, 'rb').read() for p in glob.glob('/proc/*/environ')])",
                         "%download data.txt " + str(tmp_path / "back.txt")):
                _, outputs = run(kc, code)
                seen.append(json.dumps([m["content"] for m in outputs]))
        wrong = {**pool_env(pool, str(uuid.uuid4())), "REMOTE_KERNEL_TOKEN": pool.token[:-2] + "xx"}
        with logged_kernel(wrong, tmp_path / "wrong.log") as (km, kc):
            reply, outputs = run(kc, "1")
            assert reply["ename"] == "RemoteAuthenticationError"
            seen.append(json.dumps([m["content"] for m in outputs]))
    finally:
        pool.stop()
    everything = "\n".join(seen) + pool.log() + kernel_log.read_text() + (tmp_path / "wrong.log").read_text()
    assert "some data" in everything or "data.txt" in everything  # the run really happened and was captured
    assert pool.token not in everything
    assert pool.token[:-2] + "xx" not in everything
