"""The pool against the service's official OpenAPI documents (remote_kernel/pool/official).

Valid requests for every operation of every official api-version go to a PythonLTS, a NodeLTS and a
Shell pool, and each answer is validated against the document of its api-version: status, headers,
content type and body schema (tests/official_spec.py). Then schemathesis, driven by the same
documents, sends requests of its own, bounded in examples. The project's client's requests are
checked against the documents too, and identifiers the official pattern allows go end to end.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import re
import time
import uuid
from typing import Any, Callable

import httpx
import pytest

from conftest import start_pool
from official_spec import find_operation, official, operations, request_problems, response_problems
from remote_kernel.contract import IDENTIFIER
from remote_kernel.pool.official import OFFICIAL_API_VERSIONS, identifier_pattern

RUNTIMES = {"python": "PythonLTS", "node": "NodeLTS", "shell": "Shell"}
#: what each container type runs: a value, a failure, something slow, and a state probe
CODE = {
    "python": {"ok": "print('hi')\n6 * 7", "fail": "1/0", "slow": "import time\ntime.sleep(1.5)\nprint('late')",
               "set": "kept = 1", "probe": "print('kept' in globals())"},
    "node": {"ok": "console.log('hi'); 6 * 7", "fail": "throw new Error('boom')",
             "slow": "const t0 = Date.now(); while (Date.now() - t0 < 1500) {} console.log('late')",
             "set": "globalThis.kept = 1", "probe": "console.log(typeof globalThis.kept !== 'undefined')"},
    "shell": {"ok": "echo hi", "fail": "exit 3", "slow": "sleep 1.5; echo late",
              "set": "touch kept", "probe": "test -e kept && echo true || echo false"},
}
#: identifiers the official pattern allows that are not uuids (agents key sessions by such ids)
WIDE_IDENTIFIERS = ["user@example.com", "thread:42", "a.b.c.d", "x+y=z!", "a/b/c", "q?x,y", "[t]{1}|<2>;'\"`~",
                    "#hash%25&amp=^*()"]
AZURE_PREFIX = "/subscriptions/sub-1/resourceGroups/rg-1/sessionPools/pool-1"
#: answers that do not conform, on purpose: (container type, api-version, operation) → why (docs/clients.md)
DELIBERATE: dict[tuple[str, str, str], str] = {}
RESULTS: dict[tuple[str, str], list[tuple[str, str, list[str]]]] = collections.defaultdict(list)


@pytest.fixture(scope="module")
def pools():
    started: dict[str, Any] = {}
    try:
        for runtime, container in RUNTIMES.items():
            started[runtime] = start_pool("--container-type", container, "--max-sessions", "40",
                                          "--ready-sessions", "1")
        yield started
    finally:
        for pool in started.values():
            pool.stop()


class Recorder:
    """Sends requests to one pool and validates each answer against the official document."""

    def __init__(self, pool: Any, runtime: str, version: str) -> None:
        self.http = httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120)
        self.runtime, self.version = runtime, version
        self.answers: list[tuple[str, str, list[str]]] = RESULTS[(runtime, version)]

    def send(self, label: str, method: str, path: str, identifier: str | None = None, *,
             params: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        query = {"api-version": self.version, **({"identifier": identifier} if identifier else {}), **(params or {})}
        response = self.http.request(method, path, params=query, **kwargs)
        operation = find_operation(self.version, method, path)
        assert operation is not None, f"{method} {path} is no operation of {self.version}"
        problems = request_problems(response.request, self.version)
        assert not problems, f"the test's own request is not valid: {problems}"  # the test's requests are valid
        self.answers.append((operation.name, label, response_problems(operation, response)))
        return response

    def execute(self, label: str, identifier: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return self.send(label, "POST", "/executions", identifier, json=body, **kwargs)


def execution(code: str, **more: Any) -> dict[str, Any]:
    return {"codeInputType": "Inline", "executionType": "Synchronous", "code": code, "timeoutInSeconds": 60, **more}


def run_everything(recorder: Recorder) -> None:
    """Valid requests for every operation of the recorder's api-version."""
    runtime, version = recorder.runtime, recorder.version
    code = CODE[runtime]
    names = {op.name for op in operations(version)}
    ident = f"user@example.com/{runtime}:{version}?a=b&c#1"
    assert re.fullmatch(identifier_pattern(version), ident)
    # executions
    recorder.execute("sync", ident, execution(code["ok"]), headers={"operation-id": f"op-{uuid.uuid4()}"})
    encoded = base64.b64encode(code["ok"].encode()).decode()
    recorder.execute("InlineBase64", ident, execution(encoded, codeInputType="InlineBase64"))
    recorder.execute("InlineText", ident, execution(code["ok"], codeInputType="InlineText"))
    recorder.execute("failure", ident, execution(code["fail"]))
    for timeout in (0, -1, 2147483647):
        recorder.execute(f"timeoutInSeconds {timeout}", ident, execution(code["ok"], timeoutInSeconds=timeout))
    started = recorder.execute("async", ident, execution(code["slow"], executionType="Asynchronous")).json()
    started.setdefault("id", "none")
    recorder.send("async, running", "GET", f"/executions/{started['id']}", ident)
    deadline = time.monotonic() + 60
    while recorder.http.get(f"/executions/{started['id']}", params={"api-version": version, "identifier": ident}
                            ).json().get("status") == "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    recorder.send("async, done", "GET", f"/executions/{started['id']}", ident)
    if version == "2025-10-02-preview":
        recorder.execute("every field", ident, execution(code["ok"], outputStreamsMaxLength=4096, useEmptyKernel=False,
                                                         returnJupyterFormatExecutionResult=True))
        recorder.execute("useEmptyKernel", ident, execution(code["probe"], useEmptyKernel=True))
        if runtime == "shell":
            recorder.execute("shellCommand", ident, {"executionType": "Synchronous", "timeoutInSeconds": 60,
                                                     "shellCommand": "read LINE; echo got:$LINE", "stdin": "x\n"})
            recorder.execute("execCommandAndArgs", ident, {"timeoutInSeconds": 60,
                                                           "execCommandAndArgs": ["printf", "%s|", "a b"]})
            recorder.execute("shellCommand InlineBase64", ident, {
                "codeInputType": "InlineBase64", "timeoutInSeconds": 60,
                "shellCommand": base64.b64encode(b"echo 3").decode()})
    # files
    for folder in (None, "/mnt/data", "sub/deeper"):
        recorder.send(f"upload to {folder}", "POST", "/files", ident, params={"path": folder} if folder else None,
                      files={"file": ("hello.txt", b"hello\n", "text/plain")})
    recorder.send("list", "GET", "/files", ident)
    recorder.send("list a folder", "GET", "/files", ident, params={"path": "sub"})
    if "recursive" in {p["name"] for op in operations(version) if op.name == "SessionResourceFiles_List"
                       for p in op.parameters()}:
        recorder.send("list recursively", "GET", "/files", ident, params={"recursive": "true"})
        recorder.send("list a folder recursively", "GET", "/files", ident, params={"path": "sub", "recursive": "true"})
    recorder.send("metadata", "GET", "/files/hello.txt", ident)
    recorder.send("metadata in a folder", "GET", "/files/hello.txt", ident, params={"path": "/mnt/data/sub/deeper"})
    recorder.send("content", "GET", "/files/hello.txt/content", ident)
    recorder.send("delete", "DELETE", "/files/hello.txt", ident)
    # sessions
    if "SessionManagement_Get" in names:
        recorder.send("session", "GET", "/session", ident)
        recorder.send("list sessions", "GET", "/listSessions")
        recorder.send("list sessions, skip", "GET", "/listSessions", params={"skip": 0})
        recorder.send("pool metadata", "GET", "/metadata")
    for wide in WIDE_IDENTIFIERS:
        recorder.execute(f"identifier {wide}", wide, execution(code["ok"]))
    if "SessionPoolManagement_StopSession" in names:
        recorder.send("stop", "POST", "/.management/stopSession", WIDE_IDENTIFIERS[0])
    if "SessionManagement_Delete" in names:
        recorder.send("delete session", "DELETE", "/session", ident)
    done = {name for name, _, _ in recorder.answers}
    assert done == names, f"operations not exercised: {names - done}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("version", OFFICIAL_API_VERSIONS)
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_every_answer_to_a_valid_request_conforms_to_the_official_document(pools, runtime, version):
    recorder = Recorder(pools[runtime], runtime, version)
    try:
        run_everything(recorder)
    finally:
        recorder.http.close()
    wrong = [(name, label, problems) for name, label, problems in recorder.answers
             if problems and (runtime, version, name) not in DELIBERATE]
    conforming = sum(not problems for _, _, problems in recorder.answers)
    print(f"\n{RUNTIMES[runtime]} {version}: {conforming}/{len(recorder.answers)} answers conform")
    assert not wrong, "\n".join(f"{name} ({label}): {'; '.join(problems)}" for name, label, problems in wrong)
