"""`SessionsClient`: one session of a pool, over HTTP, in whichever api-version is configured.

The client owns one httpx connection pool (keep-alive), asks its TokenProvider for a token per
request, retries what is safe to retry, and turns every answer into the neutral models or an
error of the tree in `models.py`. What goes on the wire is `wire.py`'s business.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import inspect
import json
import logging
import math
import os
import random
import secrets
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

from remote_kernel import __version__
from remote_kernel.contract import DEFAULT_API_VERSION
from remote_kernel.sessions.auth import NoAuth, TokenProvider, redacted_url
from remote_kernel.sessions.models import (
    AnswerTooLarge,
    ConfigurationError,
    Execution,
    ExecutionTimeout,
    RemoteAuthenticationError,
    RemoteFile,
    ServiceUnavailable,
    SessionInfo,
    SessionNotFound,
    SessionsError,
    UnexpectedResponse,
)
from remote_kernel.sessions.transport import httpx, load_httpcore
from remote_kernel.sessions.unix_transport import Answer, UnixSocketTransport
from remote_kernel.sessions.wire import (
    MAX_TIMEOUT_SECONDS,
    Call,
    Multipart,
    Wire,
    clamp_timeout,
    error_from_response,
    multipart_for,
    relative_name,
    sentence,
    unparseable,
    wire_for,
)

LIVE_WIRE_VERSION = "2025-10-02-preview"  # the shape the live-output extension speaks

logger = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]
"""Called with (bytes done, total bytes or None when unknown) as a transfer advances."""

USER_AGENT = f"remote-kernel/{__version__} (Language=Python)"
CHUNK_SIZE = 1 << 20  # bytes read from or written to a local file at a time
ERROR_BODY_LIMIT = 64 << 10  # bytes of an error answer worth reading
ANSWER_LIMIT = 64 << 20  # bytes of a JSON answer, after decompression (see SessionsClient.answer_limit)
MAX_LISTED_FILES = 100_000  # entries of one file listing, over all its pages
MAX_LISTED_PAGES = 1_000
#: the local pool's live-output extension (remote_kernel/pool/workers/PROTOCOL.md), when a pool advertises it
EXTENSIONS_HEADER = "x-remote-kernel-extensions"
LIVE_EXECUTE = "live-execute"
LIVE_LINE_LIMIT = 32 << 20  # longest NDJSON line read from the live route (its last line holds the whole answer)
LiveEvent = Callable[[dict[str, Any]], "Awaitable[None] | None"]
T = TypeVar("T")
Reply: TypeAlias = "httpx.Response | Answer"  # an answer with its body unread: httpx's, or the lean path's (unix_transport.py)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry 429, 502, 503, 504 and connection failures.

    The delay doubles from `base_delay` up to `max_delay`, with jitter; a `Retry-After` header
    replaces it. Retrying stops after `attempts` tries in all or `total` seconds.
    """

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 8.0
    total: float = 60.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, min(0.5, retry_after * 0.1))
        ceiling = min(self.max_delay, self.base_delay * 2.0**retry)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class SessionsClient:
    """A client of one session (named by `identifier`) in the pool at `endpoint`.

    Use one client per event loop; `async with SessionsClient(...)` closes its connections.
    `identifier` may be reassigned (a new session) between calls. `timeout` is the default
    number of seconds an execution may run; `max_timeout` the most the pool takes (the hosted
    service's 220 s; a local pool started with `--max-execution-time` takes more).
    """

    #: Seconds the client waits for an execution's answer beyond the time the code may run:
    #: room for a cold start and for the pool to interrupt code that ran over.
    execution_margin: float = 30.0
    #: Seconds before an unanswered request (other than an execution) is given up; also the most
    #: one answer may take to arrive whole (a pool that trickles bytes cannot hold a request open).
    request_timeout: float = 120.0
    #: Bytes of one JSON answer, after decompression: reading stops there (AnswerTooLarge). With the
    #: parsed value this bounds what one answer costs the kernel (about 3× this, plus one
    #: decompressed network chunk: deflate expands 64 KiB to at most ~64 MiB).
    answer_limit: int = ANSWER_LIMIT
    #: Seconds a loopback pool that refuses connections is retried: nothing is listening there, and
    #: waiting longer would not change that (a remote pool keeps the whole retry policy).
    loopback_refused_budget: float = 0.5

    def __init__(self, endpoint: str, identifier: str, *, api_version: str = DEFAULT_API_VERSION,
                 auth: TokenProvider | None = None, timeout: float = MAX_TIMEOUT_SECONDS,
                 transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
                 max_timeout: float = MAX_TIMEOUT_SECONDS) -> None:
        self.endpoint = _checked_endpoint(endpoint)
        socket_path = unix_socket_of(self.endpoint)
        #: the lean path of requests without an upload body (None: every request goes through httpx)
        self._lean: UnixSocketTransport | None = None
        #: per route: the head httpx would send, with where the token and the body's length go (see `_lean_send`)
        self._heads: dict[tuple[Any, ...], tuple[bytes, list[tuple[bytes, bytes]], int | None, int | None]] = {}
        if socket_path is not None and transport is None:
            # a local pool on a Unix socket (the kernel's embedded pool): no TCP port, only this user; the
            # lean transport (h11 over asyncio's socket calls) costs a fraction of httpcore's CPU per request
            transport = self._lean = UnixSocketTransport(socket_path)
        elif transport is None:
            load_httpcore()  # httpx's default transport
        self.identifier = identifier
        self.api_version = api_version
        self.auth = auth if auth is not None else NoAuth()
        self.timeout = timeout
        self.max_timeout = max_timeout
        self.retry = retry or RetryPolicy()
        #: whether any request reached the pool (an answer came, or a connection opened): until then
        #: no session can exist for this client's identifier
        self.reached_pool = False
        #: what the pool advertised beyond the contract (EXTENSIONS_HEADER of any answer); a kernel that
        #: started the pool itself may set it at once
        self.extensions: set[str] = set()
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        self._base = (UNIX_BASE if socket_path is not None else self.endpoint.rstrip("/")) + "/"
        loopback = socket_path is not None or _is_loopback(self.endpoint)
        self._loopback = loopback
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.request_timeout, connect=15.0),
            # An idle connection is dropped before common servers drop it (uvicorn: 5 s), so that
            # an execution is never sent on a connection the server is closing.
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=4.0),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            trust_env=not loopback,  # proxies and CA settings, but not for loopback
            verify=_verification(loopback, urlsplit(self.endpoint).scheme),
        )

    @property
    def api_version(self) -> str:
        return self._wire.api_version

    @api_version.setter
    def api_version(self, value: str) -> None:
        self._wire: Wire = wire_for(value)

    def __repr__(self) -> str:
        return (f"SessionsClient(endpoint={redacted_url(self.endpoint)!r}, api_version={self.api_version!r}, "
                f"auth={self.auth!r})")

    async def __aenter__(self) -> SessionsClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (it does not delete the session)."""
        await self._http.aclose()

    # --- executions -----------------------------------------------------------------------

    async def execute(self, code: str, *, timeout: float | None = None, jupyter_repr: bool = False,
                      answer_limit: int | None = None) -> Execution:
        """Run `code` in the session and return how it went.

        `timeout` is the seconds the code may run (sent as `timeoutInSeconds`, clamped to
        1..`max_timeout`; default: the client's `timeout`). The client waits that long plus `execution_margin` for
        the answer, following `Operation-Location` while the pool says Running, then raises
        ExecutionTimeout. `jupyter_repr` asks for the IPython repr of the value instead of JSON
        (2025-10-02-preview; ignored by older versions). `answer_limit` caps the answer's size in
        bytes (default: `answer_limit`); the whole answer must arrive within the wait, however slowly
        its bytes come (AnswerTooLarge otherwise).

        A failure of the code is not an exception: it is an Execution with status FAILED and an
        `error` (the exception's name, message and traceback). The pool's own verdicts arrive
        the same way: `error.name` is "ExecutionTimeout" when the code ran past its limit, and
        "SessionLost" when the session died under it (its state is gone: the kernel decides what
        to tell the user). Cancelling the awaiting task closes the request, which makes the pool
        interrupt the code. One execution costs one HTTP request unless the pool answers Running.
        """
        seconds = clamp_timeout(self.timeout if timeout is None else timeout, self.max_timeout)
        wait = seconds + self.execution_margin
        deadline = time.monotonic() + wait
        doing = "executing the cell"
        call = self._wire.execute(code, seconds, jupyter_repr)
        too_late = ExecutionTimeout(
            f"Executing the cell failed: the pool gave no answer within {wait:.0f} s (the code may run "
            f"{seconds} s). The code may still be running in the session; interrupt it or start a new "
            "session if the next cell waits behind it.")
        limit = self.answer_limit if answer_limit is None else answer_limit
        response = await self._send(call, doing, resendable=False, read_timeout_error=too_late,
                                    timeout=httpx.Timeout(self.request_timeout, connect=15.0, read=wait))
        execution = self._wire_parse(self._wire.parse_execution, doing, response,
                                     await self._read_json(response, doing, limit=limit, until=deadline),
                                     response.headers.get("x-ms-session-guid"))
        if not execution.status.is_terminal:
            execution = await self._follow(execution, response.headers.get("operation-location"),
                                           deadline, too_late, limit)
        return execution

    @property
    def live(self) -> bool:
        """Whether the pool offers the live-output extension (`execute_live`)."""
        return LIVE_EXECUTE in self.extensions

    async def execute_live(self, code: str, on_event: LiveEvent, *, timeout: float | None = None,
                           jupyter_repr: bool = False) -> Execution:
        """Like `execute`, on a pool that advertises the live-output extension: `on_event` gets each
        event while the code runs (`{"event": "started", "id", "grace"}`, then `{"event": "stream",
        "name", "text"}` in the order the code wrote). `timeout` is not capped at 220 s (the local
        pool's own limit is the client's). One HTTP request; cancelling closes it, which interrupts
        the code; `interrupt_live` interrupts it and keeps the answer coming.
        """
        seconds = max(1, math.ceil(self.timeout if timeout is None else timeout))
        wire = wire_for(LIVE_WIRE_VERSION)
        call = dataclasses.replace(wire.execute(code, seconds, jupyter_repr), path=".remote-kernel/live-execute",
                                   api_version=LIVE_WIRE_VERSION)
        doing = "executing the cell"
        wait = seconds + self.execution_margin
        too_late = ExecutionTimeout(f"Executing the cell failed: the pool sent nothing for {wait:.0f} s (the code "
                                    f"may run {seconds} s). Interrupt it or start a new session.")
        response = await self._send(call, doing, resendable=False, read_timeout_error=too_late,
                                    timeout=httpx.Timeout(self.request_timeout, connect=15.0, read=wait))
        guid = response.headers.get("x-ms-session-guid")
        done: Any = None
        try:
            async for line in _lines(response, LIVE_LINE_LIMIT):  # to the body's end: the connection is kept
                try:
                    event = json.loads(line)
                except (ValueError, RecursionError):
                    raise unparseable(doing, response.status_code, line, "a live line is not JSON") from None
                if not isinstance(event, dict) or done is not None:
                    continue
                if event.get("event") == "done":
                    done = event
                    continue
                handled = on_event(event)
                if inspect.isawaitable(handled):
                    await handled
            if done is not None:
                return self._wire_parse(wire.parse_execution, doing, response, done.get("execution"), guid)
        except httpx.ReadTimeout:
            raise too_late from None
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Executing the cell failed: the connection to the pool broke while the "
                                     f"cell ran ({_describe(exc)}). The code may or may not have finished.") from exc
        finally:
            await response.aclose()
        raise ServiceUnavailable("Executing the cell failed: the pool's live answer ended before the execution "
                                 "did. The code may or may not have finished.")

    async def interrupt_live(self, execution_id: str) -> float:
        """Interrupt an execution started by `execute_live`; returns the seconds the pool waits for it to
        stop before it kills the session's processes."""
        call = Call("POST", ".remote-kernel/live-interrupt", params={"execution": execution_id},
                    api_version=LIVE_WIRE_VERSION)
        response = await self._send(call, "interrupting the cell", missing="session")
        body = await self._read_json(response, "interrupting the cell")
        grace = body.get("grace") if isinstance(body, dict) else None
        return float(grace) if isinstance(grace, (int, float)) and not isinstance(grace, bool) else 3.0

    async def _follow(self, execution: Execution, location: str | None, deadline: float,
                      too_late: ExecutionTimeout, limit: int) -> Execution:
        """Poll a Running execution until it is terminal or the deadline passes."""
        url = self._operation_url(location)
        if url is None and not execution.id:
            raise UnexpectedResponse("Executing the cell failed: the pool answered that the execution is "
                                     f"{execution.status.value} but named neither its id nor a usable "
                                     "Operation-Location to follow it by.")
        call = self._wire.get_execution(execution.id or "")
        doing = "waiting for the execution"
        delay = 0.1
        guid = execution.session_guid
        while not execution.status.is_terminal:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise too_late
            await asyncio.sleep(min(delay, remaining))
            response = await self._send(call, doing, url=url, missing=None)
            body = await self._read_json(response, doing, limit=limit, until=deadline)
            guid = response.headers.get("x-ms-session-guid") or guid
            execution = self._wire_parse(self._wire.parse_execution, doing, response, body, guid)
            delay = _retry_after(response) or min(delay * 1.6, 2.0)
        return execution

    def _operation_url(self, location: str | None) -> httpx.URL | None:
        """Where to poll: `Operation-Location` if it points into this pool, else None (use the id)."""
        if not location:
            return None
        base = httpx.URL(self._base)
        try:
            target = httpx.URL(location)
        except httpx.InvalidURL:
            return None
        if target.is_absolute_url:
            same_origin = (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)
            return target if same_origin else None  # never send the token elsewhere
        if location.startswith("/"):
            if base.path != "/" and target.path.startswith(base.path):
                return base.copy_with(raw_path=target.raw_path)
            return base.join(location.lstrip("/"))
        return base.join(location)

    # --- files ----------------------------------------------------------------------------

    async def upload(self, source: str | os.PathLike[str] | BinaryIO, remote_name: str | None = None, *,
                     progress: Progress | None = None) -> RemoteFile:
        """Stream a local file (a path or a binary stream) to /mnt/data/`remote_name`.

        `remote_name` defaults to the source's file name; it may name a subfolder (v2). The file
        is read a chunk at a time, off the event loop. A stream that cannot seek is sent once,
        without retries. Local problems (no such file) raise OSError.
        """
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            name = remote_name or path.name
            with await asyncio.to_thread(open, path, "rb") as stream:
                return await self._upload_stream(stream, name, progress)
        name = remote_name or os.path.basename(str(getattr(source, "name", "") or ""))
        if not name:
            raise ConfigurationError("Uploading a stream needs a remote_name: the stream has no file name.")
        return await self._upload_stream(source, name, progress)

    async def _upload_stream(self, stream: IO[bytes], remote_name: str, progress: Progress | None) -> RemoteFile:
        call, filename = self._wire.upload(remote_name)
        doing = f"uploading {relative_name(remote_name)!r}"
        body = _UploadBody(stream, multipart_for(filename), progress)
        response = await self._send(call, doing, body=body, missing=None,
                                    timeout=httpx.Timeout(self.request_timeout, connect=15.0, read=300.0))
        return self._wire_parse(self._wire.parse_upload, doing, response, await self._read_json(response, doing))

    async def download(self, remote_name: str, destination: str | os.PathLike[str] | BinaryIO, *,
                       progress: Progress | None = None, limit: int | None = None) -> int:
        """Stream /mnt/data/`remote_name` into `destination` and return the bytes written.

        A path destination is written to a temporary file beside it and renamed at the end, so
        nothing half-written is left behind; an existing folder receives the file under its name.
        `limit` caps the bytes accepted: past it the transfer stops with AnswerTooLarge (and a path
        destination is left untouched).
        """
        call = self._wire.download(remote_name)
        doing = f"downloading {relative_name(remote_name)!r}"
        if not isinstance(destination, (str, os.PathLike)):
            return await self._download_into(call, doing, destination, progress, limit=limit)
        target = Path(destination)
        if target.is_dir():
            target = target / relative_name(remote_name).rsplit("/", 1)[-1]
        partial = target.with_name(f".{target.name[:200]}.{secrets.token_hex(4)}.part")  # within NAME_MAX
        stream = await asyncio.to_thread(open, partial, "xb", buffering=0)
        try:
            with stream:
                written = await self._download_into(call, doing, stream, progress, partial=True, limit=limit)
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return written

    async def _download_into(self, call: Call, doing: str, stream: IO[bytes], progress: Progress | None,
                             partial: bool = False, limit: int | None = None) -> int:
        response = await self._send(call, doing, missing="file",
                                    timeout=httpx.Timeout(self.request_timeout, connect=15.0))
        total = _content_length(response)

        def too_large(size: str) -> AnswerTooLarge:
            left = "nothing was saved" if partial else "the stream holds a partial copy"
            return AnswerTooLarge(f"{sentence(doing)} stopped: the file is {size}, over the limit of {limit} bytes; "
                                  f"{left}.", status_code=response.status_code)

        if limit is not None and total is not None and total > limit:
            await response.aclose()
            raise too_large(f"{total} bytes")
        written = 0
        pending: list[bytes] = []  # received chunks, written (without copying) a MiB at a time
        pending_size = 0
        try:
            if progress:
                progress(0, total)
            async for chunk in response.aiter_bytes():
                pending.append(chunk)
                pending_size += len(chunk)
                if limit is not None and written + pending_size > limit:
                    raise too_large(f"larger than {written + pending_size} bytes")
                if pending_size >= CHUNK_SIZE:
                    await asyncio.to_thread(_write_all, stream, pending)
                    written += pending_size
                    pending, pending_size = [], 0
                    if progress:
                        progress(written, total)
            if pending:
                await asyncio.to_thread(_write_all, stream, pending)
                written += pending_size
                if progress:
                    progress(written, total)
        except httpx.TransportError as exc:
            got = written + pending_size
            left = "nothing was saved" if partial else "the stream holds a partial copy"
            raise ServiceUnavailable(
                f"{sentence(doing)} failed: the connection broke after {got} of "
                f"{total if total is not None else 'an unknown number of'} bytes "
                f"({_describe(exc)}); {left}. Try again.") from exc
        except httpx.DecodingError as exc:
            raise UnexpectedResponse(f"{sentence(doing)} failed: the pool's answer cannot be decoded "
                                     f"({_describe(exc)}).", status_code=response.status_code) from exc
        finally:
            await response.aclose()
        return written

    async def list_files(self, path: str | None = None) -> list[RemoteFile]:
        """The files and folders in /mnt/data, or in the folder `path` under it (v2)."""
        call = self._wire.list_files(path)
        doing = "listing the session's files"
        files: list[RemoteFile] = []
        url = None
        seen: set[str] = set()
        for _ in range(MAX_LISTED_PAGES):  # bounds on pages, entries and revisits: a pool may link in circles
            response = await self._send(call, doing, url=url)
            page, next_link = self._wire_parse(self._wire.parse_file_list, doing, response,
                                               await self._read_json(response, doing))
            files.extend(page)
            if len(files) > MAX_LISTED_FILES:
                raise AnswerTooLarge(f"{sentence(doing)} stopped: the pool listed more than {MAX_LISTED_FILES} "
                                     "entries; list a folder of it instead.", status_code=response.status_code)
            url = self._operation_url(next_link)
            if url is None:
                return files
            if str(url) in seen:
                raise UnexpectedResponse(f"{sentence(doing)} failed: the pool's nextLink leads back to a page "
                                         f"already read ({len(files)} entries so far); the pool is misbehaving.",
                                         status_code=response.status_code)
            seen.add(str(url))
        raise AnswerTooLarge(f"{sentence(doing)} stopped: the pool's listing went on for more than "
                             f"{MAX_LISTED_PAGES} pages.")

    async def file_info(self, name: str) -> RemoteFile:
        """What the pool knows of /mnt/data/`name`: size, time, type."""
        doing = f"reading the metadata of {relative_name(name)!r}"
        response = await self._send(self._wire.file_info(name), doing, missing="file")
        return self._wire_parse(self._wire.parse_file_info, doing, response, await self._read_json(response, doing))

    async def delete_file(self, name: str) -> None:
        """Delete /mnt/data/`name`; RemoteFileNotFound if it does not exist."""
        response = await self._send(self._wire.delete_file(name), f"deleting {relative_name(name)!r}",
                                    missing="file")
        await response.aclose()

    # --- sessions -------------------------------------------------------------------------

    async def delete_session(self) -> None:
        """Delete the session, its processes and files; the identifier may then be reused.

        A session that is already gone counts as deleted. Versions without session routes
        (v1, 2024-10-02-preview) delete through 2025-10-02-preview, as langchain does.
        """
        try:
            response = await self._send(self._wire.delete_session(), "deleting the session", missing="session")
        except SessionNotFound:
            return
        await response.aclose()

    async def session_info(self) -> SessionInfo:
        """What the pool says about the session (2025-02-02-preview and later; else BadRequest)."""
        call = self._wire.session_info()
        doing = "reading the session's information"
        response = await self._send(call, doing, missing="session")
        return self._wire_parse(self._wire.parse_session_info, doing, response, await self._read_json(response, doing))

    # --- sending --------------------------------------------------------------------------

    async def _send(self, call: Call, doing: str, *, resendable: bool = True, body: _UploadBody | None = None,
                    url: httpx.URL | None = None, timeout: httpx.Timeout | None = None,
                    missing: str | None = None, read_timeout_error: SessionsError | None = None) -> Reply:
        """Send `call` and return its 2xx response, body unread (the caller closes it).

        Retries 429 always, and 502/503/504 and broken connections when `resendable` (a request
        that may have reached the pool is never resent otherwise); a connection that never
        opened is retried always. A 401 is retried once with a fresh token when the provider can
        refresh. Every other answer becomes the matching error.
        """
        started = time.monotonic()
        retries = 0
        refreshed = False
        while True:
            token = await self._token(doing)
            lean = self._lean is not None and body is None and url is None and (token is None or token.isascii())
            try:
                if lean:
                    response: Reply = await self._lean_send(call, token, timeout)
                else:
                    response = await self._http.send(self._build(call, token, url=url, body=body, timeout=timeout),
                                                     stream=True)
            except httpx.TransportError as exc:
                never_opened = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                self.reached_pool = self.reached_pool or not never_opened
                error = self._connection_error(exc, doing, body, resendable)
                delay = self._next_delay(retries, started, None) if never_opened or resendable else None
                if (delay is not None and self._loopback and isinstance(exc, httpx.ConnectError)
                        and time.monotonic() - started + delay > self.loopback_refused_budget):
                    delay = None  # nothing listens on this machine's address: say so now
                if delay is not None and (body is None or body.rewind()):
                    logger.debug("%s: %s; retrying in %.2f s", doing, type(exc).__name__, delay)
                    retries += 1
                    await asyncio.sleep(delay)
                    continue
                if isinstance(exc, httpx.ReadTimeout) and read_timeout_error is not None:
                    raise read_timeout_error from None
                raise error from exc

            self.reached_pool = True
            status = response.status_code
            advertised = response.headers.get(EXTENSIONS_HEADER)
            if advertised:
                self.extensions = {name.strip() for name in advertised.split(",")}
            if response.is_success:
                return response
            if status == 401 and self.auth.refreshable and not refreshed and (body is None or body.rewind()):
                refreshed = True  # the cached token may have been revoked: one try with a new one
                self.auth.invalidate()
                await response.aclose()
                continue
            if status == 429 or (status in (502, 503, 504) and resendable):
                delay = self._next_delay(retries, started, _retry_after(response))
                if delay is not None and (body is None or body.rewind()):
                    logger.debug("%s: the pool answered %d; retrying in %.2f s", doing, status, delay)
                    await response.aclose()
                    retries += 1
                    await asyncio.sleep(delay)
                    continue
            content = await _read_some(response)
            error = error_from_response(status, response.headers, content, doing, self.auth.hint, missing)
            raise _without(token, error)

    def _params(self, call: Call) -> dict[str, str]:
        params = {"api-version": call.api_version or self.api_version}
        if call.with_identifier:
            params["identifier"] = self.identifier
        params.update(call.params)
        return params

    def _build(self, call: Call, token: str | None, *, url: httpx.URL | None, body: _UploadBody | None,
               timeout: httpx.Timeout | None) -> httpx.Request:
        params = self._params(call)
        if url is None:  # the same few URLs over and over: parsed once (httpx's URL parsing is costly)
            key = (call.path, tuple((k, str(v)) for k, v in params.items()))
            target = self._urls.get(key)
            if target is None:
                if len(self._urls) >= 64:
                    self._urls.clear()
                target = self._urls[key] = httpx.URL(self._base + call.path).copy_merge_params(params)
        else:
            target = url.copy_merge_params(params)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content = None
        if body is not None:
            headers.update(body.headers())
            content = body
        return self._http.build_request(call.method, target, json=call.json, content=content, headers=headers,
                                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)

    async def _lean_send(self, call: Call, token: str | None, timeout: httpx.Timeout | None) -> Reply:
        """`call` through the lean path: the head httpx would send (httpx builds it once per route, and only the
        token and the body's length change), the body as httpx encodes JSON."""
        assert self._lean is not None
        params = self._params(call)
        key = (call.method, call.path, tuple(params.items()), token is None, call.json is None)
        head = self._heads.get(key)
        if head is None:
            model = self._build(call, None if token is None else "-", url=None, body=None, timeout=None)
            names = [name.lower() for name, _ in model.headers.raw]
            head = (model.url.raw_path, list(model.headers.raw),
                    names.index(b"authorization") if token is not None else None,
                    names.index(b"content-length") if b"content-length" in names else None)
            if len(self._heads) >= 64:
                self._heads.clear()
            self._heads[key] = head
        target, headers, token_at, length_at = head
        headers = list(headers)
        content = b"" if call.json is None else json.dumps(call.json, ensure_ascii=False, separators=(",", ":"),
                                                           allow_nan=False).encode()
        if token_at is not None:
            headers[token_at] = (headers[token_at][0], b"Bearer " + (token or "").encode())
        if length_at is not None:
            headers[length_at] = (headers[length_at][0], str(len(content)).encode())
        timeouts = (timeout if timeout is not None else self._http.timeout).as_dict()
        return await self._lean.request(call.method, target, headers, content, timeouts)

    async def _token(self, doing: str) -> str | None:
        try:
            return await self.auth.token()
        except RemoteAuthenticationError:
            raise
        except Exception as exc:
            raise RemoteAuthenticationError(
                f"{sentence(doing)} failed: no token could be obtained ({self.auth.describe()}: "
                f"{type(exc).__name__}: {exc}). {self.auth.hint}") from exc

    def _next_delay(self, retries: int, started: float, retry_after: float | None) -> float | None:
        """How long to wait before the next try, or None when the retries are spent."""
        if retries + 1 >= self.retry.attempts:
            return None
        delay = self.retry.delay(retries, retry_after)
        if time.monotonic() - started + delay > self.retry.total:
            return None
        return delay

    def _connection_error(self, exc: httpx.TransportError, doing: str, body: _UploadBody | None,
                          resendable: bool) -> SessionsError:
        origin = _origin(self.endpoint)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ServiceUnavailable(
                f"{sentence(doing)} failed: cannot connect to the pool at {origin} ({_describe(exc)}). Check "
                "POOL_MANAGEMENT_ENDPOINT and that the pool is running.")
        if isinstance(exc, httpx.PoolTimeout):
            return ServiceUnavailable(
                f"{sentence(doing)} failed: every connection to {origin} stayed busy; too many requests at once.")
        if isinstance(exc, httpx.TimeoutException):
            return ServiceUnavailable(f"{sentence(doing)} failed: the pool at {origin} stopped answering "
                                      f"({_describe(exc)}). Try again; check the pool's health.")
        sent = f" after {body.sent} of {body.size} bytes" if body is not None and body.size is not None else ""
        consequence = "" if resendable else " The code may or may not have run."
        return ServiceUnavailable(
            f"{sentence(doing)} failed: the connection to the pool at {origin} broke{sent} "
            f"({_describe(exc)}).{consequence} Try again; check the pool's health.")

    async def _read_json(self, response: Reply, doing: str, *, limit: int | None = None,
                         until: float | None = None) -> Any:
        """The answer's JSON, read whole within `limit` bytes (decoded) and before `until` (monotonic)."""
        limit = self.answer_limit if limit is None else limit
        until = time.monotonic() + self.request_timeout if until is None else until
        content = bytearray()

        async def read() -> None:
            async for chunk in response.aiter_bytes():
                content.extend(chunk)
                if len(content) > limit:
                    raise AnswerTooLarge(
                        f"{sentence(doing)} failed: the pool's answer is larger than {_mib(limit)} once decoded "
                        "(the kernel stops reading there to protect its memory). If the code printed that "
                        "much, print less or write it to a file and %download it.",
                        status_code=response.status_code)

        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, until - time.monotonic())):
                    await read()
            else:  # Python 3.10 (supported) has no asyncio.timeout_at
                await asyncio.wait_for(read(), max(0.0, until - time.monotonic()))
        except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on; a class of its own in 3.10
            raise AnswerTooLarge(f"{sentence(doing)} failed: the pool's answer did not arrive whole in time (its bytes "
                                 f"came too slowly; {len(content)} bytes so far). Try again; check the pool's "
                                 "health.", status_code=response.status_code) from None
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"{sentence(doing)} failed: the connection broke while the answer was "
                                     f"being read ({_describe(exc)}). Try again.") from exc
        except httpx.DecodingError as exc:  # e.g. Content-Encoding: gzip on a body that is not
            raise unparseable(doing, response.status_code, b"", f"its body cannot be decoded ({exc})") from None
        finally:
            await response.aclose()
        try:
            return json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise unparseable(doing, response.status_code, bytes(content[:ERROR_BODY_LIMIT]),
                              "its body is not JSON") from None

    @staticmethod
    def _wire_parse(parse: Callable[..., T], doing: str, response: Reply, body: Any, *args: Any) -> T:
        try:
            return parse(body, *args)
        except UnexpectedResponse as exc:
            raise UnexpectedResponse(f"{sentence(doing)} failed: {exc.message}",
                                     status_code=response.status_code) from None


