"""The session side of rich output: runs inside a remote session, never in the kernel.

The kernel sends this file's text once per session, with the session's first cell (a line put
before the cell's code, `rich.riding_code`) or as a silent execution of its own, and again after
the session was found lost; it needs only the standard library and IPython. It hooks IPython's
display machinery so that each `display()`, each `clear_output()`, each matplotlib figure
shown or left open at the end of a cell, and the cell's result become MIME bundles. Each is
appended as one JSON line to a file of the cell in a hidden folder of the session's files, and
a short marker is written to stdout where it happened; the kernel splits stdout at the
markers, downloads the file (only when there was a marker) and interleaves the outputs.

The marker grammar (`MARK_START`, the tokens, the items' types below) is written down once, in
the kernel's `events.py`: a marker carries an output inline (`INLINE`), the line of the cell's file
`.remote_kernel/<nonce>-<cell>.jsonl` under /mnt/data (or the working folder where there is no
/mnt/data) that holds it, or what needs no file: the plain result's place, a clear_output(), a flush
of stderr (`flush_event`). A cell whose markers need no file costs no download. The
kernel picks the nonce.

Small outputs travel inline, in the marker itself: the token `j<bundle JSON>` (JSON never holds
a raw \\x1e), when the bundle's JSON is at most INLINE_LIMIT characters and the cell's stdout
stays under INLINE_STDOUT; larger ones go to the cell's file (one download at the end).

Live log (for pools without the live-output extension): what the cell writes to sys.stdout and
sys.stderr is also appended, in order, to `.remote_kernel/<nonce>.live` (a header line
`{"cell", "code"}`: the cell's number and a hash of its source; then `["o"|"e", text]` lines),
but only once the cell has run LIVE_AFTER seconds (short cells never touch the disk), flushed
every LIVE_FLUSH seconds, at most LIVE_LIMIT bytes. The kernel reads it through the file API.

Long cells (`%%long`): `start_long(code)` runs a cell in a thread of the session; what that
thread writes goes to an in-memory log that short executions read with `poll_long(offset)`.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import io
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

FOLDER = ".remote_kernel"
#: the wire grammar: the kernel's events.py holds the same names (this file must stay standalone source:
#: tests/test_kernel_units.py checks that the two agree)
MARK_START, MARK_END = "\x1erk", "\x1e"  # a marker: MARK_START <nonce>:<cell>:<token> MARK_END
INLINE, RESULT_PLACE, CLEAR, CLEAR_WAIT, FLUSH = "j", "r", "c", "w", "e"  # tokens (prefixes: INLINE, FLUSH)
DISPLAY, UPDATE, RESULT, PAGE, ERROR = "display", "update", "result", "page", "error"  # an item's "type"
MODULE = "_remote_kernel_rich"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
INLINE_LIMIT = 256 << 10  # characters of a bundle's JSON that travel inline in stdout
INLINE_STDOUT = 768 << 10  # ... while the cell's stdout stays under this (the pool keeps 1 MiB)
LIVE_AFTER = 0.5  # seconds a cell runs before its live log is written
LIVE_FLUSH = 0.1  # seconds between writes of the live log
FLUSH_INTERVAL = 0.2  # seconds ipykernel's streams hold unflushed text (OutStream.flush_interval)
LIVE_LIMIT = 1 << 20  # bytes of a cell's live log (the answer still carries everything)
LONG_LIMIT = 8 << 20  # characters of a long cell's output kept in memory until polled
HELPER_MARK = "@@remote_kernel_answer@@"  # in the source of the kernel's own executions (helper.HELPER_MARK)
#: text-like MIME types whose bytes are decoded rather than base64-encoded
_TEXT_TYPES = ("image/svg+xml", "application/javascript")


def _jsonable(data: Any) -> dict[str, Any]:
    """A MIME bundle as JSON can carry it: binary data as base64 text, other values that JSON cannot
    hold left out (text/plain always stays)."""
    bundle = {}
    for mime, value in dict(data or {}).items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            textual = mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("json")
            value = value.decode("utf-8", "replace") if textual else base64.b64encode(value).decode("ascii")
        bundle[str(mime)] = value
    try:
        json.dumps(bundle)
    except (TypeError, ValueError):
        for mime in list(bundle):
            try:
                json.dumps(bundle[mime])
            except (TypeError, ValueError):
                del bundle[mime]
    return bundle


def _safe_str(value: object) -> str:
    """str(value), or a note when its __str__ raises (even SystemExit): an exception's message is session code."""
    try:
        return str(value)
    except BaseException:
        return f"<{type(value).__name__} whose str() raised>"


