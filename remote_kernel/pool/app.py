"""The route table: every route of every api-version of the dynamic-sessions contract, in one place.

Only routes live here: what a request carries is checked in checks.py, an execution runs through
runs.py, answers take their shape per api-version in answers.py, the live-output extension is
live.py (mounted), the token and path gate is gate.py (a middleware), and each domain error a route
raises has one handler in errors.py. Each route carries its OpenAPI operation, from which openapi.py
makes /openapi.json. The pool's start and stop are the app's lifespan, given by server.py.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Lifespan

from remote_kernel.contract import EXECUTION_LIMIT
from remote_kernel.pool import files, live
from remote_kernel.pool import openapi as oa
from remote_kernel.pool.answers import (
    EXECUTE_STATUS,
    absolute_url,
    execution_headers,
    file_answers,
    legacy_execution,
    session_view,
    v1_execution,
    v2_entry,
    v2_execution,
    with_next_link,
)
from remote_kernel.pool.checks import (
    existing_session,
    folder_of,
    identifier_of,
    name_parts,
    policy_for,
    pool_of,
    recursive,
    session_of,
    skip_of,
    version_of,
    with_session_routes,
)
from remote_kernel.pool.downloads import FileDownload
from remote_kernel.pool.errors import HANDLERS, ApiError
from remote_kernel.pool.gate import MCP_PATH, Gate, on_unexpected
from remote_kernel.pool.openapi import ApiRoute, Operation, op, openapi_document
from remote_kernel.pool.pool import Pool
from remote_kernel.pool.runs import run_execution
from remote_kernel.pool.session import Session
from remote_kernel.pool.uploads import receive_upload

LIST_PAGE = 300
SKIP_TOKEN = "$skipToken"  # the listing's cursor in a nextLink: the last name of the page before
#: the most entries a recursive listing gives (a session's /mnt/data is the user's own; this bounds one answer)
MAX_RECURSIVE_ENTRIES = 10_000
T = TypeVar("T")


# executions ---------------------------------------------------------------------------------------

async def execute_v1(request: Request) -> Response:
    name, _ = version_of(request, legacy=True)
    identifier_of(request)
    session, outcome, asked = await run_execution(request)
    return JSONResponse(v1_execution(outcome, asked.cap, policy_for(request)), EXECUTE_STATUS["v1"],
                        headers=execution_headers(request, session, outcome, name))


async def execute_legacy(request: Request) -> Response:
    """`python/execute`, the 2024 preview's route (LlamaIndex TS still posts `properties.pythonCode` to it)."""
    name, _ = version_of(request, legacy=True)
    identifier_of(request)
    session, outcome, asked = await run_execution(request)
    return JSONResponse(legacy_execution(outcome, asked.cap, policy_for(request)), 200,
                        headers=execution_headers(request, session, outcome, name))


async def execute_v2(request: Request) -> Response:
    name, _ = version_of(request)
    identifier_of(request)
    session, outcome, asked = await run_execution(request)
    body = v2_execution(session, outcome, asked.cap, "Asynchronous" if asked.asynchronous else "Synchronous",
                        policy_for(request))
    return JSONResponse(body, EXECUTE_STATUS["v2"], headers=execution_headers(request, session, outcome, name))


async def get_execution(request: Request) -> Response:
    name, _ = version_of(request)
    session = existing_session(request)
    outcome = session.executions.get(request.path_params["executionId"])
    if outcome is None:
        raise ApiError(404, "ExecutionNotFound", f"No execution {request.path_params['executionId']!r} "
                                                 "in this session.")
    policy = policy_for(request)
    return JSONResponse(v2_execution(session, outcome, policy.stream_cap, "Asynchronous", policy),
                        headers=execution_headers(request, session, outcome, name))


# files --------------------------------------------------------------------------------------------

async def on_files(session: Session, operation: Callable[[], T]) -> T:
    """Run a blocking file operation for a session (its failures answer by errors.py)."""
    try:
        with session.in_use():  # the session does not expire while the operation runs
            return await asyncio.to_thread(operation)
    finally:
        session.touch()


def upload_route(fixed: str | None) -> Callable[[Request], Awaitable[Response]]:
    async def upload(request: Request) -> Response:
        answers = file_answers(request, fixed)
        session = await session_of(request)
        folder = folder_of(request)
        limit = request.app.state.max_upload
        try:
            with session.in_use():  # the session does not expire while the body arrives
                entries = await receive_upload(request, session.data_dir, folder, limit)
            if not session.alive:  # deleted or stopped meanwhile: the files went with it
                raise files.FilesGone()
        finally:
            session.touch()
        return answers.uploaded(entries)
    return upload


