"""The seccomp filter every bubblewrap session runs under, built once per pool with libseccomp.

Why this way: libseccomp is the maintained library that turns rules into a BPF program for the
machine's architecture (flatpak, podman and systemd use it); writing BPF by hand would be ours to get
right per architecture. Its Python bindings come in two forms: the official ones (`seccomp`, Debian's
python3-seccomp, built for the system python only) and `pyseccomp` (PyPI, the same API over the
system's libseccomp.so.2 through ctypes, so it works in any python ≥ 3.10 and any virtual
environment). The pool uses whichever imports, builds the program once, and hands each session's
bubblewrap a copy through `--seccomp FD`; the filter is loaded just before the worker starts.

What it blocks is flatpak's list after CVE-2021-41133, plus a few that a session never needs:
- the new mount API (open_tree, open_tree_attr, move_mount, fsopen, fsconfig, fsmount, fspick,
  mount_setattr) and clone3: ENOSYS, so that glibc falls back to clone, whose flags a filter can read;
- io_uring (io_uring_setup, io_uring_enter, io_uring_register): ENOSYS. Its operations run in the
  kernel without passing through this filter: IORING_OP_SOCKET made an AF_VSOCK socket the socket rule
  below refuses. libuv (Node.js) and liburing users fall back to ordinary calls on ENOSYS;
- socketcall, the multiplexed socket entry of 32-bit ABIs whose arguments a filter cannot read:
  ENOSYS (x86_64 and aarch64 have none; on 32-bit x86 or s390 only the direct socket calls, which
  the rules read, work);
- clone with any namespace flag, unshare, setns, mount, umount, pivot_root, chroot: EPERM;
- ptrace and process_vm_readv/writev, pidfd_getfd, process_madvise, perf_event_open, bpf,
  userfaultfd, keyctl, add_key, request_key, kexec, module loading, swapon/off, reboot, acct,
  quotactl, syslog, uselib, the NUMA page-moving calls (move_pages, migrate_pages, mbind,
  set_mempolicy, get_mempolicy), modify_ldt: EPERM; personality other than PER_LINUX: EINVAL;
- ioctl TIOCSTI (typing into the terminal) and TIOCLINUX, compared on the low 32 bits of the command
  (the kernel reads it as an int, so a command with high bits set must not slip through);
- sockets of families other than AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK: EAFNOSUPPORT (socketpair:
  AF_UNIX only), compared on the low 32 bits too (the kernel reads the family as an int: AF_VSOCK with
  bit 32 set passed a comparison of the whole register).
Where no memory cgroup counts a session's memory (`uncounted_memory=False`), memfd_create,
memfd_secret and shmget are refused too (ENOSYS; callers fall back to files in /dev/shm, which the
tmpfs's size bounds): their pages are in no file system and count against no rlimit.
System calls of another ABI (32-bit x86 on x86_64, x32) kill the process (libseccomp's default for a
foreign architecture), so the rules cannot be bypassed through `int 0x80`.
"""
from __future__ import annotations

import errno
import logging
import socket
import tempfile
from types import ModuleType

log = logging.getLogger("remote_kernel.pool")

CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (NEWTIME is clone3/unshare only)
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
ENOSYS_CALLS = ("clone3", "open_tree", "open_tree_attr", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
                "mount_setattr", "io_uring_setup", "io_uring_enter", "io_uring_register", "socketcall")
EPERM_CALLS = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "process_madvise", "perf_event_open",
    "bpf", "userfaultfd",
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "syslog", "uselib",
    "move_pages", "migrate_pages", "mbind", "set_mempolicy", "get_mempolicy", "modify_ldt", "lookup_dcookie",
    "vhangup", "nfsservctl", "open_by_handle_at", "name_to_handle_at", "fanotify_init",
)
UNCOUNTED_MEMORY_CALLS = ("memfd_create", "memfd_secret", "shmget")
#: calls newer than some libseccomp releases know, by number (the same on every architecture but alpha)
NUMBERS = {"open_tree_attr": 467}
ALLOWED_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)


class SeccompUnavailable(RuntimeError):
    """Neither binding of libseccomp can be loaded here."""


def bindings() -> ModuleType:
    """libseccomp's official Python bindings if this interpreter has them, else pyseccomp."""
    problems = []
    for name in ("seccomp", "pyseccomp"):
        try:
            return __import__(name)
        except (ImportError, OSError, AttributeError) as error:  # pyseccomp raises when libseccomp.so.2 is absent
            problems.append(f"{name}: {error}")
    raise SeccompUnavailable("no libseccomp bindings could be loaded (" + "; ".join(problems) +
                             "); install pyseccomp (pip) and libseccomp2 (apt-get install libseccomp2)")


def build(uncounted_memory: bool = True) -> bytes:
    """The filter as a BPF program for this machine (what `bwrap --seccomp FD` reads); with
    `uncounted_memory` False, it also refuses the calls that make memory nothing else bounds."""
    sc = bindings()
    rules = sc.SyscallFilter(sc.ALLOW)
    eperm, enosys = sc.ERRNO(errno.EPERM), sc.ERRNO(errno.ENOSYS)

    def add(action: int, call: str, *args: object) -> None:
        for name in (call, NUMBERS.get(call)):
            if name is None:
                break
            try:
                rules.add_rule(action, name, *args)
                return
            except (RuntimeError, ValueError, OSError) as error:  # a call this kernel or libseccomp does not know
                log.debug("seccomp: %s not filtered: %s", name, error)

    for call in ENOSYS_CALLS:
        add(enosys, call)
    for call in () if uncounted_memory else UNCOUNTED_MEMORY_CALLS:
        add(enosys, call)
    for call in EPERM_CALLS:
        add(eperm, call)
    for flag in CLONE_NAMESPACE_FLAGS:
        add(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for command in (TIOCSTI, TIOCLINUX):
        add(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, command))
    for family in range(0, 64):
        if family not in ALLOWED_FAMILIES:
            add(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, family))
        if family != socket.AF_UNIX:
            add(sc.ERRNO(errno.EAFNOSUPPORT), "socketpair", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, family))
    add(sc.ERRNO(errno.EINVAL), "personality", sc.Arg(0, sc.NE, 0))  # PER_LINUX only, as flatpak
    with tempfile.TemporaryFile() as sink:
        rules.export_bpf(sink)
        sink.seek(0)
        return sink.read()
