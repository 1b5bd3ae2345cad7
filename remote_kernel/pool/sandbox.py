"""How a session's worker process starts: bubblewrap, resource limits, and the unsandboxed fallback.

With bubblewrap every session gets its own user, pid, ipc, uts, network and mount namespaces; the
host's system read-only; a private size-capped `/tmp`, `/mnt/data` and `/dev/shm` (tmpfs, so a full
disk is the session's alone) and nothing else writable (`/dev` is read-only); a clean environment; a
seccomp filter (seccomp_filter.py); and, where the machine lets us write cgroups, a memory, CPU and
process-count limit. Rlimits are the backstop everywhere.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from remote_kernel.contract import EXECUTION_LIMIT, SHELL_EXECUTION_LIMIT
from remote_kernel.pool import seccomp_filter
from remote_kernel.pool.egress import EgressPolicy, EgressUnavailable
from remote_kernel.pool.egress import sweep as sweep_networks

log = logging.getLogger("remote_kernel.pool")

WORKERS = Path(__file__).resolve().parent / "workers"
SANDBOX_USER = 65534
STAGE = "/run"  # where a session started under its own uid sees the runtime's folders (a private mount)
PATH = "/usr/local/bin:/usr/bin:/bin"
NICE = 10  # sessions' nice value where no cpu cgroup holds them (weight 110 against a host task's 1024)
#: the command-line option of each limit a pool may be unable to hold (Sandbox.unenforced)
OPTION_OF_LIMIT = {"memory": "--memory", "processes": "--max-processes", "cpus": "--cpus", "disk": "--disk"}


class SandboxUnavailable(RuntimeError):
    """Bubblewrap was required but cannot run here."""


@dataclass(frozen=True)
class Limits:
    """What one session may use."""

    memory: int = 1 << 30  # bytes of memory
    processes: int = 128  # processes and threads
    disk: int = 1 << 30  # bytes in /mnt/data, and again in /tmp; a quarter of it in /dev/shm
    max_output: int = 1 << 20  # bytes kept per output stream per execution
    cpus: float = 1.0  # CPU time per wall-clock second (cgroup cpu quota); 0 for no limit

    @property
    def shm(self) -> int:
        """Bytes of /dev/shm (POSIX shared memory, multiprocessing's semaphores and queues)."""
        return max(1 << 20, self.disk // 4)


@dataclass(frozen=True)
class Runtime:
    """The interpreter sessions run: the worker command and the host folders it needs."""

    name: str  # "python" or "node"
    argv: tuple[str, ...]  # the interpreter and its options; the worker file's path follows
    binds: tuple[str, ...]  # host folders to mount read-only at the same path
    worker_file: Path  # mounted read-only at /opt/remote_kernel/<name>
    address_space: bool  # whether an address-space rlimit is safe (not for V8)
    #: what the `metadata` route says about it (runtimes, pre-installed packages), read by running it
    describe: Callable[["Runtime"], dict[str, Any]]
    max_timeout: float = EXECUTION_LIMIT  # longest execution allowed (the hosted cap of the container type)
    #: the environment it needs beyond the sandbox's own, given the session's limits
    own_environment: Callable[[Limits], dict[str, str]] = lambda limits: {}
    #: whether its worker takes an interrupt command on its command pipe before SIGINT (PROTOCOL.md)
    interrupt_command: bool = False

    @staticmethod
    def python(interpreter: str | None) -> "Runtime":
        """Python sessions: an IPython worker run by `interpreter` (default: this one)."""
        # not resolved: a virtual environment's python is a link whose own path makes it that environment
        exe = os.path.abspath((shutil.which(interpreter) or interpreter) if interpreter else sys.executable)
        if not os.access(exe, os.X_OK):
            raise SandboxUnavailable(f"--python {interpreter}: no such interpreter; give the path of a python3")
        prefixes, ipython = python_layout(exe)
        if ipython is None or not any(Path(ipython).is_relative_to(p) for p in prefixes):
            raise SandboxUnavailable(
                f"{exe} cannot run Python sessions: IPython is not installed in it"
                + (f" (only at {ipython}, outside {', '.join(sorted(prefixes))})" if ipython else "")
                + "; install ipython (and numpy, pandas, matplotlib) into that interpreter")
        worker = WORKERS / "python_worker.py"
        return Runtime("python", (exe, "-I", "-X", "frozen_modules=on"),
                       tuple(sorted(prefixes)), worker, address_space=True, describe=python_metadata)

    @staticmethod
    def node(node: str | None) -> "Runtime":
        """JavaScript sessions: a vm-context worker run by Node.js."""
        exe = node or shutil.which("node")
        if not exe or not os.access(exe, os.X_OK):
            raise SandboxUnavailable(
                "NodeLTS sessions need Node.js, which was not found"
                + (f" at {node}" if node else " on PATH")
                + ": install Node.js 18 or later (for example `apt-get install nodejs`) or pass --node PATH"
            )
        exe = os.path.realpath(exe)
        worker = WORKERS / "node_worker.js"
        binds = tuple(sorted({str(Path(exe).parent.parent)} - {"/usr", "/"}))
        return Runtime("node", (exe,), binds, worker, address_space=False, describe=node_metadata,
                       own_environment=node_heap, interrupt_command=True)

    @staticmethod
    def shell() -> "Runtime":
        """Shell sessions (hosted Shell pools): each command runs in bash under a small Python worker."""
        bash = shutil.which("bash", path=PATH)
        if not bash:
            raise SandboxUnavailable("Shell sessions need bash, which was not found in /usr/bin or /bin")
        exe = os.path.abspath(sys.executable)
        prefixes, _ = python_layout(exe)
        return Runtime("shell", (exe, "-I"), tuple(sorted(prefixes)), WORKERS / "shell_worker.py",
                       address_space=True, describe=shell_metadata, max_timeout=SHELL_EXECUTION_LIMIT)


def node_heap(limits: Limits) -> dict[str, str]:
    """V8 sizes its heap by itself, past the memory limit: three quarters of the limit keeps it inside."""
    return {"NODE_OPTIONS": f"--max-old-space-size={max(64, limits.memory * 3 // 4 >> 20)}"}


def python_metadata(runtime: Runtime) -> dict[str, Any]:
    script = ("import json, sys, importlib.metadata as m; print(json.dumps({'v': sys.version.split()[0], "
              "'p': sorted({(d.metadata['Name'], d.version) for d in m.distributions() if d.metadata['Name']})}))")
    out = subprocess.run([runtime.argv[0], "-c", script], capture_output=True, text=True)
    data: dict[str, Any] = json.loads(out.stdout) if out.returncode == 0 else {"v": "", "p": []}
    ipython = next((v for n, v in data["p"] if n.lower() == "ipython"), "")
    return {"runtimes": [{"name": "python", "version": data["v"]}],
            "preInstalledPackages": [{"name": n, "version": v} for n, v in data["p"]],
            "jupyterKernel": {"name": "IPython", "version": ipython, "projectUrl": "https://ipython.org",
                              "description": "One IPython shell per session, in its own sandbox"}}


def node_metadata(runtime: Runtime) -> dict[str, Any]:
    version = subprocess.run([runtime.argv[0], "--version"], capture_output=True, text=True).stdout.strip()
    return {"runtimes": [{"name": "node", "version": version.lstrip("v")}], "preInstalledPackages": [],
            "jupyterKernel": {"name": "remote_kernel node worker", "version": version.lstrip("v"),
                              "projectUrl": "https://nodejs.org",
                              "description": "One Node.js process per session (a REPL-like worker), in its own sandbox"}}


def shell_metadata(runtime: Runtime) -> dict[str, Any]:
    version = subprocess.run(["bash", "-c", "echo $BASH_VERSION"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"}).stdout.strip()
    # the 2025-10-02-preview document requires jupyterKernel; a Shell session has none, so it names what runs
    return {"runtimes": [{"name": "bash", "version": version}], "preInstalledPackages": [],
            "jupyterKernel": {"name": "bash", "version": version, "projectUrl": "https://www.gnu.org/software/bash/",
                              "description": "No Jupyter kernel: each command is a new bash process in the "
                                             "session's sandbox"}}


#: run by another interpreter: its install prefixes, and where its IPython package is (null: nowhere)
LAYOUT_PROBE = ("import importlib.util, json, sys; spec = importlib.util.find_spec('IPython'); "
                "print(json.dumps([[sys.prefix, sys.base_prefix, sys.exec_prefix], spec and spec.origin]))")


def python_layout(exe: str) -> tuple[set[str], str | None]:
    """The install prefixes of interpreter `exe` (what a sandbox must show) and where IPython is in it.

    Only looked up, not imported (importing IPython to check costs half a second of start-up);
    the pool's own interpreter is read in-process, another one with `-I` as the worker runs it.
    """
    if exe == os.path.abspath(sys.executable):
        spec = importlib.util.find_spec("IPython")
        prefixes: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix]
        origin: str | None = spec.origin if spec else None
    else:
        probe = subprocess.run([exe, "-I", "-c", LAYOUT_PROBE], capture_output=True, text=True, env={"PATH": PATH})
        if probe.returncode != 0:
            raise SandboxUnavailable(f"{exe} cannot run Python sessions: it failed to start "
                                     f"({probe.stderr.strip()[-200:]}); give the path of a python3 with --python")
        prefixes, origin = json.loads(probe.stdout)
    return {os.path.realpath(p) for p in prefixes}, origin and os.path.realpath(origin)


class Cgroups:
    """A session's cgroup (v1 or v2) for memory and process limits, when the machine allows it."""

    def __init__(self, paths: list[Path], holds: frozenset[str] = frozenset()) -> None:
        self.paths = paths
        self.holds = holds  # the limits it enforces: "memory", "processes", "cpus"

    BASE = Path("/sys/fs/cgroup")
    V1 = (BASE / "memory", BASE / "pids")
    V1_CPU = BASE / "cpu"
    PERIOD = 100_000  # µs of the CPU quota's period
    V1_WEIGHT, V2_WEIGHT = 1024, 100  # the kernel's default cpu.shares and cpu.weight: a host task's

    @staticmethod
    def parents() -> list[Path]:
        """Where this pool's session cgroups live: one folder per pool process (and controller on v1)."""
        own = f"pool-{os.getpid()}"
        if all((p / "cgroup.procs").exists() for p in Cgroups.V1):
            cpu = [Cgroups.V1_CPU] if (Cgroups.V1_CPU / "cpu.cfs_quota_us").exists() else []
            return [p / "remote_kernel" / own for p in (*Cgroups.V1, *cpu)]
        return [Cgroups.BASE / "remote_kernel" / own]

    @staticmethod
    def sweep(only_dead: bool = True) -> None:
        """Remove the cgroups of pools that are gone (or, at stop, this pool's own)."""
        for parent in Cgroups.parents():
            for pool_dir in parent.parent.glob("pool-*") if only_dead else [parent]:
                pid = pool_dir.name.removeprefix("pool-")
                if only_dead and pid.isdigit() and Path(f"/proc/{pid}").exists():
                    continue
                sessions = Cgroups([d for d in pool_dir.iterdir() if d.is_dir()] if pool_dir.is_dir() else [])
                sessions.kill()
                sessions.remove()
                try:
                    pool_dir.rmdir()
                except OSError:
                    pass

    @staticmethod
    def create(name: str, limits: Limits) -> "Cgroups | None":
        if os.environ.get("REMOTE_KERNEL_NO_CGROUPS") == "1":  # to exercise the rlimit fallback
            return None
        try:
            if all((p / "cgroup.procs").exists() for p in Cgroups.V1):
                memory, pids, *cpu = (p / name for p in Cgroups.parents())
                for p in (memory, pids, *cpu):
                    p.mkdir(parents=True, exist_ok=True)
                (memory / "memory.limit_in_bytes").write_text(str(limits.memory))
                try:
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(limits.memory))
                except OSError:
                    pass  # no swap accounting: fine, the machine may have no swap
                (pids / "pids.max").write_text(str(limits.processes))
                if cpu:
                    # the pool's sessions together weigh as one of the host's tasks (the default weight):
                    # untrusted code is never favoured over the user's own processes
                    for level in (cpu[0].parent.parent, cpu[0].parent, cpu[0]):
                        (level / "cpu.shares").write_text(str(Cgroups.V1_WEIGHT))
                if cpu and limits.cpus > 0:
                    (cpu[0] / "cpu.cfs_period_us").write_text(str(Cgroups.PERIOD))
                    (cpu[0] / "cpu.cfs_quota_us").write_text(str(int(limits.cpus * Cgroups.PERIOD)))
                return Cgroups([memory, pids, *cpu], frozenset({"memory", "processes", *(["cpus"] if cpu else [])}))
            if (Cgroups.BASE / "cgroup.controllers").exists():
                parent = Cgroups.parents()[0]
                group = parent / name
                group.mkdir(parents=True, exist_ok=True)
                (group / "memory.max").write_text(str(limits.memory))
                (group / "memory.swap.max").write_text("0")
                (group / "pids.max").write_text(str(limits.processes))
                holds = {"memory", "processes"}
                try:
                    for level in (parent.parent, parent):  # the cpu controller, delegated down to us
                        (level / "cgroup.subtree_control").write_text("+cpu")
                    for level in (parent.parent, parent, group):  # never above a host task's weight
                        (level / "cpu.weight").write_text(str(Cgroups.V2_WEIGHT))
                    if limits.cpus > 0:
                        (group / "cpu.max").write_text(f"{int(limits.cpus * Cgroups.PERIOD)} {Cgroups.PERIOD}")
                    holds.add("cpus")
                except OSError as error:
                    log.debug("no CPU limit for %s: %s", name, error)
                return Cgroups([group], frozenset(holds))
        except OSError as error:
            log.log(logging.DEBUG if name == "probe" else logging.WARNING, "no cgroup for %s: %s", name, error)
        return None

    @property
    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths]

    def out_of_memory(self) -> bool:
        """Whether the kernel's OOM killer acted in this cgroup."""
        for p in self.paths:
            for name in ("memory.oom_control", "memory.events"):
                try:
                    text = (p / name).read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip() not in ("", "0"):
                        return True
        return False

    def kill(self) -> None:
        """SIGKILL every process in the cgroup."""
        for p in self.paths:
            try:
                pids = (p / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass

    def remove(self) -> None:
        for p in self.paths:
            try:
                p.rmdir()
            except OSError:
                pass  # still emptying; the pool tries again when it stops


class SessionUids:
    """Host uids for the sessions of a pool that runs as root: one per live session, so that
    RLIMIT_NPROC (which counts a uid's processes and threads) bounds each session on its own, with or
    without cgroups, and no session runs as the host's root even in name.

    A pool takes a block of 1000 uids from 1 000 000 000 up by its pid (far above any real account);
    past 1000 live sessions uids are shared, so those sessions share one process budget.
    """

    BASE = 1_000_000_000
    BLOCK = 1000

    def __init__(self) -> None:
        self.first = self.BASE + (os.getpid() % 1_000_000) * self.BLOCK
        self.in_use: dict[int, int] = {}
        self.next = 0

    def take(self) -> int:
        for _ in range(self.BLOCK):
            uid = self.first + self.next
            self.next = (self.next + 1) % self.BLOCK
            if uid not in self.in_use:
                self.in_use[uid] = 1
                return uid
        uid = self.first + self.next
        self.in_use[uid] += 1
        return uid

    def give_back(self, uid: int) -> None:
        count = self.in_use.pop(uid, 1) - 1
        if count > 0:
            self.in_use[uid] = count


class Confinement(ABC):
    """How sessions are kept apart, the sandbox's strategy: what differs between bubblewrap and none.

    It owns the session's data folder (where /mnt/data is on the host), the worker's environment,
    the process an interrupt goes to, the cgroups and the session's own network."""

    name: str
    #: what each session's first execution tells its user, when sessions are not isolated
    warning: str | None = None

    def prepare(self, sandbox: "Sandbox") -> None:
        """Set up what every session of `sandbox` shares (once, when the pool's sandbox is made)."""

    def pool_starting(self, sandbox: "Sandbox") -> None:
        """Clean up after pools that were killed, and check the machine (blocking; run in a thread)."""

    def pool_stopped(self) -> None:
        """Clean up what the pool's sessions left behind (blocking; run in a thread)."""

    def cgroups(self, guid: str, limits: Limits) -> "Cgroups | None":
        return None

    def own_network(self, egress: EgressPolicy | None) -> bool:
        """Whether each session gets its own network namespace (egress.py)."""
        return False

    def host_data_folder(self, data_root: Path) -> Path | None:
        """The host folder to create as the session's /mnt/data before it starts (None: the sandbox has its own)."""
        return None

    @abstractmethod
    def data_folder(self, worker_pid: int | None, data_root: Path) -> Path | None:
        """The host path of a running session's /mnt/data (None: the session's processes are gone)."""

    @abstractmethod
    def environment(self, sandbox: "Sandbox", data_root: Path) -> dict[str, str]:
        """The environment the session's first process is started with."""

    def interrupt_target(self, worker_pid: int) -> int | None:
        """The process that gets SIGINT to interrupt the running execution (None: none is running)."""
        return worker_pid

    def session_fds(self, sandbox: "Sandbox", hosts_file: bytes | None) -> dict[str, int]:
        return {}

    @abstractmethod
    def command(self, sandbox: "Sandbox", prefix: list[str], fds: dict[str, int], netns: str | None,
                uid: int | None) -> list[str]:
        """argv that starts the worker after `prefix` (which joins the cgroups and sets the rlimits)."""


class Unsandboxed(Confinement):
    """Sessions run as the pool's user, in a folder of their own: no isolation (a loud fallback)."""

    name = "none"
    warning = ("WARNING: this local pool runs sessions without a sandbox (bubblewrap is not available): "
               "code can read your files and use your network. Install bubblewrap to isolate sessions.\n")

    def pool_starting(self, sandbox: "Sandbox") -> None:
        reason = "sessions are not sandboxed (no cgroups, and they run as the pool's own user)"
        sandbox.report_unenforced({"memory": f"not per session: {reason}; each process's address space only",
                                   "processes": f"not enforced: {reason}", "cpus": f"not enforced: {reason}",
                                   "disk": f"not enforced: {reason}; each file's size only"})

    def host_data_folder(self, data_root: Path) -> Path | None:
        return data_root / "data"

    def data_folder(self, worker_pid: int | None, data_root: Path) -> Path | None:
        return data_root / "data"

    def environment(self, sandbox: "Sandbox", data_root: Path) -> dict[str, str]:
        return sandbox.environment(str(data_root))

    def command(self, sandbox: "Sandbox", prefix: list[str], fds: dict[str, int], netns: str | None,
                uid: int | None) -> list[str]:
        return prefix + [*sandbox.runtime.argv, str(sandbox.runtime.worker_file)]


class Bubblewrap(Confinement):
    """Each session in its own bubblewrap sandbox (namespaces, seccomp, cgroups; the module's docstring)."""

    name = "bubblewrap"

    def prepare(self, sandbox: "Sandbox") -> None:
        try:
            sandbox.seccomp = seccomp_filter.build()
        except seccomp_filter.SeccompUnavailable as unavailable:
            log.warning("SESSIONS RUN WITHOUT A SECCOMP FILTER: %s", unavailable)
        if os.geteuid() == 0:
            problem = unprivileged_problem(sandbox.bwrap)
            if problem is None:
                sandbox.uids = SessionUids()
            else:
                log.warning("sessions run as the host's root (in their own user namespace) and only cgroups "
                            "bound their processes: %s", problem)
        elif nproc_per_user_namespace() and shutil.which("prlimit", path=PATH):
            sandbox.inner_nproc = True  # every session has a user namespace, so a count, of its own

    def pool_starting(self, sandbox: "Sandbox") -> None:
        Cgroups.sweep()  # what pools that were killed left behind
        if sandbox.egress is not None:
            sweep_networks()
        probe = Cgroups.create("probe", sandbox.limits)
        holds = sandbox.cgroup_holds = probe.holds if probe is not None else frozenset()
        if probe is not None:
            probe.remove()
        if "memory" not in holds and sandbox.seccomp is not None:
            sandbox.seccomp = seccomp_filter.build(uncounted_memory=False)  # memfds: no cgroup counts them
        sandbox.report_unenforced(self.unenforced(sandbox, holds))

    @staticmethod
    def unenforced(sandbox: "Sandbox", holds: frozenset[str]) -> dict[str, str]:
        """What each limit that cgroups do not hold here falls back to, for the limits nothing holds."""
        limits, missing = sandbox.limits, {}
        if "memory" not in holds:
            per_process = (f"each of a session's processes is held to {limits.memory * 2 + (512 << 20) >> 20} MiB "
                           "of address space" if sandbox.runtime.address_space
                           else "only the runtime's own heap limit holds")
            missing["memory"] = (f"not per session (no memory cgroup here): {per_process}, a session's files in "
                                 f"/tmp, /mnt/data and /dev/shm to {(2 * limits.disk + limits.shm) >> 20} MiB more; "
                                 "memfd_create and System V shared memory are refused")
        if "processes" not in holds and sandbox.uids is None and not sandbox.inner_nproc:
            missing["processes"] = ("not enforced (no pids cgroup here, and RLIMIT_NPROC cannot count a session's "
                                    "processes apart: " + ("they run as the host's root, whom it does not bind)"
                                                           if os.geteuid() == 0 else
                                                           "this kernel counts them with all of the pool user's)"))
        if "cpus" not in holds and limits.cpus > 0:
            missing["cpus"] = (f"not enforced (no cpu cgroup here): a session can use every core, at nice {NICE} "
                               "(each of its processes weighs a tenth of a host task)")
        return missing

    def pool_stopped(self) -> None:
        Cgroups.sweep(False)

    def cgroups(self, guid: str, limits: Limits) -> "Cgroups | None":
        return Cgroups.create(guid, limits)

    def own_network(self, egress: EgressPolicy | None) -> bool:
        return egress is not None and not egress.shared

    def data_folder(self, worker_pid: int | None, data_root: Path) -> Path | None:
        sandbox_init = children(worker_pid)[0] if worker_pid is not None else None
        return None if sandbox_init is None else Path(f"/proc/{sandbox_init}/root/mnt/data")

    def environment(self, sandbox: "Sandbox", data_root: Path) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin"}  # bwrap's own; it gives the worker the sandbox's (--clearenv, --setenv)

    def interrupt_target(self, worker_pid: int) -> int | None:
        init = children(worker_pid)  # bwrap → the sandbox's init → the worker
        workers = children(init[0]) if init else []
        return workers[0] if workers else None

    def session_fds(self, sandbox: "Sandbox", hosts_file: bytes | None) -> dict[str, int]:
        fds = {"worker": sandbox._memfd("remote-kernel-worker", sandbox.worker_source)}
        if sandbox.seccomp is not None:
            fds["seccomp"] = sandbox._memfd("remote-kernel-seccomp", sandbox.seccomp)
        if hosts_file is not None:
            fds["hosts"] = sandbox._memfd("remote-kernel-hosts", hosts_file)
        return fds

    def command(self, sandbox: "Sandbox", prefix: list[str], fds: dict[str, int], netns: str | None,
                uid: int | None) -> list[str]:
        enter = ["nsenter", f"--net={netns}", "--"] if netns else []
        if uid is not None:
            enter += [*sandbox._staged_binds(), "prlimit", f"--nproc={sandbox.limits.processes}:"
                      f"{sandbox.limits.processes}", "--", *drop_to(uid)]
        return prefix + enter + sandbox._bwrap_argv(fds, staged=uid is not None)


CONFINEMENTS: dict[str, type[Confinement]] = {"bubblewrap": Bubblewrap, "none": Unsandboxed}


class Sandbox:
    """Builds the command that starts a worker, sandboxed or not."""

    def __init__(self, mode: str, runtime: Runtime, limits: Limits, egress: EgressPolicy | None) -> None:
        self.confinement = CONFINEMENTS[mode]()
        self.runtime = runtime
        self.limits = limits
        self.egress = egress
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self.seccomp: bytes | None = None  # the BPF program each bubblewrap session runs under
        self.worker_source = runtime.worker_file.read_bytes()
        self.uids: SessionUids | None = None  # a root pool runs each session under its own uid
        self.inner_nproc = False  # RLIMIT_NPROC set inside each session's user namespace (a non-root pool)
        self.unenforced: dict[str, str] = {}  # the limits this pool cannot hold per session, and why
        self.cgroup_holds: frozenset[str] = frozenset()  # what every session's cgroup must hold (seen at start)
        self.confinement.prepare(self)

    @property
    def mode(self) -> str:
        """"bubblewrap" or "none", as --sandbox names it."""
        return self.confinement.name

    @classmethod
    def choose(cls, requested: str, runtime: Runtime, limits: Limits, egress: EgressPolicy | None) -> "Sandbox":
        """The sandbox for `--sandbox requested`: auto falls back to none, loudly."""
        if requested == "none":
            return cls("none", runtime, limits, egress)
        problem = bubblewrap_problem()
        if problem is None:
            if egress is not None:
                try:
                    egress.check()
                    if egress.allow is not None:
                        egress.note_host_addresses()
                except EgressUnavailable as unavailable:
                    if egress.allow is not None:
                        raise SandboxUnavailable(str(unavailable)) from None
                    log.warning("SESSIONS SHARE THE HOST'S NETWORK: %s. Session code can reach the host's "
                                "loopback services (this pool, a Jupyter server, a database).", unavailable)
                    egress = dataclasses.replace(egress, shared=True)
            return cls("bubblewrap", runtime, limits, egress)
        if requested == "bubblewrap":
            raise SandboxUnavailable(f"--sandbox bubblewrap: {problem}")
        log.warning("SESSIONS ARE NOT SANDBOXED: %s. Session code can read your files and use your network.",
                    problem)
        return cls("none", runtime, limits, egress)

    def report_unenforced(self, unenforced: dict[str, str]) -> None:
        """Say at start, one line each, which of the limits the pool was given it cannot hold (also on /health)."""
        self.unenforced = unenforced
        for name, why in unenforced.items():
            log.warning("LIMIT NOT ENFORCED: %s: %s", OPTION_OF_LIMIT[name], why)

    @property
    def warning(self) -> str | None:
        """What each session's first execution tells its user when there is no sandbox."""
        return self.confinement.warning

    def environment(self, home: str) -> dict[str, str]:
        """The whole environment a worker sees: nothing of the pool's own."""
        env = {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
               "MPLCONFIGDIR": "/tmp/matplotlib", "REMOTE_KERNEL_MAX_OUTPUT": str(self.limits.max_output),
               "NODE_PATH": "/mnt/data/node_modules", **session_hints(self.limits)}
        return {**env, **self.runtime.own_environment(self.limits)}

    def command(self, cgroups: Cgroups | None, fds: dict[str, int] | None = None, netns: str | None = None,
                uid: int | None = None) -> list[str]:
        """argv that starts the worker: started with the command pipe as stdin and the reply pipe as
        stdout, it moves them to fds 3 and 4 and leaves stdin empty and stdout on the log pipe.
        `fds` are the inherited fds of `session_fds()`; `netns`, the session's own network namespace
        (egress), which bubblewrap is started in; `uid`, the host uid it runs as (a root pool), with
        RLIMIT_NPROC at the session's process limit. Without a cpu cgroup to weigh the session as one
        host task, it runs at nice NICE: each of its processes then weighs a tenth of a host task's."""
        rlimits = f"ulimit -c 0; ulimit -n 1024; ulimit -f {self.limits.disk // 512}; "
        if self.runtime.address_space:
            rlimits += f"ulimit -v {(self.limits.memory * 2 + (512 << 20)) // 1024}; "
        join = " ".join(f'echo $$ > "${i + 1}" || exit 97;' for i in range(len(cgroups.procs_files if cgroups else [])))
        shift = f"shift {len(cgroups.procs_files)}; " if cgroups else ""
        nice = "" if cgroups is not None and "cpus" in cgroups.holds else f"nice -n {NICE} "
        script = f"{join} {rlimits}{shift}exec {nice}\"$@\" 3<&0 4>&1 0</dev/null 1>&2"
        prefix = ["/bin/sh", "-c", script, "sh", *(cgroups.procs_files if cgroups else [])]
        return self.confinement.command(self, prefix, fds or {}, netns, uid)

    def _staged_binds(self) -> list[str]:
        """argv prefix that shows each runtime folder at STAGE/<n> in a private mount namespace: bwrap,
        run as a session's uid, may not be able to reach the folder's own path (pyenv under a 0700
        /root), but it can open the folder itself, whose files are world-readable."""
        steps = [f"mount -t tmpfs -o mode=0755,size=64k remote-kernel {STAGE}"]
        for n, path in enumerate(self._runtime_binds()):
            steps += [f"mkdir {STAGE}/{n}", f"mount --bind -o ro \"${n + 1}\" {STAGE}/{n}"]
        script = " && ".join(steps) + f' && shift {len(self._runtime_binds())} && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
                *self._runtime_binds()]

    def session_fds(self, hosts_file: bytes | None = None) -> dict[str, int]:
        """New fds for one bubblewrap session (each read to its end by bwrap, so never shared):
        `seccomp`, the filter's BPF program; `worker`, the worker's source, copied into the sandbox
        (a bind mount of the file would show the checkout's host path in /proc/self/mountinfo)."""
        return self.confinement.session_fds(self, hosts_file)

    def _runtime_binds(self) -> list[str]:
        return [p for p in self.runtime.binds if p != "/usr" and not p.startswith("/usr/")]  # /usr is mounted already

    @staticmethod
    def _memfd(name: str, data: bytes) -> int:
        fd = os.memfd_create(name)  # close-on-exec: pass_fds hands it to its own session only
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def _bwrap_argv(self, fds: dict[str, int], staged: bool = False) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--uid", str(SANDBOX_USER), "--gid", str(SANDBOX_USER),
                "--hostname", "session"]
        if self.egress:
            argv += ["--share-net"]  # the session's own namespace, entered before bwrap (egress.py)
        argv += system_mounts()
        for path in self._etc_files():
            if path != "/etc/hosts" or "hosts" not in fds:
                argv += ["--ro-bind", path, path]
        if "hosts" in fds:
            argv += ["--ro-bind-data", str(fds["hosts"]), "/etc/hosts"]  # the allow-list's names only
        worker = f"/opt/remote_kernel/{self.runtime.worker_file.name}"
        argv += ["--ro-bind-data", str(fds["worker"]), worker,
                 "--proc", "/proc", "--dev", "/dev",
                 # the CPU topology (read-only), as /proc/cpuinfo shows it: lscpu and joblib/loky count cores
                 "--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu",
                 "--size", str(self.limits.shm), "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                 "--size", str(self.limits.disk), "--tmpfs", "/tmp",
                 "--size", str(self.limits.disk), "--tmpfs", "/mnt/data"]
        for n, path in enumerate(self._runtime_binds()):  # after /tmp: an interpreter may live in a folder under it
            argv += ["--ro-bind", f"{STAGE}/{n}" if staged else path, path]
        argv += ["--remount-ro", "/", "--chdir", "/mnt/data", "--clearenv"]
        if "seccomp" in fds:
            argv += ["--seccomp", str(fds["seccomp"])]
        for key, value in self.environment("/tmp").items():
            argv += ["--setenv", key, value]
        if self.inner_nproc:  # counted in the session's own user namespace (nproc_per_user_namespace)
            nproc = f"{self.limits.processes}:{self.limits.processes}"
            argv += ["--", shutil.which("prlimit", path=PATH) or "prlimit", f"--nproc={nproc}"]
        return argv + ["--", *self.runtime.argv, worker]

    def _etc_files(self) -> list[str]:
        """The few files of /etc a session needs (never passwords or the host's configuration)."""
        wanted = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/mime.types",
                  "/etc/ssl", "/etc/ca-certificates", "/etc/fonts", "/etc/alternatives", "/etc/matplotlibrc"]
        if self.egress:
            wanted += ["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf"]
        return [p for p in wanted if os.path.exists(p)]


