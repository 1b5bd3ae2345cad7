"""Rich output through the contract: the session shim, the markers, the fetched bundles, the messages.

Kernels run through jupyter_client against the real local pool (what each cell costs in requests:
test_request_counts.py).
"""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import uuid

import httpx
import pytest
from kernel_support import (
    API,
    errors_of,
    kernel,
    pool_delete_session,
    pool_env,
    pool_get,
    result_of,
    run,
    text_of,
    wait_for,
)

from remote_kernel.kernel import rich
from remote_kernel.kernel.render import rendered
from remote_kernel.sessions.models import Execution, ExecutionError, ExecutionStatus

TWO_FIGURES = """\
import matplotlib.pyplot as plt
print("first")
plt.figure(); plt.plot([1, 3, 2]); plt.show()
print("second")
plt.figure(); plt.plot([2, 1, 3]); plt.show()
"""


def shapes(outputs: list[dict]) -> list[str]:
    """Each output as a word: its stream name, or its message type with the richest MIME type (stream
    messages in a row of one stream are one word, as front ends show them: live output comes in pieces)."""
    found: list[str] = []
    for m in outputs:
        content = m["content"]
        if m["msg_type"] == "stream":
            if not found or found[-1] != content["name"]:
                found.append(content["name"])
        elif "data" in content:
            mimes = [k for k in content["data"] if k != "text/plain"] or ["text/plain"]
            found.append(f"{m['msg_type']}:{mimes[0]}")
        else:
            found.append(m["msg_type"])
    return found


def datas(outputs: list[dict], mime: str) -> list:
    return [m["content"]["data"][mime] for m in outputs if mime in m["content"].get("data", {})]


def no_markers(outputs: list[dict]) -> bool:
    return all("\x1e" not in m["content"]["text"] for m in outputs if m["msg_type"] == "stream")


def hidden_files(pool, identifier: str) -> list[str]:
    response = httpx.get(f"{pool.endpoint}/files", headers=pool.headers, timeout=30,
                         params={"api-version": API, "identifier": identifier, "path": rich.FOLDER})
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return [entry["name"] for entry in response.json()["value"]]


# --- through jupyter_client -------------------------------------------------------------------

