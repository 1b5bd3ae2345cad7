"""Events → Jupyter messages: the only place that builds a cell's output messages.

`Renderer.show` takes one `events.OutputEvent` (decoded from the wire by `decode.py`) and
publishes it, or holds it: outputs produced after the cell's code ended ("late": figures left
open, the rich result) and the result are held until the end, after the cell's stderr and its
error, as ipykernel shows them. `Renderer.finish` shows the end of the execution (the error, what
was held, the plain result, an image). Every output is shown at most once, and a cell's messages
stay within CELL_BUDGET bytes (then one note says the rest is not shown). Back channel events go to
`on_event` (comms.py) at once; a page becomes the reply's payload.

`CellRender` is one cell's decoder and renderer together: `feed` for text as it comes, `finish`
for the answer (its streams read from where the live text ended).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from remote_kernel.kernel import outputs
from remote_kernel.kernel.decode import Fetch, StreamDecoder, StreamName
from remote_kernel.kernel.events import (
    Clear,
    Display,
    Error,
    Event,
    Malformed,
    Note,
    OutputEvent,
    Page,
    Result,
    ResultPlace,
    Stream,
    Update,
    decode_file,
    decode_item,
    parse_json,
)
from remote_kernel.kernel.outputs import Message
from remote_kernel.sessions.models import Execution, ExecutionError

__all__ = ["CELL_BUDGET", "CellRender", "Event", "Fetch", "Malformed", "Publish", "Renderer", "decode_file",
           "decode_item", "parse_json", "rendered"]

Publish = Callable[[str, dict[str, Any]], None]

#: bytes of messages one cell may publish (streams and bundles); past it one note, then nothing
CELL_BUDGET = 64 << 20
NOTE = "[remote_kernel: {}]\n"
SEEN_TAIL = 16 << 10  # characters of each stream kept for the kernel's hints

# the middle line of a stream the pool's worker cut (its head and tail kept)
_TRUNCATED = re.compile(r"^\[output truncated: \d+ bytes left out here \(the first \d+ and the last \d+ are shown\)",
                        re.MULTILINE)
_Held = Display | Update | Result | Error | ResultPlace | Message  # what waits for the end of the cell


class Renderer:
    """One cell's events → messages, published as they come through `publish`."""

    def __init__(self, publish: Publish, execution_count: int, *, jupyter_repr: bool = False,
                 format_value: Callable[[Any], str] = repr, interrupted_name: str = "KeyboardInterrupt",
                 on_event: Callable[[Event], None] | None = None) -> None:
        self._publish = publish
        self._on_event = on_event  # back channel events (comms, input requests); None: dropped
        self.count = execution_count
        self.jupyter_repr = jupyter_repr
        self.format_value = format_value
        self.interrupted_name = interrupted_name  # the error a canceled execution ends with, in its language's words
        self._held: list[_Held] = []  # what comes after a late output (ResultPlace: the result's place)
        self._holding = False
        self._spent = 0
        self._over = False
        self.result_shown = False
        self.pages: list[dict[str, Any]] = []  # what IPython's pager showed: the reply's payload
        #: the last SEEN_TAIL characters of each stream shown (the kernel's hints read them)
        self.seen = {"stdout": "", "stderr": ""}

    def show(self, event: OutputEvent) -> None:
        """Publish (or hold) one event: the one dispatch on its kind."""
        if isinstance(event, Stream):
            self._stream(event.name, event.text)
        elif isinstance(event, Note):
            self._stream("stderr", NOTE.format(event.text))
        elif isinstance(event, Clear):
            self._show_or_hold(("clear_output", {"wait": event.wait}))
        elif isinstance(event, ResultPlace):
            self._holding = True  # the result's place: it comes with the answer
            self._held.append(event)
        elif isinstance(event, Event):  # dispatched at once, never held: the front end's widgets need them in order
            if self._on_event is not None:
                self._on_event(event)
        elif isinstance(event, Page):  # as ipykernel's payload pager: the last page of the cell is the reply's
            self.pages = [{"source": "page", "data": event.data, "start": event.start}]
        else:
            if event.late or isinstance(event, Result):
                self._holding = True
            if self._holding:
                self._held.append(event)
            else:
                self._show(self._message(event), event.size)

    def _message(self, event: Display | Update | Result | Error) -> Message:
        if isinstance(event, Error):
            return "error", {"ename": event.ename, "evalue": event.evalue, "traceback": event.traceback}
        if isinstance(event, Result):
            return "execute_result", {"execution_count": self.count, "data": event.data, "metadata": event.metadata}
        kind = "update_display_data" if isinstance(event, Update) else "display_data"
        return kind, {"data": event.data, "metadata": event.metadata, "transient": event.transient}

    def _show_or_hold(self, message: Message) -> None:
        if self._holding:
            self._held.append(message)
        else:
            self._show(message, len(message[1].get("text", "")) + 16)

    # --- the end ------------------------------------------------------------------------------

    def finish(self, execution: Execution, err: Message | None) -> Message | None:
        """The end of the cell, in ipykernel's order: the error, the outputs held for the end, the result;
        returns the cell's `error` message (also published), if any."""
        if err is not None:
            if err[1]["ename"] == "UsageError":  # a magic's usage: IPython prints it to stderr, ipykernel sends no error
                self._stream("stderr", "".join(line + "\n" for line in err[1]["traceback"]))
            else:
                self._show(err, 0)
        for item in self._held:
            if isinstance(item, ResultPlace):  # the result's place (also after an error: a failed rich formatter's
                self._result(execution)  # traceback and the text/plain that did format, as ipykernel shows both)
            elif isinstance(item, (Display, Update, Result, Error)):
                self.result_shown = self.result_shown or isinstance(item, Result)
                self._show(self._message(item), item.size)
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

    def _stream(self, name: str, text: str) -> None:
        if text and name in self.seen:
            self.seen[name] = (self.seen[name] + text)[-SEEN_TAIL:]
        if text:
            if name == "stdout":
                self._show_or_hold(outputs.stream(name, text))
            else:
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


