"""The differential notebook test (issue 14): notebooks written for ipykernel, run with nbclient on
ipykernel ("python3") and on remote-python, compared cell by cell.

The notebooks in tests/notebooks/ are this project's own (streams and values, errors, the display
machinery, magics and the shell, numpy/pandas/matplotlib; files beside the notebook, wide frames, figure
formats and backends, interleaved streams, help and magics between cells). A notebook's `<name>.files/`
folder is copied beside it for both kernels, and remote-python then runs with REMOTE_KERNEL_FILES=notebook. Each cell's outputs are compared by
structure (output type, stream name, MIME-type set, error name) and, unless the cell is tagged
`nondeterministic`, by their text after normalising what differs between any two runs (addresses,
ANSI colours, the name of a cell's file). Image data is compared by MIME type only.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from kernel_support import IpcKernelManager, embedded_env, install_kernelspec, pool_env
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent / "notebooks"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ADDRESS = re.compile(r"0x[0-9a-f]{6,16}")
# a cell's file name, /tmp/ipykernel_<pid>/<hash>.py in both (seen in a warning's location and a SyntaxError's
# message; tracebacks say "Cell In[N]"): the process and the hash differ
CELL_FILE = re.compile(r"/tmp/ipykernel_\d+/\d+\.py|\b\d{6,}\.py\b")
IMAGES = ("image/png", "image/jpeg", "image/svg+xml")


def run_notebook(path: Path, kernel_name: str, env: dict[str, str], folder: Path) -> nbformat.NotebookNode:
    """`path` executed on `kernel_name` (started with `env`) in `folder`, errors kept as outputs (as a
    user's run shows them)."""
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, kernel_name=kernel_name, timeout=120, startup_timeout=60, allow_errors=True,
                   kernel_manager_class=IpcKernelManager,
                   resources={"metadata": {"path": str(folder)}}).execute(env=env)
    return book


def run_on_both(path: Path, envs: dict[str, dict[str, str]], folder: Path) -> dict[str, nbformat.NotebookNode]:
    """{kernel name: executed notebook}, the kernels run at the same time, each in its own fresh folder (with a
    copy of the files beside the notebook, `<name>.files/`, when it has some)."""
    beside = path.with_suffix(".files")
    with ThreadPoolExecutor(len(envs)) as threads:
        running = {}
        for name, env in envs.items():
            if beside.is_dir():
                shutil.copytree(beside, folder / name)
            (folder / name).mkdir(exist_ok=True)
            running[name] = threads.submit(run_notebook, path, name, env, folder / name)
        return {name: future.result() for name, future in running.items()}


def merged(outputs: list) -> list[dict]:
    """Outputs with neighbouring text of one stream joined (how a stream is split into messages is not what a user sees)."""
    found: list[dict] = []
    for output in outputs:
        if output["output_type"] == "stream" and found and found[-1]["output_type"] == "stream" \
                and found[-1]["name"] == output["name"]:
            found[-1] = {**found[-1], "text": found[-1]["text"] + output["text"]}
        else:
            found.append(dict(output))
    return found


def normalised(text: str) -> str:
    return CELL_FILE.sub("<cell>", ADDRESS.sub("0x…", ANSI.sub("", text)))


def structure(output: dict) -> tuple:
    kind = output["output_type"]
    if kind == "stream":
        return kind, output["name"]
    if kind == "error":
        return kind, output["ename"]
    return kind, tuple(sorted(output.get("data", {})))


def shown_text(output: dict) -> object:
    """What a user reads of an output, normalised; for an error, its name and message (tracebacks
    name each kernel's own files)."""
    kind = output["output_type"]
    if kind == "stream":
        return normalised(output["text"])
    if kind == "error":
        return output["ename"], normalised(output["evalue"])
    data = output.get("data", {})
    if any(mime in data for mime in IMAGES):
        return sorted(data)  # a figure's bytes and its "<Figure size …>" label differ by renderer
    return {mime: normalised(value if isinstance(value, str) else repr(value)) for mime, value in data.items()}


def differences(local: nbformat.NotebookNode, remote: nbformat.NotebookNode) -> list[str]:
    found = []
    for index, (mine, theirs) in enumerate(zip(local.cells, remote.cells, strict=True)):
        if mine.cell_type != "code":
            continue
        here, there = merged(mine.outputs), merged(theirs.outputs)
        where = f"cell {index} {mine.source.splitlines()[0]!r}"
        if [structure(o) for o in here] != [structure(o) for o in there]:
            found.append(f"{where}: structure {[structure(o) for o in here]} != {[structure(o) for o in there]}")
        elif "nondeterministic" not in mine.metadata.get("tags", []):
            for a, b in zip(here, there, strict=True):
                if shown_text(a) != shown_text(b):
                    found.append(f"{where}: {shown_text(a)!r} != {shown_text(b)!r}")
    return found


@pytest.fixture(scope="module")
def kernel_envs(pool):
    install_kernelspec()
    local = {**embedded_env(), "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
             "SHELL": "/bin/bash"}  # a user's terminal (ipykernel's `!` commands run under it)
    return local, pool


@pytest.mark.parametrize("name", sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")))
def test_a_notebook_shows_on_remote_python_what_it_shows_on_ipykernel(kernel_envs, tmp_path, name):
    local_env, pool = kernel_envs
    path = NOTEBOOKS / f"{name}.ipynb"
    assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3"  # written for ipykernel
    # a notebook with files beside it runs with REMOTE_KERNEL_FILES=notebook (the session sees that folder)
    extra = {"REMOTE_KERNEL_FILES": "notebook"} if path.with_suffix(".files").is_dir() else {}
    ran = run_on_both(path, {"python3": local_env, "remote-python": pool_env(pool, str(uuid.uuid4()), **extra)},
                      tmp_path)
    local, remote = ran["python3"], ran["remote-python"]
    assert sum(len(cell.get("outputs", [])) for cell in local.cells) > 5  # the notebook did run
    found = differences(local, remote)
    assert not found, "\n".join(found)
