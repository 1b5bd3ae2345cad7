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
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from conftest import start_pool
from official_spec import find_operation, for_generation, official, operations, request_problems, response_problems

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
    wrong = [(name, label, problems) for name, label, problems in recorder.answers if problems]
    conforming = sum(not problems for _, _, problems in recorder.answers)
    print(f"\n{RUNTIMES[runtime]} {version}: {conforming}/{len(recorder.answers)} answers conform")
    assert not wrong, "\n".join(f"{name} ({label}): {'; '.join(problems)}" for name, label, problems in wrong)


# the decisions behind the conforming answers (docs/clients.md, "The official documents") -------------------

V10 = "2025-10-02-preview"


def http_of(pool: Any, base: str = "") -> httpx.Client:
    return httpx.Client(base_url=pool.endpoint + base, headers=pool.headers, timeout=120)


def run(http: httpx.Client, identifier: str, version: str = V10, **body: Any) -> httpx.Response:
    return http.post("executions", params={"api-version": version, "identifier": identifier},
                     json={"timeoutInSeconds": 60, **body})


@pytest.mark.parametrize("identifier", WIDE_IDENTIFIERS)
def test_identifiers_the_official_pattern_allows_name_one_session_each(pools, identifier):
    with http_of(pools["python"]) as http:
        assert run(http, identifier, code="marker = 1").status_code == 200
        kept = run(http, identifier, code="marker + 1").json()
        assert kept["identifier"] == identifier and kept["result"]["executionResult"] == 2
        listed = http.get("/listSessions", params={"api-version": V10}).json()["sessions"]
        assert identifier in [s["identifier"] for s in listed]
        info = http.get("/session", params={"api-version": V10, "identifier": identifier}).json()
        assert info["identifier"] == identifier
    # each identifier is its own session: a look-alike (what a path or a lossy encoding would fold it onto) is not
    with http_of(pools["python"]) as http:
        for other in {identifier.replace("/", "_"), identifier.replace(".", "_"), identifier.upper() + "x"} - {identifier}:
            if re.fullmatch(identifier_pattern(), other):
                assert run(http, other, code="'marker' in globals()").json()["result"]["executionResult"] is False


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_a_failed_execution_carries_an_error_response_and_a_running_one_no_result(pools, runtime):
    with http_of(pools[runtime]) as http:
        failed = run(http, str(uuid.uuid4()), code=CODE[runtime]["fail"] if runtime != "shell" else "x",
                     **({"execCommandAndArgs": ["/no/such/program"]} if runtime == "shell" else {})).json()
        assert failed["status"] == "Failed", failed
        assert set(failed["error"]) == {"error"} and {"code", "message"} <= set(failed["error"]["error"])
        ident = str(uuid.uuid4())
        started = run(http, ident, code=CODE[runtime]["slow"], executionType="Asynchronous").json()
        assert started["status"] in ("NotStarted", "Running") and "result" not in started
        polled = http.get(f"/executions/{started['id']}", params={"api-version": V10, "identifier": ident}).json()
        assert polled["status"] != "Running" or "result" not in polled


def test_operation_location_is_an_absolute_url_under_the_requests_azure_prefix(pools):
    with http_of(pools["python"], AZURE_PREFIX) as http:
        ident = "thread:42/prefix"
        answer = run(http, ident, code="import time\ntime.sleep(1)\n7", executionType="Asynchronous")
        location = answer.headers["Operation-Location"]
        assert location.startswith(f"{pools['python'].endpoint}{AZURE_PREFIX}/executions/{answer.json()['id']}?")
        deadline = time.monotonic() + 60
        while (polled := http.get(location)).json()["status"] == "Running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert polled.status_code == 200 and polled.json()["result"]["executionResult"] == 7


@pytest.mark.parametrize("timeout", [0, -1])
def test_a_timeout_of_zero_or_less_is_the_default(pools, timeout):
    with http_of(pools["python"]) as http:
        answer = run(http, str(uuid.uuid4()), code="import time\ntime.sleep(1.5)\n'done'", timeoutInSeconds=timeout)
        assert answer.status_code == 200 and answer.json()["result"]["executionResult"] == "done"


