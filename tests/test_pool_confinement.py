"""Issue 15: what a bubblewrap session is confined to beyond its namespaces — every writable place
within the disk limit, a seccomp filter, a CPU quota, no host paths in its mount table."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import POOL_MODES, ROOT, bubblewrap_usable, code_value, execute_code, start_pool, start_pool_in

usable, why = bubblewrap_usable()
pytestmark = pytest.mark.skipif(not usable, reason=why)

DISK = 64 << 20
CPUS = 0.5


@pytest.fixture(scope="module")
def confined():
    pool = start_pool("--disk", str(DISK), "--memory", "768M", "--cpus", str(CPUS), "--ready-sessions", "1")
    yield pool
    pool.stop()


HTTP_POOL = "confined"  # the pool the `http` fixture (conftest.py) is a client of


def run(http, identifier: str, code: str) -> dict:
    return execute_code(http, identifier, code, 120)


def value(http, identifier: str, code: str):
    return code_value(http, identifier, code, 120)


def test_every_writable_place_is_within_the_disk_limit_or_not_writable(http):
    # every mount the session can write to, from its own mount table, gets three 50 MiB files
    written = value(http, str(uuid.uuid4()), """
import os
places = {}
for line in open('/proc/self/mountinfo'):
    fields = line.split()
    point, options, kind = fields[4], fields[5].split(','), fields[fields.index('-') + 1]
    if kind in ('proc', 'devpts', 'devtmpfs') or 'ro' in options or not os.path.isdir(point):
        continue  # /proc files and device nodes hold no data; a read-only mount takes none
    places[point] = 0
for place in list(places) + ['/dev', '/', '/mnt', '/opt', '/var/tmp']:
    total = 0
    for n in range(3):
        path = os.path.join(place, f'fill-{n}')
        try:
            with open(path, 'wb') as f:
                for _ in range(50):
                    f.write(b'x' * (1 << 20))
                    total += 1 << 20
        except OSError:
            pass
    for n in range(3):
        try:
            os.unlink(os.path.join(place, f'fill-{n}'))
        except OSError:
            pass
    places[place] = total
places
""")
    assert set(k for k, v in written.items() if v) <= {"/tmp", "/mnt/data", "/dev/shm"}, written
    for place, total in written.items():
        assert total <= DISK, (place, total)
    assert written["/dev"] == 0 and written["/dev/shm"] <= DISK // 4, written


SYSCALLS = """
import ctypes, errno, os, socket, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *args):
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return errno.errorcode.get(ctypes.get_errno(), 'ok') if result == -1 else 'ok'
child = subprocess.Popen(['sleep', '30'])
with open('/dev/null', 'rb') as null:
    out = {
        # x86_64 numbers
        'clone3': call(435, 0, 0), 'fsopen': call(430, b'tmpfs', 0), 'open_tree': call(428, -100, b'/', 0),
        'move_mount': call(429, -100, b'/', -100, b'/tmp', 0), 'fsmount': call(432, -1, 0, 0),
        'mount_setattr': call(442, -100, b'/', 0, 0, 0),
        'unshare': call(272, 0x40000000), 'setns': call(308, 3, 0), 'chroot': call(161, b'/'),
        'clone_newuser': call(56, 0x10000000 | 17, 0, 0, 0, 0), 'clone_newpid': call(56, 0x20000000 | 17, 0, 0, 0, 0),
        'ptrace_attach': call(101, 16, child.pid, 0, 0), 'keyctl': call(250, 0, -3, 0),
        'add_key': call(248, b'user', b'k', b'v', 1, -3), 'bpf': call(321, 0, 0, 0),
        'perf_event_open': call(298, 0, 0, -1, -1, 0), 'userfaultfd': call(323, 0),
        'tiocsti': call(16, null.fileno(), 0x5412, ctypes.c_char_p(b'x')),
        'tiocsti_high_bits': call(16, null.fileno(), 0x5412 | (1 << 32), ctypes.c_char_p(b'x')),
        'tioclinux': call(16, null.fileno(), 0x541C, 0), 'personality': call(135, 0x0040000),
    }
