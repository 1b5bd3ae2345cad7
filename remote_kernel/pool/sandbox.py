"""The pool's sandbox: the runtimes, the two modes (bubblewrap, and the unsandboxed fallback) and what their
sessions share. What one session's sandbox is, is declared in sandbox_spec.py and rendered into its argv by
sandbox_render.py; its cgroup is written by cgroups.py.

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
import os
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remote_kernel.contract import EXECUTION_LIMIT, SHELL_EXECUTION_LIMIT
from remote_kernel.pool import seccomp_filter
from remote_kernel.pool.cgroups import Cgroups
from remote_kernel.pool.egress import EgressPolicy, EgressUnavailable
from remote_kernel.pool.egress import sweep as sweep_networks
from remote_kernel.pool.sandbox_render import Launch, drop_to, mount_options, render
from remote_kernel.pool.sandbox_spec import (
    ETC_FILES,
    NETWORK_ETC_FILES,
    NICE,
    PATH,
    SANDBOX_USER,
    STAGE,
    CgroupLimits,
    HostLayout,
    Limits,
    Mode,
    PoolSandbox,
    SandboxSpec,
    cgroup_limits,
    declare,
)
from remote_kernel.pool.sandbox_spec import system_mounts as spec_system_mounts

log = logging.getLogger("remote_kernel.pool")

WORKERS = Path(__file__).resolve().parent / "workers"
#: the command-line option of each limit a pool may be unable to hold (Sandbox.unenforced)
OPTION_OF_LIMIT = {"memory": "--memory", "processes": "--max-processes", "cpus": "--cpus", "disk": "--disk"}
#: names that moved to modules of their own, still importable from here
__all__ = ["NICE", "SANDBOX_USER", "STAGE", "Cgroups", "Limits", "Runtime", "Sandbox", "SandboxUnavailable"]


class SandboxUnavailable(RuntimeError):
    """Bubblewrap was required but cannot run here."""



@dataclass(frozen=True)
class Runtime:
    """The interpreter sessions run: the worker command and the host folders it needs."""

    name: str  # "python" or "node"
    argv: tuple[str, ...]  # the interpreter and its options; the worker file's path follows
    binds: tuple[str, ...]  # host folders to mount read-only at the same path
    worker_file: Path  # mounted read-only at /opt/remote_kernel/<name>
    address_space: bool  # whether an address-space rlimit is safe (not for V8)
    #: what the `metadata` route says about it (runtimes, pre-installed packages), read by running it
    describe: Callable[[Runtime], dict[str, Any]]
    max_timeout: float = EXECUTION_LIMIT  # longest execution allowed (the hosted cap of the container type)
    #: the environment it needs beyond the sandbox's own, given the session's limits
    own_environment: Callable[[Limits], dict[str, str]] = lambda limits: {}
    #: whether its worker takes an interrupt command on its command pipe before SIGINT (PROTOCOL.md)
    interrupt_command: bool = False

    @staticmethod
    def python(interpreter: str | None) -> Runtime:
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
    def node(node: str | None) -> Runtime:
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
    def shell() -> Runtime:
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

class SandboxProcess:
    """A started session's sandbox: the process an interrupt and the file routes reach it through.

    Under bubblewrap, the sandbox's init (pid 1 in its pid namespace), whose host pid bubblewrap reports on
    its `--json-status-fd`; held by a pidfd, so that a pid the kernel has since given to another process
    is never taken for it. Unsandboxed, the worker itself."""

    def __init__(self, pid: int, pidfd: int | None = None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.closed = False

    @classmethod
    def of_status(cls, line: bytes, launcher: int) -> SandboxProcess | None:
        """The sandbox of bubblewrap's first status line (`{"child-pid": N, ...}`), when its init is still the
        child of `launcher` (the bwrap process); None when it is gone or the line is not bubblewrap's."""
        try:
            status = json.loads(line)
            pid = status["child-pid"] if isinstance(status, dict) else None
        except (ValueError, KeyError):
            return None
        if not isinstance(pid, int) or pid <= 0:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        if parent_of(pid) != launcher:  # the init had gone and its pid was given to another process
            os.close(pidfd)
            return None
        return cls(pid, pidfd)

    @property
    def alive(self) -> bool:
        """Whether the process is still running (unsandboxed: until the session closes; the session checks
        its worker itself)."""
        if self.closed:
            return False
        if self.pidfd is None:
            return True
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.closed = True
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Confinement(ABC):
    """How sessions are kept apart, per mode: the parts of a session's life that differ between bubblewrap
    and none (the argv itself is rendered from the session's spec by sandbox_render).

    It owns the session's data folder (where /mnt/data is on the host), the process an interrupt goes to,
    the inherited fds, the cgroups and the session's own network."""

    name: Mode
    #: what each session's first execution tells its user, when sessions are not isolated
    warning: str | None = None

    def prepare(self, sandbox: Sandbox) -> None:
        """Set up what every session of `sandbox` shares (once, when the pool's sandbox is made)."""
        return None  # nothing by default

    def pool_starting(self, sandbox: Sandbox) -> None:
        """Clean up after pools that were killed, and check the machine (blocking; run in a thread)."""
        return None

    def pool_stopped(self) -> None:
        """Clean up what the pool's sessions left behind (blocking; run in a thread)."""
        return None

    def cgroups(self, guid: str, limits: CgroupLimits) -> Cgroups | None:
        return None

    def own_network(self, egress: EgressPolicy | None) -> bool:
        """Whether each session gets its own network namespace (egress.py)."""
        return False

    def host_data_folder(self, data_root: Path) -> Path | None:
        """The host folder to create as the session's /mnt/data before it starts (None: the sandbox has its own)."""
        return None

    @abstractmethod
    def data_folder(self, sandbox: SandboxProcess | None, data_root: Path) -> Path | None:
        """The host path of a running session's /mnt/data (None: the session's processes are gone)."""

    def interrupt_target(self, sandbox: SandboxProcess) -> int | None:
        """The process that gets SIGINT to interrupt the running execution (None: none is running)."""
        return sandbox.pid

    def session_fds(self, sandbox: Sandbox, spec: SandboxSpec, hosts_file: bytes | None) -> SessionFds:
        return SessionFds({}, None)


