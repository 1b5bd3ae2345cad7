"""The local pool answers every route of the contract, per api-version, in the documented shapes."""
from __future__ import annotations

import base64
import time
import uuid

import httpx
import pytest

V1 = ["2024-02-02-preview", "2024-08-02-preview"]
V2 = ["2024-10-02-preview", "2025-02-02-preview", "2025-10-02-preview"]
SESSION_ROUTES = ["2025-02-02-preview", "2025-10-02-preview"]


def new_id() -> str:
    return str(uuid.uuid4())


def v1_execute(http, identifier, code, version="2024-08-02-preview", **extra):
    body = {"properties": {"identifier": identifier, "codeInputType": "inline", "executionType": "Synchronous",
                           "code": code, "timeoutInSeconds": 100, **extra}}
    return http.post("/code/execute", params={"api-version": version, "identifier": identifier}, json=body)


def v2_execute(http, identifier, code, version="2025-10-02-preview", **extra):
    body = {"codeInputType": "inline", "executionType": "Synchronous", "code": code, "timeoutInSeconds": 100, **extra}
    return http.post("/executions", params={"api-version": version, "identifier": identifier}, json=body)


@pytest.mark.parametrize("version", V1)
def test_v1_execute_answers_the_seed_shape_and_keeps_state(http, version):
    identifier = new_id()
    first = v1_execute(http, identifier, 'print("inline-synchronous")\nx = 40', version)
    assert first.status_code == 202
    props = first.json()["properties"]
    assert props["status"] == "Success"
    assert props["stdout"] == "inline-synchronous\n"
    assert props["stderr"] == ""
    assert props["result"] == "" and props["executionResult"] == ""
    assert isinstance(props["executionTimeInMilliseconds"], int)
    second = v1_execute(http, identifier, "x + 2", version).json()["properties"]
    assert second["result"] == 42 and second["executionResult"] == 42


@pytest.mark.parametrize("version", V2)
def test_v2_execute_answers_the_seed_shape(http, version):
    identifier = new_id()
    response = v2_execute(http, identifier, 'print("inline-synchronous")\n1+1', version)
    assert response.status_code == 200  # all three official documents (docs/clients.md)
    body = response.json()
    assert body["status"] == "Succeeded"
    assert body["identifier"] == identifier
    assert body["result"]["stdout"] == "inline-synchronous\n"
    assert body["result"]["executionResult"] == 2
    assert response.headers["operation-id"] == body["id"]
    assert response.headers["Operation-Location"].startswith(
        f"{str(http.base_url).rstrip('/')}/executions/{body['id']}?api-version={version}")  # a uri in the official documents


def test_v1_path_with_a_v2_version_answers_in_the_v1_shape(http):
    """The NodeLTS tutorial calls code/execute with 2024-10-02-preview and reads properties.status."""
    response = v1_execute(http, new_id(), "1+3", "2024-10-02-preview", codeInputType="inlinetext")
    assert response.json()["properties"]["status"] == "Success"
    assert response.json()["properties"]["executionResult"] == 4


@pytest.mark.parametrize("kind", ["InlineBase64", "inlinebase64"])
def test_base64_code_is_decoded(http, kind):
    body = v2_execute(http, new_id(), "MSsy", codeInputType=kind).json()
    assert body["result"]["executionResult"] == 3


@pytest.mark.parametrize("code, expected", [
    ("1+1", 2), ("'a'", "a"), ("None", ""), ("float('nan')", "nan"), ("[1, 'b', {'c': 2.5}]", "[1, 'b', {'c': 2.5}]"),
    ("x = 1", ""), ("object", "object"), ("True", True),
])
def test_trailing_expression_comes_back_as_a_json_value(http, code, expected):
    """Primitives as JSON values, everything else as IPython's display text (tests/test_pool_forms.py)."""
    assert v2_execute(http, new_id(), code).json()["result"]["executionResult"] == expected


def test_jupyter_format_returns_the_repr(http):
    body = v2_execute(http, new_id(), "'nan'", returnJupyterFormatExecutionResult=True).json()
    assert body["result"]["executionResult"] == "'nan'"