child.kill(); child.wait()
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    out['af_packet'] = 'ok'
except OSError as error:
    out['af_packet'] = errno.errorcode[error.errno]
out['seccomp_mode'] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]
out
"""
EXPECTED = {
    "clone3": "ENOSYS", "fsopen": "ENOSYS", "open_tree": "ENOSYS", "move_mount": "ENOSYS", "fsmount": "ENOSYS",
    "mount_setattr": "ENOSYS", "unshare": "EPERM", "setns": "EPERM", "chroot": "EPERM", "clone_newuser": "EPERM",
    "clone_newpid": "EPERM", "ptrace_attach": "EPERM", "keyctl": "EPERM", "add_key": "EPERM", "bpf": "EPERM",
    "perf_event_open": "EPERM", "userfaultfd": "EPERM", "tiocsti": "EPERM", "tiocsti_high_bits": "EPERM",
    "tioclinux": "EPERM", "personality": "EINVAL", "af_packet": "EAFNOSUPPORT", "seccomp_mode": "2",
}


def test_the_seccomp_filter_blocks_what_flatpak_blocks(http):
    assert value(http, str(uuid.uuid4()), SYSCALLS) == EXPECTED


def test_sessions_work_normally_under_the_filter(http):
    seen = value(http, str(uuid.uuid4()), r"""
import json, multiprocessing, os, subprocess, sys, threading, zipfile
import numpy, matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
out = {}
out['numpy'] = float(numpy.linalg.solve(numpy.eye(50) * 2, numpy.ones(50)).sum())
fig, ax = plt.subplots(); ax.plot([1, 2, 3]); fig.savefig('/tmp/plot.png'); plt.close(fig)
out['matplotlib'] = os.path.getsize('/tmp/plot.png') > 1000
out['subprocess'] = subprocess.run(['sh', '-c', 'echo $((6 * 7))'], capture_output=True, text=True).stdout.strip()
results = []
threads = [threading.Thread(target=lambda n=n: results.append(n * n)) for n in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
out['threads'] = sorted(results)
with multiprocessing.get_context('fork').Pool(2) as workers:
    out['multiprocessing'] = workers.map(abs, [-1, -2, -3])
# pip's resolver, offline: a wheel made here, and one that depends on it
os.makedirs('/mnt/data/wheels', exist_ok=True)
def wheel(name, requires=()):
    path = f'/mnt/data/wheels/{name}-1.0-py3-none-any.whl'
    meta = f'Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n' + ''.join(f'Requires-Dist: {r}\n' for r in requires)
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr(f'{name}/__init__.py', 'x = 1\n')
        z.writestr(f'{name}-1.0.dist-info/METADATA', meta)
        z.writestr(f'{name}-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
        z.writestr(f'{name}-1.0.dist-info/RECORD', '')
wheel('rkbase'); wheel('rktop', ['rkbase>=1'])
pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--find-links',
                      '/mnt/data/wheels', '--report', '/tmp/report.json', '--quiet', 'rktop'],
                     capture_output=True, text=True)
out['pip'] = sorted(item['metadata']['name'] for item in json.load(open('/tmp/report.json'))['install']) \
    if pip.returncode == 0 else pip.stderr[-500:]
out
""")
    assert seen == {"numpy": 25.0, "matplotlib": True, "subprocess": "42", "threads": [n * n for n in range(8)],
                    "multiprocessing": [1, 2, 3], "pip": ["rkbase", "rktop"]}


def test_a_session_gets_no_more_cpu_than_its_quota(http):
    # two busy processes for 3 s of wall time: without a quota they could take both cores (2.0)
    used = value(http, str(uuid.uuid4()), """
