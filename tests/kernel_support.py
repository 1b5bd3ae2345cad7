"""Helpers for the kernel's end-to-end tests: the kernelspec, real kernels through jupyter_client."""
from __future__ import annotations

import atexit
import http.server
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import AsyncKernelManager, KernelManager

ROOT = Path(__file__).resolve().parent.parent
KERNEL_NAME = "remote-python"
API = "2025-10-02-preview"
_SPEC_ROOT: Path | None = None


def install_kernelspec() -> Path:
    """Install the kernelspecs with `remote-kernel install --prefix` into a temp dir on JUPYTER_PATH (once)."""
    global _SPEC_ROOT
    if _SPEC_ROOT is None:
        prefix = Path(tempfile.mkdtemp(prefix="rk-spec-"))
        for language in ("python", "javascript"):
            subprocess.run([sys.executable, "-m", "remote_kernel", "install", "--prefix", str(prefix),
                            "--language", language], check=True, capture_output=True, cwd=ROOT)
        _SPEC_ROOT = prefix / "share" / "jupyter"
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(_SPEC_ROOT), os.environ.get("JUPYTER_PATH")]))
    return _SPEC_ROOT


def embedded_env() -> dict[str, str]:
    """The environment of a kernel that starts its own pool."""
    env = dict(os.environ)
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_TOKEN", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_IDENTIFIER"):
        env.pop(name, None)
    return env


def pool_env(pool: Any, identifier: str, **extra: str) -> dict[str, str]:
    """The environment of a kernel that uses the test's pool with a known identifier."""
    return {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": pool.endpoint, "REMOTE_KERNEL_TOKEN": pool.token,
            "REMOTE_KERNEL_IDENTIFIER": identifier, **extra}


class IpcKernelManager(AsyncKernelManager):
    """nbclient's kernel manager (`NotebookClient(kernel_manager_class=...)`) over IPC in a folder of its own,
    for the reason `start_new_kernel` gives."""

    def __init__(self, **kwargs: Any) -> None:
        folder = tempfile.mkdtemp(prefix="rk-ipc-")  # short: a Unix socket path has ~107 bytes
        atexit.register(shutil.rmtree, folder, True)
        super().__init__(transport="ipc", ip=os.path.join(folder, "k"), **kwargs)


def start_new_kernel(kernel_name: str = KERNEL_NAME, startup_timeout: float = 60,
                     **kwargs: Any) -> tuple[KernelManager, BlockingKernelClient]:
    """jupyter_client's `start_new_kernel`, over IPC in a folder of its own: TCP ports are picked free
    and bound later by the kernel, a race that several test workers starting kernels at once lose."""
    folder = tempfile.mkdtemp(prefix="rk-ipc-")  # short: a Unix socket path has ~107 bytes
    atexit.register(shutil.rmtree, folder, True)  # the sockets go at shutdown; the folder with the test process
    km = KernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(folder, "k"))
    km.start_kernel(**kwargs)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=startup_timeout)
    except RuntimeError:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


@contextmanager
def kernel(env: dict[str, str], cwd: str | None = None,
           name: str = KERNEL_NAME) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A running remote-python (or `name`) kernel and a client of it; shut down at the end."""
    install_kernelspec()
    km, kc = start_new_kernel(kernel_name=name, env=env, cwd=cwd or str(ROOT), startup_timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=False)


def collect(kc: BlockingKernelClient, msg_id: str, timeout: float = 120) -> list[dict]:
    """The IOPub messages of one request, up to its idle status."""
    deadline = time.monotonic() + timeout
    found = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no idle status for {msg_id} within {timeout} s")
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return found
        if msg["msg_type"] not in ("status", "execute_input"):
            found.append(msg)


def run(kc: BlockingKernelClient, code: str, timeout: float = 120, **options: Any) -> tuple[dict, list[dict]]:
    """Execute `code`; the reply content and the outputs (IOPub messages other than status and input)."""
    msg_id = kc.execute(code, **options)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], collect(kc, msg_id, timeout)


def text_of(outputs: list[dict], name: str | None = None) -> str:
    """All stream text (of one stream, if named) in `outputs`."""
    return "".join(m["content"]["text"] for m in outputs
                   if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name))


def result_of(outputs: list[dict]) -> str | None:
    for m in outputs:
        if m["msg_type"] == "execute_result":
            return m["content"]["data"]["text/plain"]
    return None


def errors_of(outputs: list[dict]) -> list[dict]:
    return [m["content"] for m in outputs if m["msg_type"] == "error"]


def pool_get(pool: Any, path: str, identifier: str | None = None, **params: str) -> httpx.Response:
    query = {"api-version": API, **params}
    if identifier:
        query["identifier"] = identifier
    return httpx.get(f"{pool.endpoint}/{path}", params=query, headers=pool.headers, timeout=30)


def pool_delete_session(pool: Any, identifier: str) -> httpx.Response:
    return httpx.delete(f"{pool.endpoint}/session", params={"api-version": API, "identifier": identifier},
                        headers=pool.headers, timeout=30)


def listed_sessions(pool: Any) -> set[str]:
    """The identifiers the pool lists (every page)."""
    found: set[str] = set()
    skip = 0
    while True:
        response = pool_get(pool, "listSessions", skip=str(skip))
        response.raise_for_status()
        page = response.json().get("sessions", [])
        found |= {s.get("identifier") for s in page}
        if not page or not response.json().get("nextLink"):
            return found
        skip += len(page)


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, what: str = "condition") -> None:
    """Poll `predicate` until it is true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(interval)


class ContractProxy:
    """A loopback HTTP proxy in front of a pool that records each request's method and path, and
    passes only the contract: the pool's extension header is dropped, so that a kernel behind it
    works as with a hosted pool. `stall_files`: a file request made while an execution is in flight
    waits until no execution is (a hosted pool that does not answer file requests meanwhile).
    `contract_only=False` keeps the extension header (the kernel then uses the pool's live route)."""

    def __init__(self, target: str, stall_files: bool = False, contract_only: bool = True) -> None:
        self.target = target
        dropped = ("content-length", "transfer-encoding", "connection", "content-encoding") + \
            (("x-remote-kernel-extensions",) if contract_only else ())
        self.requests: list[tuple[str, str]] = []
        self.stall_files = stall_files
        self.executing = 0
        self.stalled = 0
        self.ignore: str | None = None
        self.idle = threading.Condition()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                proxy.requests.append((self.command, path))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                executes = path.endswith("/executions") or path.endswith("/execute")
                if path.startswith("/files") and proxy.stall_files:
                    with proxy.idle:
                        if proxy.executing:
                            proxy.stalled += 1
                        proxy.idle.wait_for(lambda: proxy.executing == 0, timeout=300)
                with proxy.idle:
                    proxy.executing += executes
                try:
                    answer = httpx.request(self.command, proxy.target + self.path, headers=headers, content=body,
                                           timeout=300)
                finally:
                    with proxy.idle:
                        proxy.executing -= executes
                        proxy.idle.notify_all()
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in dropped:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, start: int) -> list[tuple[str, str]]:
        """The requests from number `start` on, without those whose path ends with `ignore`."""
        return [r for r in self.requests[start:] if not (self.ignore and r[1].endswith(self.ignore))]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
