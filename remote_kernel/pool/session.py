"""One session: its sandboxed worker, its files, and its queue of executions."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote_kernel.pool import budget, hostpaths
from remote_kernel.pool.egress import EgressUnavailable, SessionNetwork
from remote_kernel.pool.replies import BadLine, Reply, held_bytes, parse_line, reply_of
from remote_kernel.pool.sandbox import Cgroups, Sandbox, SandboxProcess
from remote_kernel.pool.sandbox_spec import cgroup_limits, environment_of

log = logging.getLogger("remote_kernel.pool")

GRACE = 3.0  # seconds an interrupted execution gets before its session is killed
SIGNAL_AFTER = 0.1  # seconds a Node worker gets to take an interrupt command before it gets SIGINT
START_TIMEOUT = 60.0
LINE_LIMIT = 24 << 20  # longest line accepted from a worker (a reply: 2 × 1 MiB streams, an 8 MiB result, escaped)
READ_CHUNK = 1 << 16
MAX_PENDING = 64  # executions queued or running per session; past it a new one is refused (429)
KEEP_FINISHED = 100  # finished executions kept per session for polling (unfinished ones are always kept)
KEEP_BYTES = budget.KEPT_PER_SESSION  # and at most this many bytes of them in memory (the newest is kept whatever
# its size; and the pool's own bound for all sessions: budget.py)
MAX_OPERATION_ID = 128  # characters in a client-chosen operation-id


class QueueFull(Exception):
    """The session already has MAX_PENDING executions queued or running."""


class DuplicateExecution(Exception):
    """A client-chosen operation-id that this session already knows."""


class Misbehaving(Exception):
    """The worker wrote something on its reply pipe that the pool did not ask for."""


class WorkerDied(Exception):
    """The worker is gone; the reason says why in a user's words."""


