"""The kernel's own magics: file transfers and the session, handled before anything is sent.

`%upload LOCAL [REMOTE]`, `%download REMOTE [LOCAL]`, `%files [PATH]`, `%rm REMOTE`, `%session`,
`%session new` and `%lsmagic`; `%name?` (or `%name -h`) shows a magic's help. One cell magic,
`%%long` (Python sessions), runs the cell in a thread of the session (cell.py). Every other
`%`, `%%` or `!` line belongs to the remote session and is sent through untouched.

A cell may start with several kernel magics and go on with code: the magics run first, in
order, then the rest of the cell is sent. The first failing magic stops the cell.
"""
from __future__ import annotations

import asyncio
import fnmatch
import glob
import html
import os
import posixpath
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from remote_kernel.kernel.events import FOLDER as HIDDEN_FOLDER  # the rich shim's (hidden from %files)
from remote_kernel.kernel.local_names import (
    NAME_MAX,
    ListingTooLarge,
    LocalFolder,
    UnsafeName,
    count_limit,
    depth_limit,
    entry_name,
    name_problem,
    no_case_twins,
)
from remote_kernel.sessions.models import AnswerTooLarge, ConfigurationError, RemoteFile, RemoteFileNotFound

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

SIZE_MAX = 1 << 50  # the largest file size %files believes (1 PiB); beyond it, or below 0, it shows "?"


class MagicError(Exception):
    """A magic could not run: bad arguments, a missing file. Shown as one short error."""

    def __init__(self, message: str, ename: str = "UsageError") -> None:
        super().__init__(message)
        self.ename = ename
        self.message = message


class MagicHost(Protocol):
    """What a magic needs: the session it acts on (`remote.RemoteSession` is one), and a way to show text."""

    @property
    def download_limit(self) -> int: ...  # bytes: REMOTE_KERNEL_DOWNLOAD_LIMIT

    def publish(self, msg_type: str, content: dict[str, Any]) -> None: ...

    async def client(self) -> SessionsClient: ...

    def rows(self) -> list[tuple[str, str]]: ...

    async def new_session(self) -> tuple[str, str]: ...

    async def session_magics(self) -> str | None: ...

    def allow_active_content(self, allowed: bool) -> None: ...

    def sync_notebook_files(self, mode: str) -> None: ...  # REMOTE_KERNEL_FILES for this kernel: off, notebook


@dataclass(frozen=True)
class Magic:
    """One kernel magic: its usage line and help text."""

    name: str
    usage: str
    summary: str
    details: str = ""
    cell: bool = False  # a cell magic (`%%name` on a cell's first line), run by the kernel's cell path

    @property
    def help(self) -> str:
        text = f"{self.usage}\n\n{self.summary}\n"
        return text + (f"\n{self.details}\n" if self.details else "")


