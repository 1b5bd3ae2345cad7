"""The whole benchmark suite in one run: the kernel against a local ipykernel, the pool, files.

    python -m bench            # full run: bench/results/latest.json, docs/benchmarks.md and its chart
    python -m bench --quick    # every figure and ratio, fewer samples (under 2 minutes); no report
    python -m bench --tiny     # a few samples of everything (the smoke test); no report

Every figure is a median of repeated runs after a warm-up; a ratio is computed run by run
against a baseline measured in the same run. Nothing here fails because a machine is slow.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import browser_bench, kernel_bench, network_bench, pool_bench, transfer_bench
from bench.common import LOCAL_KERNEL, REMOTE_KERNEL, ROOT, median

RESULTS = ROOT / "bench" / "results"
SECTIONS = ("kernel", "pool", "files", "network", "browser")


def files(size: int, runs: int, warmup: bool = True) -> dict[str, Any]:
    """Upload then download `size` bytes: bench/transfer_bench.py run `runs` times after a warm-up, each in a
    fresh process, so that its peak memory is the transfer's own."""
    per_run = []
    with tempfile.TemporaryDirectory(prefix="rk-bench-files-") as work:
        for i in range(0 if warmup else 1, runs + 1):
            output = Path(work) / f"transfer-{i}.json"
            subprocess.run([sys.executable, str(ROOT / "bench" / "transfer_bench.py"), "--size", str(size),
                            "--output", str(output)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            if i:
                per_run.append(json.loads(output.read_text()))
    out: dict[str, Any] = {k: median([r[k] or 0 for r in per_run]) for k in per_run[0]
                           if k.endswith(("MBps", "MB", "local_copy"))}
    out["worker_peak_MB"] = out.pop("pool_child_peak_MB")
    out["cpu_s"] = {way: {side: median([r[f"{way}_cpu_s"][side] for r in per_run]) for side in ("client", "pool")}
                    for way in ("upload", "download")}
    out.update(intact=all(r["intact"] for r in per_run), size_bytes=size, runs=runs)
    return out


def section(name: str, results: dict[str, Any], work: Callable[[], Any]) -> None:
    started = time.perf_counter()
    print(f"\n== {name}", flush=True)
    try:
        results[name] = work()
    except Exception as error:  # a broken benchmark is reported (with where it broke), and the others still run
        where = traceback.extract_tb(error.__traceback__)[-1]
        results[name] = {"error": f"{type(error).__name__}: {error} (at {where.filename}:{where.lineno})"}
        print(f"   FAILED: {results[name]['error']}", flush=True)
    results.setdefault("seconds", {})[name] = time.perf_counter() - started


def run_kernel(mode: str) -> dict[str, Any]:
    runs = {"tiny": 1, "quick": 3, "full": 5}[mode]
    out: dict[str, Any] = {"load_average": os.getloadavg()[0]}  # at the section's start: single figures move with it
    out["round_trip"] = rt = kernel_bench.round_trip(runs, {"tiny": 10, "quick": 60, "full": 300}[mode],
                                                    warmup=5 if mode == "tiny" else 20)
    print(f"cell round trip (x = 1+1; x), p50: {REMOTE_KERNEL} {rt[REMOTE_KERNEL]['p50_ms']:.2f} ms, "
          f"{LOCAL_KERNEL} {rt[LOCAL_KERNEL]['p50_ms']:.2f} ms, ratio {rt['ratio_p50']:.2f}; p95: "
          f"{rt[REMOTE_KERNEL]['p95_ms']:.2f} / {rt[LOCAL_KERNEL]['p95_ms']:.2f} ms, ratio {rt['ratio_p95']:.2f}",
          flush=True)
    memory = rt.get("memory", {})
    if memory:
        print(f"kernel process RSS: {REMOTE_KERNEL} {memory[REMOTE_KERNEL]['rss']:.1f} MB (its embedded pool "
              f"{memory['embedded_pool']['rss']:.1f} MB), {LOCAL_KERNEL} {memory[LOCAL_KERNEL]['rss']:.1f} MB",
              flush=True)
    out["live_latency"] = live = kernel_bench.live_latency(runs, {"tiny": 10, "quick": 40, "full": 100}[mode])
    print(f"live output (a printed line → its IOPub message): {REMOTE_KERNEL} p50 "
          f"{live[REMOTE_KERNEL]['p50_ms']:.1f} ms, p95 {live[REMOTE_KERNEL]['p95_ms']:.1f} ms; {LOCAL_KERNEL} p50 "
          f"{live[LOCAL_KERNEL]['p50_ms']:.1f} ms, p95 {live[LOCAL_KERNEL]['p95_ms']:.1f} ms", flush=True)
    out["first_result"] = st = kernel_bench.start_to_first_result({"tiny": 1, "quick": 3, "full": 7}[mode],
                                                                 warmup=mode != "tiny")
    print(f"kernel start to first result: {REMOTE_KERNEL} {st[REMOTE_KERNEL]['s']:.2f} s, {LOCAL_KERNEL} "
          f"{st[LOCAL_KERNEL]['s']:.2f} s, ratio {st['ratio']:.2f}", flush=True)
    out["restart"] = rs = kernel_bench.restart_to_first_result({"tiny": 1, "quick": 3, "full": 7}[mode],
                                                              warmup=mode != "tiny")
    print(f"kernel restart to first result: {REMOTE_KERNEL} {rs[REMOTE_KERNEL]['s']:.2f} s, {LOCAL_KERNEL} "
          f"{rs[LOCAL_KERNEL]['s']:.2f} s, ratio {rs['ratio']:.2f}; shutdown {rs[REMOTE_KERNEL]['shutdown_s']:.2f} s "
          f"vs {rs[LOCAL_KERNEL]['shutdown_s']:.2f} s (embedded pool killed at {rs['pool_kills']} shutdowns)",
          flush=True)
    out["imports"] = im = kernel_bench.import_budget({"tiny": 1, "quick": 3, "full": 5}[mode])
    print("import time in a fresh interpreter: " + ", ".join(f"{label} {im[label]['s']:.2f} s"
                                                               for label in kernel_bench.IMPORTS)
          + f"; the embedded pool listens {im['pool_listening']['s']:.2f} s after its command", flush=True)
    out["quickstart"] = nb = kernel_bench.quickstart({"tiny": 1, "quick": 1, "full": 3}[mode],
                                                     warmup=mode == "full")
    print(f"quickstart notebook (nbclient): {REMOTE_KERNEL} {nb[REMOTE_KERNEL]['s']:.2f} s, {LOCAL_KERNEL} "
          f"{nb[LOCAL_KERNEL]['s']:.2f} s, ratio {nb['ratio']:.2f}", flush=True)
    return out


def machine() -> dict[str, Any]:
    import importlib.metadata as m

    versions: dict[str, str | None] = {}
    for name in ("ipykernel", "jupyter_client", "ipython", "httpx", "httpcore", "uvicorn", "starlette", "httptools"):
        try:
            versions[name] = m.version(name)
        except m.PackageNotFoundError:
            versions[name] = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
            "memory_GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1),
            "bubblewrap": shutil.which("bwrap") is not None, "packages": versions,
            "load_average": os.getloadavg()}  # other work on the machine skews single figures; ratios less


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer samples; prints every figure (< 2 min)")
    speed.add_argument("--tiny", action="store_true", help="a few samples of everything (the smoke test)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    parser.add_argument("--file-size", type=transfer_bench.parse_size, default=None,
                        help="bytes for the file transfers (default 1G; --quick 256M; --tiny 4M)")
    parser.add_argument("--output", type=Path, default=None, help="where the JSON goes")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/benchmarks.md and its chart (default: on a full run of every section)")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    chosen = args.only or list(SECTIONS)
    size = args.file_size or {"tiny": 4 << 20, "quick": 256 << 20, "full": 1 << 30}[mode]

    started = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"remote_kernel benchmarks ({mode}): {results['machine']['cpus']} cores, Python "
          f"{results['machine']['python']}", flush=True)
    if "kernel" in chosen:
        section("kernel", results, lambda: run_kernel(mode))
    if "pool" in chosen:
        section("pool", results, lambda: pool_bench.run(quick=mode == "quick", tiny=mode == "tiny"))
    if "files" in chosen:
        def transfer() -> dict[str, Any]:
            r = files(size, 1 if mode != "full" else 3, warmup=mode != "tiny")
            print(f"{size / 1e6:.0f} MB file: upload {r['upload_MBps']:.0f} MB/s, download {r['download_MBps']:.0f} "
                  f"MB/s (a local file copy: {r['local_copy_MBps']:.0f} MB/s); peak memory: client "
                  f"{r['client_peak_MB']:.0f} MB, pool {r['pool_peak_MB']:.0f} MB, session worker "
                  f"{r['worker_peak_MB']:.0f} MB; intact: {r['intact']}", flush=True)
            return r
        section("files", results, transfer)
    if "network" in chosen:
        def network() -> dict[str, Any]:
            rtt_ms = 20 if mode == "tiny" else 50
            r = network_bench.measure(rtt_ms / 1000, {"tiny": 1, "quick": 3, "full": 5}[mode])
            for kind, cell in r["cells"].items():
                print(f"{kind} over a {rtt_ms} ms network: {cell['requests']:g} request(s), "
                      f"{cell['round_trips']:.1f} round trips", flush=True)
            print(f"quickstart notebook over a {rtt_ms} ms network: {r['quickstart_s']:.1f} s", flush=True)
            return r
        section("network", results, network)
    if "browser" in chosen and (mode != "tiny" or args.only):  # the smoke test's tiny run stays within its time
        why = browser_bench.available()
        if why:
            print(f"\n== browser: skipped ({why})", flush=True)
        else:
            def browser() -> dict[str, Any]:
                r = browser_bench.measure({"tiny": 1, "quick": 2, "full": 5}[mode])
                print(f"JupyterLab in Chromium, open notebook → first output: {REMOTE_KERNEL} "
                      f"{r[REMOTE_KERNEL]['open_s']:.2f} s, {LOCAL_KERNEL} {r[LOCAL_KERNEL]['open_s']:.2f} s, ratio "
                      f"{r['ratio_open']:.2f}; restart → first output: {r[REMOTE_KERNEL]['restart_s']:.2f} s, "
                      f"{r[LOCAL_KERNEL]['restart_s']:.2f} s, ratio {r['ratio_restart']:.2f}", flush=True)
                return r
            section("browser", results, browser)
    results["total_s"] = time.perf_counter() - started
    results["load_average"] = {"start": results["machine"].pop("load_average"), "end": os.getloadavg()}

    from bench import report

    print("\n" + report.summary_table(results), flush=True)
    output = args.output or RESULTS / ("latest.json" if mode == "full" else f"{mode}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nfigures written to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output} "
          f"({results['total_s']:.0f} s)")
    if args.report if args.report is not None else (mode == "full" and len(chosen) == len(SECTIONS)):
        written = report.write(results)
        print("report written to " + ", ".join(str(p.relative_to(ROOT)) for p in written))
    return results


if __name__ == "__main__":
    main()
