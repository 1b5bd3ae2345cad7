"""One session: its sandboxed worker, its files, and its queue of executions."""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote_kernel.pool.sandbox import Cgroups, Sandbox, children

log = logging.getLogger("remote_kernel.pool")

GRACE = 3.0  # seconds an interrupted execution gets before its session is killed
START_TIMEOUT = 60.0
REPLY_LIMIT = 256 << 20  # largest reply line accepted from a worker


class WorkerDied(Exception):
    """The worker is gone; the reason says why in a user's words."""


@dataclass
class Outcome:
    """What one execution produced, in neutral terms (the routes shape it per version)."""

    id: str
    status: str = "Running"  # NotStarted, Running, Succeeded, Failed, Canceled
    stdout: str = ""
    stderr: str = ""
    result: Any = ""
    error_code: str | None = None
    error_message: str | None = None
    ms: float | None = None
    cancelled: bool = False
    jupyter: bool = False  # what the request asked for: the routes render `result` by it (pool/values.py)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def finish(self, status: str, **fields: Any) -> "Outcome":
        for key, value in fields.items():
            setattr(self, key, value)
        self.status = status
        self.done.set()
        return self


class Session:
    """A started worker in its sandbox; bound to an identifier when a client first names it."""

    def __init__(self, sandbox: Sandbox, data_root: Path, cooldown: float) -> None:
        self.guid = uuid.uuid4().hex  # the x-ms-session-guid: new for every session, never reused
        self.sandbox = sandbox
        self.cooldown = cooldown
        self.identifier: str | None = None
        self.created_at = time.time()
        self.last_accessed_at = self.created_at
        self.lost: str | None = None
        self.warned = sandbox.warning is None
        self.executions: collections.OrderedDict[str, Outcome] = collections.OrderedDict()
        self.runtime_version = ""
        self._lock = asyncio.Lock()
        self._data_root = data_root / self.guid
        self._process: asyncio.subprocess.Process | None = None
        self._cgroups: Cgroups | None = None
        self._replies: asyncio.Queue[dict | None] = asyncio.Queue()
        self._commands: asyncio.StreamWriter | None = None
        self._log_tail: collections.deque[bytes] = collections.deque(maxlen=64)
        self._tasks: list[asyncio.Task] = []
        self._busy = False
        self._running: Outcome | None = None

    # life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker and wait until it says it is ready."""
        loop = asyncio.get_running_loop()
        self._cgroups = Cgroups.create(self.guid, self.sandbox.limits) if self.sandbox.mode == "bubblewrap" else None
        data_dir = None
        if self.sandbox.mode == "none":
            data_dir = self._data_root / "data"
            data_dir.mkdir(parents=True)
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        output_r, output_w = os.pipe()
        argv = self.sandbox.command(self._cgroups)
        env = self.sandbox.environment(str(self._data_root)) if self.sandbox.mode == "none" else {"PATH": "/usr/bin:/bin"}
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv, stdin=commands_r, stdout=replies_w, stderr=output_w, env=env, cwd=str(data_dir or "/"), start_new_session=True,
            )
        finally:
            for fd in (commands_r, replies_w, output_w):
                os.close(fd)
        replies = asyncio.StreamReader(limit=REPLY_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(replies), os.fdopen(replies_r, "rb", 0))
        output = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), os.fdopen(output_r, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(commands_w, "wb", 0))
        self._commands = asyncio.StreamWriter(transport, protocol, None, loop)
        self._tasks = [loop.create_task(self._read_replies(replies)), loop.create_task(self._drain(output))]
        try:
            ready = await asyncio.wait_for(self._replies.get(), START_TIMEOUT)
        except asyncio.TimeoutError:
            ready = None
        if not ready or not ready.get("ready"):
            detail = b"".join(self._log_tail).decode(errors="replace").strip()[-2000:]
            await self.close()
            raise WorkerDied(f"the session's worker did not start: {detail or 'no output'}")
        self.runtime_version = ready.get("runtime", {}).get("version", "")

    async def close(self) -> None:
        """Kill every process of the session and remove its files."""
        if self.lost is None:
            self.lost = "the session was deleted"
        if self._cgroups:
            self._cgroups.kill()
        if self._process and self._process.returncode is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self._process.wait()
        if self._commands:
            self._commands.close()
        for task in self._tasks:
            task.cancel()
        if self._cgroups:
            for _ in range(50):
                self._cgroups.kill()
                self._cgroups.remove()
                if not any(p.exists() for p in self._cgroups.paths):
                    break
                await asyncio.sleep(0.02)
        await asyncio.to_thread(shutil.rmtree, self._data_root, True)

    @property
    def alive(self) -> bool:
        return self.lost is None and self._process is not None and self._process.returncode is None

    @property
    def busy(self) -> bool:
        return self._busy or self._lock.locked()

    def touch(self) -> None:
        self.last_accessed_at = time.time()

    @property
    def expires_at(self) -> float:
        return self.last_accessed_at + self.cooldown

    # files -----------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The host path of this session's /mnt/data."""
        if self.sandbox.mode == "none":
            return self._data_root / "data"
        sandbox_init = children(self._process.pid)[0] if self._process else None
        if sandbox_init is None:
            raise WorkerDied(self.lost or "the session's sandbox is gone")
        return Path(f"/proc/{sandbox_init}/root/mnt/data")

    # executions --------------------------------------------------------------------------------

    def submit(self, code: str, timeout: float, jupyter: bool, execution_id: str | None = None) -> Outcome:
        """Queue an execution (they run one at a time, in order) and return its outcome at once."""
        outcome = Outcome(id=execution_id or str(uuid.uuid4()))
        self.executions[outcome.id] = outcome
        while len(self.executions) > 100:
            self.executions.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._run(outcome, code, max(timeout, 1), jupyter))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
        return outcome

    def cancel(self, outcome: Outcome) -> None:
        """Stop an execution whose client went away: interrupt it if running, skip it if queued."""
        outcome.cancelled = True
        if self._running is outcome:
            self.interrupt()

    async def _run(self, outcome: Outcome, code: str, timeout: float, jupyter: bool) -> None:
        async with self._lock:
            if outcome.cancelled:
                outcome.finish("Canceled", error_code="Canceled", error_message="The client went away.")
                return
            self._busy = True
            self._running = outcome
            try:
                await self._execute(outcome, code, timeout, jupyter)
            except WorkerDied as died:
                outcome.finish("Failed", error_code="SessionLost", error_message=str(died), stderr=f"{died}\n")
            finally:
                self._busy = False
                self._running = None
                self.touch()

    async def _execute(self, outcome: Outcome, code: str, timeout: float, jupyter: bool) -> None:
        if not self.alive:
            raise WorkerDied(self._lost_message())
        line = json.dumps({"id": outcome.id, "op": "execute", "code": code, "jupyter": jupyter})
        assert self._commands is not None
        self._commands.write(line.encode("utf-8", "surrogatepass") + b"\n")
        started = time.perf_counter()
        reply = await self._reply_within(timeout)
        timed_out = reply is None
        if timed_out:
            self.interrupt()
            reply = await self._reply_within(GRACE)
            if reply is None:
                await self.kill(f"the execution ran past its {timeout:g} s limit and did not stop when interrupted")
                outcome.finish("Failed", error_code="ExecutionTimeout",
                               error_message=f"Execution timed out after {timeout:g} s and did not stop; "
                                             "the session was killed and its state is lost.",
                               stderr=f"ExecutionTimeout: the code ran past {timeout:g} s and ignored the "
                                      "interrupt; the session was killed and its state is lost.\n",
                               ms=(time.perf_counter() - started) * 1000)
                return
        stderr = reply.get("stderr", "")
        if not self.warned:
            self.warned = True
            stderr = (self.sandbox.warning or "") + stderr
        error = reply.get("error")
        if timed_out:
            outcome.finish("Failed", error_code="ExecutionTimeout", result="", stdout=reply.get("stdout", ""),
                           stderr=stderr + f"ExecutionTimeout: the code ran past {timeout:g} s and was interrupted.\n",
                           error_message=f"Execution timed out after {timeout:g} s; it was interrupted "
                                         "and the session's state is kept.", ms=reply.get("ms"))
        else:
            outcome.finish("Failed" if error else "Succeeded", stdout=reply.get("stdout", ""), stderr=stderr,
                           result=reply.get("result", ""), ms=reply.get("ms"),
                           error_code=(error.get("name") or "Error") if error else None,
                           error_message=error.get("message", "") if error else None)

    async def _reply_within(self, timeout: float) -> dict | None:
        """The worker's next reply, None when `timeout` passes first; WorkerDied when it dies."""
        try:
            reply = await asyncio.wait_for(self._replies.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if reply is None:
            await self._settle()
            raise WorkerDied(self._lost_message())
        return reply

    def interrupt(self) -> None:
        """Send SIGINT to the worker: the running execution ends with KeyboardInterrupt."""
        if not self._process or self._process.returncode is not None:
            return
        pid = self._process.pid
        if self.sandbox.mode == "bubblewrap":
            init = children(pid)
            workers = children(init[0]) if init else []
            if not workers:
                return
            pid = workers[0]
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    async def kill(self, reason: str) -> None:
        """Kill the worker and mark the session lost."""
        self.lost = reason
        if self._cgroups:
            self._cgroups.kill()
        if self._process and self._process.returncode is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def _settle(self) -> None:
        """After the worker's pipe closed: wait for the process and record why it went."""
        if self._process:
            try:
                await asyncio.wait_for(self._process.wait(), 2)
            except asyncio.TimeoutError:
                await self.kill("the session's worker stopped answering")
        if self.lost is None:
            if self._cgroups and self._cgroups.out_of_memory():
                limit = self.sandbox.limits.memory
                self.lost = f"the session ran out of memory (its limit is {limit / (1 << 20):.0f} MiB) and was killed"
            else:
                self.lost = "the session's worker was killed"

    def _lost_message(self) -> str:
        return (f"Session lost: {self.lost or 'its worker stopped'}. Its variables and files are gone; "
                "the next execution with this identifier starts a fresh session.")

    async def _read_replies(self, replies: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await replies.readline()
                if not line:
                    break
                try:
                    self._replies.put_nowait(json.loads(line))
                except ValueError:
                    log.warning("session %s: unreadable reply from its worker", self.guid)
        except (ValueError, asyncio.LimitOverrunError):
            log.warning("session %s: a reply over %d bytes; killing it", self.guid, REPLY_LIMIT)
            await self.kill("the session produced a result too large to return")
        finally:
            self._replies.put_nowait(None)

    async def _drain(self, output: asyncio.StreamReader) -> None:
        """Keep the tail of the worker's fd-level output, for diagnostics."""
        while chunk := await output.read(65536):
            self._log_tail.append(chunk[-4096:])
            log.debug("session %s: %r", self.guid, chunk[:500])
