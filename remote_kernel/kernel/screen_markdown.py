"""Markdown from a session, made inert while staying Markdown (issue 20; issue 23, findings 3 and 10).

The front end renders Markdown itself (JupyterLab: marked) and does not sanitise a live output,
so what it would turn into HTML or a link must be safe in *its* reading. Rather than follow one
parser's reading (and differ from marked's on blockquotes, list items, lazy lines or escapes),
the check reads the text conservatively, in time linear in its length:

- raw HTML and autolinks start with `<` before a letter, `/`, `!` or `?` (an http(s) or mailto
  autolink is fine);
- a link destination or a reference definition is what follows `(`, `<`, `>` or `]:` once all
  whitespace, control characters and backslashes are taken out and entities decoded (twice: a
  reader may decode after unescaping); its scheme must be http(s) or mailto, or `data:image/…`
  — wherever the definition sits (a blockquote, a list item, indented, split over lines).

Markdown with none of these stays as written. Otherwise it stays Markdown with the offending
class escaped by a backslash: every `<` (no tag, no autolink) and, when a destination had another
scheme, every `[` and `]` (no link, reference or definition forms). A backslash escape is
honoured by every CommonMark reader; only in code spans would it show.
"""
from __future__ import annotations

import html
import re

_HTML = re.compile(r"<[A-Za-z!/?]")
_SAFE_AUTOLINK = re.compile(r"<(?:https?://|mailto:)[^\s<>]*>", re.I)
_SQUASHED = re.compile(r"[\s\x00-\x1f\x7f\\]+")
_DESTINATION = re.compile(r"(?:(?<=[(<>])|(?<=\]:))([a-z][a-z0-9+.\-]*):")
_DATA_IMAGE = re.compile(r"image/(?:png|jpeg|gif|webp|bmp)[;,]")


def _unsafe_destination(text: str) -> bool:
    squashed = _SQUASHED.sub("", text)
    for _ in range(2):
        squashed = html.unescape(squashed)
    squashed = _SQUASHED.sub("", squashed).lower()
    for match in _DESTINATION.finditer(squashed):
        scheme = match.group(1)
        if scheme in ("http", "https", "mailto"):
            continue
        if scheme == "data" and _DATA_IMAGE.match(squashed, match.end()):
            continue
        return True
    return False


def screen(text: str) -> tuple[str, bool]:
    """(the Markdown made inert, whether it had to change)."""
    escape = []
    if _HTML.search(_SAFE_AUTOLINK.sub("", text)):
        escape.append("<")
    if _unsafe_destination(text):
        escape += ["[", "]"]
    for character in escape:
        text = text.replace(character, "\\" + character)
    return text, bool(escape)