def test_an_exception_is_a_failed_execution_with_the_traceback(http):
    identifier = new_id()
    body = v2_execute(http, identifier, "x = 5\n1/0").json()
    assert body["status"] == "Failed"
    assert body["error"]["error"]["code"] == "ZeroDivisionError"  # an ErrorResponse (the official documents)
    assert body["error"]["error"]["message"] == "division by zero"
    assert "ZeroDivisionError" in body["result"]["stderr"]
    assert v2_execute(http, identifier, "x").json()["result"]["executionResult"] == 5  # state kept
    v1 = v1_execute(http, identifier, "undefined_name").json()["properties"]
    assert v1["status"] == "Failure" and "NameError" in v1["stderr"]


@pytest.mark.parametrize("jupyter", [False, True])
@pytest.mark.parametrize("code, error", [
    ("class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nBad()", "RuntimeError"),
    ("10**5000", "ValueError"),  # int → text past sys.get_int_max_str_digits()
    ("{'a': [10**5000]}", "ValueError"),
    ("class Bad:\n    def __repr__(self):\n        raise SystemExit(2)\nBad()", "SystemExit"),
])
def test_a_value_whose_repr_raises_fails_the_execution_and_keeps_the_session(http, code, error, jupyter):
    identifier = new_id()
    v2_execute(http, identifier, "kept = 41")
    body = v2_execute(http, identifier, code, returnJupyterFormatExecutionResult=jupyter).json()
    assert body["status"] == "Failed" and body["error"]["error"]["code"] == error, body  # an ErrorResponse
    assert error in body["result"]["stderr"]
    assert v2_execute(http, identifier, "kept + 1").json()["result"]["executionResult"] == 42  # not SessionLost


