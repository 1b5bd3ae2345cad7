"""What a session produces, made safe to hand to a front end (issue 20).

JupyterLab and VS Code treat the outputs of a live execution as trusted: a `<script>`, an
`onerror=` handler or an `application/javascript` bundle would run on the Jupyter server's
origin, outside the sandbox that holds the session's code. So every IOPub output passes
`OutputGuard.screen` (the kernel's `publish` calls it) and, unless the user allowed active
content, keeps only what cannot run code:

- `text/html` is cleaned by nh3 (the maintained Rust sanitizer `ammonia`): no scripts, no event
  handlers, no `javascript:` links, no iframes or forms; tables, styles and classes stay, so a
  DataFrame looks the same;
- `text/markdown` stays as written unless it carries raw HTML, entities or links other than
  http(s), mailto, anchors and paths (which the front end would render unsanitized): then it is
  rendered here (markdown-it) and sent as cleaned `text/html`;
- `image/svg+xml` loses script elements, `foreignObject`, event handlers and script links
  (parsed by defusedxml: no entity expansion); an SVG with nothing to remove is kept as sent;
- images: only PNG, JPEG, GIF, WebP, BMP and sanitized SVG;
- JSON MIME types that front-end extensions render (plotly, vega, vega-lite, GeoJSON, widgets
  views…) stay, except those that carry code to run (`*exec*`, `*load*`, `*javascript*`);
- `text/plain`, `text/latex` and other non-script text types stay; everything else
  (`application/javascript`, `text/javascript`, `application/pdf`, unknown types) is dropped.

The first output of a session that loses something says so once, with how to allow it
(`%session active on`, or REMOTE_KERNEL_ACTIVE_CONTENT=1).
"""
from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any
from xml.etree import ElementTree

import nh3

#: IOPub messages whose `data` is a MIME bundle from the session
BUNDLE_MESSAGES = ("display_data", "update_display_data", "execute_result")
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
#: words in a MIME type that mean "code to run"
_SCRIPT_WORDS = re.compile(r"javascript|ecmascript|jscript|vbscript|script|exec|_load|\.load|wasm", re.I)
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$", re.I)
#: VS Code's background executions (vscode.py): JSON or text the extension parses, never run
_VSCODE_BACKGROUND = re.compile(r"^application/vnd\.vscode\.bg\.execution\.\d+(?:\.result|\.error)?$", re.I)

_TAGS = set(nh3.ALLOWED_TAGS) | {"style", "progress", "meter", "font", "section", "main", "label", "tfoot"}
_ATTRIBUTES: dict[str, set[str]] = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = {"class", "id", "style", "title", "lang", "dir", "align", "valign", "width", "height"}
for _tag, _names in {"table": {"border", "cellpadding", "cellspacing"}, "a": {"target", "name"},
                     "progress": {"value", "max"}, "meter": {"value", "min", "max", "low", "high", "optimum"},
                     "style": {"type", "scoped", "media"}, "td": {"nowrap"}, "th": {"nowrap"},
                     "font": {"color", "size", "face"}, "details": {"open"}}.items():
    _ATTRIBUTES.setdefault(_tag, set()).update(_names)
_DATA_IMAGE = re.compile(r"^\s*data:image/(?:png|jpeg|gif|webp|bmp|svg\+xml)[;,]", re.I)


def _keep_data_urls_for_images(tag: str, attribute: str, value: str) -> str | None:
    """`data:` URLs only as an image's source (a picture in an <img> cannot run code)."""
    if value.strip().lower().startswith("data:") and not (tag == "img" and attribute == "src"
                                                           and _DATA_IMAGE.match(value)):
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS, attributes=_ATTRIBUTES, clean_content_tags={"script", "noscript", "template", "iframe", "object",
                                                            "embed", "textarea", "select", "math", "svg"},
    url_schemes={"http", "https", "mailto", "data"}, attribute_filter=_keep_data_urls_for_images,
    strip_comments=True, link_rel="noopener noreferrer")


def clean_html(text: str) -> str:
    """HTML without anything that can run: scripts, handlers, script links, frames, forms."""
    return _CLEANER.clean(text)


# --- Markdown -----------------------------------------------------------------------------

#: what makes Markdown carry HTML of its own: tags (and autolinks), entities
_MARKDOWN_HTML = re.compile(r"<[A-Za-z!/?]|&#?\w+;")
#: link destinations: inline `](dest` and reference definitions `[name]: dest`
_MARKDOWN_LINK = re.compile(r"\]\s*\(\s*<?([^)\s>]*)|^[ ]{0,3}\[[^\]]+\]:\s*<?(\S*)", re.M)
_SAFE_DESTINATION = re.compile(r"^(?:https?://|mailto:|#|[^:/?#]*(?:[/?#]|$))", re.I)


