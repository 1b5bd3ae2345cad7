"""httpx, imported without the optional extras that this client never uses.

`import httpx` imports click and rich when they are installed (for httpx's command line), and
httpcore imports trio when it is installed (for trio's event loop): together ~0.1 s of a
kernel's start-up, spent on code this asyncio client never runs. They are hidden while httpx
and httpcore import, and importable as usual afterwards.
"""
from __future__ import annotations

import sys

_UNUSED = ("click", "rich", "trio")


def _import_quietly() -> None:
    hidden = [name for name in _UNUSED if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import httpcore  # noqa: F401  (httpx imports it lazily, at its first client)
        import httpx  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]


_import_quietly()

import httpx  # noqa: E402

__all__ = ["httpx"]
