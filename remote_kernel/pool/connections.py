"""Deadlines for slow clients: uvicorn has none for a request's headers or for a stalled body.

Without them a client that opens connections and sends nothing, or a header or a body a byte at a
time (slow-loris), holds each connection for ever, until the server's concurrency limit answers
every other client 503. With them:

- a request's headers must be complete within HEADER_TIMEOUT of the connection opening, or of the
  first byte of the request on a kept-alive connection;
- a request body must not stall for BODY_TIMEOUT (unless the pool itself stopped reading it);
- at most MAX_WAITING connections may be waiting for their client (opening, sending slowly, or
  idle between requests); a new one past that closes the one that has waited longest.

A connection cut before its request was read gets a `408` in the error envelope; one cut in the
middle of its body is closed (the route sees the client go and drops the partial upload). A request
uvicorn cannot parse gets its `400` in the envelope too, not uvicorn's plain text.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

HEADER_TIMEOUT = 10.0  # seconds for a request's headers
BODY_TIMEOUT = 30.0  # seconds a request body may go without a byte
MAX_WAITING = 256  # connections waiting for their client
SWEEP_INTERVAL = 0.5  # seconds between checks


def closing_answer(status: str, code: str, message: str) -> bytes:
    """A whole HTTP answer in the contract's error envelope, for a connection about to be closed."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-ms-error-code: {code}\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n{body}").encode()


REQUEST_TIMEOUT = closing_answer("408 Request Timeout", "RequestTimeout",
                                 "The request was not received in time; the connection is closed.")


def guarded_protocol(base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """`base` (default: uvicorn's choice, httptools when installed, else h11) with the deadlines above."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    return type("Guarded" + base.__name__, (ClientDeadlines, base), {"_sweeping": False})


class ClientDeadlines:
    """A mixin for uvicorn's HTTP protocol classes; see the module's docstring.

    It reads only what both of uvicorn's protocols have: `cycle` (the request being served, with
    `more_body` and `response_complete`), `flow.read_paused`, `connections` and `transport`. These
    are private, so pyproject.toml pins uvicorn to the minor versions the slow-client tests passed on.
    """

    _sweeping: bool
    cycle: Any
    flow: Any
    connections: set[Any]
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        now = time.monotonic()
        self._active_at = now  # the last sign of life from the client
        self._owed_since: float | None = now  # since when the client owes us a request's headers
        super().connection_made(transport)  # type: ignore[misc]
        self._evict_longest_waiting()
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_INTERVAL, cls._sweep, self.connections)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._active_at = now
        super().data_received(data)  # type: ignore[misc]
        if self._owed_since is None and self._between_requests():
            self._owed_since = now  # the first bytes of the next request (or of a body nobody reads)

    def send_400_response(self, msg: str) -> None:
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()  # an answer is on its way already: nothing can follow it
            return
        self.transport.write(closing_answer("400 Bad Request", "InvalidHttpRequest",
                                            f"{msg.rstrip('.')}: the request is not valid HTTP/1.1 (its framing, "
                                            "Content-Length or Transfer-Encoding); the connection is closed."))
        self.transport.close()

    def on_response_complete(self) -> None:
        self._active_at = time.monotonic()
        self._owed_since = None  # idle now: uvicorn's keep-alive timeout takes over
        super().on_response_complete()  # type: ignore[misc]

    # ---------------------------------------------------------------------------------------

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _waiting_for_client(self) -> bool:
        if self._between_requests():
            return True
        return self.cycle.more_body and not self.flow.read_paused

    def _overdue(self, now: float) -> str | None:
        """Why this connection should be cut now ("headers", "body"), or None."""
        if self._between_requests():
            if self._owed_since is not None and now - self._owed_since > HEADER_TIMEOUT:
                return "headers"
            return None
        self._owed_since = None  # the headers are in; the request is being served
        if self.cycle.more_body:
            if self.flow.read_paused:
                self._active_at = now  # the pool is not reading: not the client's fault
            elif now - self._active_at > BODY_TIMEOUT:
                return "body"
        return None

    def _cut(self, why: str) -> None:
        if self.transport.is_closing():
            return
        if why == "headers" and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    def _evict_longest_waiting(self) -> None:
        waiting = [c for c in self.connections
                   if isinstance(c, ClientDeadlines) and c is not self and c._waiting_for_client()
                   and not c.transport.is_closing()]
        if len(waiting) >= MAX_WAITING:
            oldest = min(waiting, key=lambda c: c._active_at)
            oldest._cut("headers" if oldest._between_requests() else "body")

    @classmethod
    def _sweep(cls, connections: set[Any]) -> None:
        now = time.monotonic()
        guarded = [c for c in list(connections) if isinstance(c, cls)]
        for connection in guarded:
            why = connection._overdue(now)
            if why:
                connection._cut(why)
        if guarded:
            asyncio.get_running_loop().call_later(SWEEP_INTERVAL, cls._sweep, connections)
        else:
            cls._sweeping = False