def recursive_listing(root: Path, folder: list[str]) -> list[tuple[str, files.Entry]]:
    """Every entry under `folder`, breadth first, each with its folder relative to `folder` ("" at the top)."""
    found: list[tuple[str, files.Entry]] = []
    pending = [(folder, "")]
    while pending and len(found) < MAX_RECURSIVE_ENTRIES:
        parts, relative = pending.pop(0)
        entries, _ = files.listing(root, parts, limit=MAX_RECURSIVE_ENTRIES - len(found))
        for entry in entries:
            found.append((relative, entry))
            if entry.is_dir:
                pending.append(([*parts, entry.name], f"{relative}/{entry.name}".lstrip("/")))
    return found[:MAX_RECURSIVE_ENTRIES]


async def list_files(request: Request) -> Response:
    answers = file_answers(request)
    session = await session_of(request)
    folder = folder_of(request)
    if recursive(request, version_of(request, legacy=True)[0]):
        tree = await on_files(session, lambda: recursive_listing(session.data_dir, folder))
        return JSONResponse({"value": [{**v2_entry(entry), "directory": where} for where, entry in tree]})
    after = request.query_params.get(SKIP_TOKEN)
    entries, cursor = await on_files(session, lambda: files.listing(session.data_dir, folder, after))
    more = None
    if cursor is not None:  # pages of files.LIST_PAGE entries, as the official spec's PagedSessionResourceFile
        more = f"{request.url.path}?{urlencode({**request.query_params, SKIP_TOKEN: cursor}, quote_via=quote)}"
    return answers.listing(entries, more)


async def file_metadata(request: Request) -> Response:
    answers = file_answers(request)
    session = await session_of(request)
    parts = name_parts(request, request.path_params["name"])
    entry = await on_files(session, lambda: files.info(session.data_dir, parts))
    return answers.metadata(entry)


def download_route(param: str = "name", media: str | None = None) -> Callable[[Request], Awaitable[Response]]:
    """A download route; its bytes are sent as `media`, or as the file's own type when None (the v1 routes)."""
    async def download(request: Request) -> Response:
        version_of(request, legacy=True)
        session = await session_of(request)
        name = request.path_params.get(param) or request.query_params.get(param) or ""
        parts = name_parts(request, name)
        fd, entry = await on_files(session, lambda: files.open_for_reading(session.data_dir, parts))
        headers = {"Content-Length": str(entry.size), "Last-Modified": entry.modified_iso,
                   "Content-Disposition": f"attachment; filename*=UTF-8''{quote(entry.name, safe='')}"}
        return FileDownload(files.read_chunks(fd, entry.size), media_type=media or entry.content_type,
                            headers=headers)
    return download


async def delete_file(request: Request) -> Response:
    answers = file_answers(request)
    session = await session_of(request)
    parts = name_parts(request, request.path_params["name"])
    await on_files(session, lambda: files.delete(session.data_dir, parts))
    return answers.deleted()


# sessions and the pool ----------------------------------------------------------------------------

async def get_session(request: Request) -> Response:
    with_session_routes(request)
    return JSONResponse(session_view(existing_session(request)))


async def delete_session(request: Request) -> Response:
    version_of(request)  # any listed version may delete (langchain uses 2025-10-02 with v1 elsewhere)
    identifier = identifier_of(request)
    if not await pool_of(request).delete(identifier):
        raise ApiError(404, "SessionWithIdentifierNotFound", f"No session has the identifier {identifier!r}.")
    return Response(status_code=204)


def page(request: Request) -> tuple[list[Session], int, str | None]:
    skip = skip_of(request)
    sessions = sorted(pool_of(request).listed(), key=lambda s: s.created_at)
    chunk = sessions[skip:skip + LIST_PAGE]
    more = skip + LIST_PAGE < len(sessions)
    version = quote(request.query_params["api-version"], safe="")
    next_link = absolute_url(request, f"{request.url.path}?api-version={version}&skip={skip + LIST_PAGE}")
    return chunk, len(sessions), next_link if more else None


async def list_sessions(request: Request) -> Response:
    with_session_routes(request)
    chunk, _, next_link = page(request)
    return JSONResponse(with_next_link({"sessions": [session_view(s) for s in chunk]}, next_link))


async def metadata(request: Request) -> Response:
    with_session_routes(request)
    return JSONResponse(await request.app.state.describe())


async def management_get_session(request: Request) -> Response:
    version_of(request)
    return JSONResponse(session_view(existing_session(request), "expiresAt"))


async def management_list_sessions(request: Request) -> Response:
    version_of(request)
    chunk, count, next_link = page(request)
    return JSONResponse(with_next_link({"value": [session_view(s, "expiresAt") for s in chunk], "count": count},
                                       next_link))


