"""Rich output over a contract that returns one value: the kernel's side of `rich_shim.py`.

The shim travels with the first cell of a session, as one line put before the cell's code (see
`riding_code`): the same request installs it and runs the cell, and that line takes itself out
of the cell (line numbers, history, source lines) before the cell's own code runs. A cell that
cannot carry it (a cell magic, `from __future__`, leading blank lines or indentation, code this
kernel cannot parse) gets it as a silent execution of its own first. The shim turns each
display, figure, `clear_output` and rich result of a cell into a marker in stdout (small bundles travel inside
the marker; large ones go to a file of the cell in a hidden folder, named by a line number). The
markers are read by `render.py`, which fetches the cell's file only when a marker names it.
Here: the shim's state for one kernel (installed in this session or not, its nonce), its
install code, and fetching and deleting a cell's file. Without the shim (REMOTE_KERNEL_RICH=0, a
session that cannot load it) stdout is shown as it is.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
import json
import logging
import secrets
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remote_kernel.kernel.events import FOLDER  # under /mnt/data; the shim's FOLDER
from remote_kernel.kernel.helper import HELPER_MARK
from remote_kernel.sessions.models import Execution

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

log = logging.getLogger(__name__)

SHIM_FILE = Path(__file__).with_name("rich_shim.py")
BACK_FILE = Path(__file__).with_name("back_channel_shim.py")  # comms and stdin, installed with the shim
CLEAN_DEADLINE = 10.0  # seconds for deleting a fetched file, in the background
FILE_LIMIT = 64 << 20  # bytes of one cell's outputs file; past it the outputs are lost with a note (trust)

_INSTALL = '''
def _remote_kernel_rich_install():
    import json, sys, types
    try:
        module = types.ModuleType("_remote_kernel_rich_shim")
        exec(compile(%(source)s, "<remote_kernel rich output>", "exec"), module.__dict__)
        answer = module.install(get_ipython(), %(nonce)r, live_log=%(live_log)r)
    except BaseException as exc:
        answer = {"error": type(exc).__name__ + ": " + str(exc)}
%(back)s
    print(%(mark)r + json.dumps(answer))
try:
    _remote_kernel_rich_install()
finally:
    del _remote_kernel_rich_install
'''


#: the line put before a session's first cell: it installs the shim, then the cell runs as sent
_RIDE = 'exec(compile(%(code)r, "<remote_kernel rich output>", "exec"), {"get_ipython": get_ipython})\n'

_RIDE_INSTALL = '''
import ast, json, linecache, sys, types
shell = get_ipython()
answer = {}
def take_out_this_line():
    """IPython compiles and runs a cell one statement at a time: the statements after this line
    move one line up, and the cell's source lines and history lose this line, so that tracebacks
    (`Cell In[N], line L`), `In`, `_i` and `%%history` show the cell as the user wrote it."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "run_ast_nodes":
        frame = frame.f_back
    if frame is None or not isinstance(frame.f_locals.get("nodelist"), list):
        return None
    nodes, name = frame.f_locals["nodelist"], frame.f_locals.get("cell_name")
    for node in nodes[1:]:
        ast.increment_lineno(node, -1)
    entry = linecache.cache.get(name)
    if entry is not None and entry[2]:
        linecache.cache[name] = (entry[0], entry[1], entry[2][1:], entry[3])
    manager = shell.history_manager
    raw = None
    sent = manager.input_hist_raw[-1] if getattr(manager, "input_hist_raw", None) else None
    for attr in ("input_hist_parsed", "input_hist_raw"):
        items = getattr(manager, attr, None)
        if isinstance(items, list) and items:
            items[-1] = items[-1].partition("\\n")[2]
            raw = items[-1]
    cache = getattr(manager, "db_input_cache", None)
    if isinstance(cache, list) and cache and len(cache[-1]) == 3:
        number, parsed, source = cache[-1]
        cache[-1] = (number, parsed.partition("\\n")[2], source.partition("\\n")[2])
    if raw is not None and sent is not None:
        if getattr(manager, "_i00", None) == sent:
            manager._i00 = raw
        for key, value in list(shell.user_ns.items()):  # _iN (IPython's N: its count may have moved on)
            if key.startswith("_i") and key[2:].isdigit() and value == sent:
                shell.user_ns[key] = raw
    return True
try:
    answer["renumbered"] = bool(take_out_this_line())
except BaseException:
    answer["renumbered"] = False
try:
    module = types.ModuleType("_remote_kernel_rich_shim")
    exec(compile(%(source)s, "<remote_kernel rich output>", "exec"), module.__dict__)
    answer.update(module.install(shell, %(nonce)r, live_log=%(live_log)r, cell_digest=%(digest)r))
except BaseException as exc:
    answer["error"] = type(exc).__name__ + ": " + str(exc)
%(back)s
print(%(mark)r + json.dumps(answer))
'''


#: after the shim's install, in the same execution: the back channel (its failure leaves rich output on)
_BACK = '''
if not answer.get("error"):
    try:
        import sys as _sys, types as _types
        _back = _types.ModuleType("_remote_kernel_back_channel")
        exec(compile(%(source)s, "<remote_kernel back channel>", "exec"), _back.__dict__)
        answer.update(_back.install(_sys.modules["_remote_kernel_rich"].active, allow_stdin=%(allow_stdin)r))
    except BaseException as _exc:
        answer["comms_error"] = type(_exc).__name__ + ": " + str(_exc)
