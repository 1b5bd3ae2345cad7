"""CSS from a session's HTML, kept only while it stays inside its output (issue 23, finding 11).

JupyterLab clips an output to its area (`.jp-OutputArea-output { overflow: auto }`), so CSS that
cannot leave that box is harmless: a table's colours, borders, alignment. What leaves it, or acts
on the page, is removed:

- a style block's rule must begin each selector with a class or id that the same output carries
  (pandas: `.dataframe …`, its Styler: `#T_abc12 …`) and that is not one of the front end's own
  names (`jp-`, `lm-`, `cm-`, nbclassic's `cell`, `output…`, `notebook` …); otherwise the rule is
  dropped. A rule whose declarations only set custom properties (`--xr-font-color0`, not the front
  end's `--jp-…`) may select the page (`:root`: xarray's colours);
- declarations: `position` other than static/relative/sticky (fixed and absolute boxes escape the
  clip), any `url()`/`image-set()`/`src()` except a `data:image/…` picture (no fetch from the
  Jupyter origin or anywhere else), `expression()`, `behavior`, `-moz-binding`, `javascript:`;
- at-rules other than `@media` and `@supports` (whose rules are screened the same way): no
  `@import`, `@font-face`, `@keyframes`, `@layer`, `@namespace`.

Parsed with tinycss2 (the CSS Syntax Level 3 tokenizer, linear). Nothing removed: the text is
kept as written, byte for byte.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import tinycss2
from tinycss2 import ast

#: the front ends' own class and id names: a selector starting there reaches beyond the output
FRONT_END_NAME = re.compile(r"^(?:jp-|lm-|p-|cm-|bp3-|id-|mjx|mathjax|codemirror|monaco|vscode|widget|ipywidget|"
                            r"jupyter|output|cell|notebook|prompt|inner_cell|input|text_cell|code_cell|site|header|"
                            r"ipython|navbar|modal|menu|toolbar|kernel|dialog|body|main|filebrowser|running|launcher|"
                            r"extensionmanager|table-of-contents|debugger|setting|sidebar|panel|tab-key)", re.I)
FRONT_END_PROPERTY = re.compile(r"^--(?:jp|lm|cm|vscode|widgets|md|mat|theia|colab)-", re.I)
_KEPT_POSITIONS = {"static", "relative", "sticky", "inherit", "initial", "unset", "revert", "revert-layer"}
_FETCHING_FUNCTIONS = {"url", "src", "image-set", "-webkit-image-set", "image", "cross-fade", "-webkit-cross-fade",
                       "element", "-moz-element", "paint", "expression"}
_BAD_PROPERTIES = {"behavior", "-ms-behavior", "-moz-binding", "binding"}
_DATA_IMAGE = re.compile(r"^\s*data:image/(?:png|jpeg|gif|webp|bmp)[;,]", re.I)
_SCRIPT_TEXT = re.compile(r"javascript:|vbscript:|expression\s*\(", re.I)


MAX_DEPTH = 32  # nested blocks and functions in one value, and @media levels: deeper is dropped


class TooDeep(Exception):
    """CSS nested deeper than MAX_DEPTH."""


class Allowance:
    """Characters of CSS one cell may still have parsed (tinycss2 is linear but slow: about 0.4 MB/s)."""

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, size: int) -> bool:
        """Whether `size` more characters may be parsed (and they are counted)."""
        if size > self.left:
            self.left = 0
            return False
        self.left -= size
        return True


def _walk(tokens: Iterable[Any]) -> Iterable[Any]:
    """Every token, blocks' and functions' contents included (iteratively; TooDeep past MAX_DEPTH)."""
    stack = [iter(tokens)]
    while stack:
        token = next(stack[-1], None)
        if token is None:
            stack.pop()
            continue
        yield token
        if isinstance(token, (ast.FunctionBlock, ast.ParenthesesBlock, ast.SquareBracketsBlock,
                              ast.CurlyBracketsBlock)):
            if len(stack) > MAX_DEPTH:
                raise TooDeep
            stack.append(iter(token.arguments if isinstance(token, ast.FunctionBlock) else token.content))


def _fetches(token: Any) -> bool:
    if isinstance(token, ast.URLToken):
        return not _DATA_IMAGE.match(token.value)
    if isinstance(token, ast.FunctionBlock) and token.lower_name in _FETCHING_FUNCTIONS:
        args = [a for a in token.arguments if not isinstance(a, (ast.WhitespaceToken, ast.Comment))]
        return not (token.lower_name == "url" and len(args) == 1 and isinstance(args[0], ast.StringToken)
                    and _DATA_IMAGE.match(args[0].value))
    return isinstance(token, (ast.StringToken, ast.IdentToken)) and bool(_SCRIPT_TEXT.search(token.value))


def declaration_is_safe(declaration: ast.Declaration) -> bool:
    """Whether one declaration keeps its box in the output and fetches nothing."""
    name = declaration.lower_name
    if name in _BAD_PROPERTIES:
        return False
    if name == "position":
        words = [t for t in declaration.value if not isinstance(t, (ast.WhitespaceToken, ast.Comment))]
        return len(words) == 1 and isinstance(words[0], ast.IdentToken) and words[0].lower_value in _KEPT_POSITIONS
    try:
        return not any(_fetches(token) or (isinstance(token, ast.FunctionBlock) and token.lower_name == "expression")
                       for token in _walk(declaration.value))
    except TooDeep:
        return False


def _declarations(content: list[Any]) -> tuple[list[Any], bool]:
    """(the items kept, whether one was dropped) of a declaration list."""
    items = tinycss2.parse_blocks_contents(content, skip_comments=True, skip_whitespace=True)
    kept = [item for item in items if isinstance(item, ast.Declaration) and declaration_is_safe(item)]
    return kept, len(kept) != len(items)


def _serialize_declarations(declarations: list[ast.Declaration]) -> str:
    return "; ".join(f"{d.name}: {tinycss2.serialize(d.value).strip()}" + (" !important" if d.important else "")
                     for d in declarations)


def screen_declarations(text: str) -> tuple[str, bool]:
    """(the style attribute's text, whether something was removed)."""
    kept, dropped = _declarations(tinycss2.parse_component_value_list(text))
    return (_serialize_declarations(kept) if dropped else text), dropped


def _selectors(prelude: list[Any]) -> list[list[Any]]:
    selectors: list[list[Any]] = [[]]
    for token in prelude:
        if isinstance(token, ast.LiteralToken) and token.value == ",":
            selectors.append([])
        elif not isinstance(token, ast.Comment):
            selectors[-1].append(token)
    return selectors


def _scoped(selector: list[Any], names: set[str]) -> bool:
    """Whether the selector's first compound names a class or id of this output (not the front end's)."""
    tokens = list(selector)
    while tokens and isinstance(tokens[0], ast.WhitespaceToken):
        tokens.pop(0)
    found = False
    for index, token in enumerate(tokens):
        if isinstance(token, ast.WhitespaceToken) or (isinstance(token, ast.LiteralToken) and token.value in ">+~"):
            break
        name = None
        if isinstance(token, ast.HashToken) and token.is_identifier:
            name = token.value
        elif isinstance(token, ast.LiteralToken) and token.value == "." and index + 1 < len(tokens) \
                and isinstance(tokens[index + 1], ast.IdentToken):
            name = tokens[index + 1].value
        if name is not None and name in names and not FRONT_END_NAME.match(name):
            found = True
    return found


def _only_own_custom_properties(declarations: list[Any], prelude: list[Any]) -> bool:
    return bool(declarations) and all(d.name.startswith("--") and not FRONT_END_PROPERTY.match(d.name)
                                      for d in declarations) \
        and not any(isinstance(t, ast.FunctionBlock) for t in prelude)


def _rules(rules: list[Any], names: set[str], depth: int = 0) -> tuple[list[Any], bool]:
    kept: list[Any] = []
    dropped = False
    for rule in rules:
        if isinstance(rule, (ast.WhitespaceToken, ast.Comment)):
            kept.append(rule)
        elif isinstance(rule, ast.QualifiedRule):
            try:
                for _ in _walk(rule.prelude):
                    pass
            except TooDeep:
                dropped = True
                continue
            declarations, lost = _declarations(rule.content)
            if not all(_scoped(s, names) for s in _selectors(rule.prelude)) \
                    and not (not lost and _only_own_custom_properties(declarations, rule.prelude)):
                dropped = True
                continue
            dropped = dropped or lost
            if lost:
                rule.content = tinycss2.parse_component_value_list(" " + _serialize_declarations(declarations) + " ")
            if declarations:
                kept.append(rule)
        elif isinstance(rule, ast.AtRule) and rule.lower_at_keyword in ("media", "supports") and rule.content \
                and depth < 4:
            inner, lost = _rules(tinycss2.parse_rule_list(rule.content), names, depth + 1)
            dropped = dropped or lost
            if lost:
                rule.content = tinycss2.parse_component_value_list(tinycss2.serialize(inner))
            kept.append(rule)
        else:
            dropped = True  # @import, @font-face, @keyframes, … and parse errors
    return kept, dropped


def screen_stylesheet(text: str, names: set[str]) -> tuple[str, bool]:
    """(a style block's text, whether something was removed); `names`: the output's classes and ids."""
    kept, dropped = _rules(tinycss2.parse_stylesheet(text), names)
    return (tinycss2.serialize(kept) if dropped else text), dropped
