"""The wire shapes of the dynamic-sessions REST contract, and nothing else.

Two shapes cover every api-version (see API-CONTRACT.md):

- **v1** (`2024-02-02-preview`, `2024-08-02-preview`): `code/execute` with bodies wrapped in
  `properties`, `files/upload`, `files/content/{name}`, file metadata under `value[].properties`.
- **v2** (`2024-10-02-preview` and later): `executions`, `files`, `files/{name}/content`, flat
  file entries, 204 deletes; `session` and `metadata` from `2025-02-02-preview`.

This module turns a neutral operation into a `Call` (method, path, query, body) and a response
body back into the neutral models. It does no I/O: the client sends the calls.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

# the contract's facts, re-exported under the names the client and its tests use
from remote_kernel.contract import (  # noqa: F401
    API_VERSIONS,
    DEFAULT_API_VERSION,
    EXECUTION_LIMIT,
    JUPYTER_REPR_VERSIONS,
    SESSION_API_VERSIONS,
    V1_API_VERSIONS,
    V2_API_VERSIONS,
)
from remote_kernel.sessions.models import (
    BadRequest,
    ConfigurationError,
    Execution,
    ExecutionError,
    ExecutionStatus,
    ImageResult,
    PayloadTooLarge,
    PoolFull,
    RemoteAuthenticationError,
    RemoteFile,
    RemoteFileNotFound,
    ServiceUnavailable,
    SessionInfo,
    SessionLost,
    SessionNotFound,
    SessionsError,
    UnexpectedResponse,
)

SUPPORTED_API_VERSIONS = API_VERSIONS
SESSION_INFO_API_VERSIONS = SESSION_API_VERSIONS
# Versions without session routes delete a session through this one, like langchain does.
SESSION_DELETE_API_VERSION = "2025-10-02-preview"

MAX_TIMEOUT_SECONDS = int(EXECUTION_LIMIT)  # the hosted service's cap on one execution
DATA_ROOT = "/mnt/data"


@dataclass(frozen=True)
class Call:
    """One request in wire terms. `path` is below the pool endpoint and already percent-encoded."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)  # besides api-version and identifier
    json: dict[str, Any] | None = None
    api_version: str | None = None  # overrides the wire's own version (v1 session delete)
    with_identifier: bool = True


@dataclass(frozen=True)
class Multipart:
    """The framing around one file part named `file`: the body is `head + file bytes + tail`."""

    content_type: str
    head: bytes
    tail: bytes


def multipart_for(filename: str, content_type: str = "application/octet-stream") -> Multipart:
    """Frame one file part, so the client can stream the file's bytes between head and tail."""
    boundary = secrets.token_hex(16)
    # HTML5 form encoding of the filename (what browsers and httpx send): UTF-8, quotes escaped.
    safe_name = filename.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return Multipart(f"multipart/form-data; boundary={boundary}", head, tail)


