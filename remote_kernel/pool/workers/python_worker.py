"""The Python session worker: one IPython shell, run inside the sandbox, driven over pipes.

It speaks the protocol in PROTOCOL.md (commands on fd 3, replies on fd 4). It imports nothing
from remote_kernel: it is started as a plain script by whatever interpreter serves the sessions.
"""
from __future__ import annotations

import ast
import base64
import builtins
import collections
import importlib.util
import io
import json
import math
import os
import re
import signal
import struct
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, TextIO

MAX_OUTPUT = int(os.environ.get("REMOTE_KERNEL_MAX_OUTPUT", str(1 << 20)))
MAX_RESULT = 8 << 20  # bytes of a result's JSON; a larger value is replaced by a note (the pool caps lines)
FLUSH_INTERVAL = 0.2  # seconds a stream holds unflushed text, as ipykernel's OutStream (its flush_interval)
COALESCE_BYTES = 64 << 10  # ... unless this much is waiting
REPLIES_FD = 4
WIDGET_BACKENDS = ("widget", "ipympl")  # `%matplotlib` choices that need no event loop: ipympl's canvas widget
NOTHING = object()  # no value: the cell had none, it displayed itself, or its formatting failed
WHOLE_OUTPUT = ("To get all of it, write it to a file in /mnt/data (`with open('out.txt', 'w') as f, "
                "contextlib.redirect_stdout(f): ...`) and `%download out.txt`")


