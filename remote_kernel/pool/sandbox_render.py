"""The backends: a `SandboxSpec` (sandbox_spec.py) rendered into the argv that starts a session's worker.

Both modes start with the same short `/bin/sh` prelude, rendered from the spec: it joins the session's
cgroups (`echo $$ > cgroup.procs`, so every process the session ever has is inside them from the first),
sets the rlimits, the nice value, and moves the command and reply pipes to fds 3 and 4. It stays a
shell: a process cannot join a cgroup before it starts without one (Python has no clone3 with
CLONE_INTO_CGROUP), and limits set on the child after it starts (resource.prlimit) would miss the
processes bubblewrap forks meanwhile. A root pool's sessions then show the runtime's folders at
STAGE/<n> in a private mount namespace (unshare, mount), cap RLIMIT_NPROC for their own host uid
(prlimit) and drop to it (setpriv); a session with a network of its own enters it (nsenter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from remote_kernel.pool.sandbox_spec import STAGE, Mode, Mount, SandboxSpec


@dataclass(frozen=True)
class Launch:
    """What one start of a session adds to its spec: handles made for it, not declarations."""

    fds: Mapping[str, int] = field(default_factory=dict)  # inherited fds by name: worker, seccomp, hosts, status
    cgroup_procs: tuple[str, ...] = ()  # the cgroup.procs files the first process writes itself into
    netns: str | None = None  # the session's network namespace (egress), entered before bubblewrap
    bwrap: str = "bwrap"


def prelude(spec: SandboxSpec, launch: Launch) -> list[str]:
    """argv prefix that joins the cgroups, sets the rlimits and nice value, and moves the pipes: started with
    the command pipe as stdin and the reply pipe as stdout, it moves them to fds 3 and 4 and leaves stdin
    empty and stdout on the log pipe."""
    limits = spec.rlimits
    rlimits = f"ulimit -c {limits.core}; ulimit -n {limits.nofile}; ulimit -f {limits.fsize // 512}; "
    if limits.address_space is not None:
        rlimits += f"ulimit -v {limits.address_space // 1024}; "
    procs = launch.cgroup_procs
    join = " ".join(f'echo $$ > "${i + 1}" || exit 97;' for i in range(len(procs)))
    shift = f"shift {len(procs)}; " if procs else ""
    nice = "" if spec.nice is None else f"nice -n {spec.nice} "
    script = f"{join} {rlimits}{shift}exec {nice}\"$@\" 3<&0 4>&1 0</dev/null 1>&2"
    return ["/bin/sh", "-c", script, "sh", *procs]


def unsandboxed(spec: SandboxSpec, launch: Launch) -> list[str]:
    """The worker run directly after the prelude, as the pool's user."""
    return prelude(spec, launch) + list(spec.command)


def staging(spec: SandboxSpec) -> list[str]:
    """argv prefix that shows each staged folder at STAGE/<n> in a private mount namespace: bwrap, run as
    a session's uid, may not be able to reach the folder's own path (pyenv under a 0700 /root), but it
    can open the folder itself, whose files are world-readable."""
    steps = [f"mount -t tmpfs -o mode=0755,size=64k remote-kernel {STAGE}"]
    for n, _ in enumerate(spec.staged):
        steps += [f"mkdir {STAGE}/{n}", f"mount --bind -o ro \"${n + 1}\" {STAGE}/{n}"]
    script = " && ".join(steps) + f' && shift {len(spec.staged)} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", *spec.staged]


def drop_to(uid: int) -> list[str]:
    """argv prefix that runs the rest as host uid and gid `uid`, with no supplementary groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def namespace_options(spec: SandboxSpec) -> list[str]:
    """bubblewrap's options for the spec's namespaces (a mount namespace it always makes). Without "net", the
    session keeps the network it is started in: its own, entered before bwrap (egress.py), or the host's."""
    unknown = spec.namespaces - {"user", "pid", "ipc", "uts", "net", "cgroup", "mount"}
    if unknown or "mount" not in spec.namespaces or "user" not in spec.namespaces:
        raise ValueError(f"bubblewrap cannot make namespaces {sorted(spec.namespaces)}: a mount and a user "
                         "namespace always, and only user, pid, ipc, uts, net and cgroup besides")
    argv = ["--unshare-user"]
    for name in ("ipc", "pid", "net", "uts"):
        if name in spec.namespaces:
            argv.append(f"--unshare-{name}")
    if "cgroup" in spec.namespaces:
        argv.append("--unshare-cgroup-try")  # as --unshare-all: a kernel without cgroup namespaces still runs
    return argv


def mount_options(mount: Mount, fds: Mapping[str, int]) -> list[str]:
    """bubblewrap's options for one mount step."""
    if mount.op == "data":
        return ["--ro-bind-data", str(fds[mount.source]), mount.target]
    if mount.op in ("ro-bind", "ro-bind-try", "symlink"):
        return [f"--{mount.op}", mount.source, mount.target]
    if mount.op == "tmpfs":
        sized = ["--size", str(mount.size)] if mount.size is not None else []
        return [*sized, *(["--perms", mount.perms] if mount.perms else []), "--tmpfs", mount.target]
    return [f"--{mount.op}", mount.target]  # proc, dev, remount-ro


def bubblewrap_argv(spec: SandboxSpec, launch: Launch) -> list[str]:
    """bwrap's own argv for the spec, its command included."""
    argv = [launch.bwrap, *namespace_options(spec)]
    if spec.disable_userns:
        argv.append("--disable-userns")
    if spec.die_with_parent:
        argv.append("--die-with-parent")
    if spec.new_session:
        argv.append("--new-session")
    if spec.drop_capabilities:
        argv += ["--cap-drop", "ALL"]
    argv += ["--uid", str(spec.uid), "--gid", str(spec.gid), "--hostname", spec.hostname]
    for mount in spec.mounts:
        argv += mount_options(mount, launch.fds)
    argv += ["--chdir", spec.chdir, "--clearenv"]
    if spec.seccomp:
        argv += ["--seccomp", str(launch.fds["seccomp"])]
    for key, value in spec.environment:
        argv += ["--setenv", key, value]
    if spec.status:
        argv += ["--json-status-fd", str(launch.fds["status"])]  # {"child-pid": the sandbox's init}
    if spec.nproc_inside and spec.nproc is not None:
        # counted in the session's own user namespace (nproc_per_user_namespace)
        argv += ["--", spec.prlimit, f"--nproc={spec.nproc}:{spec.nproc}"]
    return argv + ["--", *spec.command]


def bubblewrap(spec: SandboxSpec, launch: Launch) -> list[str]:
    """The whole argv of a bubblewrap session: the prelude, the way into its network and host uid, bwrap."""
    enter = ["nsenter", f"--net={launch.netns}", "--"] if launch.netns else []
    if spec.host_uid is not None:
        nproc = f"{spec.nproc}:{spec.nproc}"
        enter += [*staging(spec), "prlimit", f"--nproc={nproc}", "--", *drop_to(spec.host_uid)]
    return prelude(spec, launch) + enter + bubblewrap_argv(spec, launch)


#: one backend per mode: a new mode is one entry
BACKENDS: dict[Mode, Callable[[SandboxSpec, Launch], list[str]]] = {"bubblewrap": bubblewrap, "none": unsandboxed}


def render(spec: SandboxSpec, launch: Launch) -> list[str]:
    """The argv that starts the worker, by the spec's mode."""
    return BACKENDS[spec.mode](spec, launch)
