"""`is_complete` for JavaScript cells (kernel/javascript.py): a table of cells and their status.

"incomplete": a console should wait for more lines (an open bracket, template, comment, or a
trailing operator); "invalid": no line can make it JavaScript (a closer that closes nothing, a
quote string cut by a line end); "complete": send it (Node reports any other syntax error when
the cell runs). Each complete or invalid verdict that Node itself can confirm is checked with
`node --check` too, so the table cannot drift from the language.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from remote_kernel.kernel.javascript import is_complete

CASES: list[tuple[str, str]] = [
    # plain statements
    ("1 + 1", "complete"),
    ("f(1)", "complete"),
    ("let x = 1", "complete"),
    ("x++", "complete"),
    ("x--", "complete"),
    ("", "complete"),
    ("   \n  ", "complete"),
    ("a = [1, 2, 3];", "complete"),
    # open brackets: wait, with an indent per open level
    ("function f() {", "incomplete"),
    ("if (x) {\n  y(", "incomplete"),
    ("[1, 2,", "incomplete"),
    ("const o = {\n  a: [\n", "incomplete"),
    ("class A {\n  m() {}\n", "incomplete"),
    # closers that close nothing, or the wrong thing
    ("})", "invalid"),
    ("f(1]", "invalid"),
    ("{ (} )", "invalid"),
    # strings
    ("'a' + 'b'", "complete"),
    ("'a \\' b'", "complete"),
    ('"a { b"', "complete"),
    ("'cut\nhere'", "invalid"),
    ("'never closed", "invalid"),
    ("'continued \\\n", "incomplete"),
    # templates, with nested substitutions
    ("`a ${b} c`", "complete"),
    ("`a ${ {x: 1}.x } c`", "complete"),
    ("`outer ${`inner ${1}`}`", "complete"),
    ("`multi\nline", "incomplete"),
    ("`a ${b", "incomplete"),
    ("`a ${ f(`", "incomplete"),
    ("`a \\` still open", "incomplete"),
    # comments
    ("// a comment with { and (", "complete"),
    ("x = 1 // trailing {", "complete"),
    ("/* open", "incomplete"),
    ("/* closed { */ x", "complete"),
    # regular expressions against division
    ("/[)]/.test(s)", "complete"),
    ("x = /\\(/g", "complete"),
    ("a / b / c", "complete"),
    ("(a) / 2", "complete"),
    ("arr[0] / 2", "complete"),
    ("return /}/", "complete"),
    ("typeof /{/", "complete"),
    # a trailing operator needs its other side
    ("1 +", "incomplete"),
    ("x =", "incomplete"),
    ("a &&", "incomplete"),
    ("cond ?", "incomplete"),
    ("obj.", "incomplete"),
    ("f(x) =>", "incomplete"),
    ("a,", "incomplete"),
    # what ends an expression does not
    ("f();", "complete"),
    ("[1, 2]", "complete"),
    ("a?.b", "complete"),
    # numbers, names
    ("0x1F + 1_000 + .5e3 + 10n", "complete"),
    ("$el._private + #priv in obj", "complete"),
    ("café = 1", "complete"),
]


@pytest.mark.parametrize("code, status", CASES)
def test_is_complete(code, status):
    reply = is_complete(code)
    assert reply["status"] == status, f"{code!r}: {reply}"
    if status == "incomplete":
        assert set(reply["indent"]) <= {" "}


def test_the_indent_follows_the_open_brackets():
    assert is_complete("function f() {")["indent"] == "  "
    assert is_complete("const o = {\n  a: [\n")["indent"] == "    "
    assert is_complete("1 +")["indent"] == ""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_agrees_with_the_table():
    """What the table calls complete parses; what it calls invalid does not (Node, as a script)."""
    checkable = [(code, status) for code, status in CASES if status != "incomplete" and "#priv" not in code
                 and not code.lstrip().startswith("return")]
    disagree = []
    for code, status in checkable:
        checked = subprocess.run(["node", "--check", "-"], input=code, capture_output=True, text=True, timeout=60)
        if (checked.returncode == 0) != (status == "complete"):
            disagree.append(f"{code!r}: table {status}, node --check {'ok' if checked.returncode == 0 else 'fails'}")
    assert not disagree, "\n".join(disagree)