class _UploadBody:
    """A multipart body that streams a file: framing head, the file a chunk at a time, tail.

    It can be sent again if the stream can seek back to where it started.
    """

    def __init__(self, stream: IO[bytes], multipart: Multipart, progress: Progress | None) -> None:
        self.stream = stream
        self.multipart = multipart
        self.progress = progress
        self.start: int | None = None
        self.size: int | None = None
        try:
            if stream.seekable():
                self.start = stream.tell()
                self.size = stream.seek(0, os.SEEK_END) - self.start
                stream.seek(self.start)
        except (AttributeError, OSError):
            self.start = self.size = None
        self.used = False
        self.sent = 0

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.multipart.content_type}
        if self.size is not None:
            headers["Content-Length"] = str(len(self.multipart.head) + self.size + len(self.multipart.tail))
        return headers

    def rewind(self) -> bool:
        """Make the body ready to send again; False when the stream cannot go back."""
        if not self.used:
            return True
        if self.start is None:
            return False
        self.stream.seek(self.start)
        self.used = False
        self.sent = 0
        return True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.used = True
        yield self.multipart.head
        if self.progress:
            self.progress(0, self.size)
        remaining = self.size
        while remaining is None or remaining > 0:
            want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
            chunk = await asyncio.to_thread(self.stream.read, want)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
            self.sent += len(chunk)
            if self.progress:
                self.progress(self.sent, self.size)
        if remaining:  # the file shrank while it was read: the Content-Length would be a lie
            raise OSError(f"the file being uploaded shrank by {remaining} bytes while it was read")
        yield self.multipart.tail


