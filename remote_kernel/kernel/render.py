"""One ordered stream of what a cell produced → Jupyter messages: the only place that builds them.

A cell's output arrives as stream text (stdout, stderr) in the order the session wrote it,
either live (the local pool's live events, or the hosted path's live log) or all at once in
the execution's answer, and then the execution's end (result, error, image). `CellRender`
takes both: `feed` for text as it comes, `finish` for the answer; what was fed live is not
shown again (the answer's streams are read from where the live text ended).

Stdout carries the rich shim's markers (`rich_shim.py`): `\\x1erk<nonce>:<cell>:<token>\\x1e`,
where the token is `j<bundle JSON>` (an output travelling inline), a line number of the
cell's file (an output too large to travel inline), `r` (the plain result in the contract's
result slot), `c`/`w` (clear_output), `e<n>.<p>` (a flush of stderr: its text up to
the n-th character is shown here, after stdout up to its p-th; the answer carries the two apart, and
these keep ipykernel's order). Only this kernel's nonce counts: anything else that looks like a marker is shown as written. A malformed marker, line or bundle loses that one output
with a short note. Every output is shown at most once, and a cell's messages stay within
CELL_BUDGET bytes (then one note says the rest is not shown).

Order: outputs produced after the cell's code ended ("late": figures left open, the rich
result) and the result are held until the end, after the cell's stderr and its error, as
ipykernel shows them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from remote_kernel.kernel import outputs
from remote_kernel.kernel.helper import HELPER_MARK
from remote_kernel.kernel.outputs import Message
from remote_kernel.sessions.models import Execution, ExecutionError

Publish = Callable[[str, dict[str, Any]], None]
Fetch = Callable[[int], Awaitable[bytes]]  # the cell's file of large outputs, by cell number

#: bytes of messages one cell may publish (streams and bundles); past it one note, then nothing
CELL_BUDGET = 64 << 20
MAX_MARK = 512 << 10  # longest marker kept waiting for its end (an inline bundle is at most 256 KiB)
NOTE = "[remote_kernel: {}]\n"
SEEN_TAIL = 16 << 10  # characters of each stream kept for the kernel's hints

_MARK = re.compile(r"\x1erk([0-9a-f]{8}):([^\x1e:]{0,24}):([^\x1e]*)\x1e", re.DOTALL)
_PREFIX = re.compile(r"\x1e(?:r(?:k(?:[0-9a-f]{0,8}(?::[^\x1e]*)?)?)?)?\Z", re.DOTALL)
_MIME = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[\w.+-]{1,127}")
# the middle line of a stream the pool's worker cut (its head and tail kept)
_TRUNCATED = re.compile(r"^\[output truncated: \d+ bytes left out here \(the first \d+ and the last \d+ are shown\)",
                        re.MULTILINE)
_FLUSH = re.compile(r"e\d{1,12}\.\d{1,12}")  # a flush of stderr: e<stderr position>.<stdout position>
_KINDS = {"display": "display_data", "update": "update_display_data", "result": "execute_result"}
PAGE = "page"  # IPython's pager: not a message, a page of the reply's payload
ERROR = "error"  # a display's formatter failed: its traceback, an error output (the cell goes on, as on ipykernel)
#: what the session's back channel sends (back_channel_shim.py): not outputs, events for the kernel (comms.py)
EVENT_KINDS = ("comm", "input")


class Malformed(ValueError):
    """One output that cannot be shown; the reason goes into a short note."""


@dataclass
class Event:
    """One message of the session's back channel: a comm message or an input request (`comms.py` checks it)."""

    type: str  # one of EVENT_KINDS
    body: dict[str, Any]
    size: int = 0


def from_item(item: Any, size: int) -> Output | Event:
    """An output, or a back channel event; Malformed when it is neither."""
    if isinstance(item, dict) and item.get("type") in EVENT_KINDS:
        return Event(item["type"], item, size)
    return Output.from_json(item, size)


