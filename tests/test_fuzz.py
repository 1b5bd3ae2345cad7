"""Fuzzing: schemathesis against the live pool's /openapi.json, and hypothesis against the client's
wire parsing (random, truncated and mis-typed bodies).

What holds: the pool never answers 5xx, every 4xx it gives is the contract's error envelope, the
answers match its OpenAPI document, and whatever a pool (or an impostor) sends back, the client
raises one of its own errors (SessionsError) and nothing else.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json

import httpx
import pytest
import schemathesis
from conftest import start_pool
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.modes import GenerationMode

from remote_kernel.contract import IDENTIFIER
from remote_kernel.sessions import SessionsClient, SessionsError, UnexpectedResponse
from remote_kernel.sessions.auth import StaticToken
from remote_kernel.sessions.client import RetryPolicy
from remote_kernel.sessions.wire import (
    SUPPORTED_API_VERSIONS,
    error_from_response,
    parse_error,
    parse_time,
    snippet,
    traceback_exception,
    wire_for,
)

# Valid identifiers are folded onto a few, so that thousands of cases start a handful of sessions
# (each start costs a sandboxed interpreter); invalid ones go through as generated.
SESSIONS = [f"fuzz-session-{n}" for n in range(3)]
VICTIMS = [f"fuzz-deleted-{n}" for n in range(2)]  # what DELETE session and stopSession may remove
EXAMPLES = 1260  # per generation mode, shared by the operations (60 each when the document had 21)
STATUSES: dict[str, list[int]] = collections.defaultdict(list)  # what each operation answered


# the pool, through its OpenAPI document -----------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_pool():
    p = start_pool("--max-sessions", "8", "--ready-sessions", "1", "--max-upload", "1M")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def pool_schema(fuzz_pool):
    return schemathesis.openapi.from_url(f"{fuzz_pool.endpoint}/openapi.json")


def tamed(case) -> None:
    """Fold valid identifiers onto a few sessions; keep each execution's time limit short."""
    query = case.query if isinstance(case.query, dict) else None
    identifier = query.get("identifier") if query else None
    if isinstance(identifier, str) and IDENTIFIER.fullmatch(identifier):
        deleting = case.method.upper() == "DELETE" and case.path == "/session" or "stopSession" in case.path
        choices = VICTIMS if deleting else SESSIONS
        query["identifier"] = choices[int(hashlib.sha256(identifier.encode()).hexdigest(), 16) % len(choices)]
    body = case.body if isinstance(case.body, dict) else None
    for fields in (body, body.get("properties") if body else None):
        if isinstance(fields, dict):
            timeout = fields.get("timeoutInSeconds")
            if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and not 0 < timeout <= 5:
                fields["timeoutInSeconds"] = 5  # 0 or less means the default (220 s)


def assert_envelope_on_4xx(response) -> None:
    if 400 <= response.status_code < 500:
        headers = {name.lower(): values[0] for name, values in response.headers.items()}
        assert headers.get("content-type", "").startswith("application/json"), response.text[:300]
        error = json.loads(response.content)["error"]
        assert isinstance(error["code"], str) and error["code"], response.text[:300]
        assert isinstance(error["message"], str) and error["message"], response.text[:300]
        assert headers["x-ms-error-code"] == error["code"]


def check_answer(case, pool) -> None:
    """Send one generated request; the pool must answer it as its document says, 4xx in the envelope."""
    tamed(case)
    response = case.call(headers=pool.headers, timeout=30)
    STATUSES[case.operation.label].append(response.status_code)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    known = {parameter.name for parameter in case.operation.query}
    if not (case.media_type or "").startswith("multipart/") and set(case.query or {}) <= known:
        # Left out: uploads (a file part is any bytes, and schemathesis's "invalid" ones are often
        # valid; bad uploads are in test_hostile_input) and unknown query parameters, which the
        # pool ignores as HTTP servers do (schemathesis counts one with an empty name as invalid).
        checks.append(negative_data_rejection)
    case.validate_response(response, checks=checks)
    assert_envelope_on_4xx(response)