def _plain_markdown(text: str) -> bool:
    """Markdown without raw HTML or entities, whose links go only to http(s), mailto, anchors or paths."""
    if _MARKDOWN_HTML.search(text):
        return False
    return all(_SAFE_DESTINATION.match(inline or reference) for inline, reference in _MARKDOWN_LINK.findall(text))


def clean_markdown(text: str) -> tuple[str, str]:
    """(MIME type, text): Markdown as written when it holds no HTML or links, else cleaned HTML."""
    if _plain_markdown(text):
        return "text/markdown", text
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)
    return "text/html", clean_html(rendered)


# --- SVG ----------------------------------------------------------------------------------

_SVG_DROPPED_ELEMENTS = {"script", "foreignobject", "iframe", "object", "embed", "handler", "listener",
                         "audio", "video", "canvas"}
_SAFE_LINK = re.compile(r"^\s*(?:#|https?://|data:image/(?:png|jpeg|gif|webp|bmp)[;,])", re.I)


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


def clean_svg(text: str) -> str | None:
    """The SVG without scripts, foreign objects, handlers or script links; None if it is not SVG.

    Parsed with defusedxml (no entity expansion, no external fetches). When nothing had to be
    removed the text is returned as sent, byte for byte.
    """
    from defusedxml import ElementTree as SafeTree
    from defusedxml.common import DefusedXmlException

    try:
        root = SafeTree.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return None
    if _local(root.tag) != "svg":
        return None
    removed = False
    for parent in list(root.iter()):
        for child in list(parent):
            name = _local(child.tag) if isinstance(child.tag, str) else ""
            target = str(child.get("attributeName", "")).lower()
            if name in _SVG_DROPPED_ELEMENTS or (name in ("set", "animate", "animatemotion", "animatetransform")
                                                 and (target.startswith("on") or target.endswith("href"))):
                parent.remove(child)
                removed = True
    for element in root.iter():
        for attribute in list(element.attrib):
            name = _local(attribute)
            value = element.attrib[attribute]
            if name.startswith("on") or (name == "href" and not _SAFE_LINK.match(value)) or \
                    (name in ("style", "values", "from", "to") and re.search(r"(?i)javascript:|expression\(", value)):
                del element.attrib[attribute]
                removed = True
    if not removed:
        return text
    ElementTree.register_namespace("", "http://www.w3.org/2000/svg")
    ElementTree.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    return ElementTree.tostring(root, encoding="unicode")


# --- bundles ------------------------------------------------------------------------------

