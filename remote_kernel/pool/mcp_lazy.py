"""The MCP server at `/mcp`, loaded on its first request instead of at the pool's start.

The MCP SDK pulls in pydantic models and jsonschema, whose format checkers build an RFC 3987
grammar at import: seconds of start-up that a pool serving only the REST API never needs. This
ASGI app stands at `/mcp` from the start; the first request imports `mcp_server` in a thread (the
event loop keeps answering the REST API meanwhile), starts the SDK's session manager in a task of
its own (its task group must be entered and left by the same task), and every request, that one
included, is then handled by it.
"""
from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from remote_kernel.pool.mcp_server import McpEndpoint
    from remote_kernel.pool.pool import Pool


class LazyMcp:
    """`/mcp`: the MCP endpoint, made on the first request; `aclose()` stops its session manager."""

    def __init__(self, pool: Pool, max_execution_time: float) -> None:
        self.pool = pool
        self.max_execution_time = max_execution_time
        self._endpoint: McpEndpoint | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self._endpoint is not None

    async def endpoint(self) -> McpEndpoint:
        """The MCP endpoint, running (imported and started on the first call)."""
        if self._endpoint is not None:
            return self._endpoint
        async with self._lock:
            if self._endpoint is None:
                module = await asyncio.to_thread(importlib.import_module, "remote_kernel.pool.mcp_server")
                endpoint = module.McpEndpoint(self.pool, self.max_execution_time)
                started = asyncio.get_running_loop().create_future()
                self._runner = asyncio.create_task(self._run(endpoint, started), name="mcp-session-manager")
                await started
                self._endpoint = endpoint
        return self._endpoint

    async def _run(self, endpoint: McpEndpoint, started: asyncio.Future[None]) -> None:
        try:
            async with endpoint.running():
                started.set_result(None)
                await self._stop.wait()
        except BaseException as error:
            if not started.done():
                started.set_exception(error)
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (await self.endpoint())(scope, receive, send)

    async def aclose(self) -> None:
        """Stop the session manager, if a request ever started it."""
        self._stop.set()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
