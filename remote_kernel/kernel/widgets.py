"""Widgets without a comm channel: shown as their text form, with one note, instead of a broken view.

ipywidgets in a session builds its models against a dummy comm (a remote session has no channel back to
the front end), so a widget's view bundle points at a model the front end never gets: JupyterLab shows
"Error displaying widget: model not found". The kernel drops the view MIME type from such outputs, which
leaves the widget's `text/plain` (its repr, what a console shows), and says why once per session.
"""
from __future__ import annotations

from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
NOTE = ("Note: widgets (ipywidgets) need a comm channel to the kernel, which a remote session does not have: "
        "they are shown as text. Plots, tables and other displays work as usual; tqdm.auto falls back to its "
        "text bar.\n")
_DISPLAYS = ("display_data", "execute_result", "update_display_data")


class WidgetFallback:
    """Turns widget views into their text form; the first one of a session comes with `NOTE`."""

    def __init__(self) -> None:
        self.noted = False

    def forget(self) -> None:
        """A new session: its first widget gets the note again."""
        self.noted = False

    def degrade(self, msg_type: str, content: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The messages to send for one IOPub message (itself, unless it shows a widget)."""
        data = content.get("data")
        if msg_type not in _DISPLAYS or not isinstance(data, dict) or WIDGET_VIEW not in data:
            return [(msg_type, content)]
        text = {mime: value for mime, value in data.items() if mime != WIDGET_VIEW}
        messages: list[tuple[str, dict[str, Any]]] = []
        if not self.noted:
            self.noted = True
            messages.append(("stream", {"name": "stderr", "text": NOTE}))
        messages.append((msg_type, {**content, "data": text or {"text/plain": "(a widget)"}}))
        return messages
