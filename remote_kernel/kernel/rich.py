"""Rich output over a contract that returns one value: the kernel's side of `rich_shim.py`.

The shim, installed in the session by a silent execution, writes each display, figure,
`clear_output` and result of a cell as a MIME bundle to a file in a hidden folder of the
session's files, and a short marker into stdout where it happened. Here the kernel strips the
markers (always), downloads the cell's file when there were any (one request; a plain cell
costs nothing more), deletes it, and turns stdout and the bundles into messages in the order
the session produced them. Without the shim (REMOTE_KERNEL_RICH=0, a session that cannot load
it) cells are shown by the plain mapping in `outputs.py`.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from remote_kernel.kernel import outputs
from remote_kernel.kernel.languages import HELPER_MARK
from remote_kernel.kernel.magics import HIDDEN_FOLDER as FOLDER  # under /mnt/data; the shim's FOLDER
from remote_kernel.kernel.outputs import Message
from remote_kernel.sessions.models import Execution

log = logging.getLogger(__name__)

#: any shim's marker, whatever its nonce: stripped from every cell's stdout
MARKER = re.compile("\x1erk([0-9a-f]{8}):([0-9]+):([0-9]+|[rcw])\x1e")
SHIM_FILE = Path(__file__).with_name("rich_shim.py")
CLEAN_DEADLINE = 10.0  # seconds for deleting a fetched file, in the background
FILE_LIMIT = 64 << 20  # bytes of one cell's outputs file; past it the outputs are lost with a note (trust)

_INSTALL = '''
def _remote_kernel_rich_install():
    import json, sys, types
    try:
        module = types.ModuleType("_remote_kernel_rich_shim")
        exec(compile(%(source)r, "<remote_kernel rich output>", "exec"), module.__dict__)
        answer = module.install(get_ipython(), %(nonce)r)
    except BaseException as exc:
        answer = {"error": type(exc).__name__ + ": " + str(exc)}
    print(%(mark)r + json.dumps(answer))
try:
    _remote_kernel_rich_install()
finally:
    del _remote_kernel_rich_install
'''


@dataclass
class Output:
    """One output the session produced: a display, an update of one, or a rich result."""

    type: str  # "display", "update", "result"
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    transient: dict[str, Any] = field(default_factory=dict)
    late: bool = False  # produced after the cell's code ended (a figure left open, say)

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Output:
        return cls(type=str(item.get("type", "display")), data=dict(item.get("data") or {}),
                   metadata=dict(item.get("metadata") or {}), transient=dict(item.get("transient") or {}),
                   late=bool(item.get("late")))

    def message(self, execution_count: int) -> Message:
        if self.type == "result":
            return "execute_result", {"execution_count": execution_count, "data": self.data,
                                      "metadata": self.metadata}
        kind = "update_display_data" if self.type == "update" else "display_data"
        return kind, {"data": self.data, "metadata": self.metadata, "transient": self.transient}


@dataclass(frozen=True)
class Mark:
    """Where the session produced an output: a line of the cell's file (a number), the result
    slot's value (`r`), or a clear_output (`c`; `w` waits for the next output)."""

    token: str

    @property
    def line(self) -> int | None:
        return int(self.token) if self.token.isdigit() else None


@dataclass
class RichCell:
    """A cell's stdout cut at the shim's markers: text and marks in the order produced."""

    pieces: list[str | Mark]
    outputs: dict[int, Output] = field(default_factory=dict)
    problem: str | None = None  # why the outputs could not be fetched

    @property
    def needs_file(self) -> bool:
        return any(isinstance(p, Mark) and p.line is not None for p in self.pieces)


def split_stdout(stdout: str, nonce: str | None) -> tuple[list[str | Mark], int | None]:
    """Stdout without any marker, cut where this shim's markers were; and the cell they name."""
    pieces: list[str | Mark] = []
    cell = None
    at = 0
    text = ""
    for match in MARKER.finditer(stdout):
        text += stdout[at:match.start()]
        at = match.end()
        if match.group(1) == nonce:
            if text:
                pieces.append(text)
                text = ""
            cell = int(match.group(2))
            pieces.append(Mark(match.group(3)))
    text += stdout[at:]
    if text:
        pieces.append(text)
    return pieces, cell


