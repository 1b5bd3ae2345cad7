"""HTML from a session: kept byte for byte when inert, else cleaned by nh3 (issues 20, 23, 25).

Inert HTML passes as written: any re-serialisation would change what a library wrote (pandas'
`<style scoped>`, `halign`), and a note would claim a removal that did not happen. `inert` decides
with a tokenizer of our own, for three reasons no library meets together: it must take time
linear in its input (Python's html.parser is quadratic on `"<a" * n`), keep the input's bytes,
and never call inert what a browser reads otherwise. So it accepts only a strict subset of HTML —
allow-listed elements and attributes, quoted or plain values, comments without `--!>`, no
raw-text element but `<style>` (whose text holds no `<`), no foreign content (SVG, MathML), no
`<?`, CDATA or NUL — whose tokens every browser reads alike; its checks are in `_check_tag`.
Anything else goes to nh3 (html5ever: the browsers' parsing algorithm, linear), which removes
what is not allowed; its `<style>` blocks are then screened as CSS (`screen_css`).
"""
from __future__ import annotations

import html
import re
from contextvars import ContextVar

import nh3

from remote_kernel.kernel import screen_css

_MEDIA = {"video", "audio", "source", "track"}
TAGS = set(nh3.ALLOWED_TAGS) | {"style", "progress", "meter", "font", "section", "main", "label", "tfoot"} | _MEDIA
ATTRIBUTES: dict[str, set[str]] = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
ATTRIBUTES["*"] = {"class", "id", "style", "title", "lang", "dir", "align", "valign", "width", "height", "role"}
#: attributes of any element whose name starts so (accessibility labels: text for screen readers)
GENERIC_PREFIXES = {"aria-"}
#: kept when the HTML is inert, though nh3 sets them itself when it cleans (a link's rel)
_INERT_ONLY = {"a": {"rel"}}
for _tag, _names in {"table": {"border", "cellpadding", "cellspacing"}, "a": {"target", "name"},
                     "progress": {"value", "max"}, "meter": {"value", "min", "max", "low", "high", "optimum"},
                     "style": {"type", "scoped", "media"}, "td": {"nowrap", "halign"}, "th": {"nowrap", "halign"},
                     "font": {"color", "size", "face"}, "details": {"open"},
                     "video": {"src", "controls", "poster", "loop", "muted", "autoplay", "playsinline", "preload"},
                     "audio": {"src", "controls", "loop", "muted", "autoplay", "preload"},
                     "source": {"src", "type", "media"}, "track": {"src", "kind", "srclang", "label", "default"},
                     }.items():
    ATTRIBUTES.setdefault(_tag, set()).update(_names)
_URL_ATTRIBUTES = {"href", "src", "cite", "poster"}
_DATA_MEDIA = re.compile(r"data:(?:image/(?:png|jpeg|gif|webp|bmp|svg\+xml)|video/[\w.+-]+|audio/[\w.+-]+)[;,]", re.I)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_IGNORED = re.compile(r"[\t\n\r]")


def safe_url(tag: str, attribute: str, value: str) -> bool:
    """Whether a URL (as written in an attribute: entities undecoded) goes only to http(s), mailto or a path.

    `data:` is allowed as the source of a picture, a video or a sound, which cannot run code.
    """
    url = _URL_IGNORED.sub("", html.unescape(value)).strip("".join(map(chr, range(33))))
    scheme = _SCHEME.match(url)
    if scheme is None:
        return True  # a path, a query or an anchor: resolved against the page, no scheme of its own
    name = scheme.group(1).lower()
    if name in ("http", "https", "mailto"):
        return True
    return name == "data" and attribute in ("src", "poster") and tag in ("img", "video", "audio", "source") \
        and bool(_DATA_MEDIA.match(url))


#: the CSS the current screening may still parse (its cell's allowance)
_ALLOWANCE: ContextVar[screen_css.Allowance] = ContextVar("css_allowance")


