"""What the pool accepts beyond the contract's main forms, and how it renders values (docs/clients.md).

Each test is one request form a real client or an official sample sends, checked over plain HTTP so
that the form itself, not a client library, is what is tested (tests/test_peer_clients.py drives the
libraries). Rendering of values is compared with a local ipykernel running the same cell.
"""
from __future__ import annotations

import base64
import uuid

import httpx
import pytest
from jupyter_client.manager import start_new_kernel
from kernel_support import kernel, pool_env, result_of, run


def new_id() -> str:
    return str(uuid.uuid4())


def seed_002_body(identifier: str, kind: str, code: str) -> dict:
    """The body of seed 002's curl samples (NodeLTS tutorial), which send no api-version."""
    return {"properties": {"identifier": identifier, "codeInputType": kind, "executionType": "synchronous",
                           "code": code, "timeoutInSeconds": 100}}


@pytest.mark.parametrize("kind, code, expected", [("inlinetext", "1+3", 4), ("InlineBase64", "MSsy", 3)])
def test_code_execute_without_api_version_is_the_2024_preview(http, kind, code, expected):
    identifier = new_id()
    answer = http.post("/code/execute", params={"identifier": identifier},
                       json=seed_002_body(identifier, kind, code))
    assert answer.status_code == 202, answer.text
    assert answer.json()["properties"]["status"] == "Success"
    assert answer.json()["properties"]["result"] == expected


def test_file_routes_without_api_version_answer_in_the_v1_shape(http):
    identifier = new_id()
    uploaded = http.post("/files/upload", params={"identifier": identifier},
                         files={"file": ("example.txt", b"Hello, sample!")})
    assert uploaded.status_code == 200 and uploaded.json()["value"][0]["properties"]["filename"] == "example.txt"
    assert http.get("/files/content/example.txt", params={"identifier": identifier}).content == b"Hello, sample!"