class Live:
    """The running execution's output events, sent on fd 4 as they happen (PROTOCOL.md: live output).

    Each stream holds what is written to it until it is flushed, as ipykernel's streams do: by
    `flush()` (print(..., flush=True), logging, a display), FLUSH_INTERVAL after its first unflushed
    write, or once COALESCE_BYTES wait; flushed text is sent in the order of the flushes, so stdout
    and stderr interleave as they do on ipykernel. Writes only queue text (so a KeyboardInterrupt
    never tears a line); one thread sends.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.held: dict[str, list[str]] = {"stdout": [], "stderr": []}  # unflushed text of each stream
        self.since: dict[str, float | None] = {"stdout": None, "stderr": None}  # its first unflushed write
        self.ready: list[list[str]] = []  # [name, text] flushed, in order; neighbours of one stream merged
        self.size = 0
        self.id: str | None = None
        self.thread: threading.Thread | None = None

    def start(self, execution_id: str) -> None:
        with self.lock:
            self.id = execution_id
            self._clear_locked()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="remote-kernel-live", daemon=True)
            self.thread.start()

    def add(self, name: str, text: str) -> None:
        if self.id is None or not text:
            return
        with self.lock:
            self.held[name].append(text)
            self.size += len(text)
            if self.since[name] is None:
                self.since[name] = time.monotonic()
                self.wake.notify()
            if self.size >= COALESCE_BYTES:
                for _, stream in sorted((since, n) for n, since in self.since.items() if since is not None):
                    self._flush_locked(stream)
                self.wake.notify()

    def flush(self, name: str) -> None:
        """The code flushed `name`: what it holds is sent now."""
        if self.id is None:
            return
        with self.lock:
            if self.since[name] is not None:
                self._flush_locked(name)
                self.wake.notify()

    def stop(self) -> None:
        """Send no more: what is still queued travels in the reply, which follows (a short cell sends no
        event at all)."""
        with self.lock:
            self.id = None
            self._clear_locked()

    def _clear_locked(self) -> None:
        self.held = {"stdout": [], "stderr": []}
        self.since = {"stdout": None, "stderr": None}
        self.ready, self.size = [], 0

    def _flush_locked(self, name: str) -> None:
        text = "".join(self.held[name])
        self.held[name], self.since[name] = [], None
        if not text:
            return
        if self.ready and self.ready[-1][0] == name:
            self.ready[-1][1] += text
        else:
            self.ready.append([name, text])

    def _run(self) -> None:
        with self.lock:
            while True:
                self.wake.wait_for(lambda: bool(self.ready) or any(s is not None for s in self.since.values()))
                if not self.ready:
                    first = min(s for s in self.since.values() if s is not None)
                    wait = first + FLUSH_INTERVAL - time.monotonic()
                    if wait > 0:
                        self.wake.wait(wait)
                        continue
                    now = time.monotonic()
                    for since, name in sorted((s, n) for n, s in self.since.items() if s is not None):
                        if now - since >= FLUSH_INTERVAL:
                            self._flush_locked(name)
                self._send_locked()

    def _send_locked(self) -> None:
        ready, self.ready = self.ready, []
        self.size = sum(len(t) for texts in self.held.values() for t in texts)
        for name, text in ready:
            if self.id is not None:
                send(REPLIES_FD, {"id": self.id, "event": "stream", "name": name, "text": text})


LIVE = Live()


class Router(io.TextIOBase):
    """The worker's sys.stdout / sys.stderr for its whole life: writes go to the running
    execution's stream (from any thread), to the original stream while idle. It stays in place
    across executions, so that a wrapper put around it (the rich shim's tee) stays too."""

    def __init__(self, name: str, idle: TextIO) -> None:
        self.name = name
        self.idle = idle
        self.target: CappedStream | None = None

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "UTF-8"  # what ipykernel's streams say (code reads it: `%timeit` prints µs only then)

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        target = self.target
        if target is not None:
            return target.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        try:
            return self.idle.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        target = self.target
        if target is not None:
            target.flush()

    def isatty(self) -> bool:
        return False


class CappedStream(io.TextIOBase):
    """A text stream that keeps the head and the tail of what is written (MAX_OUTPUT bytes in all)."""

    encoding = "UTF-8"  # what ipykernel's streams say (code reads it: `%timeit` prints µs only then)

    def __init__(self, name: str, live: bool = False) -> None:
        self.name = name
        self.kept = HeadTail(MAX_OUTPUT, WHOLE_OUTPUT)
        self.final: list[str] = []
        self.live = live  # also send the head as live events (the reply's text starts with exactly them)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode("utf-8", "replace")
        head = self.kept.add(data)
        if self.live and head:
            LIVE.add(self.name, text if len(head) == len(data) else head.decode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        if self.live:
            LIVE.flush(self.name)

    def write_final(self, text: str) -> None:
        """Text that ends the execution (a traceback): kept for the reply, never sent live."""
        self.final.append(text)

    def isatty(self) -> bool:
        return False

    def getvalue(self) -> str:
        return self.kept.text() + "".join(self.final)


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


def json_value(value: object) -> object:
    """The trailing expression's value as the contract returns it: JSON where it has one. Raises what
    the value's repr raises (`10**5000` past the int digits limit: ValueError)."""
    if isinstance(value, int):
        int.__repr__(value)  # JSON writes ints as digits: past sys.get_int_max_str_digits() that raises
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # nan → "nan", inf → "inf"
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return json_value(value.item())  # type: ignore[attr-defined]  # numpy scalars: np.int64(2) → 2
    if isinstance(value, (list, tuple, dict)):
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return repr(value)
        return json.loads(text)
    return repr(value)


def safe_str(value: object) -> str:
    """str(value), or a note when its __str__ raises (even SystemExit): an exception's message is session code."""
    try:
        return str(value)
    except BaseException:
        return f"<{type(value).__name__} whose str() raised>"


def displays_itself(value: object) -> bool:
    """Whether IPython shows `value` by calling its `_ipython_display_` (then it has no Out[])."""
    method = getattr(type(value), "_ipython_display_", None)
    return callable(method) and not isinstance(value, type)


def stdin_unavailable(*args: object, **kwargs: object) -> str:
    raise EOFError("input() is not available: a remote session has no stdin; pass values in code or files")


def lean_shell_imports() -> None:
    """Import IPython's shell without what only a terminal uses: ~14 MB less per session.

    `import IPython.core.…` first runs IPython/__init__.py, which imports the terminal front end
    (prompt_toolkit, pygments lexers, jedi). The package is put in place empty instead; its real
    __init__ runs the first time code asks it for a name it lacks (`IPython.__version__`, `IPython.embed`).
    Jedi is kept out while the shell is built (the kernel's completions do not use it), and stays
    importable for session code.
    """
    spec = importlib.util.find_spec("IPython")
    if spec is None or spec.loader is None or "IPython" in sys.modules:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> object:
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules["IPython"] = package
    from IPython.core.getipython import get_ipython

    package.get_ipython = get_ipython  # type: ignore[attr-defined]  # what IPython.core itself imports


def lazy_jedi(shell: object) -> None:
    """Jedi for completions as in a local kernel (`Completer.use_jedi` on when jedi is installed), imported
    the first time a completion needs it. IPython 9.17+ imports jedi lazily itself; before, its completer
    module imports jedi at import time, which `Worker` prevents (jedi costs ~40 MB per session)."""
    from IPython.core import completer as completer_module

    completer: Any = completer_module  # its `jedi` is set here, an attribute its stubs do not export
    if importlib.util.find_spec("jedi") is None:
        return
    if not hasattr(completer, "_get_jedi") and getattr(completer, "jedi", None) is None:
        class LazyJedi:
            def __getattr__(self, name: str) -> object:
                import jedi
                import jedi.api.classes  # noqa: F401  (what IPython's completer imports with it)
                import jedi.api.helpers  # noqa: F401

                jedi.settings.case_insensitive_completion = False
                completer.jedi = jedi
                return getattr(jedi, name)

        completer.jedi = LazyJedi()
        completer.JEDI_INSTALLED = True
    shell.Completer.use_jedi = True  # type: ignore[attr-defined]


def cell_file_compiler() -> type:
    """IPython's compiler, naming each cell's code as ipykernel's does: /tmp/ipykernel_<pid>/<hash>.py, a
    file that is never written. A warning's location and a SyntaxError's message then read as in a local
    kernel, and IPython 9 formats the cell's frames as it does there (blank context lines kept)."""
    from IPython.core.compilerop import CachingCompiler

    folder = os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")

    class CellFiles(CachingCompiler):
        def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
            return os.path.join(folder, f"{murmur2(raw_code.encode('utf-8', 'surrogatepass'))}.py")

    return CellFiles


def murmur2(data: bytes, seed: int = 0xC70F6907) -> int:
    """MurmurHash2 (x86, 32 bits) with ipykernel's seed: ipykernel names a cell's file by it
    (ipykernel.compiler, which a session may not have), so a SyntaxError names the same file there."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (seed ^ len(data)) & mask
    end = len(data) & ~3
    # the 4-byte words as ints: a memoryview cast where the machine is little-endian (half the time of slicing)
    words = memoryview(data)[:end].cast("I") if sys.byteorder == "little" and struct.calcsize("I") == 4 else \
        (int.from_bytes(data[i:i + 4], "little") for i in range(0, end, 4))
    for k in words:
        k = (k * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    if data[end:]:
        h = ((h ^ int.from_bytes(data[end:], "little")) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return h ^ (h >> 15)


def user_home_paths() -> None:
    """Paths under the home folder of the kernel's user are shown as `~/…` in tracebacks, as a local kernel
    shows them, rather than paths under the session's own HOME (REMOTE_KERNEL_USER_HOME, set by the pool)."""
    home = os.environ.pop("REMOTE_KERNEL_USER_HOME", "").rstrip("/")
    if not home or home == os.path.expanduser("~").rstrip("/"):
        return
    from IPython.utils import path as util_path

    def compress_user(path: str) -> str:
        if path == home:
            return "~"
        return "~" + path[len(home):] if path.startswith(home + "/") else path

    util_path.compress_user = compress_user


def has_network() -> bool:
    """Whether the session has a network interface other than loopback (a sandbox without egress has none)."""
    try:
        import socket

        return any(name != "lo" for _, name in socket.if_nameindex())
    except (OSError, AttributeError):
        return True  # cannot tell: let the command try


_PLAIN_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[\w,.-]*\])?(?:==(?P<version>[\w.+!-]+))?$")


