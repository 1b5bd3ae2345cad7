"""The Python entry of the language table: the helpers that answer from the session's IPython shell.

Each helper is Python run as a silent execution (`helper.py`): completion and inspection as
ipykernel answers them, help-only cells (`obj?`) with IPython's pager captured, `%lsmagic`,
user_expressions, and how a JSON result value is shown. `is_complete` is IPython's own, run here.
"""
from __future__ import annotations

import json
import re
from typing import Any

from remote_kernel.kernel.helper import HELPER_MARK


def is_complete(code: str) -> dict[str, Any]:
    """IPython's own answer (it knows magics, `!` lines and line continuations)."""
    from IPython.core.inputtransformer2 import TransformerManager

    status, indent = TransformerManager().check_complete(code)  # type: ignore[no-untyped-call]
    reply: dict[str, Any] = {"status": status}
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


def helper_code(body: str) -> str:
    body = "\n".join("        " + line for line in body.strip("\n").splitlines())
    return _PY_HELPER % {"body": body, "mark": HELPER_MARK}


def complete_code(code: str, cursor_pos: int) -> str:
    """ipykernel's `do_complete` (its `_experimental_do_complete`), run on the session's shell.

    Jedi is used when the shell's `Completer.use_jedi` says so, as in a local kernel (`%config
    Completer.use_jedi = False` turns it off, as VS Code does at start). A shell built without jedi
    loaded (the local pool's worker keeps it out at start; IPython before 9.17 imports it with the
    completer module) gets it wired in on first use.
    """
    return helper_code(f'''
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


def inspect_code(code: str, cursor_pos: int, detail_level: int, omit_sections: list[str] | None = None) -> str:
    """ipykernel's `do_inspect` on the session's shell: text/plain only (no HTML pager, as its default),
    coloured as a local kernel's shell colours it whatever the session's own colour setting."""
    return helper_code(f'''
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


def page_code(code: str) -> str | None:
    """For a cell that only asks for help, a helper that runs it with IPython's pager captured: the pages
    come back as ipykernel sends them (a `page` payload of the reply), anything printed as stdout."""
    if not _HELP_CELL.match(code):
        return None
    return helper_code(f'''
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


def count_code(number: int, skipped: list[str]) -> str:
    """The session's shell gives its next cell `number`: the numbers before it went to `skipped` cells,
    which ran in the kernel (their source goes into `In`, as IPython stores a cell). The rich shim applies it
    once this helper has run (it keeps helpers out of the history); without the shim, it is applied here."""
    return helper_code(f'''
number, skipped = _json.loads({json.dumps(json.dumps([number, skipped]))})
import sys
shim = getattr(sys.modules.get("_remote_kernel_rich"), "active", None)
if shim is not None:
    shim.count_next = (number, skipped)
else:
    from IPython.core.release import version_info
    shell = get_ipython()
    shell.execution_count = number - (0 if version_info[0] >= 9 else 1)  # IPython 8 counts this helper after it
answer = {{"ok": True}}
''')


_COUNT_LINE = '''
import ast, hashlib, json, linecache, sys
shell = get_ipython()
number, skipped, allow_stdin = (list(_args) + [None])[:3]
if allow_stdin is not None:  # the request's allow_stdin, for the session's back channel (input(), getpass())
    back = getattr(getattr(sys.modules.get("_remote_kernel_rich"), "active", None), "back", None)
    if back is not None:
        back.allow_stdin = bool(allow_stdin)
frame = sys._getframe(1)
while frame is not None and frame.f_code.co_name != "run_ast_nodes":
    frame = frame.f_back
runner = frame.f_back if frame is not None else None
if frame is not None and isinstance(frame.f_locals.get("nodelist"), list):
    nodes, name = frame.f_locals["nodelist"], frame.f_locals.get("cell_name")
    for node in nodes[1:]:  # the cell's own statements move one line up: this line is not the user's
        ast.increment_lineno(node, -1)
    entry = linecache.cache.get(name)
    if entry is not None and entry[2]:
        linecache.cache[name] = (entry[0], entry[1], entry[2][1:], entry[3])
    current = runner.f_locals.get("execution_count") if runner is not None else None
    if not isinstance(current, int):
        current = shell.execution_count - 1
    early = shell.execution_count == current + 1  # IPython 9 counts the cell before it runs, IPython 8 after
    manager = shell.history_manager
    gap = max(0, number - current)  # a new session starts at 1: the numbers before have no source there
    skipped = ([""] * gap + [str(s) for s in skipped])[len(skipped):] if gap else []
    raw = None
    for attr in ("input_hist_parsed", "input_hist_raw"):
        items = getattr(manager, attr, None)
        if isinstance(items, list) and items:
            last = items.pop().partition("\\n")[2]
            for source in skipped:
                items.append(source if attr.endswith("raw") else shell.transform_cell(source).rstrip("\\n"))
            items.append(last)
            raw = last
    if raw is not None:
        shell.user_ns.pop(f"_i{current}", None)
        for offset, source in enumerate(skipped):
            shell.user_ns[f"_i{current + offset}"] = source
        if skipped and hasattr(manager, "_i00"):
            older = [manager._iii, manager._ii, manager._i] + skipped
            manager._iii, manager._ii, manager._i, manager._i00 = older[-3], older[-2], older[-1], raw
        elif hasattr(manager, "_i00"):
            manager._i00 = raw
        shell.user_ns.update({"_i": getattr(manager, "_i", ""), "_ii": getattr(manager, "_ii", ""),
                              "_iii": getattr(manager, "_iii", ""), f"_i{number}": raw})  # as store_inputs: no _i00
    if name is not None and hasattr(shell.compile, "_filename_map"):
        shell.compile._filename_map[name] = number  # "Cell In[number]" in its tracebacks
    if runner is not None and getattr(runner.f_locals.get("result"), "execution_count", None) is not None:
        runner.f_locals["result"].execution_count = number
    shell.execution_count = number + (1 if early else 0)
    shim = getattr(sys.modules.get("_remote_kernel_rich"), "active", None)
    if shim is not None and raw is not None:  # the live log's header names the cell without this line
        with shim.live_lock:
            shim.live_header = json.dumps({"cell": shim.cell,
                                           "code": hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]})
'''


def count_prefix(number: int, skipped: list[str], allow_stdin: bool | None = None) -> str:
    """A line put before a cell (the same request) that gives it `number` in the session's shell, after
    `skipped` cells that ran in the kernel (their numbers and sources go into `In`/`_iN`), and takes itself
    out of the cell (line numbers, history, source lines), as the rich shim's riding line does. With
    `allow_stdin`, it also tells the session's back channel whether this request allows stdin."""
    args = json.dumps([number, skipped] if allow_stdin is None else [number, skipped, allow_stdin])
    return (f"exec(compile({_COUNT_LINE!r}, '<remote_kernel count>', 'exec'), "
            f"{{'get_ipython': get_ipython, '_args': __import__('json').loads({args!r})}})\n")


LSMAGIC_CODE = helper_code('''
answer = {"text": str(get_ipython().run_line_magic("lsmagic", ""))}
''')


def expressions_code(expressions: dict[str, str]) -> str:
    return helper_code(f'''
expressions = _json.loads({json.dumps(json.dumps(expressions))})
shell = get_ipython()
answer = shell.user_expressions(expressions)
''')


_LOOKS_LIKE_A_REPR = re.compile(r"^(<.*>|[A-Za-z_][\w.]*\(.*\)|\[.*\]|\(.*\)|\{.*\}|b'.*'|b\".*\")$", re.DOTALL)


def value_text(value: object) -> str:
    """How IPython would show a JSON result. Without the display repr (older api-versions) a value
    that is not a primitive (a list, tuple, dict, set, bytes, an object) arrives as its display text,
    as the hosted service sends it (docs/clients.md): show such strings as they are, not quoted. A
    string that merely looks like one (`'[x]'`) is shown unquoted too: the answer cannot tell them apart."""
    if isinstance(value, str) and ("\n" in value or _LOOKS_LIKE_A_REPR.match(value)):
        return value
    return repr(value)