def test_dataframe_cell_yields_an_execute_result_with_an_html_table(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        reply, outputs = run(kc, "import pandas as pd\npd.DataFrame({'city': ['Oslo', 'Lima'], 'rain': [763, 6]})")
        assert reply["status"] == "ok"
        assert shapes(outputs) == ["execute_result:text/html"]
        result = outputs[0]["content"]
        assert result["execution_count"] == reply["execution_count"]
        html = result["data"]["text/html"]
        assert "<table" in html and "<td>Oslo</td>" in html and "<td>763</td>" in html
        assert result["data"]["text/plain"].split()[:2] == ["city", "rain"]


def test_two_figures_with_prints_between_come_as_stream_image_stream_image(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        reply, outputs = run(kc, TWO_FIGURES)
        assert reply["status"] == "ok"
        assert shapes(outputs) == ["stdout", "display_data:image/png", "stdout", "display_data:image/png"]
        assert text_of(outputs) == "first\nsecond\n"
        first, second = datas(outputs, "image/png")
        assert base64.b64decode(first).startswith(b"\x89PNG") and first != second


def test_figures_left_open_all_come_home_at_the_end_of_the_cell(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        _, outputs = run(kc, "import matplotlib.pyplot as plt\nfor n in range(3):\n    plt.figure(); plt.plot([n, 1])\n"
                             "print('drawn')")
        assert shapes(outputs) == ["stdout"] + ["display_data:image/png"] * 3


def test_display_markdown_svg_and_html_in_order_among_prints(pool):
    code = """\
from IPython.display import display, Markdown, SVG, HTML
print("one")
display(Markdown("**bold** text"))
print("two")
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><circle cx="10" cy="10" r="8"/></svg>'))
display(HTML("<b>html</b>"))
print("three")
"""
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        reply, outputs = run(kc, code)
        assert reply["status"] == "ok"
        assert shapes(outputs) == ["stdout", "display_data:text/markdown", "stdout", "display_data:image/svg+xml",
                                   "display_data:text/html", "stdout"]
        assert datas(outputs, "text/markdown") == ["**bold** text"]
        assert "<circle" in datas(outputs, "image/svg+xml")[0]
        assert no_markers(outputs) and text_of(outputs) == "one\ntwo\nthree\n"


def test_json_latex_and_a_result_after_displays_keep_their_mime_types(pool):
    code = """\
from IPython.display import display, JSON, Latex, Math
display(JSON({"a": [1, 2]}))
display(Latex(r"$\\alpha^2$"))
Math(r"\\beta")
"""
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        _, outputs = run(kc, code)
        assert shapes(outputs) == ["display_data:application/json", "display_data:text/latex",
                                   "execute_result:text/latex"]
        assert datas(outputs, "application/json") == [{"a": [1, 2]}]


def test_clear_output_in_a_loop_becomes_clear_output_messages_in_order(pool):
    code = """\
from IPython.display import clear_output, display, Markdown
for step in range(3):
    clear_output(wait=True)
    print(f"step {step}")
    display(Markdown(f"*{step}*"))
"""
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        _, outputs = run(kc, code)
        assert shapes(outputs) == ["clear_output", "stdout", "display_data:text/markdown"] * 3
        assert all(m["content"]["wait"] for m in outputs if m["msg_type"] == "clear_output")
        assert datas(outputs, "text/markdown") == ["*0*", "*1*", "*2*"]


def test_display_handles_update_in_place(pool):
    code = """\
from IPython.display import display
handle = display("starting", display_id=True)
handle.update("done")
"""
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        _, outputs = run(kc, code)
        assert [m["msg_type"] for m in outputs] == ["display_data", "update_display_data"]
        ids = {m["content"]["transient"]["display_id"] for m in outputs}
        assert len(ids) == 1 and datas(outputs, "text/plain") == ["'starting'", "'done'"]


def test_a_cell_run_by_a_cell_keeps_its_displays_in_the_outer_cell(pool):
    code = ("from IPython.display import display, Markdown\ndisplay(Markdown('outer 1'))\n"
            "get_ipython().run_cell(\"display(Markdown('inner'))\")\ndisplay(Markdown('outer 2'))")
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        _, outputs = run(kc, code)
        assert datas(outputs, "text/markdown") == ["outer 1", "inner", "outer 2"]


def test_failed_cell_shows_its_displays_then_the_error(pool):
    code = "from IPython.display import display, Markdown\nprint('before')\ndisplay(Markdown('shown'))\n1 / 0"
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        reply, outputs = run(kc, code)
        assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"
        assert shapes(outputs) == ["stdout", "display_data:text/markdown", "error"]
        reply, outputs = run(kc, "print('still rich'); display(Markdown('again'))")
        assert shapes(outputs) == ["stdout", "display_data:text/markdown"]


def test_a_10_mb_image_arrives_intact(pool):
    code = """\
import hashlib, zlib, struct
from IPython.display import Image, display
import numpy as np
pixels = np.random.default_rng(7).integers(0, 256, size=(1900, 1800, 3), dtype=np.uint8)
raw = b"".join(b"\\x00" + row.tobytes() for row in pixels)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1800, 1900, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))
display(Image(data=png, format="png"))
print(len(png), hashlib.sha256(png).hexdigest())
"""
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        reply, outputs = run(kc, code, timeout=180)
        assert reply["status"] == "ok", reply
        size, digest = text_of(outputs, "stdout").split()
        assert int(size) > 10_000_000
        image, = datas(outputs, "image/png")
        assert hashlib.sha256(base64.b64decode(image)).hexdigest() == digest


def test_markers_never_reach_the_notebook_and_plain_cells_look_as_before(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        reply, outputs = run(kc, "print('hello'); 6 * 7")
        assert shapes(outputs) == ["stdout", "execute_result:text/plain"] and result_of(outputs) == "42"
        _, outputs = run(kc, "import sys; print('to stderr', file=sys.stderr); 'ab'")
        assert shapes(outputs) == ["stderr", "execute_result:text/plain"] and result_of(outputs) == "'ab'"
        _, outputs = run(kc, "print('a\\x1eb \\x1erk0000:1:2\\x1e')")
        assert text_of(outputs) == "a\x1eb \x1erk0000:1:2\x1e\n"  # not a marker: user text kept as is


def test_plain_mapping_with_rich_output_disabled(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()), REMOTE_KERNEL_RICH="0")) as (km, kc):
        _, outputs = run(kc, "import pandas as pd\npd.DataFrame({'x': [1, 2]})")
        assert shapes(outputs) == ["execute_result:text/plain"]
        assert result_of(outputs).split() == ["x", "0", "1", "1", "2"]
        _, outputs = run(kc, TWO_FIGURES)
        assert shapes(outputs) == ["stdout", "display_data:image/png"]  # the contract's one image
        _, outputs = run(kc, "from IPython.display import display, Markdown\ndisplay(Markdown('m'))")
        assert no_markers(outputs)
        _, outputs = run(kc, "%session")
        assert "REMOTE_KERNEL_RICH=0" in text_of(outputs)


def test_files_magic_does_not_show_the_hidden_folder_and_fetched_bundles_are_deleted(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        run(kc, "open('/mnt/data/mine.txt', 'w').write('x')\nfrom IPython.display import Markdown\n"
                "display(Markdown('m' * 300_000))")  # over the inline limit: it goes through the cell's file
        wait_for(lambda: hidden_files(pool, identifier) == [], timeout=30, what="the fetched bundles to be deleted")
        listing = pool_get(pool, "files", identifier).json()["value"]
        assert rich.FOLDER in {entry["name"] for entry in listing}  # the folder is there, but hidden
        _, outputs = run(kc, "%files")
        table = datas(outputs, "text/plain")[0]
        assert "mine.txt" in table and rich.FOLDER not in table


def test_shim_is_sent_again_after_the_session_is_lost(pool):
    identifier = str(uuid.uuid4())
    markdown = "from IPython.display import display, Markdown\ndisplay(Markdown('*m*'))"
    with kernel(pool_env(pool, identifier)) as (km, kc):
        _, outputs = run(kc, markdown)
        assert shapes(outputs) == ["display_data:text/markdown"]
        assert pool_delete_session(pool, identifier).status_code in (200, 204)
        _, outputs = run(kc, markdown)  # runs in a new session, before the kernel knows: plain, but shown
        assert "remote session was lost" in text_of(outputs, "stderr") and no_markers(outputs)
        _, outputs = run(kc, markdown)
        assert shapes(outputs) == ["display_data:text/markdown"]
        # a worker killed under a cell: the error says so, and the next cell is rich again
        reply, _ = run(kc, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert reply["ename"] == "SessionLost"
        _, outputs = run(kc, markdown)
        assert shapes(outputs) == ["display_data:text/markdown"]


def test_session_that_cannot_load_the_shim_keeps_the_plain_mapping(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier, REMOTE_KERNEL_RICH="0", REMOTE_KERNEL_KEEP_SESSION="1")) as (km, kc):
        # an earlier install that cannot be taken out: the shim refuses to stack hooks on it (IPython 8 and 9 alike)
        reply, _ = run(kc, "import sys, types\n"
                           "class Stuck:\n"
                           "    def uninstall(self):\n"
                           "        raise RuntimeError('these hooks cannot be removed')\n"
                           "sys.modules['_remote_kernel_rich'] = types.SimpleNamespace(active=Stuck())")
        assert reply["status"] == "ok"
    with kernel(pool_env(pool, identifier)) as (km, kc):
        reply, outputs = run(kc, "print('hi'); 6 * 7")
        assert reply["status"] == "ok" and shapes(outputs) == ["stdout", "execute_result:text/plain"]
        _, outputs = run(kc, "import pandas as pd\npd.DataFrame({'x': [1, 2]})")
        assert shapes(outputs) == ["execute_result:text/plain"]
        _, outputs = run(kc, "%session")
        assert "could not load it" in text_of(outputs)


# --- the pieces, without a session --------------------------------------------------------------

def marker(nonce: str, cell: int, token: str) -> str:
    return f"\x1erk{nonce}:{cell}:{token}\x1e"


def bundle(data: dict, late: bool = False, kind: str = "display") -> str:
    import json

    return "j" + json.dumps({"type": kind, "data": data, "late": late})


def test_only_this_shims_markers_are_cut_out_and_other_text_is_shown_as_written():
    stdout = (f"a\n{marker('00000001', 4, bundle({'text/plain': 'm'}))}b\n{marker('0000000f', 9, '3')}c\n"
              f"{marker('00000001', 4, 'r')}")
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout, result="5", has_result=True)
    messages, err = rendered(execution, 2, nonce="00000001", jupyter_repr=True)
    assert err is None
    assert messages == [("stream", {"name": "stdout", "text": "a\n"}),
                        ("display_data", {"data": {"text/plain": "m"}, "metadata": {}, "transient": {}}),
                        ("stream", {"name": "stdout", "text": f"b\n{marker('0000000f', 9, '3')}c\n"}),
                        ("execute_result", {"execution_count": 2, "data": {"text/plain": "5"}, "metadata": {}})]


def test_stderr_and_the_error_go_after_the_cells_own_output_and_before_what_it_left_at_the_end():
    stdout = ("out\n" + marker("00000001", 1, bundle({"text/markdown": "m", "text/plain": "m"}))
              + marker("00000001", 1, bundle({"image/png": "iVBORw==", "text/plain": "<Figure>"}, late=True)))
    execution = Execution(id="e", status=ExecutionStatus.FAILED, stdout=stdout,
                          stderr="warned\nTraceback (most recent call last):\nValueError: bad\n",
                          error=ExecutionError("ValueError", "bad"))
    messages, err = rendered(execution, 3, nonce="00000001")
    assert [(t, c.get("name")) for t, c in messages] == [("stream", "stdout"), ("display_data", None),
                                                         ("stream", "stderr"), ("error", None), ("display_data", None)]
    assert err is not None and err[1]["ename"] == "ValueError" and messages[2][1]["text"] == "warned\n"


def test_text_fed_live_is_not_shown_again_at_the_end():
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout="one\ntwo\n", stderr="e\n")
    messages, _ = rendered(execution, 1, fed=(("stdout", "one\n"), ("stderr", "e\n")))
    assert messages == [("stream", {"name": "stdout", "text": "one\n"}), ("stream", {"name": "stderr", "text": "e\n"}),
                        ("stream", {"name": "stdout", "text": "two\n"})]


def test_the_riding_installs_answer_line_is_taken_out_of_stdout_even_when_cut_between_live_events():
    from remote_kernel.kernel.helper import HELPER_MARK

    line = HELPER_MARK + '{"ok": true}\n'
    stdout = line + f"hi\n{marker('00000001', 1, bundle({'text/plain': 'm'}))}"
    answers: list[str] = []
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout)
    messages, _ = rendered(execution, 1, fed=(("stdout", line[:5]), ("stdout", line[5:] + "h")), nonce="00000001",
                           answer=answers.append)
    assert answers == [line.rstrip("\n")]
    assert messages == [("stream", {"name": "stdout", "text": "h"}), ("stream", {"name": "stdout", "text": "i\n"}),
                        ("display_data", {"data": {"text/plain": "m"}, "metadata": {}, "transient": {}})]
    # no answer (the line never ran: the session could not parse the cell): stdout is the cell's own
    answers.clear()
    messages, _ = rendered(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout="@@rem"), 1,
                           nonce="00000001", answer=answers.append)
    assert answers == [] and messages == [("stream", {"name": "stdout", "text": "@@rem"})]


