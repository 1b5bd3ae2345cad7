"""An execution's run, from a checked request to its outcome: queueing, `useEmptyKernel`, and the
client that goes away."""
from __future__ import annotations

import asyncio

from starlette.requests import Request

from remote_kernel.pool.checks import (
    ExecutionRequest,
    execution_request,
    json_body,
    operation_id_of,
    policy_for,
    pool_of,
    session_of,
)
from remote_kernel.pool.errors import ApiError
from remote_kernel.pool.pool import SessionStartFailed
from remote_kernel.pool.runtimes import policy_of
from remote_kernel.pool.session import MAX_OPERATION_ID, DuplicateExecution, Outcome, QueueFull, Session


def submit(session: Session, asked: ExecutionRequest, operation_id: str | None, *, live: bool = False) -> Outcome:
    """Queue an execution (400 for a bad operation-id; QueueFull and DuplicateExecution have their answers
    in errors.py).

    A worker whose values get the hosted rendering is always asked for the display text of the value,
    which the answer turns into that rendering unless the request asked for that text."""
    if operation_id is not None and not 0 < len(operation_id) <= MAX_OPERATION_ID:
        raise ApiError(400, "InvalidOperationId", f"operation-id must be 1 to {MAX_OPERATION_ID} characters.")
    display_text = asked.jupyter or policy_of(session.sandbox.runtime).hosted_values
    outcome = session.submit(asked.code, asked.timeout, display_text, operation_id, live=live)
    outcome.jupyter = asked.jupyter
    return outcome


async def run_execution(request: Request) -> tuple[Session, Outcome, ExecutionRequest]:
    """Check the request, then run it in its session (a malformed request never starts a session)."""
    asked = execution_request(await json_body(request), policy_for(request), request.app.state.max_execution_time)
    session = await session_of(request)
    operation_id = operation_id_of(request)
    runner = await empty_kernel(request, session, operation_id) if asked.empty_kernel else session
    try:
        outcome = submit(runner, asked, operation_id)
    except (ApiError, QueueFull, DuplicateExecution):
        if runner is not session:
            pool_of(request).close_scratch_after(runner, finished())
        raise
    if runner is not session:  # closed once its one execution is over; polled through the session it was sent to
        pool_of(request).close_scratch_after(runner, outcome.done)
        session.executions[outcome.id] = outcome
    if not asked.asynchronous:
        await until_done_or_disconnected(request, runner, outcome)
    return session, outcome, asked


def finished() -> asyncio.Event:
    """An event already set: a scratch session whose execution never started is closed at once."""
    event = asyncio.Event()
    event.set()
    return event


async def empty_kernel(request: Request, session: Session, operation_id: str | None) -> Session:
    """`useEmptyKernel`: a fresh session of its own for one execution (no variables, imports or files of the
    session it was sent to)."""
    if operation_id is not None and operation_id in session.executions:
        raise ApiError(409, "DuplicateOperationId", f"This session already has an execution {operation_id!r}.")
    try:
        return await pool_of(request).scratch()
    except SessionStartFailed as failed:  # its own words: PoolFull answers as for any session (errors.py)
        raise ApiError(503, "SessionStartFailed", f"An empty kernel could not be started: {failed}",
                       {"Retry-After": "5"}) from None


async def until_done_or_disconnected(request: Request, session: Session, outcome: Outcome) -> None:
    """Wait for the outcome; a client that goes away interrupts (or cancels) its execution."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    done = asyncio.ensure_future(outcome.done.wait())
    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        done.cancel()
    if not outcome.done.is_set():
        session.cancel(outcome)
