"""The local session pool over HTTP, each figure beside a baseline measured in the same run.

- new identifier, first execution (`1+1`), with a ready session waiting and without one;
  baseline: the same request on a session that already exists;
- warm `1+1` round trip over HTTP (a sync httpx client, and the kernel's async SessionsClient);
  baselines: the pool's `/health` route (HTTP alone) and the worker's own execution time;
- throughput: N sessions at once (N = 1, 5, 20) each running M small executions through
  SessionsClient: executions per second and p95 latency; baseline: N = 1;
- memory: an idle session's worker (RSS, PSS, USS), the pool process; baseline: a bare interpreter.

    python bench/pool_bench.py [--quick]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    API,
    PoolProcess,
    cpu_seconds,
    descendants,
    median,
    memory,
    ms,
    p50,
    p95,
    session_workers,
    start_pool,
    wait_until,
)
from remote_kernel.sessions import SessionsClient, StaticToken

CODE = "1+1"


def post(client: httpx.Client, pool: PoolProcess, identifier: str, code: str = CODE) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post(f"{pool.endpoint}/executions", params={"api-version": API, "identifier": identifier},
                           json={"code": code})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response


def delete(client: httpx.Client, pool: PoolProcess, identifier: str) -> None:
    client.delete(f"{pool.endpoint}/session", params={"api-version": API, "identifier": identifier})


def settled(pool: PoolProcess, workers: int) -> bool:
    """Whether `workers` session workers exist and all sit idle for 0.2 s (a ready one has finished starting: a
    worker still starting can look idle for 50 ms, and its first execution then waits for the rest of its start)."""
    pids = session_workers(pool.pid)
    if len(pids) < workers:
        return False
    before = [cpu_seconds(p) for p in pids]
    for _ in range(4):
        time.sleep(0.05)
        if before != [cpu_seconds(p) for p in pids]:
            return False
    return True


def wait_settled(pool: PoolProcess, workers: int) -> None:
    wait_until(lambda: settled(pool, workers), 60, interval=0.01)


def new_identifier(samples: int, ready: bool, warmups: int = 2) -> dict[str, Any]:
    """First execution of fresh identifiers (each deleted after), against a warm execution."""
    with start_pool("--ready-sessions", "1" if ready else "0", "--max-sessions", "20", "--cooldown", "3600") as pool, \
            httpx.Client(headers=pool.headers, timeout=120) as client:
        warm_id = str(uuid.uuid4())
        post(client, pool, warm_id)
        for _ in range(warmups):
            identifier = str(uuid.uuid4())
            wait_settled(pool, 2 if ready else 1)
            post(client, pool, identifier)
            delete(client, pool, identifier)
        firsts, warms = [], []
        for _ in range(samples):
            wait_settled(pool, 2 if ready else 1)  # the warm session, and the ready one when there is one
            identifier = str(uuid.uuid4())
            firsts.append(post(client, pool, identifier)[0])
            warms.append(post(client, pool, warm_id)[0])
            delete(client, pool, identifier)
    return {"first_p50_ms": ms(p50(firsts)), "first_p95_ms": ms(p95(firsts)), "warm_p50_ms": ms(p50(warms)),
            "ratio_to_warm": p50(firsts) / p50(warms), "samples": samples}


async def async_round_trips(pool: PoolProcess, identifier: str, samples: int) -> list[float]:
    times = []
    async with SessionsClient(pool.endpoint, identifier, api_version=API, auth=StaticToken(pool.token)) as client:
        for i in range(samples + 20):
            started = time.perf_counter()
            execution = await client.execute(CODE)
            if i >= 20:
                times.append(time.perf_counter() - started)
        assert execution.result == 2 or str(execution.result) == "2", execution
    return times


def warm_round_trip(runs: int, samples: int) -> dict[str, Any]:
    """Warm `1+1` over HTTP (sync httpx and SessionsClient), /health, and the worker's own time."""
    per_run = []
    with start_pool("--ready-sessions", "1") as pool, httpx.Client(headers=pool.headers, timeout=60) as client:
        identifier = str(uuid.uuid4())
        for _ in range(50):
            post(client, pool, identifier)
            client.get(f"{pool.endpoint}/health")
        for _ in range(runs):
            sync, health, worker = [], [], []
            for _ in range(samples):
                elapsed, response = post(client, pool, identifier)
                sync.append(elapsed)
                worker.append(float(response.headers.get("x-ms-execution-request-time", "nan")) / 1000)
                started = time.perf_counter()
                client.get(f"{pool.endpoint}/health")
                health.append(time.perf_counter() - started)
            asynchronous = asyncio.run(async_round_trips(pool, identifier, samples))
            per_run.append({"sync_p50_ms": ms(p50(sync)), "sync_p95_ms": ms(p95(sync)),
                            "client_p50_ms": ms(p50(asynchronous)), "client_p95_ms": ms(p95(asynchronous)),
                            "health_p50_ms": ms(p50(health)), "worker_p50_ms": ms(p50(worker)),
                            "sync_vs_health": p50(sync) / p50(health),
                            "client_vs_sync": p50(asynchronous) / p50(sync)})
    return {key: median([r[key] for r in per_run]) for key in per_run[0]} | {"runs": runs, "samples": samples}


