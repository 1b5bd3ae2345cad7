"""Live cells (issue 13): output while a cell runs, interrupts that keep it, long cells.

Every test waits by handshakes, never by the clock: a cell prints a line and then blocks until
the test acts (an interrupt, a file the test uploads), so a line that reaches the test before
the test acts can only have come live.
"""
from __future__ import annotations

import queue
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import start_pool
from kernel_support import API, ContractProxy, collect, embedded_env, errors_of, kernel, pool_env, run, text_of

WAIT = 120  # seconds any one step may take on a loaded machine before the test fails


def until(kc: Any, msg_id: str, done: Callable[[list[dict]], bool], what: str) -> list[dict]:
    """The request's IOPub outputs, read until `done(outputs)`; fails if the cell went idle first."""
    deadline = time.monotonic() + WAIT
    found: list[dict] = []
    while not done(found):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {WAIT} s; got {found}")
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            raise AssertionError(f"{what}: the cell ended first; its outputs: {found}")
        if msg["msg_type"] not in ("status", "execute_input"):
            found.append(msg)
    return found


def has_text(piece: str, name: str | None = None) -> Callable[[list[dict]], bool]:
    return lambda outputs: piece in text_of(outputs, name)


def finish(kc: Any, msg_id: str) -> tuple[dict, list[dict]]:
    """The rest of the request's outputs, and its reply."""
    outputs = collect(kc, msg_id, timeout=WAIT)
    reply = kc.get_shell_msg(timeout=WAIT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=WAIT)
    return reply["content"], outputs


def upload(pool: Any, identifier: str, name: str) -> None:
    response = httpx.post(f"{pool.endpoint}/files", params={"api-version": API, "identifier": identifier},
                          headers=pool.headers, files={"file": (name, b"go")}, timeout=30)
    response.raise_for_status()


# --- the embedded default: the pool's live events ---------------------------------------------------

@pytest.fixture(scope="module")
def embedded():
    """One remote-python kernel on its embedded pool for the tests below, in file order (the last one
    loses its session on purpose). The pool caps contract executions at 3 s; the kernel allows 60 s."""
    env = {**embedded_env(), "REMOTE_KERNEL_EXECUTION_CAP": "3", "REMOTE_KERNEL_TIMEOUT": "60"}
    with kernel(env) as (km, kc):
        yield km, kc


@pytest.fixture(params=["remote-python", "python3"])
def either(request, embedded):
    if request.param == "remote-python":
        yield embedded
    else:
        with kernel(embedded_env(), name="python3") as started:
            yield started


def test_python_lines_arrive_while_the_cell_runs_in_order_and_an_interrupt_keeps_them(either):
    """The same cell on the embedded default and on ipykernel: the same live streams, in the same
    order, and an interrupt that keeps them and shows where the code was."""
    km, kc = either
    run(kc, "import sys, time\nx = 41")
    msg_id = kc.execute("print('a', flush=True); print('b', file=sys.stderr, flush=True)\n"
                        "x += 1  # before 'c': an interrupt sent once 'c' is seen cannot come before it\n"
                        "print('c', flush=True)\ntime.sleep(600)")
    live = until(kc, msg_id, has_text("c"), "the first lines of a cell that sleeps 600 s")
    assert [(m["content"]["name"], m["content"]["text"]) for m in live] == [
        ("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
    km.interrupt_kernel()
    reply, rest = finish(kc, msg_id)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    (error,) = errors_of(rest)
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))  # ipykernel's colours
    assert "time.sleep(600)" in traceback and "python_worker" not in traceback  # where the code stopped
    assert text_of(rest) == ""  # what was printed live is not shown twice
    _, outputs = run(kc, "x")
    assert outputs[0]["content"]["data"]["text/plain"] == "42"  # the session's state is kept


def test_python_displays_updates_clear_output_and_figures_arrive_while_the_cell_runs(embedded):
    code = ("from IPython.display import display, clear_output, Markdown\nimport matplotlib.pyplot as plt, time\n"
            "h = display(Markdown('one'), display_id=True)\nh.update(Markdown('two'))\n"
            "display(Markdown('gone'))\nclear_output(wait=True)\n"
            "plt.plot([1, 2]); plt.show()\nprint('waiting', flush=True)\ntime.sleep(600)")
    km, kc = embedded
    msg_id = kc.execute(code)
    live = until(kc, msg_id, has_text("waiting"), "displays of a cell that sleeps 600 s")
    kinds = [m["msg_type"] for m in live]
    assert kinds == ["display_data", "update_display_data", "display_data", "clear_output", "display_data",
                     "stream"]
    assert live[1]["content"]["data"]["text/markdown"] == "two"
    assert live[1]["content"]["transient"]["display_id"] == live[0]["content"]["transient"]["display_id"]
    assert "image/png" in live[4]["content"]["data"]
    km.interrupt_kernel()
    reply, _ = finish(kc, msg_id)
    assert reply["ename"] == "KeyboardInterrupt"


