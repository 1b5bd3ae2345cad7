"""httpx, imported without the optional extras that this client never uses.

`import httpx` imports click and rich when they are installed (for httpx's command line), and
httpcore imports trio when it is installed (for trio's event loop): together ~0.1 s of a
kernel's start-up, spent on code this asyncio client never runs. They are hidden while httpx
and httpcore import, and importable as usual afterwards. httpcore itself (httpx's default
transport) is imported by `load_httpcore`, only for a pool over TCP: the embedded pool's Unix
socket has a transport of its own (`unix_transport.py`).
"""
from __future__ import annotations

import importlib
import sys

_UNUSED = ("click", "rich", "trio")


def _import_quietly(module: str) -> None:
    hidden = [name for name in _UNUSED if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        importlib.import_module(module)
    finally:
        for name in hidden:
            del sys.modules[name]


def load_httpcore() -> None:
    """Import httpcore (httpx imports it lazily, at its first default transport) without trio."""
    if "httpcore" not in sys.modules:
        _import_quietly("httpcore")


_import_quietly("httpx")

import httpx  # noqa: E402

__all__ = ["httpx", "load_httpcore"]
