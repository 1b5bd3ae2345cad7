"""The wire → events: one cell's stdout and stderr, as they arrive, into `events.OutputEvent`s.

A cell's output arrives as stream text in the order the session wrote it, either live (the local
pool's live events, the hosted path's live log, a long cell's polls) or all at once in the
execution's answer. `StreamDecoder.feed` takes text as it comes and yields events; `replay` takes
the answer's streams (from where the live text ended) and yields the rest, in ipykernel's order.

Decoding here: the shim's markers are cut out of stdout (only this cell's nonce counts: anything
else that looks like a marker is text, as written; a marker cut by the end of a text waits for the
next), the cell's file of large outputs is fetched when a marker names it (each output at most
once), the shim's install answer is taken off the first line of stdout when the install rides with
the cell, and the answer's two streams are interleaved at the flush markers. A malformed marker,
line or bundle becomes a `Note` (that one output is lost). What the events become is `render.py`'s.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Literal

from remote_kernel.kernel import events
from remote_kernel.kernel.events import Clear, Malformed, Note, OutputEvent, ResultPlace, Stream
from remote_kernel.kernel.helper import HELPER_MARK

Fetch = Callable[[int], Awaitable[bytes]]  # the cell's file of large outputs, by cell number
StreamName = Literal["stdout", "stderr"]

MAX_MARK = 512 << 10  # longest marker kept waiting for its end (an inline bundle is at most 256 KiB)


class StreamDecoder:
    """One cell's streams → events."""

    def __init__(self, *, nonce: str | None = None, fetch: Fetch | None = None,
                 answer: Callable[[str], None] | None = None) -> None:
        self.nonce = nonce  # the shim's nonce in this session (None: stdout is plain text)
        self.fetch = fetch
        #: the shim's install travels with this cell: its answer is the first line of stdout, taken
        #: out and given to `answer` (stdout that does not start with it is the cell's own)
        self._answer = answer
        self._answer_text = ""
        self.consumed: dict[str, int] = {"stdout": 0, "stderr": 0}  # characters of each stream fed so far
        self.cell: int | None = None  # the shim's number of this cell (from its first marker)
        self._pending = ""  # stdout from a marker's start that may continue in the next text
        self._shown: set[int] = set()  # lines of the cell's file already shown
        self._file: dict[int, events.Display | events.Update | events.Result | events.Page | events.Error
                         | events.Event | str] = {}  # the cell's file, decoded (a str: why a line is unusable)
        self._answer_stderr = ""  # the answer's stderr not shown yet, while `replay` reads its stdout
        self._held_stdout: list[tuple[int, str]] = []  # ... and its stdout, by position, until a flush shows it
        self._ordering = False  # `replay` is reading the answer: stdout waits for its flush
        self._base = 0  # the position in the cell's stdout of the text being fed

    # --- text as it comes -----------------------------------------------------------------

    async def feed(self, name: StreamName, text: str) -> AsyncIterator[OutputEvent]:
        """Text the session wrote to `name`, in order: its events (stdout markers cut out and decoded)."""
        if not text:
            return
        self.consumed[name] = self.consumed.get(name, 0) + len(text)
        if name != "stdout":
            yield Stream(name, text)
            return
        if self._answer is not None:
            text = self._take_answer(text)
        text, self._pending = self._pending + text, ""
        self._base = self.consumed["stdout"] - len(text)  # the position of text[0] in the cell's stdout
        at = shown = 0  # text[shown:at] is plain text not yet shown
        while (start := text.find(events.MARK_END, at)) >= 0:
            match = events.MARK.match(text, start)
            if match is None:
                rest = text[start:]
                if len(rest) <= MAX_MARK and events.MARK_PREFIX.match(rest):
                    for event in self._plain(text[shown:start], shown):
                        yield event
                    self._pending = rest  # may be a marker cut by the end of this text
                    return
                at = start + 1  # not a marker: shown as written
                continue
            if match.group(1) != self.nonce:
                at = match.end()  # another nonce's marker is text, as written
                continue
            for event in self._plain(text[shown:start], shown):
                yield event
            at = shown = match.end()
            async for event in self._mark(match.group(2), match.group(3)):
                yield event
        for event in self._plain(text[shown:], shown):
            yield event

    def _plain(self, text: str, offset: int) -> Iterator[OutputEvent]:
        """Stdout text at `offset` of the text being fed: shown, or held while `replay` orders the streams."""
        if not text:
            return
        if self._ordering:
            self._held_stdout.append((self._base + offset, text))
        else:
            yield Stream("stdout", text)

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

    async def _mark(self, cell: str, token: str) -> AsyncIterator[OutputEvent]:
        """One marker's events (grammar: `events.py`)."""
        try:
            if not (cell.isascii() and cell.isdigit() and len(cell) <= 9):
                raise Malformed("a marker with an unreadable cell number")
            self.cell = self.cell if self.cell is not None else int(cell)
            flush = events.FLUSH_TOKEN.fullmatch(token)
            if not flush:
                for event in self._release_stdout():  # an output, a clear or the result's place come after the
                    yield event                       # text before them
            if token in (events.CLEAR, events.CLEAR_WAIT):
                yield Clear(wait=token == events.CLEAR_WAIT)
            elif flush:
                for event in self._release_stdout(int(flush.group(2))):
                    yield event
                for event in self._stderr_to(int(flush.group(1))):
                    yield event
            elif token == events.RESULT_PLACE:
                yield ResultPlace()
            elif token.startswith(events.INLINE):
                yield events.decode_item(events.parse_json(token[len(events.INLINE):]), len(token))
            elif token.isascii() and token.isdigit() and len(token) <= 9:
                async for event in self._from_file(int(token)):
                    yield event
            else:
                raise Malformed("a marker of an unknown kind")
        except Malformed as bad:
            yield Note(f"one output could not be shown: {bad}")

    def _stderr_to(self, position: int) -> Iterator[OutputEvent]:
        """The answer's stderr up to `position` (characters of the cell's stderr), before the stdout that
        follows; stderr fed live is already there."""
        count = position - self.consumed["stderr"]
        if count <= 0 or not self._answer_stderr:
            return
        text, self._answer_stderr = self._answer_stderr[:count], self._answer_stderr[count:]
        self.consumed["stderr"] += len(text)
        if text:
            yield Stream("stderr", text)

    def _release_stdout(self, position: int | None = None) -> Iterator[OutputEvent]:
        """The answer's stdout held so far, up to its `position`-th character (None: all of it)."""
        kept = []
        held, self._held_stdout = self._held_stdout, []
        for start, text in held:
            cut = len(text) if position is None else max(0, min(len(text), position - start))
            if cut:
                yield Stream("stdout", text[:cut])
            if cut < len(text):
                kept.append((start + cut, text[cut:]))
        self._held_stdout = kept + self._held_stdout

    async def _from_file(self, line: int) -> AsyncIterator[OutputEvent]:
        if line in self._shown:
            return  # an output is shown at most once, however often its marker is printed
        if line not in self._file and self.fetch is not None and self.cell is not None:
            try:
                self._file = events.decode_file(await self.fetch(self.cell))
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
        yield found

    # --- the answer -----------------------------------------------------------------------------

    async def replay(self, stdout: str, stderr: str) -> AsyncIterator[OutputEvent]:
        """The answer's streams not fed live (`stdout`, `stderr`), in ipykernel's order: the flush markers
        in stdout place stderr; at the end, the rest of stdout, then of stderr."""
        self._answer_stderr, self._ordering = stderr, True  # `e` markers in stdout place the two streams
        try:
            async for event in self.feed("stdout", stdout):
                yield event
        finally:
            self._ordering = False
        for event in self._release_stdout():
            yield event
        stderr, self._answer_stderr = self._answer_stderr, ""
        if self._answer_text:  # a line that never ended is the cell's own text
            self._answer, text, self._answer_text = None, self._answer_text, ""
            async for event in self.feed("stdout", text):
                yield event
            self.consumed["stdout"] -= len(text)
        if self._pending:
            yield Stream("stdout", self._pending)  # an unfinished marker at the very end is text
            self._pending = ""
        if stderr:
            yield Stream("stderr", stderr)  # the code's stderr comes before what the cell left at its end
