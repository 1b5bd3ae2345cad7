"""Safe paths under a session's /mnt/data, and streaming file I/O.

Every path is walked one component at a time with O_NOFOLLOW from an open folder, so a symbolic
link that session code planted is never followed, whatever it points to.
"""
from __future__ import annotations

import contextlib
import ctypes
import heapq
import mimetypes
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

DATA = "/mnt/data"
TEMP_PREFIX = ".rk-upload-"  # uploads in progress, renamed into place when complete
#: (st_dev, st_ino) of the temporaries of uploads in progress: left out of listings. A session's own
#: file is never hidden, whatever its name (hiding by prefix hid the user's `.rk-upload-…` files).
IN_PROGRESS: set[tuple[int, int]] = set()
CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BadPath(ValueError):
    """A name or folder that does not stay inside /mnt/data."""


class NotFound(FileNotFoundError):
    """No such file in the session."""


class FilesGone(OSError):
    """The session's /mnt/data is no longer there: the session was deleted or stopped during the request."""

    def __init__(self) -> None:
        super().__init__("The session was deleted or stopped while this request used its files, so its files "
                         "are gone; send the request again (a new session starts with an empty /mnt/data).")


class FileShrank(OSError):
    """A file being downloaded became shorter than it was when the download started."""


@dataclass
class Entry:
    """A file or folder of a session, for the listing and metadata routes."""

    name: str
    size: int
    modified: float
    is_dir: bool

    @property
    def modified_iso(self) -> str:
        moment = datetime.fromtimestamp(self.modified, timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    @property
    def content_type(self) -> str:
        if self.is_dir:
            return "inode/directory"
        guessed, _ = mimetypes.guess_type(self.name)
        if guessed and guessed.startswith("text/"):
            return f"{guessed}; charset=utf-8"
        return guessed or "application/octet-stream"


def parts_of(path: str | None, *, allow_root: bool = True) -> list[str]:
    """Split a name or folder relative to /mnt/data into safe components; BadPath otherwise."""
    if path is None:
        return []
    if "\x00" in path:
        raise BadPath("file names cannot contain NUL characters")
    if path.startswith("/"):
        if path == DATA or path == "/":
            path = ""
        elif path.startswith(DATA + "/"):
            path = path[len(DATA) + 1:]
        else:
            raise BadPath(f"{path!r} is outside /mnt/data; give a name relative to /mnt/data")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BadPath(f"{path!r} has a '..' segment; give a name inside /mnt/data")
    if not parts and not allow_root:
        raise BadPath("a file name is required")
    if any(len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts):
        raise BadPath("a file name is longer than 255 bytes")
    return parts


def open_folder(root: Path, parts: list[str], *, create: bool = False) -> int:
    """An fd of the folder root/parts…, walked without following links (FilesGone if root is gone)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise FilesGone() from None
    try:
        for part in parts:
            try:
                next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise NotFound(f"no folder {'/'.join(parts)!r} in /mnt/data") from None
                with as_owner_of(fd):
                    os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError:  # ELOOP (a link) or ENOTDIR
                raise NotFound(f"{'/'.join(parts)!r} is not a folder in /mnt/data") from None
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def as_owner_of(folder_fd: int) -> Iterator[None]:
    """Create files and folders as the owner of `folder_fd`: a root pool runs each session under its own
    uid, in a user namespace where the host's root has no uid, so a file the pool (root) made there could
    not be owned by anyone (EOVERFLOW). The fs uid is the calling thread's own (setfsuid(2) is per
    thread), so other requests are not affected; no library offers it, hence ctypes."""
    owner = os.fstat(folder_fd)
    if os.geteuid() != 0 or owner.st_uid == 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    previous_gid = libc.setfsgid(owner.st_gid)
    previous_uid = libc.setfsuid(owner.st_uid)
    try:
        yield
    finally:
        libc.setfsuid(previous_uid)
        libc.setfsgid(previous_gid)


def _entry(folder_fd: int, name: str, *, listing: bool = False) -> Entry:
    info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode) or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise NotFound(f"{name!r} is not a regular file")
    if listing and (info.st_dev, info.st_ino) in IN_PROGRESS:
        raise NotFound(f"{name!r} is an upload in progress")
    return Entry(name, info.st_size if stat.S_ISREG(info.st_mode) else 0, info.st_mtime, stat.S_ISDIR(info.st_mode))


def nameable(name: str) -> bool:
    """Whether a name read from the disk can be named back through the API: it must be valid UTF-8
    (a URL's undecodable bytes become U+FFFD, so such a file could never be fetched or deleted)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir's surrogate escapes of bytes that are not UTF-8
        return False
    return True


LIST_PAGE = 10_000  # entries of one listing answer; past them the answer has a nextLink


def listing(root: Path, folder: list[str], after: str | None = None,
            limit: int = LIST_PAGE) -> tuple[list[Entry], str | None]:
    """One page of the files and folders directly in a folder, in name order: those named after `after`
    (the previous page's cursor), at most `limit`; and the cursor of the next page (None: the last page).

    Links, uploads in progress and names that are not valid UTF-8 (which no request could name) are left
    out; any other name is listed and downloadable. The folder is read as a stream of names keeping only
    the `limit` smallest (heapq), so a folder of millions of names costs one pass and memory for one
    page, and only the page's entries are looked at (stat).
    """
    fd = open_folder(root, folder)
    try:
        seen = 0

        def names() -> Iterator[str]:
            nonlocal seen
            with os.scandir(fd) as scan:
                for item in scan:
                    if (after is None or item.name > after) and nameable(item.name):
                        seen += 1
                        yield item.name

        page = heapq.nsmallest(limit, names())
        entries = []
        for name in page:
            try:
                entries.append(_entry(fd, name, listing=True))
            except (NotFound, OSError):
                continue
        return entries, (page[-1] if seen > len(page) and page else None)
    finally:
        os.close(fd)


def info(root: Path, parts: list[str]) -> Entry:
    fd = open_folder(root, parts[:-1])
    try:
        return _entry(fd, parts[-1])
    except FileNotFoundError:
        raise NotFound(f"no file {'/'.join(parts)!r} in /mnt/data") from None
    finally:
        os.close(fd)


def open_for_reading(root: Path, parts: list[str]) -> tuple[int, Entry]:
    """An fd of a regular file (never through a link), and its entry."""
    folder = open_folder(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=folder)
    except FileNotFoundError:
        raise NotFound(f"no file {'/'.join(parts)!r} in /mnt/data") from None
    except OSError:  # ELOOP: a link; anything else: not a readable file
        raise NotFound(f"{'/'.join(parts)!r} is not a regular file in /mnt/data") from None
    finally:
        os.close(folder)
    details = os.fstat(fd)
    if not stat.S_ISREG(details.st_mode):
        os.close(fd)
        raise NotFound(f"{'/'.join(parts)!r} is not a regular file in /mnt/data")
    return fd, Entry(parts[-1], details.st_size, details.st_mtime, False)


def read_chunks(fd: int, size: int) -> Iterator[bytes]:
    """The file's first `size` bytes (its size when the download started) in chunks, read by offset
    from the open fd; closes the fd at the end.

    Bytes a session appends meanwhile are not sent (the answer keeps its Content-Length); a file
    cut shorter meanwhile raises FileShrank, so the download fails instead of ending short or padded.
    """
    try:
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(CHUNK, size - offset), offset)
            if not chunk:
                raise FileShrank(f"the file shrank from {size} to {offset} bytes during its download")
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


