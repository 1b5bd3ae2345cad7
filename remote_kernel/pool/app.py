"""The route table: every route of every api-version of the dynamic-sessions contract, in one place.

Shapes: a route that exists in one wire shape only answers in that shape (`code/execute` is v1,
`executions` is v2); a route both shapes share (`files`, `files/{name}`) answers in the shape of
the request's api-version. Version differences are data (VERSIONS, FILE_ANSWERS), not branches in
handlers. Each route carries its OpenAPI operation, from which openapi.py makes /openapi.json.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from remote_kernel.contract import (API_VERSIONS, EXECUTION_LIMIT, IDENTIFIER, IDENTIFIER_RULE, LEGACY_API_VERSION,
                                     SESSION_API_VERSIONS, V1_API_VERSIONS)
from remote_kernel.pool import files
from remote_kernel.pool.downloads import FileDownload
from remote_kernel.pool.hostpaths import scrub
from remote_kernel.pool import openapi as oa
from remote_kernel.pool.openapi import Operation, openapi_document
from remote_kernel.pool.pool import Pool, PoolFull, SessionStartFailed
from remote_kernel.pool.session import (GRACE, MAX_OPERATION_ID, DuplicateExecution, Outcome, QueueFull, Session,
                                        WorkerDied)
from remote_kernel.pool.uploads import MultipartError, receive_upload
from remote_kernel.pool.values import hosted_value


@dataclass(frozen=True)
class Version:
    shape: str  # "v1" or "v2"
    session_routes: bool  # GET/DELETE session, listSessions, metadata


#: the HTTP status of an execute answer, by the route's shape: 202 in the v1 shape (seed 004's samples), 200 in
#: the v2 shape whatever the api-version, as all three official documents say (seed 004 and an older revision
#: of the spec show 202 for 2024-10-02-preview; every client found accepts any 2xx; docs/clients.md)
EXECUTE_STATUS = {"v1": 202, "v2": 200}
VERSIONS = {name: Version("v1" if name in V1_API_VERSIONS else "v2", name in SESSION_API_VERSIONS)
            for name in API_VERSIONS}
#: where the Gate keeps the Azure-style prefix it took off the path (answers that name a URL put it back)
PREFIX_KEY = "remote_kernel.azure_prefix"
AZURE_PREFIX = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/sessionPools/[^/]+(?=/|$)", re.IGNORECASE)
MAX_JSON_BODY = 16 << 20
SHELL_STREAM_LIMIT = 4096  # bytes per stream a Shell answer keeps unless the request names another cap
LIST_PAGE = 300


class ApiError(Exception):
    """An answer in the contract's error envelope."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": scrub(message)}}, status,
                        headers={"x-ms-error-code": code, **(headers or {})})


# what every request carries ---------------------------------------------------------------------

def version_of(request: Request, legacy: bool = False) -> tuple[str, Version]:
    """The request's api-version; on a route the 2024 preview had (`legacy`), none means that preview."""
    name = request.query_params.get("api-version")
    if name is None and legacy:
        name = LEGACY_API_VERSION
    if name is None:
        raise ApiError(400, "MissingApiVersionParameter",
                       f"The api-version query parameter is required; use one of {', '.join(VERSIONS)}.")
    version = VERSIONS.get(name)
    if version is None:
        raise ApiError(400, "UnsupportedApiVersion",
                       f"api-version {name!r} is not supported; use one of {', '.join(VERSIONS)}.")
    return name, version


def identifier_of(request: Request) -> str:
    identifier = request.query_params.get("identifier")
    if not identifier:
        raise ApiError(400, "MissingIdentifier", "The identifier query parameter is required (a uuid4 is best).")
    if not IDENTIFIER.fullmatch(identifier):
        raise ApiError(400, "InvalidIdentifier",
                       f"The identifier must be {IDENTIFIER_RULE}.")
    return identifier


def pool_of(request: Request) -> Pool:
    return request.app.state.pool


async def session_of(request: Request) -> Session:
    """The session the request names, created if new (PoolFull → 429)."""
    identifier = identifier_of(request)
    try:
        return await pool_of(request).get(identifier)
    except PoolFull as full:
        raise ApiError(429, "SessionsCountExceedsLimit", str(full), {"Retry-After": str(full.retry_after)})
    except SessionStartFailed as failed:
        raise ApiError(503, "SessionStartFailed", f"A session could not be started: {failed}",
                       {"Retry-After": "5"})


