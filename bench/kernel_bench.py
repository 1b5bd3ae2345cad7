"""The kernel against a plain ipykernel, both driven through jupyter_client in the same run.

- cell round trip: `execute_request` → idle of `x = 1+1; x`, the two kernels interleaved sample by
  sample, p50 and p95 of each run and their ratio;
- kernel start to the first result of a first cell (a new kernel each time; for remote-python this
  includes starting its embedded pool and the session);
- kernel restart (after a cell) to the first result, and the shutdown's time (with the embedded pool's
  kills, if any);
- the import-time budget: the pool's, the kernel's and the client's imports in a fresh interpreter;
- an nbclient run of notebooks/quickstart.ipynb on each kernel (wall time).

    python bench/kernel_bench.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient
    from jupyter_client.manager import KernelManager

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOCAL_KERNEL,
    REMOTE_KERNEL,
    ROOT,
    command_line,
    descendants,
    embedded_env,
    install_kernelspecs,
    median,
    memory,
    ms,
    p50,
    p95,
)

CELL = "x = 1+1; x"
KERNELS = (REMOTE_KERNEL, LOCAL_KERNEL)


def start(name: str) -> tuple[KernelManager, BlockingKernelClient]:
    from jupyter_client.manager import start_new_kernel

    install_kernelspecs()
    return start_new_kernel(kernel_name=name, env=embedded_env(), cwd=str(ROOT), startup_timeout=90,
                            stderr=subprocess.DEVNULL)


def stop(km: KernelManager, kc: BlockingKernelClient) -> None:
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=False)


def execute(kc: BlockingKernelClient, code: str = CELL, timeout: float = 60) -> tuple[float, Any]:
    """Seconds from sending the request to the idle status of its reply, and the result's text/plain."""
    started = time.perf_counter()
    msg_id = kc.execute(code)
    result = None
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no idle within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "execute_result":
            result = msg["content"]["data"].get("text/plain")
        elif msg["msg_type"] == "error":
            raise RuntimeError(f"the cell failed: {msg['content']['ename']}: {msg['content']['evalue']}")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            elapsed = time.perf_counter() - started
            break
    while kc.get_shell_msg(timeout=timeout)["parent_header"].get("msg_id") != msg_id:
        pass
    return elapsed, result


def round_trip(runs: int, samples: int, warmup: int = 20) -> dict[str, Any]:
    """Interleaved round trips of both kernels; per run p50/p95 and their ratios, then medians."""
    kernels = {name: start(name) for name in KERNELS}
    try:
        for _, kc in kernels.values():
            for _ in range(warmup):  # the first remote cell also creates the session
                execute(kc)
        per_run = []
        for _ in range(runs):
            times: dict[str, list[float]] = {name: [] for name in KERNELS}
            for i in range(samples):
                order = KERNELS if i % 2 == 0 else KERNELS[::-1]
                for name in order:
                    times[name].append(execute(kernels[name][1])[0])
            run: dict[str, Any] = {name: {"p50_ms": ms(p50(t)), "p95_ms": ms(p95(t))} for name, t in times.items()}
            run["ratio_p50"] = run[REMOTE_KERNEL]["p50_ms"] / run[LOCAL_KERNEL]["p50_ms"]
            run["ratio_p95"] = run[REMOTE_KERNEL]["p95_ms"] / run[LOCAL_KERNEL]["p95_ms"]
            per_run.append(run)
        resident = kernel_memory({name: km for name, (km, _) in kernels.items()})
    finally:
        for km, kc in kernels.values():
            stop(km, kc)
    return {**summarise(per_run, runs=runs, samples=samples), "memory": resident}


LIVE_CELL = "import time\nfor _ in range({lines}):\n    print(repr(time.time()), flush=True)\n    time.sleep(0.05)"


