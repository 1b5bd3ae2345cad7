"""`remote-kernel run NOTEBOOK`: execute a notebook on a remote kernel and show what its cells showed.

nbclient runs the notebook exactly as JupyterLab's "Run All" or `jupyter execute` would (the kernel
starts in the notebook's folder, a cell tagged `raises-exception` may fail); this module only adds
what a person at a terminal wants to see: each code cell with its outputs as text, and the executed
notebook written to a file it names. What reaches the terminal passes `terminal_text`: session output
cannot set the clipboard or the window title, move the cursor or erase the screen.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from remote_kernel.terminal import terminal_text

SHOWN_LINES = 3  # lines of a cell's source shown before its outputs


def describe_output(output: dict[str, Any], colours: bool = False) -> str:
    """One output as terminal text (control sequences removed; SGR colours kept when `colours`): streams
    and plain text as they are, an image by its type and size."""
    return terminal_text(_described(output), colours)


def _described(output: dict[str, Any]) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return str(output.get("text", ""))
    if kind == "error":
        return "\n".join(output.get("traceback") or [f"{output.get('ename')}: {output.get('evalue')}"]) + "\n"
    data = output.get("data") or {}
    images = [mime for mime in data if mime.startswith("image/")]
    if images:
        size = f"{len(data[images[0]]) * 3 // 4 // 1024} KB" if images[0] != "image/svg+xml" else "vector"
        return f"[{images[0]}, {size}: open the executed notebook to see it]\n"
    if "text/plain" in data:
        text = data["text/plain"]
        return ("".join(text) if isinstance(text, list) else str(text)).rstrip("\n") + "\n"
    return f"[{', '.join(data) or 'empty output'}]\n"


def show_cell(cell: Any, out: TextIO, colours: bool = False) -> None:
    source = terminal_text(str(cell.source)).strip().splitlines() or [""]
    count = cell.get("execution_count")
    prompt = f"In [{count if count is not None else ' '}]: "
    out.write(prompt + source[0] + "\n")
    for line in source[1:SHOWN_LINES]:
        out.write(" " * len(prompt) + line + "\n")
    if len(source) > SHOWN_LINES:
        more = len(source) - SHOWN_LINES
        out.write(" " * len(prompt) + f"… ({more} more line{'s' if more > 1 else ''})\n")
    for output in cell.get("outputs", []):
        out.write(describe_output(output, colours))
    out.write("\n")


def run(path: Path, *, output: Path | None, kernel_name: str, timeout: float, out: TextIO = sys.stdout) -> int:
    """Execute `path`, print its code cells and outputs, write the executed notebook; the exit status."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    read: Callable[..., Any] = nbformat.read  # nbformat has no type hints
    write: Callable[..., None] = nbformat.write
    notebook = read(path, as_version=4)
    output = output or path.with_name(f"{path.stem}.executed.ipynb")
    client = NotebookClient(notebook, kernel_name=kernel_name, timeout=timeout,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    status = 0
    try:
        client.execute()
    except CellExecutionError as error:
        status = 1
        failure = str(error)
    else:
        failure = ""
    colours = bool(getattr(out, "isatty", lambda: False)())
    for cell in notebook.cells:
        if cell.cell_type == "code" and (cell.get("execution_count") is not None or cell.get("outputs")):
            show_cell(cell, out, colours)
    write(notebook, output)
    if status:
        last = (terminal_text(failure).strip().splitlines() or [""])[-1]
        out.write(f"A cell failed (see above): {last}\n")
    out.write(f"The executed notebook, with every output, is in {output}\n")
    return status
