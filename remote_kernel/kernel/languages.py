"""Everything that differs between the languages a remote session can run, in one table.

A kernel for another language is one more `Language` entry: its kernelspec and `language_info`,
the pool worker its sessions run on (`container_type`), how `is_complete` is decided locally,
the helper code that answers completion and inspection from the remote session's namespace, and
whether rich output (the shim of `rich_shim.py`, `%%long`) exists for it. The code of each entry
lives in a module of its own (`python.py`, `javascript.py`); this module only assembles them, so
nothing imports it back.

Only the standard library is imported at module level: the build hook imports this module.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remote_kernel.kernel import javascript, python


@dataclass(frozen=True)
class Language:
    """One language of remote sessions, and how the kernel speaks it."""

    key: str  # "python", as given to `--language` and `remote-kernel install --language`
    kernel_name: str  # the kernelspec directory name
    display_name: str
    container_type: str  # the pool type (the worker its sessions run on) an embedded pool is started with
    language_info: dict[str, Any]
    banner: str
    is_complete: Callable[[str], dict[str, Any]]  # the is_complete_reply content, decided locally
    rich_output: bool = False  # the rich-output shim (displays, figures, live `clear_output`) and `%%long`
    complete_code: Callable[[str, int], str] | None = None  # helper source answering complete_request
    inspect_code: Callable[[str, int, int], str] | None = None  # helper source answering inspect_request
    expressions_code: Callable[[dict[str, str]], str] | None = None  # helper evaluating user_expressions
    page_code: Callable[[str], str | None] | None = None  # helper for a help-only cell (`obj?`), or None
    lsmagic_code: str | None = None  # helper listing the session's own magics
    jupyter_repr: bool = True  # ask the pool for the interpreter's display repr where the version can
    format_value: Callable[[object], str] = repr  # text/plain of a JSON result value, in the language's notation
    interrupted: tuple[str, str] = ("KeyboardInterrupt", "the cell was interrupted; the session and its state are kept")


PYTHON = Language(
    key="python",
    kernel_name="remote-python",
    display_name="Python (remote session)",
    container_type="PythonLTS",
    language_info={
        "name": "python",
        "mimetype": "text/x-python",
        "file_extension": ".py",
        "pygments_lexer": "ipython3",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "nbconvert_exporter": "python",
        "version": "3",
    },
    banner="Python in a remote session (Azure Container Apps dynamic sessions or a local session pool).\n"
           "Kernel magics: %upload %download %files %rm %session %lsmagic %%long",
    is_complete=python.is_complete,
    rich_output=True,
    complete_code=python.complete_code,
    inspect_code=python.inspect_code,
    expressions_code=python.expressions_code,
    page_code=python.page_code,
    lsmagic_code=python.LSMAGIC_CODE,
    format_value=python.value_text,
)

JAVASCRIPT = Language(
    key="javascript",
    kernel_name="remote-javascript",
    display_name="JavaScript (remote session)",
    container_type="NodeLTS",
    language_info={
        "name": "javascript",
        "mimetype": "application/javascript",
        "file_extension": ".js",
        "pygments_lexer": "javascript",
        "codemirror_mode": "javascript",
        "version": "",
    },
    banner="JavaScript (Node.js) in a remote session.\n"
           "Kernel magics: %upload %download %files %rm %session %lsmagic",
    is_complete=javascript.is_complete,
    complete_code=javascript.complete_code,
    inspect_code=javascript.inspect_code,
    expressions_code=javascript.expressions_code,
    jupyter_repr=True,  # the Node worker answers with util.inspect text, as Node's REPL shows values
    format_value=lambda value: json.dumps(value, ensure_ascii=False),
    interrupted=javascript.INTERRUPTED,  # Node's wording, not Python's
)

LANGUAGES: dict[str, Language] = {language.key: language for language in (PYTHON, JAVASCRIPT)}


def language(key: str) -> Language:
    """The table entry for `key` ("python", "javascript"); a clear error for anything else."""
    try:
        return LANGUAGES[key]
    except KeyError:
        raise ValueError(f"unknown language {key!r}: choose one of {', '.join(LANGUAGES)}") from None