def test_a_marker_cut_between_two_live_events_is_still_one_output():
    whole = marker("00000001", 1, bundle({"text/plain": "m"}))
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout="x" + whole + "y")
    messages, _ = rendered(execution, 1, nonce="00000001", fed=(("stdout", "x" + whole[:9]), ("stdout", whole[9:])))
    assert [m[0] for m in messages] == ["stream", "display_data", "stream"]


def test_a_malformed_marker_or_bundle_loses_that_output_with_a_note_and_keeps_the_rest():
    bad = [marker("00000001", 1, "9" * 5000), marker("00000001", 1, 'j{"data": 5}'),
           marker("00000001", 1, "j" + "[" * 100_000), marker("00000001", 1, "jnot json")]
    stdout = "before\n" + "".join(bad) + marker("00000001", 1, bundle({"text/plain": "kept"})) + "after\n"
    messages, err = rendered(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout), 1, nonce="00000001")
    assert err is None
    notes = [m[1]["text"] for m in messages if m[0] == "stream" and m[1]["name"] == "stderr"]
    assert len(notes) == 4 and all(n.startswith("[remote_kernel: one output could not be shown") for n in notes)
    assert [m[1]["text"] for m in messages if m[0] == "stream" and m[1]["name"] == "stdout"] == ["before\n", "after\n"]
    assert [m[1]["data"] for m in messages if m[0] == "display_data"] == [{"text/plain": "kept"}]