def test_an_open_figure_comes_back_as_a_png_image(http):
    body = v2_execute(http, new_id(), "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()").json()
    image = body["result"]["executionResult"]
    assert image["type"] == "image" and image["format"] == "png"
    assert base64.b64decode(image["base64_data"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_input_fails_at_once(http):
    body = v2_execute(http, new_id(), "input('name? ')").json()
    assert body["status"] == "Failed"
    assert "stdin" in body["result"]["stderr"]


def test_output_streams_max_length_truncates_only_when_asked(http):
    identifier = new_id()
    full = v2_execute(http, identifier, "print('x' * 10000)").json()["result"]["stdout"]
    assert len(full) == 10001
    cut = v2_execute(http, identifier, "print('x' * 10000)", outputStreamsMaxLength=100).json()["result"]["stdout"]
    assert cut == "x" * 100


def test_asynchronous_execution_is_polled_until_terminal(http):
    identifier = new_id()
    response = v2_execute(http, identifier, "import time\ntime.sleep(1)\nprint('Hello from async code')",
                          executionType="Asynchronous")
    body = response.json()
    assert body["status"] in ("Running", "NotStarted")
    location = response.headers["Operation-Location"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = http.get(location).json()
        if body["status"] not in ("Running", "NotStarted"):
            break
        time.sleep(0.1)
    assert body["status"] == "Succeeded"
    assert body["result"]["stdout"] == "Hello from async code\n"
    missing = http.get("/executions/nope", params={"api-version": "2025-10-02-preview", "identifier": identifier})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ExecutionNotFound"


def test_executions_in_one_session_run_in_arrival_order(http):
    identifier = new_id()
    v2_execute(http, identifier, "log = []")
    ids = []
    for i in range(5):
        r = v2_execute(http, identifier, f"import time; time.sleep(0.05); log.append({i})", executionType="Asynchronous")
        ids.append(r.headers["Operation-Location"])
    body = v2_execute(http, identifier, "log").json()  # queued behind the five
    assert body["result"]["executionResult"] == "[0, 1, 2, 3, 4]"


# files --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", V1)
def test_v1_file_routes(http, version):
    identifier = new_id()
    params = {"api-version": version, "identifier": identifier}
    up = http.post("/files/upload", params=params, files={"file": ("/mnt/data/a.csv", b"x,y\n1,2\n")})
    assert up.status_code == 200
    entry = up.json()["value"][0]["properties"]
    assert entry["filename"] == "a.csv" and entry["size"] == 8 and entry["lastModifiedTime"].endswith("Z")
    listed = http.get("/files", params=params).json()["value"]
    assert [e["properties"]["filename"] for e in listed] == ["a.csv"]
    assert http.get("/files/content/a.csv", params=params).content == b"x,y\n1,2\n"
    meta = http.get("/files/a.csv", params=params).json()
    assert meta["value"][0]["properties"]["size"] == 8
    deleted = http.delete("/files/a.csv", params=params)
    assert deleted.status_code == 200 and deleted.json() == {"message": "file deleted successfully"}
    assert http.get("/files/content/a.csv", params=params).status_code == 404


@pytest.mark.parametrize("version", V2)
def test_v2_file_routes_with_spaces_and_unicode(http, version):
    identifier = new_id()
    params = {"api-version": version, "identifier": identifier, "path": "/mnt/data"}
    name = "résumé final 1.txt"
    up = http.post("/files", params=params, files={"file": (name, "héllo".encode())})
    assert up.status_code == 200
    assert up.json()["name"] == name and up.json()["sizeInBytes"] == 6 and up.json()["type"] == "File"
    assert [e["name"] for e in http.get("/files", params=params).json()["value"]] == [name]
    quoted = httpx.URL("/files/").join(name.replace(" ", "%20")).path
    content = http.get(f"{quoted}/content", params=params)
    assert content.content == "héllo".encode() and content.headers["content-type"] == "application/octet-stream"
    assert http.get(quoted, params=params).json()["sizeInBytes"] == 6
    assert http.delete(quoted, params=params).status_code == 204
    missing = http.get(f"{quoted}/content", params=params)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FileNotFound"


def test_files_written_by_code_are_listed_and_downloadable(http):
    identifier = new_id()
    v2_execute(http, identifier, "import os\nos.makedirs('sub', exist_ok=True)\nopen('sub/out.txt','w').write('hi')")
    params = {"api-version": "2025-10-02-preview", "identifier": identifier}
    root = http.get("/files", params=params).json()["value"]
    assert {"name": "sub", "type": "Directory"}.items() <= root[0].items()
    sub = http.get("/files", params={**params, "path": "sub"}).json()["value"]
    assert sub[0]["name"] == "out.txt"
    assert http.get("/files/sub%2Fout.txt/content", params=params).content == b"hi"
    assert http.get("/files/out.txt/content", params={**params, "path": "/mnt/data/sub"}).content == b"hi"


def test_uploaded_files_are_visible_to_code(http):
    identifier = new_id()
    params = {"api-version": "2025-10-02-preview", "identifier": identifier}
    http.post("/files", params=params, files={"file": ("data.csv", b"a,b\n1,2\n")})
    body = v2_execute(http, identifier, "import pandas as pd\npd.read_csv('/mnt/data/data.csv')['b'].sum()").json()
    assert body["result"]["executionResult"] == 2


@pytest.mark.parametrize("name", [b"../etc/passwd", b"a/../../b", b"/etc/passwd", b"a\x00b"])
def test_names_outside_mnt_data_are_refused(http, name):
    params = {"api-version": "2025-10-02-preview", "identifier": new_id()}
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + name +
            b'"\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n--XyZ--\r\n')
    up = http.post("/files", params=params, content=body,
                   headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert up.status_code == 400, up.text
    assert up.json()["error"]["code"] == "InvalidFileName"


@pytest.mark.parametrize("path", ["/files/..%2F..%2Fetc%2Fpasswd/content", "/files/a%00b/content",
                                  "/files/content/..%2Fsecret"])
def test_download_paths_outside_mnt_data_are_refused(http, path):
    response = http.get(path, params={"api-version": "2025-10-02-preview", "identifier": new_id()})
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidFileName"


def test_uploads_over_the_limit_are_413(pool):
    from conftest import start_pool

    small = start_pool("--max-upload", "1M", "--ready-sessions", "0")
    try:
        params = {"api-version": "2025-10-02-preview", "identifier": new_id()}
        with httpx.Client(base_url=small.endpoint, headers=small.headers) as client:
            response = client.post("/files", params=params, files={"file": ("big.bin", b"0" * (3 << 20))})
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "PayloadTooLarge"
            assert client.get("/files", params=params).json()["value"] == []  # nothing half-written
    finally:
        small.stop()


# sessions, versions, auth, errors -------------------------------------------------------------------

@pytest.mark.parametrize("version", SESSION_ROUTES)
def test_session_get_list_delete(http, version):
    identifier = new_id()
    v2_execute(http, identifier, "x = 1")
    params = {"api-version": version, "identifier": identifier}
    info = http.get("/session", params=params).json()
    assert info["identifier"] == identifier and {"createdAt", "lastAccessedAt", "expireAt", "etag"} <= info.keys()
    listed = http.get("/listSessions", params={"api-version": version}).json()
    assert identifier in [s["identifier"] for s in listed["sessions"]] and "nextLink" not in listed  # one page
    assert http.delete("/session", params=params).status_code == 204
    gone = http.get("/session", params=params)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "SessionWithIdentifierNotFound"
    fresh = v2_execute(http, identifier, "'x' in globals()").json()  # the identifier may be reused
    assert fresh["result"]["executionResult"] is False


def test_session_routes_need_a_recent_version(http):
    response = http.get("/session", params={"api-version": "2024-10-02-preview", "identifier": new_id()})
    assert response.status_code == 400 and response.json()["error"]["code"] == "UnsupportedApiVersion"


def test_management_routes(http):
    identifier = new_id()
    v2_execute(http, identifier, "1")
    params = {"api-version": "2025-02-02-preview", "identifier": identifier}
    view = http.post("/.management/getSession", params=params).json()
    assert view["identifier"] == identifier and "expiresAt" in view
    page = http.post("/.management/listSessions", params={"api-version": "2025-02-02-preview", "skip": 0}).json()
    assert {"value", "count"} <= page.keys() and "nextLink" not in page and page["count"] >= 1
    stopped = http.post("/.management/stopSession", params=params)
    assert stopped.status_code == 200 and identifier in stopped.text
    assert http.post("/.management/getSession", params=params).status_code == 404


def test_metadata_lists_runtime_and_packages(http):
    body = http.get("/metadata", params={"api-version": "2025-10-02-preview"}).json()
    assert body["runtimes"][0]["name"] == "python"
    assert "numpy" in {p["name"].lower() for p in body["preInstalledPackages"]}


def test_azure_style_prefix_and_double_slashes_are_served(http, pool):
    identifier = new_id()
    prefix = "/subscriptions/sub-1/resourceGroups/rg/sessionPools/local/"
    response = http.post(prefix + "/executions", params={"api-version": "2025-10-02-preview", "identifier": identifier},
                         json={"code": "6*7"})
    assert response.json()["result"]["executionResult"] == 42


@pytest.mark.parametrize("version", ["2023-01-01", "latest", ""])
def test_unsupported_versions_are_400_with_the_envelope(http, version):
    response = v2_execute(http, new_id(), "1", version=version)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "UnsupportedApiVersion"
    assert response.headers["x-ms-error-code"] == "UnsupportedApiVersion"


@pytest.mark.parametrize("identifier", ["abc", "x" * 129, "has space", "tab\tbed", "back\\slash", "ünï"])
def test_bad_identifiers_are_400(http, identifier):
    response = v2_execute(http, identifier, "1")
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidIdentifier"


def test_identifier_with_allowed_punctuation_works(http):
    identifier = "a-b_c|d&e^f%g$h#i(j)k{l}m[n];o<p>"
    assert v2_execute(http, identifier, "7").json()["result"]["executionResult"] == 7


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer"])
def test_requests_without_the_token_are_401(pool, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{pool.endpoint}/executions", params={"api-version": "2025-10-02-preview",
                                                                 "identifier": new_id()},
                          json={"code": "1"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"code": 5}', b"\xff\xfe", b"[" * 100000,
                                  b'{"code": "1", "codeInputType": "pascal"}',
                                  b'{"code": "1", "timeoutInSeconds": "soon"}'])
def test_malformed_execute_bodies_are_400(http, body):
    response = http.post("/executions", params={"api-version": "2025-10-02-preview", "identifier": new_id()},
                         content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "code" in response.json()["error"]


def test_unknown_routes_answer_the_envelope(http):
    response = http.get("/nowhere", params={"api-version": "2025-10-02-preview"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "NotFound"


def served_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route the pool's Starlette router dispatches, mounted ones included."""
    from starlette.routing import Mount

    def walk(routes, prefix=""):
        for route in routes:
            if isinstance(route, Mount):
                yield from walk(route.routes, prefix + route.path)
            else:
                yield from ((method, prefix + route.path_format) for method in route.methods - {"HEAD"})

    return set(walk(app.routes))


def documented_routes(document) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}


@pytest.mark.parametrize("runtime", ["python", "node", "shell"])
@pytest.mark.parametrize("with_mcp", [True, False])
def test_the_openapi_document_has_exactly_the_routes_served(runtime, with_mcp):
    from types import SimpleNamespace

    from remote_kernel.pool.app import build_app

    async def mcp(scope, receive, send) -> None:  # stands in for the MCP server: only its route matters here
        raise AssertionError("not called")

    pool = SimpleNamespace(sandbox=SimpleNamespace(runtime=SimpleNamespace(name=runtime)))
    app = build_app(pool, token="t", max_upload=1, describe=None, log=None, mcp=mcp if with_mcp else None)
    document = app.state.openapi
    assert document["openapi"].startswith("3.")
    assert documented_routes(document) == served_routes(app)
    assert {("POST", "/execute"), ("POST", "/uploadFile"), ("GET", "/downloadFile"), ("POST", "/python/execute"),
            ("POST", "/.remote-kernel/live-execute"), ("POST", "/.remote-kernel/live-interrupt")} \
        <= documented_routes(document)
    assert (("POST", "/mcp") in documented_routes(document)) is with_mcp
    body = document["paths"]["/executions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert ("shellCommand" in str(body)) is (runtime == "shell")


def test_a_route_without_an_operation_stops_the_document():
    from starlette.routing import Route

    from remote_kernel.pool.openapi import UndocumentedRoute, openapi_document

    async def endpoint(request) -> None:
        raise AssertionError("not called")

    with pytest.raises(UndocumentedRoute, match="PUT /nowhere"):
        openapi_document([Route("/nowhere", endpoint, methods=["PUT"])])


def test_every_documented_route_is_routed_by_the_live_pool(http):
    """The served document, sent back to the pool: no documented (method, path) meets the router's 404 or 405."""
    document = http.get("/openapi.json").json()
    assert documented_routes(document) >= {("POST", "/executions"), ("POST", "/code/execute"), ("GET", "/files"),
                                           ("GET", "/session"), ("POST", "/execute"), ("POST", "/uploadFile"),
                                           ("GET", "/downloadFile")}
    for method, path in documented_routes(document) - {("GET", "/mcp")}:  # GET /mcp would hold an event stream
        response = http.request(method, path.replace("{name}", "a.txt").replace("{executionId}", "e1"),
                                params={"api-version": "2025-10-02-preview", "identifier": "no-such-session"},
                                headers={"x-ms-apikey": "wrong"})
        routing_error = response.status_code in (404, 405) and response.json()["error"]["code"] in (
            "NotFound", "MethodNotAllowed")
        assert not routing_error, (method, path, response.text)


def test_every_runtime_the_sandbox_makes_has_an_answer_policy_and_a_container_type():
    """A new container type is one Runtime factory (sandbox.py) and one AnswerPolicy (runtimes.py): a
    factory whose runtime has no policy would answer like nothing in particular."""
    import ast
    import inspect

    from remote_kernel.pool import runtimes, sandbox

    made = {call.args[0].value for call in ast.walk(ast.parse(inspect.getsource(sandbox.Runtime)))
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Runtime"
            and call.args and isinstance(call.args[0], ast.Constant)}
    assert made == set(runtimes.POLICIES), "each Runtime name needs an entry in runtimes.POLICIES, and no more"
    factories = {name for name in vars(sandbox.Runtime) if isinstance(vars(sandbox.Runtime)[name], staticmethod)}
    assert len(runtimes.CONTAINER_TYPES) == len(made) == len(factories)
