"""A started sandbox as bubblewrap reports it (`--json-status-fd`): pool/sandbox.SandboxProcess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from remote_kernel.pool.sandbox import SandboxProcess


def status_line(pid: int) -> bytes:
    """bubblewrap's first status line, as it writes it (one line: the pid, then the namespaces' ids)."""
    return f'{{ "child-pid": {pid}, "ipc-namespace": 4026532300, "net-namespace": 4026532302 }}\n'.encode()


def test_the_sandbox_is_the_launchers_child_named_on_the_status_line_and_is_gone_when_it_ends():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sandbox = SandboxProcess.of_status(status_line(child.pid), os.getpid())
        assert sandbox is not None and sandbox.pid == child.pid and sandbox.alive
        child.kill()
        child.wait()
        assert not sandbox.alive  # held by a pidfd: even if the pid is given again, it is not this sandbox
        sandbox.close()
    finally:
        child.kill()
        child.wait()


def test_a_pid_that_is_not_the_launchers_child_or_a_line_that_is_not_bubblewraps_is_refused():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert SandboxProcess.of_status(status_line(child.pid), os.getppid()) is None  # another launcher's pid
        assert SandboxProcess.of_status(status_line(os.getpid()), os.getpid()) is None  # not a child at all
        for line in (b"", b"garbage\n", json.dumps({"child-pid": "1"}).encode(), b"[1]\n",
                     json.dumps({"child-pid": -1}).encode(), json.dumps({"exit-code": 0}).encode()):
            assert SandboxProcess.of_status(line, os.getpid()) is None, line
    finally:
        child.kill()
        child.wait()


def test_a_closed_sandbox_is_not_alive():
    sandbox = SandboxProcess(os.getpid(), os.pidfd_open(os.getpid()))
    assert sandbox.alive
    sandbox.close()
    assert not sandbox.alive and sandbox.pidfd is None
    unsandboxed = SandboxProcess(os.getpid())
    assert unsandboxed.alive
    unsandboxed.close()
    assert not unsandboxed.alive
