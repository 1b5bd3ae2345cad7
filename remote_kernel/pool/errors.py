"""The contract's error envelope, and one answer per domain error (the app's `exception_handlers`).

A route raises what went wrong, in the words of the layer that found it (`PoolFull`, `files.BadPath`,
`WorkerDied`, ...), or `ApiError` for a request it refuses itself; `HANDLERS` turns each into its
answer, so the same error answers the same way on every route.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from remote_kernel.pool import files
from remote_kernel.pool.hostpaths import scrub
from remote_kernel.pool.pool import PoolFull, SessionStartFailed
from remote_kernel.pool.session import DuplicateExecution, QueueFull, WorkerDied
from remote_kernel.pool.uploads import MultipartError

Handler = Callable[[Request, Exception], Awaitable[Response]]


class ApiError(Exception):
    """An answer in the contract's error envelope."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": scrub(message)}}, status,
                        headers={"x-ms-error-code": code, **(headers or {})})


E = TypeVar("E", bound=Exception)


def handler(kind: type[E], answer: Callable[[E], ApiError]) -> tuple[type[Exception], Handler]:
    """The exception handler of one domain error: its answer, in the contract's envelope."""
    async def handle(request: Request, error: Exception) -> Response:
        assert isinstance(error, kind)
        refused = answer(error)
        return error_response(refused.status, refused.code, refused.message, refused.headers)
    return kind, handle


#: one handler per domain error a route may raise (Starlette picks the most specific by the error's MRO)
DOMAIN_HANDLERS: dict[type[Exception], Handler] = dict([
    handler(ApiError, lambda refused: refused),
    handler(PoolFull, lambda full: ApiError(429, "SessionsCountExceedsLimit", str(full),
                                            {"Retry-After": str(full.retry_after)})),
    handler(SessionStartFailed, lambda failed: ApiError(503, "SessionStartFailed",
                                                        f"A session could not be started: {failed}",
                                                        {"Retry-After": "5"})),
    handler(QueueFull, lambda full: ApiError(429, "TooManyExecutions", str(full), {"Retry-After": "1"})),
    handler(DuplicateExecution, lambda duplicate: ApiError(409, "DuplicateOperationId", str(duplicate))),
    handler(files.BadPath, lambda bad: ApiError(400, "InvalidFileName", str(bad))),
    handler(files.NotFound, lambda missing: ApiError(404, "FileNotFound", str(missing))),
    handler(files.FilesGone, lambda gone: ApiError(404, "SessionWithIdentifierNotFound", str(gone))),
    handler(WorkerDied, lambda died: ApiError(404, "SessionWithIdentifierNotFound", f"The session is gone: {died}")),
    handler(MultipartError, lambda bad: ApiError(bad.status, bad.code, str(bad))),
])


def allowed_methods(routes: list[BaseRoute], path: str) -> set[str]:
    """The methods of every route whose path matches `path` (routes may share a path: GET and POST files),
    looking into mounted route lists."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.path_regex.match(path):
            methods |= set(route.methods or ())
        elif isinstance(route, Mount) and (inside := route.path_regex.match(path)):
            methods |= allowed_methods(route.routes, "/" + inside.group("path"))
    return methods


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "BadRequest")
    message = {404: f"No route {request.method} {request.url.path}; see /openapi.json for the routes.",
               405: f"{request.method} is not allowed on {request.url.path}; see /openapi.json."}
    headers = ({"Allow": ", ".join(sorted(allowed_methods(request.app.routes, request.url.path)))}
               if error.status_code == 405 else None)
    return error_response(error.status_code, code, message.get(error.status_code, str(error.detail)), headers)


HANDLERS: dict[type[Exception], Handler] = {**DOMAIN_HANDLERS, HTTPException: on_http_error}