def test_a_shell_command_given_in_base64_is_decoded(pools):
    with http_of(pools["shell"]) as http:
        command = base64.b64encode(b"echo 3; echo $((1 + 1)) >&2").decode()
        body = run(http, str(uuid.uuid4()), shellCommand=command, codeInputType="InlineBase64").json()
        assert body["status"] == "0" and body["result"]["stdout"] == "3\n" and body["result"]["stderr"] == "2\n"
        bad = run(http, str(uuid.uuid4()), shellCommand="not base64!", codeInputType="InlineBase64")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidCode"


def test_a_recursive_listing_names_each_entrys_directory(pools):
    ident = str(uuid.uuid4())
    with http_of(pools["python"]) as http:
        params = {"api-version": V10, "identifier": ident}
        for folder in ("top", "top/mid/low"):
            http.post("/files", params={**params, "path": folder}, files={"file": ("f.txt", b"x", "text/plain")})
        tree = http.get("/files", params={**params, "path": "top", "recursive": "true"}).json()["value"]
        seen = {(e["directory"], e["name"], e["type"]) for e in tree}
        assert seen == {("", "f.txt", "File"), ("", "mid", "Directory"), ("mid", "low", "Directory"),
                        ("mid/low", "f.txt", "File")}
        flat = http.get("/files", params={**params, "path": "top"}).json()["value"]
        assert {e["name"] for e in flat} == {"f.txt", "mid"}
        older = http.get("/files", params={**params, "api-version": "2025-02-02-preview", "recursive": "true"})
        assert older.json()["value"] == [] or all("directory" not in e for e in older.json()["value"])


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_every_pool_names_a_complete_jupyter_kernel_in_its_metadata(pools, runtime):
    with http_of(pools[runtime]) as http:
        kernel = http.get("/metadata", params={"api-version": V10}).json()["jupyterKernel"]
        assert {"name", "version", "projectUrl", "description"} <= kernel.keys() and kernel["projectUrl"].startswith("https://")


def test_a_405_names_the_allowed_methods(pools):
    with http_of(pools["python"]) as http:
        answer = http.put("/files", params={"api-version": V10, "identifier": "x" * 8})
        assert answer.status_code == 405 and set(answer.headers["Allow"].split(", ")) >= {"GET", "POST"}
        answer = http.patch("/session", params={"api-version": V10, "identifier": "x" * 8})
        assert answer.status_code == 405 and set(answer.headers["Allow"].split(", ")) >= {"GET", "DELETE"}


def test_a_none_value_is_an_empty_string_and_null_only_in_the_jupyter_format(pools):
    """The spec's CodeExecution_Execute_Result_None (`a = None;a` → "") and its JupyterFormat twin (null)."""
    with http_of(pools["python"]) as http:
        ident = str(uuid.uuid4())
        assert run(http, ident, code="a = None;a").json()["result"]["executionResult"] == ""
        jupyter = run(http, ident, code="a = None;a", returnJupyterFormatExecutionResult=True).json()
        assert jupyter["result"]["executionResult"] is None
        legacy = http.post("/python/execute", params={"identifier": ident},
                           json={"properties": {"pythonCode": "None"}}).json()  # LlamaIndex TS reads a string
        assert legacy["result"] == ""


