"""Shared fixtures: a real local session pool on a free loopback port."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.common import ROOT, PoolProcess, start_pool  # noqa: F401 (the tests import ROOT from here)


def bubblewrap_usable() -> tuple[bool, str]:
    """Whether bubblewrap can build a sandbox here, and why not when it cannot (the pool's own probe)."""
    from remote_kernel.pool.sandbox import bubblewrap_problem

    problem = bubblewrap_problem()
    return problem is None, problem or ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with slow tests first: on several workers (xdist, a file each) the long ones start at
    once rather than last, when the other workers have nothing left to do beside them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's own order is kept


@pytest.fixture(scope="session")
def pool():
    """One PythonLTS pool for the whole test run (sandboxed when bubblewrap can run)."""
    p = start_pool("--max-sessions", "200", "--ready-sessions", "2")
    yield p
    p.stop()


def pool_client(pool: PoolProcess, timeout: float = 120) -> httpx.Client:
    """An HTTP client of a test pool: its endpoint and token (use it in a `with`)."""
    return httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=timeout)


@pytest.fixture(scope="module")
def http(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """An HTTP client of the test file's pool: the shared `pool`, or the pool fixture the file names in
    its HTTP_POOL (a pool of its own, e.g. `HTTP_POOL = "shell_pool"`)."""
    with pool_client(request.getfixturevalue(getattr(request.module, "HTTP_POOL", "pool"))) as client:
        yield client


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



#: the ways a pool runs: root (cgroups, a host uid per session), root without cgroups (rlimits only),
#: and as an unprivileged user (no cgroups, every session under the pool's own uid)
POOL_MODES = ("root", "no-cgroups", "non-root")
UNPRIVILEGED_UID = 61_234  # the non-root pool's user: no account of this machine's


def start_pool_in(mode: str, *extra: str, **options: Any) -> PoolProcess:
    """A bubblewrap pool in `mode` (POOL_MODES), or pytest.skip when this machine cannot run that mode."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if mode != "non-root" and os.geteuid() != 0:
        pytest.skip(f"a {mode} pool needs the tests to run as root")
    if mode == "no-cgroups":
        options["env"] = {**options.get("env", {}), "REMOTE_KERNEL_NO_CGROUPS": "1"}
    if mode != "non-root" or os.geteuid() != 0:
        return start_pool("--sandbox", "bubblewrap", *extra, **options)
    drop = ("setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups")
    probe = subprocess.run([*drop, sys.executable, "-c", "import os, sys, IPython; "
                            "assert os.access(os.path.realpath(sys.executable), os.X_OK)"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this interpreter (or its IPython) cannot be run by an unprivileged user: "
                    + probe.stderr.decode(errors="replace")[-200:])
    data_root = Path(tempfile.mkdtemp(prefix="rk-pool-"))
    os.chown(data_root, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    options["env"] = {**options.get("env", {}), "PYTHONPATH": str(ROOT)}
    pool = start_pool("--sandbox", "bubblewrap", *extra, data_root=data_root,
                      command=(*drop, sys.executable, "-m", "remote_kernel"), **options)
    pool.owns_data_root = True
    return pool
