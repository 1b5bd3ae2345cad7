"""This pool's live-output extension (PROTOCOL.md): an execution whose output streams while it runs,
and the interrupt a kernel sends for it. Mounted at LIVE_PREFIX; every answer of the pool advertises
it with EXTENSIONS_HEADER (the gate adds it), which is how clients detect it."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount

from remote_kernel.pool import openapi as oa
from remote_kernel.pool.answers import execution_headers, v2_execution
from remote_kernel.pool.checks import (
    execution_request,
    existing_session,
    identifier_of,
    json_body,
    operation_id_of,
    policy_for,
    session_of,
    version_of,
)
from remote_kernel.pool.errors import ApiError
from remote_kernel.pool.openapi import ApiRoute, op
from remote_kernel.pool.runs import submit
from remote_kernel.pool.session import GRACE

EXTENSIONS_HEADER = (b"x-remote-kernel-extensions", b"live-execute")  # on every answer: how clients detect it
LIVE_PREFIX = "/.remote-kernel"
LIVE_EXECUTE = f"{LIVE_PREFIX}/live-execute"
LIVE_INTERRUPT = f"{LIVE_PREFIX}/live-interrupt"
LIVE_FIRST = 0.05  # seconds the `started` line waits to share its write with the first event or the end


def ndjson(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False).encode("utf-8", "replace") + b"\n"


async def live_execute(request: Request) -> Response:
    """An execution whose output events stream as NDJSON while it runs, ending with its v2 answer.

    Lines: `{"event": "started", "id", "grace"}`, then `{"event": "stream", "name", "text"}` as the
    worker sends them, then `{"event": "done", "execution": <the v2 execution body>}`. The time limit
    is the request's `timeoutInSeconds`, not capped by --max-execution-time (which caps the contract's
    routes, as the hosted service's 220 s does). Closing the stream interrupts the code.
    """
    name, _ = version_of(request)
    identifier_of(request)
    policy = policy_for(request)
    # the kernel's own route: its client's time limit holds (a kernel that starts its pool sets it there)
    asked = execution_request(await json_body(request), policy, float("inf"))
    session = await session_of(request)
    outcome = submit(session, asked, operation_id_of(request), live=True)
    headers = execution_headers(request, session, outcome, name)
    headers = {k: v for k, v in headers.items() if not k.startswith("x-ms-execution")
               and not k.startswith("x-ms-container")}
    # what is ready goes in one write: `started` waits up to LIVE_FIRST for the first event or the end, so that
    # it need not travel alone; a cell that ended by then is answered whole, with a length (one write of the head
    # and body, where a stream costs the client a wake-up for its head, its chunk and its end)
    pending = [ndjson({"event": "started", "id": outcome.id, "grace": GRACE})]
    try:
        await asyncio.wait_for(outcome.arrived.wait(), LIVE_FIRST)
    except asyncio.TimeoutError:
        pass
    except BaseException:
        if not outcome.done.is_set():
            session.cancel(outcome)
        raise
    if outcome.done.is_set():
        while outcome.events:
            stream_name, text = outcome.events.popleft()
            pending.append(ndjson({"event": "stream", "name": stream_name, "text": text}))
        answer = v2_execution(session, outcome, None, "Synchronous", policy)
        pending.append(ndjson({"event": "done", "execution": answer}))
        return Response(b"".join(pending), media_type="application/x-ndjson", headers=headers)

    async def events() -> AsyncIterator[bytes]:
        nonlocal pending
        try:
            while True:
                outcome.arrived.clear()
                while outcome.events:
                    stream_name, text = outcome.events.popleft()
                    pending.append(ndjson({"event": "stream", "name": stream_name, "text": text}))
                if outcome.done.is_set():
                    answer = v2_execution(session, outcome, None, "Synchronous", policy)
                    pending.append(ndjson({"event": "done", "execution": answer}))
                    yield b"".join(pending)
                    return
                if pending:
                    yield b"".join(pending)
                    pending = []
                await outcome.arrived.wait()
        finally:
            if not outcome.done.is_set():
                session.cancel(outcome)  # the client went away: interrupt, as a synchronous execute does

    return StreamingResponse(events(), media_type="application/x-ndjson", headers=headers)


async def live_interrupt(request: Request) -> Response:
    """Interrupt a running execution of the session; past the grace its session is killed."""
    version_of(request)
    session = existing_session(request)
    outcome = session.executions.get(request.query_params.get("execution", ""))
    if outcome is None:
        raise ApiError(404, "ExecutionNotFound", "No such execution in this session.")
    grace = session.interrupt_execution(outcome)
    return JSONResponse({"status": outcome.status, "grace": grace})


#: the extension's routes, mounted at LIVE_PREFIX by the app
ROUTES = Mount(LIVE_PREFIX, routes=[
    ApiRoute(LIVE_EXECUTE.removeprefix(LIVE_PREFIX), live_execute, op(
        "Execute code, its output streamed as it is written (this pool's extension)", oa.EXECUTE_PARAMS,
        {"200": oa.answer("NDJSON lines: started, stream…, done with the v2 execution",
                          {"type": "string"}, "application/x-ndjson"), **oa.DUPLICATE}, executes=True)),
    ApiRoute(LIVE_INTERRUPT.removeprefix(LIVE_PREFIX), live_interrupt, op(
        "Interrupt a running execution; past the grace its session is killed (this pool's extension)",
        (*oa.SESSION_PARAMS, oa.LIVE_EXECUTION), {"200": oa.answer("What was done", oa.OBJECT)}, method="POST")),
])