@pytest.mark.slow
@pytest.mark.timeout(900)  # thousands of requests; minutes on a machine busy with the other workers
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_the_pool_answers_generated_requests_without_5xx_and_with_the_envelope(mode, pool_schema, fuzz_pool):
    """Every operation of /openapi.json, valid (positive) and invalid (negative) requests.

    Driven through schemathesis's strategies with plain hypothesis rather than its pytest plugin,
    whose fixture-based parametrization breaks with each pytest release that moves node internals.
    """
    # the MCP server's answers are JSON-RPC, not the contract's (test_pool_mcp drives it with the MCP SDK)
    operations = [op for op in (result.ok() for result in pool_schema.get_all_operations()) if op.path != "/mcp"]
    assert {"POST /execute", "POST /uploadFile", "GET /downloadFile"} <= {op.label for op in operations}
    for operation in operations:
        @settings(max_examples=EXAMPLES // len(operations), deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            check_answer(case, fuzz_pool)

        try:
            fuzz()
        except Unsatisfiable:  # nothing about this operation can be invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label


def test_the_fuzzing_reached_every_operation_thousands_of_times_in_all():
    """A check on the run above (pytest runs a module's tests in order): it really fuzzed."""
    if not STATUSES:
        pytest.skip("the schemathesis test did not run (deselected)")
    assert sum(map(len, STATUSES.values())) >= 1200, {k: len(v) for k, v in STATUSES.items()}
    inputless = {"GET /health", "GET /openapi.json"}  # nothing to generate: one request each
    counts = {k: len(v) for k, v in STATUSES.items()}
    assert all(n >= 30 for k, n in counts.items() if k not in inputless), counts
    assert not [s for v in STATUSES.values() for s in v if s >= 500]


# the client's wire parsing --------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.sampled_from(["", "Success", "Failure", "Succeeded", "Failed", "Running", "NotStarted", "Canceled",
                              "2024-04-23T19:36:14.583Z", "2024-04-23T19:36:14.5832222Z", "image", "png"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                          max_size=4), max_leaves=12)
STATUS = st.sampled_from(["Succeeded", "Failed", "Running", "NotStarted", "Canceled", "Success", "Failure",
                          "success", "Bogus"]) | JSON
IMAGE = st.fixed_dictionaries({"type": st.just("image"), "format": JSON | st.just("png"),
                               "base64_data": st.text(max_size=20) | st.just("iVBORw0KGgo=") | JSON})
VALUE = JSON | IMAGE
ERROR = st.fixed_dictionaries({}, optional={"code": JSON, "message": JSON}) | JSON
V2_RESULT = st.fixed_dictionaries({}, optional={"stdout": JSON, "stderr": JSON, "executionResult": VALUE,
                                                "executionTimeInMilliseconds": JSON})
V2_EXECUTION = st.fixed_dictionaries({"status": STATUS}, optional={"id": JSON, "identifier": JSON,
                                                                   "result": V2_RESULT | JSON, "error": ERROR})
V1_PROPERTIES = st.fixed_dictionaries({"status": STATUS}, optional={
    "stdout": JSON, "stderr": JSON, "result": VALUE, "executionResult": VALUE, "error": ERROR,
    "executionTimeInMilliseconds": JSON, "id": JSON})
V1_EXECUTION = st.fixed_dictionaries({"properties": V1_PROPERTIES | JSON}, optional={"$id": JSON, "id": JSON})
V1_ENTRY = st.fixed_dictionaries({"properties": st.fixed_dictionaries(
    {"filename": st.text(max_size=20) | JSON}, optional={"size": JSON, "lastModifiedTime": JSON, "type": JSON,
                                                         "contentType": JSON})} ) | JSON
V2_ENTRY = st.fixed_dictionaries({"name": st.text(max_size=20) | JSON}, optional={
    "type": st.sampled_from(["File", "Directory"]) | JSON, "sizeInBytes": JSON, "lastModifiedAt": JSON,
    "contentType": JSON}) | JSON
FILE_LIST = st.fixed_dictionaries({"value": st.lists(V1_ENTRY | V2_ENTRY, max_size=4) | JSON},
                                  optional={"nextLink": JSON | st.just("/files?skip=300")})