def existing_session(request: Request) -> Session:
    identifier = identifier_of(request)
    session = pool_of(request).find(identifier)
    if session is None:
        raise ApiError(404, "SessionWithIdentifierNotFound", f"No session has the identifier {identifier!r}.")
    session.touch()
    return session


async def json_body(request: Request) -> dict[str, Any]:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_JSON_BODY:
        raise ApiError(413, "PayloadTooLarge", f"The request body is over {MAX_JSON_BODY >> 20} MiB.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BODY:
                raise ApiError(413, "PayloadTooLarge", f"The request body is over {MAX_JSON_BODY >> 20} MiB.")
    except ClientDisconnect:  # nobody is left to answer; not a failure of the pool
        raise ApiError(400, "RequestIncomplete", "The client closed the connection before the body ended.") from None
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "InvalidRequestBody", "The request body is not valid UTF-8.") from None
    except (ValueError, RecursionError):
        raise ApiError(400, "InvalidRequestBody", "The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidRequestBody", "The request body must be a JSON object.")
    if isinstance(value.get("properties"), dict):
        value = {**value, **value["properties"]}  # v1 wraps the request; some v2 clients do too
    return value


# executions ---------------------------------------------------------------------------------------

def choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], code: str) -> str:
    """An enum field, case-insensitive; absent or null is the first allowed value."""
    value = body.get(name)
    if value is None:
        return allowed[0]
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ApiError(400, code, f"{name} must be one of {', '.join(allowed)} (any case).")
    return value.lower()


def flag(body: dict[str, Any], *names: str) -> bool:
    """A boolean field (the first of `names` present; each one given must be a boolean); absent or null
    is False."""
    given = [(name, body[name]) for name in names if body.get(name) is not None]
    for name, value in given:
        if not isinstance(value, bool):
            raise ApiError(400, "InvalidRequestBody", f"{name} must be true or false.")
    return given[0][1] if given else False


@dataclass(frozen=True)
class ExecutionRequest:
    """An execute body, checked: what to run and how to answer."""

    code: str  # source text; for a Shell session, the JSON command the Shell worker reads
    asynchronous: bool
    timeout: float
    jupyter: bool  # returnJupyterFormatExecutionResult
    cap: int | None  # outputStreamsMaxLength
    empty_kernel: bool = False  # useEmptyKernel: run in a fresh interpreter, not the session's


def source_code(body: dict[str, Any]) -> str:
    """The code of a Python/Node.js body: `code`, or `pythonCode` (the 2024 preview's name), decoded."""
    code, older = body.get("code"), body.get("pythonCode")
    if older is not None and not isinstance(older, str):
        raise ApiError(400, "InvalidCode", "pythonCode must be a string.")
    if code is None:
        code = older
    if not isinstance(code, str):
        raise ApiError(400, "InvalidCode", "The body needs a 'code' string.")
    kind = choice(body, "codeInputType", ("inline", "inlinetext", "inlinebase64"), "InvalidCodeInputType")
    if kind == "inlinebase64":
        try:
            code = base64.b64decode(code, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text given to b64decode
            raise ApiError(400, "InvalidCode", "codeInputType InlineBase64 needs base64 of UTF-8 source.") from None
    return code


def shell_command(body: dict[str, Any]) -> str:
    """A Shell body (`shellCommand` or `execCommandAndArgs`, optional `stdin`) as the Shell worker's JSON."""
    command, argv, stdin = body.get("shellCommand"), body.get("execCommandAndArgs"), body.get("stdin")
    if command is None and argv is None and isinstance(body.get("code"), str):
        command = source_code(body)  # a code-interpreter style body sent to a Shell pool
    if (command is None) == (argv is None):
        raise ApiError(400, "InvalidShellCommand",
                       "A Shell execution needs exactly one of shellCommand (a string) or execCommandAndArgs "
                       "(a list of strings).")
    if command is not None and not isinstance(command, str):
        raise ApiError(400, "InvalidShellCommand", "shellCommand must be a string.")
    if command is not None and body.get("shellCommand") is not None:
        command = source_code({**body, "code": command, "pythonCode": None})  # codeInputType InlineBase64 applies
    if argv is not None and (not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)):
        raise ApiError(400, "InvalidShellCommand", "execCommandAndArgs must be a non-empty list of strings.")
    if stdin is not None and not isinstance(stdin, str):
        raise ApiError(400, "InvalidShellCommand", "stdin must be a string.")
    request: dict[str, Any] = {"shellCommand": command} if command is not None else {"execCommandAndArgs": argv}
    if stdin is not None:
        request["stdin"] = stdin
    return json.dumps(request)