def test_the_pools_openapi_document_describes_answers_with_the_official_schemas(pools):
    import jsonschema

    for runtime, pool in pools.items():
        document = httpx.get(f"{pool.endpoint}/openapi.json").json()
        schemas = document["components"]["schemas"]
        assert set(official(V10)["definitions"]) <= set(schemas)
        execute = document["paths"]["/executions"]["post"]
        assert execute["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SessionCodeExecutionResource"}
        assert {p["name"] for p in document["paths"]["/executions/{executionId}"]["get"]["parameters"]} >= {
            "executionId", "identifier", "api-version"}
        assert "recursive" in {p["name"] for p in document["paths"]["/files"]["get"]["parameters"]}
        identifier = next(p for p in execute["parameters"] if p["name"] == "identifier")["schema"]["pattern"]
        assert all(re.fullmatch(identifier, wide) for wide in WIDE_IDENTIFIERS)
        # the extension and legacy routes are still described, beside the official ones
        assert {"/.remote-kernel/live-execute", "/code/execute", "/python/execute"} <= set(document["paths"])
        # an answer of this pool validates against the schema the document gives it
        with http_of(pool) as http:
            answer = run(http, str(uuid.uuid4()), code=CODE[runtime]["ok"]).json()
        jsonschema.validate(answer, {"$ref": "#/components/schemas/SessionCodeExecutionResource",
                                     "components": {"schemas": schemas}})


def mcp_call(pool: Any, method: str, params: dict[str, Any] | None = None, request_id: Any = 1) -> dict[str, Any]:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}
    return httpx.post(f"{pool.endpoint}/mcp", json=message, headers={"x-ms-apikey": pool.token}, timeout=120).json()


@pytest.mark.parametrize("request_id", [7, "discover-1"])
def test_an_mcp_error_answer_carries_the_requests_id(pools, request_id):
    answer = mcp_call(pools["python"], "server/discover", request_id=request_id)
    assert answer["id"] == request_id and "error" in answer


def test_a_nodelts_pool_lists_no_python_tool_and_mcp_reaches_a_session_by_its_identifier(pools):
    listed = {tool["name"] for tool in mcp_call(pools["node"], "tools/list")["result"]["tools"]}
    assert listed == {"launchShell", "runShellCommandInRemoteEnvironment"}
    python = {tool["name"] for tool in mcp_call(pools["python"], "tools/list")["result"]["tools"]}
    assert "runPythonCodeInRemoteEnvironment" in python
    ident = "agent:user@example.com/7"
    with http_of(pools["python"]) as http:
        assert run(http, ident, code="shared = 'from REST'").status_code == 200
    called = mcp_call(pools["python"], "tools/call", {"name": "runPythonCodeInRemoteEnvironment",
                                                      "arguments": {"environmentId": ident, "pythonCode": "shared"}})
    assert called["result"]["structuredContent"]["result"] == "from REST", called


# the project's client, against the same documents ------------------------------------------------------------

