"""A small loopback HTTP/1.1 server that misbehaves on purpose, for the client's fault tests.

Each request goes to a handler chosen by the test (`FaultServer(handler)` or
`FaultServer.sequence(h1, h2, ..., then=h)`). A handler gets the request head and an
`Exchange`, and answers, stalls, or resets the connection. Handlers for the common faults are
below (`answer`, `json_answer`, `reset_after`, `stall`). Everything runs in the test's own
event loop. `CountingTransport` counts the requests a client sends, at the transport level.
"""
from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str  # percent-decoded
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() when the head arrived
    body: bytes = b""


class Exchange:
    """One request/response on a connection: read the body, answer, or break the connection."""

    def __init__(self, request: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.request = request
        self.reader = reader
        self.writer = writer
        self.body_read = False
        self.closed = False

    async def read_body(self, limit: int | None = None) -> bytes:
        """Read the body (all of it, or its first `limit` bytes) as sent with Content-Length or chunked."""
        headers = self.request.headers
        if "content-length" in headers:
            size = int(headers["content-length"])
            data = await self.reader.readexactly(min(size, limit) if limit is not None else size)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while limit is None or len(data) < limit:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
            data = bytes(data)
        else:
            data = b""
        if limit is None:
            self.body_read = True
            self.request.body = data
        return data

    async def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        if not self.body_read:
            await self.read_body()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        merged = {"Content-Length": str(len(body)), **(headers or {})}
        head += [f"{k}: {v}" for k, v in merged.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()

    def reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0), as a crashed peer would."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.closed = True


Handler = Callable[[Received, Exchange], Awaitable[None]]


class FaultServer:
    """`async with FaultServer(handler) as server:` serves on `server.url` until the block ends."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Received] = []
        self.connections = 0
        self.disconnects = 0  # connections the client closed (or that broke) while a handler waited
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.url = ""

    @classmethod
    def sequence(cls, *handlers: Handler, then: Handler | None = None) -> FaultServer:
        """Answer the n-th request with the n-th handler, and later ones with `then`."""
        queue = list(handlers)
        fallback = then or answer(500, b"the test's script ran out")

        async def route(request: Received, exchange: Exchange) -> None:
            await (queue.pop(0) if queue else fallback)(request, exchange)

        return cls(route)

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        """Wait (polling, with a deadline) until `count` requests have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.requests)} of {count} requests arrived")
            await asyncio.sleep(0.01)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                parts = urlsplit(target)
                request = Received(method, unquote(parts.path), parts.path, dict(parse_qsl(parts.query)),
                                   headers, time.monotonic())
                self.requests.append(request)
                exchange = Exchange(request, reader, writer)
                await self.handler(request, exchange)
                if exchange.closed:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnects += 1
        finally:
            self._tasks.discard(task)
            writer.close()


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: Received, exchange: Exchange) -> None:
        await exchange.respond(status, body, headers)

    return handler


def json_answer(status: int, value: Any, headers: dict[str, str] | None = None) -> Handler:
    return answer(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})


def error_answer(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Handler:
    return json_answer(status, {"error": {"code": code, "message": message}},
                       {"x-ms-error-code": code, **(headers or {})})


def reset_after(nbytes: int) -> Handler:
    """Read the first `nbytes` of the body, then reset the connection."""

    async def handler(request: Received, exchange: Exchange) -> None:
        await exchange.read_body(limit=nbytes)
        exchange.reset()

    return handler


def stall() -> Handler:
    """Read the body and never answer; the client's giving up shows as a disconnect."""

    async def handler(request: Received, exchange: Exchange) -> None:
        await exchange.read_body()
        while await exchange.reader.read(1 << 16):  # returns b"" when the client closes
            pass
        raise ConnectionResetError("the client closed the connection")

    return handler


class CountingTransport(httpx.AsyncBaseTransport):
    """Wraps a real transport and records every request that goes through it."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
