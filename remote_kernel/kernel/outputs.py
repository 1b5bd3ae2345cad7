"""An `Execution` (or a failure to get one) → the Jupyter messages that show it.

Pure functions: they return `(msg_type, content)` pairs and reply contents; the kernel sends
them. The rules:

- stdout and stderr → `stream`;
- the trailing value → one `execute_result` with `text/plain`;
- an image → `display_data` with `image/png` (or its format) and a `text/plain` stand-in;
- a failure → exactly one `error` (its traceback is not repeated as stderr) and an error reply;
- a transport problem → one `error` whose ename is the class from the sessions error tree.
"""
from __future__ import annotations

import base64
import json
import re
from typing import Any, Callable

from remote_kernel.sessions.models import Execution, ExecutionError, SessionsError

Message = tuple[str, dict[str, Any]]

# The first line of a remote traceback: IPython's verbose header or the plain interpreter's.
_TRACEBACK_START = re.compile(  # (the header may be coloured: ANSI codes around the dashes)
    r"^(?:(?:\x1b\[[0-9;]*m)?-{20,}(?:\x1b\[[0-9;]*m)?\n(?=\S+ +Traceback \(most recent call last\))"
    r"|Traceback \(most recent call last\):)",
    re.MULTILINE,
)
_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")

#: What the kernel does about a failure, added to the client's message (which says what to fix).
_ADVICE: dict[str, str] = {
    "SessionNotFound": "The session is gone; the next cell starts a new one.",
    "SessionLost": "The remote state was lost; the next cell starts a new session.",
    "ExecutionTimeout": "The cell ran past its time limit (REMOTE_KERNEL_TIMEOUT, at most 220 s); "
                        "split the work into shorter cells.",
}


def stream(name: str, text: str) -> Message:
    return "stream", {"name": name, "text": text}


def error(ename: str, evalue: str, traceback: list[str] | None = None) -> Message:
    """An `error` message; the traceback always has at least one line (some frontends show nothing else)."""
    lines = list(traceback or []) or [f"{ename}: {evalue}" if evalue else ename]
    return "error", {"ename": ename, "evalue": evalue, "traceback": lines}


def error_reply(message: Message, execution_count: int) -> dict[str, Any]:
    """The execute reply that goes with an `error` message (nbclient reads the reply, papermill the output)."""
    content = message[1]
    return {"status": "error", "execution_count": execution_count, "ename": content["ename"],
            "evalue": content["evalue"], "traceback": content["traceback"]}


def ok_reply(execution_count: int, *, payload: list | None = None,
             user_expressions: dict | None = None) -> dict[str, Any]:
    return {"status": "ok", "execution_count": execution_count, "payload": payload or [],
            "user_expressions": user_expressions or {}}


def split_traceback(stderr: str, err: ExecutionError) -> tuple[str, str]:
    """Separate what the code wrote to stderr from the traceback that ends a failed execution."""
    starts = list(_TRACEBACK_START.finditer(stderr))
    if starts:
        at = starts[-1].start()
        return stderr[:at], stderr[at:]
    tail = (err.traceback or "").strip()
    if tail and tail != stderr.strip() and tail in stderr:
        at = stderr.rfind(tail)
        return stderr[:at], stderr[at:]
    return "", stderr  # no recognisable header: keep it all in the one error


def parse_exception_line(traceback: str) -> tuple[str, str] | None:
    """The exception class and message from a traceback's last meaningful line."""
    for line in reversed(traceback.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        match = _LAST_LINE.match(line)
        if match and (match.group(2) is not None or match.group(1)[:1].isupper()):
            return match.group(1).rsplit(".", 1)[-1], match.group(2) or ""
        return None
    return None


def failure(execution: Execution) -> tuple[str, Message]:
    """The stderr that belongs to the code, and the one `error` message for a failed execution."""
    err = execution.error or ExecutionError(name="", message="")
    own_stderr, tb_text = split_traceback(execution.stderr, err)
    if not tb_text.strip() and err.traceback:
        tb_text = err.traceback
    parsed = parse_exception_line(tb_text) if tb_text else None
    ename = err.name or (parsed[0] if parsed else "") or "RemoteError"
    evalue = err.message if err.message else (parsed[1] if parsed and parsed[0] == ename else "")
    lines = tb_text.rstrip("\n").splitlines() if tb_text.strip() else []
    if ename in _ADVICE and ename in ("ExecutionTimeout", "SessionLost"):
        lines.append(_ADVICE[ename])
    return own_stderr, error(ename, evalue, lines)


def _text_plain(value: Any, jupyter_repr: bool, format_value: Callable[[Any], str]) -> str | None:
    """The `text/plain` of a result; None when there is nothing to show (like IPython's None)."""
    if jupyter_repr and isinstance(value, str):
        return value or None  # already the interpreter's display repr
    if value is None:
        return None
    return format_value(value)


def image_bundle(fmt: str, data: bytes) -> dict[str, Any]:
    mime = f"image/{'jpeg' if fmt.lower() in ('jpg', 'jpeg') else fmt.lower()}"
    if mime == "image/svg":
        return {"image/svg+xml": data.decode("utf-8", "replace"), "text/plain": "<Figure>"}
    return {mime: base64.b64encode(data).decode("ascii"), "text/plain": "<Figure>"}


def messages_for(execution: Execution, execution_count: int, *, jupyter_repr: bool = False,
                 format_value: Callable[[Any], str] = repr) -> tuple[list[Message], Message | None]:
    """The IOPub messages that show `execution`, and its `error` message when it failed (also in the list)."""
    messages: list[Message] = []
    if execution.stdout:
        messages.append(stream("stdout", execution.stdout))
    if execution.failed or execution.error is not None:
        own_stderr, err = failure(execution)
        if own_stderr:
            messages.append(stream("stderr", own_stderr))
        messages.append(err)
        return messages, err
    if execution.stderr:
        messages.append(stream("stderr", execution.stderr))
    if execution.image is not None:
        messages.append(("display_data", {"data": image_bundle(execution.image.format, execution.image.data),
                                          "metadata": {}, "transient": {}}))
    if execution.has_result:
        text = _text_plain(execution.result, jupyter_repr, format_value)
        if text is not None:
            messages.append(("execute_result", {"execution_count": execution_count,
                                                "data": {"text/plain": text}, "metadata": {}}))
    if execution.status.value == "Canceled":
        err = error("KeyboardInterrupt", "the execution was canceled")
        messages.append(err)
        return messages, err
    return messages, None


def transport_error(exc: BaseException) -> Message:
    """One `error` for a failure to talk to the pool, named after the class in the sessions error tree."""
    ename = type(exc).__name__
    evalue = str(exc) or ename
    lines = [f"{ename}: {evalue}"]
    advice = next((_ADVICE[cls.__name__] for cls in type(exc).__mro__ if cls.__name__ in _ADVICE), None)
    if isinstance(exc, SessionsError) and advice and advice not in evalue:
        lines.append(advice)
    return error(ename, evalue, lines)


def interrupted() -> Message:
    return error("KeyboardInterrupt", "the cell was interrupted; the session and its state are kept",
                 ["KeyboardInterrupt: the cell was interrupted; the session and its state are kept"])