class CheckedTransport(httpx.AsyncBaseTransport):
    """Forwards each request of the client, and records what the official document says is wrong with it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.checked: list[tuple[str, list[str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()  # the body, kept for the forwarding (an upload's stream is read once here)
        if "/.remote-kernel/" not in request.url.path:  # the pool's own extension: no official operation
            self.checked.append((f"{request.method} {request.url.path}", request_problems(request)))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("version", OFFICIAL_API_VERSIONS)
def test_the_clients_requests_are_valid_for_the_official_documents(pools, version, tmp_path):
    from remote_kernel.sessions import SessionsClient, StaticToken

    pool = pools["python"]
    transport = CheckedTransport()

    async def scenario() -> None:
        async with SessionsClient(pool.endpoint + AZURE_PREFIX, "user@example.com/client?x=1&y#2",
                                  api_version=version, auth=StaticToken(pool.token), transport=transport) as client:
            ok = await client.execute("print('hi')\nNone")
            assert ok.stdout == "hi\n" and ok.result in ("", None) and ok.error is None
            failed = await client.execute("1/0")
            assert failed.error is not None and failed.error.name == "ZeroDivisionError", failed  # a nested error
            assert "division by zero" in failed.error.message
            (tmp_path / "in.txt").write_bytes(b"data")
            await client.upload(tmp_path / "in.txt", "folder/in.txt")
            assert "in.txt" in {f.name for f in await client.list_files("folder")}
            assert (await client.file_info("folder/in.txt")).size == 4
            await client.download("folder/in.txt", tmp_path / "out.txt")
            assert (tmp_path / "out.txt").read_bytes() == b"data"
            await client.delete_file("folder/in.txt")
            if version != "2024-10-02-preview":
                assert (await client.session_info()).identifier == client.identifier
                await client.delete_session()

    asyncio.run(asyncio.wait_for(scenario(), 180))
    invalid = [(request, problems) for request, problems in transport.checked if problems]
    assert transport.checked and not invalid, invalid


def test_the_kernel_runs_in_a_session_named_by_a_wide_identifier(pools):
    """REMOTE_KERNEL_IDENTIFIER with the official pattern's punctuation: the kernel accepts it, its cells run in
    that session (the pool lists it, REST sees the kernel's variables) and MCP reaches the same session."""
    from kernel_support import kernel, pool_env, text_of
    from kernel_support import run as run_cell

    pool = pools["python"]
    ident = "notebook:user@example.com/analysis?v=2&x=[1]"
    with kernel(pool_env(pool, ident)) as (_, kc):
        reply, outputs = run_cell(kc, "from_kernel = 41\nprint('ran')")
        assert reply["status"] == "ok" and text_of(outputs) == "ran\n", outputs
        with http_of(pool) as http:
            seen = run(http, ident, code="from_kernel + 1").json()
            assert seen["result"]["executionResult"] == 42, seen
        called = mcp_call(pool, "tools/call", {"name": "runPythonCodeInRemoteEnvironment",
                                               "arguments": {"environmentId": ident, "pythonCode": "from_kernel * 2"}})
        assert called["result"]["structuredContent"]["result"] == 82, called
        reply, outputs = run_cell(kc, "print(from_kernel)")
        assert text_of(outputs) == "41\n"


def test_the_kernels_identifier_check_is_the_official_pattern():
    from remote_kernel.kernel.config import KernelConfig

    for ident in [*WIDE_IDENTIFIERS, "x" * 128]:
        config = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9", "REMOTE_KERNEL_IDENTIFIER": ident})
        assert config.identifier == ident and not config.problems, config.problems
    for bad in ["abc", "x" * 129, "has space", "ünï"]:
        config = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9", "REMOTE_KERNEL_IDENTIFIER": bad})
        assert any("REMOTE_KERNEL_IDENTIFIER" in problem for problem in config.problems)


# schemathesis, driven by the official documents ---------------------------------------------------------------

SCHEMATHESIS_EXAMPLES = 8  # per operation, api-version and container type: about 700 requests in all, under a minute
FOLDED = [f"official-{n}@fuzz" for n in range(3)]
VICTIMS = ["official-victim-1", "official-victim-2"]


def tamed(case: Any, version: str) -> None:
    """A generated request made cheap and pointed at the document's own api-version: valid identifiers folded
    onto a few sessions (each new one starts a sandboxed interpreter), and each execution given at most 5 s."""
    query = case.query if isinstance(case.query, dict) else None
    if query is not None:
        query["api-version"] = version
        identifier = query.get("identifier")
        if isinstance(identifier, str) and IDENTIFIER.fullmatch(identifier):
            deleting = case.method.upper() == "DELETE" and case.path == "/session" or "stopSession" in case.path
            choices = VICTIMS if deleting else FOLDED
            query["identifier"] = choices[int(hashlib.sha256(identifier.encode()).hexdigest(), 16) % len(choices)]
    if isinstance(case.body, dict):
        timeout = case.body.get("timeoutInSeconds")
        if isinstance(timeout, int) and not 0 < timeout <= 5:
            case.body["timeoutInSeconds"] = 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", OFFICIAL_API_VERSIONS)
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_schemathesis_with_the_official_document_finds_no_failure(pools, runtime, version):
    import schemathesis
    from hypothesis import HealthCheck, example, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    pool = pools[runtime]
    schema = schemathesis.openapi.from_dict(for_generation(version))
    failures: list[str] = []
    sent: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        # besides what is generated, each execute sends one request a client would (the document allows a
        # body without `code`, which a Python or Node pool refuses, so generation alone may reach no 200)
        valid = (operation.Case(query={"api-version": version, "identifier": FOLDED[0]},
                                body=execution(CODE[runtime]["ok"]), media_type="application/json")
                 if (operation.method.upper(), operation.path) == ("POST", "/executions") else None)

        @settings(max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        @given(case=operation.as_strategy())
        @(example(case=valid) if valid is not None else (lambda test: test))
        def check(case: Any) -> None:
            tamed(case, version)
            response = case.call(base_url=pool.endpoint, headers=pool.headers, timeout=60)
            sent[case.operation.label] += 1
            statuses[f"{case.operation.label} {response.status_code}"] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                         content_type_conformance, response_schema_conformance,
                                                         response_headers_conformance])
            except AssertionError as failure:  # schemathesis's FailureGroup is an AssertionError
                failures.append(f"{case.operation.label}: {str(failure)[:400]}")

        check()
    assert not failures, "\n".join(failures)
    # it really ran: every operation of the document, several generated requests each
    assert set(sent) == {f"{op.method} {op.path}" for op in operations(version)} and min(sent.values()) >= 3, sent
    assert statuses["POST /executions 200"] and statuses["POST /files 200"], statuses  # not refusals only
    print(f"\n{RUNTIMES[runtime]} {version}: {dict(sorted(statuses.items()))}")


