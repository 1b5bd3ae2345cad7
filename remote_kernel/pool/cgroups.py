"""A session's cgroup (v1 or v2): its memory, process and CPU limits, written where the machine allows it.

The limits come from the session's spec (sandbox_spec.CgroupLimits); the sandbox's prelude writes the
first process into `cgroup.procs` (sandbox_render.prelude), so every process of the session is in it.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from remote_kernel.pool.sandbox_spec import CgroupLimits

log = logging.getLogger("remote_kernel.pool")


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
    def create(name: str, limits: CgroupLimits) -> Cgroups | None:
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
