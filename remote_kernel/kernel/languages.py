"""Everything that differs between the languages a remote session can run, in one table.

A kernel for another language is one more `Language` entry: its kernelspec, its
`language_info`, how `is_complete` is decided locally, and the helper code that answers
completion and inspection from the remote session's namespace.

Only the standard library is imported at module level: the build hook imports this module.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

from remote_kernel.kernel import javascript

#: The line a helper execution prints before its JSON answer, so that stray output is ignored.
HELPER_MARK = "@@remote_kernel_answer@@ "


@dataclass(frozen=True)
class Language:
    """One language of remote sessions, and how the kernel speaks it."""

    key: str  # "python", as given to `--language` and `remote-kernel install --language`
    kernel_name: str  # the kernelspec directory name
    display_name: str
    container_type: str  # the pool type an embedded pool is started with
    language_info: dict
    banner: str
    is_complete: Callable[[str], dict]
    complete_code: Callable[[str, int], str] | None = None  # helper source answering complete_request
    inspect_code: Callable[[str, int, int], str] | None = None  # helper source answering inspect_request
    expressions_code: Callable[[dict[str, str]], str] | None = None  # helper evaluating user_expressions
    page_code: Callable[[str], str | None] | None = None  # helper for a help-only cell (`obj?`), or None
    lsmagic_code: str | None = None  # helper listing the session's own magics
    jupyter_repr: bool = True  # ask the pool for the interpreter's display repr where the version can
    format_value: Callable[[object], str] = repr  # text/plain of a JSON result value, in the language's notation
    interrupted: tuple[str, str] = ("KeyboardInterrupt", "the cell was interrupted; the session and its state are kept")
    help_links: list = field(default_factory=list)


# --- Python ---------------------------------------------------------------------------------

def _python_is_complete(code: str) -> dict:
    """IPython's own answer (it knows magics, `!` lines and line continuations)."""
    from IPython.core.inputtransformer2 import TransformerManager

    status, indent = TransformerManager().check_complete(code)
    reply: dict = {"status": status}
    if status == "incomplete":
        reply["indent"] = " " * (indent or 0)
    return reply


_PY_HELPER = '''
def _remote_kernel_helper():
    import json as _json
    answer = {}
    try:
%(body)s
    except BaseException as _exc:  # the helper must never fail the way user code does
        answer = {"error": type(_exc).__name__ + ": " + str(_exc)}
    print(%(mark)r + _json.dumps(answer, default=repr))
try:
    _remote_kernel_helper()
finally:
    del _remote_kernel_helper
'''


def _python_helper(body: str) -> str:
    body = "\n".join("        " + line for line in body.strip("\n").splitlines())
    return _PY_HELPER % {"body": body, "mark": HELPER_MARK}


def _python_complete_code(code: str, cursor_pos: int) -> str:
    """ipykernel's `do_complete` (its `_experimental_do_complete`), run on the session's shell.

    Jedi is used when the shell's `Completer.use_jedi` says so, as in a local kernel (`%config
    Completer.use_jedi = False` turns it off, as VS Code does at start). A shell built without jedi
    loaded (the local pool's worker keeps it out at start; IPython before 9.17 imports it with the
    completer module) gets it wired in on first use.
    """
    return _python_helper(f'''
code, cursor = _json.loads({json.dumps(json.dumps([code, cursor_pos]))})
from IPython.core import completer as _completer
from IPython.core.completer import provisionalcompleter, rectify_completions
shell = get_ipython()
if shell.Completer.use_jedi and not hasattr(_completer, "_get_jedi") and getattr(_completer, "jedi", None) is None:
    try:
        import jedi, jedi.api.classes, jedi.api.helpers
        jedi.settings.case_insensitive_completion = False
        _completer.jedi, _completer.JEDI_INSTALLED = jedi, True
    except ImportError:
        shell.Completer.use_jedi = False
with provisionalcompleter():
    found = list(rectify_completions(code, shell.Completer.completions(code, cursor)))
start = found[0].start if found else cursor
end = found[0].end if found else cursor
answer = {{"matches": [c.text for c in found], "cursor_start": start, "cursor_end": end,
          "types": [{{"start": c.start, "end": c.end, "text": c.text, "type": c.type,
                      "signature": c.signature}} for c in found]}}
''')