def _allowance() -> screen_css.Allowance:
    return _ALLOWANCE.get(None) or screen_css.Allowance(CSS_LIMIT)


#: characters of CSS (style blocks and attributes) parsed for one output when no cell's allowance applies
CSS_LIMIT = 512 << 10


def _filter(tag: str, attribute: str, value: str) -> str | None:
    """nh3's per-attribute check: the same URL rule as `inert`, and styles without escaping CSS."""
    if attribute in _URL_ATTRIBUTES and not safe_url(tag, attribute, html.escape(value)):
        return None
    if attribute == "style":
        if not _allowance().take(len(value)):
            return None
        cleaned, _ = screen_css.screen_declarations(value)
        return cleaned or None
    return value


_CLEANER = nh3.Cleaner(
    tags=TAGS, attributes=ATTRIBUTES, clean_content_tags={"script", "noscript", "template", "iframe", "object",
                                                          "embed", "textarea", "select", "math", "svg"},
    url_schemes={"http", "https", "mailto", "data"}, attribute_filter=_filter, generic_attribute_prefixes=GENERIC_PREFIXES,
    strip_comments=True, link_rel="noopener noreferrer")

_WS = "\t\n\f\r "
_NAME = re.compile(r"[A-Za-z][^\t\n\f\r />]*")
_GAP = re.compile(r"[\t\n\f\r /]*")
_ATTRIBUTE = re.compile(r"([^\t\n\f\r />\"'<=]+)(?:[\t\n\f\r ]*=[\t\n\f\r ]*"
                        r"(?:\"([^\"]*)\"|'([^']*)'|([^\t\n\f\r >\"'<=`]+)(?=[\t\n\f\r >])))?")
_END_TAG = re.compile(r"</([A-Za-z][^\t\n\f\r />]*)[\t\n\f\r ]*>")
_DOCTYPE = re.compile(r"<!doctype[^<>]*>", re.I)


class NotInert(Exception):
    """The HTML holds something outside the inert subset (the reason is for tests and logs)."""


def _check_tag(tag: str, attributes: list[tuple[str, str]], names: set[str], allowance: screen_css.Allowance) -> None:
    if tag not in TAGS:
        raise NotInert(f"element <{tag}>")
    allowed = ATTRIBUTES.get(tag, set()) | ATTRIBUTES["*"] | _INERT_ONLY.get(tag, set())
    for name, value in attributes:
        if name not in allowed and not name.startswith(tuple(GENERIC_PREFIXES)):
            raise NotInert(f"attribute {name} on <{tag}>")
        if name in _URL_ATTRIBUTES and not safe_url(tag, name, value):
            raise NotInert(f"a URL in {name} on <{tag}>")
        if name == "style" and (not allowance.take(len(value))
                                or screen_css.screen_declarations(html.unescape(value))[1]):
            raise NotInert(f"a style on <{tag}> that leaves the output or fetches (or past the CSS allowance)")
        if name in ("class", "id"):
            names.update(html.unescape(value).split())


def _start_tag(text: str, at: int) -> tuple[int, str, list[tuple[str, str]]]:
    """(end, tag, attributes) of the start tag at `at` (the `<`), read as the HTML tokenizer does."""
    name = _NAME.match(text, at + 1)
    assert name is not None
    position = name.end()
    attributes: list[tuple[str, str]] = []
    while True:
        position = _GAP.match(text, position).end()  # type: ignore[union-attr]
        if position >= len(text):
            raise NotInert("a tag without its end")
        if text[position] == ">":
            return position + 1, name.group().lower(), attributes
        attribute = _ATTRIBUTE.match(text, position)
        if attribute is None or attribute.end() >= len(text) or text[attribute.end()] not in _WS + "/>":
            raise NotInert("an attribute the tokenizer would read differently")
        value = next((v for v in attribute.group(2, 3, 4) if v is not None), "")
        attributes.append((attribute.group(1).lower(), value))
        position = attribute.end()