def execution_request(body: dict[str, Any], runtime: str, max_timeout: float) -> ExecutionRequest:
    """Check an execute body for a pool whose sessions run `runtime` ("python", "node" or "shell")."""
    code = shell_command(body) if runtime == "shell" else source_code(body)
    try:
        code.encode("utf-8")  # a lone surrogate ("\ud800" in the JSON) would kill the session's worker
    except UnicodeEncodeError:
        raise ApiError(400, "InvalidCode", "The code is not valid Unicode (it has a lone surrogate).") from None
    mode = choice(body, "executionType", ("synchronous", "asynchronous"), "InvalidExecutionType")
    timeout = body.get("timeoutInSeconds")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, type(None))) or timeout != timeout:  # NaN
        raise ApiError(400, "InvalidTimeout", f"timeoutInSeconds must be a number (at most {max_timeout:g}; "
                                              "0 or less means the default).")
    if timeout is None or timeout <= 0:  # an int32 without a minimum in the official documents: 0 and -1 are valid
        timeout = min(EXECUTION_LIMIT, max_timeout)
    cap = body.get("outputStreamsMaxLength")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ApiError(400, "InvalidOutputStreamsMaxLength", "outputStreamsMaxLength must be a whole number ≥ 0.")
    if cap is None and runtime == "shell":
        cap = SHELL_STREAM_LIMIT
    jupyter = flag(body, "returnJupyterFormatExecutionResult", "returnJupyterFormat")
    empty = flag(body, "useEmptyKernel") and runtime != "shell"  # a Shell command is a new process anyway
    return ExecutionRequest(code, mode == "asynchronous", float(min(timeout, max_timeout)), jupyter, cap, empty)


def runtime_of(request: Request) -> str:
    return pool_of(request).sandbox.runtime.name


async def run_execution(request: Request) -> tuple[Session, Outcome, ExecutionRequest]:
    """Check the request, then run it in its session (a malformed request never starts a session)."""
    runtime = runtime_of(request)
    asked = execution_request(await json_body(request), runtime, request.app.state.max_execution_time)
    session = await session_of(request)
    operation_id = request.headers.get("operation-id")
    runner = await empty_kernel(request, session, operation_id) if asked.empty_kernel else session
    try:
        outcome = submit(runner, asked, operation_id)
    except ApiError:
        if runner is not session:
            pool_of(request).close_scratch_after(runner, finished())
        raise
    if runner is not session:  # closed once its one execution is over; polled through the session it was sent to
        pool_of(request).close_scratch_after(runner, outcome.done)
        session.executions[outcome.id] = outcome
    if not asked.asynchronous:
        await until_done_or_disconnected(request, runner, outcome)
    return session, outcome, asked


def finished() -> asyncio.Event:
    """An event already set: a scratch session whose execution never started is closed at once."""
    event = asyncio.Event()
    event.set()
    return event


async def empty_kernel(request: Request, session: Session, operation_id: str | None) -> Session:
    """`useEmptyKernel`: a fresh session of its own for one execution (no variables, imports or files of the
    session it was sent to)."""
    if operation_id is not None and operation_id in session.executions:
        raise ApiError(409, "DuplicateOperationId", f"This session already has an execution {operation_id!r}.")
    try:
        return await pool_of(request).scratch()
    except PoolFull as full:
        raise ApiError(429, "SessionsCountExceedsLimit", str(full), {"Retry-After": str(full.retry_after)})
    except SessionStartFailed as failed:
        raise ApiError(503, "SessionStartFailed", f"An empty kernel could not be started: {failed}",
                       {"Retry-After": "5"})


def submit(session: Session, asked: ExecutionRequest, operation_id: str | None, *, live: bool = False) -> Outcome:
    """Queue an execution (400 for a bad operation-id, 409 for a reused one, 429 past the session's queue).

    A Python worker is always asked for the display text of the value, which the answer turns into
    the hosted default rendering unless the request asked for that text."""
    if operation_id is not None and not 0 < len(operation_id) <= MAX_OPERATION_ID:
        raise ApiError(400, "InvalidOperationId", f"operation-id must be 1 to {MAX_OPERATION_ID} characters.")
    display_text = asked.jupyter or session.sandbox.runtime.name == "python"
    try:
        outcome = session.submit(asked.code, asked.timeout, display_text, operation_id, live=live)
    except QueueFull as full:
        raise ApiError(429, "TooManyExecutions", str(full), {"Retry-After": "1"}) from None
    except DuplicateExecution as duplicate:
        raise ApiError(409, "DuplicateOperationId", str(duplicate)) from None
    outcome.jupyter = asked.jupyter
    return outcome


