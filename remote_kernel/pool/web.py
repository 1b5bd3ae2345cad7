"""The pool's HTTP side, serving: its Starlette app (app.py) behind uvicorn, with the pool's own stop.

`server.serve` imports this module only once the pool has started its ready sessions: uvicorn, Starlette
and the routes are about 0.15 s of imports, during which the first session's interpreter is already
loading (a kernel's first cell waits for that session, not for this).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette

from remote_kernel.pool.answers import iso
from remote_kernel.pool.app import build_app
from remote_kernel.pool.connections import guarded_protocol
from remote_kernel.pool.origin import guard
from remote_kernel.pool.pool import Pool
from remote_kernel.pool.sandbox import Sandbox
from remote_kernel.pool.server import Stopper, stop_pool
from remote_kernel.settings import PoolSettings

if TYPE_CHECKING:
    from remote_kernel.pool.mcp_lazy import LazyMcp
    from remote_kernel.pool.tls import TlsFiles

log = logging.getLogger("remote_kernel.pool")
KEEP_ALIVE = 30  # seconds an idle client connection stays open
STOP_GRACE = 0.5  # seconds a stopping pool lets open connections finish their answers


@dataclass(frozen=True)
class Serving:
    """What the HTTP side serves, as `server.serve` prepared it."""

    pool: Pool
    listener: socket.socket
    settings: PoolSettings
    token: str | None
    mcp: LazyMcp | None
    mcp_key: str | None
    tls: TlsFiles | None
    announce: Callable[[], None]  # prints what a client needs, once the app has started
    stopper: Stopper  # what the signals call


async def serve(it: Serving) -> bool:
    """Serve until stopped; False when the app never started serving (uvicorn logged why)."""
    args = it.settings
    assert args.max_execution_time is not None  # server.run sets it

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """The app serves while the pool runs: announced once the app has started, the pool stopped (every
        session deleted) when uvicorn shuts down (PoolServer.shutdown)."""
        it.announce()
        try:
            yield
        finally:
            await stop_pool(it.pool, it.mcp)

    app = build_app(it.pool, token=it.token, max_upload=args.max_upload, describe=describer(it.pool.sandbox), log=log,
                    mcp=it.mcp,
                    mcp_key=it.mcp_key, max_execution_time=args.max_execution_time, lifespan=lifespan)
    guarded = guard(app, None if args.socket else args.host)  # Host and Origin checks (DNS rebinding, web pages)
    tls = it.tls
    config = uvicorn.Config(guarded, log_level="warning", ssl_certfile=str(tls.cert) if tls else None,
                            ssl_keyfile=str(tls.key) if tls else None, access_log=False, lifespan="on",
                            timeout_keep_alive=KEEP_ALIVE, limit_concurrency=1024, server_header=False, date_header=True,
                            http=guarded_protocol())  # deadlines for slow clients (slow-loris)
    server = PoolServer(config)
    it.stopper.server = server
    if it.stopper.requested:  # a signal came while this loaded: serve nothing, and clean up
        server.stop_soon()
    watcher = asyncio.create_task(watch_parent(args.parent_pid, server)) if args.parent_pid else None
    try:
        await server.serve(sockets=[it.listener])
    finally:
        if watcher:
            watcher.cancel()
    return bool(server.started)


class PoolServer(uvicorn.Server):
    """uvicorn's server, with our own signal handling (a stop must still delete every session) and a
    stop that takes as long as its work: uvicorn notices a stop at its next 0.1 s tick, then sleeps
    0.1 s and polls every 0.1 s for connections to close, which made a kernel's shutdown wait for it.
    The app's lifespan (announcing the pool, then stopping it) is uvicorn's, run at the start and, here, as
    soon as the listeners are closed."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # uvicorn would re-raise SIGTERM after serving, skipping the pool's clean-up

    def stop_soon(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
        self.should_exit = True
        self._stop_requested.set()

    async def main_loop(self) -> None:
        """uvicorn's loop of ticks (the Date header each second), woken at once by `stop_soon`."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(self._stop_requested.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, then stop the pool (every execution still waiting is answered: the pool is
        stopping), then let the open connections send those answers (idle ones close at once) for up
        to STOP_GRACE seconds, and close what is left."""
        for listening in self.servers:
            listening.close()
        for sock in sockets or []:
            sock.close()
        await self.lifespan.shutdown()  # the app's lifespan ends: the pool stops (every waiting execution is answered)
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE
        delay = 0.001  # an idle connection is gone at the next turn of the loop: look soon, then less often
        while (state.connections or state.tasks) and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.02)
        for task in list(state.tasks):
            task.cancel()
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


async def watch_parent(pid: int, server: PoolServer) -> None:
    """Stop the pool when the process that started it is gone (even if it was SIGKILLed)."""
    while True:
        try:
            os.kill(pid, 0)
            gone = os.getppid() != pid and os.getppid() == 1
        except ProcessLookupError:
            gone = True
        except PermissionError:
            gone = False
        if gone:
            log.info("parent %d is gone: stopping", pid)
            server.stop_soon()
            return
        await asyncio.sleep(0.25)


def describer(sandbox: Sandbox) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The `metadata` route's answer: runtime and installed packages, read once."""
    cache: dict[str, Any] = {}
    started = time.time()

    async def describe() -> dict[str, Any]:
        if not cache:
            cache.update(await asyncio.to_thread(sandbox.runtime.describe, sandbox.runtime))
            cache.update(createdAt=iso(started), lastUpdatedAt=iso(started))
        return cache

    return describe
