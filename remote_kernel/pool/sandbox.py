"""How a session's worker process starts: bubblewrap, resource limits, and the unsandboxed fallback.

With bubblewrap every session gets its own user, pid, ipc, uts, network (unless egress is enabled)
and mount namespaces; the host's system read-only; a private size-capped `/tmp` and `/mnt/data`
(both tmpfs, so a full disk is the session's alone); a clean environment; and, where the machine
lets us write cgroups, a memory and a process-count limit. Rlimits are the backstop everywhere.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("remote_kernel.pool")

WORKERS = Path(__file__).resolve().parent / "workers"
SANDBOX_USER = 65534
PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailable(RuntimeError):
    """Bubblewrap was required but cannot run here."""


@dataclass(frozen=True)
class Limits:
    """What one session may use."""

    memory: int = 1 << 30  # bytes of memory
    processes: int = 128  # processes and threads
    disk: int = 1 << 30  # bytes in /mnt/data, and again in /tmp
    max_output: int = 1 << 20  # bytes kept per output stream per execution


@dataclass(frozen=True)
class Runtime:
    """The interpreter sessions run: the worker command and the host folders it needs."""

    name: str  # "python" or "node"
    argv: tuple[str, ...]  # the interpreter and its options; the worker file's path follows
    binds: tuple[str, ...]  # host folders to mount read-only at the same path
    worker_file: Path  # mounted read-only at /opt/remote_kernel/<name>
    address_space: bool  # whether an address-space rlimit is safe (not for V8)
    max_timeout: float = 220.0  # longest execution allowed (hosted: 220 s; Shell pools 600 s)

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
                       tuple(sorted(prefixes)), worker, address_space=True)

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
        return Runtime("node", (exe,), binds, worker, address_space=False)

    @staticmethod
    def shell() -> "Runtime":
        """Shell sessions (hosted Shell pools): each command runs in bash under a small Python worker."""
        bash = shutil.which("bash", path=PATH)
        if not bash:
            raise SandboxUnavailable("Shell sessions need bash, which was not found in /usr/bin or /bin")
        exe = os.path.abspath(sys.executable)
        prefixes, _ = python_layout(exe)
        return Runtime("shell", (exe, "-I"), tuple(sorted(prefixes)), WORKERS / "shell_worker.py",
                       address_space=True, max_timeout=600.0)


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
        prefixes, origin = [sys.prefix, sys.base_prefix, sys.exec_prefix], spec and spec.origin
    else:
        probe = subprocess.run([exe, "-I", "-c", LAYOUT_PROBE], capture_output=True, text=True, env={"PATH": PATH})
        if probe.returncode != 0:
            raise SandboxUnavailable(f"{exe} cannot run Python sessions: it failed to start "
                                     f"({probe.stderr.strip()[-200:]}); give the path of a python3 with --python")
        prefixes, origin = json.loads(probe.stdout)
    return {os.path.realpath(p) for p in prefixes}, origin and os.path.realpath(origin)


class Cgroups:
    """A session's cgroup (v1 or v2) for memory and process limits, when the machine allows it."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    BASE = Path("/sys/fs/cgroup")
    V1 = (BASE / "memory", BASE / "pids")

    @staticmethod
    def parents() -> list[Path]:
        """Where this pool's session cgroups live: one folder per pool process."""
        own = f"pool-{os.getpid()}"
        if all((p / "cgroup.procs").exists() for p in Cgroups.V1):
            return [p / "remote_kernel" / own for p in Cgroups.V1]
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
        try:
            if all((p / "cgroup.procs").exists() for p in Cgroups.V1):
                memory, pids = (p / name for p in Cgroups.parents())
                for p in (memory, pids):
                    p.mkdir(parents=True, exist_ok=True)
                (memory / "memory.limit_in_bytes").write_text(str(limits.memory))
                try:
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(limits.memory))
                except OSError:
                    pass  # no swap accounting: fine, the machine may have no swap
                (pids / "pids.max").write_text(str(limits.processes))
                return Cgroups([memory, pids])
            if (Cgroups.BASE / "cgroup.controllers").exists():
                group = Cgroups.parents()[0] / name
                group.mkdir(parents=True, exist_ok=True)
                (group / "memory.max").write_text(str(limits.memory))
                (group / "memory.swap.max").write_text("0")
                (group / "pids.max").write_text(str(limits.processes))
                return Cgroups([group])
        except OSError as error:
            log.debug("no cgroup for %s: %s", name, error)
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