def test_an_output_of_the_cells_file_is_shown_once_however_often_its_marker_is_printed():
    import asyncio  # noqa: F401  (rendered runs its own loop)

    line = b'{"type": "display", "data": {"text/plain": "big"}}\n'
    fetched = []

    async def fetch(cell: int) -> bytes:
        fetched.append(cell)
        return line

    stdout = marker("00000001", 7, "0") * 3000
    messages, _ = rendered(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout), 1,
                           nonce="00000001", fetch=fetch)
    assert [m[0] for m in messages] == ["display_data"] and fetched == [7]


def test_a_cells_messages_stay_within_the_output_budget(monkeypatch):
    from remote_kernel.kernel import render

    monkeypatch.setattr(render, "CELL_BUDGET", 10_000)
    stdout = "".join(marker("00000001", 1, bundle({"text/plain": f"{i}" + "x" * 1000})) for i in range(100))
    messages, _ = rendered(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout), 1, nonce="00000001")
    assert len([m for m in messages if m[0] == "display_data"]) < 10
    assert "output passed" in messages[-1][1]["text"]


def test_without_markers_stdout_and_the_result_are_shown_as_they_are():
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout="hi\n", result=2, has_result=True)
    assert rendered(execution, 1)[0] == [("stream", {"name": "stdout", "text": "hi\n"}),
                                         ("execute_result", {"execution_count": 1,
                                                             "data": {"text/plain": "2"}, "metadata": {}})]