def clamp_timeout(seconds: float, limit: float = MAX_TIMEOUT_SECONDS) -> int:
    """`timeoutInSeconds` as the pool accepts it: a whole number from 1 to `limit` (the service's: 220)."""
    return max(1, min(int(limit), int(-(-seconds // 1))))


def relative_name(name: str) -> str:
    """A file name relative to /mnt/data: `/mnt/data/a.csv`, `/a.csv` and `a.csv` are the same file."""
    if name == DATA_ROOT or name.startswith(DATA_ROOT + "/"):
        name = name[len(DATA_ROOT):]
    name = name.lstrip("/")
    if not name:
        raise BadRequest("A file name is needed: the name given names /mnt/data itself.")
    return name


class Wire(ABC):
    """The requests and responses of one api-version."""

    shape: str

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version

    @property
    def has_session_info(self) -> bool:
        return self.api_version in SESSION_INFO_API_VERSIONS

    # --- executions -------------------------------------------------------------------------
    @abstractmethod
    def execute(self, code: str, timeout_seconds: int, jupyter_repr: bool = False) -> Call: ...

    @abstractmethod
    def get_execution(self, execution_id: str) -> Call: ...

    @abstractmethod
    def parse_execution(self, body: Any, session_guid: str | None = None) -> Execution: ...

    # --- files ------------------------------------------------------------------------------
    @abstractmethod
    def upload(self, remote_name: str) -> tuple[Call, str]:
        """The upload call and the multipart filename to send."""

    @abstractmethod
    def parse_upload(self, body: Any) -> RemoteFile: ...

    @abstractmethod
    def list_files(self, path: str | None) -> Call: ...

    @abstractmethod
    def parse_file_list(self, body: Any) -> tuple[list[RemoteFile], str | None]:
        """The entries and the `nextLink` of the next page, if any."""

    @abstractmethod
    def file_info(self, name: str) -> Call: ...

    @abstractmethod
    def parse_file_info(self, body: Any) -> RemoteFile: ...

    @abstractmethod
    def download(self, name: str) -> Call: ...

    @abstractmethod
    def delete_file(self, name: str) -> Call: ...

    # --- sessions ---------------------------------------------------------------------------
    def delete_session(self) -> Call:
        # Versions without session routes (v1, 2024-10-02) delete through one that has them, as
        # langchain does.
        override = None if self.has_session_info else SESSION_DELETE_API_VERSION
        return Call("DELETE", "session", api_version=override)

    def session_info(self) -> Call:
        if not self.has_session_info:
            raise BadRequest(
                f"Session information needs api-version {' or '.join(SESSION_INFO_API_VERSIONS)}; this "
                f"client speaks {self.api_version}. Set REMOTE_KERNEL_API_VERSION to one of those to use it."
            )
        return Call("GET", "session")

    def parse_session_info(self, body: Any) -> SessionInfo:
        if not isinstance(body, dict) or not isinstance(body.get("identifier"), str):
            raise _unexpected("the session information has no identifier", body)
        return SessionInfo(
            identifier=body["identifier"],
            created_at=parse_time(body.get("createdAt")),
            last_accessed_at=parse_time(body.get("lastAccessedAt")),
            expires_at=parse_time(body.get("expireAt", body.get("expiresAt"))),
            etag=_text(body.get("etag")),
        )


class V1Wire(Wire):
    """`2024-02-02-preview` and `2024-08-02-preview`."""

    shape = "v1"

    def execute(self, code: str, timeout_seconds: int, jupyter_repr: bool = False) -> Call:
        # v1 has no Jupyter-format option: the value always comes back as JSON.
        properties = {"codeInputType": "inline", "executionType": "synchronous", "code": code,
                      "timeoutInSeconds": timeout_seconds}
        return Call("POST", "code/execute", json={"properties": properties})

    def get_execution(self, execution_id: str) -> Call:
        raise BadRequest(f"api-version {self.api_version} has no asynchronous executions to follow.")

    def parse_execution(self, body: Any, session_guid: str | None = None) -> Execution:
        if not isinstance(body, dict):
            raise _unexpected("the execution answer is not a JSON object", body)
        props = body.get("properties", body)
        if not isinstance(props, dict) or "status" not in props:
            raise _unexpected("the execution answer has no properties.status", body)
        status = _V1_STATUS.get(str(props["status"]).lower())
        if status is None:
            status = _status(props["status"], body)
        value = props["result"] if "result" in props else props.get("executionResult", "")
        return _execution(
            execution_id=props.get("id", body.get("id")), status=status,
            stdout=props.get("stdout"), stderr=props.get("stderr"), value=value,
            error=props.get("error", body.get("error")),
            duration=props.get("executionTimeInMilliseconds"), session_guid=session_guid, raw=body,
        )

    def upload(self, remote_name: str) -> tuple[Call, str]:
        return Call("POST", "files/upload"), relative_name(remote_name)

    def parse_upload(self, body: Any) -> RemoteFile:
        files, _ = self.parse_file_list(body)
        if not files:
            raise _unexpected("the upload answer lists no file", body)
        return files[0]

    def list_files(self, path: str | None) -> Call:
        if path not in (None, "", "/", DATA_ROOT, DATA_ROOT + "/"):
            raise BadRequest(
                f"Listing the folder {path!r} needs a v2 api-version ({', '.join(V2_API_VERSIONS)}); "
                f"{self.api_version} lists /mnt/data only."
            )
        return Call("GET", "files")

    def parse_file_list(self, body: Any) -> tuple[list[RemoteFile], str | None]:
        if not isinstance(body, dict) or not isinstance(body.get("value"), list):
            raise _unexpected("the file list has no value list", body)
        more = body.get("nextLink")  # the local pool pages v1 listings too; the service may
        return [self._entry(item, body) for item in body["value"]], more if isinstance(more, str) and more else None

    def file_info(self, name: str) -> Call:
        return Call("GET", f"files/{_v1_path(name)}")

    def parse_file_info(self, body: Any) -> RemoteFile:
        if isinstance(body, dict) and "value" in body:
            return self.parse_upload(body)
        return self._entry(body, body)

    def download(self, name: str) -> Call:
        return Call("GET", f"files/content/{_v1_path(name)}")

    def delete_file(self, name: str) -> Call:
        return Call("DELETE", f"files/{_v1_path(name)}")

    @staticmethod
    def _entry(item: Any, body: Any) -> RemoteFile:
        props = item.get("properties", item) if isinstance(item, dict) else None
        if not isinstance(props, dict) or not isinstance(props.get("filename"), str):
            raise _unexpected("a file entry has no properties.filename", body)
        return RemoteFile(
            name=_strip_root(props["filename"]),
            size=_whole(props.get("size")),
            modified=parse_time(props.get("lastModifiedTime")),
            content_type=_text(props.get("contentType")),
            is_directory=str(props.get("type", "file")).lower() == "directory",
        )


class V2Wire(Wire):
    """`2024-10-02-preview`, `2025-02-02-preview` and `2025-10-02-preview`."""

    shape = "v2"

    @property
    def has_jupyter_repr(self) -> bool:
        return self.api_version in JUPYTER_REPR_VERSIONS

    def execute(self, code: str, timeout_seconds: int, jupyter_repr: bool = False) -> Call:
        body: dict[str, Any] = {"codeInputType": "Inline", "executionType": "Synchronous", "code": code,
                                "timeoutInSeconds": timeout_seconds}
        if jupyter_repr and self.has_jupyter_repr:
            body["returnJupyterFormatExecutionResult"] = True
        return Call("POST", "executions", json=body)

    def get_execution(self, execution_id: str) -> Call:
        return Call("GET", f"executions/{quote(execution_id, safe='')}")

    def parse_execution(self, body: Any, session_guid: str | None = None) -> Execution:
        if not isinstance(body, dict) or "status" not in body:
            raise _unexpected("the execution answer has no status", body)
        status = _status(body["status"], body)
        result = body.get("result") or {}
        if not isinstance(result, dict):
            raise _unexpected("the execution's result is not an object", body)
        return _execution(
            execution_id=body.get("id"), status=status, stdout=result.get("stdout"),
            stderr=result.get("stderr"), value=result.get("executionResult", ""), error=body.get("error"),
            duration=result.get("executionTimeInMilliseconds"), session_guid=session_guid, raw=body,
        )

    def upload(self, remote_name: str) -> tuple[Call, str]:
        folder, base = _split(remote_name)
        return Call("POST", "files", params=_folder_param(folder)), base

    def parse_upload(self, body: Any) -> RemoteFile:
        if isinstance(body, dict) and isinstance(body.get("value"), list) and body["value"]:
            body = body["value"][0]  # tolerate a list answer
        return self._entry(body, body)

    def list_files(self, path: str | None) -> Call:
        params = {}
        if path not in (None, ""):
            folder = path if path in ("/", DATA_ROOT) else _strip_root(path).strip("/")
            params["path"] = folder or "/"
        return Call("GET", "files", params=params)

    def parse_file_list(self, body: Any) -> tuple[list[RemoteFile], str | None]:
        if not isinstance(body, dict) or not isinstance(body.get("value"), list):
            raise _unexpected("the file list has no value list", body)
        return [self._entry(item, body) for item in body["value"]], body.get("nextLink") or None

    def file_info(self, name: str) -> Call:
        folder, base = _split(name)
        return Call("GET", f"files/{quote(base, safe='')}", params=_folder_param(folder))

    def parse_file_info(self, body: Any) -> RemoteFile:
        return self.parse_upload(body)

    def download(self, name: str) -> Call:
        folder, base = _split(name)
        return Call("GET", f"files/{quote(base, safe='')}/content", params=_folder_param(folder))

    def delete_file(self, name: str) -> Call:
        folder, base = _split(name)
        return Call("DELETE", f"files/{quote(base, safe='')}", params=_folder_param(folder))

    @staticmethod
    def _entry(item: Any, body: Any) -> RemoteFile:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _unexpected("a file entry has no name", body)
        return RemoteFile(
            name=_strip_root(item["name"]),
            size=_whole(item.get("sizeInBytes")),
            modified=parse_time(item.get("lastModifiedAt")),
            content_type=_text(item.get("contentType")),
            is_directory=str(item.get("type", "file")).lower() == "directory",
        )


def wire_for(api_version: str) -> Wire:
    """The wire shape of `api_version`; a ConfigurationError names the supported ones."""
    if api_version in V1_API_VERSIONS:
        return V1Wire(api_version)
    if api_version in V2_API_VERSIONS:
        return V2Wire(api_version)
    raise ConfigurationError(
        f"api-version {api_version!r} is not one this client speaks. "
        f"Set REMOTE_KERNEL_API_VERSION to one of: {', '.join(SUPPORTED_API_VERSIONS)}."
    )


# --- errors ---------------------------------------------------------------------------------

AUTH_CHECKLIST = (
    "For a hosted pool, check that the identity has the role 'Azure ContainerApps Session Executor' "
    "on the session pool (new assignments take a minute or two to apply) and that the token's "
    "audience is https://dynamicsessions.io (scope https://dynamicsessions.io/.default)."
)


def parse_error(body: bytes, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The pool's error code and message, from `{"error": {...}}` and `x-ms-error-code`."""
    code = headers.get("x-ms-error-code") or None
    message = None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return code, None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            code = code or (error.get("code") if isinstance(error.get("code"), str) else None) or None
            if isinstance(error.get("message"), str):
                message = error["message"]
        elif isinstance(error, str):
            message = error
        if message is None and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    return code, message


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, doing: str,
                        auth_hint: str = "", missing: str | None = None) -> SessionsError:
    """The error for a non-2xx answer.

    `doing` names the operation ("uploading 'a.csv'"); `missing` says what a bare 404 means for
    it: "file" or "session" (None: nothing in particular, so a bare 404 is unexpected).
    """
    code, message = parse_error(body, headers)
    said = f": {message}" if message else ""
    kwargs: dict[str, Any] = {"status_code": status, "code": code}
    if status in (401, 403):
        why = "refused the credentials (401)" if status == 401 else "denied access (403)"
        return RemoteAuthenticationError(
            f"{sentence(doing)} failed: the pool {why}{said}. {auth_hint} {AUTH_CHECKLIST}".replace("  ", " "),
            **kwargs)
    if status == 429 or code == "SessionsCountExceedsLimit":
        return PoolFull(
            f"{sentence(doing)} failed: the pool has no room for another session ({status}{said}). Wait for idle "
            "sessions to cool down, delete sessions you no longer need, or raise the pool's maximum "
            "number of sessions (--max-sessions for the local pool).", **kwargs)
    if code == "SessionWithIdentifierNotFound" or (status == 404 and missing == "session" and code is None):
        return SessionNotFound(
            f"{sentence(doing)} failed: the pool has no session with this identifier{said}. It expired after "
            "its cooldown or was deleted; the next execution starts a fresh one.", **kwargs)
    if code == "ExecutionNotFound":
        return SessionLost(
            f"{sentence(doing)} failed: the pool no longer knows this execution{said}. The session was "
            "probably lost (deleted or recreated); its state is gone.", **kwargs)
    if code == "FileNotFound" or (status == 404 and missing == "file" and code is None):
        return RemoteFileNotFound(
            f"{sentence(doing)} failed: no such file in /mnt/data{said}. List the session's files to see "
            "their names.", **kwargs)
    if status == 413:
        return PayloadTooLarge(
            f"{sentence(doing)} failed: the file is larger than the pool accepts{said}. Hosted pools take "
            "up to 128 MB per upload; the local pool's limit is its --max-upload.", **kwargs)
    if status == 400 or code in ("UnsupportedApiVersion", "InvalidIdentifier"):
        hint = ""
        if code == "UnsupportedApiVersion":
            hint = " Set REMOTE_KERNEL_API_VERSION to a version the pool supports."
        elif code == "InvalidIdentifier":
            hint = " Use 4-128 letters, digits or -_|&^%$#(){}[];<> (a uuid4 always works)."
        return BadRequest(
            f"{sentence(doing)} failed: the pool rejected the request ({status}{said}).{hint}", **kwargs)
    if status in (502, 503, 504):
        return ServiceUnavailable(
            f"{sentence(doing)} failed: the pool is unavailable ({status}{said}) and stayed so through every "
            "retry. Try again later; check the pool's health.", **kwargs)
    if status == 404:
        return UnexpectedResponse(
            f"{sentence(doing)} failed: the pool answered 404{said} ({snippet(body)}). Check "
            "POOL_MANAGEMENT_ENDPOINT; hosted pools may also answer 404 when they reach their maximum "
            "number of sessions.", **kwargs)
    return UnexpectedResponse(
        f"{sentence(doing)} failed: the pool answered {status}, which this client does not expect "
        f"({snippet(body)}).", **kwargs)


def snippet(body: bytes | str | Any, limit: int = 200) -> str:
    """The first bytes of a body, for an error message."""
    if isinstance(body, bytes):
        text = body[:limit].decode("utf-8", errors="replace")
        total = len(body)
    elif isinstance(body, str):
        text, total = body[:limit], len(body)
    else:
        dumped = json.dumps(body, default=str)
        text, total = dumped[:limit], len(dumped)
    if not text:
        return "empty body"
    return f"body starts {text!r}" + ("…" if total > limit else "")


def unparseable(doing: str, status: int, body: bytes, why: str) -> UnexpectedResponse:
    """The error for a 2xx answer whose body this client cannot read."""
    return UnexpectedResponse(
        f"{sentence(doing)} failed: the pool answered {status} but {why} ({snippet(body)}). Check that "
        "POOL_MANAGEMENT_ENDPOINT is a session pool's management endpoint.", status_code=status)


# --- helpers of the shapes ------------------------------------------------------------------

_V1_STATUS = {"success": ExecutionStatus.SUCCEEDED, "succeeded": ExecutionStatus.SUCCEEDED,
              "failure": ExecutionStatus.FAILED, "failed": ExecutionStatus.FAILED}
_V2_STATUS = {s.value.lower(): s for s in ExecutionStatus} | {"success": ExecutionStatus.SUCCEEDED,
                                                               "failure": ExecutionStatus.FAILED}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: a traceback's last line: the exception's (dotted) class name, then `: message` if it has one
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")


def _status(value: Any, body: Any) -> ExecutionStatus:
    status = _V2_STATUS.get(str(value).lower())
    if status is None:
        raise _unexpected(f"the execution status {value!r} is unknown", body)
    return status


def _execution(*, execution_id: Any, status: ExecutionStatus, stdout: Any, stderr: Any, value: Any,
               error: Any, duration: Any, session_guid: str | None, raw: dict[str, Any]) -> Execution:
    stdout = stdout if isinstance(stdout, str) else ""
    stderr = stderr if isinstance(stderr, str) else ""
    execution = Execution(id=str(execution_id) if execution_id is not None else None, status=status,
                          stdout=stdout, stderr=stderr, session_guid=session_guid, raw=raw,
                          duration_ms=_milliseconds(duration))
    if status.is_terminal:
        image = _image(value)
        if image is not None:
            execution.image = image
        elif value != "":
            execution.result, execution.has_result = value, True
    if status is ExecutionStatus.FAILED or (status is ExecutionStatus.CANCELED and error):
        execution.error = _error(error, stderr, status)
    return execution


def _whole(value: Any) -> int | None:
    """A whole number from the wire, or None for anything else (a pool's string, list or bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _milliseconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        return None


def _image(value: Any) -> ImageResult | None:
    if not (isinstance(value, dict) and value.get("type") == "image" and isinstance(value.get("base64_data"), str)):
        return None
    try:
        data = base64.b64decode(value["base64_data"], validate=False)
    except (binascii.Error, ValueError):
        return None
    return ImageResult(format=str(value.get("format") or "png"), data=data)


def _error(error: Any, stderr: str, status: ExecutionStatus) -> ExecutionError:
    """The structured error (v2), else the exception named by the traceback's last line (v1)."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]  # an ErrorResponse, as the official documents give it (older pools: one level)
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        return ExecutionError(name=str(error.get("code") or "Error"), message=str(error.get("message") or ""),
                              traceback=stderr)
    name, message = traceback_exception(stderr)
    if name is None:
        name = "Canceled" if status is ExecutionStatus.CANCELED else "Error"
        message = message or "the code failed without an error message"
    return ExecutionError(name=name, message=message, traceback=stderr)


def traceback_exception(text: str) -> tuple[str | None, str]:
    """(exception name, message) from a traceback's last line, e.g. `ZeroDivisionError: division by zero`;
    (None, the line) when the last line names no exception. The one parser of that line (the kernel's
    `outputs.failure` reads a remote traceback with it too)."""
    lines = [line for line in _ANSI.sub("", text).splitlines() if line.strip()]
    if not lines:
        return None, ""
    last = lines[-1].strip()
    match = EXCEPTION_LINE.match(last)
    if match and (":" in last or match.group(1)[:1].isupper()):
        return match.group(1), (match.group(2) or "").strip()
    return None, last


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as the service writes it (`Z`, up to 7 fraction digits); None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _strip_root(name: str) -> str:
    if name.startswith(DATA_ROOT + "/"):
        return name[len(DATA_ROOT) + 1:]
    return name


def _split(name: str) -> tuple[str, str]:
    """(folder, base name) of a name relative to /mnt/data; the folder is '' for the root."""
    folder, _, base = relative_name(name).rpartition("/")
    if not base:
        raise BadRequest(f"{name!r} names a folder, not a file.")
    return folder, base


def _folder_param(folder: str) -> dict[str, str]:
    return {"path": folder} if folder else {}


def _v1_path(name: str) -> str:
    return quote(relative_name(name), safe="/")


def sentence(text: str) -> str:
    """`text` with its first letter capitalised, to start a sentence."""
    return text[:1].upper() + text[1:]


def _unexpected(why: str, body: Any) -> UnexpectedResponse:
    return UnexpectedResponse(f"The pool's answer is not what the contract describes: {why} ({snippet(body)}).")