async def _lines(response: Reply, limit: int) -> AsyncIterator[bytes]:
    """The body's lines (without the newline), none longer than `limit` (else UnexpectedResponse)."""
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        scan = len(buffer)
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", scan)) >= 0:
            yield bytes(buffer[start:end])
            start = scan = end + 1
        if start:
            del buffer[:start]
        if len(buffer) > limit:
            raise UnexpectedResponse(f"The pool's live answer has a line over {limit >> 20} MiB.")
    if buffer.strip():
        yield bytes(buffer)


def _write_all(stream: IO[bytes], chunks: list[bytes]) -> None:
    """Write every chunk, whatever the stream's short writes (raw files may take part of one)."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            count = stream.write(view)
            if count is None or count >= len(view):
                break
            view = view[count:]


UNIX_BASE = "http://localhost"  # the URL a request to a Unix-socket pool carries (its Host header)


def unix_socket_of(endpoint: str) -> str | None:
    """The socket path of an `http+unix://<percent-encoded path>` endpoint; None for any other."""
    parts = urlsplit(endpoint.strip())
    return unquote(parts.netloc) if parts.scheme == "http+unix" else None


def _checked_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https", "http+unix") or not parts.netloc:
        raise ConfigurationError(f"POOL_MANAGEMENT_ENDPOINT must be an http(s) URL; got {redacted_url(endpoint)!r}.")
    if parts.query or parts.fragment:
        raise ConfigurationError("POOL_MANAGEMENT_ENDPOINT must not carry a query or fragment: give the pool's "
                                 "management endpoint as `az containerapp sessionpool show` prints it.")
    return endpoint.strip()


def _retry_after(response: Reply) -> float | None:
    """`Retry-After` in seconds (a number or an HTTP date), if the response has one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_length(response: Reply) -> int | None:
    if "content-encoding" in response.headers:
        return None
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _read_some(response: Reply) -> bytes:
    """The first bytes of an error answer (the rest is not worth waiting for)."""
    content = b""
    try:
        async for chunk in response.aiter_bytes():
            content += chunk
            if len(content) >= ERROR_BODY_LIMIT:
                break
    except (httpx.TransportError, httpx.DecodingError):
        pass
    finally:
        await response.aclose()
    return content


def _without(token: str | None, error: SessionsError) -> SessionsError:
    """The error with any echo of the token removed from its message."""
    if token and token in error.message:
        error.message = error.message.replace(token, "<token>")
        error.args = (error.message,)
    return error


def _is_loopback(endpoint: str) -> bool:
    host = (urlsplit(endpoint).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _verification(loopback: bool, scheme: str) -> ssl.SSLContext | bool:
    """How the client checks the server's certificate.

    Plain HTTP on loopback or a Unix socket (a local pool) needs no CA bundle, whose loading costs
    ~0.05 s of a kernel's first cell. HTTPS on loopback is a `remote-kernel pool --tls`: its CA is trusted through
    SSL_CERT_FILE/SSL_CERT_DIR, read here because the client ignores the environment for loopback
    (proxies). Anything else: httpx's default, which reads them itself.
    """
    if loopback and scheme in ("http", "http+unix"):  # a Unix socket has no TLS either
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # cannot verify: would refuse any TLS peer
    if loopback:
        return httpx.create_ssl_context(trust_env=True)
    return True


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