import resource, subprocess, sys, time
spinners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(2)]
start = time.monotonic()
time.sleep(3)
for p in spinners:
    p.kill(); p.wait()
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
(usage.ru_utime + usage.ru_stime) / wall
""")
    assert used <= CPUS * 1.4, f"the session used {used:.2f} cores with a quota of {CPUS}"


def test_cpu_quota_is_written_for_each_session(confined, http):
    identifier = str(uuid.uuid4())
    guid = run(http, identifier, "1")["id"] and http.get(
        "/session", params={"api-version": "2025-10-02-preview", "identifier": identifier}).json()["etag"]
    quotas = [p.read_text().strip() for p in Path("/sys/fs/cgroup/cpu/remote_kernel").glob(f"pool-*/{guid}/cpu.cfs_quota_us")]
    quotas += [p.read_text().split()[0] for p in Path("/sys/fs/cgroup/remote_kernel").glob(f"pool-*/{guid}/cpu.max")]
    v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if not quotas and not (v1.exists() or v2.exists() and "cpu" in v2.read_text().split()):
        pytest.skip("no cpu cgroup controller on this machine")
    assert quotas == [str(int(CPUS * 100_000))]


def test_the_mount_table_shows_no_host_path_of_the_checkout_or_the_data(confined, http):
    table = value(http, str(uuid.uuid4()), "open('/proc/self/mountinfo').read()")
    interpreter = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    # the sessions' interpreter is mounted read-only where it is, even inside the checkout (a .venv there)
    table = "\n".join(line for line in table.splitlines() if line.split()[4] not in interpreter)
    assert table.count("\n") > 3
    assert str(ROOT) not in table
    assert str(confined.data_root) not in table


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            kids = []
        found += kids
        todo += kids
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="sessions run under their own uids only when the pool is root")
def test_the_process_limit_holds_without_cgroups():
    limit = 40
    pool = start_pool("--max-processes", str(limit), "--ready-sessions", "0", env={"REMOTE_KERNEL_NO_CGROUPS": "1"})
    try:
        if "only cgroups bound their processes" in pool.log():
            pytest.skip("bubblewrap cannot run under an unprivileged uid here: " + pool.log()[-300:])
        with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
            identifier = str(uuid.uuid4())
            seen = value(client, identifier, """
import os, resource, threading, time
stop = threading.Event()
threads = []
try:
    for _ in range(1000):
        t = threading.Thread(target=stop.wait)
        t.start()
        threads.append(t)
except RuntimeError:
    pass
started = len(threads)
children = []
for _ in range(1000):  # and processes: a fork bomb in small
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
forked = len(children)
for pid in children:
    os.kill(pid, 9); os.waitpid(pid, 0)
stop.set()
[t.join() for t in threads]
{"nproc": list(resource.getrlimit(resource.RLIMIT_NPROC)), "threads": started, "forked": forked}
""")
            uids = set()
            for pid in descendants(pool.process.pid):
                try:
                    uids.add(int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]))
                except (OSError, IndexError):
                    pass
            assert value(client, str(uuid.uuid4()), "6 * 7") == 42  # the pool serves others
    finally:
        pool.stop()
    assert seen["nproc"] == [limit, limit]
    assert seen["threads"] < limit and seen["forked"] < limit, seen
    assert uids and 0 not in uids, uids  # every session process runs under an unprivileged host uid


# io_uring runs its operations in the kernel, past the filter (IORING_OP_SOCKET made an AF_VSOCK socket);
# pidfd_getfd takes another process's descriptor without ptrace. Numbers 425-440 are the same on every
# architecture but alpha; the session checks it runs on one of the two this table knows.
AROUND_THE_FILTER = """
import ctypes, errno, os, platform, socket
assert platform.machine() in ('x86_64', 'aarch64'), platform.machine()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return errno.errorcode.get(ctypes.get_errno(), 'ok') if result == -1 else 'ok'
params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
pidfd = os.pidfd_open(os.getpid())
out = {
    'io_uring_setup': call(425, 8, params), 'io_uring_enter': call(426, -1, 1, 0, 0, 0, 0),
    'io_uring_register': call(427, -1, 0, 0, 0), 'pidfd_getfd': call(438, pidfd, 0, 0),
    'process_madvise': call(440, pidfd, 0, 0, 0, 0),
}
# the family with bit 32 set: the kernel reads it as an int, so a filter must compare the low 32 bits
SOCKET, SOCKETPAIR = {'x86_64': (41, 53), 'aarch64': (198, 199)}[platform.machine()]
pair = (ctypes.c_int * 2)()
out['socket_vsock_high_bits'] = call(SOCKET, (1 << 32) | 40, socket.SOCK_STREAM, 0)
out['socketpair_vsock_high_bits'] = call(SOCKETPAIR, (1 << 32) | 40, socket.SOCK_STREAM, 0, pair)
for name, family in (('vsock', 40), ('packet', socket.AF_PACKET), ('bluetooth', 31), ('alg', 38)):
    for kind, make in (('socket', socket.socket), ('socketpair', socket.socketpair)):
        try:
            make(family, socket.SOCK_STREAM).close() if kind == 'socket' else [s.close() for s in make(family)]
            out[f'{kind}_{name}'] = 'ok'
        except OSError as error:
            out[f'{kind}_{name}'] = errno.errorcode[error.errno]
