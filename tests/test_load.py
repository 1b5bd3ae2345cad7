"""Load: 50 sessions × 100 executions at once against one pool, through the real client.

Every execution proves it ran in its own session (the session's tag and counter) and that its
answer reached its own caller (a token unique to the request comes back in its stdout). After the
sessions are deleted the pool is back where it started: no worker processes, no open file
descriptors or files beyond its baseline, and its memory near its baseline.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import psutil
import pytest
from conftest import start_pool

from remote_kernel.sessions import SessionsClient
from remote_kernel.sessions.auth import StaticToken

SESSIONS = 50
EXECUTIONS = 100
RSS_SLACK = 32 << 20  # bytes the pool may keep beyond its warm baseline (allocator arenas, caches)


@pytest.fixture(scope="module")
def load_pool():
    p = start_pool("--max-sessions", str(SESSIONS + 10), "--ready-sessions", "0", "--cooldown", "900")
    yield p
    p.stop()


def footprint(pool) -> dict:
    """What the pool holds: its RSS, its fds, its descendant processes, the files under its data root."""
    process = psutil.Process(pool.process.pid)
    files = sorted(str(path.relative_to(pool.data_root)) for path in Path(pool.data_root).rglob("*"))
    return {"rss": process.memory_info().rss, "fds": process.num_fds(),
            "processes": [(p.pid, p.name()) for p in process.children(recursive=True)], "files": files}


async def one_session(pool, number: int, wrong: list[str], durations: list[float]) -> None:
    identifier = f"load-{number}-{secrets.token_hex(6)}"
    async with SessionsClient(pool.endpoint, identifier, auth=StaticToken(pool.token), timeout=60) as client:
        first = await client.execute(f"TAG = {identifier!r}\nn = 0\nTAG")
        if first.result != identifier:
            wrong.append(f"{identifier}: set-up answered {first.result!r} {first.stderr[-300:]!r}")
        guid = first.session_guid
        for i in range(1, EXECUTIONS + 1):
            token = secrets.token_hex(8)
            started = time.monotonic()
            execution = await client.execute(f"n += 1\nprint(TAG, n, {token!r})\n[TAG, n]")
            durations.append(time.monotonic() - started)
            expected_stdout = f"{identifier} {i} {token}\n"
            if (not execution.succeeded or execution.stdout != expected_stdout
                    or execution.result != repr([identifier, i])  # a list comes back as its IPython text
                    or execution.session_guid != guid):
                wrong.append(f"{identifier} #{i}: {execution.status.value} stdout={execution.stdout!r} "
                             f"result={execution.result!r} guid={execution.session_guid} (not {guid}) "
                             f"stderr={execution.stderr[-300:]!r}")
        await client.delete_session()


async def warm_up(pool) -> None:
    async with SessionsClient(pool.endpoint, "load-warm-up", auth=StaticToken(pool.token)) as client:
        for i in range(20):
            assert (await client.execute(f"{i} * 2")).result == i * 2
        await client.delete_session()


def settled(pool, baseline: dict, timeout: float = 30) -> dict:
    """The pool's footprint once its processes, fds and files are back to the baseline (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        now = footprint(pool)
        if (not now["processes"] and now["fds"] <= baseline["fds"] and now["files"] == baseline["files"]
                or time.monotonic() > deadline):
            return now
        time.sleep(0.2)


@pytest.mark.slow
def test_fifty_sessions_of_a_hundred_executions_each_cross_nothing_and_leave_nothing(load_pool):
    asyncio.run(warm_up(load_pool))
    baseline = settled(load_pool, {"fds": 10 ** 6, "files": footprint(load_pool)["files"]})
    assert baseline["processes"] == []

    wrong: list[str] = []
    durations: list[float] = []

    async def everyone() -> None:
        await asyncio.gather(*(one_session(load_pool, n, wrong, durations) for n in range(SESSIONS)))

    started = time.monotonic()
    asyncio.run(everyone())
    took = time.monotonic() - started
    assert not wrong, f"{len(wrong)} wrong answers, first: {wrong[:3]}"
    assert len(durations) == SESSIONS * EXECUTIONS

    after = settled(load_pool, baseline)
    assert after["processes"] == [], f"left running: {after['processes'][:10]}"
    assert after["fds"] <= baseline["fds"], f"{after['fds']} fds open, {baseline['fds']} before"
    assert after["files"] == baseline["files"], f"left behind: {sorted(set(after['files']) - set(baseline['files']))[:10]}"
    assert after["rss"] <= baseline["rss"] + RSS_SLACK, \
        f"RSS {after['rss'] >> 20} MiB after, {baseline['rss'] >> 20} MiB before"
    durations.sort()
    print(f"\n{SESSIONS}×{EXECUTIONS} executions in {took:.1f} s; per execution median "
          f"{durations[len(durations) // 2] * 1000:.0f} ms, p99 {durations[int(len(durations) * 0.99)] * 1000:.0f} ms; "
          f"pool RSS {baseline['rss'] >> 20} → {after['rss'] >> 20} MiB, fds {baseline['fds']} → {after['fds']}")
    assert "Traceback" not in load_pool.log() and "unexpected error" not in load_pool.log()