@dataclass
class Output:
    """One output the session produced: a display, an update of one, or a rich result."""

    type: str  # "display", "update", "result", "error", "page" (IPython's pager: a payload of the reply)
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    transient: dict[str, Any] = field(default_factory=dict)
    late: bool = False  # produced after the cell's code ended (a figure left open, the result)
    size: int = 0
    start: int = 0  # a page's first line to show

    @classmethod
    def from_json(cls, item: Any, size: int) -> Output:
        """A checked output; Malformed when the bundle is not one."""
        if not isinstance(item, dict):
            raise Malformed("an output that is not a JSON object")
        kind = item.get("type", "display")
        if kind == ERROR:
            return cls._error(item, size)
        data = item.get("data")
        if (kind not in _KINDS and kind != PAGE) or not isinstance(data, dict) or not data:
            raise Malformed("an output without a known type or a MIME bundle")
        for mime, value in data.items():
            if not _MIME.fullmatch(mime) or not (isinstance(value, (str, dict, list))):
                raise Malformed(f"an output with an unusable MIME entry {mime[:40]!r}")
        parts = [item.get(name) or {} for name in ("metadata", "transient")]
        if not all(isinstance(part, dict) for part in parts):
            raise Malformed("an output whose metadata is not an object")
        transient = parts[1]
        if "display_id" in transient and not isinstance(transient["display_id"], str):
            raise Malformed("an output with a display_id that is not a string")
        if kind == "update" and not transient.get("display_id"):
            raise Malformed("an update without a display_id")
        start = item.get("start", 0)
        if kind == PAGE and not (isinstance(start, int) and not isinstance(start, bool) and start >= 0):
            raise Malformed("a page whose start is not a line number")
        return cls(kind, data, parts[0], transient, bool(item.get("late")), size, start if kind == PAGE else 0)

    @classmethod
    def _error(cls, item: dict, size: int) -> Output:
        ename, evalue, lines = item.get("ename"), item.get("evalue"), item.get("traceback")
        if not (isinstance(ename, str) and isinstance(evalue, str) and isinstance(lines, list)
                and all(isinstance(line, str) for line in lines)):
            raise Malformed("an error output without a name, a value and traceback lines")
        return cls(ERROR, {"ename": ename[:200], "evalue": evalue, "traceback": lines}, late=bool(item.get("late")),
                   size=size)

    def message(self, execution_count: int) -> Message:
        if self.type == ERROR:
            return "error", dict(self.data)
        if self.type == "result":
            return "execute_result", {"execution_count": execution_count, "data": self.data, "metadata": self.metadata}
        return _KINDS[self.type], {"data": self.data, "metadata": self.metadata, "transient": self.transient}


