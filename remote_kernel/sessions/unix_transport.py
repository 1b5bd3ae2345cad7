"""A lean HTTP/1.1 transport for a pool on this machine's Unix socket (the kernel's embedded pool).

httpx's default transport (httpcore over anyio) costs about a millisecond of CPU per request,
which on loopback is most of a cell's round trip. This one keeps httpx's client (its API, its
errors, its response objects) and replaces only the connection layer: the HTTP/1.1 framing is
h11's (the parser httpcore itself uses), the socket is read and written with asyncio's own
socket calls, reads take up to READ_SIZE bytes at a time (a loopback download is bound by the
copy, not by 64 KiB reads), and idle connections are kept for the next request.

`request` is the lean path of a request without an upload body: SessionsClient builds the same
header list httpx would (from httpx's own request, once per route) and gets back an `Answer`, which
has the few members of httpx.Response the client reads; httpx's request and response models, its
cookie jar and its auth and redirect flows (~1 ms of CPU per cell on loopback) are skipped. Errors are
httpx's exception classes either way, so the client maps them to the same SessionsErrors.

Only for `http+unix://` endpoints: TLS, proxies and remote pools keep httpx's default transport.
"""
from __future__ import annotations

import asyncio
import select
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

import h11

from remote_kernel.sessions.transport import httpx

READ_SIZE = 1 << 20  # bytes asked of the socket at a time
SMALL_WRITE = 64 << 10  # bytes of a request's pieces joined into one write
KEEPALIVE_EXPIRY = 4.0  # seconds an idle connection is kept (uvicorn drops them after 5 s)
MAX_IDLE = 10  # idle connections kept
MAX_EVENT = 1 << 20  # bytes of a response head h11 accepts


class _Connection:
    """One HTTP/1.1 connection over the socket, and h11's state of it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_EVENT)
        self.idle_since = 0.0

    def reusable(self) -> bool:
        """An idle connection still open, with nothing to read (data or EOF there means the server is done)."""
        if time.monotonic() - self.idle_since > KEEPALIVE_EXPIRY or self.sock.fileno() < 0:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

    def close(self) -> None:
        self.sock.close()


T = TypeVar("T")


async def _within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds` (None: no limit); Python 3.10 has no
    asyncio.timeout, and its asyncio.TimeoutError is not the builtin one (hence `asyncio.TimeoutError`
    in the handlers: the same class from 3.11 on)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


Timeouts = Mapping[str, "float | None"]
"""Seconds per phase, as httpx.Timeout.as_dict() gives them: connect, read, write (None: no limit)."""


def _timeouts(request: httpx.Request) -> Timeouts:
    timeouts: Timeouts = request.extensions.get("timeout") or {}
    return timeouts


class Answer:
    """A response of the lean path: what SessionsClient reads of an httpx.Response, and no more."""

    def __init__(self, status_code: int, headers: httpx.Headers, body: _Body) -> None:
        self.status_code = status_code
        self.headers = headers
        self._body = body

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (the lean path asks for no encoding it would have to undo)."""
        return self._body.__aiter__()

    async def aclose(self) -> None:
        await self._body.aclose()


class UnixSocketTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to the server listening on the Unix socket at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: list[_Connection] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = _timeouts(request)
        connection, event = await self._exchange(
            h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw),
            request.stream, timeouts, request)
        return httpx.Response(event.status_code, headers=event.headers,
                              stream=_Body(self, connection, timeouts, request),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason})

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                      timeouts: Timeouts) -> Answer | httpx.Response:
        """The lean path: send one request whose head is `headers` (as httpx would send it) and whose body is
        `body`; the answer's body is unread. An answer in a Content-Encoding comes back as an httpx.Response,
        which decodes it as usual."""
        connection, event = await self._exchange(h11.Request(method=method, target=target, headers=headers),
                                                 (body,) if body else (), timeouts, None)
        stream = _Body(self, connection, timeouts, None)
        for name, _ in event.headers:
            if name == b"content-encoding":
                return httpx.Response(event.status_code, headers=event.headers, stream=stream,
                                      extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason})
        return Answer(event.status_code, httpx.Headers(list(event.headers)), stream)

    async def _exchange(self, head: h11.Request, body: Any, timeouts: Timeouts,
                        request: httpx.Request | None) -> tuple[_Connection, h11.Response]:
        """Send the request (`body`: an iterable or async iterable of bytes) and read the answer's head."""
        connection = await self._connection(timeouts)
        try:
            await self._send(connection, head, body, timeouts, request)
            event = await self._receive(connection, timeouts, request)
            while isinstance(event, h11.InformationalResponse):
                event = await self._receive(connection, timeouts, request)
            if not isinstance(event, h11.Response):
                raise httpx.RemoteProtocolError(f"the server answered {type(event).__name__}, not a response",
                                                request=request)
        except BaseException:
            connection.close()  # cancelled or broken mid-exchange: its state is unknown
            raise
        return connection, event

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # --- connections ----------------------------------------------------------------------------

    async def _connection(self, timeouts: Timeouts) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await _within(timeouts.get("connect"), asyncio.get_running_loop().sock_connect(sock, self.path))
        except asyncio.TimeoutError:
            sock.close()
            raise httpx.ConnectTimeout(f"no connection to {self.path} in time") from None
        except OSError as exc:
            sock.close()
            raise httpx.ConnectError(f"cannot connect to {self.path}: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _release(self, connection: _Connection) -> None:
        """The exchange ended cleanly: keep the connection for the next request, or close it."""
        if connection.h11.our_state is h11.DONE and connection.h11.their_state is h11.DONE \
                and len(self._idle) < MAX_IDLE:
            connection.h11.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    # --- the exchange ---------------------------------------------------------------------------

    async def _send(self, connection: _Connection, head: h11.Request, body: Any, timeouts: Timeouts,
                    request: httpx.Request | None) -> None:
        state = connection.h11
        pending: list[Any] = [state.send(head)]

        async def add(chunk: bytes) -> None:
            nonlocal pending
            if chunk:  # the body's bytes are passed through, not copied into h11's framing
                pending += state.send_with_data_passthrough(h11.Data(data=chunk)) or []
                if sum(len(piece) for piece in pending) >= SMALL_WRITE:
                    await self._write(connection, pending, timeouts, request)
                    pending = []

        if hasattr(body, "__aiter__"):
            async for chunk in body:
                await add(chunk)
        else:
            for chunk in body:
                await add(chunk)
        pending += state.send_with_data_passthrough(h11.EndOfMessage()) or []
        await self._write(connection, pending, timeouts, request)

    async def _write(self, connection: _Connection, pieces: list[Any], timeouts: Timeouts,
                     request: httpx.Request | None) -> None:
        """Small pieces go in one write (a request is one packet); large ones each as they are (no copy)."""
        if sum(len(piece) for piece in pieces) <= SMALL_WRITE:
            pieces = [b"".join(pieces)]
        loop = asyncio.get_running_loop()

        async def send() -> None:
            for piece in pieces:
                if piece:
                    await loop.sock_sendall(connection.sock, piece)

        try:
            await _within(timeouts.get("write"), send())
        except asyncio.TimeoutError:
            raise httpx.WriteTimeout("the request could not be sent in time", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(f"the connection broke while sending: {exc}", request=request) from exc

    async def _receive(self, connection: _Connection, timeouts: Timeouts, request: httpx.Request | None) -> h11.Event:
        state = connection.h11
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(f"the server's answer is not HTTP/1.1: {exc}", request=request) \
                    from exc
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]  # PAUSED only follows a whole response
            try:
                data = await _within(timeouts.get("read"),
                                     asyncio.get_running_loop().sock_recv(connection.sock, READ_SIZE))
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout("the server did not answer in time", request=request) from None
            except OSError as exc:
                raise httpx.ReadError(f"the connection broke while reading: {exc}", request=request) from exc
            if not data and state.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError("the server closed the connection without an answer",
                                                request=request)
            state.receive_data(data)


class _Body(httpx.AsyncByteStream):
    """A response's body as it arrives; the connection goes back to the transport once it is read whole."""

    def __init__(self, transport: UnixSocketTransport, connection: _Connection, timeouts: Timeouts,
                 request: httpx.Request | None) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection
        self._timeouts = timeouts
        self._request = request
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._done:
            return
        try:
            while True:
                event = await self._transport._receive(connection, self._timeouts, self._request)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError("the connection closed before the answer ended",
                                                    request=self._request)
        except BaseException:
            self._connection = None
            connection.close()
            raise

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._done:
            self._transport._release(connection)
        else:
            connection.close()  # the rest of the answer is not wanted: the connection cannot be reused
