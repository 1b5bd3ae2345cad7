"""No error answer carries a path of the pool's host: the paths are replaced before an answer is sent.

A session's files are reached on the host through `/proc/<pid>/root/mnt/data` (a sandboxed session) or
a folder under the pool's data root (no sandbox); an error raised deep in a file operation may name
one. What the client knows is `/mnt/data`, so that is what such a path becomes; any other path under
the pool's data root becomes `<pool data>`.
"""
from __future__ import annotations

import functools
import re

PROC_ROOT = re.compile(r"/proc/\d+/root(?=/)")
_ROOTS: set[str] = set()  # the data roots of this process's pools (sessions' folders are under them)
SESSION_FOLDER = r"/[0-9a-f]{32}(?:/mnt/data|/data)?"  # a session's own folder under a data root (its guid)


def register(root: str) -> None:
    """A folder whose paths must never reach a client (a pool's data root)."""
    _ROOTS.add(root.rstrip("/"))


def scrub(text: str) -> str:
    """`text` with every host path replaced by what the client knows."""
    text = PROC_ROOT.sub("", text)
    for root in sorted(_ROOTS, key=len, reverse=True):
        if root and root in text:
            text = re.sub(re.escape(root) + f"(?:{SESSION_FOLDER})?", functools.partial(_named, root), text)
    return text


def _named(root: str, match: re.Match[str]) -> str:
    """What a client knows a host path under `root` as: a session's folder is /mnt/data."""
    return "/mnt/data" if match.group(0) != root else "<pool data>"