'''


@functools.cache
def packed(path: Path) -> str:
    """An expression that gives the text of `path` in a session: the text compressed (zlib, base85) rather than
    a string literal. The session's shell tokenizes and hashes (for the cell's file name) all the code of an
    execution, and the shim's source is ~60 KB of it; a quarter of that cost the install ~15 ms less there,
    and the request as much fewer bytes. Standard library only, as the shim is."""
    data = base64.b85encode(zlib.compress(path.read_bytes(), 9)).decode("ascii")
    return f"__import__('zlib').decompress(__import__('base64').b85decode({data!r})).decode('utf-8')"


def _back(allow_stdin: bool, indent: str = "") -> str:
    code = _BACK % {"source": packed(BACK_FILE), "allow_stdin": allow_stdin}
    return "\n".join(indent + line for line in code.strip("\n").splitlines())


def cell_digest(code: str) -> str:
    """The hash of a cell's source that its live log's header carries (rich_shim.py)."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def can_ride(code: str) -> bool:
    """Whether the shim's line can go before this cell (see the module's docstring)."""
    if not code or code[0].isspace() or code.startswith("%%") or "__future__" in code:
        return False
    try:
        import ast

        from IPython.core.inputtransformer2 import TransformerManager

        ast.parse(TransformerManager().transform_cell(code))  # type: ignore[no-untyped-call]
    except Exception:  # a SyntaxError stays the cell's own, with its own line numbers
        return False
    return True


class _Capped(io.BytesIO):
    """A download buffer that refuses to grow past FILE_LIMIT."""

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > FILE_LIMIT:
            raise ValueError(f"the cell's outputs are over {FILE_LIMIT >> 20} MiB")
        return super().write(data)


class RichOutput:
    """The shim's state for one kernel: whether it is in the current session, and its nonce."""

    folder = FOLDER

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.nonce: str | None = None
        self.installed = False
        self.refused: str | None = None  # why this session could not load the shim
        self.comms = False  # whether the session's back channel makes comms (back_channel_shim.py)
        self.allow_stdin = False  # what the session's back channel was last told of allow_stdin
        self._cleaning: set[asyncio.Task[None]] = set()
        self._fetched: set[str] = set()

    @property
    def needs_install(self) -> bool:
        return self.enabled and not self.installed and self.refused is None

    @property
    def active_nonce(self) -> str | None:
        """The nonce whose markers this session's cells carry (None: show stdout as it is)."""
        return self.nonce if self.installed else None

    def forget(self) -> None:
        """The session changed (lost, deleted, new): the next cell installs the shim again."""
        self.installed = False
        self.refused = None
        self.comms = False

    def install_code(self, live_log: bool = True, allow_stdin: bool = False) -> str:
        """The silent execution that installs the shim, with a fresh nonce; `live_log`: keep the live
        log that the contract-only path reads (not needed where the pool streams output)."""
        self.nonce, self.allow_stdin = secrets.token_hex(4), allow_stdin
        return _INSTALL % {"source": packed(SHIM_FILE), "nonce": self.nonce,
                           "mark": HELPER_MARK, "live_log": live_log, "back": _back(allow_stdin, "    ")}

    def riding_code(self, cell: str, live_log: bool = True, allow_stdin: bool = False) -> str:
        """The line to put before `cell`, the session's first (`can_ride`): it installs the shim, with a
        fresh nonce, and prints its answer as the cell's first line of stdout (`record_answer`)."""
        self.nonce, self.allow_stdin = secrets.token_hex(4), allow_stdin
        code = _RIDE_INSTALL % {"source": packed(SHIM_FILE), "nonce": self.nonce,
                                "mark": HELPER_MARK, "live_log": live_log, "digest": cell_digest(cell),
                                "back": _back(allow_stdin)}
        return _RIDE % {"code": code}

    def record_install(self, execution: Execution) -> None:
        """Read the install's answer; a session that could not load the shim keeps the plain mapping."""
        self.record_answer(execution.stdout or "", execution.error.message if execution.error else "")

    def record_answer(self, text: str, failure: str = "") -> None:
        """Read the install's answer line(s) in `text`; a session that could not load the shim keeps the
        plain mapping."""
        answer: dict[str, Any] = {}
        for line in text.splitlines():
            if line.startswith(HELPER_MARK):
                try:
                    answer = json.loads(line[len(HELPER_MARK):])
                except ValueError:
                    pass
        if isinstance(answer, dict) and answer.get("ok"):
            self.installed, self.refused = True, None
            self.comms = bool(answer.get("comms"))
        else:
            self.installed = False
            answer = answer if isinstance(answer, dict) else {}
            self.refused = str(answer.get("error") or failure or "no answer")[:500]
            log.info("rich output is off for this session: %s", self.refused)

    def file_name(self, cell: int) -> str:
        return f"{FOLDER}/{self.nonce}-{cell}.jsonl"

    async def fetch(self, client: SessionsClient, cell: int) -> bytes:
        """The cell's file of large outputs (one download; `after_cell` deletes it)."""
        name = self.file_name(cell)
        buffer = _Capped()
        self._fetched.add(name)
        await client.download(name, buffer, limit=FILE_LIMIT)
        return buffer.getvalue()

    def after_cell(self, client: SessionsClient) -> None:
        """Delete the files fetched for the cell that ended, in the background (the user never waits)."""
        for name in self._fetched:
            task = asyncio.ensure_future(self._clean(client, name))
            self._cleaning.add(task)
            task.add_done_callback(self._cleaning.discard)
        self._fetched = set()

    @staticmethod
    async def _clean(client: SessionsClient, name: str) -> None:
        try:
            await asyncio.wait_for(client.delete_file(name), CLEAN_DEADLINE)
        except Exception as exc:  # the shim removes leftovers at the next cell anyway
            log.debug("could not delete %s: %r", name, exc)