def parse_json(text: str | bytes) -> Any:
    """JSON, or Malformed (a number too long, nesting too deep, not JSON at all)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"unreadable output data ({type(exc).__name__})") from None


class CellRender:
    """Turns one cell's ordered output into messages, published as they come through `publish`."""

    def __init__(self, publish: Publish, execution_count: int, *, nonce: str | None = None,
                 fetch: Fetch | None = None, jupyter_repr: bool = False,
                 format_value: Callable[[Any], str] = repr, answer: Callable[[str], None] | None = None,
                 interrupted_name: str = "KeyboardInterrupt",
                 on_event: Callable[[Event], None] | None = None) -> None:
        self._publish = publish
        self._on_event = on_event  # back channel events (comms, input requests); None: dropped
        #: the shim's install travels with this cell: its answer is the first line of stdout, taken
        #: out and given to `answer` (stdout that does not start with it is the cell's own)
        self._answer = answer
        self._answer_text = ""
        self.count = execution_count
        self.nonce = nonce
        self.fetch = fetch
        self.jupyter_repr = jupyter_repr
        self.format_value = format_value
        self.interrupted_name = interrupted_name  # the error a canceled execution ends with, in its language's words
        self.consumed = {"stdout": 0, "stderr": 0}  # characters of each stream fed so far
        self.cell: int | None = None  # the shim's number of this cell (from its first marker)
        self._pending = ""  # stdout from a marker's start that may continue in the next text
        self._held: list[Output | Message | str] = []  # what comes after a late output ("r": the result's place)
        self._holding = False
        self._shown: set[int] = set()  # lines of the cell's file already shown
        self._file: dict[int, Output | Event | str] = {}  # the cell's file, parsed (a str: why a line is unusable)
        self._spent = 0
        self._over = False
        self.result_shown = False
        self.pages: list[dict[str, Any]] = []  # what IPython's pager showed: the reply's payload
        #: the last SEEN_TAIL characters of each stream shown (the kernel's hints read them)
        self.seen = {"stdout": "", "stderr": ""}
        self._answer_stderr = ""  # the answer's stderr not shown yet, while `finish` shows its stdout
        self._held_stdout: list[tuple[int, str]] = []  # ... and its stdout, by position, until a flush shows it
        self._ordering = False  # `finish` is showing the answer: stdout waits for its flush
        self._base = 0  # the position in the cell's stdout of the text being fed

    # --- text as it comes -----------------------------------------------------------------

    async def feed(self, name: str, text: str) -> None:
        """Text the session wrote to `name`, in order (stdout markers are cut out and shown)."""
        if not text:
            return
        self.consumed[name] = self.consumed.get(name, 0) + len(text)
        if name != "stdout":
            self._stream(name, text)
            return
        if self._answer is not None:
            text = self._take_answer(text)
        text, self._pending = self._pending + text, ""
        self._base = self.consumed["stdout"] - len(text)  # the position of text[0] in the cell's stdout
        at = shown = 0  # text[shown:at] is plain text not yet shown
        while (start := text.find("\x1e", at)) >= 0:
            match = _MARK.match(text, start)
            if match is None:
                rest = text[start:]
                if len(rest) <= MAX_MARK and _PREFIX.match(rest):
                    self._plain(text[shown:start], shown)
                    self._pending = rest  # may be a marker cut by the end of this text
                    return
                at = start + 1  # not a marker: shown as written
                continue
            if match.group(1) != self.nonce:
                at = match.end()  # another nonce's marker is text, as written
                continue
            self._plain(text[shown:start], shown)
            at = shown = match.end()
            await self._mark(match.group(2), match.group(3))
        self._plain(text[shown:], shown)

    def _plain(self, text: str, offset: int) -> None:
        """Stdout text at `offset` of the text being fed: shown, or held while `finish` orders the streams."""
        if not text:
            return
        if self._ordering:
            self._held_stdout.append((self._base + offset, text))
        else:
            self._stdout(text)

    def _take_answer(self, text: str) -> str:
        """Stdout without the install's answer line at its start (held while it may still be one)."""
        text, self._answer_text = self._answer_text + text, ""
        line, newline, rest = text.partition("\n")
        if not newline and (line.startswith(HELPER_MARK) or HELPER_MARK.startswith(line)):
            self._answer_text = text  # the line goes on in the next text
            return ""
        answer, self._answer = self._answer, None
        if newline and line.startswith(HELPER_MARK) and answer is not None:
            answer(line)
            return rest
        return text

    async def _mark(self, cell: str, token: str) -> None:
        try:
            if not (cell.isascii() and cell.isdigit() and len(cell) <= 9):
                raise Malformed("a marker with an unreadable cell number")
            self.cell = self.cell if self.cell is not None else int(cell)
            if not _FLUSH.fullmatch(token):
                self._release_stdout()  # an output, a clear or the result's place come after the text before them
            if token in ("c", "w"):
                self._show_or_hold(("clear_output", {"wait": token == "w"}))
            elif _FLUSH.fullmatch(token):
                stderr, stdout = token[1:].split(".")
                self._release_stdout(int(stdout))
                self._stderr_to(int(stderr))
            elif token == "r":
                self._holding = True  # the result's place: it comes with the answer
                self._held.append("r")
            elif token.startswith("j"):
                self._output(from_item(parse_json(token[1:]), len(token)))
            elif token.isascii() and token.isdigit() and len(token) <= 9:
                await self._from_file(int(token))
            else:
                raise Malformed("a marker of an unknown kind")
        except Malformed as bad:
            self._stream("stderr", NOTE.format(f"one output could not be shown: {bad}"))

    def _stderr_to(self, position: int) -> None:
        """Show the answer's stderr up to `position` (characters of the cell's stderr) before the stdout that
        follows; stderr fed live is already there."""
        count = position - self.consumed["stderr"]
        if count <= 0 or not self._answer_stderr:
            return
        text, self._answer_stderr = self._answer_stderr[:count], self._answer_stderr[count:]
        self.consumed["stderr"] += len(text)
        self._stream("stderr", text)

    def _release_stdout(self, position: int | None = None) -> None:
        """Show the answer's stdout held so far, up to its `position`-th character (None: all of it)."""
        kept = []
        for start, text in self._held_stdout:
            cut = len(text) if position is None else max(0, min(len(text), position - start))
            self._stdout(text[:cut])
            if cut < len(text):
                kept.append((start + cut, text[cut:]))
        self._held_stdout = kept

    async def _from_file(self, line: int) -> None:
        if line in self._shown:
            return  # an output is shown at most once, however often its marker is printed
        if line not in self._file and self.fetch is not None and self.cell is not None:
            try:
                self._file = parse_file(await self.fetch(self.cell))
            except Malformed:
                raise
            except Exception as exc:  # the outputs are lost, the cell's text is not
                self.fetch = None
                raise Malformed(f"the cell's large outputs could not be fetched ({exc})") from None
        found = self._file.get(line)
        if found is None:
            raise Malformed("a marker naming an output that was never written")
        if isinstance(found, str):
            raise Malformed(found)
        self._shown.add(line)
        self._output(found)

    def _output(self, output: Output | Event) -> None:
        if isinstance(output, Event):  # dispatched at once, never held: the front end's widgets need them in order
            if self._on_event is not None:
                self._on_event(output)
            return
        if output.type == PAGE:  # as ipykernel's payload pager: the last page of the cell is the reply's
            self.pages = [{"source": "page", "data": output.data, "start": output.start}]
            return
        if output.late or output.type == "result":
            self._holding = True
        if self._holding:
            self._held.append(output)
        else:
            self._show(output.message(self.count), output.size)

    def _show_or_hold(self, message: Message) -> None:
        if self._holding:
            self._held.append(message)
        else:
            self._show(message, len(message[1].get("text", "")) + 16)

    # --- the end ------------------------------------------------------------------------------

    async def finish(self, execution: Execution) -> Message | None:
        """Show the rest of the answer; returns the cell's `error` message (also published), if any.

        The answer's streams are shown from where the fed text ended. Then, in ipykernel's order:
        the code's stderr, the error, the outputs held for the end, the result.
        """
        stdout, stderr = _unshown(execution.stdout, self.consumed["stdout"]), _unshown(execution.stderr, self.consumed["stderr"])
        err: Message | None = None
        if execution.failed or execution.error is not None:
            stderr, err = outputs.failure(_with_stderr(execution, stderr, self.consumed["stderr"]))
        self._answer_stderr, self._ordering = stderr, True  # `e` markers in stdout place the two streams
        await self.feed("stdout", stdout)
        self._ordering = False
        self._release_stdout()
        stderr, self._answer_stderr = self._answer_stderr, ""
        if self._answer_text:  # a line that never ended is the cell's own text
            self._answer, text, self._answer_text = None, self._answer_text, ""
            await self.feed("stdout", text)
            self.consumed["stdout"] -= len(text)
        if self._pending:
            self._stdout(self._pending)  # an unfinished marker at the very end is text
            self._pending = ""
        self._stream("stderr", stderr)  # the code's stderr comes before what the cell left at its end
        if err is not None:
            if err[1]["ename"] == "UsageError":  # a magic's usage: IPython prints it to stderr, ipykernel sends no error
                self._stream("stderr", "".join(line + "\n" for line in err[1]["traceback"]))
            else:
                self._show(err, 0)
        for item in self._held:
            if isinstance(item, str):  # "r": the result's place (also after an error: a failed rich formatter's
                self._result(execution)  # traceback and the text/plain that did format, as ipykernel shows both)
            elif isinstance(item, Output):
                self.result_shown = self.result_shown or item.type == "result"
                self._show(item.message(self.count), item.size)
            else:
                self._show(item, len(item[1].get("text", "")) + 16)
        self._held = []
        if err is not None:
            self._result(execution)  # text/plain that formatted beside a failed rich formatter, as ipykernel shows it
            return err
        if execution.image is not None:
            self._show(("display_data", {"data": outputs.image_bundle(execution.image.format, execution.image.data),
                                         "metadata": {}, "transient": {}}), len(execution.image.data))
        if not self.result_shown:
            self._result(execution)
        if execution.status.value == "Canceled":
            err = outputs.error(self.interrupted_name, "the execution was canceled")
            self._show(err, 0)
        return err

    def _result(self, execution: Execution) -> None:
        if self.result_shown or not execution.has_result:
            return
        self.result_shown = True
        value = execution.result
        if self.jupyter_repr and isinstance(value, str):
            text = value or None  # already the interpreter's display repr
        else:
            text = None if value is None else self.format_value(value)
        if text is not None:
            self._show(("execute_result", {"execution_count": self.count, "data": {"text/plain": text},
                                           "metadata": {}}), len(text))

    # --- publishing within the budget ------------------------------------------------------------

    def _stdout(self, text: str) -> None:
        self._stream("stdout", text)

    def _stream(self, name: str, text: str) -> None:
        if text and name in self.seen:
            self.seen[name] = (self.seen[name] + text)[-SEEN_TAIL:]
        if text:
            self._show_or_hold(outputs.stream(name, text)) if name == "stdout" else \
                self._show(outputs.stream(name, text), len(text))

    def _show(self, message: Message, size: int) -> None:
        if message[0] == "error" and size == 0:
            self._publish(*message)  # the cell's verdict is always shown (a display's error counts in the budget)
            return
        if self._over:
            return
        self._spent += size
        if self._spent > CELL_BUDGET:
            self._over = True
            self._publish(*outputs.stream("stderr", NOTE.format(
                f"this cell's output passed {CELL_BUDGET >> 20} MiB; the rest is not shown (write large "
                "output to a file and %download it)")))
            return
        self._publish(*message)


