"""Files beside the notebook (REMOTE_KERNEL_FILES=notebook, `%session files notebook`): before each cell,
the session's working folder (/mnt/data) is made to hold the files of the notebook's folder (the
kernel's working folder) as they are now on the user's side.

Only what changed since the last sync travels: each file sent is remembered by size, mtime and
SHA-256; a file whose size or mtime changed is hashed again and sent only when its content did. A
file deleted here is deleted there, but only one this kernel sent; nothing the session writes comes
back (that is `%download`). Bounded: at most MAX_FILES files and MAX_BYTES bytes in all (past either,
nothing is sent and a note says which limit and how to narrow the folder). Left out: hidden files and
folders (`.git`, `.ipynb_checkpoints`, `.venv` …), virtual environments (a folder with `pyvenv.cfg`),
`node_modules`, `__pycache__`, symbolic links that lead out of the folder, and what
REMOTE_KERNEL_FILES_EXCLUDE names (comma-separated patterns, matched against a path under the folder
and against each name in it).

Written here rather than with a sync library: the other end is the sessions file API (one upload or
delete per file), which no such library speaks.
"""
from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from remote_kernel.sessions.models import RemoteFileNotFound

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

MODES = ("off", "notebook")
MAX_FILES = 2000  # files beside the notebook that are synced at most
MAX_BYTES = 512 << 20  # bytes in all
PARALLEL = 4  # uploads at a time
SKIPPED_NAMES = frozenset({"node_modules", "__pycache__"})


@dataclass(frozen=True)
class Seen:
    """What a file was when it was sent."""

    size: int
    mtime_ns: int
    digest: str


@dataclass
class Scan:
    """The files of the folder that would be synced, and why the sync cannot go ahead (None: it can)."""

    files: dict[str, os.stat_result] = field(default_factory=dict)
    total: int = 0
    problem: str | None = None


def excluded(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether a path under the folder (with `/`) matches one of the user's patterns."""
    parts = relative.split("/")
    return any(fnmatch.fnmatch(relative, p) or any(fnmatch.fnmatch(part, p) for part in parts) for p in patterns)


def scan(root: Path, patterns: tuple[str, ...] = ()) -> Scan:
    """The files under `root` that travel (see the module's docstring), within the limits."""
    found = Scan()
    top = root.resolve()
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        rel_folder = here.relative_to(root).as_posix()
        kept = []
        for name in sorted(dirs):
            path = here / name
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if name.startswith(".") or name in SKIPPED_NAMES or path.is_symlink() or (path / "pyvenv.cfg").exists() \
                    or excluded(rel, patterns):
                continue
            kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if name.startswith(".") or excluded(rel, patterns):
                continue
            path = here / name
            try:
                if path.is_symlink() and not path.resolve().is_relative_to(top):
                    continue
                info = path.stat()
            except OSError:
                continue
            if not path.is_file():
                continue
            found.files[rel] = info
            found.total += info.st_size
            if len(found.files) > MAX_FILES or found.total > MAX_BYTES:
                what = (f"more than {MAX_FILES} files" if len(found.files) > MAX_FILES
                        else f"more than {MAX_BYTES >> 20} MiB")
                found.problem = (f"REMOTE_KERNEL_FILES=notebook: the notebook's folder {root} holds {what} (the "
                                 "limit); nothing was synced. Leave folders out with REMOTE_KERNEL_FILES_EXCLUDE "
                                 "(comma-separated patterns, e.g. data/raw,*.parquet) and restart the kernel, move "
                                 "the notebook to a smaller folder, or %upload what the code needs.\n")
                return found
    return found


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


class NotebookFiles:
    """The sync of one kernel: its mode, and what the current session was sent."""

    def __init__(self, mode: str = "off", root: Path | None = None, patterns: tuple[str, ...] = ()) -> None:
        self.mode = mode
        self.root = root or Path.cwd()
        self.patterns = patterns
        self.sent: dict[str, Seen] = {}
        self._said: str | None = None  # the last note, not repeated until it changes

    @property
    def on(self) -> bool:
        return self.mode == "notebook"

    def forget(self) -> None:
        """The session changed: it has none of the files."""
        self.sent = {}

    async def sync(self, client: SessionsClient) -> str | None:
        """Send what changed since the last sync, delete what was removed here; a note for the user, or None."""
        if not self.on:
            return None
        found = await asyncio.to_thread(scan, self.root, self.patterns)
        if found.problem is not None:
            note, self._said = (None if found.problem == self._said else found.problem), found.problem
            return note
        changed = await asyncio.to_thread(self._changed, found)
        gate = asyncio.Semaphore(PARALLEL)
        failed: list[str] = []

        async def send(rel: str, seen: Seen) -> None:
            async with gate:
                try:
                    await client.upload(self.root / rel, rel)
                except OSError:
                    return  # gone or unreadable since the scan: the next sync sees it again
                except Exception as exc:
                    failed.append(f"{rel} ({exc})")
                    return
                self.sent[rel] = seen

        await asyncio.gather(*(send(rel, seen) for rel, seen in changed.items()))
        for rel in [rel for rel in self.sent if rel not in found.files]:
            try:
                await client.delete_file(rel)
            except RemoteFileNotFound:
                pass
            del self.sent[rel]
        if not failed:
            return None
        note = (f"REMOTE_KERNEL_FILES=notebook: {len(failed)} file(s) beside the notebook could not be sent to "
                f"the session: {'; '.join(sorted(failed)[:3])}. Each cell tries again (this note comes once).\n")
        note, self._said = (None if note == self._said else note), note
        return note

    def _changed(self, found: Scan) -> dict[str, Seen]:
        changed = {}
        for rel, info in found.files.items():
            before = self.sent.get(rel)
            if before is not None and before.size == info.st_size and before.mtime_ns == info.st_mtime_ns:
                continue
            try:
                now = Seen(info.st_size, info.st_mtime_ns, digest(self.root / rel))
            except OSError:
                continue
            if before is not None and before.digest == now.digest:
                self.sent[rel] = now  # touched, not changed
                continue
            changed[rel] = now
        return changed

    def shows(self, name: str) -> bool:
        """Whether a path (relative to the notebook's folder) exists here and would be synced."""
        rel = Path(os.path.normpath(name))
        if rel.is_absolute() or rel.parts[:1] == ("..",):
            return False
        text = rel.as_posix()
        return not any(part.startswith(".") or part in SKIPPED_NAMES for part in rel.parts) and \
            not excluded(text, self.patterns)
