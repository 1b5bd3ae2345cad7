"""`RemoteKernel`: Jupyter messages in, executions in a remote session out.

The protocol plumbing is ipykernel's. This class answers the protocol's requests and delegates:
a kernel magic runs here (`magics.py`), code goes to the session this kernel talks to
(`remote.RemoteSession`, which owns the client, the identifier, the embedded pool and the state
tied to one session), a cell's execution is `cell.CellRun`, what comes back becomes messages
(`render.py`, `outputs.py`), and what differs per language is the table of `languages.py`. The
session is created lazily by the first cell, so start-up never blocks on the network or fails.
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
from remote_kernel.kernel.cell import CellRun, long_body
from remote_kernel.kernel.config import KernelConfig
from remote_kernel.kernel.embedded import EmbeddedPool, EmbeddedPoolError
from remote_kernel.kernel.helper import HELPER_MARK, read_answer
from remote_kernel.kernel.languages import PYTHON, Language
from remote_kernel.kernel.magics import (MAGICS, MagicError, MagicRunner, missing_file_hint, split_cell,
                                         stdin_needed)
from remote_kernel.kernel.python import count_code, count_prefix, helper_code
from remote_kernel.kernel.remote import RemoteSession
from remote_kernel.kernel.render import CellRender
from remote_kernel.sessions.models import ServiceUnavailable, SessionNotFound, SessionsError

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

HELPER_DEADLINE = 1.0  # seconds for inspection; past it the answer is empty
COMPLETE_DEADLINE = 10.0  # seconds for a completion
#: seconds for a session's first completion: jedi loads then (seconds, as in a local kernel), and a load cut
#: short by the deadline (the pool interrupts the execution) can leave jedi unable to complete names later
FIRST_COMPLETE_DEADLINE = 60.0
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
        super().__init__(**kwargs)
        # ipykernel sleeps 0.5 ms before each execute_reply so that what a cell printed to the kernel's
        # own sys.stdout is flushed first; cells here never print there (their output is published as
        # messages before the reply is sent), so the sleep would only add to every cell's round trip
        self._execute_sleep = 0.0
        self._quiet_library_logs()
        settings, embedded = self.startup or (KernelConfig.from_env(), None)
        self.settings = settings
        self.remote = RemoteSession(settings, self.language_spec, embedded)
        self._count = 1  # the number the next stored cell gets, as IPython counts
        self._stored = False  # the running cell is stored (it takes a number)
        self._unsent: list[str] = []  # stored cells that took a number but never reached the session
        self._cell: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None
        self._run: CellRun | None = None  # how the running cell is executed (it knows how to interrupt it)
        self._cleaned_up = False
        self._control_idle = threading.Event()
        self._control_idle.set()
        self._publish_silently = False
        self._notices_shown = False
        self.magics = MagicRunner(self)
        self.comms = comms.CommBridge(self)
        self.vscode = vscode.VSCodeRequests()
        atexit.register(self._cleanup_sync)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

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

    # --- protocol ------------------------------------------------------------------------

    @property
    def execution_count(self) -> int:  # type: ignore[override]
        return self._count

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
        if self._publish_silently:
            return
        degraded = [(msg_type, content)] if self.rich.comms and self.rich.installed else \
            self.remote.widgets.degrade(msg_type, content)  # no comm channel to this session
        for kind, body in degraded:
            screened, notice = self.guard.screen(kind, body)
            if notice:
                self.send_response(self.iopub_socket, "stream", {"name": "stderr", "text": notice})
            if screened is not None:
                self.send_response(self.iopub_socket, kind, screened)

    async def do_execute(self, code: str, silent: bool, store_history: bool = True,
                         user_expressions: dict | None = None, allow_stdin: bool = False, *,
                         cell_meta: dict[str, Any] | None = None, cell_id: str | None = None) -> dict[str, Any]:
        # cell_meta and cell_id (what front ends send with a cell) are not needed: the session has no cells
        self._allow_stdin = allow_stdin
        self._publish_silently = silent
        self.guard.new_cell()  # each cell's outputs get the screen's budget afresh
        number = self._count
        self._stored = store_history and not silent
        if self._stored:
            self._count += 1
        hidden = vscode.classify(code, store_history, self.remote.continuity.executed)
        if hidden is not None and hidden.route != "session":
            return await self._answer_hidden(hidden, code)
        await self.comms.idle()  # a front end's comm message on its way to the session goes first
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run_cell(code, number, user_expressions or {}))
        self._cell = (loop, task)
        try:
            await asyncio.wait({task})
        finally:
            self._cell = None
        if task.cancelled():
            return self._fail(outputs.interrupted(*self.language_spec.interrupted))
        if task.exception() is not None:
            exc = task.exception()
            self.log.error("internal error running a cell", exc_info=exc)
            return self._fail(outputs.error(type(exc).__name__, f"remote_kernel failed: {exc}"))
        return task.result()

    async def _answer_hidden(self, hidden: vscode.Hidden, code: str) -> dict[str, Any]:
        """A VS Code request answered without running it as a cell (`vscode.py` says which)."""
        if hidden.background is not None:
            await self.vscode.answer_background(self, hidden.background, self._run_background)
        elif any(helper in code for helper in vscode.SESSION_HELPERS):
            msg_type, content = vscode.fresh_kernel_answer(code)
            self.publish(msg_type, content)
            if msg_type == "error":
                return outputs.error_reply((msg_type, content), self._count - 1)
        else:
            self.vscode.keep(hidden)
        return outputs.ok_reply(self._count - 1)

    async def _run_background(self, background: vscode.Background) -> dict[str, Any] | None:
        if not self.remote.continuity.executed:  # no cell has run: no variables, and no session to create for this
            return vscode.fresh_background_answer(background)
        return await self._helper(vscode.session_code(background, HELPER_MARK), deadline=30.0)

    def _fail(self, message: outputs.Message, payload: list | None = None) -> dict[str, Any]:
        self.publish(*message)
        return outputs.error_reply(message, self._count - 1, payload=payload)

    async def _run_cell(self, code: str, number: int, user_expressions: dict) -> dict[str, Any]:
        long = long_body(code) if self.language_spec.rich_output else None
        calls, remote_code = ([], long) if long is not None else split_cell(code)
        payload: list = []
        render: CellRender | None = None
        sent = False
        try:
            for call in calls:
                payload += await self.magics.run(call)
            if not remote_code.strip():
                return outputs.ok_reply(self._count - 1, payload=payload)
            helped = await self._help_cell(remote_code)
            if helped is not None:
                return outputs.ok_reply(self._count - 1, payload=payload + self._screened_pages(helped))
            needs_stdin = stdin_needed(remote_code)
            if needs_stdin and not (self._allow_stdin and self.rich.enabled and self.rich.refused is None):
                raise MagicError(needs_stdin, "StdinNotImplementedError")
            client = await self.session_client()
            self._show_notices()
            notice = await self.remote.before_cell(client)
            if notice:
                self.publish(*outputs.stream("stderr", notice))
            notice = await self.remote.files.sync(client)  # REMOTE_KERNEL_FILES=notebook
            if notice:
                self.publish(*outputs.stream("stderr", notice))
            count_line = ""  # the session's shell skips the numbers of cells the kernel answered itself
            behind = self._unsent or (self.remote.counter_reset and number > 1)
            if behind and self.language_spec.rich_output:
                if not self.rich.needs_install and long is None and rich.can_ride(remote_code):
                    count_line = count_prefix(number, self._unsent)  # in the cell's own request
                else:
                    await self._catch_up_count(client, number)
            riding = await self.remote.install_rich(client, remote_code if long is None else None, self._allow_stdin)
            await self._tell_stdin(client)
            await self._send_deferred(client)
            render = self._render(client, number, riding=bool(riding))
            self._run = run = CellRun(self, client, render, remote_code, prefix=riding or count_line)
            sent = long is None  # a %%long cell runs in a thread of the session: its shell does not count it
            if sent:
                self._unsent, self.remote.counter_reset = [], False
            if long is not None:
                if not self.rich.installed:
                    raise MagicError("%%long needs the rich-output shim in the session "
                                     f"({self.rich.refused or 'REMOTE_KERNEL_RICH=0'}); without it, split the work "
                                     "into cells shorter than the pool's execution limit.", "LongCellError")
                execution = await run.run_long(long)
            else:
                execution = await run.run()
            notice = await self.remote.after_execution(client, execution.session_guid)
        except MagicError as exc:
            return self._fail(outputs.error(exc.ename, exc.message, exc.message.splitlines()), payload)
        except SessionNotFound as exc:
            self.remote.changed("lost")
            return self._fail(outputs.transport_error(exc), payload)
        except (SessionsError, EmbeddedPoolError) as exc:
            # a connection the embedded pool refused may mean that it just died
            grace = 1.0 if isinstance(exc, ServiceUnavailable) else 0
            return self._fail(outputs.transport_error(await self.remote.pool_stopped(grace) or exc), payload)
        finally:
            self._run = None
            if not sent and self._stored:
                self._unsent.append(code)
            self.comms.cell_ended()
        if notice:
            self.publish(*outputs.stream("stderr", notice))
        err = await render.finish(execution)
        payload += self._screened_pages(render.pages)
        self.rich.after_cell(client)
        if err is not None and err[1]["ename"] == "SessionLost":
            self.remote.changed("lost")
            self._advise_memory(err[1])
        hint = missing_file_hint(err[1]["ename"] if err else "", err[1]["evalue"] if err else "",
                                 stderr=render.seen["stderr"], stdout=render.seen["stdout"], code=remote_code,
                                 files=self.remote.files)
        if hint:
            self.publish(*outputs.stream("stderr", hint))
        if err is not None:
            return outputs.error_reply(err, self._count - 1, payload=payload)
        expressions = await self._user_expressions(user_expressions) if user_expressions else {}
        return outputs.ok_reply(self._count - 1, payload=payload, user_expressions=expressions)

    async def _catch_up_count(self, client: SessionsClient, number: int) -> None:
        """Cells that took a number here without reaching the session (a kernel magic, a help-only cell):
        the session's shell skips their numbers too, so that `Out[n]`, `_in` and `Cell In[n]` match the
        prompt, as on ipykernel, and `In` holds their source. Usually a line before the next cell does it
        (`count_prefix`, no request of its own); this helper, when that cell cannot carry a line."""
        if self.rich.needs_install:  # the shim applies it after the helper (which is kept out of the history)
            await self.remote.install_rich(client, None)
        await self._helper(count_code(number, self._unsent), deadline=10.0)
        self._unsent = []

    def _show_notices(self) -> None:
        """What the configuration used, but not as given: said once, on the first cell that reaches a session."""
        if self.settings.notices and not self._notices_shown:
            self._notices_shown = True
            self.publish(*outputs.stream("stderr", "".join(f"remote_kernel: {n}\n" for n in self.settings.notices)))

    def _advise_memory(self, error: dict[str, Any]) -> None:
        """A session of the embedded pool lost to its memory limit: name the setting that raises it."""
        if self.remote.embedded is not None and "out of memory" in error.get("evalue", ""):
            current = self.settings.pool_settings.get("REMOTE_KERNEL_MEMORY", "1G")
            self.publish(*outputs.stream("stderr", f"The embedded pool gives each session {current} of memory: set "
                                         "REMOTE_KERNEL_MEMORY (for example 4G) in the kernel's environment and "
                                         "restart the kernel to raise it.\n"))

    async def _help_cell(self, code: str) -> list[dict[str, Any]] | None:
        """A help-only cell (`obj?`, `%magic`): its pages as the reply's payload, as ipykernel sends them,
        and what it printed. None: not such a cell, or no answer (the cell then runs as any other)."""
        helper = self.language_spec.page_code(code) if self.language_spec.page_code else None
        if helper is None:
            return None
        answer = await self._helper(helper, deadline=30.0)
        if not answer or not isinstance(answer.get("payload"), list):
            return None
        if answer.get("stdout"):
            self.publish(*outputs.stream("stdout", str(answer["stdout"])))
        return answer["payload"]

    def _screened_pages(self, pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pages for the reply's payload, screened as displays are (`trust`): front ends show them as output."""
        kept = []
        for page in pages:
            screened, notice = self.guard.screen("display_data", {"data": page.get("data"), "metadata": {},
                                                                  "transient": {}})
            if notice:
                self.publish(*outputs.stream("stderr", notice))
            if screened is not None:
                kept.append({**page, "data": screened["data"]})
        return kept

    async def session_magics(self) -> str | None:
        """The session's own `%lsmagic` listing (None when the language has none or there is no answer)."""
        if self.language_spec.lsmagic_code is None:
            return None
        answer = await self._helper(self.language_spec.lsmagic_code, deadline=10.0)
        return str(answer["text"]) if answer and "text" in answer else None

    def _render(self, client: SessionsClient, number: int, riding: bool = False) -> CellRender:
        """The renderer of one cell: the shim's markers when the shim is in this session (or `riding`
        with this cell, whose first line of stdout is then the install's answer)."""
        nonce = self.rich.nonce if riding else self.rich.active_nonce

        async def fetch(cell: int) -> bytes:
            return await self.rich.fetch(client, cell)

        return CellRender(self.publish, number, nonce=nonce, fetch=fetch if nonce else None,
                          jupyter_repr=self._jupyter_repr, format_value=self.language_spec.format_value,
                          answer=self.rich.record_answer if riding else None,
                          interrupted_name=self.language_spec.interrupted[0],
                          on_event=lambda event: self.comms.on_event(client, event))

    # --- the back channel (comms.py): comms from the front end, stdin ---------------------------------

    async def _tell_stdin(self, client: SessionsClient) -> None:
        """Tell the session's back channel whether this request allows stdin, when that changed."""
        if self.rich.installed and self.rich.comms and self.rich.allow_stdin != self._allow_stdin:
            answer = await self._helper(helper_code(f"import sys\nsys.modules['_remote_kernel_rich'].active.back"
                                                    f".allow_stdin = {self._allow_stdin!r}\nanswer = {{'ok': True}}"),
                                        deadline=30.0)
            if answer and answer.get("ok"):
                self.rich.allow_stdin = self._allow_stdin

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

    async def _send_deferred(self, client: SessionsClient) -> None:
        """Run what VS Code's start-up set for the session (`__vsc_ipynb_file__`), silently, before a cell."""
        code = self.vscode.take_deferred()
        if code:
            try:
                await client.execute(code, timeout=self.settings.timeout, jupyter_repr=False)
            except Exception:
                self.vscode.put_back(code)
                raise

    @property
    def _jupyter_repr(self) -> bool:
        return self.settings.jupyter_repr and self.language_spec.jupyter_repr

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
        answer = await self._helper(self.language_spec.complete_code(code, cursor_pos), deadline=deadline)
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
        answer = await self._helper(self.language_spec.inspect_code(code, cursor_pos, detail_level))
        data = trust.inspection(answer, self.guard.allow_active)
        return {**reply, "found": True, "data": data} if data else reply

    async def _user_expressions(self, expressions: dict[str, str]) -> dict[str, Any]:
        if self.language_spec.expressions_code is None:
            return {}
        answer = await self._helper(self.language_spec.expressions_code(expressions), deadline=10.0)
        results = trust.expressions(answer, list(expressions), self.guard.allow_active)
        if results is None:
            error = answer.get("error") if answer is not None else None
            reason = error if isinstance(error, str) else "the session gave no usable answer"
            return {name: {"status": "error", "ename": "UserExpressionError", "evalue": reason[:1000], "traceback": []}
                    for name in expressions}
        return results

    async def _helper(self, code: str, deadline: float = HELPER_DEADLINE) -> dict[str, Any] | None:
        """Run a silent helper in the session (never counted, never shown) and read its JSON answer.

        The answer is capped (trust.HELPER_ANSWER_LIMIT); the helper prints its line last, so the
        last marked line that holds a JSON object is taken (a hook may print the marker too).
        """
        async def run() -> dict[str, Any] | None:
            client = await self.session_client()
            deferred = self.vscode.take_deferred()  # VS Code's start-up lines go first (they are plain Python)
            try:
                execution = await client.execute(f"{deferred}\n{code}" if deferred else code,
                                                 timeout=max(deadline, 1.0), jupyter_repr=False,
                                                 answer_limit=trust.HELPER_ANSWER_LIMIT)
            except BaseException:
                self.vscode.put_back(deferred)
                raise
            self.remote.continuity.touched()
            return read_answer(execution.stdout)

        try:
            return await asyncio.wait_for(run(), deadline)
        except Exception as exc:  # a timeout, a transport problem, an answer we cannot read: no answer
            self.log.debug("helper execution gave no answer: %r", exc)
            return None

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
            run = self._run
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
            await super().process_control(msg)
        finally:
            self._control_idle.set()

    def pre_handler_hook(self) -> None:
        # a SIGINT (a terminal's Ctrl-C) cancels the cell instead of raising in the event loop
        self.saved_sigint_handler = signal.signal(signal.SIGINT, lambda signum, frame: self._interrupt_cell())

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self._cancel_cell()
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

    # --- the session (what magics and cell runs ask of the kernel) ------------------------------------

    async def session_client(self) -> SessionsClient:
        """The client of this kernel's session, made on first use (after the embedded pool is up)."""
        return await self.remote.client()

    def session_rows(self) -> list[tuple[str, str]]:
        return self.remote.rows()

    @property
    def download_limit(self) -> int:
        """The largest file `%download` accepts (REMOTE_KERNEL_DOWNLOAD_LIMIT)."""
        return self.settings.download_limit

    def sync_notebook_files(self, mode: str) -> None:
        """`%session files notebook|off`: whether each cell first syncs the notebook's folder (notebook_files)."""
        self.remote.files.mode = mode

    def allow_active_content(self, allowed: bool) -> None:
        """`%session active on|off`: whether outputs keep scripts (for this kernel, every session)."""
        self.guard.allow_active = allowed

    async def new_session(self) -> tuple[str, str]:
        """Delete the session and move to a fresh one (a new identifier, unless it was configured)."""
        return await self.remote.new_session()
