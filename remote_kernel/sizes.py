"""Byte counts as people write them (`512M`, `2G`, `4096`): one parser for the CLI and the kernel's settings.

Standard library only: the kernel's configuration reads it before anything heavy is imported.
"""
from __future__ import annotations

UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`128M`, `1G`, `1.5GiB`, `4096` → bytes; ValueError with what to write instead."""
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if cleaned and cleaned[-1] in UNITS:
            value = int(float(cleaned[:-1]) * UNITS[cleaned[-1]])
        else:
            value = int(cleaned)
    except (ValueError, OverflowError):  # OverflowError: `infG`, `1e400K` (no integer is that large)
        raise ValueError(f"{text!r} is not a size: use a number of bytes or 512M, 2G") from None
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive size: use a number of bytes or 512M, 2G")
    return value


def format_size(size: int) -> str:
    """The shortest exact form: 1073741824 → `1G`, 1536 MiB → `1536M`."""
    for unit in ("T", "G", "M", "K"):
        scale = UNITS[unit.lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)
