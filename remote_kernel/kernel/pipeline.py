"""`CellPipeline`: one cell's path from `do_execute` to the session and back, as steps in order.

The kernel (`kernel.py`) answers the protocol; this is its shell, as IPython's `InteractiveShell` is
ipykernel's: the kernel's magics first (`magics.py`), a help-only cell as a page, then the cell
prepared for the session (its notices, the files beside the notebook, the shim's install and the
count line riding in the cell's own request), run (`cell.CellRun`), and its output decoded and
rendered (`render.py`), then the reply. Every step reads the session (`remote.RemoteSession`),
never the kernel's class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from remote_kernel.kernel import outputs, rich, trust
from remote_kernel.kernel.cell import CellRun, long_body
from remote_kernel.kernel.config import KernelConfig
from remote_kernel.kernel.embedded import EmbeddedPoolError
from remote_kernel.kernel.magics import MagicError, MagicRunner, missing_file_hint, split_cell, stdin_needed
from remote_kernel.kernel.python import count_code, count_prefix, helper_code
from remote_kernel.kernel.remote import HELPER_DEADLINE, RemoteSession
from remote_kernel.kernel.render import CellRender, Event
from remote_kernel.sessions.models import ServiceUnavailable, SessionNotFound, SessionsError

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

Reply = dict[str, Any]  # an execute_reply's content


class CellComms(Protocol):
    """What the cell path needs of the back channel (`comms.CommBridge`)."""

    def on_event(self, client: SessionsClient, event: Event) -> None: ...

    def cell_ended(self) -> None: ...

    def interrupt_input(self) -> bool: ...


class CellPipeline:
    """The cells of one kernel: their numbers, and each one's way through the session (`run`).

    It is the `cell.CellHost` of the runs it makes.
    """

    def __init__(self, remote: RemoteSession, comms: CellComms) -> None:
        self.remote = remote
        self.comms = comms
        self.magics = MagicRunner(remote)
        self.count = 1  # the number the next stored cell gets, as IPython counts
        self.stored = False  # the running cell is stored (it takes a number)
        self.unsent: list[str] = []  # stored cells that took a number but never reached the session
        self.allow_stdin = False  # the running request's allow_stdin
        self.current: CellRun | None = None  # how the running cell is executed (it knows how to interrupt it)
        self._notices_shown = False
        self._stdin_rides = False  # the running cell's count line tells the back channel its allow_stdin

    # --- cell.CellHost ------------------------------------------------------------------------------

    @property
    def settings(self) -> KernelConfig:
        return self.remote.settings

    @property
    def rich(self) -> rich.RichOutput:
        return self.remote.rich

    @property
    def jupyter_repr(self) -> bool:
        return self.remote.jupyter_repr

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        self.remote.publish(msg_type, content)

    async def helper(self, code: str, deadline: float = HELPER_DEADLINE) -> dict[str, Any] | None:
        return await self.remote.helper(code, deadline)

    def interrupt_input(self) -> bool:
        return self.comms.interrupt_input()

    # --- a cell ---------------------------------------------------------------------------------------

    def begin(self, stored: bool, allow_stdin: bool) -> int:
        """A request arrived: its number (the prompt's), counted when `stored`."""
        self.allow_stdin = allow_stdin
        self.remote.guard.new_cell()  # each cell's outputs get the screen's budget afresh
        number = self.count
        self.stored = stored
        if stored:
            self.count += 1
        return number

    def fail(self, message: outputs.Message, payload: list[dict[str, Any]] | None = None) -> Reply:
        """Show `message` (an error) and make the error reply that goes with it."""
        self.publish(*message)
        return outputs.error_reply(message, self.count - 1, payload=payload)

    async def run(self, code: str, number: int, user_expressions: dict[str, str]) -> Reply:
        """The cell's whole path: kernel magics, a help-only cell, the session, the reply."""
        long = long_body(code) if self.remote.language.rich_output else None
        calls, remote_code = ([], long) if long is not None else split_cell(code)
        payload: list[dict[str, Any]] = []
        sent = False
        try:
            for call in calls:
                payload += await self.magics.run(call)
            if not remote_code.strip():
                return outputs.ok_reply(self.count - 1, payload=payload)
            helped = await self._help_cell(remote_code)
            if helped is not None:
                return outputs.ok_reply(self.count - 1, payload=payload + self._screened_pages(helped))
            self._check_stdin(remote_code)
            client = await self.remote.client()
            prefix, riding = await self._prepare(client, number, remote_code, long)
            render = self.render(client, number, riding=riding)
            self.current = run = CellRun(self, client, render, remote_code, prefix=prefix)
            sent = long is None  # a %%long cell runs in a thread of the session: its shell does not count it
            if sent:
                self.unsent, self.remote.counter_reset = [], False
            execution = await (run.run() if long is None else self._run_long(run, long))
            if self._stdin_rides:
                self.rich.allow_stdin = self.allow_stdin  # the count line told the back channel
            notice = await self.remote.after_execution(client, execution.session_guid)
        except MagicError as exc:
            return self.fail(outputs.error(exc.ename, exc.message, exc.message.splitlines()), payload)
        except SessionNotFound as exc:
            self.remote.changed("lost")
            return self.fail(outputs.transport_error(exc), payload)
        except (SessionsError, EmbeddedPoolError) as exc:
            # a connection the embedded pool refused may mean that it just died
            grace = 1.0 if isinstance(exc, ServiceUnavailable) else 0
            return self.fail(outputs.transport_error(await self.remote.pool_stopped(grace) or exc), payload)
        finally:
            self.current = None
            if not sent and self.stored:
                self.unsent.append(code)
            self.comms.cell_ended()
        if notice:
            self.publish(*outputs.stream("stderr", notice))
        err = await render.finish(execution)
        payload += self._screened_pages(render.pages)
        self.rich.after_cell(client)
        return await self._reply(err, render, remote_code, payload, user_expressions)

    def _check_stdin(self, code: str) -> None:
        """A cell that reads stdin where it cannot be answered fails as ipykernel's does."""
        needs_stdin = stdin_needed(code)
        if needs_stdin and not (self.allow_stdin and self.rich.enabled and self.rich.refused is None):
            raise MagicError(needs_stdin, "StdinNotImplementedError")

    async def _prepare(self, client: SessionsClient, number: int, code: str, long: str | None) -> tuple[str, bool]:
        """Everything the session needs before the cell: the lines to put before its code, in the same request
        (the shim's install, or the count line), after what must go first on its own; and whether the shim's
        install rides with the cell (its answer is then the cell's first line of stdout)."""
        self._show_notices()
        notice = await self.remote.before_cell(client)
        if notice:
            self.publish(*outputs.stream("stderr", notice))
        notice = await self.remote.files.sync(client)  # REMOTE_KERNEL_FILES=notebook
        if notice:
            self.publish(*outputs.stream("stderr", notice))
        count_line = ""  # the session's shell skips the numbers of cells the kernel answered itself
        behind = self.unsent or (self.remote.counter_reset and number > 1)
        tell = self._stdin_changed()  # the back channel learns the request's allow_stdin in the count line
        if (behind or (tell and self.stored)) and self.remote.language.rich_output:
            if not self.rich.needs_install and long is None and rich.can_ride(code):
                count_line = count_prefix(number, self.unsent, self.allow_stdin if tell else None)  # in the
                # cell's own request; in step with the session (not behind), it only takes itself out of the cell
            elif behind:
                await self._catch_up_count(client, number)
        riding = await self.remote.install_rich(client, code if long is None else None, self.allow_stdin)
        self._stdin_rides = tell and bool(count_line)
        if tell and not count_line:
            await self._tell_stdin()
        await self.remote.send_deferred(client)
        return (riding, True) if riding else (count_line, False)

    async def _run_long(self, run: CellRun, body: str) -> Any:
        if not self.rich.installed:
            raise MagicError("%%long needs the rich-output shim in the session "
                             f"({self.rich.refused or 'REMOTE_KERNEL_RICH=0'}); without it, split the work "
                             "into cells shorter than the pool's execution limit.", "LongCellError")
        return await run.run_long(body)

    async def _reply(self, err: outputs.Message | None, render: CellRender, code: str,
                     payload: list[dict[str, Any]], user_expressions: dict[str, str]) -> Reply:
        """The hints that follow an error, and the reply."""
        if err is not None and err[1]["ename"] == "SessionLost":
            self.remote.changed("lost")
            self._advise_memory(err[1])
        hint = missing_file_hint(err[1]["ename"] if err else "", err[1]["evalue"] if err else "",
                                 stderr=render.seen["stderr"], stdout=render.seen["stdout"], code=code,
                                 files=self.remote.files)
        if hint:
            self.publish(*outputs.stream("stderr", hint))
        if err is not None:
            return outputs.error_reply(err, self.count - 1, payload=payload)
        expressions = await self.user_expressions(user_expressions) if user_expressions else {}
        return outputs.ok_reply(self.count - 1, payload=payload, user_expressions=expressions)

    def render(self, client: SessionsClient, number: int, riding: bool = False) -> CellRender:
        """The renderer of one cell: the shim's markers when the shim is in this session (or `riding`
        with this cell, whose first line of stdout is then the install's answer)."""
        nonce = self.rich.nonce if riding else self.rich.active_nonce

        async def fetch(cell: int) -> bytes:
            return await self.rich.fetch(client, cell)

        language = self.remote.language
        return CellRender(self.publish, number, nonce=nonce, fetch=fetch if nonce else None,
                          jupyter_repr=self.jupyter_repr, format_value=language.format_value,
                          answer=self.rich.record_answer if riding else None,
                          interrupted_name=language.interrupted[0],
                          on_event=lambda event: self.comms.on_event(client, event))

    # --- the steps' helpers ------------------------------------------------------------------------------

    async def _catch_up_count(self, client: SessionsClient, number: int) -> None:
        """Cells that took a number here without reaching the session (a kernel magic, a help-only cell):
        the session's shell skips their numbers too, so that `Out[n]`, `_in` and `Cell In[n]` match the
        prompt, as on ipykernel, and `In` holds their source. Usually a line before the next cell does it
        (`count_prefix`, no request of its own); this helper, when that cell cannot carry a line."""
        if self.rich.needs_install:  # the shim applies it after the helper (which is kept out of the history)
            await self.remote.install_rich(client, None)
        await self.helper(count_code(number, self.unsent), deadline=10.0)
        self.unsent = []

    def _stdin_changed(self) -> bool:
        """Whether the session's back channel must be told this request's allow_stdin (it changed)."""
        return self.rich.installed and self.rich.comms and self.rich.allow_stdin != self.allow_stdin

    async def _tell_stdin(self) -> None:
        """Tell the session's back channel whether this request allows stdin, in a helper of its own (a cell
        that cannot carry the count line)."""
        if self._stdin_changed():
            answer = await self.helper(helper_code(f"import sys\nsys.modules['_remote_kernel_rich'].active.back"
                                                   f".allow_stdin = {self.allow_stdin!r}\nanswer = {{'ok': True}}"),
                                       deadline=30.0)
            if answer and answer.get("ok"):
                self.rich.allow_stdin = self.allow_stdin

    def _show_notices(self) -> None:
        """What the configuration used, but not as given: said once, on the first cell that reaches a session."""
        notices = self.settings.notices
        if notices and not self._notices_shown:
            self._notices_shown = True
            self.publish(*outputs.stream("stderr", "".join(f"remote_kernel: {n}\n" for n in notices)))

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
        page_code = self.remote.language.page_code
        helper = page_code(code) if page_code else None
        if helper is None:
            return None
        answer = await self.helper(helper, deadline=30.0)
        if not answer or not isinstance(answer.get("payload"), list):
            return None
        if answer.get("stdout"):
            self.publish(*outputs.stream("stdout", str(answer["stdout"])))
        pages: list[dict[str, Any]] = answer["payload"]
        return pages

    def _screened_pages(self, pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pages for the reply's payload, screened as displays are (`trust`): front ends show them as output."""
        kept = []
        for page in pages:
            screened, notice = self.remote.guard.screen("display_data", {"data": page.get("data"), "metadata": {},
                                                                         "transient": {}})
            if notice:
                self.publish(*outputs.stream("stderr", notice))
            if screened is not None:
                kept.append({**page, "data": screened["data"]})
        return kept

    async def user_expressions(self, expressions: dict[str, str]) -> dict[str, Any]:
        """ipykernel's user_expressions, evaluated in the session."""
        code = self.remote.language.expressions_code
        if code is None:
            return {}
        answer = await self.helper(code(expressions), deadline=10.0)
        results = trust.expressions(answer, list(expressions), self.remote.guard.allow_active)
        if results is None:
            error = answer.get("error") if answer is not None else None
            reason = error if isinstance(error, str) else "the session gave no usable answer"
            return {name: {"status": "error", "ename": "UserExpressionError", "evalue": reason[:1000], "traceback": []}
                    for name in expressions}
        return results