def result_value(outcome: Outcome, runtime: str) -> Any:
    """The execution's value as the request asked for it (pool/values.py has the evidence)."""
    if runtime != "python" or outcome.jupyter:
        return outcome.result
    return hosted_value(outcome.result)


async def until_done_or_disconnected(request: Request, session: Session, outcome: Outcome) -> None:
    """Wait for the outcome; a client that goes away interrupts (or cancels) its execution."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    done = asyncio.ensure_future(outcome.done.wait())
    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        done.cancel()
    if not outcome.done.is_set():
        session.cancel(outcome)


def trimmed(text: str, cap: int | None) -> str:
    return text if cap is None or len(text) <= cap else text[:cap]


def trimmed_bytes(text: str, cap: int | None) -> str:
    """Shell streams are cut at `cap` bytes of UTF-8, silently, as hosted Shell pools do."""
    if cap is None:
        return text
    data = text.encode("utf-8", "replace")
    return text if len(data) <= cap else data[:cap].decode("utf-8", "ignore")


def absolute_url(request: Request, path: str) -> str:
    """`path` (with its query) as an absolute URL of this pool, under the Azure-style prefix the request had."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get(PREFIX_KEY, '')}{path}"


def execution_headers(request: Request, session: Session, outcome: Outcome, version_name: str) -> dict[str, str]:
    identifier = quote(session.identifier or "", safe="")
    location = f"/executions/{quote(outcome.id, safe='')}?api-version={version_name}&identifier={identifier}"
    return {"operation-id": outcome.id,
            "Operation-Location": absolute_url(request, location),  # a uri in the official documents
            "x-ms-session-guid": session.guid,
            "x-ms-execution-request-time": f"{outcome.ms or 0:.3f}",
            "x-ms-container-execution-duration": str(int(outcome.ms or 0))}


