"""A session's sandbox, declared: what it mounts, its environment, limits, uid, namespaces and filter.

A `SandboxSpec` is a frozen value built by `declare()` from the pool's settings (the limits, the
runtime, the egress policy) and a few facts about the host read once (`HostLayout`); building it
does no I/O. One backend per mode (sandbox_render.py) turns it into the argv that starts the worker.
The fields follow google/nsjail's configuration: rlimits, cgroup limits, new namespaces, seccomp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SANDBOX_USER = 65534  # the uid and gid a session has inside its user namespace (nobody)
STAGE = "/run"  # where a session started under its own uid sees the runtime's folders (a private mount)
PATH = "/usr/local/bin:/usr/bin:/bin"
NICE = 10  # sessions' nice value where no cpu cgroup holds them (weight 110 against a host task's 1024)
WORKER_DIR = "/opt/remote_kernel"  # where the worker's source is, inside the sandbox
#: the namespaces of a bubblewrap session (a mount namespace always; net only without egress)
ALL_NAMESPACES = frozenset({"user", "pid", "ipc", "uts", "net", "cgroup", "mount"})
#: the few files of /etc a session needs (never passwords or the host's configuration); those present are shown
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/mime.types", "/etc/ssl",
             "/etc/ca-certificates", "/etc/fonts", "/etc/alternatives", "/etc/matplotlibrc")
#: and those a session with a network (egress) needs besides
NETWORK_ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf")

Mode = Literal["bubblewrap", "none"]
#: "isolated": a network namespace of its own with nothing in it; "session": the session's own namespace,
#: made by egress.py and entered before bubblewrap; "host": the host's network (egress, shared)
Network = Literal["isolated", "session", "host"]
MountOp = Literal["ro-bind", "ro-bind-try", "symlink", "data", "proc", "dev", "tmpfs", "remount-ro"]


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

    @property
    def address_space(self) -> int:
        """Bytes of address space per process, where the runtime allows an address-space rlimit."""
        return self.memory * 2 + (512 << 20)


@dataclass(frozen=True)
class Mount:
    """One step of the sandbox's file system, applied in order (bubblewrap's mount options).

    `source` is a host path for binds, the link's target for a symlink, and for `data` the name of
    the inherited fd whose bytes become the file (the backend maps names to fd numbers)."""

    op: MountOp
    target: str
    source: str = ""
    size: int | None = None  # bytes of a tmpfs
    perms: str | None = None  # octal mode of a tmpfs


@dataclass(frozen=True)
class Rlimits:
    """Per-process limits set before the worker starts (nsjail's rlimit_*), in bytes where sizes."""

    core: int = 0
    nofile: int = 1024
    fsize: int = 1 << 30  # the largest file a process may write
    address_space: int | None = None  # None: no address-space limit (V8 reserves far more than it uses)


@dataclass(frozen=True)
class CgroupLimits:
    """What a session's cgroup holds when the machine lets the pool make one (nsjail's cgroup_*)."""

    memory: int  # bytes, swap included (no swap on v2)
    processes: int  # pids.max
    cpus: float  # CPU time per wall-clock second; 0: no quota (the weight still applies)


@dataclass(frozen=True)
class HostLayout:
    """The facts about the host a spec needs, read once (sandbox.py) so that `declare` does no I/O."""

    #: the top-level system folders: (name, "link" or "dir", the link's target)
    system: tuple[tuple[str, str, str], ...] = ()
    etc_files: frozenset[str] = frozenset()  # which of ETC_FILES and NETWORK_ETC_FILES exist
    home: str = "/"  # the home folder of the pool's user (shown to IPython, which shortens paths with it)
    cpu_count: int = 1
    prlimit: str = "prlimit"  # util-linux's prlimit, run inside a session to set RLIMIT_NPROC


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a session's sandbox is, declared (see the module docstring)."""

    mode: Mode
    command: tuple[str, ...]  # the worker: the interpreter, its options and the worker file
    environment: tuple[tuple[str, str], ...]  # the worker's whole environment (nothing of the pool's own)
    rlimits: Rlimits
    cgroup: CgroupLimits
    nice: int | None  # the nice value the worker starts at (None: a cpu cgroup weighs the session instead)
    namespaces: frozenset[str] = frozenset()  # the namespaces unshared (ALL_NAMESPACES, net as `network` says)
    network: Network = "isolated"
    mounts: tuple[Mount, ...] = ()
    uid: int = SANDBOX_USER  # inside the user namespace
    gid: int = SANDBOX_USER
    hostname: str = "session"
    chdir: str = "/mnt/data"
    seccomp: bool = False  # the filter (seccomp_filter.py) is applied, from the inherited fd "seccomp"
    host_uid: int | None = None  # the host uid and gid the sandbox runs as (a root pool): None, the pool's own
    #: the host folders shown at STAGE/<n> before dropping to host_uid (which may not reach their own paths)
    staged: tuple[str, ...] = ()
    nproc: int | None = None  # RLIMIT_NPROC; counted per host uid, or in the user namespace (nproc_inside)
    nproc_inside: bool = False
    disable_userns: bool = True  # no nested user namespaces
    die_with_parent: bool = True
    new_session: bool = True  # setsid: no terminal injection (TIOCSTI)
    drop_capabilities: bool = True
    prlimit: str = "prlimit"  # the prlimit that sets nproc inside the sandbox
    status: bool = True  # bubblewrap reports the sandbox's pid on the inherited fd "status"

    @property
    def env(self) -> dict[str, str]:
        return dict(self.environment)


@dataclass(frozen=True)
class PoolSandbox:
    """What every session of a pool shares: the settings a spec is declared from."""

    mode: Mode
    limits: Limits
    interpreter: tuple[str, ...]  # the runtime's argv (the worker file follows)
    worker_file: str  # the worker's host path (unsandboxed) or file name (copied into the sandbox)
    binds: tuple[str, ...]  # the runtime's host folders, shown read-only at the same path
    address_space: bool  # whether an address-space rlimit is safe for the runtime
    own_environment: tuple[tuple[str, str], ...] = ()  # what the runtime adds to the environment
    egress: bool = False  # sessions have a network (an egress policy)
    shared_network: bool = False  # ... and it is the host's (egress could not make one per session)
    seccomp: bool = False  # a seccomp filter was built
    session_uids: bool = False  # a root pool: each session runs as a host uid of its own
    nproc_inside: bool = False  # RLIMIT_NPROC is counted per user namespace here (a non-root pool)
    host: HostLayout = field(default_factory=HostLayout)


def cgroup_limits(limits: Limits) -> CgroupLimits:
    """The session's cgroup limits of the pool's limits."""
    return CgroupLimits(memory=limits.memory, processes=limits.processes, cpus=limits.cpus)


def session_hints(limits: Limits, host: HostLayout) -> dict[str, str]:
    """What a session's libraries would find out on the host: the home folder the kernel's user sees (IPython
    shortens paths under it to `~` in tracebacks, as a local kernel does; the session's own HOME is /tmp), and,
    under a CPU quota below the host's CPUs, that many cores for joblib/loky
    (it cannot read the cgroup from inside the sandbox, and would start a worker per host CPU)."""
    hints = {"REMOTE_KERNEL_USER_HOME": host.home}
    if 0 < limits.cpus < host.cpu_count:
        hints["LOKY_MAX_CPU_COUNT"] = str(max(1, math.ceil(limits.cpus)))
    return hints


def environment(pool: PoolSandbox, home: str) -> dict[str, str]:
    """The whole environment a worker sees: nothing of the pool's own."""
    limits = pool.limits
    env = {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "MPLCONFIGDIR": "/tmp/matplotlib", "REMOTE_KERNEL_MAX_OUTPUT": str(limits.max_output),
           "NODE_PATH": "/mnt/data/node_modules", **session_hints(limits, pool.host)}
    return {**env, **dict(pool.own_environment)}


def system_mounts(host: HostLayout) -> tuple[Mount, ...]:
    """The host's /usr (and its /bin, /lib… links or folders) read-only."""
    mounts = [Mount("ro-bind", "/usr", "/usr")]
    for name, kind, target in host.system:
        mounts.append(Mount("symlink", f"/{name}", target) if kind == "link" else Mount("ro-bind", f"/{name}", f"/{name}"))
    return tuple(mounts)


def runtime_binds(pool: PoolSandbox) -> tuple[str, ...]:
    """The runtime's folders that need a mount of their own (/usr is mounted already)."""
    return tuple(p for p in pool.binds if p != "/usr" and not p.startswith("/usr/"))


def declare(pool: PoolSandbox, *, home: str = "/tmp", hosts_file: bool = False, host_uid: int | None = None,
            cpu_cgroup: bool = False) -> SandboxSpec:
    """The spec of one session: `home` its HOME (unsandboxed: its own folder); `hosts_file`, whether its
    network gives it an /etc/hosts of its own (the allow-list's names); `host_uid`, the host uid it runs
    as (a root pool); `cpu_cgroup`, whether a cpu cgroup weighs it (else it runs at nice NICE)."""
    limits = pool.limits
    rlimits = Rlimits(fsize=limits.disk, address_space=limits.address_space if pool.address_space else None)
    cgroup = cgroup_limits(limits)
    nice = None if cpu_cgroup else NICE
    if pool.mode == "none":
        return SandboxSpec("none", (*pool.interpreter, pool.worker_file), tuple(environment(pool, home).items()),
                           rlimits, cgroup, nice, status=False, disable_userns=False, die_with_parent=False,
                           new_session=False, drop_capabilities=False, chdir="")
    worker = f"{WORKER_DIR}/{pool.worker_file}"
    etc = ETC_FILES + (NETWORK_ETC_FILES if pool.egress else ())
    mounts = [*system_mounts(pool.host)]
    mounts += [Mount("ro-bind", p, p) for p in etc if p in pool.host.etc_files and not (p == "/etc/hosts" and hosts_file)]
    if hosts_file:
        mounts.append(Mount("data", "/etc/hosts", "hosts"))
    mounts += [Mount("data", worker, "worker"), Mount("proc", "/proc"), Mount("dev", "/dev"),
               # the CPU topology (read-only), as /proc/cpuinfo shows it: lscpu and joblib/loky count cores
               Mount("ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"),
               Mount("tmpfs", "/dev/shm", size=limits.shm, perms="1777"), Mount("remount-ro", "/dev"),
               Mount("tmpfs", "/tmp", size=limits.disk), Mount("tmpfs", "/mnt/data", size=limits.disk)]
    staged = runtime_binds(pool) if host_uid is not None else ()
    # after /tmp: an interpreter may live in a folder under it
    mounts += [Mount("ro-bind", path, f"{STAGE}/{n}" if staged else path) for n, path in enumerate(runtime_binds(pool))]
    mounts.append(Mount("remount-ro", "/"))
    network: Network = "isolated" if not pool.egress else "host" if pool.shared_network else "session"
    namespaces = ALL_NAMESPACES - ({"net"} if pool.egress else set())
    nproc_inside = host_uid is None and pool.nproc_inside
    return SandboxSpec(
        "bubblewrap", (*pool.interpreter, worker), tuple(environment(pool, "/tmp").items()), rlimits, cgroup, nice,
        namespaces=namespaces, network=network, mounts=tuple(mounts), seccomp=pool.seccomp, host_uid=host_uid,
        staged=staged, nproc=limits.processes if host_uid is not None or nproc_inside else None,
        nproc_inside=nproc_inside, prlimit=pool.host.prlimit)


def environment_of(spec: SandboxSpec) -> Mapping[str, str]:
    """The environment the session's first process is started with: bubblewrap's own PATH (it gives the
    worker the spec's environment itself), or, unsandboxed, the worker's."""
    return {"PATH": "/usr/bin:/bin"} if spec.mode == "bubblewrap" else spec.env
