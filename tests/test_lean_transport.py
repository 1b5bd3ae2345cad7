"""The lean path of a client on a Unix socket (SessionsClient._lean_send, UnixSocketTransport.request).

Every request without an upload body skips httpx's client there. Each scenario below runs twice
against the same scripted server: once on the lean path, once through httpx (the path a pool over
TCP takes); the bytes that reach the server, what the call returns and the error it raises must be
the same, and the lean run must not have gone through httpx's client at all.
"""
from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from remote_kernel.sessions import RetryPolicy, SessionsClient, StaticToken
from remote_kernel.sessions.transport import httpx

TOKEN = "s3cret-token-value"
EXECUTION = {"id": "e1", "identifier": "lean", "sessionId": "s1", "status": "Succeeded",
             "result": {"stdout": "hi\n", "stderr": "", "executionResult": 42, "executionResultJupyter": None},
             "error": None}


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def with_length(status: int, body: bytes, **headers: str) -> bytes:
    return head(status, {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}) + body


def chunked(status: int, *pieces: bytes, end: bool = True) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + (b"0\r\n\r\n" if end else b"")
    return head(status, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}) + body


class ScriptedServer:
    """An HTTP/1.1 server on a Unix socket: records each request's raw bytes and writes the next scripted
    answer's bytes, then keeps the connection ("keep"), closes it ("close") or stays silent ("stall")."""

    def __init__(self, path: Path, answers: list[tuple[bytes, str]]) -> None:
        self.path = path
        self.answers = answers
        self.requests: list[bytes] = []
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self.answers:
                try:
                    raw_head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in raw_head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append(raw_head + await reader.readexactly(length))
                answer, then = self.answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if then == "stall":
                    await reader.read()  # until the client closes the connection
                if then != "keep":
                    return
        finally:
            writer.close()


Scenario = Callable[[SessionsClient], Awaitable[Any]]


def run_both(tmp_path: Path, scenario: Scenario, answers: list[tuple[bytes, str]],
             monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[bytes], Any]]:
    """The scenario on the lean path, then through httpx: per run, the requests' bytes and the outcome
    (the value returned, or the error's class and message)."""
    sent_by_httpx: list[Any] = []
    real_send = httpx.AsyncClient.send

    async def counting_send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        sent_by_httpx.append(request)
        return await real_send(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", counting_send)
    runs = []
    path = tmp_path / "pool.sock"  # the same for both runs: error messages name it

    async def go(lean: bool) -> tuple[list[bytes], Any]:
        async with ScriptedServer(path, list(answers)) as server:
            endpoint = "http+unix://" + quote(str(path), safe="")
            async with SessionsClient(endpoint, "lean", auth=StaticToken(TOKEN), api_version="2025-10-02-preview"
                                      ) as client:
                if not lean:
                    client._lean = None
                client.retry = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, total=5.0)
                try:
                    outcome: Any = ("value", await scenario(client))
                except Exception as error:
                    outcome = ("error", type(error).__name__, str(error))
            return server.requests, outcome

    for lean in (True, False):
        sent_by_httpx.clear()
        runs.append(asyncio.run(go(lean)))
        if lean:
            assert sent_by_httpx == [], "the lean run went through httpx's client"
        else:
            assert sent_by_httpx, "the httpx run did not go through httpx's client"
    return runs


def assert_same(runs: list[tuple[list[bytes], Any]]) -> Any:
    (lean_requests, lean_outcome), (httpx_requests, httpx_outcome) = runs
    assert lean_requests == httpx_requests
    assert lean_outcome == httpx_outcome
    assert lean_requests, "no request reached the server"
    return lean_outcome


async def live(client: SessionsClient) -> Any:
    events: list[Any] = []
    execution = await client.execute_live("print('hi')\n6 * 7", events.append, jupyter_repr=True)
    return execution.status.value, execution.result, execution.stdout, events