MAGICS: dict[str, Magic] = {m.name: m for m in (
    Magic("upload", "%upload LOCAL [REMOTE]",
          "Copy the local file LOCAL into the session's /mnt/data (as REMOTE, default: the same file name).",
          "LOCAL may be a folder (copied with everything in it) or a pattern such as 'data/*.csv' or "
          "'**/*.json'; REMOTE is then the folder they go to (default: the folder's name, or /mnt/data). "
          "REMOTE may name a folder ending in '/'. One progress bar shows the whole transfer."),
    Magic("download", "%download REMOTE [LOCAL]",
          "Copy /mnt/data/REMOTE from the session to LOCAL (default: the same file name, in the current folder).",
          "REMOTE may be a folder (copied with everything in it) or a pattern such as '*.png'; LOCAL is then "
          "the folder they go to (default: the current folder). LOCAL may be an existing folder. Each file "
          "appears only once it is complete; a folder's files appear only once all of them arrived. Every name "
          "the session lists must be one plain file name that stays inside LOCAL, and a folder is followed at "
          "most 32 levels deep and for at most 10000 files; past that, nothing is downloaded."),
    Magic("files", "%files [PATH]",
          "List the files in the session's /mnt/data (or in its folder PATH): name, size, modified."),
    Magic("rm", "%rm REMOTE", "Delete /mnt/data/REMOTE in the session."),
    Magic("session", "%session [new | active on|off | files notebook|off]",
          "Show how the kernel reaches its session (endpoint, api-version, identifier, auth mode, pool type).",
          "`%session new` deletes the session, with its variables and files, and starts afresh.\n"
          "`%session active on` lets scripts, event handlers and application/javascript in the session's outputs "
          "reach the notebook (they are removed by default: the front end would run them on your machine's "
          "Jupyter server); `%session active off` removes them again.\n"
          "`%session files notebook` makes the session's working folder hold the files of the notebook's folder "
          "before each cell (what changed since the last cell travels; nothing comes back without %download); "
          "`%session files off` stops it (REMOTE_KERNEL_FILES sets it at start)."),
    Magic("lsmagic", "%lsmagic", "List the kernel's magics."),
    Magic("long", "%%long", "Run the rest of the cell in a thread of the session (Python sessions), past the pool's "
          "execution time limit, its output shown as it comes.",
          "The cell keeps running in the session while short executions read its output; an interrupt stops it "
          "at its next Python line (interrupt again to stop following it). Use it for cells that run longer "
          "than the pool allows one execution (220 s on hosted pools).", cell=True),
)}

_LINE = re.compile(r"^%(?P<name>[A-Za-z_]\w*)(?P<help>\?{1,2})?(?:\s+(?P<rest>.*?))?\s*$")


@dataclass(frozen=True)
class MagicLine:
    """One line of a cell that calls a kernel magic."""

    name: str
    rest: str  # the arguments, as typed
    help: bool

    def args(self) -> list[str]:
        try:
            return shlex.split(self.rest)
        except ValueError as exc:  # unbalanced quotes
            raise MagicError(f"%{self.name}: {exc}\nusage: {MAGICS[self.name].usage}") from None


def parse_line(line: str) -> MagicLine | None:
    """The kernel magic called on `line`, or None when the line is not one (remote magics included)."""
    match = _LINE.match(line.strip())
    if not match or match.group("name") not in MAGICS or MAGICS[match.group("name")].cell:
        return None
    rest = match.group("rest") or ""
    wants_help = bool(match.group("help")) or rest in ("-h", "--help", "?")
    return MagicLine(match.group("name"), rest, wants_help)


def split_cell(code: str) -> tuple[list[MagicLine], str]:
    """The kernel magics a cell starts with, and the code that is left to send."""
    lines = code.splitlines(keepends=True)
    calls: list[MagicLine] = []
    for index, line in enumerate(lines):
        if not line.strip() or (line.lstrip().startswith("#") and calls):
            continue
        call = parse_line(line)
        if call is None:
            return calls, "".join(lines[index:]) if calls else code
        calls.append(call)
    return calls, ""


def human_size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """A progress bar as a `display_data` with a display_id, redrawn in place (no widgets needed)."""

    width = 30

    def __init__(self, publish: Callable[[str, dict[str, Any]], None], label: str, total: int | None = None,
                 interval: float = 0.1) -> None:
        self.publish = publish
        self.label = label
        self.total = total
        self.interval = interval
        self.display_id = f"remote-kernel-progress-{uuid.uuid4().hex}"
        self.done = 0
        self._shown = False
        self._last = 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self._shown and now - self._last < self.interval:
            return
        self._draw()
        self._last = now

    def finish(self) -> None:
        if self.total is None or self.done > self.total:
            self.total = self.done
        self._draw()

    def _draw(self) -> None:
        total = self.total
        if total:
            fraction = min(self.done / total, 1.0)
            filled = int(fraction * self.width)
            figures = f"{fraction:4.0%}  {human_size(self.done)} / {human_size(total)}"
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}]"
            meter = f'<progress value="{self.done}" max="{total}" style="width: 20em"></progress>'
        else:
            figures, bar = human_size(self.done), ""
            meter = '<progress style="width: 20em"></progress>'
        content = {
            "data": {"text/plain": f"{self.label}  {bar} {figures}" if bar else f"{self.label}  {figures}",
                     "text/html": f"<div><code>{html.escape(self.label)}</code> {meter} {html.escape(figures)}</div>"},
            "metadata": {},
            "transient": {"display_id": self.display_id},
        }
        self.publish("update_display_data" if self._shown else "display_data", content)
        self._shown = True


