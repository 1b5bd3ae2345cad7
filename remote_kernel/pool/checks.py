"""What a request carries, checked: its api-version, identifier, JSON body, execution fields and paths.

Each check returns the value the route needs or raises ApiError with what was wrong and what to send
instead; a malformed request is refused before it starts a session.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, cast

from starlette.requests import ClientDisconnect, Request

from remote_kernel.contract import (
    API_VERSIONS,
    EXECUTION_LIMIT,
    IDENTIFIER,
    IDENTIFIER_RULE,
    LEGACY_API_VERSION,
    SESSION_API_VERSIONS,
    V1_API_VERSIONS,
)
from remote_kernel.pool import files
from remote_kernel.pool.errors import ApiError
from remote_kernel.pool.pool import Pool
from remote_kernel.pool.runtimes import AnswerPolicy, policy_of
from remote_kernel.pool.session import Session

MAX_JSON_BODY = 16 << 20


@dataclass(frozen=True)
class Version:
    shape: str  # "v1" or "v2"
    session_routes: bool  # GET/DELETE session, listSessions, metadata


VERSIONS = {name: Version("v1" if name in V1_API_VERSIONS else "v2", name in SESSION_API_VERSIONS)
            for name in API_VERSIONS}


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


def with_session_routes(request: Request) -> None:
    """The request's api-version has the session routes (2025-02-02-preview and later)."""
    name, version = version_of(request)
    if not version.session_routes:
        raise ApiError(400, "UnsupportedApiVersion",
                       f"This route needs api-version 2025-02-02-preview or later, not {name}.")


def identifier_of(request: Request) -> str:
    identifier = request.query_params.get("identifier")
    if not identifier:
        raise ApiError(400, "MissingIdentifier", "The identifier query parameter is required (a uuid4 is best).")
    if not IDENTIFIER.fullmatch(identifier):
        raise ApiError(400, "InvalidIdentifier",
                       f"The identifier must be {IDENTIFIER_RULE}.")
    return identifier


def pool_of(request: Request) -> Pool:
    return cast(Pool, request.app.state.pool)


def policy_for(request: Request) -> AnswerPolicy:
    """How this pool's sessions are asked and answered (their runtime's policy)."""
    return policy_of(pool_of(request).sandbox.runtime)


async def session_of(request: Request) -> Session:
    """The session the request names, created if new (PoolFull → 429, SessionStartFailed → 503: errors.py)."""
    return await pool_of(request).get(identifier_of(request))


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
    return bool(given[0][1]) if given else False


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


def execution_request(body: dict[str, Any], policy: AnswerPolicy, max_timeout: float) -> ExecutionRequest:
    """Check an execute body for a pool whose sessions are answered by `policy` (runtimes.py)."""
    code = shell_command(body) if policy.shell_body else source_code(body)
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
    if cap is None:
        cap = policy.stream_cap
    jupyter = flag(body, "returnJupyterFormatExecutionResult", "returnJupyterFormat")
    empty = flag(body, "useEmptyKernel") and policy.empty_kernel
    return ExecutionRequest(code, mode == "asynchronous", float(min(timeout, max_timeout)), jupyter, cap, empty)


def operation_id_of(request: Request) -> str | None:
    """The request's `operation-id` header, if any (checked by `runs.submit`)."""
    return request.headers.get("operation-id")


# files and lists ----------------------------------------------------------------------------------

def folder_of(request: Request) -> list[str]:
    """The `path` query parameter as the parts of a folder under /mnt/data (files.BadPath → 400)."""
    return files.parts_of(request.query_params.get("path"))


def name_parts(request: Request, name: str) -> list[str]:
    """A file's parts: its folder (`path`) and its `name` (files.BadPath → 400)."""
    return folder_of(request) + files.parts_of(name, allow_root=False)


def recursive(request: Request, version_name: str) -> bool:
    """Whether a listing asks for the whole tree (`recursive`, 2025-10-02-preview on)."""
    text = request.query_params.get("recursive")
    if text is None:
        return False
    if text.lower() not in ("true", "false"):
        raise ApiError(400, "InvalidRecursive", "recursive must be true or false.")
    return text.lower() == "true" and version_name >= "2025-10-02-preview"


def skip_of(request: Request) -> int:
    """A list's `skip`: a whole number, less than 0 meaning 0 (an int32 without a minimum in the official
    documents)."""
    text = request.query_params.get("skip", "0")
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 12):
        raise ApiError(400, "InvalidSkip", "skip must be a whole number.")
    return max(0, int(text))