@dataclass(frozen=True)
class SessionFds:
    """The fds made for one session: those its first process inherits, by name, and the read end of
    bubblewrap's status pipe (None: no status)."""

    inherited: dict[str, int]
    status: int | None


class Unsandboxed(Confinement):
    """Sessions run as the pool's user, in a folder of their own: no isolation (a loud fallback)."""

    name = "none"
    warning = ("WARNING: this local pool runs sessions without a sandbox (bubblewrap is not available): "
               "code can read your files and use your network. Install bubblewrap to isolate sessions.\n")

    def pool_starting(self, sandbox: Sandbox) -> None:
        reason = "sessions are not sandboxed (no cgroups, and they run as the pool's own user)"
        sandbox.report_unenforced({"memory": f"not per session: {reason}; each process's address space only",
                                   "processes": f"not enforced: {reason}", "cpus": f"not enforced: {reason}",
                                   "disk": f"not enforced: {reason}; each file's size only"})

    def host_data_folder(self, data_root: Path) -> Path | None:
        return data_root / "data"

    def data_folder(self, sandbox: SandboxProcess | None, data_root: Path) -> Path | None:
        return data_root / "data"


class Bubblewrap(Confinement):
    """Each session in its own bubblewrap sandbox (namespaces, seccomp, cgroups; the module's docstring)."""

    name = "bubblewrap"

    def prepare(self, sandbox: Sandbox) -> None:
        try:
            sandbox.seccomp = seccomp_filter.build()
        except seccomp_filter.SeccompUnavailable as unavailable:
            log.warning("SESSIONS RUN WITHOUT A SECCOMP FILTER: %s", unavailable)
        if os.geteuid() == 0:
            problem = unprivileged_problem(sandbox.bwrap, sandbox.host)
            if problem is None:
                sandbox.uids = SessionUids()
            else:
                log.warning("sessions run as the host's root (in their own user namespace) and only cgroups "
                            "bound their processes: %s", problem)
        elif nproc_per_user_namespace() and shutil.which("prlimit", path=PATH):
            sandbox.inner_nproc = True  # every session has a user namespace, so a count, of its own

    def pool_starting(self, sandbox: Sandbox) -> None:
        Cgroups.sweep()  # what pools that were killed left behind
        if sandbox.egress is not None:
            sweep_networks()
        probe = Cgroups.create("probe", cgroup_limits(sandbox.limits))
        holds = sandbox.cgroup_holds = probe.holds if probe is not None else frozenset()
        if probe is not None:
            probe.remove()
        if "memory" not in holds and sandbox.seccomp is not None:
            sandbox.seccomp = seccomp_filter.build(uncounted_memory=False)  # memfds: no cgroup counts them
        sandbox.report_unenforced(self.unenforced(sandbox, holds))

    @staticmethod
    def unenforced(sandbox: Sandbox, holds: frozenset[str]) -> dict[str, str]:
        """What each limit that cgroups do not hold here falls back to, for the limits nothing holds."""
        limits, missing = sandbox.limits, {}
        if "memory" not in holds:
            per_process = (f"each of a session's processes is held to {limits.address_space >> 20} MiB "
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

    def cgroups(self, guid: str, limits: CgroupLimits) -> Cgroups | None:
        return Cgroups.create(guid, limits)

    def own_network(self, egress: EgressPolicy | None) -> bool:
        return egress is not None and not egress.shared

    def data_folder(self, sandbox: SandboxProcess | None, data_root: Path) -> Path | None:
        return None if sandbox is None or not sandbox.alive else Path(f"/proc/{sandbox.pid}/root/mnt/data")

    def interrupt_target(self, sandbox: SandboxProcess) -> int | None:
        workers = children(sandbox.pid) if sandbox.alive else []  # the sandbox's init → the worker
        return workers[0] if workers else None

    def session_fds(self, sandbox: Sandbox, spec: SandboxSpec, hosts_file: bytes | None) -> SessionFds:
        """New fds for one session (each read to its end by bwrap, so never shared): `worker`, the worker's
        source, copied into the sandbox (a bind mount of the file would show the checkout's host path in
        /proc/self/mountinfo); `seccomp`, the filter's BPF program; `hosts`, the session's /etc/hosts;
        `status`, the write end of the pipe bwrap reports the sandbox's pid on (closed in the sandbox)."""
        fds = {"worker": memfd("remote-kernel-worker", sandbox.worker_source)}
        if spec.seccomp and sandbox.seccomp is not None:
            fds["seccomp"] = memfd("remote-kernel-seccomp", sandbox.seccomp)
        if hosts_file is not None:
            fds["hosts"] = memfd("remote-kernel-hosts", hosts_file)
        status = None
        if spec.status:
            status, fds["status"] = os.pipe()
        return SessionFds(fds, status)


CONFINEMENTS: dict[str, type[Confinement]] = {"bubblewrap": Bubblewrap, "none": Unsandboxed}


class Sandbox:
    """The pool's sandbox: what its sessions share, and each session's spec and argv."""

    def __init__(self, mode: str, runtime: Runtime, limits: Limits, egress: EgressPolicy | None) -> None:
        self.confinement = CONFINEMENTS[mode]()
        self.runtime = runtime
        self.limits = limits
        self.egress = egress
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self.host = read_host_layout() if mode == "bubblewrap" else HostLayout(home=os.path.expanduser("~"),
                                                                               cpu_count=os.cpu_count() or 1)
        self.seccomp: bytes | None = None  # the BPF program each bubblewrap session runs under
        self.worker_source = runtime.worker_file.read_bytes()
        self.uids: SessionUids | None = None  # a root pool runs each session under its own uid
        self.inner_nproc = False  # RLIMIT_NPROC set inside each session's user namespace (a non-root pool)
        self.unenforced: dict[str, str] = {}  # the limits this pool cannot hold per session, and why
        self.cgroup_holds: frozenset[str] = frozenset()  # what every session's cgroup must hold (seen at start)
        self.confinement.prepare(self)

    @property
    def mode(self) -> Mode:
        """"bubblewrap" or "none", as --sandbox names it."""
        return self.confinement.name

    @classmethod
    def choose(cls, requested: str, runtime: Runtime, limits: Limits, egress: EgressPolicy | None) -> Sandbox:
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

    @property
    def settings(self) -> PoolSandbox:
        """What every session's spec is declared from (read as it is now: the start-up probe may drop
        the seccomp filter's memfd rule)."""
        runtime = self.runtime
        worker = runtime.worker_file.name if self.mode == "bubblewrap" else str(runtime.worker_file)
        return PoolSandbox(
            self.mode, self.limits, runtime.argv, worker, runtime.binds, runtime.address_space,
            tuple(runtime.own_environment(self.limits).items()), egress=self.egress is not None,
            shared_network=self.egress is not None and self.egress.shared, seccomp=self.seccomp is not None,
            session_uids=self.uids is not None, nproc_inside=self.inner_nproc, host=self.host)

    def spec(self, *, home: str = "/tmp", hosts_file: bool = False, host_uid: int | None = None,
             cgroups: Cgroups | None = None) -> SandboxSpec:
        """One session's spec (sandbox_spec.declare): without a cpu cgroup to weigh the session as one host
        task, it runs at nice NICE, where each of its processes weighs a tenth of a host task's."""
        return declare(self.settings, home=home, hosts_file=hosts_file, host_uid=host_uid,
                       cpu_cgroup=cgroups is not None and "cpus" in cgroups.holds)

    def session_fds(self, spec: SandboxSpec, hosts_file: bytes | None = None) -> SessionFds:
        """New fds for one session's first process (the confinement's)."""
        return self.confinement.session_fds(self, spec, hosts_file)

    def command(self, spec: SandboxSpec, cgroups: Cgroups | None, fds: dict[str, int] | None = None,
                netns: str | None = None) -> list[str]:
        """argv that starts the worker of `spec` (sandbox_render): `fds` are the inherited fds of
        `session_fds()`; `netns`, the session's own network namespace (egress), which bubblewrap is
        started in."""
        launch = Launch(fds or {}, tuple(cgroups.procs_files) if cgroups else (), netns, self.bwrap)
        return render(spec, launch)


def memfd(name: str, data: bytes) -> int:
    """A new in-memory file holding `data`, read from its start (close-on-exec: pass_fds hands it to its own
    session only)."""
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_host_layout() -> HostLayout:
    """The host facts a spec is declared from (the one place a spec's inputs are read from the machine)."""
    system = []
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            system.append((name, "link", os.readlink(target)))
        elif target.is_dir():
            system.append((name, "dir", ""))
    etc = frozenset(p for p in (*ETC_FILES, *NETWORK_ETC_FILES) if os.path.exists(p))
    return HostLayout(tuple(system), etc, os.path.expanduser("~"), os.cpu_count() or 1,
                      shutil.which("prlimit", path=PATH) or "prlimit")


def system_mounts(host: HostLayout | None = None) -> list[str]:
    """bwrap arguments that show the host's /usr (and its /bin, /lib… links) read-only."""
    return [arg for mount in spec_system_mounts(host or read_host_layout()) for arg in mount_options(mount, {})]


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


def unprivileged_problem(bwrap: str, host: HostLayout | None = None) -> str | None:
    """Why bubblewrap cannot run under an unprivileged uid here (no setpriv, user namespaces closed to
    unprivileged users), or None when it can."""
    missing = [tool for tool in ("setpriv", "prlimit", "unshare", "mount") if not shutil.which(tool)]
    if missing or not os.path.isdir(STAGE):
        return f"{', '.join(missing) or STAGE} (util-linux) is missing"
    probe = subprocess.run(
        [*drop_to(SessionUids.BASE - 1), bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
         *system_mounts(host), "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"],
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


def parent_of(pid: int) -> int | None:
    """The parent of a process (None: it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None