class CellRender:
    """One cell's output: its decoder (`decode.StreamDecoder`) feeding its renderer (`Renderer`)."""

    def __init__(self, publish: Publish, execution_count: int, *, nonce: str | None = None,
                 fetch: Fetch | None = None, jupyter_repr: bool = False,
                 format_value: Callable[[Any], str] = repr, answer: Callable[[str], None] | None = None,
                 interrupted_name: str = "KeyboardInterrupt",
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.decoder = StreamDecoder(nonce=nonce, fetch=fetch, answer=answer)
        self.renderer = Renderer(publish, execution_count, jupyter_repr=jupyter_repr, format_value=format_value,
                                 interrupted_name=interrupted_name, on_event=on_event)

    @property
    def consumed(self) -> dict[str, int]:
        """Characters of each stream fed so far."""
        return self.decoder.consumed

    @consumed.setter
    def consumed(self, value: dict[str, int]) -> None:
        self.decoder.consumed = value

    @property
    def jupyter_repr(self) -> bool:
        return self.renderer.jupyter_repr

    @jupyter_repr.setter
    def jupyter_repr(self, value: bool) -> None:
        self.renderer.jupyter_repr = value

    @property
    def pages(self) -> list[dict[str, Any]]:
        return self.renderer.pages

    @property
    def seen(self) -> dict[str, str]:
        return self.renderer.seen

    async def feed(self, name: StreamName, text: str) -> None:
        """Text the session wrote to `name`, in order (stdout markers are cut out and shown)."""
        async for event in self.decoder.feed(name, text):
            self.renderer.show(event)

    async def finish(self, execution: Execution) -> Message | None:
        """Show the rest of the answer; returns the cell's `error` message (also published), if any.

        The answer's streams are shown from where the fed text ended. Then, in ipykernel's order:
        the code's stderr, the error, the outputs held for the end, the result.
        """
        consumed = self.decoder.consumed
        stdout, stderr = _unshown(execution.stdout, consumed["stdout"]), _unshown(execution.stderr, consumed["stderr"])
        err: Message | None = None
        if execution.failed or execution.error is not None:
            stderr, err = outputs.failure(_with_stderr(execution, stderr, consumed["stderr"]))
        async for event in self.decoder.replay(stdout, stderr):
            self.renderer.show(event)
        return self.renderer.finish(execution, err)


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


def rendered(execution: Execution, execution_count: int, *, fed: tuple[tuple[StreamName, str], ...] = (),
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