def live_lines(kc: BlockingKernelClient, lines: int, timeout: float = 120) -> list[float]:
    """Run a cell that prints `lines` timestamps 50 ms apart; for each line, the seconds from its
    print in the session to this client receiving the IOPub message that carries it."""
    msg_id = kc.execute(LIVE_CELL.format(lines=lines))
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no idle within {timeout} s") from None
        received = time.time()
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            latencies += [received - float(line) for line in msg["content"]["text"].split()]
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while kc.get_shell_msg(timeout=timeout)["parent_header"].get("msg_id") != msg_id:
        pass
    if len(latencies) != lines:
        raise RuntimeError(f"{len(latencies)} of {lines} lines arrived")
    return latencies


def live_latency(runs: int, lines: int) -> dict[str, Any]:
    """Live output: a line printed in the session → its stream message at the client (wall clock of
    one machine), p50 and p95 per run for both kernels, interleaved, then medians."""
    kernels = {name: start(name) for name in KERNELS}
    try:
        for _, kc in kernels.values():
            live_lines(kc, 5)  # warm-up (the first remote cell also creates the session)
        per_run = []
        for i in range(runs):
            order = KERNELS if i % 2 == 0 else KERNELS[::-1]
            times = {name: live_lines(kernels[name][1], lines) for name in order}
            run: dict[str, Any] = {name: {"p50_ms": ms(p50(t)), "p95_ms": ms(p95(t))} for name, t in times.items()}
            per_run.append(run)
    finally:
        for km, kc in kernels.values():
            stop(km, kc)
    return summarise(per_run, runs=runs, lines=lines)


def kernel_memory(managers: dict[str, KernelManager]) -> dict[str, Any]:
    """Memory of each kernel process after the round trips, and of remote-python's embedded pool."""
    out: dict[str, Any] = {}
    for name, km in managers.items():
        pid = cast(Any, km.provisioner).process.pid  # a local provisioner's child process
        out[name] = memory(pid)
        if name == REMOTE_KERNEL:
            pools = [p for p in descendants(pid) if "pool" in command_line(p)[2:5]]
            out["embedded_pool"] = memory(pools[0]) if pools else {}
    return out


