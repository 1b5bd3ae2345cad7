"""Vega and Vega-Lite specs from a session, made inert (issue 23, finding 1).

A spec is a program the front end runs (vega-embed): it fetches `data.url` from the Jupyter
origin, builds image and link URLs from data in its expressions, attaches inputs to any element
of the page (`bind.element`), and its "View Source" action writes the spec's text, with
`sourceHeader`/`sourceFooter` from the embed options, into a page of the Jupyter origin. So:

- every `url`, `href` and `loader` key is removed from the spec (not from inline data: `values`
  and `datasets` are data, which vega never fetches), and `element` from signal bindings: no
  fetch, no link, no image from a URL, no input outside the chart;
- every string that could open an HTML tag (`<` before a letter, `/`, `!` or `?`) gets a space
  after that `<`, in keys and values alike: `< b` is text to HTML, the same comparison to vega's
  expressions, and field names stay consistent;
- embed options (`usermeta.embedOptions` in the spec, `embed_options` in the output's metadata)
  keep only `actions` (booleans), `theme`, `renderer`, `mode`, `scaleFactor`, `width`, `height`,
  `padding`, `logLevel`, `hover`, `downloadFileName`; any other `usermeta` goes.

Expressions stay: they run in vega's own expression language, and without the sinks above they
can draw only inside the chart. An Altair chart with inline data (`values`, `datasets` + `name`)
has none of these and passes unchanged, as the same object.
"""
from __future__ import annotations

import re
from typing import Any

#: the renderers' MIME types: vega (v3…v6) and vega-lite (v1…v6), JupyterLab's vega extension
VEGA_TYPE = re.compile(r"^application/vnd\.vega(?:lite)?\.v\d+(?:\.\d+)*\+json$", re.I)
_SINK_KEYS = {"url", "href", "loader"}
_DATA_KEYS = {"values", "datasets"}
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_EMBED_KEYS = {"theme", "renderer", "mode", "scaleFactor", "width", "height", "padding", "logLevel", "hover",
               "downloadFileName"}


class TooLarge(Exception):
    """The spec has more nodes than the screen's budget allows."""


class _Walk:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.changed = False

    def text(self, value: str) -> str:
        self.budget -= len(value) + 1
        if self.budget < 0:
            raise TooLarge
        if "<" in value and _TAG_START.search(value):
            self.changed = True
            return _TAG_START.sub("< ", value)
        return value

    def node(self, value: Any, data: bool = False, key: str = "") -> Any:
        """The value without sinks (outside data) and without tag starts."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            self.budget -= len(value)
            return [self.node(item, data) for item in value]
        if not isinstance(value, dict):
            self.budget -= 1
            return value
        result = {}
        for name, item in value.items():
            name = self.text(str(name))
            if not data and (name in _SINK_KEYS or (key == "bind" and name == "element")):
                self.changed = True
                continue
            if not data and name == "usermeta":
                kept = embed_options(item.get("embedOptions")) if isinstance(item, dict) else None
                if kept != item:
                    self.changed = True
                if kept is not None:
                    result[name] = {"embedOptions": kept} if kept != item else item
                continue
            result[name] = self.node(item, data or name in _DATA_KEYS, name)
        return result


def embed_options(options: Any) -> dict[str, Any] | None:
    """The embed options that cannot inject HTML, fetch or reach the page; None when none are left."""
    if not isinstance(options, dict):
        return None
    kept: dict[str, Any] = {k: v for k, v in options.items() if k in _EMBED_KEYS and isinstance(v, (str, int, float, bool))
            and not (isinstance(v, str) and "<" in v)}
    actions = options.get("actions")
    if isinstance(actions, bool) or (isinstance(actions, dict) and all(isinstance(v, bool) for v in actions.values())
                                     and set(actions) <= {"export", "source", "compiled", "editor"}):
        kept["actions"] = actions
    return kept or None


def screen_spec(spec: Any, budget: int) -> tuple[Any, bool, int]:
    """(the spec made inert, whether something was removed or changed, the budget used: characters and nodes).

    TooLarge past `budget`.
    """
    walk = _Walk(budget)
    cleaned = walk.node(spec)
    return (cleaned if walk.changed else spec), walk.changed, budget - walk.budget


def screen_metadata(metadata: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Output metadata without unsafe embed options, at the top and under a vega MIME type."""
    changed = False
    result = dict(metadata)
    for key, value in metadata.items():
        if key == "embed_options" or (VEGA_TYPE.match(key) and isinstance(value, dict) and "embed_options" in value):
            inner = value if key == "embed_options" else value["embed_options"]
            kept = embed_options(inner)
            if kept == inner:
                continue
            changed = True
            if key == "embed_options":
                result.pop(key)
                if kept is not None:
                    result[key] = kept
            else:
                result[key] = {**{k: v for k, v in value.items() if k != "embed_options"},
                               **({"embed_options": kept} if kept is not None else {})}
    return result, changed
