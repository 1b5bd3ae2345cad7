"""Markdown from a session, made inert (issue 20; issue 23, findings 3 and 10).

The front end renders Markdown itself (JupyterLab: marked) and does not sanitise a live output,
so what it would turn into HTML or a link must be safe in *its* reading. Rather than follow one
parser's reading (and differ from marked's on blockquotes, list items, lazy lines or escapes),
`plain` reads the text conservatively, in time linear in its length:

- raw HTML and autolinks start with `<` before a letter, `/`, `!` or `?` (an http(s) or mailto
  autolink is fine);
- a link destination or a reference definition is what follows `](`, `]:` or `<` once all
  whitespace, control characters, backslashes and `>` (blockquote markers) are taken out and
  entities decoded (twice: a reader may decode after unescaping); its scheme must be http(s) or
  mailto, or `data:image/…` — wherever the definition sits (a blockquote, a list item,
  indented, split over lines). Prose such as `> Note: …` or `(see: …)` is not a destination.

Markdown with none of these stays as written. Otherwise it is rendered here (markdown-it) and
sent as HTML, screened as any HTML is — while the cell's allowance lasts: markdown-it is linear
but slow on hostile input (about 30 KB/s), so each output up to RENDER_LIMIT characters and each
cell up to CELL_RENDER_LIMIT. Past them the text stays Markdown with the offending class escaped
by a backslash: every `<` (no tag, no autolink) and, when a destination had another scheme,
every `[` and `]` (no link, reference or definition forms) and that scheme's colon. A backslash
escape is honoured by every CommonMark reader; only in code spans would it show.
"""
from __future__ import annotations

import html
import re

_HTML = re.compile(r"<[A-Za-z!/?]")
_SAFE_AUTOLINK = re.compile(r"<(?:https?://|mailto:)[^\s<>]*>", re.I)
_SQUASHED = re.compile(r"[\s\x00-\x1f\x7f\\>]+")
_DESTINATION = re.compile(r"(?:(?<=\]\()|(?<=\]:)|(?<=<))([a-z][a-z0-9+.\-]*):")
_DATA_IMAGE = re.compile(r"image/(?:png|jpeg|gif|webp|bmp)[;,]")


RENDER_LIMIT = 16 << 10  # characters of one Markdown output rendered here (about 0.5 s at worst)
CELL_RENDER_LIMIT = 64 << 10  # … and of one cell's


def _unsafe_schemes(text: str) -> set[str]:
    squashed = _SQUASHED.sub("", text)
    for _ in range(2):
        squashed = html.unescape(squashed)
    squashed = _SQUASHED.sub("", squashed).lower()
    found: set[str] = set()
    for match in _DESTINATION.finditer(squashed):
        scheme = match.group(1)
        if scheme in ("http", "https", "mailto") or (scheme == "data" and _DATA_IMAGE.match(squashed, match.end())):
            continue
        found.add(scheme)
    return found


def plain(text: str) -> bool:
    """Whether the Markdown holds no raw HTML and no link to a scheme other than http(s), mailto, data:image."""
    return not _HTML.search(_SAFE_AUTOLINK.sub("", text)) and not _unsafe_schemes(text)


def escape(text: str) -> str:
    """The Markdown with raw HTML, and links when one has an unsafe scheme, escaped (linear)."""
    if _HTML.search(_SAFE_AUTOLINK.sub("", text)):
        text = text.replace("<", "\\<")
    schemes = _unsafe_schemes(text)
    if schemes:
        text = text.replace("[", "\\[").replace("]", "\\]")
        named = sorted(schemes)[:32]
        text = re.sub(r"(?i)\b(" + "|".join(map(re.escape, named)) + r")(\s*):", r"\1\2\\:", text)
    return text


def render(text: str) -> str:
    """Markdown as HTML (CommonMark with tables and strikethrough), to be screened as HTML."""
    from markdown_it import MarkdownIt

    html: str = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)
    return html
