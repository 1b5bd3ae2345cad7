"""The targets table (printed by every run) and the Markdown report with its chart (a full run)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import LOCAL_KERNEL, REMOTE_KERNEL, ROOT
from bench.figures import dig, fmt
from bench.notes import details, notes

DOCS = ROOT / "docs"
#: the line from which docs/benchmarks.md holds sections measured by hand (by scripts of their own, over
#: several trees or in a browser): writing the report again keeps them, from this line on
BY_HAND = "<!-- measured by hand: the report, when written again, keeps what follows -->"

Row = tuple[str, str, str, "bool | None"]


def rows(r: dict[str, Any]) -> list[Row]:
    """(figure, target, measured, met) for every target of issue 7, of the pool issue and of issue 17
    (performance), each ratio against a baseline of the same run."""
    def row(figure: str, target: str, measured: str, ok: Callable[[], bool], *needed: Any) -> Row:
        return figure, target, measured, None if any(v is None for v in needed) else ok()

    rt = dig(r, "kernel", "round_trip")
    rt50, rt95 = dig(rt or {}, "ratio_p50"), dig(rt or {}, "ratio_p95")
    first = dig(r, "kernel", "first_result", "ratio")
    nb = dig(r, "kernel", "quickstart", "ratio")
    new_ready = dig(r, "pool", "new_identifier_ready", "first_p50_ms")
    warm = dig(r, "pool", "warm_round_trip", "sync_p50_ms")
    t20: dict[str, Any] = dig(r, "pool", "throughput", "20") or {}
    rate: Any = t20.get("executions_per_s")  # None where not measured: `row` then skips the check
    lat: Any = t20.get("p95_ms")
    c20: dict[str, Any] = dig(r, "pool", "throughput_sessions_client", "20") or {}
    crate: Any = c20.get("executions_per_s")
    ccpu: Any = dig(c20, "cpu_ms_per_execution", "client")
    ready = dig(r, "kernel", "first_result", "ratio_ready")
    restart = dig(r, "kernel", "restart", "ratio")
    kills = dig(r, "kernel", "restart", "pool_kills")
    session = dig(r, "pool", "memory", "session") or {}
    live = dig(r, "kernel", "live_latency") or {}
    live95 = dig(live, REMOTE_KERNEL, "p95_ms")
    up, down = dig(r, "files", "upload_MBps"), dig(r, "files", "download_MBps")
    peaks = [dig(r, "files", k) for k in ("client_peak_MB", "pool_peak_MB", "worker_peak_MB")]
    peak: Any = max(peaks) if all(p is not None for p in peaks) else None
    net = dig(r, "network", "cells") or {}
    rtt = dig(r, "network", "rtt_ms")

    def network_row(kind: str, target_requests: float, target_trips: float | None = None) -> Row:
        cell: dict[str, Any] = net.get(kind) or {}
        requests: Any = cell.get("requests")  # None where not measured: `row` then skips the check
        trips: Any = cell.get("round_trips")
        target = f"{target_requests:g} request" + (f", ≤ {target_trips:g} RTT" if target_trips else "")
        return row(f"{kind} over a {fmt(rtt, '{:.0f}')} ms network", target,
                   f"{fmt(requests, '{:g}')} request(s), {fmt(trips, '{:.1f}')} RTT",
                   lambda: requests <= target_requests and (target_trips is None or trips <= target_trips),
                   requests, trips)

    def browser_row(what: str, key: str) -> Row:
        ratio: Any = dig(r, "browser", f"ratio_{key}")
        return row(f"JupyterLab in Chromium: {what} → first output, remote-python / ipykernel (issue 27)", "≤ 1.2",
                   f"{fmt(ratio, '{:.2f}')} ({fmt(dig(r, 'browser', REMOTE_KERNEL, f'{key}_s'), '{:.2f}')} vs "
                   f"{fmt(dig(r, 'browser', LOCAL_KERNEL, f'{key}_s'), '{:.2f}')} s)", lambda: ratio <= 1.2, ratio)

    return [
        *[network_row(kind, 1, 1.2 if kind == "plain" else None) for kind in net],
        row("cell round trip, remote-python / ipykernel", "≤ 1.0",
            f"{fmt(rt50, '{:.2f}')} at p50 ({fmt(dig(rt or {}, REMOTE_KERNEL, 'p50_ms'), '{:.2f}')} vs "
            f"{fmt(dig(rt or {}, LOCAL_KERNEL, 'p50_ms'), '{:.2f}')} ms), {fmt(rt95, '{:.2f}')} at p95",
            lambda: rt50 <= 1.0 and rt95 <= 1.0, rt50, rt95),
        row("kernel start to first result, remote-python / ipykernel", "≤ 1.1",
            f"{fmt(first, '{:.2f}')} ({fmt(dig(r, 'kernel', 'first_result', REMOTE_KERNEL, 's'), '{:.2f}')} vs "
            f"{fmt(dig(r, 'kernel', 'first_result', LOCAL_KERNEL, 's'), '{:.2f}')} s)", lambda: first <= 1.1, first),
        row("kernel start to idle (JupyterLab's launcher → idle), remote-python / ipykernel", "≤ 1.2",
            f"{fmt(ready, '{:.2f}')} ({fmt(dig(r, 'kernel', 'first_result', REMOTE_KERNEL, 'ready_s'), '{:.2f}')} vs "
            f"{fmt(dig(r, 'kernel', 'first_result', LOCAL_KERNEL, 'ready_s'), '{:.2f}')} s)", lambda: ready <= 1.2,
            ready),
        row("kernel restart to first result, remote-python / ipykernel (issue 27)", "≤ 1.2",
            f"{fmt(restart, '{:.2f}')} ({fmt(dig(r, 'kernel', 'restart', REMOTE_KERNEL, 's'), '{:.2f}')} vs "
            f"{fmt(dig(r, 'kernel', 'restart', LOCAL_KERNEL, 's'), '{:.2f}')} s)", lambda: restart <= 1.2, restart),
        row("kernel shutdown: the embedded pool stops by itself (issue 27)", "no kill",
            f"killed at {fmt(kills, '{}')} shutdowns; shutdown "
            f"{fmt(dig(r, 'kernel', 'restart', REMOTE_KERNEL, 'shutdown_s'), '{:.2f}')} vs "
            f"{fmt(dig(r, 'kernel', 'restart', LOCAL_KERNEL, 'shutdown_s'), '{:.2f}')} s",
            lambda: str(kills).startswith("0 "), kills),
        row("live output: a printed line → its IOPub message (issue 13)", "p95 ≤ 100 ms",
            f"p50 {fmt(dig(live, REMOTE_KERNEL, 'p50_ms'), '{:.1f}')} ms, p95 {fmt(live95, '{:.1f}')} ms "
            f"(ipykernel: p50 {fmt(dig(live, LOCAL_KERNEL, 'p50_ms'), '{:.1f}')}, p95 "
            f"{fmt(dig(live, LOCAL_KERNEL, 'p95_ms'), '{:.1f}')} ms)", lambda: live95 <= 100, live95),
        row("new identifier, first execution, with a ready session", "p50 ≤ 20 ms", f"{fmt(new_ready, '{:.1f}')} ms",
            lambda: new_ready <= 20, new_ready),
        row("warm `1+1` over HTTP (pool issue)", "p50 ≤ 2 ms", f"{fmt(warm, '{:.2f}')} ms", lambda: warm <= 2, warm),
        row("20 concurrent sessions", "≥ 500 executions/s, p95 ≤ 50 ms",
            f"{fmt(rate, '{:.0f}')}/s, p95 {fmt(lat, '{:.1f}')} ms", lambda: rate >= 500 and lat <= 50, rate, lat),
        row("20 sessions through SessionsClient in one process (Unix socket)", "≥ 1000 executions/s, client CPU ≤ 0.3 ms "
            "each", f"{fmt(crate, '{:.0f}')}/s, client CPU {fmt(ccpu, '{:.2f}')} ms each (the pool and its workers: "
            f"{fmt(dig(c20, 'cpu_ms_per_execution', 'pool_and_workers'), '{:.2f}')} ms)",
            lambda: crate >= 1000 and ccpu <= 0.3, crate, ccpu),
        row("idle Python session", "≤ 30 MB resident",
            f"RSS {fmt(session.get('rss'), '{:.1f}')} MB (PSS {fmt(session.get('pss'), '{:.1f}')}, "
            f"USS {fmt(session.get('uss'), '{:.1f}')})", lambda: session["rss"] <= 30, session.get("rss")),
        row(f"{fmt(dig(r, 'files', 'size_bytes'), '{:,}')} B upload + download",
            "≥ 1000 MB/s each way, < 100 MB peak per process",
            f"{fmt(up, '{:.0f}')} / {fmt(down, '{:.0f}')} MB/s (a local copy: "
            f"{fmt(dig(r, 'files', 'local_copy_MBps'), '{:.0f}')} MB/s), peak {fmt(peak, '{:.0f}')} MB",
            lambda: up >= 1000 and down >= 1000 and peak < 100, up, down, peak),
        *[browser_row(what, key) for what, key in (("open notebook", "open"), ("restart", "restart"))
          if "browser" in r],
        row("quickstart notebook, remote-python / ipykernel", "≤ 1.5",
            f"{fmt(nb, '{:.2f}')} ({fmt(dig(r, 'kernel', 'quickstart', REMOTE_KERNEL, 's'), '{:.2f}')} vs "
            f"{fmt(dig(r, 'kernel', 'quickstart', LOCAL_KERNEL, 's'), '{:.2f}')} s)", lambda: nb <= 1.5, nb),
    ]


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "met" if ok else "NOT met"


def summary_table(results: dict[str, Any]) -> str:
    lines = ["| figure | target | measured | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {verdict(d)} |" for a, b, c, d in rows(results)]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(11, 11))
    rt = dig(results, "kernel", "round_trip") or {}
    ax = axes[0][0]
    kernels = [REMOTE_KERNEL, LOCAL_KERNEL]
    for i, q in enumerate(("p50_ms", "p95_ms")):
        values = [dig(rt, k, q) or 0 for k in kernels]
        ax.bar([x + i * 0.38 for x in range(2)], values, 0.38, label=q.replace("_ms", ""))
    ax.set_xticks([0.19, 1.19], kernels)
    ax.set_ylabel("ms")
    ax.set_title("cell round trip (execute_request → idle)")
    ax.legend()

    ax = axes[0][1]
    groups = [("start →\nfirst result", ("first_result", "s")), ("restart →\nfirst result", ("restart", "s")),
              ("shutdown", ("restart", "shutdown_s")), ("quickstart\nnotebook", ("quickstart", "s"))]
    for i, kernel in enumerate(kernels):
        values = [dig(results, "kernel", key, kernel, figure) or 0 for _, (key, figure) in groups]
        ax.bar([x + i * 0.38 for x in range(len(groups))], values, 0.38, label=kernel)
    ax.set_xticks([x + 0.19 for x in range(len(groups))], [g for g, _ in groups], fontsize=8)
    ax.set_ylabel("s")
    ax.set_title("whole-kernel times")
    ax.legend()

    ax = axes[1][0]
    tp = dig(results, "pool", "throughput") or {}
    levels = sorted(tp, key=int)
    ax.bar(levels, [tp[n]["executions_per_s"] for n in levels], color="tab:green")
    ax.axhline(500, color="gray", linestyle="--", linewidth=1, label="target at 20 sessions")
    ax2 = ax.twinx()
    ax2.plot(levels, [tp[n]["p95_ms"] for n in levels], "o-", color="tab:red", label="p95 latency")
    ax2.set_ylabel("p95 ms")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("executions / s")
    ax.set_title("pool throughput")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")

    ax = axes[1][1]
    mem = dig(results, "pool", "memory") or {}
    km = dig(rt, "memory") or {}
    labels = ["idle session", "bare python", "pool", f"{REMOTE_KERNEL}\nkernel", f"{LOCAL_KERNEL}\nkernel"]
    sources = [mem.get("session"), mem.get("bare_python"), mem.get("pool"), km.get(REMOTE_KERNEL), km.get(LOCAL_KERNEL)]
    for i, kind in enumerate(("rss", "pss", "uss")):
        ax.bar([x + i * 0.27 for x in range(len(labels))], [(s or {}).get(kind, 0) for s in sources], 0.27,
               label=kind.upper())
    ax.axhline(30, color="gray", linestyle="--", linewidth=1, label="session target")
    ax.set_xticks([x + 0.27 for x in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("MB")
    ax.set_title("resident memory")
    ax.legend(fontsize=8)
    ax = axes[2][0]
    imports = dig(results, "kernel", "imports") or {}
    labels = [label for label in imports if isinstance(imports[label], dict)]
    names = {"pool_listening": "pool: command\n→ listening"}
    ax.barh([names.get(label, label) for label in labels], [imports[label]["s"] for label in labels],
            color="tab:purple")
    ax.invert_yaxis()
    ax.set_xlabel("s")
    ax.set_title("import-time budget (fresh interpreter) and the pool's time to listen", fontsize=10)
    axes[2][1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any]) -> list[Path]:
    """docs/benchmarks.md and docs/benchmarks.png from a run's results."""
    DOCS.mkdir(exist_ok=True)
    png = DOCS / "benchmarks.png"
    chart(results, png)
    m = results["machine"]

    def load(when: str) -> float | None:
        values = (results.get("load_average") or {}).get(when)
        return values[0] if values else None

    text = "\n".join([
        "# Benchmarks",
        "",
        f"Written by `python -m bench` ({results.get('mode', 'full')} run) from `bench/results/latest.json`. "
        "`python -m bench --quick` prints the same figures with fewer samples. Each figure is the median of repeated runs "
        "after a warm-up; each ratio is computed run by run against a baseline measured in the same run (a plain "
        "`ipykernel` driven the same way through jupyter_client, a bare interpreter, a sync HTTP client, …).",
        "",
        f"Machine: {m['cpus']} cores, {m['memory_GiB']} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"bubblewrap {'yes' if m['bubblewrap'] else 'no'}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + f". Run of {results['started']}, "
        f"{results['total_s']:.0f} s; load average (1 min) {fmt(load('start'), '{:.1f}')} at the start, "
        f"{fmt(load('end'), '{:.1f}')} at the end (other work on the machine inflates single figures more than ratios).",
        "",
        "## Targets",
        "",
        summary_table(results),
        "",
        "![benchmarks](benchmarks.png)",
        "",
        details(results),
        "",
        notes(results),
        "",
    ])
    md = DOCS / "benchmarks.md"
    before = md.read_text(encoding="utf-8") if md.exists() else ""
    if BY_HAND in before:
        text += "\n" + before[before.index(BY_HAND):]
    md.write_text(text, encoding="utf-8")
    return [md, png]


if __name__ == "__main__":  # python -m bench.report: rewrite the report from bench/results/latest.json
    import json

    written = write(json.loads((ROOT / "bench" / "results" / "latest.json").read_text()))
    print("report written to " + ", ".join(str(p.relative_to(ROOT)) for p in written))
