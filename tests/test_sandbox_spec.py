"""The declared sandbox (pool/sandbox_spec.py) and its backends (pool/sandbox_render.py), on the spec alone:
no process starts and nothing is read from the machine."""

from __future__ import annotations

import dataclasses

import pytest

from remote_kernel.pool.sandbox_render import Launch, render
from remote_kernel.pool.sandbox_spec import (
    NICE,
    STAGE,
    HostLayout,
    Limits,
    Mount,
    PoolSandbox,
    SandboxSpec,
    declare,
)

HOST = HostLayout(system=(("bin", "link", "usr/bin"), ("lib64", "dir", "")),
                  etc_files=frozenset({"/etc/ssl", "/etc/hosts", "/etc/resolv.conf", "/etc/ld.so.cache"}),
                  home="/home/someone", cpu_count=8, prlimit="/usr/bin/prlimit")
LIMITS = Limits(memory=3 << 30, processes=77, disk=5 << 30, max_output=12345, cpus=1.5)
FDS = {"worker": 11, "seccomp": 12, "hosts": 13, "status": 14}


def pool(**changes: object) -> PoolSandbox:
    base = PoolSandbox("bubblewrap", LIMITS, ("/opt/py/bin/python", "-I"), "python_worker.py",
                       ("/usr/lib/python3", "/opt/py"), address_space=True, own_environment=(("EXTRA", "1"),),
                       seccomp=True, host=HOST)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def argv_of(spec: SandboxSpec, **launch: object) -> list[str]:
    return render(spec, Launch(**{"fds": FDS, "bwrap": "/usr/bin/bwrap", **launch}))  # type: ignore[arg-type]


def expected_options(mount: Mount) -> list[str]:
    """What bubblewrap's manual says each mount step is written as (independently of the renderer)."""
    if mount.op == "data":
        return ["--ro-bind-data", str(FDS[mount.source]), mount.target]
    if mount.op == "tmpfs":
        return ["--size", str(mount.size), *(["--perms", mount.perms] if mount.perms else []), "--tmpfs",
                mount.target]
    if mount.op in ("proc", "dev", "remount-ro"):
        return [f"--{mount.op}", mount.target]
    return [f"--{mount.op}", mount.source, mount.target]


def position(argv: list[str], part: list[str], start: int = 0) -> int:
    for i in range(start, len(argv) - len(part) + 1):
        if argv[i:i + len(part)] == part:
            return i
    raise AssertionError(f"{part} is not in the argv after position {start}: {argv}")


def bwrap_part(argv: list[str]) -> list[str]:
    return argv[argv.index("/usr/bin/bwrap"):]


def test_every_declared_mount_is_rendered_in_its_order():
    spec = declare(pool())
    argv = bwrap_part(argv_of(spec))
    at = 0
    for mount in spec.mounts:
        at = position(argv, expected_options(mount), at) + 1
    targets = {m.target for m in spec.mounts}
    assert {"/tmp", "/mnt/data", "/dev/shm", "/proc", "/opt/remote_kernel/python_worker.py", "/opt/py"} <= targets
    assert "/usr/lib/python3" not in targets  # under /usr, mounted already
    assert argv[position(argv, ["--tmpfs", "/tmp"]) - 1] == str(LIMITS.disk)
    assert argv[position(argv, ["--tmpfs", "/dev/shm"]) - 3] == str(LIMITS.shm)


