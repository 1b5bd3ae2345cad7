"""How the hosted service renders a Python execution's trailing value, from IPython's `text/plain`.

The evidence (docs/clients.md, "Result values"): the spec says `returnJupyterFormatExecutionResult`
switches off the formatting of *primitive* Python results (bool, int, float, string, None) as JSON;
every other value (list, tuple, dict, DataFrame, …) is the interpreter's display text in both modes.
AutoGen's package probe parses a long list's multi-line IPython text, and its live tests pass
against hosted pools, which only works if lists come back as that text.

So the pool asks each Python worker for the display text and turns it back into a JSON value here
when it is the text of a primitive. Written by hand because no library maps a Python repr to
"primitive or not"; `ast.literal_eval` does the parsing, which never runs code.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Any

#: numpy scalars are shown as `np.float64(1.5)` since numpy 2; numpy's float64 is a Python float
NUMPY_SCALAR = re.compile(r"np\.(?:float(?:16|32|64|128)?|u?int(?:8|16|32|64)?|longlong|longdouble)\((.+)\)")
NUMPY_BOOL = {"np.True_": True, "np.False_": False}
#: the first characters a primitive's text can start with (a str may be split over parenthesised lines)
PRIMITIVE_START = frozenset("0123456789-+.'\"TF(n")


def hosted_value(text: Any) -> Any:
    """The default-mode result for a worker's display text: a JSON scalar for a primitive, else the text.

    `None` (a bare `None` or a name bound to it) is `""`, as a cell without a value is: the spec's example
    `CodeExecution_Execute_Result_None` (2025-10-02-preview, `a = None;a`) answers `""` and only its
    `…_JupyterFormat` twin `null`, and seed 004 answers `""` for a cell ending in `print(…)`; a client that
    reads the value as a string (LlamaIndex TS) fails on null. Image dicts pass through unchanged; a float
    that is not finite stays text ("nan", "inf"), as the spec's examples show.
    """
    if text is None:
        return ""
    if not isinstance(text, str) or not text or text[0] not in PRIMITIVE_START:
        return text
    if text in NUMPY_BOOL:
        return NUMPY_BOOL[text]
    numpy = NUMPY_SCALAR.fullmatch(text)
    source = numpy.group(1) if numpy else text
    try:
        value = ast.literal_eval(source)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, float):
        return value if math.isfinite(value) else text
    if isinstance(value, (bool, int, str)):
        return value
    return text  # a tuple, list, dict, set, bytes or complex literal: the display text