def all_installed(arguments: list[str]) -> bool:
    """Whether `pip install ARGUMENTS` names only packages that are installed (at the version asked for, if
    one is): then pip needs no index to say so."""
    from importlib import metadata

    names = [word for word in arguments if not word.startswith("-")]
    options = [word for word in arguments if word.startswith("-")]
    if not names or not set(options) <= {"-q", "--quiet", "-qq", "-v", "--verbose"}:
        return False  # other options (-U, -r FILE …) may need the index
    for word in names:
        match = _PLAIN_REQUIREMENT.match(word.strip("'\""))
        if match is None:
            return False
        try:
            version = metadata.version(match.group("name"))
        except metadata.PackageNotFoundError:
            return False
        if match.group("version") and match.group("version") != version:
            return False
    return True


NO_NETWORK = ("%pip: this session has no network access (its pool runs sessions without egress), so pip cannot "
              "reach a package index.\nThe kernel's embedded pool gives sessions network with REMOTE_KERNEL_EGRESS="
              "enabled in the kernel's environment (then restart the kernel), a standalone local pool with "
              "`remote-kernel pool --egress enabled`; or %upload a wheel and `%pip install --no-index ./NAME.whl`.\n")


class Worker:
    """Runs cells in one persistent IPython shell."""

    shell: Any  # IPython's InteractiveShell, used through attributes its annotations leave optional

    def __init__(self) -> None:
        lean_shell_imports()
        from IPython.core.displayhook import DisplayHook
        from IPython.core.error import UsageError
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        worker = self
        self.jupyter = False  # the running execution's mode: Jupyter's display text, or the contract's JSON value
        self.shown: object = NOTHING  # the running cell's value as its displayhook formatted it
        self.in_displayhook = False  # the cell's value is being formatted
        self.formatting = 0  # display formatter calls running (the displayhook's, or display()'s)

        class QuietDisplayHook(DisplayHook):
            """Records the trailing value without printing an Out[n] prompt."""

            def write_output_prompt(self) -> None:
                pass

            def start_displayhook(self) -> None:
                worker.in_displayhook = True

            def finish_displayhook(self) -> None:
                worker.in_displayhook = False

            def compute_format_data(self, result: object) -> tuple[dict[str, Any], dict[str, Any]]:
                # the value is formatted here, inside the cell, as IPython's displayhook does: a formatter
                # that raises is the cell's error (its traceback shown, the session kept), never the
                # worker's. Only text/plain is asked for (nobody reads every MIME type of every value); an
                # object that displays itself (`_ipython_display_`) does so here, once, and has no result
                if not worker.jupyter and not displays_itself(result):
                    worker.shown = json_value(result)  # a __repr__ that raises raises into the cell
                    return {}, {}
                formatter: Any = self.shell.display_formatter  # type: ignore[union-attr]
                formatted: tuple[dict[str, Any], dict[str, Any]] = formatter.format(result, include={"text/plain"})
                return formatted

            def write_format_data(self, format_dict: dict[str, Any], md_dict: object = None) -> None:
                # also reached with the rich shim's formatting (it replaces compute_format_data)
                text = format_dict.get("text/plain")
                if isinstance(text, str):
                    worker.shown = text

        InteractiveShell.displayhook_class = QuietDisplayHook  # type: ignore[assignment]  # a traitlets Type

        class ZMQInteractiveShell(InteractiveShell):
            """The session's shell, named as ipykernel's: its outputs go to a notebook, and libraries tell a
            notebook from a terminal by that name (pandas' `in_ipython_frontend`, rich) or by a `kernel`
            attribute (pandas' `display.max_columns`: 20 in a notebook, 0, "fit the terminal", else)."""

            kernel = None

            def enable_gui(self, gui: str | None = None) -> None:
                """No GUI event loop runs in a session: only the GUI-less choices (`%matplotlib widget`)."""
                if gui not in (None, "inline"):
                    raise UsageError(f"a remote session has no {gui} event loop: use %matplotlib widget or inline")

        ZMQInteractiveShell.__qualname__ = ZMQInteractiveShell.__name__
        config = Config()
        # no SQLite history: a session's history dies with it, and its writer thread (one write per
        # cell, under a lock the next cell waits for) cost more than the cell itself
        config.HistoryManager.enabled = False
        jedi: Any = sys.modules.get("jedi", False)
        sys.modules["jedi"] = None  # type: ignore[assignment]
        try:
            self.shell = ZMQInteractiveShell.instance(colors="NoColor", config=config,
                                                      compiler_class=cell_file_compiler())
        finally:
            if jedi is False:
                del sys.modules["jedi"]
            else:
                sys.modules["jedi"] = jedi
        self.shell._showtraceback = self._showtraceback
        formatter = self.shell.display_formatter

        def counted_format(*args: Any, **kwargs: Any) -> Any:
            self.formatting += 1
            try:
                return type(formatter).format(formatter, *args, **kwargs)
            finally:
                self.formatting -= 1

        formatter.format = counted_format
        user_home_paths()
        shown_usage_error = self.shell.show_usage_error

        self.error: tuple[str, str] | None = None  # the execution's error that printed no traceback

        def show_usage_error(exc: BaseException) -> None:
            """A magic's UsageError fails the execution (ipykernel answers it with status "error"); IPython
            prints it as one line of stderr, without a traceback."""
            self.error = ("UsageError", str(exc))
            shown_usage_error(exc)

        self.shell.show_usage_error = show_usage_error
        self.error = None
        self.running = False
        self._coloured = False
        builtins.input = stdin_unavailable
        lazy_jedi(self.shell)
        self.shell.extension_manager.load_extension("storemagic")  # ipykernel's default extension: %store
        pip = self.shell.find_line_magic("pip")
        if pip is not None:
            def offline_pip(line: str = "") -> object:
                words = line.split()
                if words[:1] == ["install"] and "--no-index" not in words and not has_network():
                    if not all_installed(words[1:]):
                        sys.stderr.write(NO_NETWORK)
                        return None
                    line += " --no-index"  # pip says "Requirement already satisfied", as with a network
                return pip(line)

            self.shell.register_magic_function(offline_pip, "line", "pip")
        self.matplotlib = self.shell.find_line_magic("matplotlib")  # IPython's own: ipympl's `%matplotlib widget`
        self.backend_before_widget: str | None = None  # the backend that `%matplotlib widget` replaced
        self.shell.register_magic_function(self.matplotlib_magic, "line", "matplotlib")
        # with the Agg backend, plt.show() keeps the figure open: it comes back as the image result
        warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # while idle; Python's own handler while a cell runs
        self.stdout = Router("stdout", sys.stdout)
        self.stderr = Router("stderr", sys.stderr)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.captured: CappedStream | None = None  # the running execution's stderr

    def matplotlib_magic(self, line: str = "") -> object:
        """`%matplotlib widget` (or `ipympl`) makes figures ipympl's canvas widgets, as on ipykernel (IPython's
        own magic; the rich shim carries their comms). Any other choice (`inline`, a GUI, which would ask
        this GUI-less shell for an event loop) keeps the session's backend, or returns to it after
        `widget`: figures come back as images anyway."""
        choice = next((word for word in line.split() if not word.startswith("-")), "")
        if choice in WIDGET_BACKENDS or choice.startswith("module://ipympl"):
            if self.backend_before_widget is None:
                import matplotlib

                self.backend_before_widget = str(matplotlib.get_backend())
            return self.matplotlib(line)
        if self.backend_before_widget is not None and not line.lstrip().startswith("-"):
            import matplotlib.pyplot

            matplotlib.pyplot.switch_backend(self.backend_before_widget)
            self.backend_before_widget = None
        return None

    def _showtraceback(self, etype: type[BaseException] | None, evalue: BaseException | None, stb: list[str]) -> None:
        own = f"{os.path.abspath(__file__)}:"  # frames of this worker (input()'s) are not the user's code
        text = self.shell.InteractiveTB.stb2text([entry for entry in stb if own not in entry]) + "\n"
        if self.formatting and not self.in_displayhook:
            # a formatter failed inside display(): ipykernel shows the traceback and the cell goes on, status ok
            sys.stderr.write(text)
            return
        self.error = (getattr(etype, "__name__", str(etype)), safe_str(evalue))
        if self.captured is not None:
            self.captured.write_final(text)  # the error message carries it: not also live stderr
        else:
            sys.stderr.write(text)

    def _colour_tracebacks(self, jupyter: bool) -> None:
        """Tracebacks in a local kernel's colours for a Jupyter kernel (it renders ANSI), plain otherwise."""
        scheme = type(self.shell).colors.default_value if jupyter else "NoColor"
        for tb in (self.shell.InteractiveTB, self.shell.SyntaxTB):
            if hasattr(tb, "set_theme_name"):  # IPython 9
                tb.set_theme_name(scheme.lower())
            else:
                tb.set_colors(scheme)

    def execute(self, code: str, jupyter: bool, execution_id: str | None = None, live: bool = False) -> dict[str, Any]:
        if jupyter != self._coloured:
            self._colour_tracebacks(jupyter)
            self._coloured = jupyter
        stdout, stderr = CappedStream("stdout", live), CappedStream("stderr", live)
        self.error = None
        self.jupyter, self.shown = jupyter, NOTHING
        self.in_displayhook, self.formatting = False, 0
        # sys.stdout stays what the session made it (the rich shim wraps the Router), as in ipykernel
        self.stdout.target, self.stderr.target = stdout, stderr
        self.captured = stderr
        if live and execution_id is not None:
            LIVE.start(execution_id)
        started = time.perf_counter()
        value: object = ""
        try:
            self.running = True
            # Python's own handler (in C): the KeyboardInterrupt traceback shows where the cell's
            # code was and no frame of this worker, as in ipykernel
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                outcome = self.shell.run_cell(code, store_history=True)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                self.running = False
            failed = outcome.error_before_exec if outcome.error_before_exec is not None else outcome.error_in_exec
            if failed is not None and self.error is None:
                # an error the shell recorded without a traceback (its own printing raised, bdb.BdbQuit): the
                # cell failed all the same, as ipykernel answers it
                self.error = (type(failed).__name__, safe_str(failed))
            if failed is None:
                if outcome.result is not None:
                    # what the displayhook made of it; nothing when the value displayed itself, or when
                    # its formatting failed (that traceback is the cell's error, as in ipykernel)
                    value = "" if self.shown is NOTHING else self.shown
                elif self._ends_with_bare_none(code):
                    value = None
            image = self._open_figure()
            if image is not None:
                value = image
        except KeyboardInterrupt:
            # SIGINT landed outside the cell's own code (between statements of the shell)
            self.error = ("KeyboardInterrupt", "")
            stderr.write_final("KeyboardInterrupt\n")
        finally:
            self.stdout.target = self.stderr.target = self.captured = None
            if live:
                LIVE.stop()
        ms = (time.perf_counter() - started) * 1000
        error = {"name": self.error[0], "message": self.error[1]} if self.error else None
        if value != "" and len(json.dumps(value, ensure_ascii=False)) > MAX_RESULT:
            value = f"[result not returned: its JSON is over {MAX_RESULT >> 20} MiB; write it to a file instead]"
        # a value next to an error: a rich formatter (`_repr_html_`) failed and text/plain did not; ipykernel
        # shows both, the traceback and the text
        return {"ok": error is None, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
                "result": value, "error": error, "ms": round(ms, 3)}

    def _ends_with_bare_none(self, code: str) -> bool:
        """Whether a None result came from a trailing expression that is not a call: `x` or `None`
        answer null, while `print(...)` or `f()` answer "" as a cell without a value does."""
        if code.rstrip().endswith(";"):
            return False
        try:
            tree = ast.parse(self.shell.transform_cell(code))
        except SyntaxError:
            return False
        return bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and not isinstance(tree.body[-1].value, ast.Call)

    @staticmethod
    def _open_figure() -> dict[str, Any] | None:
        """The last open matplotlib figure as the contract's image result; all figures closed."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None or not plt.get_fignums():
            return None
        if str(plt.get_backend()).lower() not in ("agg", "module://matplotlib_inline.backend_inline", "inline"):
            return None  # a backend the code chose (`matplotlib.use('svg')`) keeps its figures, as on ipykernel
        if getattr(sys.modules.get("_remote_kernel_rich"), "active", None) is not None:
            return None  # the kernel's rich-output shim shows figures as ipykernel does
        figure = plt.figure(plt.get_fignums()[-1])
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", bbox_inches="tight")
        finally:
            plt.close("all")
        return {"type": "image", "format": "png", "base64_data": base64.b64encode(buffer.getvalue()).decode()}


def failed_execution(exc: BaseException) -> dict[str, Any]:
    """The reply for an execution this worker could not finish (its own fault, not the cell's):
    the error and its traceback, with the session and its variables kept."""
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"ok": False, "stdout": "", "stderr": text, "result": "", "ms": 0.0,
            "error": {"name": type(exc).__name__, "message": f"the session's worker failed: {exc}"[:1000]}}


def send(fd: int, message: dict[str, Any]) -> None:
    """Write one reply line whole (lone surrogates in output become '?')."""
    data = memoryview(json.dumps(message, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
    while data:
        data = data[os.write(fd, data):]


def main() -> None:
    """Serve executions until the pool closes fd 3. A SIGINT while idle is ignored."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the environment of a kernel started from the session's interpreter: its bin folder first on PATH
    # (`!python`, `!pip`, `%%script python3` find it), a shell, and the working folder importable
    bin_folder = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bin_folder and bin_folder not in path.split(os.pathsep)[:1]:
        os.environ["PATH"] = os.pathsep.join(filter(None, [bin_folder, path]))
    os.environ.setdefault("SHELL", "/bin/bash" if os.access("/bin/bash", os.X_OK) else "/bin/sh")  # ipykernel's `!`
    if "" not in sys.path:
        sys.path.insert(0, "")  # as ipykernel does: `import m1` finds m1.py of the working folder
    for fd in (3, 4):
        os.set_inheritable(fd, False)  # session code's own processes must not write into the protocol
    worker = Worker()
    version = ".".join(map(str, sys.version_info[:3]))
    send(4, {"ready": True, "runtime": {"name": "python", "version": version}})
    commands = os.fdopen(3, "rb")
    for line in commands:
        command = json.loads(line)
        try:
            reply = worker.execute(command["code"], bool(command.get("jupyter")), command.get("id"),
                                   bool(command.get("live")))
        except BaseException as exc:  # a fault of this worker must not cost the session its state
            reply = failed_execution(exc)
        reply["id"] = command.get("id")
        send(REPLIES_FD, reply)


if __name__ == "__main__":
    main()
