"""Issue 23 #8: the pool's memory stays within its stated bound (budget.py, PROTOCOL.md) under a session's worst
behaviour — queued code, kept answers, huge listings — and a huge listing does not stall other requests."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import psutil
import pytest
from conftest import start_pool

V2 = "2025-10-02-preview"
V1 = "2024-02-02-preview"
MIB = 1 << 20
QUEUED_PER_SESSION = 32 * MIB  # budget.QUEUED_PER_SESSION, the bound this test holds the pool to
LIST_PAGE = 10_000  # files.LIST_PAGE


@pytest.fixture(scope="module")
def own_pool():
    p = start_pool("--max-sessions", "10", "--ready-sessions", "0")
    yield p
    p.stop()


def execute(client: httpx.Client, identifier: str, code: str, mode: str = "Synchronous") -> httpx.Response:
    return client.post("/executions", params={"api-version": V2, "identifier": identifier},
                       json={"code": code, "timeoutInSeconds": 200, "executionType": mode})


def rss(pool) -> int:
    return psutil.Process(pool.process.pid).memory_info().rss


@pytest.mark.parametrize("character", ["#", "\U0001F600"])  # 1 byte in memory each; 4 bytes each
def test_queued_code_is_bounded_in_bytes_per_session_and_the_pools_memory_with_it(own_pool, character):
    sessions = [str(uuid.uuid4()) for _ in range(3)]
    big = "#" + character * ((15 * MIB) // (1 if character == "#" else 4)) + "\n1"  # 15 MiB in the pool's memory
    with httpx.Client(base_url=own_pool.endpoint, headers=own_pool.headers, timeout=120) as client:
        for identifier in sessions:
            assert execute(client, identifier, "1").status_code == 200  # warm: a started session
        baseline = rss(own_pool)
        peak = 0
        for identifier in sessions:
            running = execute(client, identifier, "import time\ntime.sleep(150)", "Asynchronous")
            assert running.status_code in (200, 202), running.text  # what follows stays queued behind it
            accepted, refused = 0, None
            for _ in range(6):  # 90 MiB offered per session
                answer = execute(client, identifier, big, "Asynchronous")
                if answer.status_code == 429:
                    refused = answer.json()["error"]
                    break
                assert answer.status_code in (200, 202), answer.text
                accepted += 1
            peak = max(peak, rss(own_pool))
            assert refused is not None, f"{accepted} executions of 15 MiB of code were queued in one session"
            assert accepted * 15 * MIB <= QUEUED_PER_SESSION
            assert "MiB of code queued" in refused["message"] and "wait" in refused["message"], refused
        for identifier in sessions:
            client.delete("/session", params={"api-version": V2, "identifier": identifier})
    grown = peak - baseline
    print(f"pool RSS: baseline {baseline / MIB:.0f} MiB, grown {grown / MIB:.0f} MiB with 3 sessions' queues full")
    assert grown < 3 * QUEUED_PER_SESSION + 64 * MIB, f"the pool grew by {grown / MIB:.0f} MiB"  # slack: bodies


def test_the_pools_bound_on_queued_code_holds_over_all_its_sessions():
    """Twenty sessions each queueing 15 MiB executions until refused: the pool's total stays within its bound,
    and the refusals past it say that the pool, not the session, is full."""
    from remote_kernel.pool.budget import QUEUED_PER_POOL, Budget, OverBudget

    pool_budget = Budget()
    held = [0] * 20
    refusals = []
    for session in range(20):
        for _ in range(3):
            try:
                pool_budget.queue(held[session], 15 * MIB)
            except OverBudget as over:
                refusals.append(str(over))
                break
            held[session] += 15 * MIB
    assert pool_budget.queued == sum(held) <= QUEUED_PER_POOL
    assert max(held) <= QUEUED_PER_SESSION
    assert any("The pool already holds" in r and "retry" in r for r in refusals), refusals
    for size in held:
        pool_budget.unqueue(size)
    assert pool_budget.queued == 0


def test_kept_answers_are_counted_in_bytes_not_characters(own_pool):
    """40 answers of 200 000 four-byte characters (800 KB each in memory): the session keeps about 16 MiB of
    them for polling, not 64 MiB (they were counted as 200 000 bytes each)."""
    identifier = str(uuid.uuid4())
    with httpx.Client(base_url=own_pool.endpoint, headers=own_pool.headers, timeout=120) as client:
        ids = []
        for _ in range(40):
            answer = execute(client, identifier, "print('\\U0001F600' * 200_000, end='')")
            assert answer.status_code == 200 and answer.json()["status"] == "Succeeded", answer.text[:300]
            ids.append(answer.json()["id"])
        kept = [i for i in ids if client.get(f"/executions/{i}", params={"api-version": V2,
                                                                         "identifier": identifier}).status_code == 200]
        client.delete("/session", params={"api-version": V2, "identifier": identifier})
    assert ids[-1] in kept  # the newest answer is always kept
    assert len(kept) <= 16 * MIB // 800_000 + 1, f"{len(kept)} answers of 800 KB kept"


def test_a_huge_folder_is_listed_in_pages_while_the_pool_keeps_answering(own_pool):
    identifier = str(uuid.uuid4())
    params = {"api-version": V2, "identifier": identifier}
    count = 200_000
    with httpx.Client(base_url=own_pool.endpoint, headers=own_pool.headers, timeout=300) as client:
        made = execute(client, identifier, f"import os\nfor i in range({count}):\n    open(f'f{{i:06d}}', 'w').close()\n"
                                           "len(os.listdir('/mnt/data'))").json()
        assert made["result"]["executionResult"] == count, made
        baseline = rss(own_pool)
        pages: list[tuple[float, float, int]] = []  # (start, end, entries) of each page request
        names: list[str] = []
        failures: list[BaseException] = []

        def list_all() -> None:
            try:
                url, query = "/files", params
                while url:
                    started = time.monotonic()
                    answer = client.get(url, params=query)
                    pages.append((started, time.monotonic(), len(answer.json()["value"])))
                    assert answer.status_code == 200, answer.text[:300]
                    names.extend(entry["name"] for entry in answer.json()["value"])
                    url, query = answer.json().get("nextLink"), None
                    assert len(pages) <= count // LIST_PAGE + 1, "more pages than the folder needs"
            except BaseException as problem:  # reported by the main thread
                failures.append(problem)

        lister = threading.Thread(target=list_all)
        lister.start()
        health: list[tuple[float, float]] = []
        peak = 0
        with httpx.Client(base_url=own_pool.endpoint, timeout=300) as other:
            while lister.is_alive():
                started = time.monotonic()
                assert other.get("/health").status_code == 200
                health.append((started, time.monotonic()))
                peak = max(peak, rss(own_pool))
        lister.join()
        assert not failures, failures[0]
        first_v1 = client.get("/files", params={"api-version": V1, "identifier": identifier}).json()
        client.delete("/session", params=params)
    assert all(size <= LIST_PAGE for _, _, size in pages), [size for _, _, size in pages]
    assert names == [f"f{i:06d}" for i in range(count)]  # every name once, in order, over the pages
    assert len(first_v1["value"]) <= LIST_PAGE and first_v1.get("nextLink")  # the v1 shape pages too
    inside = [h for h in health if any(start < h[0] and h[1] < end for start, end, _ in pages)]
    assert inside, "no /health answer came while a page of the listing was being made"
    grown = peak - baseline
    print(f"{len(pages)} pages; {len(health)} /health answers, {len(inside)} during a page; RSS grew "
          f"{grown / MIB:.0f} MiB")
    assert grown < 64 * MIB, f"the pool grew by {grown / MIB:.0f} MiB while listing"