def summarise(per_run: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The median over runs of every figure (nested one level), with the runs kept."""
    out: dict[str, Any] = {}
    for key, value in per_run[0].items():
        if isinstance(value, dict):
            out[key] = {k: median([r[key][k] for r in per_run]) for k in value}
        else:
            out[key] = median([r[key] for r in per_run])
    return {**out, **extra, "runs_detail": per_run}


def first_result(name: str) -> tuple[float, float]:
    """Seconds from asking for a new kernel to its first answer (what a front end shows as idle, as
    JupyterLab does after its launcher), and to the result of its first cell."""
    from jupyter_client.manager import KernelManager

    started = time.perf_counter()
    km = KernelManager(kernel_name=name)
    km.start_kernel(env=embedded_env(), cwd=str(ROOT), stderr=subprocess.DEVNULL)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=90)
        ready = time.perf_counter() - started
        _, result = execute(kc, timeout=90)
        elapsed = time.perf_counter() - started
        if result != "2":
            raise RuntimeError(f"{name}: the first cell answered {result!r}")
    finally:
        stop(km, kc)
    return ready, elapsed


def start_to_first_result(runs: int, warmup: bool = True) -> dict[str, Any]:
    install_kernelspecs()
    for name in KERNELS if warmup else ():
        first_result(name)  # warm-up: file caches, bytecode
    per_run = []
    for i in range(runs):
        order = KERNELS if i % 2 == 0 else KERNELS[::-1]
        run: dict[str, Any] = {name: dict(zip(("ready_s", "s"), first_result(name), strict=True)) for name in order}
        run["ratio"] = run[REMOTE_KERNEL]["s"] / run[LOCAL_KERNEL]["s"]
        run["ratio_ready"] = run[REMOTE_KERNEL]["ready_s"] / run[LOCAL_KERNEL]["ready_s"]
        per_run.append(run)
    return summarise(per_run, runs=runs)


def restart_once(name: str) -> dict[str, Any]:
    """A kernel that has run a cell is restarted (as a front end's "Restart kernel"): seconds from the
    request to the restarted kernel's first result; then seconds of its shutdown, and (remote-python)
    whether its embedded pool had to be killed, read from the kernel's log."""
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryFile("w+") as log:
        km = KernelManager(kernel_name=name)
        km.start_kernel(env=embedded_env(), cwd=str(ROOT), stderr=log)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=90)
            execute(kc, timeout=90)  # a session exists, as after a notebook's cells
            started = time.perf_counter()
            km.restart_kernel(now=False)
            kc.wait_for_ready(timeout=90)
            _, result = execute(kc, timeout=90)
            restarted = time.perf_counter() - started
            if result != "2":
                raise RuntimeError(f"{name}: the first cell after a restart answered {result!r}")
            kc.stop_channels()
            started = time.perf_counter()
            km.shutdown_kernel(now=False)
            shutdown = time.perf_counter() - started
        except BaseException:
            stop(km, kc)
            raise
        log.seek(0)
        kills = log.read().count("did not stop within")
    return {"s": restarted, "shutdown_s": shutdown, "pool_kills": kills}


def restart_to_first_result(runs: int, warmup: bool = True) -> dict[str, Any]:
    """`restart_once` for both kernels, alternated; medians, and the pool kills of every shutdown."""
    install_kernelspecs()
    for name in KERNELS if warmup else ():
        restart_once(name)
    per_run = []
    for i in range(runs):
        order = KERNELS if i % 2 == 0 else KERNELS[::-1]
        run: dict[str, Any] = {name: restart_once(name) for name in order}
        run["ratio"] = run[REMOTE_KERNEL]["s"] / run[LOCAL_KERNEL]["s"]
        run["ratio_shutdown"] = run[REMOTE_KERNEL]["shutdown_s"] / run[LOCAL_KERNEL]["shutdown_s"]
        per_run.append(run)
    out = summarise(per_run, runs=runs)
    # two shutdowns of remote-python per run: the restart's and the last one
    out["pool_kills"] = f"{sum(r[REMOTE_KERNEL]['pool_kills'] for r in per_run):g} of {2 * runs}"
    return out


#: what each process imports before it can answer: the pool's server, the kernel (ipykernel's app and
#: this kernel's class), the sessions client (the first cell's), and ipykernel's own kernel for comparison
IMPORTS = {
    "pool": "import remote_kernel.pool.server",
    "kernel": "import ipykernel.kernelapp, remote_kernel.kernel.kernel",
    "sessions client": "import remote_kernel.sessions.client",
    "ipykernel": "import ipykernel.kernelapp, ipykernel.ipkernel",
}


def import_budget(runs: int) -> dict[str, Any]:
    """Seconds each import of IMPORTS takes in a fresh interpreter (median of `runs`), and how long an
    embedded-style pool (Unix socket, no MCP, one ready session) takes from its command to listening."""
    times: dict[str, list[float]] = {label: [] for label in [*IMPORTS, "pool_listening"]}
    for _ in range(runs):  # each run measures every label once, so that a change of load hits them alike
        for label, statement in IMPORTS.items():
            code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
            times[label].append(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                     check=True, cwd=ROOT, env=embedded_env()).stdout))
        times["pool_listening"].append(pool_listening())
    return {**{label: {"s": median(values)} for label, values in times.items()}, "runs": runs}


def pool_listening() -> float:
    """Seconds from running the embedded pool's command to its endpoint line (it listens then)."""
    import os
    import signal

    folder = tempfile.mkdtemp(prefix="rk-bench-")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "remote_kernel", "pool", "--socket", f"{folder}/pool.sock",
                                "--ready-sessions", "1", "--mcp", "off", "--parent-pid", str(os.getpid())],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                               env={**embedded_env(), "REMOTE_KERNEL_TOKEN": "bench-import-budget"})
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(b"export POOL_MANAGEMENT_ENDPOINT="):
                return time.perf_counter() - started
        raise RuntimeError("the pool exited before it listened")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


# the quickstart notebook -----------------------------------------------------------------------

