"""The report's detail tables and what bounds each figure (with the figures of the run quoted)."""
from __future__ import annotations

from typing import Any

from bench.common import LOCAL_KERNEL, REMOTE_KERNEL
from bench.report import dig, fmt


def details(r: dict[str, Any]) -> str:
    out = ["## All figures", ""]
    rt = dig(r, "kernel", "round_trip")
    if rt and "error" not in r.get("kernel", {}):
        out += ["### Kernels (through jupyter_client)", "",
                "| | remote-python | ipykernel | ratio |", "|---|---|---|---|",
                f"| cell round trip p50 | {rt[REMOTE_KERNEL]['p50_ms']:.2f} ms | {rt[LOCAL_KERNEL]['p50_ms']:.2f} ms "
                f"| {rt['ratio_p50']:.2f} |",
                f"| cell round trip p95 | {rt[REMOTE_KERNEL]['p95_ms']:.2f} ms | {rt[LOCAL_KERNEL]['p95_ms']:.2f} ms "
                f"| {rt['ratio_p95']:.2f} |"]
        for label, key in (("start to first result", "first_result"), ("quickstart notebook", "quickstart")):
            f = r["kernel"][key]
            out.append(f"| {label} | {f[REMOTE_KERNEL]['s']:.2f} s | {f[LOCAL_KERNEL]['s']:.2f} s | {f['ratio']:.2f} |")
        mem = rt.get("memory") or {}
        if mem:
            out.append(f"| kernel process RSS (PSS) | {mem[REMOTE_KERNEL]['rss']:.1f} ({mem[REMOTE_KERNEL]['pss']:.1f})"
                       f" MB + embedded pool {mem.get('embedded_pool', {}).get('rss', 0):.1f} MB | "
                       f"{mem[LOCAL_KERNEL]['rss']:.1f} ({mem[LOCAL_KERNEL]['pss']:.1f}) MB | |")
        out += ["", f"Round trips: {rt['runs']} runs of {rt['samples']} interleaved samples per kernel.", ""]
    pool = r.get("pool") or {}
    if "new_identifier_ready" in pool:
        a, b, w = pool["new_identifier_ready"], pool["new_identifier_cold"], pool["warm_round_trip"]
        out += ["### Pool over HTTP", "", "| figure | value | baseline (same run) |", "|---|---|---|",
                f"| new identifier, first execution, ready session | p50 {a['first_p50_ms']:.1f} ms, p95 "
                f"{a['first_p95_ms']:.1f} ms | warm execution {a['warm_p50_ms']:.2f} ms ({a['ratio_to_warm']:.1f} x) |",
                f"| new identifier, first execution, no ready session | p50 {b['first_p50_ms']:.0f} ms | "
                f"{b['ratio_to_warm']:.0f} x a warm execution |",
                f"| warm `1+1`, sync httpx | p50 {w['sync_p50_ms']:.2f} ms, p95 {w['sync_p95_ms']:.2f} ms | "
                f"`/health` {w['health_p50_ms']:.2f} ms; the worker's own time {w['worker_p50_ms']:.2f} ms |",
                f"| warm `1+1`, SessionsClient (async) | p50 {w['client_p50_ms']:.2f} ms, p95 {w['client_p95_ms']:.2f}"
                f" ms | {w['client_vs_sync']:.2f} x sync httpx |"]
        for n, t in sorted(pool["throughput"].items(), key=lambda kv: int(kv[0])):
            cpu = t["cpu_ms_per_execution"]
            out.append(f"| {n} concurrent sessions x {t['executions_each']} executions | {t['executions_per_s']:.0f}/s, "
                       f"p50 {t['p50_ms']:.1f} ms, p95 {t['p95_ms']:.1f} ms; CPU per execution: client "
                       f"{cpu['client']:.2f} ms, pool + workers {cpu['pool_and_workers']:.2f} ms | "
                       f"{t['vs_one_session']:.2f} x one session |")
        m = pool["memory"]
        out += [f"| idle session (worker process) | RSS {m['session']['rss']:.1f} MB, PSS {m['session']['pss']:.1f} MB, "
                f"USS {m['session']['uss']:.1f} MB; its sandbox processes +{m['sandbox_processes_rss_per_session']:.1f} "
                f"MB RSS | a bare interpreter: RSS {m['bare_python']['rss']:.1f} MB, USS {m['bare_python']['uss']:.1f} MB |",
                f"| pool process | RSS {m['pool']['rss']:.1f} MB, USS {m['pool']['uss']:.1f} MB | |", ""]
    f = r.get("files") or {}
    if "upload_MBps" in f:
        out += ["### Files", "",
                f"{f['size_bytes']:,} bytes through SessionsClient and the pool, {f['runs']} run(s) after a warm-up: "
                f"upload {f['upload_MBps']:.0f} MB/s ({f['upload_vs_local_copy']:.2f} x a local file copy, "
                f"{f['local_copy_MBps']:.0f} MB/s), download {f['download_MBps']:.0f} MB/s "
                f"({f['download_vs_local_copy']:.2f} x). Peak RSS: client {f['client_peak_MB']:.0f} MB, pool "
                f"{f['pool_peak_MB']:.0f} MB, session worker {f['worker_peak_MB']:.0f} MB. CPU seconds, upload: client "
                f"{f['cpu_s']['upload']['client']:.1f}, pool {f['cpu_s']['upload']['pool']:.1f}; download: client "
                f"{f['cpu_s']['download']['client']:.1f}, pool {f['cpu_s']['download']['pool']:.1f}. Intact: "
                f"{f['intact']}.", ""]
    for name, section in r.items():
        if isinstance(section, dict) and "error" in section:
            out += [f"**{name} failed**: {section['error']}", ""]
    return "\n".join(out)


