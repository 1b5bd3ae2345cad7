"""Running one cell in the session, with its output shown while it runs.

Three ways, chosen per cell:

- **live events** (a pool that advertises the live-output extension: the embedded pool, or
  `remote-kernel pool`): one streaming request; each event goes to the cell's `CellRender` as
  it arrives. An interrupt asks the pool to interrupt and keeps reading, so the cell ends with
  what it printed and its KeyboardInterrupt traceback; code that ignores the interrupt is
  told to the user after STOP_WARNING_AFTER, and the pool kills the session's processes after its grace.
- **the contract only** (a hosted pool): one synchronous execute. Only once it has run
  POLL_AFTER seconds, the kernel reads the shim's live log through the file API beside it,
  every POLL_EVERY seconds, until the answer comes. A read that fails or takes over
  POLL_DEADLINE ends the reading for that cell, silently: the answer shows the rest.
- **long cells** (`%%long`): the cell runs in a thread of the session; short executions read
  its output and end; no execution cap applies.

A run knows its `CellHost` only (publish, the settings, the shim's state, helpers, input), never
the kernel's class.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from remote_kernel.kernel import outputs
from remote_kernel.kernel.python import helper_code
from remote_kernel.kernel.render import CellRender
from remote_kernel.kernel.rich import cell_digest
from remote_kernel.sessions.models import Execution, ExecutionError, ExecutionStatus, RemoteFileNotFound

if TYPE_CHECKING:
    from remote_kernel.kernel.config import KernelConfig
    from remote_kernel.kernel.rich import RichOutput
    from remote_kernel.sessions.client import SessionsClient

log = logging.getLogger(__name__)

POLL_AFTER = 1.0  # seconds a cell runs before the contract-only path reads its live log
POLL_EVERY = 0.3  # seconds between reads of the live log
POLL_DEADLINE = 3.0  # seconds one read may take; past it the cell stops reading (the answer has it all)
STOP_WARNING_AFTER = 2.0  # seconds after an interrupt before the user hears that the code did not stop (at 1 s a
# loaded machine said so of code that stopped a moment later; the pool kills it at 3 s)
LONG_POLL_EVERY = 0.5  # seconds between the short executions that follow a long cell
LONG_MAGIC = "%%long"


def long_body(code: str) -> str | None:
    """The code of a `%%long` cell (what follows the magic's line), None for any other cell."""
    first, _, rest = code.lstrip("\n").partition("\n")
    return rest if first.strip() == LONG_MAGIC else None


class CellHost(Protocol):
    """What running one cell needs (as jupyter_server's connection ABC: a few members, no kernel class).

    `remote.RemoteSession` gives all but `interrupt_input`; the kernel gives them all.
    """

    @property
    def settings(self) -> KernelConfig: ...  # the execution timeout

    @property
    def rich(self) -> RichOutput: ...  # the shim's state in the session: its nonce and folder (the live log)

    @property
    def jupyter_repr(self) -> bool: ...  # executions ask for the interpreter's display repr

    def publish(self, msg_type: str, content: dict[str, Any]) -> None: ...

    async def helper(self, code: str, deadline: float = ...) -> dict[str, Any] | None: ...

    def interrupt_input(self) -> bool: ...  # end a pending input request (False: none pending)


class CellRun:
    """One cell's execution; `interrupt` (on the kernel's loop) stops it the best way its path has."""

    def __init__(self, host: CellHost, client: SessionsClient, render: CellRender, code: str,
                 prefix: str = "") -> None:
        self.host = host
        self.client = client
        self.render = render
        self.code = code
        self.prefix = prefix  # the shim's install, sent before the code in the same execution (rich.py)
        self.task: asyncio.Task[Any] | None = None  # the task running `run`
        self.execution_id: str | None = None
        self.grace = 3.0
        self.mode = "contract"
        self.interrupts = 0
        self._extra: set[asyncio.Task[None]] = set()

    # --- choosing the path -------------------------------------------------------------------------

    async def run(self) -> Execution:
        self.task = asyncio.current_task()
        try:
            if self.client.live:
                self.mode = "live"
                return await self._run_live()
            return await self._run_contract()
        finally:
            for task in self._extra:
                task.cancel()

    def interrupt(self) -> None:
        """The user interrupted the cell."""
        self.interrupts += 1
        if self.mode == "live" and self.interrupts == 1:
            if self.execution_id is not None:
                self._spawn(self._interrupt_live())
            return  # before the pool named the execution: `started` sends the interrupt
        if self.mode == "contract" and self.interrupts == 1 and self.host.interrupt_input():
            return  # the session's input() stops with ipykernel's KeyboardInterrupt, and the cell ends with it
        if self.mode == "long" and self.interrupts == 1:
            self._spawn(self._warn_if_running("A long cell is interrupted at its next Python line (a call that "
                                              "blocks, such as a long sleep, ends first). Interrupt again to stop "
                                              "following it; it then keeps running in the session.\n", 3.0))
            return
        if self.task is not None:
            self.task.cancel()  # closing the request: the pool interrupts the code (and kills it past the grace)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._extra.add(task)
        task.add_done_callback(self._extra.discard)

    async def _warn_if_running(self, text: str, after: float) -> None:
        await asyncio.sleep(after)
        self.host.publish(*outputs.stream("stderr", text))

    # --- live events ---------------------------------------------------------------------------------

    async def _run_live(self) -> Execution:
        async def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "started":
                self.execution_id = str(event.get("id") or "") or None
                grace = event.get("grace")
                if isinstance(grace, (int, float)) and not isinstance(grace, bool) and 0 < grace < 3600:
                    self.grace = float(grace)
                if self.interrupts and self.execution_id:
                    self._spawn(self._interrupt_live())
            elif kind == "stream" and event.get("name") in ("stdout", "stderr") and isinstance(event.get("text"), str):
                await self.render.feed(event["name"], event["text"])

        return await self.client.execute_live(self.prefix + self.code, on_event, timeout=self.host.settings.timeout,
                                              jupyter_repr=self.host.jupyter_repr)

    async def _interrupt_live(self) -> None:
        assert self.execution_id is not None
        try:
            self.grace = await asyncio.wait_for(self.client.interrupt_live(self.execution_id), 5.0)
        except Exception as exc:  # the extension did not take it: close the request instead
            log.debug("live interrupt failed: %r", exc)
            if self.task is not None:
                self.task.cancel()
            return
        await asyncio.sleep(STOP_WARNING_AFTER)
        self.host.publish(*outputs.stream("stderr", (
            f"The code did not stop when interrupted (it may catch KeyboardInterrupt, or be inside a call that "
            f"does not return). If it has not stopped {self.grace:g} s after the interrupt, the session's "
            "processes are killed and its state is lost: this cell then ends with SessionLost, and the next "
            "cell starts a new session.\n")))

    # --- the contract only: the live log ---------------------------------------------------------------

    async def _run_contract(self) -> Execution:
        execute = asyncio.ensure_future(self.client.execute(self.prefix + self.code,
                                                            timeout=self.host.settings.timeout,
                                                            jupyter_repr=self.host.jupyter_repr))
        try:
            rich = self.host.rich
            if (rich.installed or self.prefix) and rich.nonce:
                done, _ = await asyncio.wait({execute}, timeout=POLL_AFTER)
                if not done:
                    await self._follow_log(execute, f"{rich.folder}/{rich.nonce}.live")
            return await execute
        finally:
            if not execute.done():
                execute.cancel()

    async def _follow_log(self, execute: asyncio.Future[Execution], name: str) -> None:
        """Show the live log's new lines until the execution ends; stop quietly on any trouble."""
        digest = cell_digest(self.code)
        seen = 0  # complete lines of the log already shown (the header is line 0)
        while not execute.done():
            read = asyncio.ensure_future(self._read(name))
            try:
                both: set[asyncio.Future[Any]] = {execute, read}
                done, _ = await asyncio.wait(both, timeout=POLL_DEADLINE,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not read.done():
                    read.cancel()
            if read not in done:
                read.cancel()
                return  # the execution ended, or the pool does not answer file requests while it runs
            try:
                content = read.result()
            except RemoteFileNotFound:
                content = None  # not written yet
            except Exception as exc:
                log.debug("live log unreadable; the answer will show the output: %r", exc)
                return
            if content:
                lines = content.split(b"\n")[:-1]  # a torn last line waits for the next read
                if lines and _header_matches(lines[0], digest):
                    for line in lines[max(seen, 1):]:
                        try:
                            tag, text = json.loads(line)
                        except (ValueError, TypeError, RecursionError):
                            return  # not the shim's log: stop reading it
                        if execute.done():
                            return
                        await self.render.feed("stdout" if tag == "o" else "stderr", str(text))
                    seen = max(seen, len(lines))
            await asyncio.wait({execute}, timeout=POLL_EVERY)

    async def _read(self, name: str) -> bytes:
        buffer = io.BytesIO()
        await self.client.download(name, buffer)
        return buffer.getvalue()

    # --- long cells --------------------------------------------------------------------------------

    async def run_long(self, body: str) -> Execution:
        """Run `body` in a thread of the session and follow it with short executions until it ends."""
        self.task = asyncio.current_task()
        self.mode = "long"
        started = await self._shim_call(f"answer = _rk.start_long({body!r})")
        if started is None or started.get("error"):
            reason = (started or {}).get("error") or "the session did not answer"
            return _failed("LongCellError", f"%%long could not start the cell: {reason}")
        try:
            while True:
                await asyncio.sleep(LONG_POLL_EVERY)
                answer = await self._shim_call(f"answer = _rk.poll_long(interrupt={self.interrupts > 0})")
                if answer is None:
                    continue  # a slow answer: ask again
                if answer.get("error") and "log" not in answer:
                    return _failed("LongCellError", f"%%long lost its cell: {answer['error']}")
                for item in answer.get("log") or []:
                    if isinstance(item, list) and len(item) == 2 and item[0] in ("stdout", "stderr"):
                        await self.render.feed(item[0], str(item[1]))
                if answer.get("done"):
                    break
        except asyncio.CancelledError:
            if self.interrupts:
                self.host.publish(*outputs.stream("stderr", "Stopped following the long cell; it keeps running "
                                                              "in the session until it ends.\n"))
            raise
        finally:
            for task in self._extra:
                task.cancel()
        self.render.consumed = {"stdout": 0, "stderr": 0}
        self.render.jupyter_repr = True
        error = answer.get("error")
        if isinstance(error, dict):
            text = str(error.get("traceback") or "")
            return Execution(id=None, status=ExecutionStatus.FAILED, stderr=text,
                             error=ExecutionError(str(error.get("name") or "Error"), str(error.get("message") or ""),
                                                  text))
        dropped = answer.get("dropped") or 0
        note = f"[remote_kernel: {dropped} characters of the long cell's output were not kept]\n" if dropped else ""
        result = answer.get("result")
        return Execution(id=None, status=ExecutionStatus.SUCCEEDED, stderr=note, result=result,
                         has_result=isinstance(result, str))

    async def _shim_call(self, line: str) -> dict[str, Any] | None:
        code = helper_code("import sys\n_rk = sys.modules['_remote_kernel_rich'].active\n" + line)
        return await self.host.helper(code, deadline=30.0)


def _header_matches(line: bytes, digest: str) -> bool:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(header, dict) and header.get("code") == digest


def _failed(name: str, message: str) -> Execution:
    return Execution(id=None, status=ExecutionStatus.FAILED, stderr=f"{name}: {message}\n",
                     error=ExecutionError(name, message, f"{name}: {message}\n"))