def parse_outputs(content: bytes) -> dict[int, Output]:
    """The outputs of a cell's file (JSON lines, numbered in order; a torn last line is left out)."""
    found: dict[int, Output] = {}
    for index, line in enumerate(content.decode("utf-8", "replace").splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            found[index] = Output.from_json(item)
    return found


class RichOutput:
    """The shim's state for one kernel: whether it is in the current session, and its nonce."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.nonce: str | None = None
        self.installed = False
        self.refused: str | None = None  # why this session could not load the shim
        self._cleaning: set[asyncio.Task] = set()

    @property
    def needs_install(self) -> bool:
        return self.enabled and not self.installed and self.refused is None

    def forget(self) -> None:
        """The session changed (lost, deleted, new): the next cell installs the shim again."""
        self.installed = False
        self.refused = None

    def install_code(self) -> str:
        """The silent execution that installs the shim, with a fresh nonce."""
        self.nonce = secrets.token_hex(4)
        return _INSTALL % {"source": SHIM_FILE.read_text(encoding="utf-8"), "nonce": self.nonce,
                           "mark": HELPER_MARK}

    def record_install(self, execution: Execution) -> None:
        """Read the install's answer; a session that could not load the shim keeps the plain mapping."""
        answer: dict[str, Any] = {}
        for line in (execution.stdout or "").splitlines():
            if line.startswith(HELPER_MARK):
                try:
                    answer = json.loads(line[len(HELPER_MARK):])
                except ValueError:
                    pass
        if answer.get("ok"):
            self.installed, self.refused = True, None
        else:
            self.installed = False
            self.refused = str(answer.get("error") or (execution.error.message if execution.error else "")
                               or "no answer")
            log.info("rich output is off for this session: %s", self.refused)

    async def collect(self, client: Any, execution: Execution) -> RichCell | None:
        """The cell cut at its markers, with its outputs fetched; None when it had no marker."""
        if "\x1e" not in execution.stdout:
            return None
        pieces, cell = split_stdout(execution.stdout, self.nonce)
        if cell is None:
            execution.stdout = "".join(p for p in pieces if isinstance(p, str))  # foreign markers only
            return None
        found = RichCell(pieces)
        if not found.needs_file or (execution.error is not None and execution.error.name == "SessionLost"):
            return found  # nothing to fetch, or nothing left to fetch it from
        name = f"{FOLDER}/{self.nonce}-{cell}.jsonl"
        buffer = io.BytesIO()
        try:
            await client.download(name, buffer, limit=FILE_LIMIT)
        except Exception as exc:  # the outputs are lost, the cell's text is not
            found.problem = f"[remote_kernel: the cell's rich output could not be fetched: {exc}]\n"
            return found
        found.outputs = parse_outputs(buffer.getvalue())
        task = asyncio.ensure_future(self._clean(client, name))
        self._cleaning.add(task)
        task.add_done_callback(self._cleaning.discard)
        return found

    @staticmethod
    async def _clean(client: Any, name: str) -> None:
        try:
            await asyncio.wait_for(client.delete_file(name), CLEAN_DEADLINE)
        except Exception as exc:  # the shim removes leftovers at the next cell anyway
            log.debug("could not delete %s: %r", name, exc)


def messages_for(execution: Execution, execution_count: int, cell: RichCell, *, jupyter_repr: bool = False,
                 format_value: Callable[[Any], str] = repr) -> tuple[list[Message], Message | None]:
    """Like `outputs.messages_for`, with the cell's outputs in their places among its stdout.

    stderr (what the code wrote there) follows the cell's own output and comes before what the
    cell left at its end (the result, figures still open), as the plain mapping orders them.
    """
    err: Message | None = None
    stderr = execution.stderr
    if execution.failed or execution.error is not None:
        stderr, err = outputs.failure(execution)
    messages: list[Message] = []
    stderr_shown = False

    def show_stderr() -> None:
        nonlocal stderr_shown
        if not stderr_shown:
            stderr_shown = True
            if stderr:
                messages.append(outputs.stream("stderr", stderr))
            if cell.problem:
                messages.append(outputs.stream("stderr", cell.problem))

    def slot_result() -> None:
        text = outputs._text_plain(execution.result, jupyter_repr, format_value) if execution.has_result else None
        if text is not None:
            messages.append(("execute_result", {"execution_count": execution_count,
                                                "data": {"text/plain": text}, "metadata": {}}))

    has_result = False
    for piece in cell.pieces:
        if isinstance(piece, str):
            messages.append(outputs.stream("stdout", piece))
        elif piece.token in ("c", "w"):
            messages.append(("clear_output", {"wait": piece.token == "w"}))
        elif piece.token == "r":
            show_stderr()
            if not has_result and err is None:
                slot_result()
            has_result = True
        elif piece.line in cell.outputs:
            output = cell.outputs[piece.line]
            if output.late or output.type == "result":
                show_stderr()
            has_result = has_result or output.type == "result"
            messages.append(output.message(execution_count))
    show_stderr()
    if err is not None:
        messages.append(err)
        return messages, err
    if execution.image is not None:
        messages.append(("display_data", {"data": outputs.image_bundle(execution.image.format, execution.image.data),
                                          "metadata": {}, "transient": {}}))
    if not has_result:
        slot_result()
    if execution.status.value == "Canceled":
        err = outputs.error("KeyboardInterrupt", "the execution was canceled")
        messages.append(err)
        return messages, err
    return messages, None
