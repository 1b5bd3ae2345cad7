"""What a session produces, made safe to hand to a front end (issues 20, 23 and 25).

JupyterLab and VS Code treat the outputs of a live execution as trusted: a `<script>`, an
`onerror=` handler or an `application/javascript` bundle would run on the Jupyter server's
origin, outside the sandbox that holds the session's code. So every IOPub output passes
`OutputGuard.screen` (the kernel's `publish` calls it) and, unless the user allowed active
content, keeps only what cannot run code, fetch from the Jupyter origin or leave its output area:

- `text/html` that is inert passes byte for byte; otherwise nh3 (the Rust sanitizer `ammonia`)
  removes scripts, handlers, script links, frames and forms, and CSS is kept only inside the
  output (`screen_html`, `screen_css`);
- `text/markdown` stays as written unless it carries raw HTML or links other than http(s),
  mailto and paths (read conservatively: `screen_markdown`); then it is rendered here
  (markdown-it) and sent as screened `text/html` — or, past the cell's rendering allowance,
  kept as Markdown with the HTML and links escaped;
- `image/svg+xml` loses script elements, `foreignObject`, event handlers and script links
  (parsed by defusedxml: no entity expansion); an SVG with nothing to remove is kept as sent;
- images: only PNG, JPEG, GIF, WebP, BMP and sanitized SVG;
- vega and vega-lite specs lose URLs, links, page bindings, HTML and unsafe embed options
  (`screen_vega`), plotly figures the relative URLs it would fetch (`screen_plotly`); other JSON
  types pass only when their renderer fetches and runs nothing (INERT_JSON_TYPES: JSON, GeoJSON,
  data resources, widget views);
- `text/plain`, `text/latex` and other non-script text types stay; everything else
  (`application/javascript`, `text/javascript`, `application/pdf`, unknown types) is dropped.

Every step is linear in its input, and one cell's outputs are screened up to CELL_SCREEN_BUDGET
characters (the screen runs on the kernel's event loop); an output the screen cannot read keeps
only its text/plain. The first output of a session that loses something says so once, with how
to allow it (`%session active on`, or REMOTE_KERNEL_ACTIVE_CONTENT=1).
"""
from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from remote_kernel.kernel import screen_css, screen_html, screen_markdown, screen_plotly, screen_vega

#: IOPub messages whose `data` is a MIME bundle from the session
BUNDLE_MESSAGES = ("display_data", "update_display_data", "execute_result")
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
#: words in a MIME type that mean "code to run"
_SCRIPT_WORDS = re.compile(r"javascript|ecmascript|jscript|vbscript|script|exec|_load|\.load|wasm", re.I)
#: JSON types whose renderers fetch nothing and run nothing (vega, vega-lite, plotly: screened on their own)
INERT_JSON_TYPES = frozenset({"application/json", "application/geo+json",
                              "application/vnd.dataresource+json", "application/vnd.jupyter.widget-view+json",
                              "application/vnd.jupyter.widget-state+json"})
#: VS Code's background executions (vscode.py): JSON or text the extension parses, never run
_VSCODE_BACKGROUND = re.compile(r"^application/vnd\.vscode\.bg\.execution\.\d+(?:\.result|\.error)?$", re.I)
#: characters of HTML, Markdown, SVG and vega specs screened in one cell: the screen runs on the
#: kernel's event loop, so this bounds how long it holds interrupts and kernel_info (about 2 s on
#: a loaded machine); past it an output keeps only its text/plain
CELL_SCREEN_BUDGET = 8 << 20
#: characters of CSS parsed in one cell (tinycss2: a Styler's 512 KiB in about 1 s, hostile nested blocks up to
#: about 4 s on a loaded machine); past it further style blocks and attributes are dropped
CSS_BUDGET = 512 << 10


class OverBudget(Exception):
    """The cell's screening budget is spent: rich parts of further outputs are dropped."""


def clean_html(text: str) -> str:
    """HTML without anything that can run or leave its output (kept as written when inert)."""
    return screen_html.screen(text)[0]


def clean_markdown(text: str) -> tuple[str, str]:
    """(MIME type, text): Markdown as written when it holds no HTML or unsafe links, else cleaned HTML."""
    kept, _ = screen_bundle({"text/markdown": text})
    return ("text/markdown", kept["text/markdown"]) if "text/markdown" in kept else ("text/html", kept["text/html"])


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

class Budget:
    """Characters left to screen in this cell."""

    def __init__(self, left: int = CELL_SCREEN_BUDGET) -> None:
        self.left = left
        self.exceeded = False
        self.dropped = 0  # MIME entries dropped for want of budget
        self.css = screen_css.Allowance(CSS_BUDGET)  # CSS parses slower: a budget of its own
        self.markdown = screen_css.Allowance(screen_markdown.CELL_RENDER_LIMIT)  # Markdown rendered here

    def spend(self, size: int) -> None:
        if size > self.left:
            self.exceeded = True
            raise OverBudget
        self.left -= size


