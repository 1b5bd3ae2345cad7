"""The pieces of Jupyter messages: streams, errors, replies, image bundles (`render.py` orders them).

Pure functions: they return `(msg_type, content)` pairs and reply contents. The rules:

- a failure → exactly one `error` (its traceback is not repeated as stderr) and an error reply;
- a transport problem → one `error` whose ename is the class from the sessions error tree;
- an image → `image/png` (or its format) with a `text/plain` stand-in.
"""
from __future__ import annotations

import base64
import re
from typing import Any

from remote_kernel.contract import EXECUTION_LIMIT
from remote_kernel.sessions.models import Execution, ExecutionError, SessionsError
from remote_kernel.sessions.wire import traceback_exception

Message = tuple[str, dict[str, Any]]

# The first line of a remote traceback: IPython's verbose header, the plain interpreter's, or IPython's
# line for SystemExit (after which IPython warns "To exit: use 'exit'…" on stderr: not the traceback).
_TRACEBACK_START = re.compile(  # (the header may be coloured: ANSI codes around the dashes; it may follow
    # stderr the code left without a line end)
    r"(?:(?:\x1b\[[0-9;]*m)?-{20,}(?:\x1b\[[0-9;]*m)?\n(?=\S+ +Traceback \(most recent call last\))"
    r"|^Traceback \(most recent call last\):"
    r"|^An exception has occurred, use %tb to see the full traceback\.$)",
    re.MULTILINE,
)

#: What the kernel does about a failure, added to the client's message (which says what to fix).
_ADVICE: dict[str, str] = {
    "SessionNotFound": "The session is gone; the next cell starts a new one.",
    "SessionLost": "The remote state was lost; the next cell starts a new session.",
    "ExecutionTimeout": "The cell ran past its time limit (REMOTE_KERNEL_TIMEOUT; a hosted pool caps one "
                        f"execution at {EXECUTION_LIMIT:g} s). Start the cell with %%long to run it in the session's background "
                        "past that cap, or split the work into shorter cells.",
}


def stream(name: str, text: str) -> Message:
    return "stream", {"name": name, "text": text}


def error(ename: str, evalue: str, traceback: list[str] | None = None) -> Message:
    """An `error` message; the traceback always has at least one line (some frontends show nothing else)."""
    lines = list(traceback or []) or [f"{ename}: {evalue}" if evalue else ename]
    return "error", {"ename": ename, "evalue": evalue, "traceback": lines}


def error_reply(message: Message, execution_count: int, *, payload: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The execute reply that goes with an `error` message (nbclient reads the reply, papermill the output),
    with ipykernel's keys: no user expressions after an error, the payloads of what ran before it."""
    content = message[1]
    return {"status": "error", "execution_count": execution_count, "ename": content["ename"],
            "evalue": content["evalue"], "traceback": content["traceback"], "user_expressions": {},
            "payload": payload or []}


def ok_reply(execution_count: int, *, payload: list[dict[str, Any]] | None = None,
             user_expressions: dict[str, Any] | None = None) -> dict[str, Any]:
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
    line = _error_line(stderr, err)
    if line:
        return stderr[:line], stderr[line:]
    return "", stderr  # no recognisable header: keep it all in the one error


_CARET_LINE = re.compile(r"(?:^|\n)[ \t]*\^+[ \t]*\n\Z")
_V8_SOURCE = re.compile(r"(?:^|\n)([^\n]+:\d+\n[^\n]*\n[ \t]*\^+[ \t]*\n\n)\Z")  # "file:line / source / ^^^"


def _error_line(stderr: str, err: ExecutionError) -> int | None:
    """Where an error without Python's traceback header starts in stderr (Node.js: its `Name: message`
    line and stack, or V8's source header before a SyntaxError), so that the code's own stderr
    before it is a stream of its own; None when it cannot be told (IPython's syntax errors, whose
    source lines come before the name, stay whole)."""
    if not err.name or not stderr:
        return None
    first = err.message.split("\n", 1)[0]
    line = re.compile(rf"^{re.escape(err.name)}(?::? {re.escape(first)}[ \t]*|:.*)?$" if first else
                      rf"^{re.escape(err.name)}(?::.*)?$", re.MULTILINE)
    matches = list(line.finditer(stderr))
    found = matches[-1] if matches else None
    if found is None:
        return None
    before = stderr[:found.start()]
    source = _V8_SOURCE.search(before)
    if source is not None:
        return source.start(1)
    return None if _CARET_LINE.search(before) else found.start()


def failure(execution: Execution) -> tuple[str, Message]:
    """The stderr that belongs to the code, and the one `error` message for a failed execution."""
    err = execution.error or ExecutionError(name="", message="")
    own_stderr, tb_text = split_traceback(execution.stderr, err)
    if not tb_text.strip() and err.traceback:
        tb_text = err.traceback
    name, message = traceback_exception(tb_text) if tb_text else (None, "")
    parsed = (name.rsplit(".", 1)[-1], message) if name else None  # the class's own name, as IPython's ename
    ename = err.name or (parsed[0] if parsed else "") or "RemoteError"
    evalue = err.message if err.message else (parsed[1] if parsed and parsed[0] == ename else "")
    lines = tb_text.rstrip("\n").splitlines() if tb_text.strip() else []
    if ename in _ADVICE and ename in ("ExecutionTimeout", "SessionLost"):
        lines.append(_ADVICE[ename])
    return own_stderr, error(ename, evalue, lines)


def image_bundle(fmt: str, data: bytes) -> dict[str, Any]:
    mime = f"image/{'jpeg' if fmt.lower() in ('jpg', 'jpeg') else fmt.lower()}"
    if mime == "image/svg":
        return {"image/svg+xml": data.decode("utf-8", "replace"), "text/plain": "<Figure>"}
    return {mime: base64.b64encode(data).decode("ascii"), "text/plain": "<Figure>"}


def transport_error(exc: BaseException) -> Message:
    """One `error` for a failure to talk to the pool, named after the class in the sessions error tree."""
    ename = type(exc).__name__
    evalue = str(exc) or ename
    lines = [f"{ename}: {evalue}"]
    advice = next((_ADVICE[cls.__name__] for cls in type(exc).__mro__ if cls.__name__ in _ADVICE), None)
    if isinstance(exc, SessionsError) and advice and advice not in evalue:
        lines.append(advice)
    return error(ename, evalue, lines)


def interrupted(name: str = "KeyboardInterrupt",
                message: str = "the cell was interrupted; the session and its state are kept") -> Message:
    """The error of a cell the user interrupted, in the words of its language (Languages.interrupted)."""
    return error(name, message, [f"{name}: {message}"])