@dataclass
class Outcome:
    """What one execution produced, in neutral terms (the routes shape it per version)."""

    id: str
    status: str = "NotStarted"  # NotStarted (queued), Running, Succeeded, Failed, Canceled
    stdout: str = ""
    stderr: str = ""
    result: Any = ""
    error_code: str | None = None
    error_message: str | None = None
    ms: float | None = None
    cancelled: bool = False
    size: int = 0  # the bytes this answer holds in the pool's memory (streams and result), set when it finishes
    jupyter: bool = False  # what the request asked for: the routes render `result` by it (pool/values.py)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    live: bool = False  # the client reads its output events as they happen (the live route)
    events: collections.deque[tuple[str, str]] = field(default_factory=collections.deque, repr=False)
    event_bytes: int = 0  # text received as events, counted against the worker's stream caps
    arrived: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # set when events or the end arrive
    interrupted_at: float | None = None
    created: float = field(default_factory=time.monotonic, repr=False)  # an answer without the worker's own timing

    def finish(self, status: str, **fields: Any) -> Outcome:
        """Record the answer; the first answer stands (a closed session answers before its task ends)."""
        if self.done.is_set():
            return self
        held = fields.pop("held", None)  # a worker's reply has measured itself (replies.Reply.size)
        for key, value in fields.items():
            setattr(self, key, value)
        if self.ms is None:  # no worker timed it (it died, was killed, or never ran): the time it existed
            self.ms = (time.monotonic() - self.created) * 1000
        self.size = held if held is not None else (
            sys.getsizeof(self.stdout) + sys.getsizeof(self.stderr) + held_bytes(self.result))
        self.status = status
        self.done.set()
        self.arrived.set()
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
        hostpaths.register(str(data_root))  # never named in an answer (hostpaths.scrub)
        self._process: asyncio.subprocess.Process | None = None
        self._cgroups: Cgroups | None = None
        self._network: SessionNetwork | None = None
        self._sandboxed: SandboxProcess | None = None  # the sandbox's init (bubblewrap) or the worker, once ready
        self._uid: int | None = None  # the host uid the sandbox runs as (a root pool), given back at close
        self._replies: asyncio.Queue[dict[str, Any] | Reply | None] = asyncio.Queue()  # the ready line, replies, then None at the end
        self._worker_id: str | None = None  # the id the running execution has on the pipe (the pool's secret)
        self._answered = False  # the running execution's reply has arrived
        self._started = False  # the worker said it is ready
        self.max_output = sandbox.limits.max_output
        self._commands: asyncio.StreamWriter | None = None
        self._log_tail: collections.deque[bytes] = collections.deque(maxlen=64)
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = False
        self._users = 0  # requests using the session's files now: it does not expire under them
        self._queued = 0  # bytes of code of the executions queued or running (budget.py)
        self._kept = 0  # bytes of the finished answers kept for polling (budget.py)
        self._closed = False
        self._running: Outcome | None = None

    # life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker and wait until it says it is ready; a start cut short (the pool stopping)
        leaves nothing behind."""
        try:
            await self._start()
        except asyncio.CancelledError:
            await asyncio.shield(self.close("the pool is stopping"))
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        confinement = self.sandbox.confinement
        self._cgroups = confinement.cgroups(self.guid, cgroup_limits(self.sandbox.limits))
        lacking = self.sandbox.cgroup_holds - (self._cgroups.holds if self._cgroups else frozenset())
        if lacking:  # it would run without limits the pool said hold (and memfds allowed for a memory cgroup)
            await self.close()
            raise WorkerDied(f"the session's cgroup could not be made ({', '.join(sorted(lacking))} limit), and "
                             "it does not run without the limits this pool holds; try again, and if it keeps "
                             "failing, see the pool's log")
        data_dir = confinement.host_data_folder(self._data_root)
        if data_dir is not None:
            data_dir.mkdir(parents=True)
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        output_r, output_w = os.pipe()
        egress = self.sandbox.egress
        if egress is not None and confinement.own_network(egress):
            try:
                self._network = await SessionNetwork.create(egress, self.guid)
            except EgressUnavailable as problem:
                await self.close()
                raise WorkerDied(f"the session's network could not be set up: {problem}") from None
        hosts_file = self._network.hosts_file if self._network else None
        if self.sandbox.uids is not None:
            self._uid = self.sandbox.uids.take()
        spec = self.sandbox.spec(home=str(self._data_root), hosts_file=hosts_file is not None, host_uid=self._uid,
                                 cgroups=self._cgroups)
        fds = self.sandbox.session_fds(spec, hosts_file)
        inherited = fds.inherited
        argv = self.sandbox.command(spec, self._cgroups, inherited, self._network.path if self._network else None)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv, stdin=commands_r, stdout=replies_w, stderr=output_w, env=dict(environment_of(spec)),
                cwd=str(data_dir or "/"), start_new_session=True, pass_fds=tuple(inherited.values()),
            )
        except BaseException:
            if fds.status is not None:
                os.close(fds.status)
            raise
        finally:
            for fd in (commands_r, replies_w, output_w, *inherited.values()):
                os.close(fd)
        replies = asyncio.StreamReader(limit=READ_CHUNK * 4)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(replies), os.fdopen(replies_r, "rb", 0))
        output = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), os.fdopen(output_r, "rb", 0))
        status = asyncio.StreamReader()
        if fds.status is not None:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(status), os.fdopen(fds.status, "rb", 0))
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(commands_w, "wb", 0))
        self._commands = asyncio.StreamWriter(transport, protocol, None, loop)
        self._tasks = [loop.create_task(self._read_replies(replies)), loop.create_task(self._drain(output))]
        try:
            ready = await asyncio.wait_for(self._replies.get(), START_TIMEOUT)
        except asyncio.TimeoutError:
            ready = None
        if isinstance(ready, dict) and ready.get("ready"):
            self._sandboxed = await self._sandbox_process(status if fds.status is not None else None)
        if not isinstance(ready, dict) or not ready.get("ready") or self._sandboxed is None:
            detail = b"".join(self._log_tail).decode(errors="replace").strip()[-2000:]
            await self.close()
            raise WorkerDied(f"the session's worker did not start: {detail or 'no output'}")
        runtime = ready.get("runtime")
        self.runtime_version = str(runtime.get("version", ""))[:40] if isinstance(runtime, dict) else ""

    async def _sandbox_process(self, status: asyncio.StreamReader | None) -> SandboxProcess | None:
        """The started sandbox: from bubblewrap's first status line (written before the worker runs, so read
        by the time it is ready; the rest of the pipe is drained so bwrap never writes into a closed pipe),
        or, unsandboxed, the worker itself."""
        assert self._process is not None
        if status is None:
            return SandboxProcess(self._process.pid)
        try:
            line = await asyncio.wait_for(status.readline(), START_TIMEOUT)
        except asyncio.TimeoutError:
            return None
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain_status(status)))
        return SandboxProcess.of_status(line, self._process.pid)

    @staticmethod
    async def _drain_status(status: asyncio.StreamReader) -> None:
        while await status.read(READ_CHUNK):
            pass

    async def close(self, reason: str = "the session was deleted") -> None:
        """Kill every process of the session and remove its files; every execution not yet answered
        (running or queued) is answered now with SessionLost and `reason`."""
        if self.lost is None:
            self.lost = reason
        self._closed = True
        budget.POOL.kept -= self._kept  # its answers are no longer the pool's to keep
        self._kept = 0
        self._answer_pending()
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
        if self._cgroups:  # a cgroup goes once the kernel has reaped its processes: try again soon, then less often
            deadline, delay = time.monotonic() + 1.0, 0.001
            while True:
                self._cgroups.kill()
                self._cgroups.remove()
                if not any(p.exists() for p in self._cgroups.paths) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(2 * delay, 0.05)
        if self._network:
            await self._network.remove()
        if self._sandboxed is not None:
            self._sandboxed.close()
        if self._uid is not None and self.sandbox.uids is not None:
            self.sandbox.uids.give_back(self._uid)
            self._uid = None
        await asyncio.to_thread(shutil.rmtree, self._data_root, True)

    @property
    def alive(self) -> bool:
        return self.lost is None and self._process is not None and self._process.returncode is None

    @property
    def busy(self) -> bool:
        """Running or queueing an execution, or a request uses its files: the cooldown does not end it."""
        return self._busy or self._lock.locked() or self._users > 0 or self._queued > 0

    @contextlib.contextmanager
    def in_use(self) -> Iterator[Session]:
        """Hold the session while a request uses it (an upload, a listing): its cooldown cannot expire
        meanwhile, and the cooldown starts again when the request ends. A DELETE still closes it."""
        self._users += 1
        try:
            yield self
        finally:
            self._users -= 1
            self.touch()

    def touch(self) -> None:
        self.last_accessed_at = time.time()

    @property
    def expires_at(self) -> float:
        return self.last_accessed_at + self.cooldown

    # files -----------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The host path of this session's /mnt/data."""
        folder = self.sandbox.confinement.data_folder(self._sandboxed, self._data_root)
        if folder is None:
            raise WorkerDied(self.lost or "the session's sandbox is gone")
        return folder

    # executions --------------------------------------------------------------------------------

    def submit(self, code: str, timeout: float, jupyter: bool, execution_id: str | None = None, *,
               live: bool = False) -> Outcome:
        """Queue an execution (they run one at a time, in order) and return its outcome at once.

        QueueFull past MAX_PENDING unfinished executions; DuplicateExecution for an operation-id this
        session already has (an execution is never overwritten). Every unfinished execution stays
        pollable; only the oldest finished ones are forgotten, past KEEP_FINISHED or KEEP_BYTES.
        `live`: the client reads the output events as they happen (the live route). The routes cap
        `timeout` at the pool's --max-execution-time.
        """
        if execution_id is not None and execution_id in self.executions:
            raise DuplicateExecution(f"This session already has an execution with operation-id {execution_id!r}; "
                                     "send a new operation-id (or none: the pool picks one).")
        # counted only when it could reach the limit (a session with 100 kept answers paid this scan every time)
        pending = sum(1 for o in self.executions.values() if not o.done.is_set()) \
            if len(self.executions) >= MAX_PENDING else 0
        if pending >= MAX_PENDING:
            raise QueueFull(f"This session already has {pending} executions queued or running (the limit is "
                            f"{MAX_PENDING}); wait for some to finish, then retry.")
        size = sys.getsizeof(code)  # its bytes in memory, held until the execution ends
        try:
            budget.POOL.queue(self._queued, size)
        except budget.OverBudget as over:
            raise QueueFull(str(over)) from None
        self._queued += size
        outcome = Outcome(id=execution_id or str(uuid.uuid4()), live=live)
        self.executions[outcome.id] = outcome
        self._forget_old()
        task = asyncio.get_running_loop().create_task(self._run(outcome, code, max(timeout, 1), jupyter))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
        task.add_done_callback(lambda _: self._unqueue(size))  # run, skipped or cancelled: always called
        return outcome

    def _unqueue(self, size: int) -> None:
        self._queued -= size
        budget.POOL.unqueue(size)

    def cancel(self, outcome: Outcome) -> None:
        """Stop an execution whose client went away: interrupt it if running, skip it if queued."""
        outcome.cancelled = True
        if self._running is outcome:
            self.interrupt_execution(outcome)

    def interrupt_execution(self, outcome: Outcome) -> float:
        """Interrupt the running `outcome`; if it has not ended GRACE seconds later, kill the session.

        Returns the grace in seconds (what a client tells its user). Nothing happens to an
        execution that is not running.
        """
        if self._running is not outcome or outcome.done.is_set():
            return GRACE
        self.interrupt()
        if outcome.interrupted_at is None:
            outcome.interrupted_at = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._escalate(outcome))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)
        return GRACE

    async def _escalate(self, outcome: Outcome) -> None:
        try:
            await asyncio.wait_for(outcome.done.wait(), GRACE)
        except asyncio.TimeoutError:
            log.info("session %s: the code ignored an interrupt for %g s; killing it", self.guid, GRACE)
            await self.kill(f"the code did not stop within {GRACE:g} s of an interrupt, so the session's "
                            "processes were killed")

    async def _run(self, outcome: Outcome, code: str, timeout: float, jupyter: bool) -> None:
        async with self._lock:
            if outcome.done.is_set():  # answered already: the session was closed while it waited
                return
            if outcome.cancelled:
                outcome.finish("Canceled", error_code="Canceled", error_message="The client went away.")
                return
            self._busy = True
            self._running = outcome
            outcome.status = "Running"
            try:
                await self._execute(outcome, code, timeout, jupyter)
            except WorkerDied as died:
                outcome.finish("Failed", error_code="SessionLost", error_message=str(died), stderr=f"{died}\n")
            finally:
                self._busy = False
                self._running = None
                self._worker_id = None
                self.touch()
                self._forget_old()

    def _forget_old(self) -> None:
        """Forget the oldest finished executions past KEEP_FINISHED of them or the byte bounds of their answers
        (the session's and the pool's, budget.py): what answers hold in the pool's memory stays bounded
        however many sessions run however many executions."""
        if self._closed:
            return
        finished = [(key, o.size) for key, o in self.executions.items() if o.done.is_set()]
        total = sum(size for _, size in finished)
        budget.POOL.kept += total - self._kept
        self._kept = total
        for n, (key, size) in enumerate(finished[:-1]):
            if len(finished) - n <= KEEP_FINISHED and not budget.POOL.over_kept(self._kept):
                break
            del self.executions[key]
            self._kept -= size
            budget.POOL.kept -= size

    async def _execute(self, outcome: Outcome, code: str, timeout: float, jupyter: bool) -> None:
        if not self.alive:
            raise WorkerDied(self._lost_message())
        # a new id per execution: a line written before it exists cannot match it (but code that runs in this
        # execution can learn it, so its reply is still checked strictly: replies.py)
        self._worker_id = secrets.token_hex(12)
        self._answered = False
        command = {"id": self._worker_id, "op": "execute", "code": code, "jupyter": jupyter}
        if outcome.live:
            command["live"] = True
        line = json.dumps(command)
        assert self._commands is not None
        self._commands.write(line.encode("utf-8", "surrogatepass") + b"\n")
        started = time.perf_counter()
        reply = await self._reply_within(timeout)
        timed_out = reply is None
        if reply is None:
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
        stderr = reply.stderr
        if not self.warned:
            self.warned = True
            stderr = (self.sandbox.warning or "") + stderr
        if timed_out:
            outcome.finish("Failed", error_code="ExecutionTimeout", result="", stdout=reply.stdout,
                           stderr=stderr + f"ExecutionTimeout: the code ran past {timeout:g} s and was interrupted.\n",
                           error_message=f"Execution timed out after {timeout:g} s; it was interrupted "
                                         "and the session's state is kept.", ms=reply.ms)
        else:
            outcome.finish("Failed" if reply.error_name else "Succeeded", stdout=reply.stdout, stderr=stderr,
                           result=reply.result, ms=reply.ms, error_code=reply.error_name,
                           error_message=reply.error_message, held=reply.size)

    async def _reply_within(self, timeout: float) -> Reply | None:
        """The worker's next reply, None when `timeout` passes first; WorkerDied when it dies."""
        try:
            reply = await asyncio.wait_for(self._replies.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if not isinstance(reply, Reply):  # None: the pipe closed
            await self._settle()
            raise WorkerDied(self._lost_message())
        return reply

    def interrupt(self) -> None:
        """Interrupt the running execution (it ends with KeyboardInterrupt, or Node's `Interrupted`).

        Python and Shell workers get SIGINT. A Node worker first gets an interrupt command, which it
        reads as soon as its event loop is free (a cell that awaits), then, SIGNAL_AFTER seconds
        later if the execution still runs (synchronous code), SIGINT: a SIGINT that lands as a
        cell's synchronous part ends is lost, or kills the worker (Node's vm `breakOnSigint`).
        """
        if not self._process or self._process.returncode is not None:
            return
        worker_id = self._worker_id
        if self.sandbox.runtime.interrupt_command and worker_id and self._commands is not None:
            line = json.dumps({"op": "interrupt", "id": worker_id}, separators=(",", ":"))
            self._commands.write(line.encode() + b"\n")
            asyncio.get_running_loop().call_later(SIGNAL_AFTER, self._signal_interrupt, worker_id)
        else:
            self._signal_interrupt(None)

    def _signal_interrupt(self, worker_id: str | None) -> None:
        """SIGINT to the worker; with `worker_id`, only while that execution is still running."""
        if worker_id is not None and (self._worker_id != worker_id or self._answered):
            return
        if not self._process or self._process.returncode is not None:
            return
        if self._sandboxed is None:
            return
        pid = self.sandbox.confinement.interrupt_target(self._sandboxed)
        if pid is None:
            return
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

    def _answer_pending(self) -> None:
        """Answer every execution not yet answered: the session is gone, so none of them will run on."""
        message = self._lost_message()
        for outcome in self.executions.values():
            if not outcome.done.is_set():
                outcome.finish("Failed", error_code="SessionLost", error_message=message, stderr=f"{message}\n")

    def _lost_message(self) -> str:
        return (f"Session lost: {self.lost or 'its worker stopped'}. Its variables and files are gone; "
                "the next execution with this identifier starts a fresh session.")

    async def _read_replies(self, replies: asyncio.StreamReader) -> None:
        """Read the worker's reply pipe a chunk at a time (never an unbounded line) and check each line.

        A line over LINE_LIMIT, or one the pool did not ask for (see `_accept`), stops the worker:
        the running execution is then answered as lost, with the reason.
        """
        buffer = bytearray()
        try:
            while True:
                chunk = await replies.read(READ_CHUNK)
                if not chunk:
                    break
                scan = len(buffer)  # the part before holds no newline
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", scan)) >= 0:
                    await self._accept(buffer[start:end])
                    start = scan = end + 1
                if start:
                    del buffer[:start]
                if len(buffer) > LINE_LIMIT:
                    raise Misbehaving(f"it wrote a line over {LINE_LIMIT >> 20} MiB on the pool's reply pipe")
        except Misbehaving as problem:
            log.warning("session %s: %s; stopping it", self.guid, problem)
            await self.kill(f"the session misbehaved ({problem}) and was stopped")
        except Exception as problem:  # whatever a worker writes, the pool goes on: the session is stopped
            log.error("session %s: its reply pipe could not be read (%r); stopping it", self.guid, problem)
            await self.kill(f"the session wrote something on its reply pipe that the pool could not read "
                            f"({type(problem).__name__}) and was stopped")
        finally:
            self._replies.put_nowait(None)

    async def _accept(self, line: bytearray) -> None:
        """Take one line from the worker: the ready line once, then for the running execution only
        its events (when it asked for them) and one reply, each parsed and checked strictly (replies.py:
        session code can learn the id); anything else is Misbehaving."""
        try:
            message = parse_line(line)
        except BadLine as bad:
            raise Misbehaving(f"{bad} on the pool's reply pipe") from None
        if not self._started:
            if message.get("ready") is not True:
                raise Misbehaving("its first line was not the ready line")
            self._started = True
            self._replies.put_nowait(message)
            return
        outcome = self._running
        if outcome is None or self._worker_id is None or self._answered:
            raise Misbehaving("it wrote on the pool's reply pipe while no execution was waiting for it")
        if message.get("id") != self._worker_id:
            raise Misbehaving("it wrote a line for an execution that is not running (a forged reply)")
        if "event" in message:
            if not outcome.live or message.get("event") != "stream" or message.get("name") not in ("stdout", "stderr") \
                    or not isinstance(message.get("text"), str):
                raise Misbehaving("it sent an output event that was not asked for or is malformed")
            outcome.event_bytes += len(message["text"])
            if outcome.event_bytes > 2 * self.max_output + READ_CHUNK:
                raise Misbehaving(f"it sent more live output than its {self.max_output} bytes per stream")
            outcome.events.append((message["name"], message["text"]))
            outcome.arrived.set()
            return
        limit = 2 * self.max_output + (1 << 20)
        try:
            if isinstance(message.get("result"), (list, dict)):  # measured in a thread: the loop goes on
                reply = await asyncio.to_thread(reply_of, message, limit)
            else:
                reply = reply_of(message, limit)
        except BadLine as bad:
            raise Misbehaving(f"{bad} (a malformed or forged reply)") from None
        self._answered = True
        self._replies.put_nowait(reply)

    async def _drain(self, output: asyncio.StreamReader) -> None:
        """Keep the tail of the worker's fd-level output, for diagnostics."""
        while chunk := await output.read(65536):
            self._log_tail.append(chunk[-4096:])
            log.debug("session %s: %r", self.guid, chunk[:500])

