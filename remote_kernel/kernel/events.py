"""What a cell produced, as typed events, and the wire grammar they travel in: written once, here.

The rich shim (`rich_shim.py`, which runs in the session and must stay standalone source) writes
the same names; tests/test_kernel_units.py checks that its constants agree with these.

**Markers.** The shim cuts a cell's stdout with markers `\\x1erk<nonce>:<cell>:<token>\\x1e`
(`MARK_START`, `MARK_END`), where the token is

- `j<bundle JSON>` (`INLINE`): an output travelling inline (JSON never holds a raw \\x1e);
- a line number of the cell's file `FOLDER/<nonce>-<cell>.jsonl`: an output too large to travel
  inline, one JSON object a line;
- `r` (`RESULT_PLACE`): the plain result's place (it travels in the contract's result slot);
- `c`/`w` (`CLEAR`, `CLEAR_WAIT`): clear_output(), clear_output(wait=True);
- `e<n>.<p>` (`FLUSH`): a flush of stderr: the cell's stdout up to its p-th character, then its
  stderr up to its n-th, are shown here (the answer carries the two streams apart).

**Items.** An output is a JSON object whose `type` is one of `ITEM_TYPES`: display, update, result
(a rich result), page (IPython's pager), error (a display's formatter failed), or, from the back
channel (`back_channel_shim.py`), comm and input. `decode_item` is the one dispatch on `type`;
adding an output kind is one branch there and one in `render.Renderer.show`.

The events are frozen dataclasses; `OutputEvent` is their union.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

# --- the wire grammar (rich_shim.py writes the same) ------------------------------------------------

MARK_START = "\x1erk"  # a marker: MARK_START <nonce> ":" <cell> ":" <token> MARK_END
MARK_END = "\x1e"
INLINE = "j"  # token prefix: the bundle's JSON follows
RESULT_PLACE = "r"  # token: the plain result's place
CLEAR = "c"  # token: clear_output()
CLEAR_WAIT = "w"  # token: clear_output(wait=True)
FLUSH = "e"  # token prefix: e<stderr position>.<stdout position>
FOLDER = ".remote_kernel"  # the shim's hidden folder under /mnt/data (cells' files, the live log, stdin)

DISPLAY, UPDATE, RESULT, PAGE, ERROR = "display", "update", "result", "page", "error"
COMM, INPUT = "comm", "input"  # the back channel's (back_channel_shim.py): events for the kernel, not outputs
ITEM_TYPES = (DISPLAY, UPDATE, RESULT, PAGE, ERROR, COMM, INPUT)
BACK_CHANNEL_TYPES = (COMM, INPUT)

MARK = re.compile(rf"{MARK_START}([0-9a-f]{{8}}):([^{MARK_END}:]{{0,24}}):([^{MARK_END}]*){MARK_END}", re.DOTALL)
#: what may be the start of a marker cut by the end of a text
MARK_PREFIX = re.compile(rf"{MARK_END}(?:r(?:k(?:[0-9a-f]{{0,8}}(?::[^{MARK_END}]*)?)?)?)?\Z", re.DOTALL)
FLUSH_TOKEN = re.compile(rf"{FLUSH}(\d{{1,12}})\.(\d{{1,12}})")
_MIME = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[\w.+-]{1,127}")

Bundle = dict[str, Any]  # a MIME bundle, or a message's metadata or transient


# --- the events ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """Text the cell wrote to stdout or stderr."""

    name: Literal["stdout", "stderr"]
    text: str


@dataclass(frozen=True)
class Shown:
    """A MIME bundle for the page. `late`: produced after the cell's code ended (a figure left open)."""

    data: Bundle
    metadata: Bundle = field(default_factory=dict)
    transient: Bundle = field(default_factory=dict)
    late: bool = False
    size: int = 0


@dataclass(frozen=True)
class Display(Shown):
    """display(): a new output."""


@dataclass(frozen=True)
class Update(Shown):
    """update_display(): a new bundle for the display of `transient["display_id"]`."""


@dataclass(frozen=True)
class Result:
    """The cell's rich result (every MIME type its formatters gave)."""

    data: Bundle
    metadata: Bundle = field(default_factory=dict)
    late: bool = False
    size: int = 0


@dataclass(frozen=True)
class ResultPlace:
    """Where the plain result goes: its text travels in the execution's result slot."""


@dataclass(frozen=True)
class Clear:
    """clear_output(wait=...)."""

    wait: bool


