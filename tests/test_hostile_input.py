"""Hostile input to the local pool: oversized, nested, mis-encoded and lying bodies, floods, slow
clients, bad tokens and forbidden identifiers. Every refusal is a 4xx in the error envelope, and
the pool (and the session, where there is one) keeps answering."""
from __future__ import annotations

import ast
import base64
import hmac
import importlib.util
import json
import re
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import PoolProcess, start_pool

from remote_kernel.pool.official import identifier_pattern

V2 = "2025-10-02-preview"
V1 = "2024-08-02-preview"
MAX_UPLOAD = 1 << 20
#: the characters the official documents' identifier pattern allows (4 to 128 of them)
ALLOWED = {chr(c) for c in range(128) if re.fullmatch(identifier_pattern(), chr(c) * 4)}


@pytest.fixture(scope="module")
def hostile_pool():
    """A pool of its own, with a 1 MiB upload limit, for input that may leave debris behind."""
    p = start_pool("--max-sessions", "40", "--ready-sessions", "1", "--max-upload", str(MAX_UPLOAD))
    yield p
    p.stop()


HTTP_POOL = "hostile_pool"  # the pool the `http` fixture (conftest.py) is a client of


def q(identifier: str, version: str = V2, **extra: str) -> dict[str, str]:
    return {"api-version": version, "identifier": identifier, **extra}


def new_id() -> str:
    return str(uuid.uuid4())


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    assert response.headers["x-ms-error-code"] == error["code"]
    if code is not None:
        assert error["code"] == code


def run(http: httpx.Client, identifier: str, code: str, timeout: int = 60) -> httpx.Response:
    return http.post("/executions", params=q(identifier), json={"code": code, "timeoutInSeconds": timeout})


def value_of(http: httpx.Client, identifier: str, code: str):
    body = run(http, identifier, code).json()
    assert body["status"] == "Succeeded", body
    result = body["result"]["executionResult"]
    # a list, tuple or dict comes back as its IPython display text (docs/clients.md): read it back
    return ast.literal_eval(result) if isinstance(result, str) and result[:1] in ("[", "(", "{") else result


def hidden_files(http: httpx.Client, identifier: str) -> list[str]:
    """Every name under the session's /mnt/data, upload temporaries included (the listing hides them)."""
    return value_of(http, identifier, "import os\nsorted(os.path.join(folder, name) for folder, subfolders, names "
                                      "in os.walk('/mnt/data') for name in subfolders + names)")


def multipart(name: bytes, content: bytes, boundary: bytes = b"b0undary") -> tuple[bytes, str]:
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n")
    return body, "multipart/form-data; boundary=" + boundary.decode()


# oversized bodies -------------------------------------------------------------------------------

def test_json_body_over_16_mib_is_413_whether_declared_or_streamed_and_starts_no_session(http):
    identifier = new_id()
    big = b'{"code": "' + b"1" * (17 << 20) + b'"}'
    declared = http.post("/executions", params=q(identifier), content=big,
                         headers={"Content-Type": "application/json"})
    assert_envelope(declared, 413, "PayloadTooLarge")

    def chunks():
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    streamed = http.post("/executions", params=q(identifier), content=chunks(),
                         headers={"Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert_envelope(streamed, 413, "PayloadTooLarge")
    assert_envelope(http.get("/session", params=q(identifier)), 404, "SessionWithIdentifierNotFound")


def test_streamed_upload_over_the_limit_is_413_and_leaves_no_partial_file(http):
    identifier = new_id()
    assert value_of(http, identifier, "7") == 7
    body, content_type = multipart(b"big.bin", b"x" * (MAX_UPLOAD + (256 << 10)))

    def chunks():
        for start in range(0, len(body), 64 << 10):
            yield body[start:start + (64 << 10)]

    response = http.post("/files", params=q(identifier), content=chunks(), headers={"Content-Type": content_type})
    assert_envelope(response, 413, "PayloadTooLarge")
    assert http.get("/files", params=q(identifier)).json()["value"] == []
    assert hidden_files(http, identifier) == []


# deeply nested JSON ------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"[" * 200_000,
    b'{"code": "1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"code": "1", "x": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
    b'{"properties": ' * 30_000 + b'{"code": "1"}' + b"}" * 30_000,
], ids=["open-arrays", "closed-arrays", "objects", "properties"])
def test_deeply_nested_json_is_400_and_the_pool_keeps_answering(http, hostile_pool, body):
    response = http.post("/executions", params=q(new_id()), content=body, headers={"Content-Type": "application/json"})
    assert_envelope(response, 400, "InvalidRequestBody")
    assert httpx.get(f"{hostile_pool.endpoint}/health", timeout=5).status_code == 200