def parse_file(content: bytes) -> dict[int, Output | Event | str]:
    """The outputs of a cell's file of large outputs: JSON lines, numbered from 0 (a line that is
    not an output maps to why; a torn last line is left out)."""
    found: dict[int, Output | Event | str] = {}
    lines = content.split(b"\n")
    for index, line in enumerate(lines[:-1] if not content.endswith(b"\n") else lines):
        if not line.strip():
            continue
        try:
            found[index] = from_item(parse_json(line), len(line))
        except Malformed as bad:
            found[index] = str(bad)
    return found


def _unshown(text: str, shown: int) -> str:
    """What of an answer's stream follows the `shown` characters fed live. A stream the pool cut keeps
    its head and tail: when more than its head was shown (a live log is capped on its own), the rest
    is the truncation line and the tail."""
    cut = _TRUNCATED.search(text)
    if cut is not None and shown > cut.start():
        return text[cut.start():]
    return text[shown:] if len(text) >= shown else ""


def _with_stderr(execution: Execution, stderr: str, shown: int) -> Execution:
    """The execution as `outputs.failure` reads it: only the stderr not yet shown, and a traceback
    without the `shown` characters of stderr that were shown live."""
    error = execution.error
    if error is not None and error.traceback and shown:
        before = execution.stderr[:shown]
        if error.traceback.startswith(before):
            error = ExecutionError(error.name, error.message, error.traceback[len(before):])
        elif stderr:
            error = ExecutionError(error.name, error.message, "")
    return Execution(id=execution.id, status=execution.status, stdout="", stderr=stderr, error=error)


def rendered(execution: Execution, execution_count: int, *, fed: tuple[tuple[str, str], ...] = (),
             **options: Any) -> tuple[list[Message], Message | None]:
    """What `CellRender` publishes for `execution` after the live text `fed`, and its error: for
    tools and tests that have no event loop running."""
    import asyncio

    messages: list[Message] = []
    render = CellRender(lambda kind, content: messages.append((kind, content)), execution_count, **options)

    async def run() -> Message | None:
        for name, text in fed:
            await render.feed(name, text)
        return await render.finish(execution)

    return messages, asyncio.run(run())
