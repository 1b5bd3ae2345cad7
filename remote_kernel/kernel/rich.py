"""Rich output over a contract that returns one value: the kernel's side of `rich_shim.py`.

The shim, installed in the session by a silent execution, turns each display, figure,
`clear_output` and rich result of a cell into a marker in stdout (small bundles travel inside
the marker; large ones go to a file of the cell in a hidden folder, named by a line number). The
markers are read by `render.py`, which fetches the cell's file only when a marker names it.
Here: the shim's state for one kernel (installed in this session or not, its nonce), its
install code, and fetching and deleting a cell's file. Without the shim (REMOTE_KERNEL_RICH=0, a
session that cannot load it) stdout is shown as it is.
"""
from __future__ import annotations

import asyncio
import io
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remote_kernel.kernel.helper import HELPER_MARK, read_answer
from remote_kernel.kernel.magics import HIDDEN_FOLDER as FOLDER  # under /mnt/data; the shim's FOLDER
from remote_kernel.sessions.models import Execution

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

log = logging.getLogger(__name__)

SHIM_FILE = Path(__file__).with_name("rich_shim.py")
CLEAN_DEADLINE = 10.0  # seconds for deleting a fetched file, in the background
FILE_LIMIT = 64 << 20  # bytes of one cell's outputs file; past it the outputs are lost with a note (trust)

_INSTALL = '''
def _remote_kernel_rich_install():
    import json, sys, types
    try:
        module = types.ModuleType("_remote_kernel_rich_shim")
        exec(compile(%(source)r, "<remote_kernel rich output>", "exec"), module.__dict__)
        answer = module.install(get_ipython(), %(nonce)r, live_log=%(live_log)r)
    except BaseException as exc:
        answer = {"error": type(exc).__name__ + ": " + str(exc)}
    print(%(mark)r + json.dumps(answer))
try:
    _remote_kernel_rich_install()
finally:
    del _remote_kernel_rich_install
'''


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
        self._cleaning: set[asyncio.Task] = set()
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

    def install_code(self, live_log: bool = True) -> str:
        """The silent execution that installs the shim, with a fresh nonce; `live_log`: keep the live
        log that the contract-only path reads (not needed where the pool streams output)."""
        self.nonce = secrets.token_hex(4)
        return _INSTALL % {"source": SHIM_FILE.read_text(encoding="utf-8"), "nonce": self.nonce,
                           "mark": HELPER_MARK, "live_log": live_log}

    def record_install(self, execution: Execution) -> None:
        """Read the install's answer; a session that could not load the shim keeps the plain mapping."""
        answer = read_answer(execution.stdout) or {}
        if answer.get("ok"):
            self.installed, self.refused = True, None
        else:
            self.installed = False
            self.refused = str(answer.get("error") or (execution.error.message if execution.error else "")
                               or "no answer")[:500]
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
