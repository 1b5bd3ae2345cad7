"""The report's detail tables and what bounds each figure (with the figures of the run quoted)."""
from __future__ import annotations

from typing import Any

from bench.common import LOCAL_KERNEL, REMOTE_KERNEL
from bench.figures import dig, fmt


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
        f = r["kernel"]["first_result"]
        if "ready_s" in f[REMOTE_KERNEL]:
            out.append(f"| start to idle (first answer to the front end) | {f[REMOTE_KERNEL]['ready_s']:.2f} s | "
                       f"{f[LOCAL_KERNEL]['ready_s']:.2f} s | {f['ratio_ready']:.2f} |")
        for label, key in (("start to first result", "first_result"), ("quickstart notebook", "quickstart")):
            f = r["kernel"][key]
            out.append(f"| {label} | {f[REMOTE_KERNEL]['s']:.2f} s | {f[LOCAL_KERNEL]['s']:.2f} s | {f['ratio']:.2f} |")
        rs = dig(r, "kernel", "restart")
        if rs and "error" not in rs:
            out += [f"| restart (after a cell) to first result | {rs[REMOTE_KERNEL]['s']:.2f} s | "
                    f"{rs[LOCAL_KERNEL]['s']:.2f} s | {rs['ratio']:.2f} |",
                    f"| shutdown (request → process gone; embedded pool killed at {rs['pool_kills']} shutdowns) | "
                    f"{rs[REMOTE_KERNEL]['shutdown_s']:.2f} s | {rs[LOCAL_KERNEL]['shutdown_s']:.2f} s | "
                    f"{rs['ratio_shutdown']:.2f} |"]
        live = dig(r, "kernel", "live_latency")
        if live:
            out.append(f"| live output, a printed line → its IOPub message, p50 / p95 | "
                       f"{live[REMOTE_KERNEL]['p50_ms']:.1f} / {live[REMOTE_KERNEL]['p95_ms']:.1f} ms | "
                       f"{live[LOCAL_KERNEL]['p50_ms']:.1f} / {live[LOCAL_KERNEL]['p95_ms']:.1f} ms | |")
        mem = rt.get("memory") or {}
        if mem:
            out.append(f"| kernel process RSS (PSS) | {mem[REMOTE_KERNEL]['rss']:.1f} ({mem[REMOTE_KERNEL]['pss']:.1f})"
                       f" MB + embedded pool {mem.get('embedded_pool', {}).get('rss', 0):.1f} MB | "
                       f"{mem[LOCAL_KERNEL]['rss']:.1f} ({mem[LOCAL_KERNEL]['pss']:.1f}) MB | |")
        out += ["", f"Round trips: {rt['runs']} runs of {rt['samples']} interleaved samples per kernel; start and "
                f"restart: {dig(r, 'kernel', 'first_result', 'runs')} and {dig(r, 'kernel', 'restart', 'runs')} "
                "alternated runs per kernel, after a warm-up.", ""]
    imports = dig(r, "kernel", "imports")
    if imports and "error" not in imports:
        out += ["### Import-time budget (a fresh interpreter, before the first answer)", "",
                "| process | what it imports | seconds |", "|---|---|---|"]
        from bench.kernel_bench import IMPORTS

        for label, statement in IMPORTS.items():
            out.append(f"| {label} | `{statement}` | {imports[label]['s']:.2f} |")
        out += [f"| embedded pool | its command → listening (Unix socket, no MCP, one ready session) | "
                f"{imports['pool_listening']['s']:.2f} |", "",
                f"Medians of {imports['runs']} runs. tests/test_startup_imports.py names the modules that must not "
                "be loaded by then (the MCP SDK, jsonschema, cryptography, httpx in the pool; debugpy, httpx, "
                "the pool's server in the kernel).", ""]
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
    net = r.get("network") or {}
    if net.get("cells"):
        out += [f"### Over a slow network (a proxy on loopback adding {net['rtt_ms']:.0f} ms to every request)", "",
                "| cell | requests | wall time in round trips |", "|---|---|---|"]
        out += [f"| {kind} | {c['requests']:g} | {c['round_trips']:.2f} |" for kind, c in net["cells"].items()]
        out += ["", f"Each kind after a warm-up, median of {net['samples']}; the quickstart notebook through the proxy: "
                f"{net['quickstart_s']:.1f} s.", ""]
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
    rt = dig(r, "kernel", "round_trip") or {}
    load = ((r.get("load_average") or {}).get("start") or [None])[0]
    cpu20 = t20.get("cpu_ms_per_execution", {}).get("pool_and_workers")
    cap20 = 2000 / cpu20 if cpu20 else None  # executions per second that two cores' worth of CPU allows
    rt_floor = None
    if rt.get(LOCAL_KERNEL) and w.get("client_p50_ms") and w.get("health_p50_ms"):
        client_share = w["client_p50_ms"] - w["health_p50_ms"] - w.get("worker_p50_ms", 0)
        rt_floor = (rt[REMOTE_KERNEL]["p50_ms"] - client_share) / rt[LOCAL_KERNEL]["p50_ms"]
    return "\n".join([
        "## What bounds the figures, and what would lift them",
        "",
        "Measured while profiling on this 2-core machine (CPU seconds per process from `/proc/<pid>/stat`, "
        "py-spy and cProfile); single figures move with whatever else the machine runs, so the interleaved "
        "ratios are the ones to trust.",
        "",
        f"**This run.** The machine was shared with other jobs (load average {fmt(load, '{:.0f}')} on 2 cores at "
        "the start): single figures are inflated several times over a quiet run (the pool's bare `/health` "
        f"round trip took {fmt(w.get('health_p50_ms'), '{:.1f}')} ms, a warm `1+1` through ipykernel "
        f"{fmt(dig(rt, LOCAL_KERNEL, 'p50_ms'), '{:.1f}')} ms). The goals stated in milliseconds, executions per "
        "second or MB/s (new identifier, warm `1+1`, 20 sessions, files) are bound here by the CPU share the run "
        "got, as their same-run baselines show (`/health`, the lean load generator, the local file copy); the "
        "ratios against ipykernel are the comparable figures.",
        "",
        "**A plain cell over a slow network.** One request; its wall time is "
        f"{fmt(dig(r, 'network', 'cells', 'plain', 'round_trips'), '{:.1f}')} round trips of "
        f"{fmt(dig(r, 'network', 'rtt_ms'), '{:.0f}')} ms: beyond the one added round trip, the same cell's own "
        f"time on this loaded machine (its loopback round trip, without the proxy: "
        f"{fmt(dig(rt, REMOTE_KERNEL, 'p50_ms'), '{:.1f}')} ms) and the proxy's forwarding (a Starlette app "
        "and an httpx client in a thread of the benchmark's process, on the same cores). The first cell also "
        "creates the session (a ready worker is handed over) and loads the shim with the cell, and the figure "
        "cell renders a PNG with matplotlib in the session.",
        "",
        "**Cell round trip.** Both kernels pay the same ipykernel plumbing (shell channel, IOPub thread, "
        "message signing), which is most of either figure. remote-python replaces IPython's in-process run with "
        f"one HTTP request: warm `1+1` through the kernel's SessionsClient takes {fmt(w.get('client_p50_ms'), '{:.2f}')} "
        f"ms (sync httpx {fmt(w.get('sync_p50_ms'), '{:.2f}')} ms), of which the pool's bare `/health` round trip is "
        f"{fmt(w.get('health_p50_ms'), '{:.2f}')} ms and the worker's own run {fmt(w.get('worker_p50_ms'), '{:.2f}')} ms. "
        "Those two are a floor that no client can remove: the cell crosses two more processes (kernel → pool → "
        "worker and back), each hop a wake-up on the two cores that also run the front end. With the client's "
        f"share beyond a bare `/health` request taken away, the ratio would still be {fmt(rt_floor, '{:.2f}')}. Fixed here: ipykernel's 0.5 ms "
        "sleep before each reply (meant for a kernel that prints to its own sys.stdout; this one publishes "
        "messages) is off, and httpx no longer makes a log record per request. Issue 17: the embedded pool's "
        "client now talks to its Unix socket through a lean transport (`sessions/unix_transport.py`: h11 over "
        "asyncio's socket calls, in place of httpcore over anyio) and parses each URL once. On this loaded machine "
        "the gain is smaller than the load's drift: loops of warm `1+1` through SessionsClient, httpx's transport "
        "and the lean one alternating, gave 3.9 vs 2.6 ms of client CPU per execution (medians of 3 pairs), and "
        "after the URL cache 2.4 vs 2.3 ms (5 pairs); cProfile puts most of the rest in httpx's client layer "
        "(URL and header objects, the request and response models) and in this package's answer parsing. "
        "Through SessionsClient, 20 "
        f"sessions in one process cost {fmt(c20.get('cpu_ms_per_execution', {}).get('client'), '{:.2f}')} ms of "
        "client CPU per execution in this run, against "
        f"{fmt(t20.get('cpu_ms_per_execution', {}).get('client'), '{:.2f}')} ms for the benchmark's "
        "few-line HTTP/1.1 load generator. *Lift*: bypassing httpx's client layer for the socket (build the "
        "request bytes directly) would take most of the rest; reaching 1.0 needs the session in the pool's "
        "process, which its sandbox rules out.",
        "",
        "**Kernel start to first result.** Fixed here, from 1.46 vs 0.87 s (1.67) in a quiet run: the embedded "
        "pool starts from `kernel/__main__.py` before ipykernel is imported, so its start overlaps the kernel's "
        "instead of following it; the pool checks its interpreter with an `importlib.util.find_spec` look-up "
        "instead of importing IPython in a subprocess (0.5 s); a client of a loopback http pool loads no CA "
        "bundle (0.08 s of the first cell); httpx and httpcore import without click, rich and trio, which they "
        "pick up when installed (0.1 s). The pool now prints its endpoint ~0.2 s after it starts and its ready "
        "worker is up ~0.25 s later, before the kernel answers `kernel_info`. What remains: ipykernel's own "
        "start (its app is built on IPython's application classes, so remote-python imports IPython too), "
        "~0.1 s of this package's modules. Issue 17: the rich-output shim travels with the first cell (one line "
        "before the cell's code that takes itself out of the cell's line numbers, source lines and history), so "
        "the first cell is one request, not two; `remote_kernel.sessions` loads its client (httpx) on first use, "
        "while the embedded pool finishes starting, not before the kernel answers its front end. Under CPU "
        "contention (this machine shared with other jobs, load average "
        f"{fmt(load, '{:.0f}')} on 2 cores) the kernel answers its front end at "
        f"{fmt(dig(r, 'kernel', 'first_result', REMOTE_KERNEL, 'ready_s'), '{:.1f}')} s against ipykernel's "
        f"{fmt(dig(r, 'kernel', 'first_result', LOCAL_KERNEL, 'ready_s'), '{:.1f}')} s, but its first result "
        "waits for the embedded pool and its ready session: three Python processes (kernel, pool, worker) that "
        "start on the same two cores as the one ipykernel process, so under contention the ratio approaches "
        "their CPU seconds' ratio. The branch point, measured the same way at the same load (a `--quick` kernel "
        "run just before this one): 4.20 (29.8 vs 7.8 s) to first result, round trip 1.43. *Lift*: a pool "
        "that starts its ready worker before importing its web stack, or a worker forked from the pool.",
        "",
        "**Start, restart and shutdown (issue 27).** Before: start to first result 4.83 vs 0.95 s, restart "
        "4.56 vs 1.05 s, and `embedded pool did not stop within 1.0 s; killing it` at most shutdowns. The "
        "pool spent 3-4 s importing the MCP SDK (its jsonschema builds an RFC 3987 grammar at import) even for "
        "the embedded pool, whose MCP key is the token only its kernel knows: the embedded pool now runs with "
        "`--mcp off`, and any pool loads the SDK on the first `/mcp` request (`pool/mcp_lazy.py`) and "
        "cryptography only with `--tls`; a pool listens ~0.2 s after its command on a quiet machine. The "
        "kernel imports the sessions client in a thread started right after it spawns the pool (it was "
        "imported when the first cell came), answers `kernel_info` without ipykernel's debugger import "
        "(debugpy), and a Unix-socket client loads no CA bundle. Shutdown: the kill came from the pool's "
        "exit (the SDK's session manager and the teardown of its modules) and uvicorn's 0.1 s ticks; the pool "
        "now wakes at once on SIGTERM, closes idle connections at once, and leaves with `os._exit` after its "
        "clean-up (SIGTERM to exit 0.06-0.1 s, was 0.7-2.6 s); the kernel asks it to stop in `do_shutdown` and "
        "waits for it at exit, so both stop together. The benchmark itself ran this checkout's modules from "
        "source at every start (PYTHONDONTWRITEBYTECODE was set in its environment: 0.3-0.4 s of each kernel "
        "start on the loaded machine, more with its pool and client), while ipykernel, byte-compiled when "
        "installed, never paid that; kernels and pools now run byte-compiled, as from a wheel. The replacement "
        "of the ready session a first cell takes starts 1 s later, not beside that cell. What remains is CPU: "
        "a remote-python start runs three interpreters (kernel ~0.5 s of CPU, pool ~0.2 s, session worker ~0.25 s) where ipykernel runs one "
        "(~0.6 s), so on two loaded cores the ratio moves towards their CPU seconds' ratio. *Decision on a "
        "shared per-user pool* (one pool for all of a user's kernels, outliving a restart): it would take the "
        "pool's and the worker's start off a restart (~0.45 s of CPU), but it needs a token shared through a "
        "file, a lifetime of its own (idle exit, a kernel that finds it half-stopped), and a long-lived "
        "process holding every notebook's session; with the pool's start now ~0.2 s and overlapped with "
        "ipykernel's, it is not done: each kernel keeps its own pool, and each session stays as isolated as "
        "before. *Lift*: that shared pool if restarts under load matter more than the simpler life cycle. "
        f"The kernel figures here were measured at a load average of {fmt(dig(r, 'kernel', 'load_average'), '{:.1f}')} "
        "on 2 cores: per-run start and restart ratios then spread from below 1 to above 2, so their medians carry "
        "that noise.",
        "",
        "**20 concurrent sessions.** The pool and its workers need "
        f"{fmt(t20.get('cpu_ms_per_execution', {}).get('pool_and_workers'), '{:.2f}')} ms of CPU per execution "
        "(uvicorn with httptools on asyncio's loop; the "
        f"worker ~0.45 ms): two cores cap that near {fmt(cap20, '{:.0f}')} executions/s with a free client (this run: "
        f"{fmt(t20.get('executions_per_s'), '{:.0f}')}/s). The load generator here "
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
        "**Files.** The transfer streams in 1 MiB chunks on both sides (memory stays flat). Issue 17: the "
        "benchmark's pool listens on a Unix socket as the embedded pool does, and the client reads up to 1 MiB "
        "at a time through the lean transport (httpcore read 64 KiB). On this run the plain local file copy, "
        f"the baseline, made {fmt(dig(r, 'files', 'local_copy_MBps'), '{:.0f}')} MB/s (3,366 MB/s on a quiet "
        "machine): one process copying through the page cache keeps most of its speed on the shared cores, "
        "while a transfer needs the CPU of three (client, pool, worker), and got a small share of it. Client "
        "CPU per MB is the comparable figure: downloading took "
        f"{fmt(dig(r, 'files', 'cpu_s', 'download', 'client'), '{:.2f}')} s of client CPU for "
        f"{fmt(dig(r, 'files', 'size_bytes'), '{:,}')} bytes, against 3.51 s for 1 GiB (3.3 ms per MB) through "
        "httpcore over TCP in the last quiet full run; on upload the pool's multipart parser dominates (pool "
        "CPU in the table above). Noticed: the pool's peak RSS was 93 MB here (under the 100 MB goal) against "
        "38 MB in that TCP run; not investigated yet. *Lift*: the pool writing uploads with a raw body (no "
        "multipart) for the local path, and a measurement on a quiet machine against the same-run copy.",
        "",
        "**Requests per cell (over a slow network).** Every kind of cell is one request: rich output (tables, "
        "figures, display updates, up to 256 KiB a bundle) travels inline in the execution's own answer, the "
        "shim with the first cell, `%files` and a small `%upload` as one file request each; only a larger "
        "bundle costs a download and a delete (in the background). What a cell then waits beyond its one round "
        "trip is the proxy's own forwarding and the kernel's and worker's time on the loaded cores (the "
        "`plain` figure is wall time over the added round-trip time). The request counts are asserted, not "
        "timed, in tests/test_request_counts.py.",
        "",
        "**Quickstart notebook.** The start-up gap above, plus one HTTP request per cell and per file magic "
        "(`%files`, `%download`, `%upload` each cross the pool; the local version copies files in-process).",
    ])
