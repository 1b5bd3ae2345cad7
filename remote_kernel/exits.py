"""Leaving a process without the interpreter's finalization, for the pool and the kernel alike.

Both end with their clean-up done (every session deleted, the sockets closed and flushed); tearing down
their modules afterwards took another 0.1-0.3 s of CPU, which a kernel's shutdown and restart waited
for (front ends poll a stopping kernel every 0.1 s). Standard library only.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def leave(code: int) -> NoReturn:
    """Flush the logs and the standard streams, then exit with `code` at once."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