async def management_stop_session(request: Request) -> Response:
    version_of(request)
    identifier = identifier_of(request)
    if not await pool_of(request).delete(identifier):
        raise ApiError(404, "SessionWithIdentifierNotFound", f"No session has the identifier {identifier!r}.")
    return PlainTextResponse(f"Session {identifier} in session pool local stopped.")


async def health(request: Request) -> Response:
    pool = pool_of(request)
    return JSONResponse({"status": "ok", "sessions": len(pool.sessions), "sandbox": pool.sandbox.mode,
                         "unenforcedLimits": pool.sandbox.unenforced})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# the table ----------------------------------------------------------------------------------------

EXECUTES = {"executes": True}
ROUTES: list[BaseRoute] = [
    # v1 shape
    ApiRoute("/code/execute", execute_v1, op("Execute code (v1 shape)", oa.LEGACY_EXECUTE_PARAMS,
                                             {"202": oa.V1_EXECUTION_ANSWER, **oa.DUPLICATE}, **EXECUTES)),
    ApiRoute("/execute", execute_v1, op("Execute code (v1 shape; the first preview's name for /code/execute)",
                                        oa.LEGACY_EXECUTE_PARAMS, {"202": oa.V1_EXECUTION_ANSWER, **oa.DUPLICATE},
                                        **EXECUTES)),
    # the 2024 preview's route (LlamaIndex TS)
    ApiRoute("/python/execute", execute_legacy, op("Execute code (the 2024 preview's route: pythonCode, flat answer)",
                                                   oa.LEGACY_EXECUTE_PARAMS,
                                                   {"200": oa.answer("The execution (flat v1 fields)", oa.OBJECT),
                                                    **oa.DUPLICATE}, **EXECUTES)),
    ApiRoute("/files/upload", upload_route("v1"), op("Upload files (v1 shape)", oa.FILE_PARAMS,
                                                     {"200": oa.answer("The files", oa.V1_FILES)}, body=oa.UPLOAD)),
    ApiRoute("/uploadFile", upload_route("v1"), op("Upload files (v1 shape; the first preview's name)",
                                                   oa.FILE_PARAMS, {"200": oa.answer("The files", oa.V1_FILES)},
                                                   body=oa.UPLOAD)),
    ApiRoute("/files/content/{name:anypath}", download_route(), op("Download a file (v1)", (*oa.FILE_PARAMS, oa.NAME),
                                                                   oa.FILE_BYTES)),
    ApiRoute("/downloadFile", download_route("file"), op("Download a file (v1; the first preview's route)",
                                                         (*oa.FILE_PARAMS, oa.FILE), oa.FILE_BYTES)),
    # v2 shape
    ApiRoute("/executions", execute_v2, op("Execute code (v2 shape)", oa.EXECUTE_PARAMS,
                                           {"200": oa.EXECUTION, **oa.DUPLICATE}, **EXECUTES)),
    ApiRoute("/executions/{executionId}", get_execution, op("An execution's state (v2)",
                                                             (*oa.SESSION_PARAMS, oa.EXECUTION_ID),
                                                             {"200": {**oa.EXECUTION, "headers": {}}})),
    ApiRoute("/files/{name:anypath}/content", download_route(media="application/octet-stream"),
             op("Download a file (v2)", (*oa.FILE_PARAMS, oa.NAME), oa.FILE_BYTES)),
    # both shapes: the api-version decides
    ApiRoute("/files", upload_route(None), op("Upload a file", oa.FILE_PARAMS, {"200": oa.either(
        "The file", oa.official("SessionResourceFile"), oa.V1_FILES)}, body=oa.UPLOAD)),
    ApiRoute("/files", list_files, op("List files", (*oa.FILE_PARAMS, oa.RECURSIVE), {"200": oa.either(
        "The files", oa.official("PagedSessionResourceFile"), oa.V1_FILES)})),
    ApiRoute("/files/{name:anypath}", file_metadata, op("A file's metadata", (*oa.FILE_PARAMS, oa.NAME),
                                                        {"200": oa.either("The file", oa.official("SessionResourceFile"),
                                                                          oa.V1_FILES)})),
    ApiRoute("/files/{name:anypath}", delete_file, op("Delete a file", (*oa.FILE_PARAMS, oa.NAME),
                                                      {"200": oa.answer("Deleted (v1)", oa.V1_DELETED),
                                                       "204": oa.answer("Deleted (v2)")}, method="DELETE")),
    # sessions (2025-02-02-preview and later) and the .management dialect
    ApiRoute("/session", get_session, op("A session's details", (oa.SESSION_API_VERSION, oa.IDENTIFIER),
                                         {"200": oa.answer("The session", oa.official("Session"))})),
    ApiRoute("/session", delete_session, op("Delete a session with its processes and files", oa.SESSION_PARAMS,
                                            {"204": oa.answer("Deleted")}, method="DELETE")),
    ApiRoute("/listSessions", list_sessions, op("List sessions", (oa.SESSION_API_VERSION, oa.SKIP),
                                                {"200": oa.answer("A page of sessions",
                                                                  oa.official("SessionsListResponse"))})),
    ApiRoute("/metadata", metadata, op("Runtimes and pre-installed packages", (oa.SESSION_API_VERSION,),
                                       {"200": oa.answer("The pool's metadata",
                                                         oa.official("SessionPoolMetadataResponse"))})),
    Mount("/.management", routes=[
        ApiRoute("/getSession", management_get_session,
                 op("A session's details (management dialect)", oa.SESSION_PARAMS,
                    {"200": oa.answer("The session", oa.OBJECT)}, method="POST")),
        ApiRoute("/listSessions", management_list_sessions,
                 op("List sessions (management dialect)", (oa.API_VERSION, oa.SKIP),
                    {"200": oa.answer("A page of sessions", oa.OBJECT)}, method="POST")),
        ApiRoute("/stopSession", management_stop_session,
                 op("Stop a session (management dialect)", oa.SESSION_PARAMS,
                    {"200": oa.answer("Stopped", {"type": "string"}, "text/plain")}, method="POST")),
    ]),
    # this pool's live-output extension (advertised by live.EXTENSIONS_HEADER; PROTOCOL.md)
    live.ROUTES,
    # the pool itself (no token needed)
    ApiRoute("/health", health, op("Whether the pool is up", (), {"200": oa.answer("Up", oa.OBJECT)},
                                   security=oa.PUBLIC)),
    ApiRoute("/openapi.json", openapi, op("This document", (), {"200": oa.answer("The OpenAPI document", oa.OBJECT)},
                                          security=oa.PUBLIC)),
]
PUBLIC = {path for path, route in oa.flattened(ROUTES)
          if all(o.security == oa.PUBLIC for o in getattr(route, "operations", {}).values())}