def inert(text: str, allowance: screen_css.Allowance | None = None) -> bool:
    """Whether the HTML is inert, in the strict subset described above; linear in its length."""
    try:
        names, styles = _scan(text, True, allowance or screen_css.Allowance(CSS_LIMIT))
        return not any(screen_css.screen_stylesheet(text[a:b], names)[1] for a, b in styles)
    except NotInert:
        return False


def screen(text: str, allowance: screen_css.Allowance | None = None) -> tuple[str, bool]:
    """(the HTML, whether something was removed): as written when inert, else cleaned."""
    allowance = allowance or screen_css.Allowance(CSS_LIMIT)
    if inert(text, allowance):
        return text, False
    token = _ALLOWANCE.set(allowance)
    try:
        return clean(text), True
    finally:
        _ALLOWANCE.reset(token)


def _scan(text: str, strict: bool, allowance: screen_css.Allowance) -> tuple[set[str], list[tuple[int, int]]]:
    """(the classes and ids, the spans of style blocks' text) of HTML in the inert subset, else NotInert.

    Not strict: nh3's own output, whose style blocks end at the first `</style>` and may hold `<`.
    """
    if "\x00" in text:
        raise NotInert("a NUL character")
    names: set[str] = set()
    styles: list[tuple[int, int]] = []
    position = 0
    while (start := text.find("<", position)) >= 0:
        following = text[start + 1:start + 2]
        if following.isascii() and following.isalpha():
            position, tag, attributes = _start_tag(text, start)
            _check_tag(tag, attributes, names, allowance)
            if tag == "style":  # raw text up to </style: with no `<` in it, every reader ends it in one place
                close = text.find("<" if strict else "</style>", position)
                end = _END_TAG.match(text, close) if close >= 0 else None
                if end is None or end.group(1).lower() != "style":
                    raise NotInert("a style block without its end")
                if not allowance.take(close - position):
                    raise NotInert("style blocks past the CSS allowance")
                styles.append((position, close))
                position = end.end()
        elif following == "/":
            end = _END_TAG.match(text, start)
            if end is not None:
                position = end.end()
            elif text.startswith("</>", start) or start + 2 == len(text):
                position = start + 2
            else:
                raise NotInert("an end tag the tokenizer would read differently")
        elif following == "!":
            if text.startswith(("<!-->", "<!--->"), start):
                position = text.find(">", start) + 1
            elif text.startswith("<!--", start):
                close = text.find("-->", start + 4)
                if close < 0 or "--!>" in text[start + 4:close]:
                    raise NotInert("a comment without a plain end")
                position = close + 3
            elif (doctype := _DOCTYPE.match(text, start)) is not None:
                position = doctype.end()
            else:
                raise NotInert("a markup declaration (CDATA, a bogus comment)")
        elif following == "?":
            raise NotInert("a processing instruction")
        else:
            position = start + 1  # `<` before anything else is text
    return names, styles


_WITHOUT_STYLE = nh3.Cleaner(
    tags=TAGS - {"style"}, attributes={k: v for k, v in ATTRIBUTES.items() if k != "style"}, clean_content_tags={
        "script", "noscript", "template", "iframe", "object", "embed", "textarea", "select", "math", "svg", "style"},
    url_schemes={"http", "https", "mailto", "data"}, attribute_filter=_filter, generic_attribute_prefixes=GENERIC_PREFIXES,
    strip_comments=True, link_rel="noopener noreferrer")


def clean(text: str) -> str:
    """HTML without anything that can run or leave its output: nh3, then its style blocks screened."""
    cleaned = _CLEANER.clean(text)
    if "<style" not in cleaned:
        return cleaned
    try:
        names, styles = _scan(cleaned, False, _allowance())
    except NotInert:  # not expected of nh3's output: then no style block is kept
        return _WITHOUT_STYLE.clean(text)
    parts, at = [], 0
    for start, end in styles:
        parts += [cleaned[at:start], screen_css.screen_stylesheet(cleaned[start:end], names)[0]]
        at = end
    return "".join(parts) + cleaned[at:]