def test_a_local_cell_runs_past_the_contracts_execution_cap_when_the_kernel_allows(embedded):
    km, kc = embedded
    reply, outputs = run(kc, "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 5:\n"
                             "    time.sleep(0.2)\nprint('past the cap')")
    assert reply["status"] == "ok" and text_of(outputs, "stdout") == "past the cap\n"


def test_an_ignored_interrupt_is_said_at_once_and_answered_on_that_cell(embedded):
    code = ("import time\nprint('stubborn', flush=True)\nwhile True:\n    try:\n        time.sleep(600)\n"
            "    except KeyboardInterrupt:\n        pass")
    km, kc = embedded
    msg_id = kc.execute(code)
    until(kc, msg_id, has_text("stubborn"), "the cell's first line")
    km.interrupt_kernel()
    said = until(kc, msg_id, has_text("did not stop", "stderr"), "word that the code did not stop")
    assert "killed" in text_of(said, "stderr") and "state is lost" in text_of(said, "stderr")
    reply, rest = finish(kc, msg_id)
    assert reply["status"] == "error" and reply["ename"] == "SessionLost"
    assert "interrupt" in errors_of(rest)[0]["evalue"]
    reply, outputs = run(kc, "print('next')")  # a fresh session, at once
    assert reply["status"] == "ok" and "next" in text_of(outputs, "stdout")


