"""The session side of rich output: runs inside a remote session, never in the kernel.

The kernel sends this file's text once per session as a silent execution (and again after the
session was found lost); it needs only the standard library and IPython. It hooks IPython's
display machinery so that each `display()`, each `clear_output()`, each matplotlib figure
shown or left open at the end of a cell, and the cell's result become MIME bundles. Each is
appended as one JSON line to a file of the cell in a hidden folder of the session's files, and
a short marker is written to stdout where it happened; the kernel splits stdout at the
markers, downloads the file (only when there was a marker) and interleaves the outputs.

A marker is `\\x1erk<nonce>:<cell>:<token>\\x1e`, where the token is the output's line in the cell's
file `.remote_kernel/<nonce>-<cell>.jsonl` under /mnt/data (or the working folder where there is
no /mnt/data), or, for what needs no file: `r` (the result, when it is plain text: it travels in
the contract's result slot), `c` or `w` (`clear_output()`, `clear_output(wait=True)`). A cell
with markers of the second kind only costs no download. The kernel picks the nonce.
"""
from __future__ import annotations

import base64
import json
import os
import sys

FOLDER = ".remote_kernel"
MODULE = "_remote_kernel_rich"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: text-like MIME types whose bytes are decoded rather than base64-encoded
_TEXT_TYPES = ("image/svg+xml", "application/javascript")


def _jsonable(data: object) -> dict:
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


def _plain(value: object) -> dict:
    try:
        json.dumps(value)
        return dict(value or {})
    except (TypeError, ValueError):
        return {}


class RichShim:
    """The hooks in one IPython shell; `install` puts them in, `uninstall` takes them out."""

    def __init__(self, shell: object, nonce: str, root: str) -> None:
        self.shell = shell
        self.nonce = nonce
        self.folder = os.path.join(root, FOLDER)
        self.cell = 0  # the number of the running cell (executions counted since install)
        self.count = 0  # outputs of the running cell
        self.late = False  # the cell's own code has ended: what follows is end-of-cell output
        self.depth = 1  # cells running (a cell may run another); the install itself runs as a cell
        self.saved: list[tuple[object, str, object]] = []

    # --- hooks in and out -------------------------------------------------------------------

    def install(self) -> None:
        shell = self.shell
        self._replace(shell.display_pub, "publish", self.publish)
        self._replace(shell.display_pub, "clear_output", self.clear_output)
        self._replace(shell.displayhook, "compute_format_data", self.result)
        shell.events.register("pre_execute", self.pre_execute)
        callbacks = shell.events.callbacks.get("post_execute")
        if isinstance(callbacks, list):
            callbacks.insert(0, self.code_ended)  # before any other end-of-cell hook (inline figures)
        else:
            shell.events.register("post_execute", self.code_ended)
        shell.events.register("post_execute", self.open_figures)
        self._use_inline_figures()

    def uninstall(self) -> None:
        for target, name, before in reversed(self.saved):
            if before is None:
                target.__dict__.pop(name, None)
            else:
                setattr(target, name, before)
        self.saved = []
        for event, callback in (("pre_execute", self.pre_execute), ("post_execute", self.code_ended),
                                ("post_execute", self.open_figures)):
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass

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
        self.cell += 1
        self.count = 0
        self.late = False
        try:  # the kernel fetched and deleted the last file; leftovers of failed fetches go now
            for name in os.listdir(self.folder):
                if name.endswith(".jsonl"):
                    os.unlink(os.path.join(self.folder, name))
        except OSError:
            pass

    def code_ended(self) -> None:
        self.late = self.late or self.depth <= 1

    def open_figures(self) -> None:
        """Every matplotlib figure still open when the cell ends is shown, then closed."""
        self.depth = max(0, self.depth - 1)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or self.depth > 0:
            return
        try:
            for number in pyplot.get_fignums():
                self.figure(pyplot.figure(number))
        finally:
            if pyplot.get_fignums():
                pyplot.close("all")

    def figure(self, fig: object) -> None:
        data, metadata = self.shell.display_formatter.format(fig)
        if "image/png" not in data:
            import io

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", bbox_inches="tight")
            data = {"image/png": buffer.getvalue(), "text/plain": data.get("text/plain", repr(fig))}
        self.emit({"type": "display", "data": _jsonable(data), "metadata": _plain(metadata)})

    # --- IPython's display machinery ----------------------------------------------------------

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs) -> None:
        self.emit({"type": "update" if update else "display", "data": _jsonable(data),
                   "metadata": _plain(metadata), "transient": _plain(transient)})

    def result(self, value: object) -> tuple[dict, dict]:
        """The displayhook's formatting of the cell's value: every MIME type, which is also the result."""
        data, metadata = self.shell.display_formatter.format(value)
        if set(data) - {"text/plain"}:
            self.emit({"type": "result", "data": _jsonable(data), "metadata": _plain(metadata)})
        elif data:
            self.mark("r")  # plain text travels in the contract's result slot: no file needed
        return data, metadata

    def clear_output(self, wait: bool = False) -> None:
        self.mark("w" if wait else "c")

    def emit(self, item: dict) -> None:
        """Append one output to the cell's file and mark its place in stdout."""
        index = self.count
        item["late"] = self.late
        line = json.dumps(item, ensure_ascii=False)
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, f"{self.nonce}-{self.cell}.jsonl"), "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:  # no room in the session's files: show what plain output would
            sys.stdout.write(f"{item.get('data', {}).get('text/plain', '')}\n[rich output not saved: {exc}]\n")
            return
        self.count += 1
        self.mark(str(index))

    def mark(self, token: str) -> None:
        sys.stdout.write(f"\x1erk{self.nonce}:{self.cell}:{token}\x1e")


def install(shell: object, nonce: str) -> dict:
    """Hook `shell` (replacing an earlier install); the kernel reads the answer."""
    if shell is None:
        raise RuntimeError("no IPython shell in this session")
    previous = sys.modules.get(MODULE)
    if previous is not None and getattr(previous, "active", None) is not None:
        previous.active.uninstall()
    root = "/mnt/data" if os.path.isdir("/mnt/data") else os.getcwd()
    shim = RichShim(shell, nonce, root)
    shim.install()
    holder = type(sys)(MODULE)  # what a later install finds, to take these hooks out first
    holder.active = shim
    sys.modules[MODULE] = holder
    return {"ok": True, "folder": FOLDER}
