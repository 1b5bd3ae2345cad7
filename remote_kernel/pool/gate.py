"""The gate every request passes before any route: path normalisation and the pool's keys.

A pure ASGI middleware (the app's `middleware=`): it rewrites the path (the Azure-style prefix and
repeated or trailing slashes go; answers that name a URL put the prefix back, answers.PREFIX_KEY),
checks the bearer token (the MCP server's `x-ms-apikey` on its own path) and adds EXTENSIONS_HEADER to
every answer it lets through. Starlette puts its ServerErrorMiddleware outside every user middleware,
so the 500 answer to an unexpected error is made by `on_unexpected` here, which advertises the
extensions itself: every answer but a 401 carries them, as when the gate wrapped the whole app.
"""
from __future__ import annotations

import hmac
import re
from collections.abc import Collection, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from remote_kernel.pool.answers import PREFIX_KEY
from remote_kernel.pool.errors import error_response
from remote_kernel.pool.live import EXTENSIONS_HEADER

AZURE_PREFIX = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/sessionPools/[^/]+(?=/|$)", re.IGNORECASE)
MCP_PATH = "/mcp"


class Gate:
    """Normalises the path (Azure prefix, `//`) and checks the bearer token before any route
    (the MCP server's `x-ms-apikey` instead, on its path); `public` paths need no token."""

    def __init__(self, app: ASGIApp, token: str | None, mcp_key: str | None = None,
                 public: Collection[str] = ()) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.mcp_key = mcp_key.encode() if mcp_key else None
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = re.sub(r"/{2,}", "/", scope["path"])
        prefix = AZURE_PREFIX.match(path)
        path = AZURE_PREFIX.sub("", path) or "/"
        if len(path) > 1:
            path = path.rstrip("/")
        scope = {**scope, "path": path, "raw_path": path.encode("utf-8", "surrogateescape"),
                 PREFIX_KEY: prefix.group(0) if prefix else ""}
        if path == MCP_PATH:
            given = dict(scope["headers"]).get(b"x-ms-apikey", b"")
            if self.mcp_key is not None and not hmac.compare_digest(given.strip(), self.mcp_key):
                response = error_response(401, "Unauthorized",
                                          "The MCP server needs the header 'x-ms-apikey: <key>' with the pool's MCP "
                                          "key (--mcp-key; by default the pool's token).")
                return await response(scope, receive, send)
        elif self.token is not None and path not in self.public:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                response = error_response(401, "Unauthorized",
                                          "A valid bearer token is required: send 'Authorization: Bearer <token>' "
                                          "with the token the pool printed (REMOTE_KERNEL_TOKEN).",
                                          {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)

        async def advertised(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), EXTENSIONS_HEADER]}
            await send(message)

        await self.app(scope, receive, advertised)


async def on_unexpected(request: Request, error: Exception) -> Response:
    """The 500 answer (Starlette's ServerErrorMiddleware, outside the gate: so it advertises the extensions)."""
    request.app.state.log.exception("unexpected error on %s %s", request.method, request.url.path)
    response = error_response(500, "InternalServerError", "The pool failed unexpectedly; its log has the details.")
    response.raw_headers.append(EXTENSIONS_HEADER)
    return response