# invalid UTF-8 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, code", [
    (b'{"code": "print(\xff\xfe)"}', "InvalidRequestBody"),  # raw invalid UTF-8 in the JSON text
    (b'{"code": "x = \'\xed\xa0\x80\'"}', "InvalidRequestBody"),  # an encoded surrogate
    (b'{"code": "x = \\"\\ud800\\"\\nprint(x)"}', "InvalidCode"),  # a lone surrogate escape
    (json.dumps({"code": base64.b64encode(b"print('\xff')").decode(), "codeInputType": "InlineBase64"}).encode(),
     "InvalidCode"),
], ids=["raw", "surrogate-bytes", "surrogate-escape", "base64"])
def test_invalid_utf8_in_code_is_400_and_the_session_keeps_its_state(http, body, code):
    identifier = new_id()
    first = run(http, identifier, "kept = 41")
    guid = first.headers["x-ms-session-guid"]
    response = http.post("/executions", params=q(identifier), content=body, headers={"Content-Type": "application/json"})
    assert_envelope(response, 400, code)
    after = run(http, identifier, "kept + 1")
    assert after.json()["result"]["executionResult"] == 42
    assert after.headers["x-ms-session-guid"] == guid


def test_invalid_utf8_in_file_names_is_refused_or_names_no_file(http):
    identifier = new_id()
    for raw_name in (b"a\xffb.txt", b"\xed\xa0\x80.txt", b"\xc3(.txt"):
        body, content_type = multipart(raw_name, b"data")
        response = http.post("/files", params=q(identifier), content=body, headers={"Content-Type": content_type})
        assert_envelope(response, 400, "InvalidFileName")
        v1 = http.post("/files/upload", params=q(identifier, V1), content=body, headers={"Content-Type": content_type})
        assert_envelope(v1, 400, "InvalidFileName")
    # in a URL, undecodable bytes become U+FFFD: a name no file has, never a crash
    for path in ("/files/%FF", "/files/%ED%A0%80/content", "/files/content/%C3%28", "/files/a%FFb"):
        assert_envelope(http.get(path, params=q(identifier)), 404, "FileNotFound")
    assert_envelope(http.delete("/files/%FF", params=q(identifier)), 404, "FileNotFound")
    assert_envelope(http.get("/files/a%00b", params=q(identifier)), 400, "InvalidFileName")
    assert_envelope(http.get("/files", params=q(identifier, path="dir\x00")), 400, "InvalidFileName")
    assert_envelope(http.get("/files", params={**q(identifier), "path": "\ufffd"}), 404, "FileNotFound")
    assert http.get("/files", params=q(identifier)).json()["value"] == []


# many files --------------------------------------------------------------------------------------

def test_ten_thousand_tiny_files_are_listed_whole(http):
    identifier = new_id()
    made = value_of(http, identifier,
                    "import os\nfor i in range(10000):\n    open(f'f{i:05d}.txt', 'w').write(str(i))\n"
                    "len(os.listdir('/mnt/data'))")
    assert made == 10000
    for version, names in ((V2, lambda body: [e["name"] for e in body["value"]]),
                           (V1, lambda body: [e["properties"]["filename"] for e in body["value"]])):
        response = http.get("/files", params=q(identifier, version))
        assert response.status_code == 200
        assert names(response.json()) == [f"f{i:05d}.txt" for i in range(10000)]
    assert http.get("/files/f09999.txt/content", params=q(identifier)).content == b"9999"


