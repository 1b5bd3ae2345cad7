"""The Shell session worker: runs each command of a hosted-style Shell session, inside the sandbox.

It speaks the protocol in PROTOCOL.md (commands on fd 3, replies on fd 4). The `code` of an execute
command is a JSON object: {"shellCommand": "…"} (run by bash -c) or {"execCommandAndArgs": [argv…]}
(run directly), with an optional "stdin" text. The reply's `result` is the exit code (128 + N for
a command killed by signal N, as bash reports it). Each command is a new process: files in
/mnt/data persist between commands, shell variables and `cd` do not (as in hosted Shell pools,
whose commands are independent executions). Imports nothing from remote_kernel.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

MAX_OUTPUT = int(os.environ.get("REMOTE_KERNEL_MAX_OUTPUT", str(1 << 20)))
BASH = "/bin/bash"
LINGER = 1.0  # seconds to wait for output still held open by a command's background processes


class Capture:
    """Reads one pipe to its end in a thread, keeping at most MAX_OUTPUT bytes and counting the rest."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.data = bytearray()
        self.dropped = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self.pipe.fileno(), 65536):
                room = MAX_OUTPUT - len(self.data)
                self.data += chunk[:max(room, 0)]
                self.dropped += max(len(chunk) - max(room, 0), 0)
        except OSError:
            pass

    def text(self) -> str:
        self.thread.join(LINGER)
        text = bytes(self.data).decode("utf-8", "replace")
        if self.dropped:
            text += f"\n[output truncated: {self.dropped} more bytes]\n"
        return text


class Worker:
    """Runs one command at a time; SIGINT kills the running command's process group."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.interrupted = False
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            self.interrupted = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def execute(self, code: str) -> dict:
        try:
            request = json.loads(code)
        except ValueError:
            request = {"shellCommand": code}
        if not isinstance(request, dict):
            request = {"shellCommand": str(request)}
        argv = request.get("execCommandAndArgs") or [BASH, "-c", str(request.get("shellCommand") or "")]
        stdin = request.get("stdin")
        started = time.perf_counter()
        self.interrupted = False
        try:
            self.process = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
        except OSError as error:
            message = f"{argv[0]}: {error.strerror or error}"
            return {"ok": False, "stdout": "", "stderr": message + "\n", "result": "",
                    "error": {"name": "CommandStartError", "message": message}, "ms": 0.0}
        out, err = Capture(self.process.stdout), Capture(self.process.stderr)
        if stdin is not None:
            threading.Thread(target=self._feed, args=(self.process.stdin, str(stdin)), daemon=True).start()
        code_ = self.process.wait()
        self.process = None
        exit_code = 128 - code_ if code_ < 0 else code_
        ms = (time.perf_counter() - started) * 1000
        reply = {"ok": True, "stdout": out.text(), "stderr": err.text(), "result": exit_code, "error": None,
                 "ms": round(ms, 3)}
        if self.interrupted:
            reply.update(ok=False, error={"name": "KeyboardInterrupt", "message": "the command was stopped"})
        return reply

    @staticmethod
    def _feed(pipe, text: str) -> None:
        try:
            pipe.write(text.encode("utf-8", "replace"))
            pipe.close()
        except OSError:
            pass  # the command did not read all of its input


def send(fd: int, message: dict) -> None:
    data = memoryview(json.dumps(message, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
    while data:
        data = data[os.write(fd, data):]


def main() -> None:
    """Serve commands until the pool closes fd 3. A SIGINT while idle is ignored."""
    for fd in (3, 4):
        os.set_inheritable(fd, False)  # commands must not write into the protocol
    worker = Worker()
    version = subprocess.run([BASH, "-c", "echo $BASH_VERSION"], capture_output=True, text=True).stdout.strip()
    send(4, {"ready": True, "runtime": {"name": "bash", "version": version}})
    for line in os.fdopen(3, "rb"):
        command = json.loads(line)
        reply = worker.execute(command["code"])
        reply["id"] = command.get("id")
        send(4, reply)


if __name__ == "__main__":
    main()
