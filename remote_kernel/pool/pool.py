"""Sessions by identifier: the session limit, cooldown expiry and ready sessions."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from remote_kernel.pool.sandbox import Sandbox
from remote_kernel.pool.session import Session, WorkerDied

log = logging.getLogger("remote_kernel.pool")
REFILL_DELAY = 1.0  # seconds from handing a ready session over to starting its replacement


class PoolFull(Exception):
    """No room for another session; `retry_after` is a fair wait in seconds."""

    def __init__(self, max_sessions: int, retry_after: int) -> None:
        super().__init__(f"The pool already runs its maximum of {max_sessions} sessions. Delete sessions you no "
                         f"longer need (DELETE session) or wait for idle ones to expire, then retry.")
        self.retry_after = retry_after


class SessionStartFailed(Exception):
    """A worker could not be started."""


class Pool:
    """Identifier → session. Sessions are created on first use, from the ready ones when possible."""

    def __init__(self, sandbox: Sandbox, data_root: Path, *, max_sessions: int, cooldown: float,
                 ready_sessions: int) -> None:
        self.sandbox = sandbox
        self.data_root = data_root
        self.max_sessions = max_sessions
        self.cooldown = cooldown
        self.ready_target = max(0, ready_sessions)
        self.created_at = time.time()
        self.sessions: dict[str, Session] = {}
        self._ready: list[Session] = []
        self._starting = 0
        self._claimed = 0  # requests waiting for a ready session that is still starting
        self._ready_changed = asyncio.Condition()
        self._creating: dict[str, asyncio.Future[Session]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._scratch: set[Session] = set()  # sessions of one execution each (useEmptyKernel), bound to no identifier
        self._stopping = False
        self._refill_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.sandbox.confinement.pool_starting, self.sandbox)
        self._spawn(self._reap_forever())
        self._refill()

    async def stop(self) -> None:
        """Delete every session, ready ones included."""
        self._stopping = True
        if self._refill_timer is not None:
            self._refill_timer.cancel()
            self._refill_timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # sessions being started clean up after themselves
        sessions = list(self.sessions.values()) + self._ready + list(self._scratch)
        self._scratch.clear()
        self.sessions.clear()
        self._ready.clear()
        await asyncio.gather(*(s.close("the pool is stopping") for s in sessions), return_exceptions=True)
        await asyncio.to_thread(self.sandbox.confinement.pool_stopped)

    def find(self, identifier: str) -> Session | None:
        """The live session of an identifier, or None (never creates one)."""
        session = self.sessions.get(identifier)
        if session is not None and not session.alive and not session.busy:
            self._forget(session)
            return None
        return session

    async def get(self, identifier: str) -> Session:
        """The session of an identifier, created now if it has none (PoolFull past the limit)."""
        session = self.find(identifier)
        if session is not None and session.alive:
            session.touch()
            return session
        if self._stopping:
            raise SessionStartFailed("the pool is stopping")
        pending = self._creating.get(identifier)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self.sessions) + len(self._creating) >= self.max_sessions:
            raise PoolFull(self.max_sessions, self._retry_after())
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._creating[identifier] = future
        try:
            if session is not None:
                self._forget(session)  # lost while busy: its last answer is out, start afresh
            session = await self._take_ready()
            session.identifier = identifier
            session.touch()
            self.sessions[identifier] = session
            future.set_result(session)
            return session
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: the waiters (if any) got it
            raise
        finally:
            del self._creating[identifier]
            self._refill_soon()

    async def scratch(self) -> Session:
        """A fresh session bound to no identifier, for one execution (`useEmptyKernel`); the caller closes it.
        It counts against the session limit while it lives (PoolFull past it)."""
        if self._stopping:
            raise SessionStartFailed("the pool is stopping")
        if len(self.sessions) + len(self._creating) + len(self._scratch) >= self.max_sessions:
            raise PoolFull(self.max_sessions, self._retry_after())
        try:
            session = await self._take_ready()
        finally:
            self._refill()
        self._scratch.add(session)
        session.touch()
        return session

    def close_scratch_after(self, session: Session, finished: asyncio.Event) -> None:
        """Close a scratch session once its execution has `finished`."""
        async def close() -> None:
            await finished.wait()
            self._scratch.discard(session)
            await session.close("its one execution (useEmptyKernel) is over")
        self._spawn(close())

    async def delete(self, identifier: str) -> bool:
        """Delete a session with its processes and files; False when there was none."""
        session = self.sessions.pop(identifier, None)
        if session is None:
            return False
        await session.close()
        return True

    def listed(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.alive]

    # internals ------------------------------------------------------------------------------

    async def _take_ready(self) -> Session:
        """A ready session; else the one already starting (a second start would only compete with it for
        the CPU: the first cell of a new embedded pool came 0.2–0.4 s later); else a new one."""
        if not self._ready and self._starting > self._claimed:
            self._claimed += 1
            try:
                async with self._ready_changed:
                    await self._ready_changed.wait()
            finally:
                self._claimed -= 1
        while self._ready:
            session = self._ready.pop(0)
            if session.alive:
                return session
            self._spawn(session.close())
        session = Session(self.sandbox, self.data_root, self.cooldown)
        try:
            await session.start()
        except WorkerDied as error:
            raise SessionStartFailed(str(error)) from None
        return session

    def _refill_soon(self) -> None:
        """Refill REFILL_DELAY seconds after a session was handed over: it is running its first cell
        then (a kernel's first cell, which also loads the rich-output shim), and a new worker's start,
        an interpreter importing IPython, would take the CPU from it."""
        if self._refill_timer is None and not self._stopping:
            self._refill_timer = asyncio.get_running_loop().call_later(REFILL_DELAY, self._refill_now)

    def _refill_now(self) -> None:
        self._refill_timer = None
        self._refill()

    def _refill(self) -> None:
        """Start sessions in the background until the ready target is met."""
        while not self._stopping and len(self._ready) + self._starting < self.ready_target:
            self._starting += 1
            self._spawn(self._start_ready())

    async def _start_ready(self) -> None:
        session = Session(self.sandbox, self.data_root, self.cooldown)
        try:
            await session.start()
        except WorkerDied as error:
            log.error("could not start a ready session: %s", error)
            await self._notify_ready_changed()
            await asyncio.sleep(5)  # do not spin on a broken interpreter
            return
        finally:
            self._starting -= 1
        if self._stopping:
            await session.close()
        else:
            self._ready.append(session)
            await self._notify_ready_changed()

    async def _notify_ready_changed(self) -> None:
        async with self._ready_changed:
            self._ready_changed.notify_all()

    def _forget(self, session: Session) -> None:
        if session.identifier and self.sessions.get(session.identifier) is session:
            del self.sessions[session.identifier]
        self._spawn(session.close())

    def _retry_after(self) -> int:
        soonest = min((s.expires_at for s in self.sessions.values() if not s.busy), default=None)
        if soonest is None:
            return 10
        return int(min(60, max(1, soonest - time.time() + 1)))

    async def _reap_forever(self) -> None:
        """Delete sessions idle past the cooldown, and forget dead ones."""
        interval = max(0.2, min(5.0, self.cooldown / 10))
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for identifier, session in list(self.sessions.items()):
                if session.busy:
                    continue
                if session.expires_at <= now or not session.alive:
                    log.info("session %s %s", identifier, "expired" if session.alive else "died")
                    self.sessions.pop(identifier, None)
                    self._spawn(session.close())
            for session in [s for s in self._ready if not s.alive]:
                self._ready.remove(session)
                self._spawn(session.close())
            self._refill()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
