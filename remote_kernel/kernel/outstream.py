"""The kernel process's own sys.stdout and sys.stderr: ipykernel's OutStream, with a flush that costs
nothing when nothing is waiting to be sent.

ipykernel flushes both streams twice per request (before the reply and before the idle status), and
each flush from the main thread is a round trip to its IOPub thread: in all about 1 ms of a cell's
round trip on loopback. In ipykernel the cell's code writes to these streams; in this kernel the
session's output never passes through them (it is published as messages), so they are nearly always
empty. Given to IPKernelApp as its `outstream_class`, the option it has for this.
"""
from __future__ import annotations

from ipykernel import iostream


class OutStream(iostream.OutStream):
    """ipykernel's OutStream; `flush` returns at once when no write since the last flush waits to be sent."""

    def flush(self) -> None:
        # the flags are what a write sets and the IOPub thread's flush clears (ipykernel 6.29 to 7); a write
        # that races with this check is concurrent with the flush on ipykernel too, and its own scheduled
        # flush sends it
        waiting = getattr(self, "_flush_pending", True) or getattr(self, "_subprocess_flush_pending", True)
        if waiting or self.echo is not None:
            super().flush()  # type: ignore[no-untyped-call]