# output floods -----------------------------------------------------------------------------------

FLOODS = {
    "a million 1 KiB prints": "line = 'y' * 1023\nfor _ in range(1 << 20):\n    print(line)",
    "1024 writes of 1 MiB": "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)",
    "1 GiB to the stdout fd": "import os\nchunk = b'z' * (1 << 20)\nfor _ in range(1024):\n    os.write(1, chunk)",
}


@pytest.mark.slow
@pytest.mark.parametrize("flood", list(FLOODS))
def test_a_gigabyte_of_stdout_is_capped_and_the_pool_stays_responsive(http, hostile_pool, flood):
    identifier, bystander = new_id(), new_id()
    assert value_of(http, identifier, "kept = 'still here'\n1") == 1
    assert value_of(http, bystander, "2") == 2
    answered_during = 0  # rounds that started while the flood ran
    flooding, ready, stop = threading.Event(), threading.Event(), threading.Event()

    def watch() -> None:  # another client, another session: both answer while the flood runs
        with httpx.Client(base_url=hostile_pool.endpoint, headers=hostile_pool.headers, timeout=30) as other:
            while not stop.is_set():
                nonlocal answered_during
                during = flooding.is_set()
                assert other.get("/health").status_code == 200
                assert other.post("/executions", params=q(bystander), json={"code": "3"}).json()["status"] == "Succeeded"
                answered_during += during
                ready.set()
                time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(30)
    flooding.set()
    response = run(http, identifier, FLOODS[flood], timeout=120)
    flooding.clear()
    stop.set()
    watcher.join(30)

    body = response.json()
    assert body["status"] == "Succeeded", body.get("error")
    stdout = body["result"]["stdout"]
    if "fd" in flood:  # below Python's sys.stdout: drained by the pool, never returned
        assert stdout == ""
    else:
        assert len(stdout.encode()) <= (1 << 20) + 400
        # every flood writes 1 GiB: its head and its tail are kept, with how much was left out between
        found = re.fullmatch(r"(.*)\[output truncated: (\d+) bytes left out here \(the first (\d+) and the last (\d+) "
                             r"are shown\)\. [^\n]*%download[^\n]*\]\n(.*)", stdout, re.S)
        assert found, stdout[:200]
        head, left_out, first, last, tail = found.groups()
        assert int(left_out) + int(first) + int(last) == 1 << 30
        assert min(int(first), int(last)) >= (1 << 19) - 1024  # halves, cut at line ends
        line = FLOODS[flood].split("'")[1][0]  # the character the flood repeats
        assert set(head) <= {line, "\n"} and set(tail) <= {line, "\n"} and line in head and line in tail
        assert len(tail.encode()) == int(last)
    assert answered_during, "no request of the other client ran during the flood"
    assert value_of(http, identifier, "kept") == "still here"


# bodies that lie about their length --------------------------------------------------------------

