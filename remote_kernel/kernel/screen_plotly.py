"""Plotly figures from a session, without fetches from the Jupyter origin (issue 23, finding 1).

plotly.js runs no code from a figure (its text's HTML subset and links are sanitised by plotly
itself), but it fetches what some keys name: a trace's `geojson` given as a URL, a map layer's
`source` (GeoJSON or tiles), a map `style` given as a URL or a style object with its own sources,
and `config.topojsonURL`. A relative URL there resolves against the Jupyter server's origin, so
those keys keep only absolute http(s) URLs (a public GeoJSON file, a tile server), pictures'
`data:image/…` URLs (`px.imshow`) and named map styles; inline GeoJSON objects stay. A figure without them (nearly all) passes as the same object.
"""
from __future__ import annotations

import re
from typing import Any

PLOTLY_TYPE = re.compile(r"^application/vnd\.plotly\.v\d+\+json$", re.I)
_ABSOLUTE = re.compile(r"^https?://[^\s/?#]+", re.I)
_DATA_IMAGE = re.compile(r"^\s*data:image/(?:png|jpeg|gif|webp|bmp)[;,]", re.I)
_STYLE_NAME = re.compile(r"^[a-z][a-z0-9-]*$", re.I)


def _url_kept(value: Any) -> bool:
    """An absolute http(s) URL, a picture's data URL, or not a URL at all (inline GeoJSON, a sankey's indices)."""
    if isinstance(value, str):
        return bool(_ABSOLUTE.match(value.strip()) or _DATA_IMAGE.match(value))
    if isinstance(value, list):
        return all(_url_kept(item) for item in value if isinstance(item, str))
    return True


def _screen(node: Any, key: str, budget: list[int]) -> tuple[Any, bool]:
    budget[0] -= 1
    if budget[0] < 0:
        raise OverflowError("a plotly figure past the screen's budget")
    if isinstance(node, list):
        items = [_screen(item, key, budget) for item in node]
        return ([item for item, _ in items], True) if any(c for _, c in items) else (node, False)
    if not isinstance(node, dict):
        return node, False
    result: dict[str, Any] = {}
    changed = False
    for name, value in node.items():
        if (name in ("geojson", "source") and not _url_kept(value)) or name == "topojsonURL" or \
                (name == "style" and key in ("mapbox", "map") and not (
                    isinstance(value, str) and (_STYLE_NAME.match(value) or _ABSOLUTE.match(value)))):
            changed = True
            continue
        result[name], inner = _screen(value, name, budget)
        changed = changed or inner
    return (result if changed else node), changed


def screen_figure(figure: Any, budget: int) -> tuple[Any, bool, int]:
    """(the figure without fetches from relative or non-http URLs, whether something was removed, nodes seen).

    OverflowError past `budget` nodes.
    """
    left = [budget]
    cleaned, changed = _screen(figure, "", left)
    return cleaned, changed, budget - left[0]