out
"""
REFUSED = {"io_uring_setup": "ENOSYS", "io_uring_enter": "ENOSYS", "io_uring_register": "ENOSYS",
           "pidfd_getfd": "EPERM", "process_madvise": "EPERM", "socket_vsock_high_bits": "EAFNOSUPPORT",
           "socketpair_vsock_high_bits": "EAFNOSUPPORT",
           **{f"{kind}_{name}": "EAFNOSUPPORT" for kind in ("socket", "socketpair")
              for name in ("vsock", "packet", "bluetooth", "alg")}}


@pytest.mark.parametrize("mode", POOL_MODES)
def test_io_uring_and_other_ways_around_the_filter_are_refused_in_every_mode(mode):
    with start_pool_in(mode, "--ready-sessions", "0") as pool, \
            httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
        assert value(client, str(uuid.uuid4()), AROUND_THE_FILTER) == REFUSED


def test_sessions_never_weigh_more_than_a_host_task_for_the_cpu(confined, http):
    identifier = str(uuid.uuid4())
    nice = value(http, identifier, "import os; os.nice(0)")
    guid = http.get("/session", params={"api-version": "2025-10-02-preview", "identifier": identifier}).json()["etag"]
    weights = {}
    for root, name, default in ((Path("/sys/fs/cgroup/cpu"), "cpu.shares", 1024),
                                (Path("/sys/fs/cgroup"), "cpu.weight", 100)):
        for session in root.glob(f"remote_kernel/pool-{confined.pid}/{guid}"):
            for level in (session, session.parent, session.parent.parent):  # the session, its pool, all pools
                if (level / name).exists():
                    weights[str(level.relative_to(root))] = (int((level / name).read_text()), default)
    if not weights:
        pytest.skip("no cpu cgroup controller on this machine")
    assert len(weights) == 3, weights
    assert all(weight <= default for weight, default in weights.values()), weights
    assert nice >= 0


@pytest.mark.parametrize("mode", ["no-cgroups", "non-root"])
def test_without_a_cpu_cgroup_sessions_run_below_the_hosts_tasks(mode):
    with start_pool_in(mode, "--ready-sessions", "0") as pool, \
            httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
        seen = value(client, str(uuid.uuid4()), """
import os, subprocess
{'worker': os.nice(0), 'child': int(subprocess.run(['sh', '-c', 'nice'], capture_output=True, text=True).stdout)}
""")
        unenforced = client.get("/health").json()["unenforcedLimits"]
    assert seen == {"worker": 10, "child": 10}, seen
    assert "cpus" in unenforced and "nice 10" in unenforced["cpus"], unenforced