def raw_exchange(endpoint: str, data: bytes, *, half_close: bool = False, wait: float = 5.0) -> bytes:
    """Send bytes on a fresh connection and read until the pool closes it (or `wait` passes)."""
    host, port = endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def assert_raw_envelope(answer: bytes, status: int, code: str) -> None:
    """A raw HTTP answer is `status` with the error envelope (and then the connection closed)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), answer[:300]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"].startswith("application/json") and headers["x-ms-error-code"] == code, head
    error = json.loads(body[:int(headers["content-length"])])["error"]
    assert error["code"] == code and error["message"]


def upload_request(pool: PoolProcess, identifier: str, body: bytes, content_type: str, length: str,
                   extra: bytes = b"") -> bytes:
    head = (f"POST /files?api-version={V2}&identifier={identifier} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {pool.token}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n")
    return head.encode() + extra + b"\r\n" + body


def test_multipart_bodies_that_lie_about_their_length_leave_nothing_behind(http, hostile_pool):
    identifier = new_id()
    assert value_of(http, identifier, "1") == 1
    body, content_type = multipart(b"lie.txt", b"x" * 5000)

    # longer than sent, then the client goes: the partial upload is dropped
    raw_exchange(hostile_pool.endpoint, upload_request(hostile_pool, identifier, body, content_type,
                                                       str(len(body) + 10_000)), half_close=True, wait=2)
    # shorter than sent: the upload ends early (400) and the rest is not a request (400, closed)
    answer = raw_exchange(hostile_pool.endpoint,
                          upload_request(hostile_pool, identifier, body, content_type, str(len(body) - 40)))
    assert_raw_envelope(answer, 400, "InvalidHttpRequest")
    # ambiguous or impossible lengths are refused before any byte of the body is used
    lies = [(str(len(body)), f"Content-Length: {len(body) + 1}\r\n".encode()), ("-1", b""), ("1" * 40, b""),
            ("0x10", b"")]
    if importlib.util.find_spec("httptools"):  # h11 lets Transfer-Encoding win over Content-Length (RFC 9112)
        lies.append((str(len(body)), b"Transfer-Encoding: chunked\r\n"))
    for length, extra in lies:
        answer = raw_exchange(hostile_pool.endpoint,
                              upload_request(hostile_pool, identifier, body, content_type, length, extra))
        assert_raw_envelope(answer, 400, "InvalidHttpRequest")

    deadline = time.monotonic() + 10
    while hidden_files(http, identifier) != []:
        assert time.monotonic() < deadline, hidden_files(http, identifier)
        time.sleep(0.2)
    assert http.get("/files", params=q(identifier)).json()["value"] == []
    honest = http.post("/files", params=q(identifier), files={"file": ("ok.txt", b"fine")})
    assert honest.status_code == 200 and honest.json()["sizeInBytes"] == 4


def test_a_multipart_boundary_too_long_for_the_parser_is_400(http):
    response = http.post("/files", params=q(new_id()), content=b"--x\r\n",
                         headers={"Content-Type": "multipart/form-data; boundary=" + "b" * 100_000})
    assert_envelope(response, 400, "InvalidMultipartBody")


def test_an_upload_of_more_than_100_files_is_400_and_commits_none(http):
    identifier = new_id()
    too_many = [("file", (f"f{i}.txt", b"x")) for i in range(101)]
    assert_envelope(http.post("/files", params=q(identifier), files=too_many), 400, "TooManyFiles")
    assert http.get("/files", params=q(identifier)).json()["value"] == []
    assert hidden_files(http, identifier) == []
    just_enough = http.post("/files", params=q(identifier), files=too_many[:100])
    assert just_enough.status_code == 200
    assert len(http.get("/files", params=q(identifier)).json()["value"]) == 100


def test_a_client_that_closes_mid_json_body_starts_nothing_and_logs_no_traceback(http, hostile_pool):
    identifier = new_id()
    body = json.dumps({"code": "x = 'never ran'", "timeoutInSeconds": 10}).encode()
    head = (f"POST /executions?api-version={V2}&identifier={identifier} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {hostile_pool.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n").encode()
    raw_exchange(hostile_pool.endpoint, head + body, half_close=True, wait=2)  # uvicorn takes it as gone
    assert "Traceback" not in hostile_pool.log()
    answer = http.get("/session", params=q(identifier, "2025-02-02-preview"))
    assert_envelope(answer, 404, "SessionWithIdentifierNotFound")


# slow clients ------------------------------------------------------------------------------------

def start_pool_with(constants: dict[str, float], *extra: str) -> PoolProcess:
    """A pool whose slow-client deadlines are `constants` (module globals of pool/connections.py)."""
    setup = "; ".join(f"c.{name} = {value!r}" for name, value in constants.items())
    code = f"import sys, remote_kernel.pool.connections as c; {setup}; from remote_kernel.cli import main; sys.exit(main())"
    return start_pool(*extra, command=[sys.executable, "-c", code])


HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_WAITING = 64


@pytest.fixture(scope="module")
def paced_pool():
    p = start_pool_with({"HEADER_TIMEOUT": HEADER_TIMEOUT, "BODY_TIMEOUT": BODY_TIMEOUT, "MAX_WAITING": MAX_WAITING},
                        "--ready-sessions", "0", "--max-sessions", "5")
    yield p
    p.stop()


class SlowClient:
    """A raw connection that records what the pool sent before closing it."""

    def __init__(self, pool: PoolProcess) -> None:
        host, port = pool.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setblocking(False)
        self.received = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            pass

    def cut(self) -> bool:
        """Whether the pool has closed the connection (reading what it sent first)."""
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:  # reset
                chunk = b""
            self.received += chunk
            self.closed = not chunk
        return True


@pytest.mark.slow
def test_slow_clients_are_cut_and_the_pool_keeps_answering_others(paced_pool):
    pool = paced_pool
    process = psutil.Process(pool.process.pid)
    identifier = new_id()
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=30) as http:
        assert value_of(http, identifier, "1") == 1  # the session is warm before the fds are counted
    baseline_fds = process.num_fds()

    request = (f"POST /executions?api-version={V2}&identifier={identifier} HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {pool.token}\r\nContent-Type: application/json\r\n"
               "Content-Length: 1000\r\n\r\n").encode()
    silent = [SlowClient(pool) for _ in range(150)]  # connect and say nothing
    trickling = [SlowClient(pool) for _ in range(40)]  # the headers, a byte at a time
    stalled = [SlowClient(pool) for _ in range(20)]  # whole headers, then a body that stops
    for client in stalled:
        client.send(request + b'{"code": "')
    slow = silent + trickling + stalled
    sent = 0
    started = time.monotonic()
    answered_among_slow = 0  # normal rounds answered while slow connections were still open
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=30) as http:
        while not all(c.cut() for c in slow):
            assert time.monotonic() - started < HEADER_TIMEOUT + 60, "slow connections outlived their deadline"
            for client in trickling:
                client.send(request[sent:sent + 1])
            sent = min(sent + 1, len(request) - 1)
            assert http.get("/health").status_code == 200
            answer = http.post("/executions", params=q(identifier), json={"code": "6*7"})
            assert answer.json()["result"]["executionResult"] == 42
            answered_among_slow += not all(c.cut() for c in slow)
            time.sleep(0.2)
    for client in slow:
        client.sock.close()
    assert all(c.closed for c in slow), f"{sum(not c.closed for c in slow)} slow connections still open"
    assert answered_among_slow >= 3, f"{answered_among_slow} normal rounds answered among the slow connections"
    told = [c.received for c in silent + trickling if c.received]
    assert len(told) > 100
    for answer in told:
        assert_raw_envelope(answer, 408, "RequestTimeout")
    deadline = time.monotonic() + 5
    while process.num_fds() > baseline_fds + 2:
        assert time.monotonic() < deadline, f"{process.num_fds()} fds, {baseline_fds} before"
        time.sleep(0.1)
    assert "unexpected error" not in pool.log()


def test_a_connection_idle_between_requests_is_left_to_the_keep_alive_timeout(paced_pool):
    with httpx.Client(base_url=paced_pool.endpoint, headers=paced_pool.headers, timeout=10) as http:
        first = http.get("/health")
        time.sleep(HEADER_TIMEOUT + 1.5)  # idle past the header deadline, well within keep-alive (30 s)
        second = http.get("/health")
        assert first.status_code == second.status_code == 200
        assert first.extensions["network_stream"] is second.extensions["network_stream"]


@pytest.mark.parametrize("implementation", ["h11", "httptools"])
def test_the_deadlines_hold_on_either_http_implementation(implementation, monkeypatch):
    """The guard reads only what uvicorn's two protocols share, so either may serve the pool."""
    import uvicorn

    from remote_kernel.pool import connections

    if implementation == "httptools":
        pytest.importorskip("httptools")
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    deadline_s = 2.0  # both deadlines: 8 × the steady client's 0.25 s pauses, so that a loaded machine keeps it steady
    monkeypatch.setattr(connections, "HEADER_TIMEOUT", deadline_s)
    monkeypatch.setattr(connections, "BODY_TIMEOUT", deadline_s)
    monkeypatch.setattr(connections, "MAX_WAITING", 8)
    bodies: list[int | None] = []

    async def app(scope, receive, send) -> None:  # answers the length of the body, None if the client went
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                bodies.append(None)
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        bodies.append(size)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(str(size)))]})
        await send({"type": "http.response.body", "body": str(size).encode()})

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http=connections.guarded_protocol(base), lifespan="off",
                                           log_level="warning", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    pool = PoolProcess(f"http://127.0.0.1:{port}", "", None, Path("."), Path("."))  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
        silent, trickling, stalled, steady = SlowClient(pool), SlowClient(pool), SlowClient(pool), SlowClient(pool)
        stalled.send(head + b"abc")
        steady.send(head)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2.5 * deadline_s:  # well past both deadlines; the steady body never idles long
            trickling.send(head[sent:sent + 1])
            if sent < 12:
                steady.send(b"x")
            sent += 1
            time.sleep(0.25)
        assert silent.cut() and silent.received.startswith(b"HTTP/1.1 408")
        assert trickling.cut() and trickling.received.startswith(b"HTTP/1.1 408")
        assert stalled.cut() and stalled.received == b""
        deadline = time.monotonic() + 5
        while not steady.received:
            steady.cut()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert steady.received.startswith(b"HTTP/1.1 200") and steady.received.endswith(b"12")
        assert sorted(bodies, key=str) == [12, None]
        crowd = [SlowClient(pool) for _ in range(20)]  # past MAX_WAITING: the longest waiting go at once
        deadline = time.monotonic() + 0.9 * connections.HEADER_TIMEOUT  # cut for their number, not their deadline
        while sum(c.cut() for c in crowd) < 20 - 8:
            assert time.monotonic() < deadline, f"{sum(c.cut() for c in crowd)} of 20 cut before the header deadline"
            time.sleep(0.02)
        for client in crowd + [silent, trickling, stalled, steady]:
            client.sock.close()
        with httpx.Client(base_url=pool.endpoint, timeout=5) as http:
            assert http.post("/x", content=b"hello").text == "5"
        malformed = raw_exchange(pool.endpoint, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello")
        assert_raw_envelope(malformed, 400, "InvalidHttpRequest")
    finally:
        server.should_exit = True
        thread.join(10)


# tokens ------------------------------------------------------------------------------------------

def test_requests_without_or_with_wrong_tokens_are_401_on_every_route(hostile_pool):
    token = hostile_pool.token
    wrong = [None, "", "Bearer", f"Basic {token}", f"Token {token}", f"Bearer {token[:-1]}",
             f"Bearer {token}x", f"Bearer x{token}", f"Bearer {token[::-1]}", f"Bearer {'A' * len(token)}",
             f"Bearer {token.upper() if token.upper() != token else token.lower()}",
             f"Bearer{token}", "Bearer \u00e9\u00e9\u00e9"]
    paths = httpx.get(f"{hostile_pool.endpoint}/openapi.json").json()["paths"]
    # every route the document gives the bearer scheme (the default); /health and /openapi.json are public,
    # the MCP server takes its own key (test_pool_mcp)
    routes = [(method.upper(), path.replace("{name}", "a.txt").replace("{execution_id}", "e1"))
              for path, operations in paths.items() for method, operation in operations.items()
              if "security" not in operation]
    assert len(routes) >= 23 and ("POST", "/execute") in routes and ("GET", "/downloadFile") in routes
    identifier = new_id()
    with httpx.Client(base_url=hostile_pool.endpoint, timeout=30) as http:
        for header in wrong:
            headers = {} if header is None else {"Authorization": header.encode("latin-1")}
            for method, path in routes:
                response = http.request(method, path, params={**q(identifier), "token": token}, headers=headers)
                assert_envelope(response, 401, "Unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"
                assert token not in response.text
        # the scheme is case-insensitive (RFC 7235); the token is not
        assert http.get("/files", params=q(identifier), headers={"Authorization": f"bearer {token}"}).status_code == 200
    with httpx.Client(base_url=hostile_pool.endpoint, timeout=30) as http:
        assert_envelope(http.get("/session", params=q(identifier)), 401, "Unauthorized")


def test_the_token_is_compared_in_constant_time(monkeypatch):
    """The gate compares with hmac.compare_digest, never with ==, whatever the wrong token looks like."""
    import asyncio

    from remote_kernel.pool import gate as pool_app

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(pool_app.hmac, "compare_digest", spy)

    async def inner(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gate = pool_app.Gate(inner, "s3cret-token")

    async def status(authorization: bytes | None) -> int:
        headers = [] if authorization is None else [(b"authorization", authorization)]
        scope = {"type": "http", "path": "/files", "raw_path": b"/files", "headers": headers, "method": "GET",
                 "query_string": b""}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        await gate(scope, receive, send)
        return sent[0]["status"]

    cases = [b"Bearer s3cret-token", b"Bearer s3cret-tokeX", b"Bearer X3cret-token", b"Bearer s3cret", b"Bearer "]
    statuses = [asyncio.run(status(header)) for header in cases]
    assert statuses == [204, 401, 401, 401, 401]
    assert [given for given, _ in compared] == [c.split(b" ", 1)[1] for c in cases]
    assert all(expected == b"s3cret-token" for _, expected in compared)


# identifiers -------------------------------------------------------------------------------------

FORBIDDEN = sorted({chr(c) for c in range(128)} - ALLOWED) + ["é", "ß", "٣", "中", "\u200b", "\ufffd", "😀", "Ａ"]


def test_identifiers_with_every_forbidden_character_are_400(http):
    assert len(FORBIDDEN) > 40  # the control characters, space, backslash, DEL and non-ASCII ones
    for char in FORBIDDEN:
        identifier = f"ab{char}cd"
        for method, path, version in (("POST", "/executions", V2), ("POST", "/code/execute", V1),
                                      ("GET", "/files", V2), ("GET", "/session", V2), ("DELETE", "/session", V2),
                                      ("POST", "/files", V2), ("POST", "/.management/getSession", V2)):
            kwargs = {"json": {"code": "1"}} if path.endswith(("executions", "execute")) else {}
            if path == "/code/execute":
                kwargs = {"json": {"properties": {"code": "1"}}}
            response = http.request(method, path, params=q(identifier, version), **kwargs)
            assert_envelope(response, 400, "InvalidIdentifier")
    for identifier in ("abc", "x" * 129, ""):
        code = "MissingIdentifier" if not identifier else "InvalidIdentifier"
        assert_envelope(http.get("/files", params=q(identifier)), 400, code)
    for identifier in ("abcd", "x" * 128, "a-b_c|d&e^f%g$h#i(j)k{l}m[n];o<p>", "user@example.com", "a/b?c=d:e,f"):
        assert_envelope(http.get("/session", params=q(identifier)), 404, "SessionWithIdentifierNotFound")
