"""Shared fixtures: a real local session pool on a free loopback port."""
from __future__ import annotations

import ast

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def bubblewrap_usable() -> tuple[bool, str]:
    """Whether bubblewrap can build a sandbox here, and why not when it cannot (the pool's own probe)."""
    from remote_kernel.pool.sandbox import bubblewrap_problem

    problem = bubblewrap_problem()
    return problem is None, problem or ""


@dataclass
class LocalPool:
    """A `remote-kernel pool` child process and how to reach it."""

    endpoint: str
    token: str
    data_root: Path
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_pool(*extra: str, token: str | None = None, port: int = 0, data_root: Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 30) -> LocalPool:
    """Start a pool with `extra` CLI options and wait until it answers."""
    token = token or secrets.token_urlsafe(24)
    data_root = data_root or Path(tempfile.mkdtemp(prefix="rk-pool-"))
    log_path = Path(tempfile.mkstemp(prefix="rk-pool-", suffix=".log")[1])
    args = [sys.executable, "-m", "remote_kernel", "pool", "--port", str(port),
            "--data-root", str(data_root), *extra]
    # the token goes in the environment, never on argv (where `ps` shows it to every user)
    child_env = {**os.environ, **(env or {}), "REMOTE_KERNEL_TOKEN": token}
    log = open(log_path, "wb")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=child_env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    endpoint = None
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        if line.startswith("export POOL_MANAGEMENT_ENDPOINT="):
            endpoint = line.split("=", 1)[1].strip()
            break
    if endpoint is None:
        process.kill()
        raise RuntimeError(f"the pool did not start: {log_path.read_text()}")
    # keep draining stdout so the pool never blocks on a full pipe
    import threading

    threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()
    pool = LocalPool(endpoint, token, data_root, process, log_path, args)
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{endpoint}/health", timeout=2, verify=False)  # a --tls pool: its CA is not trusted here
            return pool
        except httpx.HTTPError:
            time.sleep(0.05)
    pool.stop()
    raise RuntimeError(f"the pool did not answer: {pool.log()}")


@pytest.fixture(scope="session")
def pool():
    """One PythonLTS pool for the whole test run (sandboxed when bubblewrap can run)."""
    p = start_pool("--max-sessions", "200", "--ready-sessions", "2")
    yield p
    p.stop()


@pytest.fixture
def identifier() -> str:
    import uuid

    return str(uuid.uuid4())


def execute_code(http: httpx.Client, identifier: str, code: str, timeout: int = 60) -> dict:
    """A synchronous v2 execution through `http` (a client of a test pool); its answer."""
    response = http.post("/executions", params={"api-version": "2025-10-02-preview", "identifier": identifier},
                         json={"code": code, "timeoutInSeconds": timeout})
    response.raise_for_status()
    return response.json()


def code_value(http: httpx.Client, identifier: str, code: str, timeout: int = 60) -> Any:
    """The value of a successful execution; a list, tuple or dict comes back as its IPython display
    text (the hosted rendering, docs/clients.md) and is read back here."""
    body = execute_code(http, identifier, code, timeout)
    assert body["status"] == "Succeeded", body
    result = body["result"]["executionResult"]
    return ast.literal_eval(result) if isinstance(result, str) and result[:1] in ("[", "(", "{") else result

