"""What every benchmark of the suite shares: statistics, process memory, a local pool, kernelspecs.

Figures are medians of repeated runs (each after a warm-up), and every ratio is computed run by
run against a baseline measured in the same run, then the ratios' median is reported.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API = "2025-10-02-preview"
MB = 1e6


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def p50(samples: list[float]) -> float:
    return percentile(samples, 50)


def p95(samples: list[float]) -> float:
    return percentile(samples, 95)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> float:
    return seconds * 1000


# process memory ------------------------------------------------------------------------------

def memory(pid: int | str = "self") -> dict[str, float]:
    """Resident (RSS), proportional (PSS) and unique (USS) memory of a process, in MB.

    RSS counts shared library pages fully in every process; PSS divides them among the processes
    that map them; USS counts only what this process alone holds (what killing it would free)."""
    figures = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return figures
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[key] = int(parts[0])
    figures["rss"] = kb.get("Rss", 0) * 1024 / MB
    figures["pss"] = kb.get("Pss", 0) * 1024 / MB
    figures["uss"] = (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024 / MB
    return figures


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    except OSError:
        pass
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def session_workers(pool_pid: int) -> list[int]:
    """The pids of a pool's session workers (the interpreters, not their bwrap or sh parents).

    Each command line is read once: a process that ends meanwhile has none (and is not a worker)."""
    found = []
    for pid in descendants(pool_pid):
        argv = command_line(pid)
        if argv and "bwrap" not in os.path.basename(argv[0]) \
                and any(part.endswith(("python_worker.py", "node_worker.js")) for part in argv[1:]):
            found.append(pid)
    return found


def cpu_seconds(pid: int | str = "self") -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# a local pool ----------------------------------------------------------------------------------

@dataclass
class PoolProcess:
    """A `remote-kernel pool` child and how to reach it (the tests' and the benchmarks' one pool starter)."""

    endpoint: str
    token: str
    process: subprocess.Popen[bytes]
    data_root: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    owns_data_root: bool = False  # made by start_pool: removed when the pool stops

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def log(self) -> str:
        """What the pool wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; the data root goes too when start_pool made it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_data_root:
            shutil.rmtree(self.data_root, ignore_errors=True)

    def __enter__(self) -> PoolProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


POOL_COMMAND = (sys.executable, "-m", "remote_kernel")


def start_pool(*extra: str, token: str | None = None, port: int = 0, data_root: Path | None = None,
               env: dict[str, str] | None = None, command: Sequence[str] = POOL_COMMAND,
               timeout: float = 60, socket: Path | None = None) -> PoolProcess:
    """Start `remote-kernel pool` on loopback `port` (0: a free one), or on the Unix `socket` as the
    kernel's embedded pool listens, with `extra` options, and wait until it answers /health. `command`
    runs the CLI (another one may patch a module first); `env` is added to this process's environment;
    the token goes in the environment, never on argv (where `ps` shows it)."""
    token = token or secrets.token_urlsafe(24)
    owns_data_root = data_root is None
    data_root = data_root or Path(tempfile.mkdtemp(prefix="rk-pool-"))
    log_path = Path(tempfile.mkstemp(prefix="rk-pool-", suffix=".log")[1])
    listen = ["--socket", str(socket)] if socket is not None else ["--port", str(port)]
    args = [*command, "pool", *listen, "--data-root", str(data_root), *extra]
    child_env = {k: v for k, v in os.environ.items() if k not in ("REMOTE_KERNEL_TOKEN", "POOL_MANAGEMENT_ENDPOINT")}
    child_env.update(env or {})
    child_env["REMOTE_KERNEL_TOKEN"] = token
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT,
                                   env=child_env)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    endpoint = None
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        if line.startswith("export POOL_MANAGEMENT_ENDPOINT="):
            endpoint = line.split("=", 1)[1].strip()
            break
    pool = PoolProcess(endpoint or "", token, process, data_root, log_path, args, owns_data_root)
    if endpoint is None:
        process.kill()
        pool.stop()
        raise RuntimeError(f"the pool did not start ({' '.join(args)}): {pool.log()}")
    threading.Thread(target=process.stdout.read, daemon=True).start()  # never let it block on a full pipe
    while time.monotonic() < deadline:
        try:
            if socket is not None:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as health:
                    health.get("http://pool/health", timeout=2)
            else:
                httpx.get(f"{endpoint}/health", timeout=2, verify=False)  # a --tls pool: its CA is not trusted here
            return pool
        except httpx.HTTPError:
            time.sleep(0.05)
    pool.stop()
    raise RuntimeError(f"the pool did not answer /health within {timeout} s: {pool.log()}")


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# kernels ----------------------------------------------------------------------------------------

_SPEC_ROOT: Path | None = None


def install_kernelspecs() -> None:
    """Install remote-python from this working tree into a temporary prefix on JUPYTER_PATH (once)."""
    global _SPEC_ROOT
    if _SPEC_ROOT is not None:
        return
    prefix = Path(tempfile.mkdtemp(prefix="rk-bench-spec-"))
    subprocess.run([sys.executable, "-m", "remote_kernel", "install", "--prefix", str(prefix), "--language",
                    "python"], check=True, capture_output=True, cwd=ROOT)
    _SPEC_ROOT = prefix / "share" / "jupyter"
    # the baseline: ipykernel run by this same interpreter (the system's python3 spec may go through a
    # shim that would add its own start-up time)
    local = _SPEC_ROOT / "kernels" / LOCAL_KERNEL
    local.mkdir(parents=True, exist_ok=True)
    (local / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(_SPEC_ROOT), os.environ.get("JUPYTER_PATH")]))


def embedded_env() -> dict[str, str]:
    """The environment of a kernel that starts its own pool (and of a plain ipykernel).

    Without PYTHONDONTWRITEBYTECODE: an installed package (ipykernel, or remote_kernel from a wheel)
    runs from byte-compiled modules, and a checkout compiled its modules from source at every start
    where that variable is set (a tenth of a second and more of each kernel and pool start-up, which
    ipykernel, byte-compiled when installed, never paid); the warm-up run writes them."""
    env = dict(os.environ)
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_TOKEN", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_IDENTIFIER",
                 "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return env


LOCAL_KERNEL = "python3"
REMOTE_KERNEL = "remote-python"
