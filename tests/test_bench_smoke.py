"""The benchmark suite still runs end to end (tiny sizes). It proves figures are produced, never that they are fast."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


@pytest.mark.slow  # the whole benchmark suite, tiny: a minute or more
@pytest.mark.timeout(600)  # beyond its own 400 s, on a machine busy with the other workers
def test_tiny_bench_run_produces_every_figure_and_ratio(tmp_path):
    output = tmp_path / "tiny.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--output", str(output)], cwd=ROOT,
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(output.read_text())
    for section in ("kernel", "pool", "files", "network"):
        assert "error" not in results[section], results[section]
    kernel, pool, files, network = results["kernel"], results["pool"], results["files"], results["network"]
    figures = {
        "round trip ratio": kernel["round_trip"]["ratio_p50"],
        "round trip p95 ratio": kernel["round_trip"]["ratio_p95"],
        "start ratio": kernel["first_result"]["ratio"],
        "start to idle ratio": kernel["first_result"]["ratio_ready"],
        "quickstart ratio": kernel["quickstart"]["ratio"],
        "live output p95": kernel["live_latency"]["remote-python"]["p95_ms"],
        "ipykernel live output p95": kernel["live_latency"]["python3"]["p95_ms"],
        "kernel memory": kernel["round_trip"]["memory"]["remote-python"]["rss"],
        "new identifier, ready": pool["new_identifier_ready"]["first_p50_ms"],
        "new identifier, cold": pool["new_identifier_cold"]["first_p50_ms"],
        "warm HTTP": pool["warm_round_trip"]["sync_p50_ms"],
        "throughput": pool["throughput"]["2"]["executions_per_s"],
        "throughput p95": pool["throughput"]["2"]["p95_ms"],
        "throughput through SessionsClient on a Unix socket": pool["throughput_sessions_client"]["2"]["executions_per_s"],
        "session memory": pool["memory"]["session"]["rss"],
        "pool memory": pool["memory"]["pool"]["rss"],
        "upload": files["upload_MBps"],
        "download": files["download_MBps"],
        "client peak": files["client_peak_MB"],
        "plain cell requests over a slow network": network["cells"]["plain"]["requests"],
        "display update requests over a slow network": network["cells"]["display update"]["requests"],
        "figure cell round trips over a slow network": network["cells"]["figure"]["round_trips"],
        "quickstart over a slow network": network["quickstart_s"],
    }
    for name, value in figures.items():
        assert math.isfinite(value) and value > 0, f"{name}: {value}"
    assert files["intact"] is True
    assert all(math.isfinite(n) for n in numbers(results) if not math.isnan(n))
    for label in ("cell round trip", "live output", "kernel start to first result", "quickstart notebook",
                  "new identifier", "concurrent sessions", "idle session", "upload", "over a 20 ms network"):
        assert label in run.stdout, f"{label!r} is not printed"
    assert "| figure | target | measured |" in run.stdout
    check_the_report_keeps_what_was_measured_by_hand(results, tmp_path / "docs")


def check_the_report_keeps_what_was_measured_by_hand(results: dict, docs: Path) -> None:
    """Writing docs/benchmarks.md again replaces the run's figures and keeps the sections measured by hand."""
    from bench import report

    docs.mkdir()
    hand = f"{report.BY_HAND}\n\n### Measured by hand\n\nA figure no run of the suite makes.\n"
    (docs / "benchmarks.md").write_text(f"# Benchmarks\n\nan older run's figures\n\n{hand}", encoding="utf-8")
    saved, report.DOCS = report.DOCS, docs
    try:
        report.write(results)
        report.write(results)  # twice: the hand-measured part is kept once, not doubled
    finally:
        report.DOCS = saved
    written = (docs / "benchmarks.md").read_text(encoding="utf-8")
    assert "an older run's figures" not in written and "## Targets" in written
    assert written.count("### Measured by hand") == 1 and written.endswith(hand)