def notes(r: dict[str, Any]) -> str:
    """What bounds each figure, as measured while profiling (py-spy, cProfile, CPU time per process from /proc)."""
    w = dig(r, "pool", "warm_round_trip") or {}
    t20 = dig(r, "pool", "throughput", "20") or {}
    c20 = dig(r, "pool", "throughput_sessions_client", "20") or {}
    m = dig(r, "pool", "memory") or {}
    return "\n".join([
        "## What bounds the figures, and what would lift them",
        "",
        "Measured while profiling on this 2-core machine (CPU seconds per process from `/proc/<pid>/stat`, "
        "py-spy and cProfile); other engineers' test runs shared the machine, so single figures are noisy and "
        "the interleaved ratios are the ones to trust.",
        "",
        "**Cell round trip.** Both kernels pay the same ipykernel plumbing (shell-channel thread, IOPub thread, "
        "message signing): about 5.5 ms of kernel CPU per cell for ipykernel *including* IPython's own run. "
        "remote-python replaces the in-process run (~0.3–0.5 ms) with one HTTP request: the httpx client costs "
        f"1.2–1.6 ms of CPU per request (warm `1+1`: sync httpx {fmt(w.get('sync_p50_ms'), '{:.2f}')} ms, the "
        f"kernel's async SessionsClient {fmt(w.get('client_p50_ms'), '{:.2f}')} ms, against `/health` at "
        f"{fmt(w.get('health_p50_ms'), '{:.2f}')} ms and the worker's own {fmt(w.get('worker_p50_ms'), '{:.2f}')} ms), "
        "the pool 0.55 ms, the worker 0.3–0.45 ms, all on the two cores that also run the front end. A raw "
        "keep-alive HTTP/1.1 client measured 0.07 ms of CPU and a 1.37 ms round trip on the same pool (httpcore "
        "alone: 0.95 ms CPU). *Lift*: a leaner transport for the client (httpcore directly, or a small HTTP/1.1 "
        "connection for loopback pools) and building each request's URL once instead of parsing it per call "
        "(`sessions/client.py`). The async/sync gap the lead saw (7 vs 3 ms) is not there once the pool answers "
        "with TCP_NODELAY: what remains is httpx's pure-Python request path (URL parsing, h11, header "
        "validation, anyio), ~0.3 ms more in the async client than the sync one.",
        "",
        "**Kernel start to first result.** ipykernel needs ~0.53 s to import and one in-process IPython. "
        "remote-python imports as much (0.56 s), and only then starts its embedded pool (in "
        "`RemoteKernel.__init__`), whose start is sequential: its own imports (0.19 s), a probe that imports "
        "IPython in a subprocess to check the interpreter (0.39 s, `sandbox.Runtime.python`), then a sandboxed "
        "worker (0.25–0.37 s). Fixed here: a first request no longer starts a second worker beside the ready one "
        "that is already starting (0.37 → 0.25 s from the endpoint to the first result). *Lift*: start the pool "
        "from the first line of `kernel/__main__.py`, before ipykernel is imported (overlaps ~0.5 s); probe with "
        "`importlib.util.find_spec` instead of importing IPython (saves ~0.35 s).",
        "",
        "**20 concurrent sessions.** The pool and its workers need "
        f"{fmt(t20.get('cpu_ms_per_execution', {}).get('pool_and_workers'), '{:.2f}')} ms of CPU per execution "
        "(uvicorn with uvloop + httptools: 0.55 ms in the pool process, against 0.76 ms with asyncio + h11; the "
        "worker ~0.45 ms): two cores cap that near 700 executions/s with a free client. The load generator here "
        f"is a lean HTTP/1.1 client ({fmt(t20.get('cpu_ms_per_execution', {}).get('client'), '{:.2f}')} ms CPU per "
        "execution); through the kernel's own SessionsClient, all 20 in one process, the client takes "
        f"{fmt(c20.get('cpu_ms_per_execution', {}).get('client'), '{:.2f}')} ms per execution from the same cores and "
        f"the rate is {fmt(c20.get('executions_per_s'), '{:.0f}')}/s (p95 {fmt(c20.get('p95_ms'), '{:.0f}')} ms). "
        "p95 follows from Little's law: 20 sessions at 500/s is 40 ms mean, so p95 ≤ 50 ms needs the mean well "
        "below. *Lift*: fewer asyncio tasks per request in the pool (`until_done_or_disconnected` makes two, "
        "`Session.submit` one, `wait_for` one per reply), the client transport above, or more cores.",
        "",
        "**Idle session memory.** Fixed here: the worker no longer runs IPython's package `__init__` (the "
        "terminal front end: prompt_toolkit, pygments lexers, jedi) nor jedi while building the shell, and has "
        "no SQLite history thread: RSS 53 → 39.5 MB, USS 40 → 27 MB. What is left is a bare interpreter "
        f"(RSS {fmt(m.get('bare_python', {}).get('rss'), '{:.1f}')} MB, of which ~6 MB are shared library pages) "
        "plus the ~430 modules IPython's shell needs (6.3 MB of marshalled code, ~12 MB once loaded, plus their "
        f"objects). RSS counts shared pages in every process; USS ({fmt(m.get('session', {}).get('uss'), '{:.1f}')} "
        "MB) is what one more session costs the machine, and PSS "
        f"({fmt(m.get('session', {}).get('pss'), '{:.1f}')} MB) its fair share: both under 30 MB. *Lift* for RSS: "
        "fork sessions from a warmed zygote so the imported code is shared copy-on-write — but each session "
        "needs its own namespaces, which bubblewrap creates at exec; a zygote would have to unshare and mount "
        "by itself (re-implementing bwrap with privileges). `-OO` would save ~2–3 MB of docstrings but breaks "
        "`?` help and assertions in user code.",
        "",
        "**Files.** The transfer streams in 1 MiB chunks on both sides (memory stays flat); throughput is CPU "
        "bound on the two cores: the multipart parser in the pool on upload and httpx's chunk handling in the "
        "client on download (CPU seconds per direction are in the table above). *Lift*: larger read sizes in "
        "the client's download loop and the pool's multipart reader.",
        "",
        "**Quickstart notebook.** The start-up gap above, plus one HTTP request per cell and per file magic "
        "(`%files`, `%download`, `%upload` each cross the pool; the local version copies files in-process).",
    ])
