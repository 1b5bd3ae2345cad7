"""Neutral models of the sessions API, and every error the client can raise.

The kernel sees only these types, never a raw HTTP response or a wire shape.

Error tree::

    SessionsError                      anything that went wrong talking to a pool
    ├── RemoteAuthenticationError      401/403, or no token could be obtained
    ├── PoolFull                       429 (or the documented 404) when the pool has no room
    ├── SessionNotFound                the session does not exist (expired or deleted)
    │   └── SessionLost                the session died under us (worker killed, timed out hard)
    ├── RemoteFileNotFound             a file named in /mnt/data does not exist
    ├── BadRequest                     400: the pool rejected the request (its message kept)
    ├── PayloadTooLarge                413: an upload over the pool's limit
    ├── ExecutionTimeout               the code ran past its time limit
    ├── ServiceUnavailable             connection failures, 502/503/504 after retries
    ├── UnexpectedResponse             anything else (status and the first bytes of the body)
    │   └── AnswerTooLarge             an answer or a download over its size cap, or too slow to arrive
    └── ConfigurationError             a setting the client cannot work with (also a ValueError)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class ExecutionStatus(str, Enum):
    """Where an execution stands, in the words of the v2 contract."""

    NOT_STARTED = "NotStarted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELED)


@dataclass
class ImageResult:
    """An image the session returned in the result slot (an open matplotlib figure)."""

    format: str  # "png", "jpeg", ...
    data: bytes  # decoded bytes


@dataclass
class ExecutionError:
    """Why an execution failed: the exception class, its message and the traceback text."""

    name: str  # e.g. "ZeroDivisionError", "ExecutionTimeout"
    message: str  # e.g. "division by zero"
    traceback: str = ""  # the remote traceback as text (usually what stderr holds)


@dataclass
class Execution:
    """One execution of code in a session: the single value that flows from client to kernel."""

    id: str | None
    status: ExecutionStatus
    stdout: str = ""
    stderr: str = ""
    result: Any = None  # the decoded JSON value; None when there was none ("" on the wire)
    has_result: bool = False  # False when the cell had no trailing expression
    image: ImageResult | None = None
    error: ExecutionError | None = None
    duration_ms: float | None = None  # as the pool reported it
    session_guid: str | None = None  # x-ms-session-guid: changes when the pool made a new session
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the response body, for debugging

    @property
    def succeeded(self) -> bool:
        return self.status is ExecutionStatus.SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.status is ExecutionStatus.FAILED


@dataclass
class RemoteFile:
    """A file or folder in the session's /mnt/data."""

    name: str  # relative to /mnt/data (or to the listed folder)
    size: int | None = None
    modified: datetime | None = None
    content_type: str | None = None
    is_directory: bool = False


@dataclass
class SessionInfo:
    """What the pool says about a session (v2 2025-02-02-preview and later)."""

    identifier: str
    created_at: datetime | None = None
    last_accessed_at: datetime | None = None
    expires_at: datetime | None = None
    etag: str | None = None


class SessionsError(Exception):
    """Base of every error raised by the sessions client. The message says what to do."""

    status_code: int | None = None

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.code = code  # the pool's error code (x-ms-error-code), when it gave one


class RemoteAuthenticationError(SessionsError):
    """The pool refused our credentials (401/403) or no token could be obtained."""


class PoolFull(SessionsError):
    """The pool has no room for another session (429, or the documented 404)."""


class SessionNotFound(SessionsError):
    """The session does not exist: it expired after its cooldown or was deleted."""


class SessionLost(SessionNotFound):
    """The session died (its worker was killed or it timed out hard); its state is gone."""


class RemoteFileNotFound(SessionsError):
    """The named file does not exist in the session's /mnt/data."""


class BadRequest(SessionsError):
    """The pool rejected the request as malformed (400); the message is the pool's."""


class PayloadTooLarge(SessionsError):
    """An upload was larger than the pool accepts (413)."""


class ExecutionTimeout(SessionsError):
    """The code ran past its time limit, or the client gave up waiting for it."""


class ServiceUnavailable(SessionsError):
    """The pool could not be reached, or answered 502/503/504 after every retry."""


class UnexpectedResponse(SessionsError):
    """The pool answered something this client does not understand."""


class AnswerTooLarge(UnexpectedResponse):
    """An answer (or a download) larger than the cap the caller set, or one that did not finish in time.

    The client stops reading at the cap, so a hostile or broken pool cannot fill the kernel's memory.
    """


class ConfigurationError(SessionsError, ValueError):
    """A setting the client cannot work with: an unknown auth mode or api-version, a bad endpoint."""