class Sandbox:
    """Builds the command that starts a worker, sandboxed or not."""

    def __init__(self, mode: str, runtime: Runtime, limits: Limits, egress: bool) -> None:
        self.mode = mode  # "bubblewrap" or "none"
        self.runtime = runtime
        self.limits = limits
        self.egress = egress
        self.bwrap = shutil.which("bwrap") or "bwrap"

    @classmethod
    def choose(cls, requested: str, runtime: Runtime, limits: Limits, egress: bool) -> "Sandbox":
        """The sandbox for `--sandbox requested`: auto falls back to none, loudly."""
        if requested == "none":
            return cls("none", runtime, limits, egress)
        problem = bubblewrap_problem()
        if problem is None:
            return cls("bubblewrap", runtime, limits, egress)
        if requested == "bubblewrap":
            raise SandboxUnavailable(f"--sandbox bubblewrap: {problem}")
        log.warning("SESSIONS ARE NOT SANDBOXED: %s. Session code can read your files and use your network.",
                    problem)
        return cls("none", runtime, limits, egress)

    @property
    def warning(self) -> str | None:
        """What each session's first execution tells its user when there is no sandbox."""
        if self.mode == "bubblewrap":
            return None
        return ("WARNING: this local pool runs sessions without a sandbox (bubblewrap is not available): "
                "code can read your files and use your network. Install bubblewrap to isolate sessions.\n")

    def environment(self, home: str) -> dict[str, str]:
        """The whole environment a worker sees: nothing of the pool's own."""
        env = {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
               "MPLCONFIGDIR": "/tmp/matplotlib", "REMOTE_KERNEL_MAX_OUTPUT": str(self.limits.max_output),
               "NODE_PATH": "/mnt/data/node_modules"}
        if self.runtime.name == "node":
            env["NODE_OPTIONS"] = f"--max-old-space-size={max(64, self.limits.memory * 3 // 4 >> 20)}"
        return env

    def command(self, cgroups: Cgroups | None) -> list[str]:
        """argv that starts the worker: started with the command pipe as stdin and the reply pipe as
        stdout, it moves them to fds 3 and 4 and leaves stdin empty and stdout on the log pipe."""
        rlimits = f"ulimit -c 0; ulimit -n 1024; ulimit -f {self.limits.disk // 512}; "
        if self.runtime.address_space:
            rlimits += f"ulimit -v {(self.limits.memory * 2 + (512 << 20)) // 1024}; "
        join = " ".join(f'echo $$ > "${i + 1}" || exit 97;' for i in range(len(cgroups.procs_files if cgroups else [])))
        shift = f"shift {len(cgroups.procs_files)}; " if cgroups else ""
        script = f"{join} {rlimits}{shift}exec \"$@\" 3<&0 4>&1 0</dev/null 1>&2"
        prefix = ["/bin/sh", "-c", script, "sh", *(cgroups.procs_files if cgroups else [])]
        if self.mode == "none":
            return prefix + [*self.runtime.argv, str(self.runtime.worker_file)]
        return prefix + self._bwrap_argv()

    def _bwrap_argv(self) -> list[str]:
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--cap-drop", "ALL", "--uid", str(SANDBOX_USER), "--gid", str(SANDBOX_USER),
                "--hostname", "session"]
        if self.egress:
            argv += ["--share-net"]
        argv += system_mounts()
        for path in self._etc_files():
            argv += ["--ro-bind", path, path]
        worker = f"/opt/remote_kernel/{self.runtime.worker_file.name}"
        argv += ["--ro-bind", str(self.runtime.worker_file), worker,
                 "--proc", "/proc", "--dev", "/dev",
                 "--size", str(self.limits.disk), "--tmpfs", "/tmp",
                 "--size", str(self.limits.disk), "--tmpfs", "/mnt/data"]
        for path in self.runtime.binds:  # after /tmp: an interpreter may live in a folder under it
            if path != "/usr" and not path.startswith("/usr/"):  # /usr is mounted already
                argv += ["--ro-bind", path, path]
        argv += ["--remount-ro", "/", "--chdir", "/mnt/data", "--clearenv"]
        for key, value in self.environment("/tmp").items():
            argv += ["--setenv", key, value]
        return argv + ["--", *self.runtime.argv, worker]

    def _etc_files(self) -> list[str]:
        """The few files of /etc a session needs (never passwords or the host's configuration)."""
        wanted = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/mime.types",
                  "/etc/ssl", "/etc/ca-certificates", "/etc/fonts", "/etc/alternatives", "/etc/matplotlibrc"]
        if self.egress:
            wanted += ["/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf"]
        return [p for p in wanted if os.path.exists(p)]


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


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
