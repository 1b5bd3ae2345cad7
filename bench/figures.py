"""Reading a run's results: a figure by its path, formatted or a dash when the run did not measure it."""
from __future__ import annotations

from typing import Any


def dig(results: dict[str, Any], *path: str) -> Any:
    """results[path[0]][path[1]]…, or None where the path stops."""
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def fmt(value: Any, pattern: str) -> str:
    """`value` formatted by `pattern`, or a dash for a figure not measured."""
    return "—" if value is None else pattern.format(value)