def test_an_execution_with_a_content_length_answer_sends_and_reads_the_same(tmp_path, monkeypatch):
    answers = [(with_length(200, json.dumps(EXECUTION).encode()), "keep")]

    async def execute(client: SessionsClient) -> Any:
        execution = await client.execute("6 * 7", timeout=30)
        return execution.status.value, execution.result, execution.stdout

    outcome = assert_same(run_both(tmp_path, execute, answers, monkeypatch))
    assert outcome == ("value", ("Succeeded", 42, "hi\n"))


def test_a_live_execution_with_a_chunked_answer_in_torn_pieces_reads_the_same(tmp_path, monkeypatch):
    lines = [{"event": "started", "id": "e1", "grace": 3},
             {"event": "stream", "name": "stdout", "text": "hi\n"},
             {"event": "done", "execution": EXECUTION}]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    answers = [(chunked(200, body[:7], body[7:40], body[40:]), "keep")]
    outcome = assert_same(run_both(tmp_path, live, answers, monkeypatch))
    assert outcome[1][:3] == ("Succeeded", 42, "hi\n")
    assert [e["event"] for e in outcome[1][3]] == ["started", "stream"]


def test_requests_without_a_body_and_a_kept_connection_send_the_same_bytes(tmp_path, monkeypatch):
    info = {"name": "a.txt", "sizeInBytes": 3, "lastModifiedAt": "2025-01-01T00:00:00Z", "type": "File"}
    answers = [(with_length(200, json.dumps(info).encode()), "keep"), (with_length(204, b""), "keep"),
               (with_length(200, json.dumps(EXECUTION).encode()), "keep")]

    async def calls(client: SessionsClient) -> Any:
        meta = await client.file_info("a.txt")
        await client.delete_file("a.txt")
        return meta.name, meta.size, (await client.execute("1")).result

    assert assert_same(run_both(tmp_path, calls, answers, monkeypatch)) == ("value", ("a.txt", 3, 42))


@pytest.mark.parametrize("status, error", [
    (404, {"code": "SessionNotFound", "message": "no session"}),
    (400, {"code": "BadRequest", "message": f"bad token {TOKEN} echoed"}),
    (500, {"code": "InternalError", "message": "broken"}),
])
def test_error_answers_become_the_same_errors_with_the_token_redacted(tmp_path, monkeypatch, status, error):
    body = json.dumps({"error": error}).encode()
    answers = [(with_length(status, body, **{"x-ms-error-code": error["code"]}), "keep")] * 4
    outcome = assert_same(run_both(tmp_path, live, answers, monkeypatch))
    assert outcome[0] == "error"
    assert TOKEN not in outcome[2]


@pytest.mark.parametrize("answer", [
    chunked(200, b'{"event": "started", "id": "e1"}\n', end=False),  # the connection closes mid-answer
    b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"status\":",  # shorter than its length
    b"HTTP/1.1 200 OK\r\nContent-",  # a torn head
    b"",  # closed without an answer
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
])
def test_a_connection_that_breaks_becomes_the_same_error(tmp_path, monkeypatch, answer):
    outcome = assert_same(run_both(tmp_path, live, [(answer, True)], monkeypatch))
    assert outcome[0] == "error"


def test_a_compressed_answer_is_decoded_on_the_lean_path_too(tmp_path, monkeypatch):
    body = gzip.compress(json.dumps(EXECUTION).encode())
    answers = [(with_length(200, body, **{"Content-Encoding": "gzip"}), "keep")]

    async def execute(client: SessionsClient) -> Any:
        return (await client.execute("6 * 7")).result

    assert assert_same(run_both(tmp_path, execute, answers, monkeypatch)) == ("value", 42)


def test_a_read_timeout_on_the_lean_path_is_the_execution_timeout(tmp_path, monkeypatch):
    stalled = head(200, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"})

    async def short(client: SessionsClient) -> Any:
        client.execution_margin = 0.3  # the pool may take 1 s and this margin: then the client gives up
        return await client.execute_live("1", lambda event: None, timeout=1)

    outcome = assert_same(run_both(tmp_path, short, [(stalled, "stall")], monkeypatch))
    assert outcome[:2] == ("error", "ExecutionTimeout")