def _plain(value: Any) -> dict[str, Any]:
    try:
        json.dumps(value)
        return dict(value or {})
    except (TypeError, ValueError):
        return {}


NO_STDIN = "a remote session has no stdin: pass values in code, or in a file you %upload"


def no_stdin(call: str) -> Callable[..., str]:
    """input() (`call` "raw_input") or getpass() of a session: raises what ipykernel raises when the front
    end sends no input."""
    def refuse(*args: object, **kwargs: object) -> str:
        from IPython.core.error import StdinNotImplementedError

        raise StdinNotImplementedError(f"{call} was called, but this frontend does not support input requests "
                                       f"({NO_STDIN})")

    return refuse


class Tee(io.TextIOBase):
    """sys.stdout / sys.stderr while the shim is installed: passes every write on, and also tells
    the shim (live log, long cells, the cell's stdout size). Writes of a long cell's thread go to
    its log only."""

    def __init__(self, shim: RichShim, name: str, inner: Any) -> None:
        self.shim = shim
        self.name = name
        self.inner = inner

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        long = self.shim.long
        if long is not None and threading.get_ident() == long.thread_ident:
            long.write(self.name, text)
            return len(text)
        self.shim.wrote(self.name, text)
        written: int = self.inner.write(text)
        return written

    def flush(self) -> None:
        self.shim.flushed(self.name)
        try:
            self.inner.flush()
        except (AttributeError, OSError, ValueError):
            pass

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        number: int = self.inner.fileno()
        return number

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)  # encoding, errors, buffer, ... as the stream has them


class LongCell:
    """A cell running in a thread of the session (`%%long`), and what it has written so far."""

    def __init__(self, shell: Any, code: str) -> None:
        self.shell = shell
        self.code = code
        self.lock = threading.Lock()
        self.log: list[list[str]] = []  # [name, text], neighbours of one stream merged
        self.logged = 0  # characters ever logged (the offset polls count in)
        self.dropped = 0
        self.done = False
        self.error: dict[str, Any] | None = None
        self.result: str | None = None
        self.thread_ident: int | None = None
        self.thread = threading.Thread(target=self._run, name="remote-kernel-long", daemon=True)

    def write(self, name: str, text: str) -> None:
        with self.lock:
            if sum(len(t) for _, t in self.log) > LONG_LIMIT:
                self.dropped += len(text)
                return
            if self.log and self.log[-1][0] == name:
                self.log[-1][1] += text
            else:
                self.log.append([name, text])
            self.logged += len(text)

    def _run(self) -> None:
        self.thread_ident = threading.get_ident()
        shell = self.shell
        try:
            source = shell.transform_cell(self.code)
            tree = ast.parse(source, "<long cell>")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<long cell>", "exec"), shell.user_ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<long cell>", "eval"), shell.user_ns)
                if value is not None:
                    self.result = repr(value)
        except BaseException as exc:  # KeyboardInterrupt from poll_long's interrupt too
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.error = {"name": type(exc).__name__, "message": _safe_str(exc), "traceback": text}
        finally:
            self.done = True

    def take(self) -> list[list[str]]:
        with self.lock:
            log, self.log = self.log, []
            return log


