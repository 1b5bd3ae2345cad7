"""VS Code's hidden requests: what the Jupyter extension runs behind the user's back, and where each goes.

VS Code treats a `language: python` kernel as an IPython kernel and runs Python code in it for its
own features (microsoft/vscode-jupyter: `src/kernels/kernel.ts`, `src/kernels/helpers.ts`
`executeSilently`, `src/standalone/api/kernels/backgroundExecution.ts`). All of it arrives as
`execute_request` with `store_history: false`. This module tells those requests apart and decides:

- **start-up set-up** (jedi off, matplotlib inline and theme, the chat helper module, a `chdir`, the
  ipywidgets version probe): answered here, at once, without a session. The lines that matter in the
  session (`__vsc_ipynb_file__ = "…"`, `%config Completer.use_jedi = False`) are kept and travel with the
  first request that reaches the session, so that start-up never creates or slows it;
- **Variables view and Data Viewer helpers** (`_VSCODE_getVariable`, `_VSCODE_getDataFrame`): plain
  Python that reads the user's namespace, so they run in the session as sent (before the first cell there
  is no session and no variable: the answer is what a fresh kernel gives);
- **background executions** (`__jupyter_exec_background__`: completions, inspection, the variables
  provider): the extension waits for an `update_display_data` carrying the answer. A remote session has
  no `get_ipython().kernel` and no way to publish from a thread after its cell ended, so the kernel
  answers: `do_complete`/`do_inspect` with its own handlers, any other body by running it in the
  session and publishing its return value as the extension expects.

Pure functions and one small holder of start-up lines (`VSCodeRequests`): the kernel routes, this
module never calls back into it.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

#: Names only VS Code's hidden code uses (the markers of kernel.ts, helpers.ts and the helper files).
MARKERS = ("__vsc_", "_VSCODE_", "__VSCODE_", "_VSCode_", "__jupyter_exec_background__", "%config Completer.",
           "%matplotlib inline", "matplotlib_inline", "%config InlineBackend")
#: Helpers that read the user's namespace: they must run where the variables are.
SESSION_HELPERS = ("_VSCODE_getVariable(", "_VSCODE_getDataFrame(")
#: The start-up lines whose effect a local kernel's user sees: the notebook's path, and jedi off (completions
#: then have the form VS Code expects)
_FORWARDED_LINE = re.compile(r'^(?:__vsc_ipynb_file__ = "(?:[^"\\]|\\.)*"|%config Completer\.use_jedi = (?:True|False))[ \t]*$',
                             re.MULTILINE)

_BG_MIME = re.compile(r'display\(\{"(application/vnd\.vscode\.bg\.execution\.\d+)": ""\}, raw=True, display_id=True\)')
_BG_BODY = re.compile(r"\n    def do_implementation\(\):\n(?P<body>.*?)\n\n    def bg_main\(\):", re.DOTALL)
_PY_STRING = r'"((?:[^"\\]|\\.)*)"'
_BG_COMPLETE = re.compile(rf"^return get_ipython\(\)\.kernel\.do_complete\({_PY_STRING}, (\d+)\)$")
_BG_INSPECT = re.compile(rf"^return get_ipython\(\)\.kernel\.do_inspect\({_PY_STRING}, (\d+), (\d+)\)$")


@dataclass(frozen=True)
class Background:
    """One `__jupyter_exec_background__` snippet: the display it answers on and what it asks."""

    mime: str  # application/vnd.vscode.bg.execution.N; the answer goes in "<mime>.result" (or ".error")
    body: str  # the body of its do_implementation(), indented by 8 spaces as the extension sends it
    complete: tuple[str, int] | None = None  # code, cursor_pos of a do_complete call
    inspect: tuple[str, int, int] | None = None  # code, cursor_pos, detail_level of a do_inspect call


@dataclass(frozen=True)
class Hidden:
    """A hidden request and where it goes: "local" (answered here), "session" (run there as sent),
    "background" (answered on a display, see `Background`)."""

    route: str
    deferred: str = ""  # start-up lines that must reach the session with the first real cell
    background: Background | None = None


def _unescape(text: str) -> str:
    """The code the extension embedded in a Python string literal (escapeStringToEmbedInPythonCode)."""
    text = ast.literal_eval(f'"{text}"')  # a str: the literal is one
    return str(text)


def _background(code: str) -> Background | None:
    mime, body = _BG_MIME.search(code), _BG_BODY.search(code)
    if mime is None or body is None:
        return None
    text = body.group("body")
    statement = text.strip()
    complete, inspect = _BG_COMPLETE.match(statement), _BG_INSPECT.match(statement)
    return Background(
        mime.group(1), text,
        complete=(_unescape(complete.group(1)), int(complete.group(2))) if complete else None,
        inspect=(_unescape(inspect.group(1)), int(inspect.group(2)), int(inspect.group(3))) if inspect else None)


def classify(code: str, store_history: bool, session_started: bool) -> Hidden | None:
    """Where a request goes, when it is one of VS Code's hidden ones (None: an ordinary cell).

    VS Code sends every hidden request with `store_history: false` (its cells use `true`), so a stored
    cell is never taken for one, whatever it contains.
    """
    if store_history or not any(marker in code for marker in MARKERS):
        return None
    if "__jupyter_exec_background__" in code:
        background = _background(code)
        if background is not None:
            return Hidden("background", background=background)
    if any(helper in code for helper in SESSION_HELPERS):
        return Hidden("session" if session_started else "local")
    deferred = "\n".join(match.group(0) for match in _FORWARDED_LINE.finditer(code))
    return Hidden("local", deferred=deferred)


def session_code(background: Background, mark: str) -> str:
    """Session code that runs a background body and prints `mark` + {"result": …} or {"error": …}."""
    return (
        "def __jupyter_exec_background__():\n"
        "    import json as _json\n"
        "    from traceback import format_exc\n\n"
        "    def do_implementation():\n"
        f"{background.body}\n\n"
        "    try:\n"
        "        answer = {'result': do_implementation()}\n"
        "    except Exception:\n"
        "        answer = {'error': format_exc()}\n"
        f"    print({mark!r} + _json.dumps(answer, default=repr))\n\n\n"
        "try:\n"
        "    __jupyter_exec_background__()\n"
        "finally:\n"
        "    del __jupyter_exec_background__\n"
    )


def fresh_kernel_answer(code: str) -> tuple[str, dict[str, Any]]:
    """What a fresh kernel answers a Variables view or Data Viewer helper (no cell has run: no variables)."""
    if '_VSCODE_getVariable("types"' in code:
        return "stream", {"name": "stdout", "text": "[]\n"}
    name = re.search(r'_VSCODE_get(?:Variable|DataFrame)\("\w+", (?:True|False), ([A-Za-z_]\w*)', code)
    missing = name.group(1) if name else "the variable"
    return "error", {"ename": "NameError", "evalue": f"name '{missing}' is not defined",
                     "traceback": [f"NameError: name '{missing}' is not defined (no cell has run in this kernel yet)"]}


def fresh_background_answer(background: Background) -> dict[str, Any]:
    """What a fresh kernel answers a background body (the variables provider's helpers): no variables."""
    if "_VSCODE_getVariableDescriptions(" in background.body:
        return {"result": "[]"}
    return {"error": "no cell has run in this kernel yet: there are no variables to describe"}


class VSCodeRequests:
    """The kernel's side of VS Code's hidden requests: the start-up lines kept for the session."""

    def __init__(self) -> None:
        self._deferred: list[str] = []

    def keep(self, hidden: Hidden) -> None:
        """Keep what a start-up snippet must set in the session (the latest value of a name wins there)."""
        if hidden.deferred:
            self._deferred.append(hidden.deferred)

    def take_deferred(self) -> str:
        """The start-up lines to run in the session before the next cell (then forgotten)."""
        code, self._deferred = "\n".join(self._deferred), []
        return code

    def put_back(self, hidden_lines: str) -> None:
        """Put back lines that could not be sent (the session was not reached)."""
        if hidden_lines:
            self._deferred.insert(0, hidden_lines)


def _display_id(background: Background) -> str:
    return f"vscode-bg-{background.mime.rsplit('.', 1)[-1]}-{id(background):x}"


def background_display(background: Background) -> tuple[str, dict[str, Any]]:
    """The display the extension waits on; `background_update` carries the answer on it."""
    return "display_data", {"data": {background.mime: ""}, "metadata": {},
                            "transient": {"display_id": _display_id(background)}}


def background_update(background: Background, answer: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The update that answers a background request: `answer` is {"result": …}, {"error": …} or None (no
    answer; a `do_complete`/`do_inspect` reply is {"result": reply})."""
    if answer is None:
        answer = {"error": "the remote session did not answer this background request"}
    key, value = (".result", answer["result"]) if "result" in answer else (".error", str(answer.get("error")))
    return "update_display_data", {"data": {background.mime + key: value}, "metadata": {},
                                   "transient": {"display_id": _display_id(background)}}