class LeanClient:
    """A keep-alive HTTP/1.1 client in a few lines (~0.1 ms of CPU a request, where httpx takes ~1.2 ms):
    the load generator shares the machine's two cores with the pool, so it must cost little."""

    def __init__(self, pool: PoolProcess, identifier: str) -> None:
        self.host, port = pool.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.head = (f"POST /executions?api-version={API}&identifier={identifier} HTTP/1.1\r\nHost: {self.host}\r\n"
                     f"Authorization: Bearer {pool.token}\r\nContent-Type: application/json\r\n")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def execute(self, code: str) -> Any:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps({"code": code}).encode()
        self.writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        declared = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        assert declared is not None, f"the pool answered without a Content-Length: {head!r}"
        length = int(declared.group(1))
        answer = json.loads(await self.reader.readexactly(length))
        if status != 200 or answer.get("status") != "Succeeded":
            raise RuntimeError(f"execution failed: {status} {answer}")
        return answer["result"]["executionResult"]

    async def delete_session(self) -> None:
        pass  # the pool is stopped after the load

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(pool: PoolProcess, sessions: int, executions: int, lean: bool) -> dict[str, Any]:
    """`sessions` clients at once, each running `executions` executions back to back."""
    clients = [LeanClient(pool, str(uuid.uuid4())) if lean else
               SessionsClient(pool.endpoint, str(uuid.uuid4()), api_version=API, auth=StaticToken(pool.token))
               for _ in range(sessions)]
    try:
        async def warm(client: Any) -> None:  # the sessions exist and are warm before the clock starts
            for code in ("x = 0", CODE, CODE, CODE):
                await client.execute(code)

        await asyncio.gather(*(warm(c) for c in clients))
        latencies: list[float] = []

        async def one(client: Any) -> None:
            for i in range(executions):
                started = time.perf_counter()
                await client.execute("x += 1; x" if i % 2 else CODE)
                latencies.append(time.perf_counter() - started)

        pids = [pool.pid, *descendants(pool.pid)]
        cpu_before = cpu_seconds(), sum(cpu_seconds(p) for p in pids)
        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in clients))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(), sum(cpu_seconds(p) for p in pids)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    total = sessions * executions
    return {"executions_per_s": total / elapsed, "p50_ms": ms(p50(latencies)), "p95_ms": ms(p95(latencies)),
            "cpu_ms_per_execution": {"client": (cpu_after[0] - cpu_before[0]) * 1000 / total,
                                     "pool_and_workers": (cpu_after[1] - cpu_before[1]) * 1000 / total}}


def throughput(levels: tuple[int, ...], executions: int, runs: int, lean: bool = True) -> dict[str, Any]:
    """Each level in a pool of its own (no session left over from the level before)."""
    out: dict[str, Any] = {}
    for n in levels:
        per_run = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="rk-bench-uds-") as folder:
                # SessionsClient against a pool on a Unix socket, as the kernel's embedded pool runs (its lean
                # transport); the lean HTTP/1.1 load generator over TCP
                socket = None if lean else Path(folder) / "pool.sock"
                with start_pool("--ready-sessions", "1", "--max-sessions", str(n + 5), "--cooldown", "3600",
                                socket=socket) as pool:
                    per_run.append(asyncio.run(load(pool, n, executions, lean)))
        out[str(n)] = {"executions_per_s": median([r["executions_per_s"] for r in per_run]),
                       "p50_ms": median([r["p50_ms"] for r in per_run]),
                       "p95_ms": median([r["p95_ms"] for r in per_run]),
                       "cpu_ms_per_execution": {k: median([r["cpu_ms_per_execution"][k] for r in per_run])
                                                for k in per_run[0]["cpu_ms_per_execution"]},
                       "executions_each": executions, "runs": runs,
                       "client": "lean HTTP/1.1" if lean else "SessionsClient (Unix socket)"}
    base = out[str(levels[0])]["executions_per_s"]
    for n in levels:
        out[str(n)]["vs_one_session"] = out[str(n)]["executions_per_s"] / base
    return out