def test_shim_install_reports_an_error_where_there_is_no_ipython():
    state = rich.RichOutput(enabled=True)
    code = state.install_code()
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    state.record_install(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=finished.stdout))
    assert not state.installed and "get_ipython" in state.refused
    assert not state.needs_install  # not tried again in the same session
    state.forget()
    assert state.needs_install  # a new session gets another try


def test_rich_output_notebook_shows_a_table_two_plots_displays_and_only_the_last_loop_step(tmp_path, monkeypatch):
    import nbformat
    from kernel_support import ROOT, install_kernelspec
    from nbclient import NotebookClient

    install_kernelspec()
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_TOKEN", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_IDENTIFIER"):
        monkeypatch.delenv(name, raising=False)  # the kernel starts its own pool, as for a user
    book = nbformat.read(ROOT / "notebooks" / "rich-output.ipynb", as_version=4)
    NotebookClient(book, kernel_name="remote-python", timeout=180, startup_timeout=60,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    table, plots, displays, loop = ([o.output_type if o.output_type == "stream" else
                                     f"{o.output_type}:{next(k for k in o.data if k != 'text/plain')}"
                                     for o in cell.outputs] for cell in code)
    assert table == ["execute_result:text/html"] and "<td>Nairobi</td>" in code[0].outputs[0].data["text/html"]
    assert plots == ["stream", "display_data:image/png", "stream", "display_data:image/png", "stream"]
    assert displays == ["stream", "display_data:text/markdown", "stream", "display_data:image/svg+xml", "stream"]
    assert "Nairobi" in code[2].outputs[1].data["text/markdown"]
    assert loop == ["stream", "display_data:text/markdown"] and code[3].outputs[0].text == "step 5 of 5\n"


def test_shim_works_in_an_ipykernel_session_as_a_hosted_pool_runs_it(tmp_path):
    """A hosted session is an ipykernel IPython (ZMQ display publisher and displayhook, inline
    figures): the same shim, sent as code, captures there what it captures in the local worker."""
    import os
    from pathlib import Path

    from jupyter_client.manager import start_new_kernel
    from kernel_support import collect

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env, startup_timeout=60)
    try:
        def execute(code: str) -> tuple[str, list[dict]]:
            outputs = collect(kc, kc.execute(code), timeout=60)
            return text_of(outputs, "stdout"), outputs

        state = rich.RichOutput(enabled=True)
        stdout, _ = execute(state.install_code())
        state.record_install(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout))
        assert state.installed, state.refused
        stdout, outputs = execute(TWO_FIGURES + "from IPython.display import display, Markdown\n"
                                  "display(Markdown('*m*'))\nimport pandas as pd\npd.DataFrame({'x': [1]})")
        assert not [m for m in outputs if m["msg_type"] == "display_data"]  # the shim has them
        root = Path("/mnt/data") if Path("/mnt/data").is_dir() else tmp_path

        async def fetch(cell: int) -> bytes:
            return (root / rich.FOLDER / f"{state.nonce}-{cell}.jsonl").read_bytes()

        messages, _ = rendered(Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=stdout), 1,
                               nonce=state.nonce, fetch=fetch)
        words = [c["text"] if t == "stream" else next(k for k in c["data"] if k != "text/plain") for t, c in messages]
        assert words == ["first\n", "image/png", "second\n", "image/png", "text/markdown", "text/html"]
        assert messages[-1][0] == "execute_result" and "<table" in messages[-1][1]["data"]["text/html"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_shim_riding_with_a_first_cell_in_an_ipykernel_session_keeps_the_cells_numbers(tmp_path):
    """A hosted session runs the first cell with the shim's line before it: the line installs the shim,
    and the cell's traceback, `In` and `_i1` are those of the cell as the user wrote it."""
    import os
    import re

    from jupyter_client.manager import start_new_kernel
    from kernel_support import collect

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env, startup_timeout=60)
    try:
        state = rich.RichOutput(enabled=True)
        cell = "from IPython.display import display, Markdown\ndisplay(Markdown('*m*'))\n1 / 0"
        assert rich.can_ride(cell)
        outputs = collect(kc, kc.execute(state.riding_code(cell) + cell), timeout=60)
        stdout = text_of(outputs, "stdout")
        messages, _ = rendered(Execution(id="e", status=ExecutionStatus.FAILED, stdout=stdout,
                                         error=ExecutionError("ZeroDivisionError", "division by zero", "")), 1,
                               nonce=state.nonce, answer=state.record_answer)
        assert state.installed, state.refused
        assert [t for t, _ in messages] == ["display_data", "error"] and "text/markdown" in messages[0][1]["data"]
        error = errors_of(outputs)[0]
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
        assert "In[1], line 3" in traceback and "----> 3 1 / 0" in traceback, traceback
        echo = collect(kc, kc.execute(f"print(In[1] == _i1 == {cell!r}, len(In))"), timeout=60)
        assert text_of(echo, "stdout") == "True 3\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_remote_kernel_rich_is_read_once_from_the_environment():
    from remote_kernel.kernel.config import KernelConfig

    assert KernelConfig.from_env({}).rich
    assert not KernelConfig.from_env({"REMOTE_KERNEL_RICH": "0"}).rich
    assert not KernelConfig.from_env({"REMOTE_KERNEL_RICH": "off"}).rich
    assert ("rich output", "off  (REMOTE_KERNEL_RICH=0)") in KernelConfig.from_env({"REMOTE_KERNEL_RICH": "0"}).describe()


