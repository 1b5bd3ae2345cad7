"""Shared fixtures: a real local session pool on a free loopback port."""
from __future__ import annotations

import ast
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