def test_routes_only_newer_versions_have_still_need_an_api_version(http):
    answer = http.post("/executions", params={"identifier": new_id()}, json={"code": "1"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "MissingApiVersionParameter"


def test_legacy_python_execute_with_python_code_answers_at_the_top_level(http):
    """LlamaIndex TS (@llamaindex/azure 0.2.1) posts this and reads a top-level `result`."""
    identifier = new_id()
    body = {"properties": {"identifier": identifier, "codeInputType": "inline", "executionType": "synchronous",
                           "pythonCode": "print('hi')\n6 * 7"}}
    answer = http.post("/python/execute", params={"identifier": identifier, "api-version": "2024-02-02-preview"},
                       json=body)
    assert answer.status_code == 200, answer.text
    assert {k: answer.json()[k] for k in ("status", "stdout", "stderr", "result")} == {
        "status": "Success", "stdout": "hi\n", "stderr": "", "result": 42}
    failed = http.post("/python/execute", params={"identifier": identifier},
                       json={"properties": {"pythonCode": "1/0"}}).json()
    assert failed["status"] == "Failure" and "ZeroDivisionError" in failed["stderr"]
    assert failed["error"]["code"] == "ZeroDivisionError"


def multipart_body(name: str, content: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files={"file": (name, content, "application/octet-stream")})
    return request.read(), request.headers["content-type"]


def test_an_upload_whose_content_type_is_json_but_whose_body_is_multipart_is_stored(http):
    """Semantic Kernel's shared client keeps `Content-Type: application/json` from its execute call."""
    identifier = new_id()
    body, _ = multipart_body("/mnt/data/numbers.csv", b"a,b\n1,2\n")
    answer = http.post("/files/upload", params={"identifier": identifier, "api-version": "2024-02-02-preview"},
                       content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["value"][0]["properties"]["filename"] == "numbers.csv"
    listed = http.get("/files", params={"identifier": identifier, "api-version": "2024-02-02-preview"}).json()
    assert [e["properties"]["size"] for e in listed["value"]] == [8]


@pytest.mark.parametrize("body", [b'{"not": "multipart"}', b"--\r\n", b""])
def test_a_body_that_is_not_multipart_is_still_refused(http, body):
    answer = http.post("/files/upload", params={"identifier": new_id(), "api-version": "2024-02-02-preview"},
                       content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidContentType"


PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


def test_a_v1_image_travels_once_in_the_field_python_clients_read(http):
    identifier = new_id()
    answer = http.post("/code/execute", params={"identifier": identifier, "api-version": "2024-02-02-preview"},
                       json={"properties": {"code": PLOT}})
    properties = answer.json()["properties"]
    assert properties["result"]["type"] == "image" and "executionResult" not in properties
    png = properties["result"]["base64_data"]
    assert base64.b64decode(png).startswith(b"\x89PNG") and answer.text.count(png) == 1
    plain = http.post("/code/execute", params={"identifier": identifier, "api-version": "2024-02-02-preview"},
                      json={"properties": {"code": "1+1"}}).json()["properties"]
    assert plain["result"] == 2 and plain["executionResult"] == 2  # a value too small to matter: both fields


def test_v2_answers_carry_session_id_and_raw_result(http):
    identifier = new_id()
    params = {"identifier": identifier, "api-version": "2024-10-02-preview"}
    ok = http.post("/executions", params=params, json={"code": "print('x')", "timeoutInSeconds": 100}).json()
    assert ok["sessionId"] == identifier
    raw = ok["rawResult"]
    assert set(raw) == {"hresult", "result", "error_name", "error_message", "error_stack_trace", "stdout", "stderr",
                        "diagnosticInfo", "operationId"}
    assert raw["hresult"] == 0 and raw["operationId"] == ok["id"] and raw["diagnosticInfo"]["identifier"] == identifier
    failed = http.post("/executions", params=params, json={"code": "1/0", "timeoutInSeconds": 100}).json()
    assert failed["rawResult"]["error_name"] == "ZeroDivisionError" and failed["rawResult"]["hresult"] != 0
    image = http.post("/executions", params=params, json={"code": PLOT, "timeoutInSeconds": 100})
    assert image.text.count(image.json()["result"]["executionResult"]["base64_data"]) == 1
    polled = http.get(f"/executions/{ok['id']}", params=params).json()
    assert polled["sessionId"] == identifier and polled["rawResult"]["operationId"] == ok["id"]


# values ---------------------------------------------------------------------------------------------

NOT_PRIMITIVE = ["[str(i) * 5 for i in range(40)]", "(1, 'a')", "{'a': 1, 'b': [True, None]}", "{3, 1, 2}",
                 "[1, 2.5, 'x']", "b'bytes'", "1+2j"]
PRIMITIVE = [("1+1", 2), ("0.1 + 0.2", 0.1 + 0.2), ("'a\\nb'", "a\nb"), ("True", True), ("None", ""),
             ("float('nan')", "nan"), ("'nan'", "nan"), ("x = 1", ""), ("import numpy\nnumpy.float64(1.5)", 1.5),
             ("import numpy\nnumpy.int64(7)", 7)]


@pytest.fixture(scope="module")
def ipykernel_text():
    """text/plain of a cell's result on a local ipykernel (`python3`)."""
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        yield lambda code: result_of(run(kc, code)[1])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def pool_value(http, code: str, version: str = "2025-10-02-preview", **extra) -> object:
    answer = http.post("/executions", params={"identifier": new_id(), "api-version": version},
                       json={"code": code, "timeoutInSeconds": 100, **extra})
    return answer.json()["result"]["executionResult"]


@pytest.mark.parametrize("code", NOT_PRIMITIVE)
def test_values_that_are_not_primitives_are_their_ipython_display_text(http, ipykernel_text, code):
    local = ipykernel_text(code)
    assert pool_value(http, code) == local
    assert pool_value(http, code, returnJupyterFormatExecutionResult=True) == local


@pytest.mark.parametrize("code, expected", PRIMITIVE)
def test_primitive_values_are_json_values(http, code, expected):
    assert pool_value(http, code) == expected


def test_a_long_list_parses_as_autogen_parses_it(http):
    """AutoGen's get_available_packages(): str(result).strip("[]").split(",\\n"), then strip(" '")."""
    text = pool_value(http, "import importlib.metadata as m\nsorted({d.metadata['Name'] for d in m.distributions()})",
                      "2024-02-02-preview")
    names = {part.strip(" '") for part in str(text).strip("[]").split(",\n")}
    assert {"numpy", "pandas", "ipython"} <= {n.lower() for n in names} and len(names) > 20


@pytest.mark.parametrize("version", ["2024-02-02-preview", "2025-10-02-preview"])
def test_the_kernel_shows_values_as_ipykernel_does_in_either_rendering(pool, ipykernel_text, version):
    """Older api-versions have no display-text flag: the kernel must show the pool's text as ipykernel would."""
    cells = ["(1, 'a')", "{'a': 1}", "[str(i) * 5 for i in range(30)]", "'text'", "42", "3.5", "True"]
    with kernel(pool_env(pool, new_id(), REMOTE_KERNEL_API_VERSION=version)) as (_, kc):
        for code in cells:
            assert result_of(run(kc, code)[1]) == ipykernel_text(code), code