@pytest.mark.parametrize("name", ["remote-python", "python3"])
def test_an_object_that_displays_itself_is_shown_once_without_a_repr(name):
    """Issue 14 item 3, compared with ipykernel."""
    from kernel_support import embedded_env

    with kernel(embedded_env(), name=name) as (km, kc):
        reply, outputs = run(kc, "class D:\n    def _ipython_display_(self):\n        print('shown once')\nD()")
        assert reply["status"] == "ok" and text_of(outputs, "stdout") == "shown once\n"
        assert [m["msg_type"] for m in outputs if m["msg_type"] != "stream"] == []


@pytest.mark.parametrize("name", ["remote-python", "python3"])
def test_helper_executions_take_no_execution_count_and_stay_out_of_the_history(name):
    """Issue 14 item 2, compared with ipykernel: after a completion (a helper execution in the
    session) and the shim's install, `Out`, `In`, `_iN` and the traceback's `In[N]` follow the prompts."""
    from kernel_support import embedded_env

    with kernel(embedded_env(), name=name) as (km, kc):
        run(kc, "1+1")
        kc.complete("import o", 8)
        kc.get_shell_msg(timeout=60)
        run(kc, "a = 5")
        reply, outputs = run(kc, "print(list(Out), len(In), "
                                 "sorted(k for k in dir() if k[:2] == '_i' and k[2:].isdigit()))\n1/0")
        assert text_of(outputs, "stdout") == "[1] 4 ['_i1', '_i2', '_i3']\n"
        assert reply["execution_count"] == 3
        assert any("In[3]" in line for line in errors_of(outputs)[0]["traceback"])


@pytest.mark.parametrize("name", ["remote-python", "python3"])
def test_a_cell_that_plots_then_fails_shows_the_error_then_the_figure(name):
    """Issue 14 item 7, compared with ipykernel: the figure left open comes after the error."""
    from kernel_support import embedded_env

    env = {k: v for k, v in embedded_env().items() if k != "MPLBACKEND"}
    with kernel(env, name=name) as (km, kc):
        reply, outputs = run(kc, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n1 / 0")
        assert reply["status"] == "error"
        assert shapes(outputs) == ["error", "display_data:image/png"]
