"""JavaScript-aware `is_complete` for the remote-javascript kernel (standard library only).

A console asks whether a cell is complete before it sends it. Node.js has no such API, so this
is a small scanner: it skips strings, template literals (with nested `${…}`), regular
expressions and comments, and balances brackets. Open brackets, an unterminated template or
comment, or a trailing operator mean "incomplete"; a bracket that closes nothing, or a quote
string cut by a line end, is "invalid". Everything else is "complete" (Node.js reports real
syntax errors when the cell runs).
"""
from __future__ import annotations

import re

_PUNCTUATORS = sorted("""
>>>= ... === !== **= <<= >>= >>> &&= ||= ??= => == != <= >= && || ?? ?. ++ -- += -= *= /= %= &= |= ^=
** << >> { } ( ) [ ] ; , < > + - * / % & | ^ ! ~ ? : = . @
""".split(), key=len, reverse=True)
# A cell that ends with one of these needs more input (`++`/`--` and closers end expressions).
_NEEDS_MORE = set(_PUNCTUATORS) - {"++", "--", ")", "]", "}", ";"}
# After these words a `/` starts a regular expression rather than a division.
_WORDS_BEFORE_EXPRESSION = {"return", "typeof", "instanceof", "in", "of", "new", "delete", "void",
                            "throw", "case", "do", "else", "yield", "await", "extends"}
_NUMBER = re.compile(r"0[xXoObB][\da-fA-F_]+n?|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?n?")
_WORD = re.compile(r"#?[\w$\\\u0080-\uffff]*")
_PAIRS = {")": "(", "]": "[", "}": "{"}
_LINE_ENDS = "\n\r\u2028\u2029"


def is_complete(code: str) -> dict:
    """The `is_complete_reply` content for a JavaScript cell: status and, if incomplete, indent."""
    stack: list[str] = []  # "(", "[", "{", or "${" for a template substitution
    last = ""  # the last significant token, for regex detection and the trailing-operator rule
    last_kind = ""  # "word", "value" (number, string, regex, template) or "punct"
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c.isspace():
            i += 1
        elif code.startswith("//", i):
            while i < n and code[i] not in _LINE_ENDS:
                i += 1
        elif code.startswith("/*", i):
            end = code.find("*/", i + 2)
            if end < 0:
                return _incomplete(stack)
            i = end + 2
        elif c in "'\"":
            i += 1
            while i < n and code[i] != c:
                if code[i] == "\\":
                    i += 2
                    continue
                if code[i] in _LINE_ENDS:
                    return {"status": "invalid"}
                i += 1
            if i >= n:  # cut at the end: a trailing backslash continues it, anything else is broken
                return _incomplete(stack) if code.endswith("\\") or code.endswith("\\\n") else {"status": "invalid"}
            i += 1
            last, last_kind = c, "value"
        elif c == "`" or (c == "}" and stack and stack[-1] == "${"):
            if c == "}":
                stack.pop()
            i += 1
            while i < n and code[i] != "`" and not code.startswith("${", i):
                i += 2 if code[i] == "\\" else 1
            if i >= n:
                return _incomplete(stack)
            if code[i] == "`":
                i += 1
                last, last_kind = "`", "value"
            else:
                i += 2
                stack.append("${")
                last, last_kind = "${", "punct"
        elif c == "/" and _regex_allowed(last, last_kind):
            end = _regex_end(code, i)
            if end < 0:
                i += 1
                last, last_kind = "/", "punct"
            else:
                i = end
                last, last_kind = "/re/", "value"
        elif c.isdigit() or (c == "." and code[i + 1:i + 2].isdigit()):
            i = _NUMBER.match(code, i).end()
            last, last_kind = "0", "value"
        elif c.isalpha() or c in "_$\\#" or ord(c) > 127:
            match = _WORD.match(code, i)
            i = match.end() if match.end() > i else i + 1
            last, last_kind = match.group(), "word"
        else:
            token = next((p for p in _PUNCTUATORS if code.startswith(p, i)), c)
            i += len(token)
            if token in "([{":
                stack.append(token)
            elif token in _PAIRS:
                if not stack or stack[-1] != _PAIRS[token]:
                    return {"status": "invalid"}
                stack.pop()
            last, last_kind = token, "punct"
    if stack:
        return _incomplete(stack)
    if last_kind == "punct" and last in _NEEDS_MORE:
        return _incomplete(stack)
    return {"status": "complete"}


def _incomplete(stack: list[str]) -> dict:
    return {"status": "incomplete", "indent": "  " * len(stack)}


def _regex_allowed(last: str, last_kind: str) -> bool:
    if not last:
        return True
    if last_kind == "word":
        return last in _WORDS_BEFORE_EXPRESSION
    if last_kind == "punct":
        return last not in (")", "]", "++", "--")
    return False


def _regex_end(code: str, i: int) -> int:
    """The end of a regular expression literal starting at `i`, or -1 when the line has none."""
    in_class = False
    j = i + 1
    while j < len(code):
        c = code[j]
        if c in _LINE_ENDS:
            return -1
        if c == "\\":
            j += 1
        elif c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        elif c == "/" and not in_class:
            j += 1
            while j < len(code) and (code[j].isalnum() or code[j] in "_$"):
                j += 1
            return j
        j += 1
    return -1