SESSION = st.fixed_dictionaries({"identifier": st.text(max_size=10) | JSON}, optional={
    "createdAt": JSON, "lastAccessedAt": JSON, "expireAt": JSON, "expiresAt": JSON, "etag": JSON})
BODY = V2_EXECUTION | V1_EXECUTION | FILE_LIST | SESSION | V2_ENTRY | JSON
VERSIONS = st.sampled_from(SUPPORTED_API_VERSIONS)


def assert_neutral(parsed) -> None:
    """The models the kernel reads hold the types they promise, whatever the pool sent."""
    from datetime import datetime

    from remote_kernel.sessions import Execution, ExecutionStatus, RemoteFile, SessionInfo

    items = parsed if isinstance(parsed, list) else [parsed]
    for item in items:
        if isinstance(item, Execution):
            assert isinstance(item.status, ExecutionStatus)
            assert isinstance(item.stdout, str) and isinstance(item.stderr, str)
            assert item.id is None or isinstance(item.id, str)
            assert item.duration_ms is None or isinstance(item.duration_ms, float)
            if item.error is not None:
                assert isinstance(item.error.name, str) and isinstance(item.error.message, str)
            if item.image is not None:
                assert isinstance(item.image.data, bytes) and isinstance(item.image.format, str)
        elif isinstance(item, RemoteFile):
            assert isinstance(item.name, str)
            assert item.size is None or (isinstance(item.size, int) and not isinstance(item.size, bool))
            assert item.modified is None or isinstance(item.modified, datetime)
            assert item.content_type is None or isinstance(item.content_type, str)
        elif isinstance(item, SessionInfo):
            assert isinstance(item.identifier, str)
            assert item.etag is None or isinstance(item.etag, str)
            for moment in (item.created_at, item.last_accessed_at, item.expires_at):
                assert moment is None or isinstance(moment, datetime)


@settings(max_examples=400, deadline=None)
@given(version=VERSIONS, body=BODY, guid=st.none() | st.text(max_size=8))
@example(version="2025-10-02-preview", guid=None,  # an integer too large for a float
         body={"status": "Succeeded", "result": {"executionTimeInMilliseconds": 10 ** 400}})
@example(version="2024-08-02-preview", guid=None, body={"value": [{"properties": {"filename": "a", "size": "12"}}]})
def test_wire_parsing_of_any_body_gives_a_model_or_a_sessions_error(version, body, guid):
    wire = wire_for(version)
    parsers = [lambda b: wire.parse_execution(b, guid), wire.parse_upload, wire.parse_file_info,
               lambda b: wire.parse_file_list(b)[0], wire.parse_session_info]
    for parse in parsers:
        try:
            parsed = parse(body)
        except SessionsError:
            continue
        assert_neutral(parsed)


@settings(max_examples=400, deadline=None)
@given(status=st.integers(100, 599), body=st.binary(max_size=300) | BODY.map(lambda b: json.dumps(b).encode()),
       cut=st.integers(0, 400), code=st.none() | st.text(max_size=20), doing=st.text(max_size=20),
       missing=st.sampled_from([None, "file", "session"]))
def test_an_error_answer_of_any_shape_becomes_a_sessions_error(status, body, cut, code, doing, missing):
    body = body[:cut]
    headers = {"x-ms-error-code": code} if code else {}
    error = error_from_response(status, headers, body, doing, "hint", missing)
    assert isinstance(error, SessionsError) and isinstance(error.message, str)
    found_code, message = parse_error(body, headers)
    assert found_code is None or isinstance(found_code, str)
    assert message is None or isinstance(message, str)
    assert isinstance(snippet(body), str)