@dataclass(frozen=True)
class Page:
    """IPython's pager: not a message, a page of the reply's payload (the cell's last one)."""

    data: Bundle
    start: int = 0
    size: int = 0


@dataclass(frozen=True)
class Error:
    """An error output: a display's formatter or an end-of-cell hook failed (the cell goes on, as on ipykernel)."""

    ename: str
    evalue: str
    traceback: list[str]
    late: bool = False
    size: int = 0


@dataclass(frozen=True)
class Event:
    """One message of the session's back channel: a comm message or an input request (`comms.py` checks it)."""

    type: str  # one of BACK_CHANNEL_TYPES
    body: dict[str, Any]
    size: int = 0


@dataclass(frozen=True)
class Note:
    """An output that could not be shown, and why (a short note on stderr)."""

    text: str


OutputEvent = Stream | Display | Update | Result | ResultPlace | Clear | Page | Error | Event | Note


# --- decoding one item --------------------------------------------------------------------------------

class Malformed(ValueError):
    """One output that cannot be shown; the reason goes into a short note."""


def parse_json(text: str | bytes) -> Any:
    """JSON, or Malformed (a number too long, nesting too deep, not JSON at all)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"unreadable output data ({type(exc).__name__})") from None


def decode_item(item: Any, size: int) -> Display | Update | Result | Page | Error | Event:
    """The event of one JSON item (inline or a line of the cell's file): the one dispatch on `type`;
    Malformed when the item is none."""
    if not isinstance(item, dict):
        raise Malformed("an output that is not a JSON object")
    kind = item.get("type", DISPLAY)
    if kind in BACK_CHANNEL_TYPES:
        return Event(kind, item, size)
    if kind == ERROR:
        return _error(item, size)
    if kind not in (DISPLAY, UPDATE, RESULT, PAGE):
        raise Malformed("an output without a known type or a MIME bundle")
    data, metadata, transient = _bundle(item)
    late = bool(item.get("late"))
    if kind == PAGE:
        start = item.get("start", 0)
        if not (isinstance(start, int) and not isinstance(start, bool) and start >= 0):
            raise Malformed("a page whose start is not a line number")
        return Page(data, start, size)
    if kind == RESULT:
        return Result(data, metadata, late, size)
    if kind == UPDATE:
        if not transient.get("display_id"):
            raise Malformed("an update without a display_id")
        return Update(data, metadata, transient, late, size)
    return Display(data, metadata, transient, late, size)


def _bundle(item: dict[str, Any]) -> tuple[Bundle, Bundle, Bundle]:
    """An item's checked data, metadata and transient."""
    data = item.get("data")
    if not isinstance(data, dict) or not data:
        raise Malformed("an output without a known type or a MIME bundle")
    for mime, value in data.items():
        if not _MIME.fullmatch(mime) or not (isinstance(value, (str, dict, list))):
            raise Malformed(f"an output with an unusable MIME entry {mime[:40]!r}")
    metadata, transient = (item.get(name) or {} for name in ("metadata", "transient"))
    if not isinstance(metadata, dict) or not isinstance(transient, dict):
        raise Malformed("an output whose metadata is not an object")
    if "display_id" in transient and not isinstance(transient["display_id"], str):
        raise Malformed("an output with a display_id that is not a string")
    return data, metadata, transient


def _error(item: dict[str, Any], size: int) -> Error:
    ename, evalue, lines = item.get("ename"), item.get("evalue"), item.get("traceback")
    if not (isinstance(ename, str) and isinstance(evalue, str) and isinstance(lines, list)
            and all(isinstance(line, str) for line in lines)):
        raise Malformed("an error output without a name, a value and traceback lines")
    return Error(ename[:200], evalue, list(lines), bool(item.get("late")), size)


def decode_file(content: bytes) -> dict[int, Display | Update | Result | Page | Error | Event | str]:
    """The items of a cell's file of large outputs: JSON lines, numbered from 0 (a line that is not an
    item maps to why; a torn last line is left out)."""
    found: dict[int, Display | Update | Result | Page | Error | Event | str] = {}
    lines = content.split(b"\n")
    for index, line in enumerate(lines[:-1] if not content.endswith(b"\n") else lines):
        if not line.strip():
            continue
        try:
            found[index] = decode_item(parse_json(line), len(line))
        except Malformed as bad:
            found[index] = str(bad)
    return found