def _summary(verb: str, source: str, target: str, size: int, seconds: float) -> str:
    rate = f", {human_size(size / seconds)}/s" if seconds > 0.05 else ""
    return f"{verb} {source} → {target} ({human_size(size)} in {seconds:.1f} s{rate})\n"


def _join(folder: str, name: str) -> str:
    """A remote path: `name` under `folder` ("" is /mnt/data itself)."""
    return posixpath.join(folder, name) if folder and folder != "." else name


def _remote_path(name: str) -> str:
    return name if name.startswith("/") else f"/mnt/data/{name}"


def _checked(listing: list[RemoteFile], folder: str) -> list[tuple[str, RemoteFile]]:
    """(own name, entry) for each entry of a listing of the remote `folder`: UnsafeName for a name that
    is not one plain path component, or for two that differ only by case."""
    named = [(entry_name(item.name, folder), item) for item in listing]
    no_case_twins((name for name, _ in named), folder)
    return named


def _drop_if_empty(folder: Path, made: bool) -> None:
    """Remove `folder` when this download made it and a failure left it empty."""
    if made:
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (the download succeeded, or something else wrote there), or gone


def _modified(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo is not None else "")


def _too_large(what: str, limit: int, exc: Exception) -> MagicError:
    return MagicError(f"%download: {what} is larger than the download limit of {human_size(limit)} ({limit} bytes); "
                      "that file was not saved. Raise REMOTE_KERNEL_DOWNLOAD_LIMIT (e.g. REMOTE_KERNEL_DOWNLOAD_LIMIT=16G) "
                      f"in the kernel's environment and restart it to fetch more. ({exc})", "DownloadTooLarge")


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(name: str, limit: int = 200) -> str:
    """A name as one line of plain text: control characters (ANSI escapes, newlines, bidi overrides)
    shown as escapes, and at most `limit` characters."""
    shown = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), name)
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def _moved(report: Callable[[int], None], start: int) -> Callable[[int, int | None], None]:
    """A transfer's progress callback that reports `start` plus the bytes this transfer moved."""
    def moved(count: int, total: int | None = None) -> None:
        report(start + count)
    return moved


def checked_size(size: Any) -> int | None:
    """A file size the table can show: a whole number of bytes from 0 to 1 PiB, else None ("?")."""
    return size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= SIZE_MAX else None


def files_table(files: list[RemoteFile]) -> dict[str, str]:
    """A `text/plain` and a `text/html` table of files: name, size, modified (names shown safely)."""
    rows = [(printable(f.name) + ("/" if f.is_directory else ""),
             "" if f.is_directory else human_size(checked_size(f.size)), _modified(f.modified))
            for f in sorted(files, key=lambda f: (not f.is_directory, f.name))]
    header = ("name", "size", "modified")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}".rstrip() for r in [header, *rows]]
    text = "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])
    cells = "".join(f"<tr><td>{html.escape(r[0])}</td><td style='text-align:right'>{html.escape(r[1])}</td>"
                    f"<td>{html.escape(r[2])}</td></tr>" for r in rows)
    table = f"<table><thead><tr><th>name</th><th>size</th><th>modified</th></tr></thead><tbody>{cells}</tbody></table>"
    return {"text/plain": text, "text/html": table}


