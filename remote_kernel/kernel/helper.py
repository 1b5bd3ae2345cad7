"""Helper executions: silent code the kernel runs in the session to ask it something.

A helper prints its answer last, as one line: `HELPER_MARK` then a JSON object, so that anything
else the session prints (a hook, a warning) is ignored. Standard library only: the language
table (`languages.py`), its per-language modules and `rich.py` all import this leaf.
"""
from __future__ import annotations

import json
from typing import Any

#: The line a helper execution prints before its JSON answer, so that stray output is ignored.
HELPER_MARK = "@@remote_kernel_answer@@ "


def read_answer(stdout: str | None) -> dict[str, Any] | None:
    """The helper's answer: the last marked line that holds a JSON object (a hook may print the mark too)."""
    for line in reversed((stdout or "").splitlines()):
        if line.startswith(HELPER_MARK):
            try:
                answer = json.loads(line[len(HELPER_MARK):])
            except (ValueError, RecursionError):
                continue
            if isinstance(answer, dict):
                return answer
    return None