def screen_bundle(data: dict[str, Any], budget: Budget | None = None) -> tuple[dict[str, Any], list[str]]:
    """The bundle without active content, and the MIME types that lost something (or all of it)."""
    budget = budget or Budget()
    kept: dict[str, Any] = {}
    lost: list[str] = []
    for mime, value in data.items():
        kind = str(mime).lower()
        try:
            if kind in ("text/html", "text/markdown", "image/svg+xml") and isinstance(value, str):
                budget.spend(len(value))
            if kind == "text/html" and isinstance(value, str):
                kept[mime], changed = screen_html.screen(value, budget.css)
                if changed:
                    lost.append(mime)
            elif kind == "text/markdown" and isinstance(value, str):
                if screen_markdown.plain(value):
                    kept[mime] = value
                elif len(value) <= screen_markdown.RENDER_LIMIT and budget.markdown.take(len(value)):
                    kept.setdefault("text/html", screen_html.screen(screen_markdown.render(value), budget.css)[0])
                    lost.append(mime)
                else:
                    kept[mime] = screen_markdown.escape(value)
                    lost.append(mime)
            elif kind == "image/svg+xml" and isinstance(value, str):
                svg = clean_svg(value)
                if svg is not None:
                    kept[mime] = svg
                if svg != value:
                    lost.append(mime)
            elif kind in IMAGE_TYPES and isinstance(value, str) or _VSCODE_BACKGROUND.match(kind):
                kept[mime] = value
            elif screen_vega.VEGA_TYPE.match(kind):
                try:
                    kept[mime], changed, used = screen_vega.screen_spec(value, budget.left)
                    budget.spend(used)
                except screen_vega.TooLarge:
                    raise OverBudget from None
                if changed:
                    lost.append(mime)
            elif screen_plotly.PLOTLY_TYPE.match(kind):
                try:
                    kept[mime], changed, used = screen_plotly.screen_figure(value, budget.left)
                    budget.spend(used)
                except OverflowError:
                    raise OverBudget from None
                if changed:
                    lost.append(mime)
            elif _SCRIPT_WORDS.search(kind) or kind.startswith("image/"):
                lost.append(mime)
            elif kind in INERT_JSON_TYPES or (kind.startswith("text/") and isinstance(value, str)):
                kept[mime] = value
            else:
                lost.append(mime)
        except OverBudget:
            kept.pop(mime, None)
            budget.exceeded = True
            budget.dropped += 1
    return kept, lost


class OutputGuard:
    """Screens every output of one kernel; says once per session when something was removed."""

    def __init__(self, allow_active: bool = False) -> None:
        self.allow_active = allow_active
        self._told = False
        self.budget = Budget()

    def new_session(self) -> None:
        """The session changed: the next removal is announced again."""
        self._told = False

    def new_cell(self) -> None:
        """A cell starts: its outputs get a fresh screening budget."""
        self.budget = Budget()

    def screen(self, msg_type: str, content: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """(content to send or None to send nothing, a notice to show first or None)."""
        if self.allow_active or msg_type not in BUNDLE_MESSAGES or not isinstance(content.get("data"), dict):
            return content, None
        over, dropped = self.budget.exceeded, self.budget.dropped
        try:
            data, lost = screen_bundle(content["data"], self.budget)
            metadata = content.get("metadata")
            if isinstance(metadata, dict) and metadata:
                metadata, changed = screen_vega.screen_metadata(metadata)
                if changed:
                    lost.append("metadata")
                    content = {**content, "metadata": metadata}
        except Exception as exc:  # fail closed: an output the screen cannot read keeps only its plain text
            plain = content["data"].get("text/plain")
            data = {"text/plain": plain} if isinstance(plain, str) else {}
            lost = [f"an output the screen could not read ({type(exc).__name__})"]
        notice = None
        if self.budget.exceeded and not over:
            notice = (f"[remote_kernel: this cell's outputs passed the screen's budget of "
                      f"{CELL_SCREEN_BUDGET >> 20} MiB of HTML, Markdown, SVG and charts; further rich outputs "
                      "show as plain text]\n")
        if not lost and self.budget.dropped == dropped:
            return content, notice
        if lost and not self._told:
            self._told = True
            notice = (notice or "") + notice_for(lost)
        if not data:
            return None, notice
        return {**content, "data": data}, notice


def notice_for(lost: list[str]) -> str:
    kinds = ", ".join(dict.fromkeys(lost))
    return (f"[remote_kernel: active content was removed from an output of the session ({kinds}): scripts, event "
            "handlers, script links, CSS that reaches beyond the output and URLs a chart would fetch do not reach "
            "the notebook by default. To allow them for this kernel run "
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
