"""Where a downloaded remote file may land: the checks between a pool's listing and a local path.

`%download FOLDER/` (or a pattern) turns the names a pool lists into local paths. The pool, or
whatever answers at its address, chooses those names, so none is trusted: each must be one plain
path component (not empty, `.` or `..`; no `/`, `\\`, NUL or other control character; at most
NAME_MAX bytes), two names of one folder may not differ only by case (on a case-blind file
system one would overwrite the other), and the local path, resolved through the local symbolic
links that already exist, must stay inside the folder the user named. A listing is also bounded:
folder depth, files, folders listed and the bytes it declares. Hand-written rather than a library:
pathlib gives the parts and `os.path.realpath` the resolution; what is left is the policy.
"""
from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

NAME_MAX = 255  # bytes of one local file name (Linux, macOS)
MAX_DEPTH = 32  # folder levels below the downloaded folder
MAX_FILES = 10_000  # files one %download fetches
MAX_FOLDERS = 2_000  # folders one %download lists
_FORBIDDEN = {chr(c) for c in range(0x20)} | {"\x7f", "/", "\\"}


class UnsafeName(ValueError):
    """A remote name that cannot become a local path; the message says which and why."""


class ListingTooLarge(ValueError):
    """A remote folder past the limits of one download; the message says what to do."""


def name_problem(name: str) -> str | None:
    """Why `name` is not one plain local path component, or None when it is."""
    if name in ("", ".", ".."):
        return "it names no file (empty, '.' or '..')"
    bad = sorted({c for c in name if c in _FORBIDDEN})
    if bad:
        return f"it holds {', '.join(repr(c) for c in bad)} (a name is one path component, without control characters)"
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return f"it is longer than {NAME_MAX} bytes"
    return None


def entry_name(listed: str, folder: str) -> str:
    """The checked own name of an entry `listed` in a listing of the remote `folder` (relative to /mnt/data).

    A pool may name an entry by its path ("folder/a.csv"); that prefix is taken off once, and what is
    left must be one plain component.
    """
    name = listed
    prefix = folder.strip("/") + "/" if folder.strip("/") not in ("", ".") else ""
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    problem = name_problem(name)
    if problem:
        where = f"the folder {folder!r}" if prefix else "/mnt/data"
        raise UnsafeName(f"the pool listed an entry {listed!r} in {where}, and {problem}; nothing was downloaded. "
                         "A pool that answers such names is misbehaving: check POOL_MANAGEMENT_ENDPOINT, or "
                         "download the files you need one by one (%download REMOTE LOCAL).")
    return name


def no_case_twins(names: Iterable[str], folder: str) -> None:
    """UnsafeName when two names of one folder differ only by case (or Unicode normalization)."""
    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            raise UnsafeName(f"the pool listed both {seen[key]!r} and {name!r} in {folder or '/mnt/data'!r}: on a "
                             "case-insensitive file system one would overwrite the other, so nothing was "
                             "downloaded. Download them one by one under names of your choice (%download REMOTE LOCAL).")
        seen[key] = name


def depth_limit(path: str, folder: str) -> None:
    """ListingTooLarge when `path` (relative to the downloaded folder) nests past MAX_DEPTH folders."""
    if path.count("/") + 1 > MAX_DEPTH:
        raise ListingTooLarge(f"the remote folder {folder or '/mnt/data'!r} nests more than {MAX_DEPTH} folders deep "
                              f"({path[:120]!r}…); nothing was downloaded. Download a subfolder of it instead, or "
                              "zip it in the session (shutil.make_archive) and download the archive.")


def count_limit(files: int, folders: int, folder: str) -> None:
    """ListingTooLarge past MAX_FILES files or MAX_FOLDERS listed folders."""
    if files > MAX_FILES or folders > MAX_FOLDERS:
        what = f"more than {MAX_FILES} files" if files > MAX_FILES else f"more than {MAX_FOLDERS} folders"
        raise ListingTooLarge(f"the remote folder {folder or '/mnt/data'!r} holds {what}, past what one %download "
                              "fetches; nothing was downloaded. Download its subfolders one by one, or zip it in "
                              "the session (shutil.make_archive) and download the archive.")


class LocalFolder:
    """The local folder the user named, and the checked paths of files below it."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.root = Path(os.path.realpath(target))

    def inside(self, path: Path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self.root)

    def path_for(self, relative: str) -> Path:
        """The local path of the file `relative` (checked remote names joined by '/'); UnsafeName when it
        would not be a file inside the folder (a local symbolic link leading out, a folder in the way)."""
        parts = relative.split("/")
        for part in parts:
            problem = name_problem(part)
            if problem:
                raise UnsafeName(f"the remote name {relative!r} cannot be a local path: {problem}.")
        path = self.root.joinpath(*parts)
        if not self.inside(path.parent):
            raise UnsafeName(f"{relative!r} would be written through a symbolic link that leads out of "
                             f"{str(self.target)!r}; nothing was downloaded. Remove the link or download into "
                             "another folder.")
        above = path.parent
        while above != self.root:
            if above.exists() and not above.is_dir():
                raise UnsafeName(f"{str(above)!r} is a local file, and the remote {relative!r} needs a folder there; "
                                 "nothing was downloaded. Move the file away or download into another folder.")
            above = above.parent
        if path.is_dir() and not path.is_symlink():
            raise UnsafeName(f"{str(self.target / relative)!r} is a local folder, and the remote {relative!r} a "
                             "file; nothing was downloaded. Move the folder away or download into another folder.")
        return path

    def place(self, source: Path, path: Path) -> None:
        """Move the finished file `source` to `path` (its folders made, each checked to stay inside)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.inside(path.parent):
            raise UnsafeName(f"{str(path)!r} leads out of {str(self.target)!r} through a symbolic link made "
                             "during the download; the file was not written there.")
        os.replace(source, path)  # replaces a link named like the file, never what it points at
