"""A hostile pool on loopback for tests that drive a real kernel: `fault_server` in a thread of its own.

A real pool cannot be made to send a gzip bomb, an endless download or garbage helper answers;
this one sends what the test scripts. `HostilePool(routes)` serves until closed; `routes` maps
(method, path) to a handler (see `fault_server`); anything else goes to `fallback`, else gets a 404
in the contract's shape.
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from fault_server import Exchange, FaultServer, Handler, Received, answer, json_answer

GUID = "7f0c1d5e-hostile-pool"


def execution(stdout: str = "", stderr: str = "", result: Any = "", status: str = "Succeeded") -> Handler:
    """An execute answer of 2025-10-02-preview (and the session guid, so the kernel never probes)."""
    body = {"id": "e1", "status": status, "result": {"stdout": stdout, "stderr": stderr, "executionResult": result,
                                                     "executionTimeInMilliseconds": 1}}
    return json_answer(200, body, {"x-ms-session-guid": GUID})


def endless_body(chunk: bytes = b"\0" * (1 << 16)) -> Handler:
    """A 200 answer whose body never ends (chunked), until the client goes away."""
    async def handler(request: Received, exchange: Exchange) -> None:
        await exchange.read_body()
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n")
        while True:
            exchange.writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await exchange.writer.drain()

    return handler


class HostilePool:
    """`with HostilePool({("POST", "/executions"): handler}) as pool:` serves on `pool.url`."""

    def __init__(self, routes: dict[tuple[str, str], Handler], fallback: Handler | None = None) -> None:
        self.routes = routes
        self.fallback = fallback  # answers what `routes` does not name (default: a 404)
        self.server: FaultServer | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _route(self, request: Received, exchange: Exchange) -> None:
        handler = self.routes.get((request.method, request.path)) or self.fallback or answer(
            404, json.dumps({"error": {"code": "NotFound", "message": "not here"}}).encode(),
            {"Content-Type": "application/json"})
        await handler(request, exchange)

    @property
    def requests(self) -> list[Received]:
        return list(self.server.requests) if self.server else []

    def __enter__(self) -> HostilePool:
        self._thread.start()
        self.server = FaultServer(self._route)
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self._loop).result(10)
        self.url = self.server.url
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
