"""The Shell session worker: runs each command of a hosted-style Shell session, inside the sandbox.

It speaks the protocol in PROTOCOL.md (commands on fd 3, replies on fd 4). The `code` of an execute
command is a JSON object: {"shellCommand": "…"} (run by bash -c) or {"execCommandAndArgs": [argv…]}
(run directly), with an optional "stdin" text. The reply's `result` is the exit code (128 + N for
a command killed by signal N, as bash reports it). Each command is a new process: files in
/mnt/data persist between commands, shell variables and `cd` do not (as in hosted Shell pools,
whose commands are independent executions). Imports nothing from remote_kernel.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from types import FrameType
from typing import IO, Any

MAX_OUTPUT = int(os.environ.get("REMOTE_KERNEL_MAX_OUTPUT", str(1 << 20)))
BASH = "/bin/bash"
WHOLE_OUTPUT = "To get all of it, redirect it to a file in /mnt/data (`command > out.txt 2>&1`) and download that file"
LINGER = 1.0  # seconds to wait for output still held open by a command's background processes


class Capture:
    """Reads one pipe to its end in a thread, keeping its head and tail (MAX_OUTPUT bytes in all)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe = pipe
        self.kept = HeadTail(MAX_OUTPUT, WHOLE_OUTPUT)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self.pipe.fileno(), 65536):
                self.kept.add(chunk)
        except OSError:
            pass

    def text(self) -> str:
        self.thread.join(LINGER)
        return self.kept.text()


class HeadTail:
    """One stream's output kept in bounded memory: its first and last bytes, what falls between counted.

    Past `limit` bytes the stream keeps a head (about half the limit, ending at a line end unless its
    last line is longer than a sixteenth of the limit) and a tail (the rest of the limit: a ring of the
    last writes), and `text()` puts a line between them saying how much was left out and how to get all of it.
    """

    def __init__(self, limit: int, hint: str) -> None:
        self.limit = limit
        self.hint = hint
        self.head = bytearray()
        self.full = False  # the head is complete: later bytes go to the tail
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self.total = 0

    def add(self, data: bytes) -> bytes:
        """Take `data`; returns the part of it that went to the head (what may be shown as it comes)."""
        self.total += len(data)
        if not self.full:
            room = self.limit // 2 - len(self.head)
            if len(data) <= room:
                self.head += data
                return data
            cut, self.full = head_cut(data, room, room + self.limit // 16, self.head.endswith(b"\n"))
            kept = data[:cut]
            self.head += kept
            if not self.full:
                return kept
            data = data[cut:]
        else:
            kept = b""
        room = self.limit - len(self.head)  # the tail's share: all the limit leaves over
        if len(data) >= room:
            self.tail.clear()
            data, self.tail_size = data[len(data) - room:], 0
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail and self.tail_size - len(self.tail[0]) >= room:
            self.tail_size -= len(self.tail.popleft())
        return kept

    def text(self) -> str:
        head = bytes(self.head)
        tail = b"".join(self.tail)
        tail = tail[max(len(tail) - (self.limit - len(head)), 0):]
        if len(head) + len(tail) == self.total:
            return (head + tail).decode("utf-8", "replace")
        start = tail.find(b"\n", 0, len(tail) // 4) + 1  # from a line's start where one is near ...
        while start < len(tail) and tail[start] & 0xC0 == 0x80:
            start += 1  # ... never inside a character
        tail = tail[start:]
        left_out = self.total - len(head) - len(tail)
        text = head.decode("utf-8", "replace")
        if text and not text.endswith("\n"):
            text += "\n"
        return (f"{text}[output truncated: {left_out} bytes left out here (the first {len(head)} and the last "
                f"{len(tail)} are shown). {self.hint}]\n{tail.decode('utf-8', 'replace')}")


def head_cut(data: bytes, room: int, stretch: int, at_line_start: bool) -> tuple[int, bool]:
    """How many bytes of `data` (longer than `room`) go to the head, and whether that completes it.

    The head ends at a line end where it can: through the last one that fits; with none of `data`
    when there is none and the head already ends a line; else through the end of the line the head
    is in, up to `stretch` bytes (a write may end that line: print() writes the text, then "\n").
    Only a line longer than that is cut, at the room, never inside a character.
    """
    fits = max(room, 0)
    end = data.rfind(b"\n", 0, fits) + 1
    if end or at_line_start:
        return end, True
    end = data.find(b"\n", fits, max(stretch, 0)) + 1
    if end:
        return end, True
    if len(data) <= stretch:
        return len(data), False
    while fits > 0 and data[fits] & 0xC0 == 0x80:
        fits -= 1
    return fits, True


class Worker:
    """Runs one command at a time; SIGINT kills the running command's process group."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.interrupted = False
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            self.interrupted = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def execute(self, code: str) -> dict[str, Any]:
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
        assert self.process.stdout is not None and self.process.stderr is not None  # both are pipes
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
    def _feed(pipe: IO[bytes], text: str) -> None:
        try:
            pipe.write(text.encode("utf-8", "replace"))
            pipe.close()
        except OSError:
            pass  # the command did not read all of its input


def send(fd: int, message: dict[str, Any]) -> None:
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
