"""The embedded default: a `remote-kernel pool` child for a kernel that has no endpoint.

It starts in parallel with the kernel (nothing waits for it until the first cell), listens on
a Unix socket in a folder of its own that only this user can enter (no TCP port, so no other
local user can even try the token; a free loopback port where a socket path would be too long),
and knows a random token given in its environment (never on argv). It
stops with the kernel: on shutdown, at exit, and, when the kernel is killed, by itself (it
watches its parent pid).
"""
from __future__ import annotations

import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from remote_kernel.settings import pool_argv

log = logging.getLogger(__name__)

ENDPOINT_LINE = "export POOL_MANAGEMENT_ENDPOINT="
MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 on Linux
#: what the pool needs of the kernel's environment (where programs and its Python live, locale,
#: temp folder, its own REMOTE_KERNEL_* settings); nothing else, so no cloud secret reaches it
POOL_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "PYTHONPATH",
            "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "SYSTEMROOT", "XDG_RUNTIME_DIR")
POOL_ENV_PREFIXES = ("LC_", "REMOTE_KERNEL_")


def pool_environment(env: Mapping[str, str], token: str) -> dict[str, str]:
    """The embedded pool's environment: the names it needs from `env`, and its token."""
    kept = {name: value for name, value in env.items()
            if name in POOL_ENV or (name.startswith(POOL_ENV_PREFIXES) and name != "REMOTE_KERNEL_TOKEN")}
    return {**kept, "REMOTE_KERNEL_TOKEN": token}


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    """`process.wait(timeout)`, woken the moment the process exits: Popen's own wait with a timeout polls
    with sleeps that double up to 50 ms, which on a kernel's shutdown overshot the pool's exit by half of
    its time. A pidfd (Linux 5.3) becomes readable when the process exits; elsewhere, Popen's wait."""
    if process.poll() is not None:
        return process.returncode  # reaped: its pid may already be another process's
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or already reaped
        return process.wait(timeout)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(process.args, timeout)
    finally:
        os.close(pidfd)
    return process.wait(1)  # it has exited: this reaps it


class EmbeddedPoolError(RuntimeError):
    """The embedded pool could not start; the message says why and what to do instead."""


class EmbeddedPool:
    """A local session pool, run as a child process of the kernel."""

    def __init__(self, container_type: str = "PythonLTS", *, ready_sessions: int = 1,
                 cooldown: float = 3600, python: str | None = None, options: list[str] | tuple[str, ...] = ()) -> None:
        self.container_type = container_type
        self.options = list(options)  # more `remote-kernel pool` options: the kernel's settings for its sessions
        self.ready_sessions = ready_sessions
        # the pool lives only as long as its kernel: idle expiry would only lose the user's state
        self.cooldown = cooldown
        self.python = python or sys.executable
        self.token = secrets.token_urlsafe(32)
        self.endpoint: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._failure: str | None = None
        self._stop_requested: float | None = None  # when SIGTERM was sent (time.monotonic)
        self._log_fd: int | None = None  # the pool's stderr: a file already unlinked, so no kill leaves it behind
        self._folder: Path | None = Path(tempfile.mkdtemp(prefix="remote-kernel-"))  # mode 0700: this user only
        self.socket: Path | None = self._folder / "pool.sock"
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:  # a long TMPDIR: loopback TCP, and no folder to leave
            self._folder.rmdir()
            self._folder = self.socket = None

    @property
    def argv(self) -> list[str]:
        """The pool's command line: its own settings (rows of `remote_kernel.settings`), then the kernel's."""
        where: dict[str, object] = {"socket": str(self.socket)} if self.socket else {"port": 0, "host": "127.0.0.1"}
        return [self.python, "-m", "remote_kernel", "pool", *pool_argv({
            **where, "ready_sessions": self.ready_sessions, "cooldown": self.cooldown,
            "container_type": self.container_type, "parent_pid": os.getpid(),
            # no MCP server: its key would be the token only this kernel knows, so no MCP client could use it
            "mcp": "off"}), *self.options]

    def start(self) -> None:
        """Start the child and return at once; a thread reads its endpoint when it is listening."""
        fd, name = tempfile.mkstemp(prefix="remote-kernel-pool-", suffix=".log")
        os.unlink(name)
        self._log_fd = fd
        env = pool_environment(os.environ, self.token)
        try:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fd, env=env,
                # its own process group: a signal meant for the kernel's group (an interrupt, a kill by the
                # kernel manager) does not reach it; it cleans up by itself when the kernel is gone
                start_new_session=True,
            )
        except OSError as exc:
            self._failure = f"could not run {self.python}: {exc}"
            self._ready.set()
            return
        threading.Thread(target=self._read_stdout, name="embedded-pool-stdout", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if self.endpoint is None and line.startswith(ENDPOINT_LINE):
                self.endpoint = line[len(ENDPOINT_LINE):].strip()
                self._ready.set()
        self._ready.set()  # end of output: the pool exited (wait_ready reports it)

    def exit_code(self, wait: float = 0) -> int | None:
        """The pool's exit code once it has exited (waiting up to `wait` seconds), else None.

        A pool killed outright closes its sockets a moment before it can be reaped: a client that
        just saw its connection refused waits that moment rather than mistake it for a live pool.
        """
        if self.process is None:
            return None
        try:
            return self.process.wait(wait) if wait > 0 else self.process.poll()
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 15) -> str:
        if self._log_fd is None:
            return ""
        try:
            size = os.fstat(self._log_fd).st_size
            start = max(0, size - (64 << 10))
            text = os.pread(self._log_fd, size - start, start).decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    async def wait_ready(self, timeout: float = 60) -> str:
        """The pool's endpoint once it listens; `EmbeddedPoolError` if it cannot start."""
        if not self._ready.is_set():
            import asyncio  # here: `__main__` starts the pool before anything imports asyncio (~50 ms)

            await asyncio.to_thread(self._ready.wait, timeout)
        if self.endpoint:
            return self.endpoint
        failure = self._failure
        if failure is None:
            if self.process is not None and self.process.poll() is None:
                failure = f"it did not report its endpoint within {timeout:g} s"
            else:
                code = self.process.returncode if self.process else None
                failure = f"it exited with code {code}"
        tail = self.log_tail()
        raise EmbeddedPoolError(
            f"The embedded local session pool did not start: {failure}."
            + (f"\n{tail}" if tail else "")
            + "\nSet POOL_MANAGEMENT_ENDPOINT to use another pool, or run `remote-kernel pool` yourself to see why.")

    def request_stop(self) -> None:
        """Ask the pool to stop (SIGTERM: it deletes every session) without waiting: it stops while the
        kernel finishes its own shutdown, and `stop` then waits for what is left of its timeout."""
        process = self.process
        if process is not None and process.poll() is None and self._stop_requested is None:
            try:
                process.send_signal(signal.SIGTERM)
            except OSError:
                return
            self._stop_requested = time.monotonic()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the pool (it deletes every session on SIGTERM); kill it if it has not stopped `timeout`
        seconds after it was asked to."""
        process = self.process
        if process is not None and process.poll() is None:
            self.request_stop()
            asked = self._stop_requested if self._stop_requested is not None else time.monotonic()
            try:
                wait_exit(process, max(0.0, asked + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("embedded pool did not stop within %.1f s; killing it", timeout)
                process.kill()
                try:
                    process.wait(1)
                except subprocess.TimeoutExpired:
                    pass
            except OSError:
                pass
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
