"""What the pool reads from a session's worker, parsed strictly: a worker is untrusted input.

Session code can write on the worker's reply pipe, and it can learn the id of the running execution
(a Python cell runs in the worker's own process; a Shell session's background process can reopen the
pipe through /proc). So a reply with the right id may still be forged: every line is parsed here as
strict JSON (no NaN or Infinity, which no worker writes and which the pool could not answer with), and
every field of a reply is checked for its type and size before anything else reads it. A line that
fails raises BadLine with what was wrong; the session then treats its worker as misbehaving.

Written by hand rather than with a schema library: the checks are few, and the size of a result is
measured while walking it (its memory in the pool, which a JSON schema does not give).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 100  # nesting of a result: deeper ones could not be answered (JSON encoders recurse)
#: brackets in one line: a reply holds at most ~2 M in its streams (1 MiB each) and ~3 M in an 8 MiB result; a line
#: of 8 M empty lists would take ~660 MiB while it is parsed (counted before parsing, at C speed)
MAX_BRACKETS = 4_000_000
MAX_RESULT_HELD = 64 << 20  # bytes a result may take in the pool's memory as values; past it, a note instead
MAX_NAME = 200  # characters of an error's name
MAX_MESSAGE = 10_000  # characters of an error's message


class BadLine(ValueError):
    """A line from a worker that the pool does not accept; the message says what was wrong."""


def _no_constant(name: str) -> Any:
    raise BadLine(f"it wrote {name}, which is not JSON")


def parse_line(line: bytes | bytearray) -> dict[str, Any]:
    """One line as a JSON object, strictly (BadLine otherwise)."""
    brackets = line.count(b"[") + line.count(b"{")
    if brackets > MAX_BRACKETS:
        raise BadLine(f"it wrote a line with {brackets} brackets, more values than any reply holds")
    try:
        message = json.loads(line, parse_constant=_no_constant)
    except BadLine:
        raise
    except (ValueError, RecursionError):
        raise BadLine("it wrote a line that is not JSON") from None
    if not isinstance(message, dict):
        raise BadLine("it wrote a line that is not a JSON object")
    return message


@dataclass(frozen=True)
class Reply:
    """A worker's reply to one execute, checked."""

    stdout: str
    stderr: str
    result: Any
    error_name: str | None
    error_message: str | None
    ms: float | None
    size: int  # bytes the reply's fields hold in the pool's memory


def held_bytes(value: Any) -> int:
    """The bytes a JSON value holds in memory (str by its real width, containers with their items),
    walked without recursion; BadLine for a value nested deeper than MAX_DEPTH. A walk over a result of
    millions of values takes a second: `reply_of` runs it in a thread when the result is a container."""
    if not isinstance(value, (list, dict)):
        return sys.getsizeof(value)
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        total += sys.getsizeof(item)
        if isinstance(item, (list, dict)):
            if depth >= MAX_DEPTH:
                raise BadLine(f"its result is nested deeper than {MAX_DEPTH} levels")
            children = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            for key, child in children:
                if key is not None:
                    total += sys.getsizeof(key)
                stack.append((child, depth + 1))
    return total


def reply_of(message: dict[str, Any], stream_limit: int) -> Reply:
    """Check a reply's fields (its id was already matched); BadLine names the first wrong one.

    `stream_limit`: the most bytes a stream may hold (the worker's cap, its truncation line and slack)."""
    streams: dict[str, str] = {}
    for stream in ("stdout", "stderr"):
        text = message.get(stream) or ""
        if not isinstance(text, str):
            raise BadLine(f"its reply's {stream} is not a string")
        if len(text) > stream_limit:  # characters ≤ UTF-8 bytes: a cheap first check, then the exact one
            if len(text.encode("utf-8", "surrogatepass")) > stream_limit:
                raise BadLine(f"its reply's {stream} is over the {stream_limit} bytes a stream may hold")
        streams[stream] = text
    ms = message.get("ms")
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms)
                           or ms < 0 or ms > 1e12):
        raise BadLine("its reply's ms is not a duration in milliseconds")
    error = message.get("error")
    name: str | None = None
    text_message: str | None = None
    if isinstance(error, dict):
        name, text_message = error.get("name") or "Error", error.get("message", "")
        if not isinstance(name, str) or not isinstance(text_message, str):
            raise BadLine("its reply's error has a name or message that is not a string")
        name, text_message = name[:MAX_NAME], text_message[:MAX_MESSAGE]
    elif isinstance(error, str):
        name, text_message = ("Error", error[:MAX_MESSAGE]) if error else (None, None)
    elif error not in (None, False):
        raise BadLine("its reply's error is neither null, a string nor an object")
    if "ok" in message and not isinstance(message["ok"], bool):
        raise BadLine("its reply's ok is not true or false")
    result = message.get("result", "")
    held = held_bytes(result)
    if held > MAX_RESULT_HELD:  # a worker keeps its result's JSON under 8 MiB, but its values can weigh more
        result = (f"[the result takes {held / (1 << 20):.0f} MiB of the pool's memory as values, over its "
                  f"{MAX_RESULT_HELD >> 20} MiB: return a smaller value, or write it to a file in /mnt/data and "
                  "download it]")
        held = sys.getsizeof(result)
    size = sys.getsizeof(streams["stdout"]) + sys.getsizeof(streams["stderr"]) + held
    return Reply(streams["stdout"], streams["stderr"], result, name, text_message,
                 float(ms) if ms is not None else None, size)