_MISSING_FILE = re.compile(r"\[Errno 2\] No such file or directory: (?P<q>['\"])(?P<name>.+?)(?P=q)$")
_NOT_FOUND = re.compile(r"^(?P<name>[^\n]+?) not found\.$")  # numpy's loadtxt, genfromtxt, load
_NO_MODULE = re.compile(r"^No module named (?P<q>['\"])(?P<name>[\w.]+)(?P=q)$")
# what a command says (`!head x`, `!cat x`, `!ls x`): "head: cannot open 'x' for reading: No such file or directory"
_COMMAND_MISSING = re.compile(r"^[\w.+-]+: (?:cannot (?:open|access|stat) )?(?P<q>['‘\"]?)(?P<name>[^'’\"\n:]+)"
                              r"['’\"]?(?: for reading)?: No such file or directory\r?$", re.MULTILINE)
_LS_CELL = re.compile(r"^\s*(?:!|%)?ls(?:\s+-\w+)*\s*$")
SYNC_ADVICE = ("let the session see the notebook's folder with `%session files notebook` (or REMOTE_KERNEL_FILES="
               "notebook in the kernel's environment)")


def missing_file_hint(ename: str, evalue: str, here: Path | None = None, *, stderr: str = "", stdout: str = "",
                      code: str = "", files: Any = None) -> str | None:
    """For a file or package the session lacks but the notebook's folder has (a FileNotFoundError, numpy's
    "x not found.", a ModuleNotFoundError, a `!`-command's "No such file or directory", an empty `!ls`):
    how the session gets it. `files`: the kernel's `NotebookFiles` (None: the sync is off)."""
    def folder() -> Path:  # the notebook's folder, looked up only for a cell that may need a hint (most do not)
        return Path(here or Path.cwd())

    syncing = files is not None and getattr(files, "on", False)
    name, module = None, None
    match = (_MISSING_FILE.search(evalue or "") or _NOT_FOUND.match(evalue or "")) if ename == "FileNotFoundError" \
        else None
    if match is not None:
        name = match.group("name")
    elif ename == "ModuleNotFoundError" and (found := _NO_MODULE.match(evalue or "")):
        top = found.group("name").split(".")[0]
        module = next((m for m in (top, f"{top}.py") if (folder() / m).exists()), None)
        name = module
    elif (stderr or stdout) and (found := _COMMAND_MISSING.search(f"{stderr}\n{stdout}")) is not None:  # a `!`-command's streams are merged
        name = found.group("name").strip()
    elif _LS_CELL.match(code or "") and not (stdout or "").strip() and not syncing:
        where = folder()
        if any(not p.name.startswith(".") for p in where.iterdir()):
            return (f"Hint: the session's working folder (/mnt/data) is not the notebook's folder ({where}): "
                    f"{SYNC_ADVICE}, or %upload the files the code needs.\n")
        return None
    if name is None:
        return None
    local = folder() / name
    if not local.exists() or name.startswith("/mnt/data/"):
        return None
    if syncing and files.shows(name):
        return None  # it travels with the next cell (or the sync said why it could not)
    kind = "package" if module is not None else "folder" if local.is_dir() else "file"
    quoted = shlex.quote(name)
    if name.startswith(("/", "..")) or "/../" in name:
        remote = PurePosixPath(name).name
        how = f"`%upload {quoted} {shlex.quote(remote)}`, then open it as {remote!r}"
    else:
        how = f"`%upload {quoted}{(' ' + quoted) if '/' in name.rstrip('/') else ''}`"  # the same path there
    if syncing:
        return (f"Hint: {name} is a {kind} beside the notebook ({local.resolve()}), but it is left out of what "
                "REMOTE_KERNEL_FILES=notebook sends (hidden, in a virtual environment, outside the notebook's folder "
                f"or excluded by REMOTE_KERNEL_FILES_EXCLUDE). Copy it with {how}.\n")
    advice = f"{SYNC_ADVICE}, or copy it there with {how}" if not name.startswith(("/", "..")) else \
        f"copy it there with {how}"
    return (f"Hint: {name} is a {kind} on the kernel's side ({local.resolve()}), but the code runs in a remote "
            f"session, whose working folder is /mnt/data: {advice}.\n")