def screen_bundle(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The bundle without active content, and the MIME types that lost something."""
    kept: dict[str, Any] = {}
    lost: list[str] = []
    for mime, value in data.items():
        kind = str(mime).lower()
        if kind == "text/html" and isinstance(value, str):
            cleaned = clean_html(value)
            kept[mime] = cleaned
            if _changed(value, cleaned):
                lost.append(mime)
        elif kind == "text/markdown" and isinstance(value, str):
            new_type, cleaned = clean_markdown(value)
            if new_type == "text/html":
                kept.setdefault("text/html", cleaned)
                lost.append(mime)
            else:
                kept[mime] = cleaned
        elif kind == "image/svg+xml" and isinstance(value, str):
            svg = clean_svg(value)
            if svg is not None:
                kept[mime] = svg
            if svg != value:
                lost.append(mime)
        elif kind in IMAGE_TYPES and isinstance(value, str) or _VSCODE_BACKGROUND.match(kind):
            kept[mime] = value
        elif _SCRIPT_WORDS.search(kind) or kind.startswith("image/"):
            lost.append(mime)
        elif _JSON_TYPE.match(kind) or (kind.startswith("text/") and isinstance(value, str)):
            kept[mime] = value
        else:
            lost.append(mime)
    return kept, lost


def _changed(before: str, after: str) -> bool:
    """Whether cleaning removed an element or an attribute (not merely re-serialised the HTML)."""
    had, has = _inventory(before), _inventory(after)
    return any(count > has.get(item, 0) for item, count in had.items())


class _Inventory(HTMLParser):
    """Counts elements and (element, attribute) pairs, with URLs' schemes, in an HTML text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: Counter = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found[tag] += 1
        for name, value in attrs:
            scheme = re.match(r"\s*([a-z][\w+.-]*):", (value or "").lower()) if name in ("href", "src") else None
            self.found[(tag, name, scheme.group(1) if scheme else "")] += 1


def _inventory(text: str) -> Counter:
    parser = _Inventory()
    parser.feed(text)
    parser.close()
    return parser.found


class OutputGuard:
    """Screens every output of one kernel; says once per session when something was removed."""

    def __init__(self, allow_active: bool = False) -> None:
        self.allow_active = allow_active
        self._told = False

    def new_session(self) -> None:
        """The session changed: the next removal is announced again."""
        self._told = False

    def screen(self, msg_type: str, content: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """(content to send or None to send nothing, a notice to show first or None)."""
        if self.allow_active or msg_type not in BUNDLE_MESSAGES or not isinstance(content.get("data"), dict):
            return content, None
        data, lost = screen_bundle(content["data"])
        if not lost:
            return content, None
        notice = None
        if not self._told:
            self._told = True
            notice = notice_for(lost)
        if not data:
            return None, notice
        return {**content, "data": data}, notice


def notice_for(lost: list[str]) -> str:
    kinds = ", ".join(dict.fromkeys(lost))
    return (f"[remote_kernel: active content was removed from an output of the session ({kinds}): scripts, event "
            "handlers and script links do not reach the notebook by default. To allow them for this kernel run "
            "`%session active on` (or start the kernel with REMOTE_KERNEL_ACTIVE_CONTENT=1); do so only if you "
            "trust the code the session runs. This note is shown once per session.]\n")


# --- helper answers -----------------------------------------------------------------------

HELPER_ANSWER_LIMIT = 1 << 20  # bytes of a completion, inspection or user-expressions answer
MAX_MATCHES = 2000  # completions kept from one answer
MAX_MATCH_LENGTH = 1000  # characters of one completion


def completion(answer: Any, code: str, cursor_pos: int) -> dict[str, Any] | None:
    """The complete_reply fields of a session's answer, or None when it is not a usable answer.

    Matches must be strings (at most MAX_MATCHES, each at most MAX_MATCH_LENGTH characters) and
    the replaced range must lie within the code: 0 ≤ cursor_start ≤ cursor_end ≤ len(code).
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("matches"), list):
        return None
    matches = [m for m in answer["matches"][:MAX_MATCHES] if isinstance(m, str) and 0 < len(m) <= MAX_MATCH_LENGTH]
    start, end = answer.get("cursor_start", cursor_pos), answer.get("cursor_end", cursor_pos)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)) \
            or not 0 <= start <= end <= len(code):
        return None
    types = []
    for item in answer.get("types") or []:
        if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"] in matches:
            kind, start_i, end_i, signature = (item.get("type"), item.get("start"), item.get("end"),
                                               item.get("signature", ""))
            if isinstance(start_i, int) and isinstance(end_i, int) and 0 <= start_i <= end_i <= len(code):
                types.append({"start": start_i, "end": end_i, "text": item["text"],
                              "type": kind if isinstance(kind, str) else "",
                              "signature": signature[:MAX_MATCH_LENGTH] if isinstance(signature, str) else ""})
        if len(types) >= MAX_MATCHES:
            break
    return {"matches": matches, "cursor_start": start, "cursor_end": end,
            "metadata": {"_jupyter_types_experimental": types}}


def inspection(answer: Any, allow_active: bool) -> dict[str, Any] | None:
    """The MIME bundle of an inspect answer (screened like any output), or None when there is none."""
    if not isinstance(answer, dict) or answer.get("found") is not True or not isinstance(answer.get("data"), dict):
        return None
    data = {k: v for k, v in answer["data"].items() if isinstance(k, str) and isinstance(v, (str, dict, list))}
    if not allow_active:
        data, _ = screen_bundle(data)
    return data or None


def expressions(answer: Any, names: list[str], allow_active: bool) -> dict[str, Any] | None:
    """user_expressions results for exactly `names`, each a well-formed result; None when unusable."""
    if not isinstance(answer, dict):
        return None
    results: dict[str, Any] = {}
    for name in names:
        item = answer.get(name)
        if isinstance(item, dict) and item.get("status") == "ok" and isinstance(item.get("data"), dict):
            data = item["data"] if allow_active else screen_bundle(item["data"])[0]
            results[name] = {"status": "ok", "data": data,
                             "metadata": item.get("metadata") if isinstance(item.get("metadata"), dict) else {}}
        elif isinstance(item, dict) and item.get("status") == "error":
            results[name] = {"status": "error", "ename": str(item.get("ename", "Error"))[:200],
                             "evalue": str(item.get("evalue", ""))[:MAX_MATCH_LENGTH],
                             "traceback": [str(line)[:MAX_MATCH_LENGTH] for line in item.get("traceback") or []
                                           if isinstance(item.get("traceback"), list)][:200]}
        else:
            return None
    return results
