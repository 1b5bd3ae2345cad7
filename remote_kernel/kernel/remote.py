"""`RemoteSession`: the session a kernel talks to, and everything that depends on which one it is.

One object owns the sessions client, the session identifier, the embedded pool (when the kernel
started one), and the state that belongs to one session: whether the rich-output shim is in it
(`rich.py`), which session answered last (`continuity.py`), whether its completer is warm, the
widget note and the active-content notice (said once per session). When the session changes —
lost, noticed to be new, replaced on purpose, its embedded pool restarted — `changed()` resets
all of it in one place.

It is also what the notebook sees of the session: `publish` (an output, screened by `trust` and
degraded by `widgets` where the session has no comms), `helper` (a silent execution that answers a
question), and the kernel magics' host (`magics.MagicHost`). The kernel gives it `send`, the one
way to the front end.

The sessions client (httpx) is imported on first use, so that a kernel starts without it.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from remote_kernel.kernel import rich, trust, widgets
from remote_kernel.kernel.config import KernelConfig
from remote_kernel.kernel.continuity import SessionContinuity
from remote_kernel.kernel.embedded import EmbeddedPool, EmbeddedPoolError
from remote_kernel.kernel.helper import read_answer
from remote_kernel.kernel.languages import Language
from remote_kernel.kernel.notebook_files import NotebookFiles
from remote_kernel.kernel.vscode import VSCodeRequests
from remote_kernel.sessions.models import ConfigurationError, SessionNotFound

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

log = logging.getLogger(__name__)

#: how the session changed: "new" on purpose (`%session new`, a restarted embedded pool: nothing to
#: report), "lost" (an error already told the user), "noticed" (continuity saw another session answer
#: and returned its notice)
Change = Literal["new", "lost", "noticed"]
#: one IOPub message to the front end: (msg_type, content)
Send = Callable[[str, dict[str, Any]], None]

HELPER_DEADLINE = 1.0  # seconds for a helper (inspection); past it the answer is empty


class RemoteSession:
    """The session this kernel talks to (one identifier per kernel) and the state tied to it."""

    def __init__(self, settings: KernelConfig, language: Language, embedded: EmbeddedPool | None = None,
                 send: Send | None = None) -> None:
        self.settings = settings
        self._send: Send = send or (lambda msg_type, content: None)
        self.language = language
        self.identifier = settings.identifier
        self.endpoint: str | None = settings.endpoint
        self._token: str | None = settings.token
        self._auth_mode = settings.auth_mode
        self._client: SessionsClient | None = None
        self.continuity = SessionContinuity()
        self.rich = rich.RichOutput(settings.rich and language.rich_output)
        self.guard = trust.OutputGuard(settings.active_content)
        self.widgets = widgets.WidgetFallback()
        self.completer_warm = False  # whether the session answered a completion (jedi is loaded there)
        self.files = NotebookFiles(settings.files, patterns=settings.files_exclude)  # REMOTE_KERNEL_FILES
        self.counter_reset = False  # the session's shell counts from 1 again (a new session)
        self.vscode = VSCodeRequests()  # VS Code's start-up lines, sent with the next request that reaches it
        self.embedded = embedded
        self._warming: asyncio.Task[None] | None = None  # warm_up's task, until the first cell has waited for it
        if self.embedded is None and settings.embedded and not settings.problems:
            self.embedded = self._start_pool()
        if self.embedded is not None:
            self._token, self._auth_mode = self.embedded.token, "token"

    def changed(self, how: Change) -> None:
        """The session is another one than before: forget everything that belonged to the old one."""
        if how == "new":
            self.continuity.reset()
        elif how == "lost":
            self.continuity.lost()
        self.rich.forget()  # the next cell installs the shim again
        self.widgets.forget()
        self.guard.new_session()
        self.files.forget()  # the new session has none of the notebook's files
        self.counter_reset = True  # its shell counts cells from 1: the kernel brings it to the prompt's number
        self.completer_warm = False

    # --- the client ------------------------------------------------------------------------------

    def new_client(self) -> SessionsClient:
        """A client of this session (the kernel's own, or a short-lived one for another event loop)."""
        from remote_kernel.sessions import SessionsClient, auth_from_settings

        if self.endpoint is None:
            raise ConfigurationError("No pool endpoint: set POOL_MANAGEMENT_ENDPOINT, or leave it unset for an "
                                     "embedded local pool, and restart the kernel.")
        return SessionsClient(self.endpoint, self.identifier, api_version=self.settings.api_version,
                              auth=auth_from_settings(self._auth_mode, self._token, self.endpoint),
                              timeout=self.settings.timeout, max_timeout=self.settings.execution_limit)

    async def client(self) -> SessionsClient:
        """The client of this kernel's session, made on first use (after the embedded pool is up)."""
        if self.settings.problems:
            raise ConfigurationError("The kernel's configuration cannot work:\n- " + "\n- ".join(
                self.settings.problems) + "\nFix the environment of the kernel (or its kernelspec) and restart it.")
        stopped = await self.pool_stopped()
        if stopped is not None:
            raise stopped
        if self._client is None:
            if self.embedded is not None:  # the client's modules (httpx) load while the pool finishes starting
                self.endpoint, _ = await asyncio.gather(self.embedded.wait_ready(), asyncio.to_thread(
                    importlib.import_module, "remote_kernel.sessions.client"))
            self._client = self.new_client()
            if self.embedded is not None:
                self._client.extensions.add("live-execute")  # the kernel started this pool: it has the extension
        return self._client

    @property
    def reached_pool(self) -> bool:
        """Whether any request of this kernel reached the pool (else there is no session to delete)."""
        return self._client is not None and self._client.reached_pool

    @property
    def jupyter_repr(self) -> bool:
        """Whether executions ask the pool for the interpreter's display repr of a result (the pool's API
        version has it, and the language answers with it)."""
        return self.settings.jupyter_repr and self.language.jupyter_repr

    # --- what the notebook sees ------------------------------------------------------------------

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        """Send one IOPub message for the current cell, screened by `trust` (widgets degraded to what
        they show where this session has no comms)."""
        degraded = [(msg_type, content)] if self.rich.comms and self.rich.installed else \
            self.widgets.degrade(msg_type, content)
        for kind, body in degraded:
            screened, notice = self.guard.screen(kind, body)
            if notice:
                self._send("stream", {"name": "stderr", "text": notice})
            if screened is not None:
                self._send(kind, screened)

    async def helper(self, code: str, deadline: float = HELPER_DEADLINE) -> dict[str, Any] | None:
        """Run a silent helper in the session (never counted, never shown) and read its JSON answer
        (None: no answer within `deadline`, a transport problem, an answer that cannot be read).

        The answer is capped (trust.HELPER_ANSWER_LIMIT); the helper prints its line last, so the
        last marked line that holds a JSON object is taken (a hook may print the marker too).
        """
        async def run() -> dict[str, Any] | None:
            client = await self.client()
            deferred = self.vscode.take_deferred()  # VS Code's start-up lines go first (they are plain Python)
            try:
                execution = await client.execute(f"{deferred}\n{code}" if deferred else code,
                                                 timeout=max(deadline, 1.0), jupyter_repr=False,
                                                 answer_limit=trust.HELPER_ANSWER_LIMIT)
            except BaseException:
                self.vscode.put_back(deferred)
                raise
            self.continuity.touched()
            return read_answer(execution.stdout)

        try:
            return await asyncio.wait_for(run(), deadline)
        except Exception as exc:  # a timeout, a transport problem, an answer we cannot read: no answer
            log.debug("helper execution gave no answer: %r", exc)
            return None

    async def send_deferred(self, client: SessionsClient) -> None:
        """Run what VS Code's start-up set for the session (`__vsc_ipynb_file__`), silently, before a cell."""
        code = self.vscode.take_deferred()
        if code:
            try:
                await client.execute(code, timeout=self.settings.timeout, jupyter_repr=False)
            except Exception:
                self.vscode.put_back(code)
                raise

    # --- what a cell goes through ----------------------------------------------------------------

    async def before_cell(self, client: SessionsClient) -> str | None:
        """The lost-state notice when a guid-less pool's session changed during an idle spell."""
        notice = await self.continuity.before_cell(client)
        if notice:
            self.changed("noticed")
        return notice

    async def after_execution(self, client: SessionsClient, guid: str | None) -> str | None:
        """Record which session answered; the lost-state notice when the cell ran in a new one."""
        notice = await self.continuity.after_execution(client, guid)
        if notice:
            self.changed("noticed")  # the cell ran in a new session, without the shim
        return notice

    def warm_up(self) -> asyncio.Task[None] | None:
        """With the kernel's own pool, get the session ready for the first cell once the kernel is up (on the
        kernel's loop): the sessions client loads, and the rich-output shim goes in the pool's ready session,
        in a silent execution of its own (out of the session's history), so that the first cell runs alone.
        A pool elsewhere (hosted) is not touched before the first cell: a session there is the user's to
        start, and there the shim rides with that cell instead (one request)."""
        if self.embedded is not None and self._warming is None and not self.settings.problems:
            self._warming = asyncio.get_running_loop().create_task(self._warm())
        return self._warming

    async def _warm(self) -> None:
        try:
            client = await self.client()  # the sessions client loads while the pool finishes starting
            if self.rich.needs_install:
                await self.install_rich(client, warming=True)
        except Exception as exc:  # the first cell meets the same problem, and says it
            log.debug("the session could not be prepared before the first cell: %r", exc)

    def cancel_warm_up(self) -> None:
        """Stop a `warm_up` still on its way (from any thread: a shutdown arrives on the control thread)."""
        task = self._warming
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(task.cancel)

    async def install_rich(self, client: SessionsClient, cell: str | None = None, allow_stdin: bool = False, *,
                           warming: bool = False) -> str:
        """Put the rich-output shim in the session when it is not there yet (once per session).

        It rides with `cell` when it can (`rich.can_ride`): the line to put before the cell's code is
        returned, and the cell's answer says whether it loaded. Otherwise it is sent first, silently,
        as an execution of its own, and "" is returned. A `warm_up` still on its way is waited for first
        (an interrupt of the cell leaves it running).
        """
        if self._warming is not None and not warming:
            await asyncio.wait({self._warming})
            self._warming = None
        if not self.rich.needs_install:
            return ""
        if cell is not None and rich.can_ride(cell):
            return self.rich.riding_code(cell, live_log=not client.live, allow_stdin=allow_stdin)
        execution = await client.execute(self.rich.install_code(live_log=not client.live, allow_stdin=allow_stdin),
                                          timeout=self.settings.timeout, jupyter_repr=False)
        self.rich.record_install(execution)
        return ""

    # --- the embedded pool and the session's end -----------------------------------------------------

    def _start_pool(self) -> EmbeddedPool:
        pool = EmbeddedPool(self.language.container_type, options=self.settings.pool_args())
        pool.start()
        return pool

    async def pool_stopped(self, grace: float = 0) -> EmbeddedPoolError | None:
        """When the embedded pool died under us: start a new one, and say that the state is gone."""
        pool = self.embedded
        if pool is None:
            return None
        code = await asyncio.to_thread(pool.exit_code, grace) if grace else pool.exit_code()
        if code is None:
            return None
        pool.stop()
        self.embedded = self._start_pool()
        self._token, self._client, self.endpoint = self.embedded.token, None, None
        self.changed("new")
        return EmbeddedPoolError(f"The embedded local session pool stopped unexpectedly (exit code {code}); a new one "
                                 "is starting. The remote state is lost: run the cells you need again.")

    async def new_session(self) -> tuple[str, str]:
        """Delete the session and move to a fresh one (a new identifier, unless it was configured)."""
        client = await self.client()
        old = self.identifier
        try:
            await client.delete_session()
        except SessionNotFound:
            pass
        self.identifier = old if self.settings.identifier_from_env else str(uuid.uuid4())
        client.identifier = self.identifier
        self.changed("new")
        return old, self.identifier

    async def delete(self, deadline: float) -> None:
        """Delete the session from whatever loop this runs on (a client of its own), within `deadline`."""
        if not self.reached_pool or self.settings.keep_session:
            return  # no request ever reached the pool: there is no session to delete
        if self.embedded is not None:
            return  # the kernel's own pool: stopping it, next, deletes every session it has
        client = self.new_client()
        try:
            await asyncio.wait_for(client.delete_session(), deadline)
        except SessionNotFound:
            pass
        except Exception as exc:
            log.warning("could not delete session %s: %r", self.identifier, exc)
        finally:
            try:
                await asyncio.wait_for(client.aclose(), 0.3)
            except Exception:
                pass

    def request_pool_stop(self) -> None:
        """Ask the embedded pool, if the kernel started one, to stop, without waiting for it."""
        if self.embedded is not None:
            self.embedded.request_stop()

    def stop_pool(self, timeout: float = 1.0) -> None:
        """Stop the embedded pool, if the kernel started one."""
        if self.embedded is not None:
            self.embedded.stop(timeout)

    # --- the kernel magics' host (magics.MagicHost) --------------------------------------------------

    @property
    def download_limit(self) -> int:
        """The largest file `%download` accepts (REMOTE_KERNEL_DOWNLOAD_LIMIT)."""
        return self.settings.download_limit

    def sync_notebook_files(self, mode: str) -> None:
        """`%session files notebook|off`: whether each cell first syncs the notebook's folder (notebook_files)."""
        self.files.mode = mode

    def allow_active_content(self, allowed: bool) -> None:
        """`%session active on|off`: whether outputs keep scripts (for this kernel, every session)."""
        self.guard.allow_active = allowed

    async def session_magics(self) -> str | None:
        """The session's own `%lsmagic` listing (None when the language has none or there is no answer)."""
        if self.language.lsmagic_code is None:
            return None
        answer = await self.helper(self.language.lsmagic_code, deadline=10.0)
        return str(answer["text"]) if answer and "text" in answer else None

    # --- `%session` ----------------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str]]:
        """What `%session` shows: the connection (never the token), rich output, active content, the session."""
        rows = dict(self.settings.describe(endpoint=self.endpoint))
        rows["identifier"] = self.identifier + ("  (REMOTE_KERNEL_IDENTIFIER)" if self.settings.identifier_from_env
                                                and self.identifier == self.settings.identifier else "")
        rows["rich output"] = ("off  (REMOTE_KERNEL_RICH=0)" if not self.settings.rich else
                               "off (Python sessions only)" if not self.rich.enabled else
                               f"off: the session could not load it ({self.rich.refused})" if self.rich.refused else "on")
        rows["active content"] = ("allowed: scripts in outputs reach the front end  (%session active off)"
                                  if self.guard.allow_active else
                                  "removed: scripts and event handlers are dropped  (%session active on)")
        rows["files beside the notebook"] = (f"{self.files.mode}  (REMOTE_KERNEL_FILES; "
                                             f"%session files {'off' if self.files.on else 'notebook'})")
        rows["session"] = ("not created yet (the first cell creates it)" if not self.continuity.executed
                           else f"active{f' ({self.continuity.guid})' if self.continuity.guid else ''}")
        return list(rows.items())
