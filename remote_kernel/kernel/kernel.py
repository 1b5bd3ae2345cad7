"""`RemoteKernel`: Jupyter messages in, executions in a remote session out.

The protocol plumbing is ipykernel's; this class reads like its echo_kernel plus control handling:
`do_execute` hands a cell to `pipeline.CellPipeline` (the cell's path: kernel magics, the session,
`cell.CellRun`, `render.py`), VS Code's hidden requests are routed by `vscode.py`'s pure functions,
completion and inspection are helpers in the session, comms go to `comms.py`, and interrupt and
shutdown arrive on the control thread. The session (`remote.RemoteSession`: the client, the
identifier, the embedded pool, the state tied to one session, `publish`) is created lazily by the
first cell, so start-up never blocks on the network or fails.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import signal
import threading
from typing import TYPE_CHECKING, Any

from ipykernel._version import kernel_protocol_version
from ipykernel.kernelbase import Kernel

from remote_kernel import __version__
from remote_kernel.kernel import comms, outputs, rich, trust, vscode
from remote_kernel.kernel.config import KernelConfig
from remote_kernel.kernel.embedded import EmbeddedPool
from remote_kernel.kernel.helper import HELPER_MARK
from remote_kernel.kernel.languages import PYTHON, Language
from remote_kernel.kernel.magics import MAGICS
from remote_kernel.kernel.pipeline import CellPipeline
from remote_kernel.kernel.remote import HELPER_DEADLINE, RemoteSession
from remote_kernel.kernel.render import CellRender

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

COMPLETE_DEADLINE = 10.0  # seconds for a completion
#: seconds for a session's first completion: jedi loads then (seconds, as in a local kernel), and a load cut
#: short by the deadline (the pool interrupts the execution) can leave jedi unable to complete names later
FIRST_COMPLETE_DEADLINE = 60.0
#: seconds for an inspection (a docstring, a signature): a session's first one loads IPython's inspector there,
#: and a loaded machine took over a second for it (an empty answer then, where ipykernel answers)
INSPECT_DEADLINE = 10.0
SHUTDOWN_DEADLINE = 1.5  # seconds to delete the session on shutdown (jupyter_client kills at ~2.5 s)


class RemoteKernel(Kernel):
    """A kernel whose cells run in a remote session (one identifier per kernel)."""

    implementation = "remote_kernel"
    implementation_version = __version__
    language_spec: Language = PYTHON
    language_info = PYTHON.language_info
    banner = PYTHON.banner

    #: comm messages from the front end reach the session (comms.py), as ipykernel's comm manager takes them
    msg_types = [*Kernel.msg_types, "comm_open", "comm_msg", "comm_close"]

    #: what `__main__` prepared before ipykernel was imported: the configuration it read, and the
    #: embedded pool it started (None: read the configuration here, start a pool if it needs one)
    startup: tuple[KernelConfig, EmbeddedPool | None] | None = None

    @classmethod
    def for_language(cls, key: str, *, settings: KernelConfig | None = None,
                     embedded: EmbeddedPool | None = None) -> type[RemoteKernel]:
        """The kernel class for a language of the table in `languages.py`, with what `__main__` prepared."""
        from remote_kernel.kernel.languages import language

        spec = language(key)
        startup = None if settings is None else (settings, embedded)
        if spec is cls.language_spec and startup is None:
            return cls
        return type(f"Remote{key.title()}Kernel", (cls,),
                    {"language_spec": spec, "language_info": spec.language_info, "banner": spec.banner,
                     "startup": startup})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]  # ipykernel is untyped
        # ipykernel sleeps 0.5 ms before each execute_reply so that what a cell printed to the kernel's
        # own sys.stdout is flushed first; cells here never print there (their output is published as
        # messages before the reply is sent), so the sleep would only add to every cell's round trip
        self._execute_sleep = 0.0
        self._quiet_library_logs()
        settings, embedded = self.startup or (KernelConfig.from_env(), None)
        self.settings = settings
        self.remote = RemoteSession(settings, self.language_spec, embedded, send=self._send)
        self._cell: tuple[asyncio.AbstractEventLoop, asyncio.Task[dict[str, Any]]] | None = None
        self._cleaned_up = False
        self._control_idle = threading.Event()
        self._control_idle.set()
        self._publish_silently = False
        self.comms = comms.CommBridge(self)
        self.cells = CellPipeline(self.remote, self.comms)
        atexit.register(self._cleanup_sync)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    async def kernel_info_request(self, stream: Any, ident: Any, parent: Any) -> None:
        await super().kernel_info_request(stream, ident, parent)  # type: ignore[no-untyped-call]
        # the kernel is ready: the first cell's session gets ready while the front end connects, on the kernel's
        # own loop (the request may have come on the control channel, whose thread has a loop of its own)
        self.io_loop.add_callback(self.remote.warm_up)

    def _quiet_library_logs(self) -> None:
        """Library logs go where the kernel's own log goes, never to sys.stderr (that is a cell's stderr)."""
        for name in ("remote_kernel", "httpx", "httpcore", "azure"):
            logger = logging.getLogger(name)
            logger.handlers = list(self.log.handlers) or [logging.NullHandler()]
            logger.propagate = False
        if self.log.getEffectiveLevel() > logging.DEBUG:  # httpx logs every request at INFO: unread records
            logging.getLogger("httpx").setLevel(logging.WARNING)

    @property
    def rich(self) -> rich.RichOutput:
        """The rich-output shim's state in the current session."""
        return self.remote.rich

    @property
    def guard(self) -> trust.OutputGuard:
        """What the session's outputs may carry to the front end."""
        return self.remote.guard

    # --- cell.CellHost (comms.py runs a front end's comm message as a cell of its own) -------------------

    @property
    def jupyter_repr(self) -> bool:
        return self.remote.jupyter_repr

    async def helper(self, code: str, deadline: float = HELPER_DEADLINE) -> dict[str, Any] | None:
        return await self.remote.helper(code, deadline)

    def interrupt_input(self) -> bool:
        return self.comms.interrupt_input()

    def _render(self, client: SessionsClient, number: int, riding: bool = False) -> CellRender:
        return self.cells.render(client, number, riding)

    # --- protocol ------------------------------------------------------------------------

    @property
    def execution_count(self) -> int:
        return self.cells.count

    @execution_count.setter
    def execution_count(self, value: int) -> None:
        pass  # the base class counts every non-silent request; IPython counts only stored cells

    @property
    def kernel_info(self) -> dict[str, Any]:
        # the base class's own would import ipykernel's debugger (debugpy: a tenth of a second of the
        # first kernel_info_request) only to list it; there is no debugger and no subshell here: cells
        # run one at a time, remotely
        return {"protocol_version": kernel_protocol_version, "implementation": self.implementation,
                "implementation_version": self.implementation_version, "language_info": self.language_info,
                "banner": self.banner, "help_links": self.help_links, "supported_features": []}

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        """Send one IOPub message for the current cell (nothing for a silent one), screened by `trust`."""
        self.remote.publish(msg_type, content)

    def _send(self, msg_type: str, content: dict[str, Any]) -> None:
        """The session's way to the front end: IOPub, unless the request is silent."""
        if not self._publish_silently:
            self.send_response(self.iopub_socket, msg_type, content)  # type: ignore[no-untyped-call]

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict[str, str] | None = None, allow_stdin: bool = False, *,
                         cell_meta: dict[str, Any] | None = None, cell_id: str | None = None) -> dict[str, Any]:
        # cell_meta and cell_id (what front ends send with a cell) are not needed: the session has no cells
        self._allow_stdin = allow_stdin
        self._publish_silently = silent
        number = self.cells.begin(store_history and not silent, allow_stdin)
        hidden = vscode.classify(code, store_history, self.remote.continuity.executed)
        if hidden is not None and hidden.route != "session":
            return await self._answer_hidden(hidden, code)
        await self.comms.idle()  # a front end's comm message on its way to the session goes first
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.cells.run(code, number, user_expressions or {}))
        self._cell = (loop, task)
        try:
            await asyncio.wait({task})
        finally:
            self._cell = None
        if task.cancelled():
            return self.cells.fail(outputs.interrupted(*self.language_spec.interrupted))
        exc = task.exception()
        if exc is not None:
            self.log.error("internal error running a cell", exc_info=exc)
            return self.cells.fail(outputs.error(type(exc).__name__, f"remote_kernel failed: {exc}"))
        return task.result()

    async def _answer_hidden(self, hidden: vscode.Hidden, code: str) -> dict[str, Any]:
        """A VS Code request answered without running it as a cell (`vscode.py` says which)."""
        if hidden.background is not None:
            await self._answer_background(hidden.background)
        elif any(helper in code for helper in vscode.SESSION_HELPERS):
            msg_type, content = vscode.fresh_kernel_answer(code)
            self.publish(msg_type, content)
            if msg_type == "error":
                return outputs.error_reply((msg_type, content), self.cells.count - 1)
        else:
            self.remote.vscode.keep(hidden)
        return outputs.ok_reply(self.cells.count - 1)

    async def _answer_background(self, background: vscode.Background) -> None:
        """Publish the display VS Code waits on, then its update with the answer."""
        self.publish(*vscode.background_display(background))
        answer: dict[str, Any] | None
        if background.complete is not None:
            answer = {"result": await self.do_complete(*background.complete)}
        elif background.inspect is not None:
            answer = {"result": await self.do_inspect(*background.inspect)}
        elif not self.remote.continuity.executed:  # no cell has run: no variables, and no session to create for this
            answer = vscode.fresh_background_answer(background)
        else:
            answer = await self.helper(vscode.session_code(background, HELPER_MARK), deadline=30.0)
        self.publish(*vscode.background_update(background, answer))

    # --- the back channel (comms.py): comms from the front end, stdin ---------------------------------

    async def comm_open(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        await self._comm_to_session(parent)

    async def comm_msg(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        await self._comm_to_session(parent)

    async def comm_close(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        await self._comm_to_session(parent)

    async def comm_info_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        if self.session:
            target = (parent.get("content") or {}).get("target_name")
            self.session.send(stream, "comm_info_reply", {"comms": self.comms.comm_info(target), "status": "ok"},
                              parent, ident)

    async def dispatch_shell(self, msg: Any, /, subshell_id: str | None = None, *, concurrent: bool = False) -> None:
        comms.CONCURRENT.set(concurrent)  # beside a running request: comms.py publishes a comm message's status
        await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)

    async def _comm_to_session(self, parent: dict[str, Any]) -> None:
        if self._cell is None:
            await self.comms.deliver(parent)
            return
        # ipykernel 7 dispatches a comm message while a cell runs and, when the handler returns, makes the
        # cell's request the current parent again: return at once, and deliver after the cell (in this context)
        task = asyncio.ensure_future(self.comms.deliver(parent))
        self.comms.tasks.add(task)
        task.add_done_callback(self.comms.tasks.discard)

    def ask_stdin(self, prompt: str, password: bool, stop: threading.Event) -> str | None:
        """ipykernel's `_input_request` (in a thread); None when `stop` is set first (the cell ended)."""
        return comms.ask_stdin(self, self._get_shell_context_var(self._shell_parent_ident), prompt, password, stop)

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        try:
            return self.language_spec.is_complete(code)
        except Exception:  # the checker is a convenience; never fail the request
            return {"status": "unknown"}

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        reply = {"status": "ok", "matches": [], "cursor_start": cursor_pos, "cursor_end": cursor_pos, "metadata": {}}
        try:
            return await self._complete(code, cursor_pos, reply)
        except Exception as exc:  # always a reply, whatever the session answered
            self.log.warning("completion failed: %r", exc)
            return reply

    async def _complete(self, code: str, cursor_pos: int, reply: dict[str, Any]) -> dict[str, Any]:
        magic = re.search(r"(?:^|\n)\s*(%\w*)$", code[:cursor_pos])
        if magic:
            word = magic.group(1)
            found = [("%%" if spec.cell else "%") + name for name, spec in MAGICS.items() if f"%{name}".startswith(word)]
            if found:
                return {**reply, "matches": found, "cursor_start": cursor_pos - len(word)}
        if self.language_spec.complete_code is None:
            return reply
        deadline = COMPLETE_DEADLINE if self.remote.completer_warm else FIRST_COMPLETE_DEADLINE
        answer = await self.helper(self.language_spec.complete_code(code, cursor_pos), deadline=deadline)
        checked = trust.completion(answer, code, cursor_pos)
        if checked is None:
            return reply
        self.remote.completer_warm = True
        return {**reply, **checked}

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: Any = ()) -> dict[str, Any]:
        reply: dict[str, Any] = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        try:
            return await self._inspect(code, cursor_pos, detail_level, reply)
        except Exception as exc:  # always a reply, whatever the session answered
            self.log.warning("inspection failed: %r", exc)
            return reply

    async def _inspect(self, code: str, cursor_pos: int, detail_level: int, reply: dict[str, Any]) -> dict[str, Any]:
        magic = re.search(r"%(\w+)$", code[:cursor_pos] + re.sub(r"\W.*", "", code[cursor_pos:], flags=re.DOTALL))
        if magic and magic.group(1) in MAGICS:
            return {**reply, "found": True, "data": {"text/plain": MAGICS[magic.group(1)].help}}
        if self.language_spec.inspect_code is None:
            return reply
        answer = await self.helper(self.language_spec.inspect_code(code, cursor_pos, detail_level), INSPECT_DEADLINE)
        data = trust.inspection(answer, self.guard.allow_active)
        return {**reply, "found": True, "data": data} if data else reply

    # --- interrupt and shutdown (these arrive on the control thread) ---------------------------

    def _cancel_cell(self) -> None:
        cell = self._cell
        if cell is not None:
            loop, task = cell
            loop.call_soon_threadsafe(task.cancel)

    def _interrupt_cell(self) -> None:
        """Interrupt the running cell the way its path can (on the cell's loop): see `cell.CellRun.interrupt`."""
        cell = self._cell
        if cell is None:
            return
        loop, task = cell

        def interrupt() -> None:
            run = self.cells.current
            if run is not None and run.task is task:
                run.interrupt()
            else:
                task.cancel()

        loop.call_soon_threadsafe(interrupt)

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:
        """Interrupt the running cell: what it printed stays, and it ends with where it stopped."""
        self._interrupt_cell()
        if self.session:
            self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    async def process_control(self, msg: Any) -> None:
        self._control_idle.clear()
        try:
            await super().process_control(msg)  # type: ignore[no-untyped-call]
        finally:
            self._control_idle.set()

    def pre_handler_hook(self) -> None:
        # a SIGINT (a terminal's Ctrl-C) cancels the cell instead of raising in the event loop
        self.saved_sigint_handler = signal.signal(signal.SIGINT, lambda signum, frame: self._interrupt_cell())

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self._cancel_cell()
        self.remote.cancel_warm_up()
        if not self._cleaned_up:
            await self.remote.delete(SHUTDOWN_DEADLINE)
        self.remote.request_pool_stop()  # it stops while this kernel exits; `_cleanup_sync` waits for it at exit
        self._cleaned_up = True
        return {"status": "ok", "restart": restart}

    def _cleanup_sync(self) -> None:
        """The fallback at exit: delete the session and stop the embedded pool, bounded."""
        # ipykernel closes IOPub at exit while the control thread may still be flushing after a
        # shutdown_request; that flush would then hang until the kernel manager sends SIGTERM
        self._control_idle.wait(1.0)
        if self._cleaned_up:
            self.remote.stop_pool(1.0)  # asked to stop by do_shutdown: wait for it (kill it past the timeout)
            return
        worker = threading.Thread(target=lambda: asyncio.run(self.remote.delete(SHUTDOWN_DEADLINE)), daemon=True)
        worker.start()
        worker.join(SHUTDOWN_DEADLINE + 0.5)
        self.remote.stop_pool(1.0)
        self._cleaned_up = True

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._cleanup_sync()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    # --- the session (comms.py asks the kernel for it) ----------------------------------------------

    async def session_client(self) -> SessionsClient:
        """The client of this kernel's session, made on first use (after the embedded pool is up)."""
        return await self.remote.client()
