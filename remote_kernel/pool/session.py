"""One session: its sandboxed worker, its files, and its queue of executions."""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import secrets
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote_kernel.pool.sandbox import Cgroups, Sandbox, children

log = logging.getLogger("remote_kernel.pool")

#: the contract's cap on one execution (the hosted service's); REMOTE_KERNEL_EXECUTION_CAP shortens
#: it for tests of long cells. The live-output extension is not capped: the client's limit holds.
MAX_TIMEOUT = float(os.environ.get("REMOTE_KERNEL_EXECUTION_CAP") or 220.0)
GRACE = 3.0  # seconds an interrupted execution gets before its session is killed
START_TIMEOUT = 60.0
LINE_LIMIT = 24 << 20  # longest line accepted from a worker (a reply: 2 × 1 MiB streams, an 8 MiB result, escaped)
READ_CHUNK = 1 << 16
KEPT_OUTCOMES = 100  # finished executions kept for polling ...
KEPT_BYTES = 64 << 20  # ... and at most this much of their output


class Misbehaving(Exception):
    """The worker wrote something on its reply pipe that the pool did not ask for."""


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
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    live: bool = False  # the client reads its output events as they happen (the live route)
    events: collections.deque = field(default_factory=collections.deque, repr=False)
    event_bytes: int = 0  # text received as events, counted against the worker's stream caps
    arrived: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # set when events or the end arrive
    interrupted_at: float | None = None
    counted: int = 0  # the output size the session counts against KEPT_BYTES while it keeps this

    def finish(self, status: str, **fields: Any) -> "Outcome":
        for key, value in fields.items():
            setattr(self, key, value)
        self.status = status
        self.done.set()
        self.arrived.set()
        return self

    @property
    def size(self) -> int:
        return len(self.stdout) + len(self.stderr) + (len(self.result) if isinstance(self.result, str) else 0)


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
        self._replies: asyncio.Queue[dict | None] = asyncio.Queue()  # the ready line, replies, then None at the end
        self._worker_id: str | None = None  # the id the running execution has on the pipe (the pool's secret)
        self._answered = False  # the running execution's reply has arrived
        self._started = False  # the worker said it is ready
        self.max_output = sandbox.limits.max_output
        self._kept_bytes = 0
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
        replies = asyncio.StreamReader(limit=READ_CHUNK * 4)
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
        runtime = ready.get("runtime")
        self.runtime_version = str(runtime.get("version", ""))[:40] if isinstance(runtime, dict) else ""

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

    def submit(self, code: str, timeout: float, jupyter: bool, execution_id: str | None = None, *,
               live: bool = False, capped: bool = True) -> Outcome:
        """Queue an execution (they run one at a time, in order) and return its outcome at once.

        `capped`: the contract's MAX_TIMEOUT applies (the live route passes False: its client's limit holds).
        """
        outcome = Outcome(id=execution_id or str(uuid.uuid4()), live=live)
        replaced = self.executions.pop(outcome.id, None)
        if replaced is not None:
            self._kept_bytes -= replaced.counted
        self.executions[outcome.id] = outcome
        self._forget_old()
        limit = min(max(timeout, 1), MAX_TIMEOUT) if capped else max(timeout, 1)
        task = asyncio.get_running_loop().create_task(self._run(outcome, code, limit, jupyter))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
        return outcome

    def _forget_old(self) -> None:
        """Keep at most KEPT_OUTCOMES executions, and drop the oldest finished ones past KEPT_BYTES of output
        (`_kept_bytes` counts the output of those that finished and are still kept)."""
        while len(self.executions) > KEPT_OUTCOMES or self._kept_bytes > KEPT_BYTES:
            oldest = next((key for key, o in self.executions.items() if o.done.is_set()), None)
            if oldest is None:
                if len(self.executions) <= KEPT_OUTCOMES:
                    return
                oldest = next(iter(self.executions))
            self._kept_bytes -= self.executions.pop(oldest).counted

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
                self._worker_id = None
                self.touch()
                if self.executions.get(outcome.id) is outcome:
                    outcome.counted = outcome.size
                    self._kept_bytes += outcome.counted
                self._forget_old()

    async def _execute(self, outcome: Outcome, code: str, timeout: float, jupyter: bool) -> None:
        if not self.alive:
            raise WorkerDied(self._lost_message())
        self._worker_id = secrets.token_hex(12)  # session code cannot know it: a forged reply cannot match
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
        stderr = _text(reply.get("stderr"))
        if not self.warned:
            self.warned = True
            stderr = (self.sandbox.warning or "") + stderr
        error = reply.get("error") if isinstance(reply.get("error"), dict) else None
        if reply.get("error") and error is None:
            error = {"name": "Error", "message": str(reply.get("error"))[:1000]}
        if timed_out:
            outcome.finish("Failed", error_code="ExecutionTimeout", result="", stdout=_text(reply.get("stdout")),
                           stderr=stderr + f"ExecutionTimeout: the code ran past {timeout:g} s and was interrupted.\n",
                           error_message=f"Execution timed out after {timeout:g} s; it was interrupted "
                                         "and the session's state is kept.", ms=reply.get("ms"))
        else:
            ms = reply.get("ms")
            outcome.finish("Failed" if error else "Succeeded", stdout=_text(reply.get("stdout")), stderr=stderr,
                           result=reply.get("result", ""),
                           ms=float(ms) if isinstance(ms, (int, float)) and not isinstance(ms, bool) else None,
                           error_code=str(error.get("name") or "Error")[:200] if error else None,
                           error_message=str(error.get("message", ""))[:10000] if error else None)

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
                    self._accept(buffer[start:end])
                    start = scan = end + 1
                if start:
                    del buffer[:start]
                if len(buffer) > LINE_LIMIT:
                    raise Misbehaving(f"it wrote a line over {LINE_LIMIT >> 20} MiB on the pool's reply pipe")
        except Misbehaving as problem:
            log.warning("session %s: %s; stopping it", self.guid, problem)
            await self.kill(f"the session misbehaved ({problem}) and was stopped")
        finally:
            self._replies.put_nowait(None)

    def _accept(self, line: bytearray) -> None:
        """Take one line from the worker: the ready line once, then for the running execution only
        its events (when it asked for them) and one reply; anything else is Misbehaving."""
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            raise Misbehaving("it wrote a line that is not JSON on the pool's reply pipe") from None
        if not isinstance(message, dict):
            raise Misbehaving("it wrote a line that is not a JSON object on the pool's reply pipe")
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
        self._answered = True
        self._replies.put_nowait(message)

    async def _drain(self, output: asyncio.StreamReader) -> None:
        """Keep the tail of the worker's fd-level output, for diagnostics."""
        while chunk := await output.read(65536):
            self._log_tail.append(chunk[-4096:])
            log.debug("session %s: %r", self.guid, chunk[:500])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