def session_hints(limits: Limits) -> dict[str, str]:
    """What a session's libraries would find out on the host: the home folder the kernel's user sees (IPython
    shortens paths under it to `~` in tracebacks, as a local kernel does; the session's own HOME is /tmp), and,
    under a CPU quota below the host's CPUs, that many cores for joblib/loky
    (it cannot read the cgroup from inside the sandbox, and would start a worker per host CPU)."""
    hints = {"REMOTE_KERNEL_USER_HOME": os.path.expanduser("~")}
    cpus = os.cpu_count() or 1
    if 0 < limits.cpus < cpus:
        hints["LOKY_MAX_CPU_COUNT"] = str(max(1, math.ceil(limits.cpus)))
    return hints


def system_mounts() -> list[str]:
    """bwrap arguments that show the host's /usr (and its /bin, /lib… links) read-only."""
    argv = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), f"/{name}"]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), f"/{name}"]
    return argv


def bubblewrap_problem() -> str | None:
    """Why bubblewrap cannot build a sandbox here, or None when it can."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    probe = subprocess.run(
        [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", *system_mounts(),
         "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"],
        capture_output=True, text=True, env={"PATH": PATH},
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create a sandbox here ({probe.stderr.strip() or probe.returncode})"
    return None


def nproc_per_user_namespace() -> bool:
    """Whether this kernel counts RLIMIT_NPROC per user namespace and uid (Linux 5.14 and later), so that
    a limit set inside a session's own user namespace counts that session's processes and threads only."""
    try:
        major, minor = (int(n) for n in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 14)


def drop_to(uid: int) -> list[str]:
    """argv prefix that runs the rest as host uid and gid `uid`, with no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def unprivileged_problem(bwrap: str) -> str | None:
    """Why bubblewrap cannot run under an unprivileged uid here (no setpriv, user namespaces closed to
    unprivileged users), or None when it can."""
    missing = [tool for tool in ("setpriv", "prlimit", "unshare", "mount") if not shutil.which(tool)]
    if missing or not os.path.isdir(STAGE):
        return f"{', '.join(missing) or STAGE} (util-linux) is missing"
    probe = subprocess.run(
        [*drop_to(SessionUids.BASE - 1), bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
         *system_mounts(), "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"],
        capture_output=True, text=True, env={"PATH": PATH},
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot run as an unprivileged user here ({probe.stderr.strip() or probe.returncode})"
    return None


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
