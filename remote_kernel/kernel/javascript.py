"""The JavaScript entry of the language table: `is_complete`, and the helpers that answer from the session.

A console asks whether a cell is complete before it sends it, and the answer must come from the
kernel (standard library only, no Node.js at hand: the session may be remote). So this is a small
scanner: it skips strings, template literals (with nested `${…}`), regular expressions and
comments, and balances brackets. Open brackets, an unterminated template or comment, or a
trailing operator mean "incomplete"; a bracket that closes nothing, or a quote string cut by a
line end, is "invalid". Everything else is "complete" (Node.js reports real syntax errors when
the cell runs). Its cases: tests/test_javascript_is_complete.py, checked against `node --check`.

It is a third scanner beside the Node worker's tokenizer (pool/workers/node_worker.js), on
purpose: that one runs inside the session, in JavaScript, to rewrite cells; this one runs in the
kernel to answer a console, and needs brackets and strings only. Why neither is a maintained
parser: the comment above "Source rewriting" in node_worker.js.

The helpers (completion, inspection, user_expressions) are JavaScript run as silent executions;
each prints its answer after `helper.HELPER_MARK`.
"""
from __future__ import annotations

import json
import re
from typing import Any

from remote_kernel.kernel.helper import HELPER_MARK

# How an interrupted cell ends. Node's REPL, on Ctrl+C during `while (true) {}` (Node 20), prints
#   Uncaught Error: Script execution was interrupted by `SIGINT`   (code ERR_SCRIPT_EXECUTION_INTERRUPTED)
# and the same message for an awaited promise. The kernel uses that message (never Python's
# "KeyboardInterrupt"), under the name the Node worker gives it (PROTOCOL.md: `Interrupted`).
INTERRUPTED = ("Interrupted", "Script execution was interrupted by `SIGINT`")

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


def is_complete(code: str) -> dict[str, Any]:
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
            number = _NUMBER.match(code, i)
            i = number.end() if number else i + 1
            last, last_kind = "0", "value"
        elif c.isalpha() or c in "_$\\#" or ord(c) > 127:
            word = _WORD.match(code, i)
            end = word.end() if word else i
            i, last, last_kind = max(end, i + 1), code[i:end], "word"
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


def _incomplete(stack: list[str]) -> dict[str, Any]:
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


# --- helpers that answer from the session's own context ------------------------------------------
# Each is JavaScript run as a silent execution; it prints the answer as one JSON line after `mark`.

_HELPER = """(() => {
  const util = require('util');
  let answer = {};
  try {
    const args = JSON.parse(%(args)s);
    const IDENT = /^[A-Za-z_$][\\w$]*$/;
    const valueOf = (chain) => {  // the value of a dotted name, looked up without calling anything
      const [root, ...keys] = chain.split(/\\s*\\??\\.\\s*/);
      if (!IDENT.test(root) || !(root in globalThis)) return { found: false };
      let value = globalThis[root];
      for (const key of keys) {
        if (value === null || value === undefined || !(key in Object(value))) return { found: false };
        value = value[key];
      }
      return { found: true, value };
    };
%(body)s
  } catch (error) {
    answer = { error: String(error && error.message || error) };
  }
  console.log(%(mark)s + JSON.stringify(answer));
})()"""

_KEYWORDS = ("await async break case catch class const continue debugger default delete do else export "
             "extends false finally for function if import in instanceof let new null return static super "
             "switch this throw true try typeof undefined var void while with yield").split()

_COMPLETE_BODY = """
    const [before, cursor, keywords] = args;
    const member = /([A-Za-z_$][\\w$]*(?:\\s*\\??\\.\\s*[A-Za-z_$][\\w$]*)*)\\s*\\??\\.\\s*([A-Za-z_$][\\w$]*)?$/.exec(before);
    let names = [];
    let prefix = '';
    if (member) {
      prefix = member[2] || '';
      const { found, value } = valueOf(member[1]);
      if (found && value !== null && value !== undefined) {
        const seen = new Set();
        for (let o = Object(value); o; o = Object.getPrototypeOf(o)) Object.getOwnPropertyNames(o).forEach((n) => seen.add(n));
        names = [...seen];
      }
    } else {
      const word = /[A-Za-z_$][\\w$]*$/.exec(before);
      prefix = word ? word[0] : '';
      names = [...Object.getOwnPropertyNames(globalThis), ...keywords];
    }
    const matches = [...new Set(names)].filter((n) => IDENT.test(n) && n.startsWith(prefix)
      && (prefix.startsWith('_') || !n.startsWith('_')) && n !== 'constructor').sort();
    answer = { matches, cursor_start: cursor - prefix.length, cursor_end: cursor };
"""

_INSPECT_BODY = """
    const [around, level] = args;
    const { found, value } = valueOf(around);
    if (found) {
      let text = util.inspect(value, { depth: level > 0 ? 2 : 0, colors: false });
      if (typeof value === 'function') {
        const source = Function.prototype.toString.call(value);
        text += '\\n' + (level > 0 ? source : source.split('\\n')[0]);
      }
      answer = { found: true, data: { 'text/plain': text } };
    } else {
      answer = { found: false, data: {} };
    }
"""

_EXPRESSIONS_BODY = """
    for (const [name, expression] of Object.entries(args)) {
      try {
        const value = (0, eval)(expression);
        answer[name] = { status: 'ok', data: { 'text/plain': util.inspect(value, { colors: false }) }, metadata: {} };
      } catch (error) {
        answer[name] = { status: 'error', ename: String(error && error.name || 'Error'),
                         evalue: String(error && error.message || error), traceback: [] };
      }
    }
"""


def _helper(body: str, args: object) -> str:
    return _HELPER % {"args": json.dumps(json.dumps(args)), "body": body, "mark": json.dumps(HELPER_MARK)}


def complete_code(code: str, cursor_pos: int) -> str:
    """A helper answering complete_request: global names, or the properties of `a.b.` before the cursor."""
    before = code[:cursor_pos]
    return _helper(_COMPLETE_BODY, [before[-2000:], cursor_pos, _KEYWORDS])


def inspect_code(code: str, cursor_pos: int, detail_level: int) -> str:
    """A helper answering inspect_request: the inspected value of the dotted name at the cursor."""
    start = end = cursor_pos
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] in "_$."):
        start -= 1
    while end < len(code) and (code[end].isalnum() or code[end] in "_$"):
        end += 1
    return _helper(_INSPECT_BODY, [code[start:end].strip("."), detail_level])


def expressions_code(expressions: dict[str, str]) -> str:
    """A helper evaluating user_expressions in the session's global scope."""
    return _helper(_EXPRESSIONS_BODY, expressions)