def test_javascript_lines_arrive_while_the_cell_runs_and_an_interrupt_keeps_them():
    with kernel(embedded_env(), name="remote-javascript") as (km, kc):
        msg_id = kc.execute("console.log('a'); console.error('b'); console.log('c');\n"
                            "await new Promise((resolve) => setTimeout(resolve, 600000));")
        live = until(kc, msg_id, has_text("c"), "the first lines of a cell that waits 600 s")
        assert [(m["content"]["name"], m["content"]["text"]) for m in live] == [
            ("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
        km.interrupt_kernel()
        reply, rest = finish(kc, msg_id)
        assert reply["status"] == "error" and text_of(rest) == ""


# --- a hosted pool: the contract only ---------------------------------------------------------------

@pytest.fixture(scope="module")
def capped_pool():
    """A pool whose executions are capped at 3 s (a test-shortened 220 s)."""
    p = start_pool("--max-sessions", "20", env={"REMOTE_KERNEL_EXECUTION_CAP": "3"})
    yield p
    p.stop()


def test_hosted_lines_arrive_through_the_live_log_while_the_cell_runs(pool):
    proxy = ContractProxy(pool.endpoint)
    identifier = str(uuid.uuid4())
    env = {**pool_env(pool, identifier), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    try:
        with kernel(env) as (km, kc):
            run(kc, "import os, sys, time")
            msg_id = kc.execute("print('waiting', flush=True); print('e', file=sys.stderr)\n"
                                "while not os.path.exists('go'):\n    time.sleep(0.1)\nprint('done')")
            live = until(kc, msg_id, has_text("e", "stderr"), "lines of a cell that waits for the test")
            assert text_of(live, "stdout") == "waiting\n"
            upload(pool, identifier, "go")
            reply, rest = finish(kc, msg_id)
            assert reply["status"] == "ok" and text_of(rest) == "done\n"  # nothing shown twice
            assert ("POST", "/.remote-kernel/live-execute") not in proxy.requests  # the contract only
    finally:
        proxy.close()


def test_hosted_pool_whose_file_api_stalls_during_an_execution_falls_back_without_an_error(pool):
    proxy = ContractProxy(pool.endpoint, stall_files=True)
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    try:
        with kernel(env) as (km, kc):
            run(kc, "import time")
            reply, outputs = run(kc, "print('a', flush=True)\ntime.sleep(5)\nprint('b')")
            assert reply["status"] == "ok" and text_of(outputs) == "a\nb\n" and not errors_of(outputs)
            assert proxy.stalled >= 1  # the kernel did try to read the live log, and the pool held it
    finally:
        proxy.close()


def test_hosted_cap_error_names_long_and_a_long_cell_runs_past_it_with_live_output(capped_pool):
    proxy = ContractProxy(capped_pool.endpoint)
    identifier = str(uuid.uuid4())
    env = {**pool_env(capped_pool, identifier), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    try:
        with kernel(env) as (km, kc):
            reply, outputs = run(kc, "import os, time\ntime.sleep(5)")
            assert reply["ename"] == "ExecutionTimeout" and "%%long" in "\n".join(errors_of(outputs)[0]["traceback"])
            msg_id = kc.execute("%%long\nprint('started', flush=True)\nwhile not os.path.exists('go'):\n"
                                "    time.sleep(0.1)\nt = time.monotonic()\nwhile time.monotonic() - t < 4:\n"
                                "    time.sleep(0.2)\nprint('finished')\n6 * 7")
            until(kc, msg_id, has_text("started"), "a long cell's first line")
            upload(capped_pool, identifier, "go")
            reply, rest = finish(kc, msg_id)
            assert reply["status"] == "ok" and text_of(rest) == "finished\n"
            assert [m["content"]["data"]["text/plain"] for m in rest if m["msg_type"] == "execute_result"] == ["42"]
            msg_id = kc.execute("%%long\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.1)")
            until(kc, msg_id, has_text("looping"), "a long cell's first line")
            km.interrupt_kernel()
            reply, rest = finish(kc, msg_id)
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
            reply, outputs = run(kc, "print(t > 0)")
            assert text_of(outputs, "stdout") == "True\n"  # the long cell ran in the session's namespace
    finally:
        proxy.close()


def test_the_live_route_is_not_capped_where_the_contract_is(capped_pool):
    """The pool side of long local cells: with the contract capped at 3 s, the same 5 s cell times out
    through `executions` and completes through the live route, whose limit is the client's."""
    import asyncio

    from remote_kernel.sessions import SessionsClient
    from remote_kernel.sessions.auth import StaticToken

    code = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 5:\n    time.sleep(0.2)\nprint('done')"

    async def both() -> tuple:
        async with SessionsClient(capped_pool.endpoint, str(uuid.uuid4()), auth=StaticToken(capped_pool.token),
                                  timeout=60) as client:
            capped = await client.execute(code)
            events: list[dict] = []
            live = await client.execute_live(code, events.append)
            return capped, live, events, client.live

    capped, live, events, advertised = asyncio.run(both())
    assert advertised and capped.error is not None and capped.error.name == "ExecutionTimeout"
    assert live.succeeded and live.stdout == "done\n" and events[0]["event"] == "started"
    streamed = "".join(e["text"] for e in events if e["event"] == "stream")
    assert live.stdout.startswith(streamed)  # what was still queued at the end is in the answer only


def test_the_extension_routes_need_the_token_and_are_advertised_on_every_answer(pool):
    for path in ("/.remote-kernel/live-execute", "/.remote-kernel/live-interrupt"):
        response = httpx.post(f"{pool.endpoint}{path}", params={"api-version": API, "identifier": "abcd"},
                              json={"code": "1"}, timeout=30)
        assert response.status_code == 401, path
    answer = httpx.get(f"{pool.endpoint}/health", timeout=30)
    assert answer.headers["x-remote-kernel-extensions"] == "live-execute"
    missing = httpx.post(f"{pool.endpoint}/.remote-kernel/live-interrupt", headers=pool.headers, timeout=30,
                         params={"api-version": API, "identifier": str(uuid.uuid4()), "execution": "nope"})
    assert missing.status_code == 404


@pytest.mark.parametrize("code, ename", [
    ("class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nBad()", "RuntimeError"),
    ("10**5000", "ValueError"),
    ("class Bad(Exception):\n    def __str__(self):\n        raise RuntimeError('no str')\nraise Bad()", "Bad"),
])
def test_a_long_cell_whose_value_or_error_cannot_be_shown_fails_and_keeps_the_session(pool, code, ename):
    """Issue 23, finding 15 for `%%long`: the value's repr, or the error's str, is session code that may raise."""
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (_, kc):
        run(kc, "kept = 41")
        reply, outputs = run(kc, "%%long\n" + code)
        after, shown = run(kc, "kept + 1")
    assert reply["status"] == "error" and reply["ename"] == ename, (reply, outputs)
    assert after["status"] == "ok" and shown[-1]["content"]["data"]["text/plain"] == "42"