class RichShim:
    """The hooks in one IPython shell; `install` puts them in, `uninstall` takes them out."""

    def __init__(self, shell: Any, nonce: str, root: str) -> None:
        self.shell = shell
        self.nonce = nonce
        self.folder = os.path.join(root, FOLDER)
        self.cell = 0  # the number of the running cell (executions counted since install)
        self.count = 0  # outputs of the running cell
        self.late = False  # the cell's own code has ended: what follows is end-of-cell output
        self.depth = 1  # cells running (a cell may run another); the install itself runs as a cell
        self.saved: list[tuple[object, str, object]] = []
        self.stdout_size = 0  # characters the running cell wrote to stdout
        self.stderr_size = 0  # ... and to stderr
        self.stderr_marked = 0  # stderr_size when an `e` marker last said where it was shown
        self.stdout_flushed = 0  # stdout_size at its last flush (as ipykernel's OutStream flushes)
        self.pending_since: dict[str, float | None] = {"stdout": None, "stderr": None}  # first unflushed write
        self.ordering = True  # mark the order of the streams (not in the kernel's helper executions)
        self.marking = False  # a marker is being written (not the cell's own text)
        #: (number, sources): the next cell's number, after cells that ran in the kernel (`skip_cells`)
        self.count_next: tuple[int, list[str]] | None = None
        self.live_log = True  # keep a live log (False where the pool streams output itself)
        self.live_lock = threading.Lock()
        self.live_pending: list[list[str]] = []
        self.live_held: dict[str, list[Any]] = {}  # tag → [first write, text] not flushed yet
        self.live_header: str | None = None
        self.live_size = 0
        self.cell_started = 0.0
        self.cell_running = False
        self.long: LongCell | None = None
        self.tees: list[Tee] = []
        self.formatting = 0  # display formatter calls running
        self.in_result = False  # the cell's value is being formatted (the displayhook)

    # --- hooks in and out -------------------------------------------------------------------

    def install(self) -> None:
        shell = self.shell
        self._replace(shell.display_pub, "publish", self.publish)
        self._replace(shell.display_pub, "clear_output", self.clear_output)
        self._replace(shell.displayhook, "compute_format_data", self.result)
        self._replace(shell.display_formatter, "format", self._counted(shell.display_formatter.format))
        self._replace(shell, "showtraceback", self._traceback(shell.showtraceback))
        self.shown_traceback = shell._showtraceback
        self._replace(shell, "_showtraceback", self.showtraceback)
        shell.events.register("pre_execute", self.pre_execute)
        callbacks = shell.events.callbacks.get("post_execute")
        if isinstance(callbacks, list):
            callbacks.insert(0, self.code_ended)  # before any other end-of-cell hook (inline figures)
        else:
            shell.events.register("post_execute", self.code_ended)
        shell.events.register("post_execute", self.open_figures)
        shell.events.register("pre_run_cell", self.pre_run_cell)
        shell.events.register("post_run_cell", self.post_run_cell)
        self.helper_state: tuple[Any, ...] | None = None
        self._use_inline_figures()
        import builtins
        import getpass

        from IPython.core import page as pager

        self._replace(pager, "page", self.page)
        self._replace(builtins, "input", no_stdin("raw_input"))
        self._replace(getpass, "getpass", no_stdin("getpass"))
        self._plotly_as_in_jupyter()
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if isinstance(current, Tee):
                current = current.inner  # an earlier install's tee
            tee = Tee(self, name, current)
            self.tees.append(tee)
            setattr(sys, name, tee)
        if self.live_log:
            threading.Thread(target=self._flush_live, name="remote-kernel-live-log", daemon=True).start()

    def uninstall(self) -> None:
        for target, name, before in reversed(self.saved):
            if before is None:
                target.__dict__.pop(name, None)
            else:
                setattr(target, name, before)
        self.saved = []
        for tee in self.tees:
            if getattr(sys, tee.name) is tee:
                setattr(sys, tee.name, tee.inner)
        self.tees = []
        self.live_log = False
        for event, callback in (("pre_execute", self.pre_execute), ("post_execute", self.code_ended),
                                ("post_execute", self.open_figures), ("pre_run_cell", self.pre_run_cell),
                                ("post_run_cell", self.post_run_cell)):
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass

    @staticmethod
    def _plotly_as_in_jupyter() -> None:
        """Plotly figures as ipykernel shows them: plotly picks "plotly_mimetype" only in ipykernel's
        shell; in any other shell (a session's) "plotly_mimetype+notebook", which adds a notebook
        setup output and an HTML copy of every figure."""
        os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
        renderers = getattr(sys.modules.get("plotly.io"), "renderers", None)
        if renderers is not None and renderers.default == "plotly_mimetype+notebook":
            renderers.default = "plotly_mimetype"

    def _replace(self, target: object, name: str, value: object) -> None:
        self.saved.append((target, name, target.__dict__.get(name)))
        setattr(target, name, value)

    def _use_inline_figures(self) -> None:
        """Let `plt.show()` display figures where it is called, as in a local notebook: the inline
        backend when the session has it and uses a non-interactive default."""
        import importlib.util

        if importlib.util.find_spec("matplotlib_inline") is None:
            return  # figures still come home, at the end of the cell (open_figures)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            if pyplot.get_backend().lower() == "agg":
                pyplot.switch_backend(INLINE_BACKEND)
        elif os.environ.get("MPLBACKEND", "").lower() in ("", "agg"):
            os.environ["MPLBACKEND"] = INLINE_BACKEND

    # --- the cell -------------------------------------------------------------------------------

    def pre_execute(self) -> None:
        self.depth += 1
        if self.depth > 1:
            return  # a cell run by a cell (get_ipython().run_cell): its outputs are the outer cell's
        self._begin_cell()

    def _begin_cell(self) -> None:
        self.cell += 1
        self.count = 0
        self.late = False
        self.stdout_size = 0
        self.stderr_size = self.stderr_marked = self.stdout_flushed = 0
        self.pending_since = {"stdout": None, "stderr": None}
        self.ordering = True
        with self.live_lock:
            self.live_pending, self.live_size, self.live_header = [], 0, None
            self.live_held = {}
            self.cell_started, self.cell_running = time.monotonic(), True
        try:  # the kernel fetched and deleted the last file; leftovers of failed fetches go now
            for name in os.listdir(self.folder):
                if name.endswith(".jsonl") or name.endswith(".live"):
                    os.unlink(os.path.join(self.folder, name))
        except OSError:
            pass

    def pre_run_cell(self, info: object = None) -> None:
        """The cell's source is known here: the live log's header names it (by hash); a helper
        execution of the kernel (completion, inspection, the shim itself) is kept out of the
        execution count and the history, so that `In`, `Out`, `_N` and tracebacks match the prompts."""
        if self.depth > 1:
            return
        raw = getattr(info, "raw_cell", None) or ""
        self.helper_state = None
        self.ordering = HELPER_MARK not in raw  # a helper's answer line must stay whole
        if HELPER_MARK in raw and getattr(info, "store_history", False):
            self.helper_state = self._history_state()
        digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        with self.live_lock:
            self.live_header = json.dumps({"cell": self.cell, "code": digest})

    def _history_state(self) -> tuple[Any, ...]:
        manager = getattr(self.shell, "history_manager", None)
        ns = self.shell.user_ns
        names = ("_i", "_ii", "_iii", "_i00")
        return (self.shell.execution_count, manager, [len(getattr(manager, n, [])) for n in
                                                      ("input_hist_parsed", "input_hist_raw")],
                {n: getattr(manager, n, None) for n in names}, {n: ns.get(n) for n in ("_i", "_ii", "_iii")})

    def post_run_cell(self, result: object = None) -> None:
        state, self.helper_state = self.helper_state, None
        if state is None or self.depth > 0:
            return
        count, manager, lengths, saved, names = state
        number = getattr(result, "execution_count", None)
        if isinstance(number, int) and not isinstance(number, bool):
            count = number  # the helper's own number: IPython 9 has counted it before pre_run_cell, IPython 8 after
        try:
            if getattr(manager, "enabled", False) and getattr(manager, "db", None) is not None:
                # a history database (ipykernel): the helper's row goes too, or the next cell's number clashes
                manager.writeout_cache()
                with manager.db:
                    for table in ("history", "output_history"):
                        manager.db.execute(f"DELETE FROM {table} WHERE session = ? AND line = ?",
                                           (manager.session_number, count))
            self.shell.execution_count = count
            for name, length in zip(("input_hist_parsed", "input_hist_raw"), lengths):  # noqa: B905 (any Python)
                items = getattr(manager, name, None)
                if isinstance(items, list):
                    del items[length:]
            for name, value in saved.items():
                if value is not None:
                    setattr(manager, name, value)
            self.shell.user_ns.pop(f"_i{count}", None)
            self.shell.user_ns.update({k: v for k, v in names.items() if v is not None})
            output = getattr(manager, "output_hist", None)
            if isinstance(output, dict):
                output.pop(count, None)
            pending, self.count_next = self.count_next, None
            if pending is not None:
                self.skip_cells(*pending)
        except Exception:  # the history is a convenience: never fail a cell over it
            pass

    def skip_cells(self, number: int, sources: list[str]) -> None:
        """The kernel ran cells without the session (its own magics, help-only cells): their numbers are
        skipped, so that the next cell is `number` as its prompt says, and `In`/`_iN` hold their source."""
        shell = self.shell
        manager = getattr(shell, "history_manager", None)
        first = shell.execution_count
        gap = max(0, number - first)  # a new session starts at 1: the numbers before have no source there
        skipped = ([""] * gap + [str(s) for s in sources])[len(sources):] if gap else []
        for index, source in enumerate(skipped):
            count = number - len(skipped) + index
            for name in ("input_hist_parsed", "input_hist_raw"):
                items = getattr(manager, name, None)
                if isinstance(items, list) and len(items) == count:
                    items.append(source if name.endswith("raw") else shell.transform_cell(source).rstrip("\n"))
            if manager is not None and hasattr(manager, "_i00"):  # as IPython's store_inputs moves them on
                manager._iii, manager._ii, manager._i, manager._i00 = manager._ii, manager._i, manager._i00, source
                shell.user_ns.update({"_i": manager._i, "_ii": manager._ii, "_iii": manager._iii})
            shell.user_ns[f"_i{count}"] = source
        if number > first:
            shell.execution_count = number

    # --- live log ---------------------------------------------------------------------------------

    def wrote(self, name: str, text: str) -> None:
        """A write of the running cell (Tee): counted, and queued for the live log."""
        if self.ordering and not self.marking:
            now = time.monotonic()
            self._timed_flushes(now)
            if self.pending_since[name] is None:
                self.pending_since[name] = now
        if name == "stdout":
            self.stdout_size += len(text)
        else:
            self.stderr_size += len(text)
        if not self.live_log or not self.cell_running:
            return
        with self.live_lock:
            if self.live_size + len(text) > LIVE_LIMIT:
                return
            self.live_size += len(text)
            tag = "o" if name == "stdout" else "e"
            held = self.live_held.get(tag)
            if not self.ordering or self.marking:
                self._live_append(tag, text)
            elif held is None:  # held until the stream is flushed, as the answer's order will be
                self.live_held[tag] = [time.monotonic(), text]
            else:
                held[1] += text

    def _live_append(self, tag: str, text: str) -> None:
        if self.live_pending and self.live_pending[-1][0] == tag:
            self.live_pending[-1][1] += text
        else:
            self.live_pending.append([tag, text])

    def _live_flushed(self, tag: str) -> None:
        """(live_lock held) a stream's held text joins the live log."""
        held = self.live_held.pop(tag, None)
        if held is not None:
            self._live_append(tag, held[1])

    # --- the order of stdout and stderr ---------------------------------------------------------

    def flushed(self, name: str) -> None:
        """`flush()` of sys.stdout or sys.stderr (print(..., flush=True), logging, tqdm)."""
        if self.ordering and not self.marking:
            self._timed_flushes(time.monotonic())
            if self.pending_since[name] is not None:
                self.flush_event(name)

    def _timed_flushes(self, now: float) -> None:
        """ipykernel also flushes a stream FLUSH_INTERVAL after its first unflushed write: seen at the next event."""
        due = sorted((since, name) for name, since in self.pending_since.items()
                     if since is not None and now - since >= FLUSH_INTERVAL)
        for _, name in due:
            self.flush_event(name)

    def flush_event(self, name: str) -> None:
        """A stream is flushed as ipykernel's OutStream would be: what it holds is shown now. The contract's
        answer carries stdout and stderr apart; for a flush of stderr, a marker `e<n>.<p>` in stdout tells
        the kernel to show stdout up to its p-th character, then stderr up to its n-th, so that the cell's
        streams arrive in ipykernel's order (at the end: the rest of stdout, then of stderr)."""
        self.pending_since[name] = None
        with self.live_lock:
            self._live_flushed("o" if name == "stdout" else "e")
        if name == "stdout":
            self.stdout_flushed = self.stdout_size
        elif self.stderr_size > self.stderr_marked:
            self.stderr_marked = self.stderr_size
            self.mark(f"{FLUSH}{self.stderr_size}.{self.stdout_flushed}")

    def _flush_live(self) -> None:
        """Every LIVE_FLUSH s: append what the running cell wrote to its live log, once it has run
        LIVE_AFTER s (a short cell never writes one)."""
        path = os.path.join(self.folder, f"{self.nonce}.live")
        while self.live_log:
            time.sleep(LIVE_FLUSH)
            with self.live_lock:
                if not self.cell_running or self.live_header is None or \
                        time.monotonic() - self.cell_started < LIVE_AFTER:
                    continue
                now = time.monotonic()
                for since, tag in sorted((held[0], tag) for tag, held in self.live_held.items()):
                    if now - since >= FLUSH_INTERVAL:
                        self._live_flushed(tag)
                pending, self.live_pending = self.live_pending, []
                header, self.live_header = self.live_header, ""
                try:
                    os.makedirs(self.folder, exist_ok=True)
                    with open(path, "w" if header else "a", encoding="utf-8") as out:
                        if header:
                            out.write(header + "\n")
                        for item in pending:
                            out.write(json.dumps(item, ensure_ascii=False) + "\n")
                except OSError:
                    self.live_header = header or ""  # no room: the answer still carries the output

    # --- long cells -------------------------------------------------------------------------------

    def start_long(self, code: str) -> dict[str, Any]:
        if self.long is not None and not self.long.done:
            return {"error": "a long cell is still running in this session; interrupt it or wait for it"}
        self.long = LongCell(self.shell, code)
        self.long.thread.start()
        return {"ok": True}

    def poll_long(self, interrupt: bool = False) -> dict[str, Any]:
        long = self.long
        if long is None:
            return {"error": "no long cell runs in this session (the session may have been replaced)"}
        if interrupt and not long.done and long.thread_ident is not None:
            import ctypes

            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(long.thread_ident),
                                                       ctypes.py_object(KeyboardInterrupt))
        done = long.done
        answer = {"log": long.take(), "done": done}
        if done:
            answer.update(error=long.error, result=long.result, dropped=long.dropped)
            self.long = None
        return answer

    def code_ended(self) -> None:
        self.late = self.late or self.depth <= 1
        if self.depth <= 1:
            with self.live_lock:
                self._live_flushed("o")  # at the end: stdout, then stderr
                self._live_flushed("e")
                pending = self.live_pending
                self.cell_running = False
            if pending and self.live_header == "":  # the log was started: end it whole
                try:
                    with open(os.path.join(self.folder, f"{self.nonce}.live"), "a", encoding="utf-8") as out:
                        for item in pending:
                            out.write(json.dumps(item, ensure_ascii=False) + "\n")
                except OSError:
                    pass

    def open_figures(self) -> None:
        """Every matplotlib figure still open when the cell ends is shown, then closed, when nothing else
        shows them: the inline backend shows its figures itself (matplotlib_inline's `flush_figures`, as on
        ipykernel: the figure format of `%config InlineBackend`, no image for a figure without Axes);
        another backend chosen by the code (`matplotlib.use('svg')`) shows none, as on ipykernel."""
        self.depth = max(0, self.depth - 1)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or self.depth > 0:
            return
        backend = str(pyplot.get_backend()).lower()
        if backend in (INLINE_BACKEND, "inline"):
            flush = getattr(sys.modules.get("matplotlib_inline.backend_inline"), "flush_figures", None)
            if flush is not None and flush in self.shell.events.callbacks.get("post_execute", []):
                return
        elif backend != "agg" or importlib.util.find_spec("matplotlib_inline") is not None:
            return  # a backend the code chose
        try:
            for number in pyplot.get_fignums():
                self.figure(pyplot.figure(number))
        finally:
            if pyplot.get_fignums():
                pyplot.close("all")

    def figure(self, fig: Any) -> None:
        data, metadata = self.shell.display_formatter.format(fig)
        if not set(data) & {"image/png", "image/svg+xml", "image/jpeg", "application/pdf"} and \
                (fig.axes or fig.lines):  # no figure formatter (no inline backend): a PNG; an empty figure: text
            import io

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", bbox_inches="tight")
            data = {"image/png": buffer.getvalue(), "text/plain": data.get("text/plain", repr(fig))}
        self.emit({"type": DISPLAY, "data": _jsonable(data), "metadata": _plain(metadata)})

    # --- IPython's display machinery ----------------------------------------------------------

    def _counted(self, format: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.formatting += 1
            try:
                return format(*args, **kwargs)
            finally:
                self.formatting -= 1

        return counted

    def _traceback(self, show: Callable[..., Any]) -> Callable[..., Any]:
        """IPython's showtraceback, except for a formatter that fails inside `display()` (not the cell's
        value): ipykernel shows that traceback as an error output and the cell goes on, status ok."""
        def showtraceback(exc_tuple: Any = None, *args: Any, **kwargs: Any) -> Any:
            if not self.formatting or self.in_result or not isinstance(exc_tuple, tuple) or len(exc_tuple) != 3:
                return show(exc_tuple, *args, **kwargs)
            etype, evalue, tb = exc_tuple
            try:
                stb = self.shell.InteractiveTB.structured_traceback(etype, evalue, tb)
            except Exception:  # a traceback that cannot be formatted still shows its error
                stb = traceback.format_exception(etype, evalue, tb)
            self.emit({"type": ERROR, "ename": getattr(etype, "__name__", str(etype)), "evalue": _safe_str(evalue),
                       "traceback": [str(line) for line in stb]})
            return None

        return showtraceback

    def publish(self, data: Any, metadata: Any = None, source: Any = None, *, transient: Any = None,
                update: bool = False, **kwargs: Any) -> None:
        self.emit({"type": UPDATE if update else DISPLAY, "data": _jsonable(data),
                   "metadata": _plain(metadata), "transient": _plain(transient)})

    def result(self, value: object) -> tuple[dict[str, Any], dict[str, Any]]:
        """The displayhook's formatting of the cell's value: every MIME type, which is also the result."""
        self.in_result = True
        try:
            data, metadata = self.shell.display_formatter.format(value)
        finally:
            self.in_result = False
        if set(data) - {"text/plain"}:
            self.emit({"type": RESULT, "data": _jsonable(data), "metadata": _plain(metadata)})
        elif data:
            # plain text travels in the contract's result slot, with the answer: no file, and no flush for the
            # marker itself (nothing of it can be shown before the answer); what the cell wrote before its
            # value goes out now, as ipykernel's displayhook flushes both streams before it sends a result
            if any(since is not None for since in self.pending_since.values()):
                for tee in list(self.tees):
                    tee.flush()
            self.mark(RESULT_PLACE, flush=False)
        return data, metadata

    def page(self, strng: Any, start: int = 0, screen_lines: int = 0, pager_cmd: Any = None) -> None:
        """IPython's pager (`obj?` anywhere in a cell, `%magic`, `%quickref`): a page for the reply's
        payload, as ipykernel's payload pager makes it."""
        data = strng if isinstance(strng, dict) else {"text/plain": str(strng)}
        self.emit({"type": PAGE, "data": _jsonable(data), "start": max(0, int(start or 0))})

    def showtraceback(self, etype: Any, evalue: Any, stb: Any) -> None:
        """A traceback after the cell's code (an end-of-cell hook such as matplotlib's drawing failed): an
        error output, and the cell still succeeds, as on ipykernel; during the code, the session's own."""
        if self.late and self.depth <= 1 and isinstance(stb, list):
            self.emit({"type": ERROR, "ename": getattr(etype, "__name__", str(etype)), "evalue": str(evalue),
                       "traceback": [str(line) for line in stb]})
            return
        self.shown_traceback(etype, evalue, stb)

    def clear_output(self, wait: bool = False) -> None:
        self.mark(CLEAR_WAIT if wait else CLEAR)

    def emit(self, item: dict[str, Any]) -> None:
        """Show one output: inline in its marker when small, else appended to the cell's file."""
        item["late"] = self.late
        if self.ordering and not self.late:  # ipykernel flushes both streams before it shows an output
            for tee in list(self.tees):
                tee.flush()
        line = json.dumps(item, ensure_ascii=False)
        in_long = self.long is not None and threading.get_ident() == self.long.thread_ident
        if len(line) <= INLINE_LIMIT and (in_long or self.stdout_size + len(line) <= INLINE_STDOUT):
            self.mark(INLINE + line)
            return
        if in_long:  # a long cell's cell file would be gone before a poll reads it: its text stands in
            sys.stdout.write(f"{item.get('data', {}).get('text/plain', '')}\n[output too large for a long cell: "
                             f"{len(line)} bytes]\n")
            return
        index = self.count
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, f"{self.nonce}-{self.cell}.jsonl"), "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:  # no room in the session's files: show what plain output would
            sys.stdout.write(f"{item.get('data', {}).get('text/plain', '')}\n[rich output not saved: {exc}]\n")
            return
        self.count += 1
        self.mark(str(index))

    def mark(self, token: str, flush: bool = True) -> None:
        out = sys.stdout
        if not isinstance(out, Tee) and self.tees:
            # code redirected sys.stdout (`%%capture --no-display`, contextlib.redirect_stdout): an output
            # is still shown, as ipykernel's display messages are, never written into the redirection
            out = self.tees[0]
        self.marking = True
        try:
            out.write(f"{MARK_START}{self.nonce}:{self.cell}:{token}{MARK_END}")
            if flush and token[:1] != FLUSH:
                out.flush()  # an output is shown at once (the live events hold stdout until it is flushed)
        finally:
            self.marking = False