def delete(root: Path, parts: list[str]) -> None:
    folder = open_folder(root, parts[:-1])
    try:
        entry = _entry(folder, parts[-1])
        if entry.is_dir:
            os.rmdir(parts[-1], dir_fd=folder)
        else:
            os.unlink(parts[-1], dir_fd=folder)
    except FileNotFoundError:
        raise NotFound(f"no file {'/'.join(parts)!r} in /mnt/data") from None
    except OSError as error:
        raise NotFound(f"cannot delete {'/'.join(parts)!r}: {error.strerror}") from None
    finally:
        os.close(folder)


class IncomingFile:
    """An upload being written to a temporary beside its final name, renamed into place at the end."""

    def __init__(self, root: Path, parts: list[str]) -> None:
        self.parts = parts
        self.folder = open_folder(root, parts[:-1], create=True)
        self.temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        with as_owner_of(self.folder):
            self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                              dir_fd=self.folder)
        details = os.fstat(self.fd)
        self.key = (details.st_dev, details.st_ino)
        IN_PROGRESS.add(self.key)
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def finish(self) -> None:
        """The file's bytes are all written; `commit` makes it visible."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def commit(self) -> Entry:
        """Make the file visible under its name (replacing an older one), all or nothing."""
        self.finish()
        try:
            target = os.stat(self.parts[-1], dir_fd=self.folder, follow_symlinks=False)
            if stat.S_ISDIR(target.st_mode):
                raise BadPath(f"{'/'.join(self.parts)!r} is a folder")
        except FileNotFoundError:
            pass
        except BadPath:
            self.abort()
            raise
        with as_owner_of(self.folder):
            os.rename(self.temp, self.parts[-1], src_dir_fd=self.folder, dst_dir_fd=self.folder)
        IN_PROGRESS.discard(self.key)
        entry = _entry(self.folder, self.parts[-1])
        os.close(self.folder)
        self.folder = -1
        return entry

    def abort(self) -> None:
        """Remove the temporary: nothing half-written is left."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.folder >= 0:
            try:
                os.unlink(self.temp, dir_fd=self.folder)
            except OSError:
                pass
            IN_PROGRESS.discard(self.key)
            os.close(self.folder)
            self.folder = -1