def _python_inspect_code(code: str, cursor_pos: int, detail_level: int, omit_sections: list | None = None) -> str:
    """ipykernel's `do_inspect` on the session's shell: text/plain only (no HTML pager, as its default),
    coloured as a local kernel's shell colours it whatever the session's own colour setting."""
    return _python_helper(f'''
code, cursor, level, omit = _json.loads({json.dumps(json.dumps([code, cursor_pos, detail_level, list(omit_sections or [])]))})
from IPython.utils.tokenutil import token_at_cursor
shell = get_ipython()
name = token_at_cursor(code, cursor)
%(colours)s
try:
    bundle = shell.object_inspect_mime(name, detail_level=level, omit_sections=omit)
    if not shell.enable_html_pager:
        bundle.pop("text/html", None)
    answer = {{"found": True, "data": bundle if isinstance(bundle, dict) else {{}}}}
except KeyError:
    answer = {{"found": False, "data": {{}}}}
finally:
    set_colours(shell.colors)
'''.replace("%(colours)s", _COLOURS))


_COLOURS = '''inspector = shell.inspector


def set_colours(scheme):
    if hasattr(inspector, "set_theme_name"):  # IPython 9
        inspector.set_theme_name(scheme.lower())
    else:  # IPython 8: the signature's colours follow the parser's own style
        inspector.set_active_scheme(scheme)
        inspector.parser.style = scheme


set_colours(type(shell).colors.default_value)'''

#: a cell that only asks for help: `obj?`, `obj??`, `?obj`, `%magic?`, `%magic`, `%quickref`, `%pdoc obj`…
_HELP_CELL = re.compile(r"^\s*(?:\?{0,2}%{0,2}[A-Za-z_][\w.]*\?{1,2}|\?{1,2}%{0,2}[A-Za-z_][\w.]*"
                        r"|%(?:magic|quickref)(?:\s+-?\w+)?|%(?:pinfo2?|pdoc|pdef|psource|pfile)\s+[\w.]+)\s*$")


def _python_page_code(code: str) -> str | None:
    """For a cell that only asks for help, a helper that runs it with IPython's pager captured: the pages
    come back as ipykernel sends them (a `page` payload of the reply), anything printed as stdout."""
    if not _HELP_CELL.match(code):
        return None
    return _python_helper(f'''
import contextlib, io
from IPython.core import page as _page
shell = get_ipython()
code = _json.loads({json.dumps(json.dumps(code))})
pages = []


def capture(strng, start=0, screen_lines=0, pager_cmd=None):
    pages.append({{"source": "page", "data": strng if isinstance(strng, dict) else {{"text/plain": strng}},
                  "start": max(0, start)}})


%(colours)s
saved, _page.page = _page.page, capture
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        exec(compile(shell.transform_cell(code), "<help>", "exec"), shell.user_ns)
finally:
    _page.page = saved
    set_colours(shell.colors)
answer = {{"payload": pages, "stdout": out.getvalue()}}
'''.replace("%(colours)s", _COLOURS))


_PYTHON_LSMAGIC = _python_helper('''
answer = {"text": str(get_ipython().run_line_magic("lsmagic", ""))}
''')


def _python_expressions_code(expressions: dict[str, str]) -> str:
    return _python_helper(f'''
expressions = _json.loads({json.dumps(json.dumps(expressions))})
shell = get_ipython()
answer = shell.user_expressions(expressions)
''')


_LOOKS_LIKE_A_REPR = re.compile(r"^(<.*>|[A-Za-z_][\w.]*\(.*\)|\[.*\]|\(.*\)|\{.*\}|b'.*'|b\".*\")$", re.DOTALL)


def _python_value_text(value: object) -> str:
    """How IPython would show a JSON result. Without the display repr (older api-versions) a value
    that is not a primitive (a list, tuple, dict, set, bytes, an object) arrives as its display text,
    as the hosted service sends it (docs/clients.md): show such strings as they are, not quoted. A
    string that merely looks like one (`'[x]'`) is shown unquoted too: the answer cannot tell them apart."""
    if isinstance(value, str) and ("\n" in value or _LOOKS_LIKE_A_REPR.match(value)):
        return value
    return repr(value)


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
    is_complete=_python_is_complete,
    complete_code=_python_complete_code,
    inspect_code=_python_inspect_code,
    expressions_code=_python_expressions_code,
    page_code=_python_page_code,
    lsmagic_code=_PYTHON_LSMAGIC,
    format_value=_python_value_text,
)


# --- JavaScript (Node.js sessions) -------------------------------------------------------------

def _brackets_is_complete(code: str) -> dict:
    """A small bracket and string balance check: enough to tell a console when to wait."""
    depth, quote, escaped = 0, "", False
    for ch in code:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return {"status": "invalid"}
    if quote or depth > 0:
        return {"status": "incomplete", "indent": "  " * max(depth, 0)}
    return {"status": "complete"}


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