def is_image(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "image"


#: the one field of a v1 answer that carries an image, per container type: Python clients read
#: `result` (langchain, llama-index, SK, AutoGen), the NodeLTS tutorial reads `executionResult`
V1_IMAGE_FIELD = {"python": "result", "node": "executionResult"}


def v1_execution(outcome: Outcome, cap: int | None, runtime: str) -> dict[str, Any]:
    status = {"Succeeded": "Success", "Failed": "Failure"}.get(outcome.status, outcome.status)
    value = result_value(outcome, runtime)
    properties: dict[str, Any] = {
        "$id": "2", "status": status, "stdout": trimmed(outcome.stdout, cap), "stderr": trimmed(outcome.stderr, cap),
        "result": value, "executionResult": value, "executionTimeInMilliseconds": int(outcome.ms or 0)}
    if is_image(value):  # never the same PNG twice in one answer
        del properties[{"result": "executionResult", "executionResult": "result"}[V1_IMAGE_FIELD.get(runtime, "result")]]
    return {"$id": "1", "properties": properties}


def raw_result(session: Session, outcome: Outcome) -> dict[str, Any]:
    """Seed 004's `rawResult`, as its polled example shows it: diagnostics and the error, with the
    streams and the value left empty (they are in `result`; an answer never carries them twice)."""
    failed = outcome.error_code is not None
    return {"hresult": 1 if failed else 0, "result": "" if outcome.done.is_set() else None,
            "error_name": outcome.error_code or "", "error_message": outcome.error_message or "",
            "error_stack_trace": "", "stdout": "", "stderr": "",
            "diagnosticInfo": {"executionRequestTimeInMilliSeconds": int(outcome.ms or 0),
                               "executionProcessResponseTimeInMilliSeconds": 0,
                               "executionDuration": int(outcome.ms or 0), "identifier": session.identifier or ""},
            "operationId": outcome.id}


def v2_execution(session: Session, outcome: Outcome, cap: int | None, mode: str, runtime: str) -> dict[str, Any]:
    shell = runtime == "shell"
    body: dict[str, Any] = {"id": outcome.id, "identifier": session.identifier, "sessionId": session.identifier,
                            "executionType": mode, "status": outcome.status}
    if outcome.done.is_set():  # a running execution has no result (seed 004's asynchronous answer)
        trim = trimmed_bytes if shell else trimmed
        body["result"] = {"stdout": trim(outcome.stdout, cap), "stderr": trim(outcome.stderr, cap),
                          "executionResult": result_value(outcome, runtime),
                          "executionTimeInMilliseconds": int(outcome.ms) if outcome.ms is not None else None}
        if shell:  # a Shell answer's status is the exit code, a string (spec examples; langchain's SessionsBashTool)
            del body["result"]["executionResult"]
            if outcome.error_code is None and isinstance(outcome.result, int):
                body["status"] = str(outcome.result)
    if outcome.error_code:  # an ErrorResponse, as the official documents give it
        body["error"] = {"error": {"code": outcome.error_code, "message": outcome.error_message or ""}}
    body["rawResult"] = raw_result(session, outcome)
    return body


async def execute_v1(request: Request) -> Response:
    name, _ = version_of(request, legacy=True)
    identifier_of(request)
    session, outcome, asked = await run_execution(request)
    return JSONResponse(v1_execution(outcome, asked.cap, runtime_of(request)), EXECUTE_STATUS["v1"],
                        headers=execution_headers(request, session, outcome, name))


async def execute_legacy(request: Request) -> Response:
    """`python/execute`, the 2024 preview's route (LlamaIndex TS still posts `properties.pythonCode` to it):
    the answer has `status`, `stdout`, `stderr` and `result` at the top level."""
    name, _ = version_of(request, legacy=True)
    identifier_of(request)
    session, outcome, asked = await run_execution(request)
    properties = v1_execution(outcome, asked.cap, runtime_of(request))["properties"]
    properties.pop("$id")
    properties.pop("executionResult", None)
    if outcome.error_code:
        properties["error"] = {"code": outcome.error_code, "message": outcome.error_message or ""}
    return JSONResponse(properties, 200, headers=execution_headers(request, session, outcome, name))


async def execute_v2(request: Request) -> Response:
    name, _ = version_of(request)
    identifier_of(request)
    session, outcome, asked = await run_execution(request)
    body = v2_execution(session, outcome, asked.cap, "Asynchronous" if asked.asynchronous else "Synchronous",
                        runtime_of(request))
    return JSONResponse(body, EXECUTE_STATUS["v2"], headers=execution_headers(request, session, outcome, name))


async def get_execution(request: Request) -> Response:
    name, _ = version_of(request)
    session = existing_session(request)
    outcome = session.executions.get(request.path_params["executionId"])
    if outcome is None:
        raise ApiError(404, "ExecutionNotFound", f"No execution {request.path_params['executionId']!r} "
                                                 "in this session.")
    cap = SHELL_STREAM_LIMIT if runtime_of(request) == "shell" else None
    return JSONResponse(v2_execution(session, outcome, cap, "Asynchronous", runtime_of(request)),
                        headers=execution_headers(request, session, outcome, name))


# the live-output extension (this pool's own; PROTOCOL.md) ----------------------------------------

EXTENSIONS_HEADER = (b"x-remote-kernel-extensions", b"live-execute")  # on every answer: how clients detect it
LIVE_EXECUTE = "/.remote-kernel/live-execute"
LIVE_INTERRUPT = "/.remote-kernel/live-interrupt"
LIVE_FIRST = 0.05  # seconds the `started` line waits to share its write with the first event or the end


def ndjson(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False).encode("utf-8", "replace") + b"\n"


async def live_execute(request: Request) -> Response:
    """An execution whose output events stream as NDJSON while it runs, ending with its v2 answer.

    Lines: `{"event": "started", "id", "grace"}`, then `{"event": "stream", "name", "text"}` as the
    worker sends them, then `{"event": "done", "execution": <the v2 execution body>}`. The time limit
    is the request's `timeoutInSeconds`, not capped by --max-execution-time (which caps the contract's
    routes, as the hosted service's 220 s does). Closing the stream interrupts the code.
    """
    name, _ = version_of(request)
    identifier_of(request)
    # the kernel's own route: its client's time limit holds (a kernel that starts its pool sets it there)
    asked = execution_request(await json_body(request), runtime_of(request), float("inf"))
    session = await session_of(request)
    outcome = submit(session, asked, request.headers.get("operation-id"), live=True)
    headers = execution_headers(request, session, outcome, name)
    headers = {k: v for k, v in headers.items() if not k.startswith("x-ms-execution") and not k.startswith("x-ms-container")}
    # what is ready goes in one write: `started` waits up to LIVE_FIRST for the first event or the end, so that
    # it need not travel alone; a cell that ended by then is answered whole, with a length (one write of the head
    # and body, where a stream costs the client a wake-up for its head, its chunk and its end)
    pending = [ndjson({"event": "started", "id": outcome.id, "grace": GRACE})]
    try:
        await asyncio.wait_for(outcome.arrived.wait(), LIVE_FIRST)
    except asyncio.TimeoutError:
        pass
    except BaseException:
        if not outcome.done.is_set():
            session.cancel(outcome)
        raise
    if outcome.done.is_set():
        while outcome.events:
            stream_name, text = outcome.events.popleft()
            pending.append(ndjson({"event": "stream", "name": stream_name, "text": text}))
        answer = v2_execution(session, outcome, None, "Synchronous", runtime_of(request))
        pending.append(ndjson({"event": "done", "execution": answer}))
        return Response(b"".join(pending), media_type="application/x-ndjson", headers=headers)

    async def events() -> Any:
        nonlocal pending
        try:
            while True:
                outcome.arrived.clear()
                while outcome.events:
                    stream_name, text = outcome.events.popleft()
                    pending.append(ndjson({"event": "stream", "name": stream_name, "text": text}))
                if outcome.done.is_set():
                    answer = v2_execution(session, outcome, None, "Synchronous", runtime_of(request))
                    pending.append(ndjson({"event": "done", "execution": answer}))
                    yield b"".join(pending)
                    return
                if pending:
                    yield b"".join(pending)
                    pending = []
                await outcome.arrived.wait()
        finally:
            if not outcome.done.is_set():
                session.cancel(outcome)  # the client went away: interrupt, as a synchronous execute does

    return StreamingResponse(events(), media_type="application/x-ndjson", headers=headers)


async def live_interrupt(request: Request) -> Response:
    """Interrupt a running execution of the session; past the grace its session is killed."""
    version_of(request)
    session = existing_session(request)
    outcome = session.executions.get(request.query_params.get("execution", ""))
    if outcome is None:
        raise ApiError(404, "ExecutionNotFound", "No such execution in this session.")
    grace = session.interrupt_execution(outcome)
    return JSONResponse({"status": outcome.status, "grace": grace})


# files --------------------------------------------------------------------------------------------

def name_parts(request: Request, name: str) -> list[str]:
    try:
        return files.parts_of(request.query_params.get("path")) + files.parts_of(name, allow_root=False)
    except files.BadPath as bad:
        raise ApiError(400, "InvalidFileName", str(bad)) from None


def v1_entry(entry: files.Entry, n: int = 2) -> dict[str, Any]:
    return {"$id": str(n), "properties": {"$id": str(n + 1), "filename": entry.name, "size": entry.size,
                                          "lastModifiedTime": entry.modified_iso}}


def v2_entry(entry: files.Entry) -> dict[str, Any]:
    return {"name": entry.name, "type": "Directory" if entry.is_dir else "File", "sizeInBytes": entry.size,
            "lastModifiedAt": entry.modified_iso, "contentType": entry.content_type}


def v1_listing(entries: list[files.Entry]) -> dict[str, Any]:
    return {"$id": "1", "value": [v1_entry(e, 2 + 2 * i) for i, e in enumerate(entries)]}


def paged(next_link: str | None) -> dict[str, str]:
    return {"nextLink": next_link} if next_link else {}


SKIP_TOKEN = "$skipToken"  # the listing's cursor in a nextLink: the last name of the page before


@dataclass(frozen=True)
class FileAnswers:
    """How one wire shape answers the file routes."""

    uploaded: Callable[[list[files.Entry]], Response]
    listing: Callable[[list[files.Entry], str | None], Response]  # the entries, the next page's link
    metadata: Callable[[files.Entry], Response]
    deleted: Callable[[], Response]


FILE_ANSWERS = {
    "v1": FileAnswers(uploaded=lambda entries: JSONResponse(v1_listing(entries)),
                      listing=lambda entries, more: JSONResponse({**v1_listing(entries), **paged(more)}),
                      metadata=lambda entry: JSONResponse({"value": [v1_entry(entry)]}),
                      deleted=lambda: JSONResponse({"message": "file deleted successfully"})),
    "v2": FileAnswers(uploaded=lambda entries: JSONResponse(v2_entry(entries[0])),
                      listing=lambda entries, more: JSONResponse({"value": [v2_entry(e) for e in entries],
                                                                  **paged(more)}),
                      metadata=lambda entry: JSONResponse(v2_entry(entry)),
                      deleted=lambda: Response(status_code=204)),
}


def file_answers(request: Request, fixed: str | None = None) -> FileAnswers:
    """The answers of the wire shape to answer in: the route's own, else the api-version's (checked
    either way). Every file route existed in the 2024 preview, so no api-version means that one."""
    version = version_of(request, legacy=True)[1]
    return FILE_ANSWERS[fixed or version.shape]


async def on_files(session: Session, operation: Callable[[], Any]) -> Any:
    """Run a blocking file operation for a session, mapping failures to the contract's answers."""
    try:
        with session.in_use():  # the session does not expire while the operation runs
            return await asyncio.to_thread(operation)
    except files.FilesGone as gone:
        raise ApiError(404, "SessionWithIdentifierNotFound", str(gone)) from None
    except files.NotFound as missing:
        raise ApiError(404, "FileNotFound", str(missing)) from None
    except files.BadPath as bad:
        raise ApiError(400, "InvalidFileName", str(bad)) from None
    except WorkerDied as died:
        raise ApiError(404, "SessionWithIdentifierNotFound", f"The session is gone: {died}") from None
    finally:
        session.touch()


def upload_route(fixed: str | None) -> Callable[[Request], Awaitable[Response]]:
    async def upload(request: Request) -> Response:
        answers = file_answers(request, fixed)
        session = await session_of(request)
        try:
            folder = files.parts_of(request.query_params.get("path"))
        except files.BadPath as bad:
            raise ApiError(400, "InvalidFileName", str(bad)) from None
        limit = request.app.state.max_upload
        try:
            with session.in_use():  # the session does not expire while the body arrives
                entries = await receive_upload(request, session.data_dir, folder, limit)
            if not session.alive:  # deleted or stopped meanwhile: the files went with it
                raise files.FilesGone()
        except MultipartError as bad:
            raise ApiError(bad.status, bad.code, str(bad)) from None
        except files.BadPath as bad:
            raise ApiError(400, "InvalidFileName", str(bad)) from None
        except files.FilesGone as gone:
            raise ApiError(404, "SessionWithIdentifierNotFound", str(gone)) from None
        except WorkerDied as died:
            raise ApiError(404, "SessionWithIdentifierNotFound", f"The session is gone: {died}") from None
        finally:
            session.touch()
        return answers.uploaded(entries)
    return upload


#: the most entries a recursive listing gives (a session's /mnt/data is the user's own; this bounds one answer)
MAX_RECURSIVE_ENTRIES = 10_000


def recursive_listing(root: Any, folder: list[str]) -> list[tuple[str, files.Entry]]:
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


def recursive(request: Request, version_name: str) -> bool:
    """Whether a listing asks for the whole tree (`recursive`, 2025-10-02-preview on)."""
    text = request.query_params.get("recursive")
    if text is None:
        return False
    if text.lower() not in ("true", "false"):
        raise ApiError(400, "InvalidRecursive", "recursive must be true or false.")
    return text.lower() == "true" and version_name >= "2025-10-02-preview"


async def list_files(request: Request) -> Response:
    answers = file_answers(request)
    session = await session_of(request)
    try:
        folder = files.parts_of(request.query_params.get("path"))
    except files.BadPath as bad:
        raise ApiError(400, "InvalidFileName", str(bad)) from None
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

def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")


def session_view(session: Session, expires_field: str = "expireAt") -> dict[str, Any]:
    return {"identifier": session.identifier, "createdAt": iso(session.created_at),
            "lastAccessedAt": iso(session.last_accessed_at), expires_field: iso(session.expires_at),
            "etag": session.guid}


def with_session_routes(request: Request) -> None:
    name, version = version_of(request)
    if not version.session_routes:
        raise ApiError(400, "UnsupportedApiVersion",
                       f"This route needs api-version 2025-02-02-preview or later, not {name}.")


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
    text = request.query_params.get("skip", "0")
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 12):
        raise ApiError(400, "InvalidSkip", "skip must be a whole number.")
    skip = max(0, int(text))  # an int32 without a minimum in the official documents: less than 0 is 0
    sessions = sorted(pool_of(request).listed(), key=lambda s: s.created_at)
    chunk = sessions[skip:skip + LIST_PAGE]
    more = skip + LIST_PAGE < len(sessions)
    version = quote(request.query_params["api-version"], safe="")
    next_link = absolute_url(request, f"{request.url.path}?api-version={version}&skip={skip + LIST_PAGE}")
    return chunk, len(sessions), next_link if more else None