def test_limits_namespaces_identity_filter_and_environment_are_rendered():
    spec = declare(pool())
    argv = argv_of(spec)
    script = argv[2]
    assert f"ulimit -f {LIMITS.disk // 512};" in script and "ulimit -c 0;" in script and "ulimit -n 1024;" in script
    assert f"ulimit -v {LIMITS.address_space // 1024};" in script
    assert f"nice -n {NICE} " in script
    bwrap = bwrap_part(argv)
    for flag in ("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in bwrap, flag
    position(bwrap, ["--cap-drop", "ALL"])
    position(bwrap, ["--uid", "65534", "--gid", "65534"])
    position(bwrap, ["--seccomp", "12"])
    position(bwrap, ["--json-status-fd", "14"])
    for key, value in spec.environment:
        position(bwrap, ["--setenv", key, value])
    assert dict(spec.environment)["EXTRA"] == "1" and dict(spec.environment)["LOKY_MAX_CPU_COUNT"] == "2"
    assert bwrap[bwrap.index("--") + 1:] == ["/opt/py/bin/python", "-I", "/opt/remote_kernel/python_worker.py"]


def test_a_change_to_the_spec_shows_in_the_argv():
    spec = declare(pool())
    changed = dataclasses.replace(
        spec, mounts=(*spec.mounts, Mount("tmpfs", "/scratch", size=4096)), uid=1234, seccomp=False,
        namespaces=spec.namespaces - {"ipc"}, rlimits=dataclasses.replace(spec.rlimits, nofile=99), nice=None,
        environment=(*spec.environment, ("ADDED", "yes")))
    argv = argv_of(changed)
    bwrap = bwrap_part(argv)
    position(bwrap, ["--size", "4096", "--tmpfs", "/scratch"])
    position(bwrap, ["--uid", "1234"])
    position(bwrap, ["--setenv", "ADDED", "yes"])
    assert "--seccomp" not in bwrap and "--unshare-ipc" not in bwrap
    assert "ulimit -n 99;" in argv[2] and "nice" not in argv[2]
    with pytest.raises(ValueError, match="namespaces"):
        argv_of(dataclasses.replace(spec, namespaces=spec.namespaces - {"user"}))


def test_a_cpu_cgroup_replaces_nice_and_cgroups_are_joined_first():
    spec = declare(pool(), cpu_cgroup=True)
    argv = argv_of(spec, cgroup_procs=("/cg/a/cgroup.procs", "/cg/b/cgroup.procs"))
    assert spec.nice is None and "nice" not in argv[2]
    assert argv[2].startswith('echo $$ > "$1" || exit 97; echo $$ > "$2" || exit 97;')
    assert argv[4:6] == ["/cg/a/cgroup.procs", "/cg/b/cgroup.procs"]


def test_a_network_keeps_the_namespace_it_is_started_in_and_shows_the_sessions_hosts_file():
    spec = declare(pool(egress=True), hosts_file=True)
    assert spec.network == "session" and "net" not in spec.namespaces
    argv = argv_of(spec, netns="/run/netns/s1")
    assert argv[argv.index("nsenter"):argv.index("nsenter") + 3] == ["nsenter", "--net=/run/netns/s1", "--"]
    bwrap = bwrap_part(argv)
    assert "--unshare-net" not in bwrap
    position(bwrap, ["--ro-bind-data", "13", "/etc/hosts"])
    position(bwrap, ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"])
    assert ["--ro-bind", "/etc/hosts", "/etc/hosts"] not in [bwrap[i:i + 3] for i in range(len(bwrap))]
    assert declare(pool()).mounts == tuple(m for m in declare(pool()).mounts if "resolv" not in m.target)
    assert declare(pool(egress=True, shared_network=True)).network == "host"


def test_a_root_pools_session_is_staged_capped_and_dropped_to_its_own_uid():
    spec = declare(pool(session_uids=True), host_uid=1_000_000_007)
    assert spec.staged == ("/opt/py",) and spec.nproc == LIMITS.processes and not spec.nproc_inside
    argv = argv_of(spec)
    staging = argv[argv.index("unshare"):argv.index("prlimit")]
    assert f"mount --bind -o ro \"$1\" {STAGE}/0" in " ".join(staging) and staging[-1] == "/opt/py"
    position(argv, ["prlimit", "--nproc=77:77", "--", "setpriv", "--reuid=1000000007", "--regid=1000000007"])
    position(bwrap_part(argv), ["--ro-bind", f"{STAGE}/0", "/opt/py"])


def test_a_non_root_pool_counts_processes_in_the_sessions_user_namespace():
    spec = declare(pool(nproc_inside=True))
    bwrap = bwrap_part(argv_of(spec))
    position(bwrap, ["--", "/usr/bin/prlimit", "--nproc=77:77", "--", "/opt/py/bin/python"])
    assert "setpriv" not in argv_of(spec)


def test_unsandboxed_runs_the_worker_after_the_prelude_with_its_own_home():
    spec = declare(pool(mode="none", worker_file="/checkout/python_worker.py"), home="/data/s1")
    argv = argv_of(spec)
    assert argv[:2] == ["/bin/sh", "-c"] and "/usr/bin/bwrap" not in argv
    assert argv[argv.index("sh") + 1:] == ["/opt/py/bin/python", "-I", "/checkout/python_worker.py"]
    assert spec.env["HOME"] == "/data/s1" and f"nice -n {NICE} " in argv[2]
    assert "ulimit -v" in argv[2] and "ulimit -v" not in argv_of(declare(pool(mode="none", address_space=False)))[2]