def idle_memory(sessions: int = 3) -> dict[str, Any]:
    """Memory of idle sessions that ran one cell, of the pool process, and of a bare interpreter."""
    with start_pool("--ready-sessions", "1", "--cooldown", "3600") as pool, \
            httpx.Client(headers=pool.headers, timeout=120) as client:
        for _ in range(sessions):
            post(client, pool, str(uuid.uuid4()))
        wait_settled(pool, sessions + 1)
        workers = [memory(p) for p in session_workers(pool.pid)]
        pool_memory = memory(pool.pid)
        sandbox = sum(memory(p)["rss"] for p in descendants(pool.pid)) - sum(w["rss"] for w in workers)
    bare = subprocess.Popen([sys.executable, "-I", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        bare_memory = memory(bare.pid)
    finally:
        bare.communicate(b"")
    return {"session": {k: median([w[k] for w in workers]) for k in ("rss", "pss", "uss")},
            "session_count": len(workers), "pool": pool_memory,
            "sandbox_processes_rss_per_session": sandbox / max(1, len(workers)), "bare_python": bare_memory}


def run(quick: bool = False, tiny: bool = False) -> dict[str, Any]:
    """Every figure of the pool bench, printed as it comes; the dictionary for the report."""
    samples = 3 if tiny else 15 if quick else 40
    results: dict[str, Any] = {}
    results["new_identifier_ready"] = r = new_identifier(samples, ready=True, warmups=1 if tiny else 2)
    print(f"new identifier, first execution, ready session: p50 {r['first_p50_ms']:.1f} ms "
          f"(p95 {r['first_p95_ms']:.1f}; {r['ratio_to_warm']:.1f} x a warm execution)", flush=True)
    results["new_identifier_cold"] = r = new_identifier(2 if tiny else max(3, samples // 3), ready=False,
                                                        warmups=1 if tiny else 2)
    print(f"new identifier, first execution, no ready session: p50 {r['first_p50_ms']:.1f} ms "
          f"({r['ratio_to_warm']:.0f} x a warm execution)", flush=True)
    results["warm_round_trip"] = r = warm_round_trip(1 if tiny else 3, 20 if tiny else 150 if quick else 400)
    print(f"warm 1+1 over HTTP: sync httpx p50 {r['sync_p50_ms']:.2f} ms, SessionsClient p50 {r['client_p50_ms']:.2f} "
          f"ms ({r['client_vs_sync']:.2f} x sync); baselines: /health {r['health_p50_ms']:.2f} ms, worker "
          f"{r['worker_p50_ms']:.2f} ms", flush=True)
    levels = (2,) if tiny else (1, 5, 20)
    each, runs = (10, 1) if tiny else (200, 1) if quick else (200, 3)
    results["throughput"] = r = throughput(levels, each, runs)
    shown = [(n, r[str(n)]) for n in levels]
    # the same load through the kernel's own client on a Unix socket, for comparison
    results["throughput_sessions_client"] = r2 = throughput(levels[-1:], each, runs, lean=False)
    shown.append((levels[-1], r2[str(levels[-1])]))
    for n, t in shown:
        print(f"{n:>2} concurrent sessions, {t['client']}: {t['executions_per_s']:.0f} executions/s "
              f"({t['vs_one_session']:.2f} x one session), p50 {t['p50_ms']:.1f} ms, p95 {t['p95_ms']:.1f} ms; CPU "
              f"per execution: client {t['cpu_ms_per_execution']['client']:.2f} ms, pool+workers "
              f"{t['cpu_ms_per_execution']['pool_and_workers']:.2f} ms", flush=True)
    results["memory"] = r = idle_memory(2 if tiny else 3)
    s = r["session"]
    print(f"idle session: RSS {s['rss']:.1f} MB, PSS {s['pss']:.1f} MB, USS {s['uss']:.1f} MB (bare python RSS "
          f"{r['bare_python']['rss']:.1f} MB); pool process RSS {r['pool']['rss']:.1f} MB", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a few samples only (the smoke test)")
    args = parser.parse_args()
    run(args.quick, args.tiny)


if __name__ == "__main__":
    main()
