"""Text from a session made safe to write to the user's terminal (`remote-kernel run`).

Session output is written by code nobody reviewed. A terminal obeys control sequences in what it
prints: OSC 52 sets the clipboard, OSC 0/2 the window title, CSI J/K/H erase and move, DCS, APC,
PM and SOS strings talk to the terminal itself, 8-bit C1 codes do the same in one byte, and BEL,
backspace and carriage return hide or rewrite what was shown. `terminal_text` keeps plain text,
newlines and tabs; carriage returns and backspaces are applied as Jupyter's output area applies
them (text before a lone '\\r' on its line is dropped, '\\b' deletes the character before it), and
every other control character and sequence is removed. Colours (SGR, `ESC [ digits ; ... m`) are
kept when asked for (a terminal: tracebacks arrive coloured), followed by a reset.

Written here rather than taken from a library: the ANSI-stripping packages remove every sequence
or none, and this policy keeps SGR alone; it is three regular expressions.
"""
from __future__ import annotations

import re

# CSI (7-bit or 8-bit): parameters, intermediates, final; OSC, DCS, SOS, PM, APC strings up to BEL or
# ST (or the end of the text); any other escape (ESC c, ESC 7, ESC ( B) and a bare ESC
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)(?P<params>[0-?]*)(?P<inter>[ -/]*)(?P<final>[@-~]?)"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_SGR_PARAMS = re.compile(r"[0-9;:]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every C0 but \t and \n, DEL, every C1
_OVERWRITTEN = re.compile(r"^[^\n]*\r(?!\n)", re.MULTILINE)  # a line's text before a lone \r
RESET = "\x1b[0m"


def _backspaced(text: str) -> str:
    """Each backspace deletes the character before it on its line (and itself)."""
    if "\b" not in text:
        return text
    kept: list[str] = []
    for char in text:
        if char != "\b":
            kept.append(char)
        elif kept and kept[-1] != "\n":
            kept.pop()
    return "".join(kept)


def terminal_text(text: str, colours: bool = False) -> str:
    """`text` with nothing a terminal would obey but newlines, tabs and (when `colours`) SGR colours."""
    text = text.replace("\r\n", "\n")
    text = _OVERWRITTEN.sub("", text)
    text = _backspaced(text)
    parts: list[str] = []
    kept, at = False, 0
    for match in _SEQUENCE.finditer(text):
        parts.append(_CONTROL.sub("", text[at:match.start()]))
        at = match.end()
        if (colours and match.group("final") == "m" and not match.group("inter")
                and _SGR_PARAMS.fullmatch(match.group("params") or "") is not None):
            parts.append("\x1b[" + match.group("params") + "m")
            kept = True
    parts.append(_CONTROL.sub("", text[at:]))
    return "".join(parts) + (RESET if kept else "")