def with_next_link(body: dict[str, Any], next_link: str | None) -> dict[str, Any]:
    """The page, with `nextLink` only when there is a next page (a string in the official documents, never null)."""
    return {**body, "nextLink": next_link} if next_link else body


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


class ApiRoute(Route):
    """A route with its OpenAPI operation per method beside it (`openapi.py` makes the document from them)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], operations: dict[str, Operation]) -> None:
        super().__init__(path, endpoint, methods=list(operations))
        self.operations = operations


def op(summary: str, params: tuple[dict, ...], answers: dict[str, dict], **more: Any) -> dict[str, Operation]:
    """The route's one method: POST if it takes a body, else GET (DELETE routes say so with `method`)."""
    method = more.pop("method", "POST" if more.get("body") or more.get("executes") else "GET")
    return {method: Operation(summary, params, answers, **more)}


EXECUTES = {"executes": True}
ROUTES = [
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
    ApiRoute("/.management/getSession", management_get_session,
             op("A session's details (management dialect)", oa.SESSION_PARAMS,
                {"200": oa.answer("The session", oa.OBJECT)}, method="POST")),
    ApiRoute("/.management/listSessions", management_list_sessions,
             op("List sessions (management dialect)", (oa.API_VERSION, oa.SKIP),
                {"200": oa.answer("A page of sessions", oa.OBJECT)}, method="POST")),
    ApiRoute("/.management/stopSession", management_stop_session,
             op("Stop a session (management dialect)", oa.SESSION_PARAMS,
                {"200": oa.answer("Stopped", {"type": "string"}, "text/plain")}, method="POST")),
    # this pool's live-output extension (advertised by EXTENSIONS_HEADER; PROTOCOL.md)
    ApiRoute(LIVE_EXECUTE, live_execute, op(
        "Execute code, its output streamed as it is written (this pool's extension)", oa.EXECUTE_PARAMS,
        {"200": oa.answer("NDJSON lines: started, stream…, done with the v2 execution",
                          {"type": "string"}, "application/x-ndjson"), **oa.DUPLICATE}, **EXECUTES)),
    ApiRoute(LIVE_INTERRUPT, live_interrupt, op(
        "Interrupt a running execution; past the grace its session is killed (this pool's extension)",
        (*oa.SESSION_PARAMS, oa.LIVE_EXECUTION), {"200": oa.answer("What was done", oa.OBJECT)}, method="POST")),
    # the pool itself (no token needed)
    ApiRoute("/health", health, op("Whether the pool is up", (), {"200": oa.answer("Up", oa.OBJECT)},
                                   security=oa.PUBLIC)),
    ApiRoute("/openapi.json", openapi, op("This document", (), {"200": oa.answer("The OpenAPI document", oa.OBJECT)},
                                          security=oa.PUBLIC)),
]
PUBLIC = {route.path for route in ROUTES if all(o.security == oa.PUBLIC for o in route.operations.values())}