#: the hosted pools' MCP server (Streamable HTTP): its answers are JSON-RPC, its key the header x-ms-apikey
MCP_OPERATIONS = {
    "POST": Operation("MCP messages (JSON-RPC; the hosted pools' MCP server)", (),
                      {"200": oa.answer("A JSON-RPC answer, or an event stream of them", oa.OBJECT),
                       "202": oa.answer("Accepted (a notification)"),
                       "401": oa.answer("Missing or wrong x-ms-apikey", oa.ERROR)},
                      body={"application/json": {"schema": oa.OBJECT}}, security=oa.MCP_KEY),
    "GET": Operation("The MCP server's event stream for an initialized MCP session", (),
                     {"200": oa.answer("Server-sent events", {"type": "string"}, "text/event-stream"),
                      "401": oa.answer("Missing or wrong x-ms-apikey", oa.ERROR)}, security=oa.MCP_KEY),
    "DELETE": Operation("End an MCP session", (), {"200": oa.answer("Ended"),
                                                   "401": oa.answer("Missing or wrong x-ms-apikey", oa.ERROR)},
                        security=oa.MCP_KEY),
}



def build_app(pool: Pool, *, token: str | None, max_upload: int,
              describe: Callable[[], Awaitable[dict[str, Any]]] | None, log: Any,
              mcp: ASGIApp | None = None, mcp_key: str | None = None,
              max_execution_time: float = EXECUTION_LIMIT, lifespan: Lifespan[Starlette] | None = None) -> Starlette:
    """The pool's ASGI application: the routes (and the MCP server at /mcp, if given) behind the gate,
    each domain error answered by its handler, the pool started and stopped by `lifespan`."""
    routes = ROUTES + ([ApiRoute(MCP_PATH, mcp, MCP_OPERATIONS)] if mcp is not None else [])
    app = Starlette(routes=routes, middleware=[Middleware(Gate, token=token, mcp_key=mcp_key, public=PUBLIC)],
                    exception_handlers={**HANDLERS, Exception: on_unexpected}, lifespan=lifespan)
    app.router.redirect_slashes = False  # the gate already took trailing slashes off; a mount must not redirect
    app.state.pool = pool
    app.state.max_upload = max_upload
    app.state.max_execution_time = max_execution_time
    app.state.describe = describe
    app.state.log = log
    app.state.openapi = openapi_document(app.routes, pool.sandbox.runtime.name)
    return app