def install(shell: Any, nonce: str, live_log: bool = True, cell_digest: str | None = None) -> dict[str, Any]:
    """Hook `shell` (replacing an earlier install); the kernel reads the answer. `cell_digest`: the
    hash of the user's cell this install travels with (the line before it installs the shim; the
    cell then counts as the shim's first cell); None: the install is a helper execution."""
    if shell is None:
        raise RuntimeError("no IPython shell in this session")
    previous = sys.modules.get(MODULE)
    if previous is not None and getattr(previous, "active", None) is not None:
        previous.active.uninstall()
    root = "/mnt/data" if os.path.isdir("/mnt/data") else os.getcwd()
    shim = RichShim(shell, nonce, root)
    shim.live_log = live_log
    shim.install()
    if cell_digest is not None:  # the cell goes on running: it is the shim's first cell
        shim.depth = 1
        shim._begin_cell()
        with shim.live_lock:
            shim.live_header = json.dumps({"cell": shim.cell, "code": cell_digest})
    else:
        count, manager, lengths, _, _ = shim._history_state()  # this install is a helper too: out of the history
        shim.helper_state = (count, manager, [max(0, n - 1) for n in lengths], {}, {})
    holder = type(sys)(MODULE)  # what a later install finds, to take these hooks out first
    holder.active = shim  # type: ignore[attr-defined]
    sys.modules[MODULE] = holder
    return {"ok": True, "folder": FOLDER}