@pytest.mark.parametrize("runtime", ["python", "node"])
def test_use_empty_kernel_runs_one_execution_in_a_fresh_interpreter(pools, runtime):
    ident = f"empty-kernel/{runtime}@{uuid.uuid4()}"
    with http_of(pools[runtime]) as http:
        run(http, ident, code=CODE[runtime]["set"])
        empty = run(http, ident, code=CODE[runtime]["probe"], useEmptyKernel=True).json()
        assert empty["status"] == "Succeeded" and empty["result"]["stdout"] == ("False\n" if runtime == "python"
                                                                               else "false\n"), empty
        kept = run(http, ident, code=CODE[runtime]["probe"]).json()  # the session's own kernel is untouched
        assert kept["result"]["stdout"] == ("True\n" if runtime == "python" else "true\n"), kept
        started = run(http, ident, code=CODE[runtime]["slow"], useEmptyKernel=True, executionType="Asynchronous")
        deadline = time.monotonic() + 60
        params = {"api-version": V10, "identifier": ident}
        while (polled := http.get(f"/executions/{started.json()['id']}", params=params).json())["status"] in (
                "NotStarted", "Running") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert polled["status"] == "Succeeded" and polled["result"]["stdout"] == "late\n", polled


def test_a_negative_skip_is_the_first_page(pools):
    """`skip` is an int32 without a minimum in the official documents."""
    with http_of(pools["python"]) as http:
        run(http, "skip-test@example", code="1")
        for skip in ("-1", "-2147483648"):
            page = http.get("/listSessions", params={"api-version": V10, "skip": skip})
            assert page.status_code == 200 and "skip-test@example" in {s["identifier"] for s in page.json()["sessions"]}
        assert http.get("/listSessions", params={"api-version": V10, "skip": "x"}).status_code == 400


#: code that ends its own session's interpreter (the answer is SessionLost)
ENDS_ITS_SESSION = {"python": "import os\nos._exit(3)", "node": "process.kill(process.pid, 'SIGKILL')",
                    "shell": "kill -9 $PPID; sleep 5"}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_an_execution_whose_session_died_still_answers_as_the_official_document_says(pools, runtime):
    with http_of(pools[runtime]) as http:
        response = run(http, str(uuid.uuid4()), code=ENDS_ITS_SESSION[runtime])
        answer = response.json()
        assert answer["status"] == "Failed", answer
        assert answer["error"]["error"]["code"] == "SessionLost", answer
        assert isinstance(answer["result"]["executionTimeInMilliseconds"], int), answer
        operation = find_operation(V10, "POST", "/executions")
        assert operation is not None
        assert response_problems(operation, response) == []