MCP_PATH = "/mcp"
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


class Gate:
    """Normalises the path (Azure prefix, `//`) and checks the bearer token before any route
    (the MCP server's `x-ms-apikey` instead, on its path)."""

    def __init__(self, app: ASGIApp, token: str | None, mcp_key: str | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.mcp_key = mcp_key.encode() if mcp_key else None

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
        elif self.token is not None and path not in PUBLIC:
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


async def on_api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.code, error.message, error.headers)


def allowed_methods(request: Request) -> str:
    """The methods of every route whose path matches the request's (routes may share a path: GET and POST files)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.path_regex.match(request.url.path):
            methods |= set(route.methods or ())
    return ", ".join(sorted(methods))


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "BadRequest")
    message = {404: f"No route {request.method} {request.url.path}; see /openapi.json for the routes.",
               405: f"{request.method} is not allowed on {request.url.path}; see /openapi.json."}
    headers = {"Allow": allowed_methods(request)} if error.status_code == 405 else None
    return error_response(error.status_code, code, message.get(error.status_code, str(error.detail)), headers)


async def on_unexpected(request: Request, error: Exception) -> Response:
    request.app.state.log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "InternalServerError", "The pool failed unexpectedly; its log has the details.")


def build_app(pool: Pool, *, token: str | None, max_upload: int,
              describe: Callable[[], Awaitable[dict[str, Any]]], log: Any,
              mcp: ASGIApp | None = None, mcp_key: str | None = None,
              max_execution_time: float = EXECUTION_LIMIT) -> ASGIApp:
    """The pool's ASGI application, with the token gate in front (and the MCP server at /mcp, if given)."""
    routes = ROUTES + ([ApiRoute(MCP_PATH, mcp, MCP_OPERATIONS)] if mcp is not None else [])
    app = Starlette(routes=routes, exception_handlers={ApiError: on_api_error, HTTPException: on_http_error,
                                                       Exception: on_unexpected})
    app.state.pool = pool
    app.state.max_upload = max_upload
    app.state.max_execution_time = max_execution_time
    app.state.describe = describe
    app.state.log = log
    app.state.openapi = openapi_document(app.routes, pool.sandbox.runtime.name)
    return Gate(app, token, mcp_key)