def test_a_body_nested_too_deep_to_parse_is_a_sessions_error_not_a_recursion_error():
    deep = b"[" * 100_000 + b"]" * 100_000
    error = error_from_response(500, {}, deep, "executing the cell")
    assert isinstance(error, SessionsError)
    assert parse_error(deep, {}) == (None, None)

    async def execute() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, content=deep))
        async with SessionsClient("http://127.0.0.1:9", "fuzz-identifier", transport=transport) as client:
            await client.execute("1")

    with pytest.raises(UnexpectedResponse, match="not JSON"):
        asyncio.run(execute())


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("operation", ["execute", "download"])
def test_a_body_that_cannot_be_decoded_is_a_sessions_error(status, operation):
    """A gzip Content-Encoding on a body that is not gzip: httpx raises DecodingError on reading."""
    import io

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-encoding": "gzip"},
                              stream=httpx.ByteStream(b'{"status": "Succeeded"}'))

    async def run() -> None:
        async with SessionsClient("http://127.0.0.1:9", "fuzz-identifier", transport=httpx.MockTransport(answer),
                                  retry=RetryPolicy(attempts=1)) as client:
            if operation == "execute":
                await client.execute("1")
            else:
                await client.download("a.txt", io.BytesIO())

    with pytest.raises(SessionsError):
        asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(value=JSON | st.text(max_size=40), text=st.text(max_size=200))
def test_times_tracebacks_and_snippets_of_anything_parse_without_raising(value, text):
    from datetime import datetime

    assert parse_time(value) is None or isinstance(parse_time(value), datetime)
    name, message = traceback_exception(text)
    assert (name is None or isinstance(name, str)) and isinstance(message, str)
    assert isinstance(snippet(value), str)


# the whole client, against a pool that answers anything ----------------------------------------

HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
RESPONSE = st.fixed_dictionaries({
    "status": st.sampled_from([200, 201, 202, 204, 400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504])
    | st.integers(100, 599),
    "body": BODY.map(lambda b: json.dumps(b).encode()) | st.binary(max_size=200),
    "cut": st.none() | st.integers(0, 300),
    "headers": st.dictionaries(st.sampled_from(["retry-after", "operation-location", "x-ms-session-guid",
                                                "x-ms-error-code", "content-type", "content-encoding"]),
                               HEADER_VALUES | st.sampled_from(["/executions/e1?api-version=x", "http://127.0.0.1:9/x",
                                                                "https://elsewhere.example/x", "0", "gzip",
                                                                "Wed, 21 Oct 2015 07:28:00 GMT"]), max_size=4),
})
OPERATIONS = ["execute", "list_files", "file_info", "download", "delete_file", "delete_session", "session_info",
              "upload"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=VERSIONS, operation=st.sampled_from(OPERATIONS), answers=st.lists(RESPONSE, min_size=1, max_size=4))
def test_the_client_raises_only_its_own_errors_whatever_the_pool_answers(version, operation, answers):
    import io
    from unittest import mock

    from remote_kernel.sessions import client as client_module

    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        if not queue:
            return httpx.Response(400, json={"error": {"code": "Done", "message": "no more answers"}})
        drawn = queue.pop(0)
        body = drawn["body"] if drawn["cut"] is None else drawn["body"][:drawn["cut"]]
        return httpx.Response(drawn["status"], headers=drawn["headers"], stream=httpx.ByteStream(body))  # read later

    async def scenario() -> None:
        client = SessionsClient("http://127.0.0.1:9", "fuzz-identifier", api_version=version,
                                auth=StaticToken("t0ken"), timeout=1, transport=httpx.MockTransport(answer),
                                retry=RetryPolicy(attempts=2, base_delay=0, max_delay=0, total=1))
        client.execution_margin = 0
        async with client:
            if operation == "execute":
                await client.execute("1+1")
            elif operation == "list_files":
                await client.list_files()
            elif operation == "file_info":
                await client.file_info("a.txt")
            elif operation == "download":
                await client.download("a.txt", io.BytesIO())
            elif operation == "delete_file":
                await client.delete_file("a.txt")
            elif operation == "delete_session":
                await client.delete_session()
            elif operation == "session_info":
                await client.session_info()
            else:
                await client.upload(io.BytesIO(b"data"), "a.txt")

    real_sleep = asyncio.sleep

    async def no_wait(delay: float, *args, **kwargs):  # retries and polls, without the waiting
        return await real_sleep(0, *args, **kwargs)

    with mock.patch.object(client_module.asyncio, "sleep", no_wait):
        try:
            asyncio.run(scenario())
        except SessionsError:
            pass