def local_notebook(book: Any, data_dir: Path) -> Any:
    """The quickstart for a plain ipykernel: the remote-only magics become their local equivalents and
    /mnt/data becomes a local folder, so both kernels do the same work."""
    import nbformat

    book = nbformat.from_dict(json.loads(json.dumps(book)))  # type: ignore[no-untyped-call]  # nbformat is untyped
    book.metadata["kernelspec"] = {"name": LOCAL_KERNEL, "display_name": "Python 3", "language": "python"}
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        lines = []
        for line in cell.source.replace("/mnt/data", str(data_dir)).splitlines():
            magic = re.match(r"\s*%(\w+)\s*(.*)", line)
            if not magic:
                lines.append(line)
                continue
            name, args = magic.group(1), magic.group(2).split()
            if name == "session":
                lines.append("print('local ipykernel')")
            elif name == "files":
                lines.append(f"print(sorted(__import__('os').listdir({str(data_dir)!r})))")
            elif name == "download":
                lines.append(f"__import__('shutil').copyfile({str(data_dir / args[0])!r}, {args[-1]!r})")
            elif name == "upload":
                lines.append(f"__import__('shutil').copyfile({args[0]!r}, {str(data_dir / args[-1])!r})")
            elif name == "rm":
                lines.append(f"__import__('os').remove({str(data_dir / args[0])!r})")
            else:
                lines.append(line)
        cell.source = "\n".join(lines)
    return book


def run_notebook(book: Any, folder: Path, name: str) -> float:
    from nbclient import NotebookClient

    install_kernelspecs()
    started = time.perf_counter()
    NotebookClient(book, kernel_name=name, timeout=180, startup_timeout=90, allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}, env=embedded_env()).execute()
    elapsed = time.perf_counter() - started
    failures = [o for c in book.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error" and "raises-exception" not in c.metadata.get("tags", [])]
    if failures:
        raise RuntimeError(f"{name}: the quickstart failed: {failures[0].ename}: {failures[0].evalue}")
    return elapsed


def quickstart(runs: int, warmup: bool = True) -> dict[str, Any]:
    import nbformat

    source = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    work = Path(tempfile.mkdtemp(prefix="rk-bench-nb-"))
    try:
        folder = work / "notebooks"
        shutil.copytree(ROOT / "notebooks", folder)
        data = work / "data"
        data.mkdir()

        def once(name: str) -> float:
            if name == REMOTE_KERNEL:
                book = nbformat.from_dict(json.loads(json.dumps(source)))  # type: ignore[no-untyped-call]
            else:
                book = local_notebook(source, data)
            return run_notebook(book, folder, name)

        for name in KERNELS if warmup else ():
            once(name)
        per_run = []
        for i in range(runs):
            order = KERNELS if i % 2 == 0 else KERNELS[::-1]
            run: dict[str, Any] = {name: {"s": once(name)} for name in order}
            run["ratio"] = run[REMOTE_KERNEL]["s"] / run[LOCAL_KERNEL]["s"]
            per_run.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(per_run, runs=runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    rt = round_trip(runs, 50 if args.quick else 200)
    print(f"cell round trip p50: remote {rt[REMOTE_KERNEL]['p50_ms']:.2f} ms, ipykernel {rt[LOCAL_KERNEL]['p50_ms']:.2f} "
          f"ms, ratio {rt['ratio_p50']:.2f}; p95 ratio {rt['ratio_p95']:.2f}")
    st = start_to_first_result(runs)
    print(f"start to first result: remote {st[REMOTE_KERNEL]['s']:.2f} s, ipykernel {st[LOCAL_KERNEL]['s']:.2f} s, "
          f"ratio {st['ratio']:.2f}")
    nb = quickstart(1 if args.quick else 3)
    print(f"quickstart: remote {nb[REMOTE_KERNEL]['s']:.2f} s, ipykernel {nb[LOCAL_KERNEL]['s']:.2f} s, "
          f"ratio {nb['ratio']:.2f}")


if __name__ == "__main__":
    main()
