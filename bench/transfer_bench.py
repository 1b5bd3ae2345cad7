"""Upload then download a large file (default 1 GiB) through SessionsClient and a local pool.

Prints the throughput of each direction (MB/s, 10^6 bytes a second) and its ratio to a plain
local file copy measured in the same run, and the peak resident memory (VmHWM) of this process
and of the pool process (and of its hungriest child) during the transfers. The figures go to
bench/results/transfer.json as well. The pool listens on a Unix socket, as the
kernel's embedded pool does. Design goals (issue 17): >= 1 GB/s on loopback, < 100 MB peak each.

    python bench/transfer_bench.py [--size 1G] [--api-version 2025-10-02-preview]
    python bench/transfer_bench.py --endpoint http://127.0.0.1:6000 --token T   # an existing pool

It never fails because a machine is slow: it reports.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import start_pool  # noqa: E402
from remote_kernel.sessions import DEFAULT_API_VERSION, SessionsClient, StaticToken  # noqa: E402

BLOCK = 4 << 20


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def peak_rss(pid: int | str = "self") -> int:
    """VmHWM of a process, in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(pid: int | str = "self") -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    except OSError:
        pass
    return found


def make_file(path: Path, size: int) -> str:
    block = os.urandom(BLOCK)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            piece = block[: min(left, BLOCK)]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


async def transfer(endpoint: str, token: str, api_version: str, source: Path, target: Path,
                   pool_pid: int | None) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with SessionsClient(endpoint, str(uuid.uuid4()), api_version=api_version,
                              auth=StaticToken(token)) as client:
        await client.execute("1")  # the session exists before the clock starts
        pool_pids = [pool_pid, *descendants(pool_pid)] if pool_pid else []
        for pid in ["self", *map(str, pool_pids)]:
            reset_peak(pid)

        def cpu() -> tuple[float, float]:
            return cpu_seconds(), sum(cpu_seconds(pid) for pid in pool_pids)

        cpu_before, started = cpu(), time.perf_counter()
        await client.upload(source, "bench.bin")
        figures["upload_s"] = time.perf_counter() - started
        cpu_after = cpu()
        figures["upload_cpu"] = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])

        cpu_before, started = cpu(), time.perf_counter()
        figures["downloaded"] = await client.download("bench.bin", target)
        figures["download_s"] = time.perf_counter() - started
        cpu_after = cpu()
        figures["download_cpu"] = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])

        figures["client_peak"] = peak_rss()
        if pool_pid:
            figures["pool_peak"] = peak_rss(pool_pid)
            children = {pid: peak_rss(pid) for pid in descendants(pool_pid)}
            figures["pool_child_peak"] = max(children.values(), default=0)
        await client.delete_session()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--api-version", default=DEFAULT_API_VERSION)
    parser.add_argument("--endpoint", help="use this pool instead of starting one")
    parser.add_argument("--token", default=os.environ.get("REMOTE_KERNEL_TOKEN", ""))
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "transfer.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rk-bench-"))
    pool = None
    try:
        source, copy, target = work / "source.bin", work / "copy.bin", work / "downloaded.bin"
        print(f"writing a {args.size / 1e6:.0f} MB test file ...", flush=True)
        expected = make_file(source, args.size)

        started = time.perf_counter()
        shutil.copyfile(source, copy)
        copy_s = time.perf_counter() - started
        copy.unlink()

        if args.endpoint:
            endpoint, token, pool_pid = args.endpoint, args.token, None
        else:
            pool = start_pool("--max-upload", str(args.size + (64 << 20)), "--disk", str(2 * args.size + (256 << 20)),
                              "--ready-sessions", "1", data_root=work / "pool",
                              socket=work / "pool.sock")  # as the kernel's embedded pool listens (the lean transport)
            endpoint, token, pool_pid = pool.endpoint, pool.token, pool.pid
        figures = asyncio.run(transfer(endpoint, token, args.api_version, source, target, pool_pid))
        intact = figures["downloaded"] == args.size and sha256(target) == expected
    finally:
        if pool is not None:
            pool.stop()
        shutil.rmtree(work, ignore_errors=True)

    mb = args.size / 1e6
    report = {
        "size_bytes": args.size,
        "api_version": args.api_version,
        "local_copy_MBps": mb / copy_s,
        "upload_MBps": mb / figures["upload_s"],
        "download_MBps": mb / figures["download_s"],
        "upload_vs_local_copy": copy_s / figures["upload_s"],
        "download_vs_local_copy": copy_s / figures["download_s"],
        "upload_cpu_s": {"client": figures["upload_cpu"][0], "pool": figures["upload_cpu"][1]},
        "download_cpu_s": {"client": figures["download_cpu"][0], "pool": figures["download_cpu"][1]},
        "client_peak_MB": figures["client_peak"] / 1e6,
        "pool_peak_MB": figures.get("pool_peak", 0) / 1e6 or None,
        "pool_child_peak_MB": figures.get("pool_child_peak", 0) / 1e6 or None,
        "intact": intact,
    }
    print(f"local file copy   {report['local_copy_MBps']:8.0f} MB/s   (baseline)")
    print(f"upload            {report['upload_MBps']:8.0f} MB/s   {report['upload_vs_local_copy']:.2f} x baseline")
    print(f"download          {report['download_MBps']:8.0f} MB/s   {report['download_vs_local_copy']:.2f} x baseline")
    for way in ("upload", "download"):
        spent = report[f"{way}_cpu_s"]
        print(f"{way + ' CPU':<17} client {spent['client']:.1f} s, pool {spent['pool']:.1f} s "
              f"(of {figures[way + '_s']:.1f} s elapsed, {os.cpu_count()} cores)")
    print(f"peak memory       client {report['client_peak_MB']:.0f} MB", end="")
    if report["pool_peak_MB"]:
        print(f", pool {report['pool_peak_MB']:.0f} MB, its largest child {report['pool_child_peak_MB'] or 0:.0f} MB")
    else:
        print(" (the pool is not ours to measure)")
    print(f"round trip        {'intact' if intact else 'CORRUPTED'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.output}")


if __name__ == "__main__":
    main()