_STDIN_MAGIC = re.compile(r"^\s*%{1,2}(?P<name>debug|pdb)\b(?P<rest>.*)$", re.MULTILINE)


def stdin_needed(code: str) -> str | None:
    """Why a cell cannot run in a remote session, when it asks for the interactive debugger (no stdin there)."""
    for match in _STDIN_MAGIC.finditer(code):
        name, rest = match.group("name"), match.group("rest").strip().lower()
        if name == "pdb" and rest in ("off", "0", "false"):
            continue
        return (f"%{name} needs stdin for the debugger's prompt, and a cell in a remote session has none "
                "(as ipykernel says when a front end sends no input). Inspect values in a new cell instead: "
                "the last exception is sys.last_value, its frames are in sys.last_traceback, and %tb shows "
                "its traceback again.")
    return None


class MagicRunner:
    """Runs kernel magics against the session the host gives."""

    def __init__(self, host: MagicHost) -> None:
        self.host = host
        self._handlers: dict[str, Callable[[list[str]], Awaitable[None]]] = {
            "upload": self.upload, "download": self.download, "files": self.files, "rm": self.rm,
            "session": self.session, "lsmagic": self.lsmagic,
        }

    def _print(self, text: str) -> None:
        self.host.publish("stream", {"name": "stdout", "text": text})

    async def run(self, call: MagicLine) -> list[dict[str, Any]]:
        """Run one magic; returns the reply payload (the pager, for `%name?`)."""
        magic = MAGICS[call.name]
        if call.help:
            if call.rest in ("-h", "--help"):
                self._print(magic.help)
                return []
            return [{"source": "page", "data": {"text/plain": magic.help}, "start": 0}]
        await self._handlers[call.name](call.args())
        return []

    @staticmethod
    def _usage(name: str, problem: str) -> MagicError:
        return MagicError(f"%{name}: {problem}\nusage: {MAGICS[name].usage}")

    async def upload(self, args: list[str]) -> None:
        if not 1 <= len(args) <= 2:
            raise self._usage("upload", "expected a local file and, optionally, a remote name")
        pattern = os.path.expanduser(args[0])
        if glob.has_magic(pattern):
            files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not files:
                raise MagicError(f"%upload: no local file matches {args[0]}", "FileNotFoundError")
            base = os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0]) or "."
            folder = args[1] if len(args) == 2 else ""
            await self._upload_many([(f, _join(folder, os.path.relpath(f, base))) for f in files], args[0])
            return
        local = Path(pattern)
        if not local.exists():
            raise MagicError(f"%upload: no such local file: {args[0]}", "FileNotFoundError")
        if local.is_dir():
            folder = args[1] if len(args) == 2 else local.resolve().name
            files = sorted(p for p in local.rglob("*") if p.is_file())
            if not files:
                raise MagicError(f"%upload: the folder {args[0]} has no files", "FileNotFoundError")
            await self._upload_many([(f, _join(folder, f.relative_to(local).as_posix())) for f in files], args[0])
            return
        remote = args[1] if len(args) == 2 else local.name
        if remote.endswith("/"):
            remote += local.name
        size = local.stat().st_size
        client = await self.host.client()
        progress = Progress(self.host.publish, f"upload {local.name}", size)
        started = time.monotonic()
        progress(0, size)
        info = await client.upload(local, remote_name=remote, progress=progress)
        progress.finish()
        name = getattr(info, "name", None) or remote
        self._print(_summary("Uploaded", str(local), _remote_path(name), size, time.monotonic() - started))

    async def _upload_many(self, pairs: list[tuple[Path, str]], source: str) -> None:
        """Upload (local, remote name) pairs, one after the other, under one progress bar."""
        sizes = [local.stat().st_size for local, _ in pairs]
        total = sum(sizes)
        client = await self.host.client()
        progress = Progress(self.host.publish, f"upload {len(pairs)} files", total)
        started, done = time.monotonic(), 0
        progress(0, total)
        for (local, remote), size in zip(pairs, sizes, strict=True):
            await client.upload(local, remote_name=remote,
                                progress=_moved(lambda sent: progress(sent, total), done))
            done += size
        progress.finish()
        where = {_remote_path(remote).rsplit("/", 1)[0] for _, remote in pairs}
        target = where.pop() if len(where) == 1 else "/mnt/data"
        self._print(_summary(f"Uploaded {len(pairs)} files:", source, target + "/", total, time.monotonic() - started))

    async def download(self, args: list[str]) -> None:
        if not 1 <= len(args) <= 2:
            raise self._usage("download", "expected a remote file and, optionally, a local name")
        remote = args[0]
        if glob.has_magic(remote) or remote.endswith("/"):
            await self._download_many(remote, args[1] if len(args) == 2 else None)
            return
        basename = PurePosixPath(remote).name
        if not basename or basename in (".", ".."):
            raise self._usage("download", f"{remote!r} names no file")
        problem = name_problem(basename) if len(args) == 1 else None
        if problem:
            raise self._usage("download", f"the remote name {basename!r} cannot be a local file name: {problem}; "
                                          "name the local file: %download REMOTE LOCAL")
        local = Path(args[1]).expanduser() if len(args) == 2 else Path(basename)
        too_long = [part for part in local.parts if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX]
        if too_long:
            raise self._usage("download", f"the local name {too_long[0][:40]}… is {len(too_long[0])} characters "
                                          f"long; a file name may have at most {NAME_MAX} bytes")
        try:
            if local.is_dir():
                local = local / basename
            if not local.parent.is_dir():
                raise MagicError(f"%download: no such local folder: {local.parent}", "FileNotFoundError")
        except OSError as exc:
            raise self._usage("download",
                              f"cannot use the local name {str(local)[:80]!r}: {exc.strerror or exc}") from exc
        client = await self.host.client()
        limit = self.host.download_limit
        progress = Progress(self.host.publish, f"download {basename}")
        started = time.monotonic()
        try:
            size = await client.download(remote, local, progress=progress, limit=limit)
        except RemoteFileNotFound:
            if await self._remote_folder(client, remote):  # a folder named without its '/'
                await self._download_many(remote + "/", args[1] if len(args) == 2 else None)
                return
            raise MagicError(f"%download: no such remote file: {remote} (see %files)", "RemoteFileNotFound") from None
        except AnswerTooLarge as exc:
            raise _too_large(remote, limit, exc) from None
        except OSError as exc:
            raise MagicError(f"%download: cannot write {str(local)[:80]!r}: {exc.strerror or exc}", type(exc).__name__) \
                from None
        progress.done = size
        progress.finish()
        self._print(_summary("Downloaded", _remote_path(remote), str(local), size, time.monotonic() - started))

    @staticmethod
    async def _remote_folder(client: SessionsClient, folder: str) -> list[RemoteFile] | None:
        """The listing of a remote folder, or None when there is no such folder."""
        try:
            return await client.list_files(folder.strip("/") or None)
        except (RemoteFileNotFound, ConfigurationError):
            return None

    async def _remote_tree(self, client: SessionsClient, folder: str) -> list[tuple[str, RemoteFile]]:
        """(path under `folder`, file) for every file in a remote folder, its subfolders included: every
        name checked, the walk bounded in depth, files and folders (local_names)."""
        found: list[tuple[str, RemoteFile]] = []
        pending = [""]
        listed = 0
        while pending:
            below = pending.pop()
            listed += 1
            count_limit(len(found), listed, folder)
            listing = await self._remote_folder(client, _join(folder, below))
            for name, item in _checked(listing or [], _join(folder, below)):
                path = _join(below, name)
                if item.is_directory:
                    if path.split("/", 1)[0] != HIDDEN_FOLDER:
                        depth_limit(path, folder)
                        pending.append(path)
                else:
                    found.append((path, item))
            count_limit(len(found), listed, folder)
        return found

    async def _download_many(self, remote: str, local_arg: str | None) -> None:
        """Download a remote folder (ending in '/') or the files matching a pattern into a local folder.

        Nothing is written before every name is checked; the files are fetched into a hidden folder
        inside the target and moved into place only when all of them arrived, so a failure leaves none.
        """
        client = await self.host.client()
        try:
            folder, matched, target = await self._matching(client, remote, local_arg)
        except (UnsafeName, ListingTooLarge) as exc:
            raise MagicError(f"%download: {exc}", type(exc).__name__) from None
        if not matched:
            raise MagicError(f"%download: no remote file matches {remote} (see %files)", "RemoteFileNotFound")
        limit = self.host.download_limit  # for the whole transfer
        declared = sum(checked_size(f.size) or 0 for _, f in matched)
        if declared > limit:
            raise MagicError(f"%download: the {len(matched)} files of {remote} are {human_size(declared)} in all, more "
                             f"than the download limit of {human_size(limit)} ({limit} bytes); nothing was downloaded. "
                             "Raise REMOTE_KERNEL_DOWNLOAD_LIMIT (e.g. REMOTE_KERNEL_DOWNLOAD_LIMIT=16G) in the "
                             "kernel's environment and restart it, or download fewer files.", "DownloadTooLarge")
        progress = Progress(self.host.publish, f"download {len(matched)} files", declared or None)
        started = time.monotonic()
        done = await self._fetch_into(client, folder, remote, matched, target, limit, progress)
        progress.done = done
        progress.finish()
        self._print(_summary(f"Downloaded {len(matched)} files:", _remote_path(remote), f"{target}/", done,
                             time.monotonic() - started))

    async def _matching(self, client: SessionsClient, remote: str,
                        local_arg: str | None) -> tuple[str, list[tuple[str, RemoteFile]], Path]:
        """The remote folder, the (checked path under it, file) pairs that `remote` names, and the local folder."""
        if glob.has_magic(remote):
            parts = remote.split("/")
            first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            folder, pattern = "/".join(parts[:first]), "/".join(parts[first:])
            if "/" in pattern:  # 'data/**/*.csv', 'runs/*/out.json': every file below, matched by path
                tree = await self._remote_tree(client, folder)
                matched = [(name, f) for name, f in tree
                           if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, pattern.replace("**/", ""))]
            else:  # '*.csv': the files of the folder itself
                listing = await self._remote_folder(client, folder) or []
                matched = [(name, f) for name, f in _checked(listing, folder)
                           if not f.is_directory and fnmatch.fnmatch(name, pattern)]
            return folder, matched, Path(local_arg).expanduser() if local_arg else Path(".")
        folder = remote.rstrip("/")
        if await self._remote_folder(client, folder) is None:
            raise MagicError(f"%download: no such remote folder: {remote} (see %files)", "RemoteFileNotFound")
        own = PurePosixPath(folder).name
        default = own if own and name_problem(own) is None else "data"
        return folder, await self._remote_tree(client, folder), Path(local_arg).expanduser() if local_arg else Path(default)

    async def _fetch_into(self, client: SessionsClient, folder: str, remote: str, matched: list[tuple[str, RemoteFile]],
                          target: Path, limit: int, progress: Progress) -> int:
        """Fetch every file into a hidden folder of `target`, then move each to its checked place; the bytes."""
        made = not target.exists()
        try:
            await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
            local = LocalFolder(target)
            paths = [local.path_for(name) for name, _ in matched]
            staging = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".remote-kernel-download-",
                                                   dir=local.root))
        except UnsafeName as exc:
            _drop_if_empty(target, made)
            raise MagicError(f"%download: {exc}", "UnsafeName") from None
        except OSError as exc:
            _drop_if_empty(target, made)
            raise MagicError(f"%download: cannot use the local folder {str(target)[:80]!r}: {exc.strerror or exc}",
                             type(exc).__name__) from None
        done = 0
        progress(0, progress.total)
        try:
            for index, (name, _) in enumerate(matched):
                done += await client.download(_join(folder, name), staging / str(index), limit=max(0, limit - done),
                                              progress=_moved(progress, done))
            for index, path in enumerate(paths):
                await asyncio.to_thread(local.place, staging / str(index), path)
        except AnswerTooLarge as exc:
            raise _too_large(f"{remote} ({name} and the files before it)", limit, exc) from None
        except UnsafeName as exc:
            raise MagicError(f"%download: {exc}", "UnsafeName") from None
        except OSError as exc:
            raise MagicError(f"%download: cannot write into {str(target)[:80]!r}: {exc.strerror or exc}; the files "
                             "not yet moved into place were not saved.", type(exc).__name__) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            _drop_if_empty(target, made)
        return done

    async def files(self, args: list[str]) -> None:
        if len(args) > 1:
            raise self._usage("files", "expected at most one folder")
        client = await self.host.client()
        try:
            found = await client.list_files(args[0] if args else None)
        except RemoteFileNotFound:
            raise MagicError(f"%files: no such remote folder: {args[0]}", "RemoteFileNotFound") from None
        if not args or args[0].strip("/") in ("", "mnt/data"):
            found = [f for f in found if f.name.strip("/").split("/")[0] != HIDDEN_FOLDER]  # rich output's
        where = _remote_path(args[0]) if args else "/mnt/data"
        if not found:
            self._print(f"(no files in {where})\n")
            return
        self.host.publish("display_data", {"data": files_table(found), "metadata": {}, "transient": {}})

    async def rm(self, args: list[str]) -> None:
        if len(args) != 1:
            raise self._usage("rm", "expected exactly one remote file")
        client = await self.host.client()
        try:
            await client.delete_file(args[0])
        except RemoteFileNotFound:
            raise MagicError(f"%rm: no such remote file: {args[0]} (see %files)", "RemoteFileNotFound") from None
        self._print(f"Deleted {_remote_path(args[0])}\n")

    async def session(self, args: list[str]) -> None:
        if args == ["new"]:
            old, new = await self.host.new_session()
            self._print(f"Deleted session {old}; the next cell starts an empty session ({new}).\n")
            return
        if len(args) == 2 and args[0] == "active" and args[1] in ("on", "off"):
            self.host.allow_active_content(args[1] == "on")
            self._print("Active content (scripts, event handlers) in outputs: "
                        + ("allowed for this kernel.\n" if args[1] == "on" else "removed (the default).\n"))
            return
        if len(args) == 2 and args[0] == "files" and args[1] in ("notebook", "off"):
            self.host.sync_notebook_files(args[1])
            self._print("Files beside the notebook: " + (
                "the session's working folder gets the files of the notebook's folder before each cell (what "
                "changed travels; what the session writes stays there).\n" if args[1] == "notebook" else
                "not synced (files already sent stay in the session).\n"))
            return
        if args:
            raise self._usage("session", f"unknown argument {' '.join(args)!r}")
        rows = self.host.rows()
        width = max(len(name) for name, _ in rows)
        self._print("".join(f"{name + ':':<{width + 1}}  {value}\n" for name, value in rows))

    async def lsmagic(self, args: list[str]) -> None:
        if args:
            raise self._usage("lsmagic", "takes no arguments")
        width = max(len(m.usage) for m in MAGICS.values())
        lines = [f"  {m.usage:<{width}}  {m.summary.split('.')[0]}" for m in MAGICS.values()]
        self._print("Kernel magics (run here, before anything is sent):\n" + "\n".join(lines) +
                    "\n\nAppend ? for help (%upload?). Every other %magic, %%cell magic and !command "
                    "runs in the remote session.\n")
        session = await self.host.session_magics()
        if session:
            self._print("\nSession magics (run in the remote session):\n" + session.rstrip("\n") + "\n")
