"""VS Code's hidden requests, replayed as the extension sends them, on ipykernel and on remote-python.

The requests are built by `vscode_requests.py` from the extension's own helper files (microsoft/vscode-jupyter,
see vscode_jupyter/README.md for the release and how to check a later one) with the extension's flags. Every
test sends the same requests to a local ipykernel (`python3`) and to remote-python, and compares the answers
as the extension reads them.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import vscode_requests as vr
from jupyter_client.manager import start_new_kernel
from kernel_support import (
    ROOT,
    collect,
    embedded_env,
    install_kernelspec,
    listed_sessions,
    pool_env,
    run,
    text_of,
    wait_for,
)

CELL = ("import numpy as np, pandas as pd\n"
        "n = 42\ns = 'text'\nl = [1, 'two', 3.0]\nd = {'a': 1, 'b': [2]}\n"
        "arr = np.arange(12.0).reshape(3, 4)\n"
        "df = pd.DataFrame({'x': range(5), 'y': list('abcde'), 'z': [0.5, 1.5, None, 3.5, 4.5]})\n"
        "class Remote:\n    alpha = 1\n    def beta(self, count: int) -> str:\n        'Say beta count times.'\n"
        "        return 'beta' * count\nobj = Remote()")


@contextmanager
def both_kernels(pool, identifier: str, managers: dict | None = None) -> Iterator[dict]:
    """ipykernel and remote-python (on the test pool), with a client each: {"python3": kc, "remote": kc}."""
    install_kernelspec()
    started = {}
    try:
        started["python3"] = start_new_kernel(kernel_name="python3", env=embedded_env(), cwd=str(ROOT),
                                              startup_timeout=60)
        started["remote"] = start_new_kernel(kernel_name="remote-python", env=pool_env(pool, identifier),
                                             cwd=str(ROOT), startup_timeout=60)
        if managers is not None:
            managers.update({name: km for name, (km, kc) in started.items()})
        yield {name: kc for name, (km, kc) in started.items()}
    finally:
        for km, kc in started.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def vscode_kernels(pool):
    """ipykernel and remote-python after VS Code's start-up and one cell (shared by the read-only tests)."""
    with both_kernels(pool, str(uuid.uuid4())) as kernels:
        for name, kc in kernels.items():
            run(kc, vr.startup("/tmp/notebook.ipynb"), **vr.EXECUTE_SILENTLY)  # turns jedi off, as in VS Code
            reply, _ = run(kc, CELL, **vr.CELL)
            assert reply["status"] == "ok", (name, reply)
        yield kernels


def answers(kernels: dict, code: str, flags: dict) -> dict:
    """The first output of `code` on each kernel, as executeSilently's callers read it."""
    found = {}
    for name, kc in kernels.items():
        reply, outputs = run(kc, code, **flags)
        assert reply["status"] == "ok", (name, reply, outputs)
        found[name] = vr.first_output(outputs)
    return found


def background_answer(kc, counter: int, statement: list[str]) -> tuple[dict, object]:
    """Run a background execution; the execute reply, and the `.result` data of the display update whose
    display_id is the one of the dummy display (what backgroundExecution.ts waits for)."""
    code, mime = vr.background(counter, statement)
    msg_id = kc.execute(code, **vr.EMIT_OUTPUT)
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    outputs = collect(kc, msg_id)
    dummy = [m for m in outputs if m["msg_type"] == "display_data" and mime in m["content"]["data"]]
    assert len(dummy) == 1, outputs
    display_id = dummy[0]["content"]["transient"]["display_id"]
    deadline = time.monotonic() + 30
    updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
    while not updates and time.monotonic() < deadline:  # ipykernel answers from a thread: maybe after idle
        msg = kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "update_display_data":
            updates.append(msg)
    update = next(m for m in updates if m["content"]["transient"]["display_id"] == display_id)
    assert f"{mime}.error" not in update["content"]["data"], update["content"]["data"]
    return reply["content"], update["content"]["data"][f"{mime}.result"]


def without_addresses(text: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", " at 0x…", text)


def without_cell_file(text: str) -> str:
    return re.sub(r"(File:\x1b\[[0-9;]*m\s+).*", r"\1<cell>", text)


def test_startup_snippets_are_answered_at_once_and_the_notebook_path_reaches_the_session(pool):
    identifier = str(uuid.uuid4())
    with both_kernels(pool, identifier) as kernels:
        for name, kc in kernels.items():
            reply, outputs = run(kc, vr.startup("/home/user/project/analysis.ipynb"), **vr.EXECUTE_SILENTLY)
            assert reply["status"] == "ok" and outputs == [], (name, outputs)
        # the ipywidgets probe finds no widgets on remote-python (no comm channel to a session), so VS Code
        # does not load its widget renderer; ipykernel names its version when ipywidgets is installed
        reply, outputs = run(kernels["remote"], vr.widgets_probe(), **vr.EXECUTE_SILENTLY)
        assert reply["status"] == "ok" and outputs == []
        reply, outputs = run(kernels["python3"], vr.widgets_probe(), **vr.EXECUTE_SILENTLY)
        assert reply["status"] == "ok" and all("IPyWidgets:" in text_of([m]) for m in outputs)
        # the Variables view asks before any cell has run: nothing of the user's on either kernel
        # (ipykernel lists the `matplotlib` module its set-up imported; VS Code hides modules by default)
        types = {name: [v for v in json.loads(text) if v["type"] != "module"]
                 for name, text in answers(kernels, vr.variable_types(), vr.EXECUTE_SILENTLY).items()}
        assert types["remote"] == types["python3"] == []
        # a Data Viewer request for a variable that does not exist yet: NameError on both
        for name, kc in kernels.items():
            reply, outputs = run(kc, vr.dataframe_info("df"), **vr.EXECUTE_SILENTLY)
            assert (reply["status"], vr.first_output(outputs)) == ("error", "NameError"), name
        # the newer Variables view (a background execution of the variables provider): an empty list on both
        described = {name: json.loads(background_answer(kc, 0, vr.all_variable_descriptions())[1])
                     for name, kc in kernels.items()}
        assert described["remote"] == [v for v in described["python3"] if v["name"] != "matplotlib"] == []
        assert identifier not in listed_sessions(pool), "start-up must not create the session"
        counts = {}
        for name, kc in kernels.items():
            reply, outputs = run(kc, "__vsc_ipynb_file__", **vr.CELL)
            counts[name] = reply["execution_count"]
            assert [m["content"]["data"]["text/plain"] for m in outputs] == ["'/home/user/project/analysis.ipynb'"]
        assert counts["remote"] == counts["python3"] == 1  # hidden requests took no number
        assert identifier in listed_sessions(pool)


def test_variables_view_and_data_viewer_answer_from_the_session_as_ipykernel(vscode_kernels):
    kernels = vscode_kernels
    types = answers(kernels, vr.variable_types(), vr.EXECUTE_SILENTLY)
    listed = {name: [v for v in json.loads(text) if v["name"] != "matplotlib"] for name, text in types.items()}
    assert listed["remote"] == listed["python3"]
    assert {"name": "arr", "type": "ndarray", "fullType": "numpy.ndarray"} in listed["remote"]
    for variable in ("n", "s", "l", "d", "arr", "df", "obj"):
        info = answers(kernels, vr.variable_info(variable), vr.EXECUTE_SILENTLY)
        assert json.loads(info["remote"]) == json.loads(info["python3"]), variable
    properties = answers(kernels, vr.variable_properties("arr", ["shape", "dtype", "missing"]),
                         vr.EXECUTE_SILENTLY)
    assert json.loads(properties["remote"]) == json.loads(properties["python3"]) == {
        "shape": "(3, 4)", "dtype": "dtype('float64')"}
    info = answers(kernels, vr.dataframe_info("df"), vr.EXECUTE_SILENTLY)
    assert json.loads(info["remote"]) == json.loads(info["python3"])
    assert json.loads(info["remote"])["rowCount"] == 5
    for start, end in ((0, 2), (2, 5)):  # the Data Viewer asks for rows a chunk at a time
        rows = answers(kernels, vr.dataframe_rows("df", start, end), vr.EXECUTE_SILENTLY)
        assert json.loads(rows["remote"]) == json.loads(rows["python3"])
        assert len(json.loads(rows["remote"])["data"]) == end - start
    # the variables provider of the newer Variables view runs as a background execution
    described = {name: json.loads(without_addresses(background_answer(kc, 7, vr.all_variable_descriptions())[1]))
                 for name, kc in kernels.items()}
    described = {name: [v for v in found if v["name"] != "matplotlib"] for name, found in described.items()}
    assert described["remote"] == described["python3"]
    assert "arr" in [v["name"] for v in described["remote"]]


def test_background_completion_and_inspection_of_a_remote_object(vscode_kernels):
    kernels = vscode_kernels
    for counter, (code, cursor) in enumerate((("obj.al", 6), ("obj.", 4), ("x = obj.be", 10))):
        found = {name: background_answer(kc, counter, vr.complete_statement(code, cursor))
                 for name, kc in kernels.items()}
        for name, (reply, _answer) in found.items():
            assert reply["status"] == "ok" and reply["execution_count"] == 1, (name, reply)
        remote, local = found["remote"][1], found["python3"][1]
        assert {k: remote[k] for k in ("matches", "cursor_start", "cursor_end", "status")} == \
               {k: local[k] for k in ("matches", "cursor_start", "cursor_end", "status")}, code
        assert remote["metadata"]["_jupyter_types_experimental"] == local["metadata"]["_jupyter_types_experimental"]
        # the same answer as the kernel's own complete_request
        kc = kernels["remote"]
        kc.complete(code, cursor)
        direct = kc.get_shell_msg(timeout=30)["content"]
        assert direct["matches"] == remote["matches"] and direct["cursor_start"] == remote["cursor_start"]
    assert found["remote"][1]["matches"]  # "x = obj.be" finds obj.beta in the remote namespace
    inspected = {name: background_answer(kc, 9, vr.inspect_statement("obj.beta", 8))[1]
                 for name, kc in kernels.items()}
    assert inspected["remote"]["found"] and inspected["python3"]["found"]
    # the same coloured text, but for the file a cell's code is in (a temporary file of each kernel)
    assert without_cell_file(inspected["remote"]["data"]["text/plain"]) == \
           without_cell_file(inspected["python3"]["data"]["text/plain"])


def _interrupt(kc) -> None:
    """What VS Code sends for interrupt_mode "message": an interrupt_request on the control channel."""
    msg = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(msg)
    reply = kc.control_channel.get_msg(timeout=30)
    assert reply["msg_type"] == "interrupt_reply" and reply["content"]["status"] == "ok", reply


def test_interrupt_and_restart_as_vscode_sends_them(pool):
    managers: dict = {}
    with both_kernels(pool, str(uuid.uuid4()), managers) as kernels:
        errors = {}
        for name, kc in kernels.items():
            run(kc, "kept = 'still here'", **vr.CELL)
            msg_id = kc.execute("import time\nprint('looping', flush=True)\nfor _ in range(600): time.sleep(0.1)",
                                **vr.CELL)
            while True:  # the cell is in its loop (the remote one: in the session)
                msg = kc.get_iopub_msg(timeout=60)
                if (msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == msg_id
                        and "looping" in msg["content"]["text"]):
                    break
            _interrupt(kc)
            reply = kc.get_shell_msg(timeout=60)
            assert reply["parent_header"]["msg_id"] == msg_id
            errors[name] = (reply["content"]["status"], reply["content"].get("ename"))
            _, outputs = run(kc, "kept", **vr.CELL)
            assert [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"] == \
                   ["'still here'"], (name, outputs)
        assert errors["remote"] == errors["python3"] == ("error", "KeyboardInterrupt")
        replies = {}
        for name, kc in kernels.items():
            msg = kc.session.msg("shutdown_request", {"restart": True})
            kc.control_channel.send(msg)
            reply = kc.control_channel.get_msg(timeout=30)
            replies[name] = (reply["msg_type"], reply["content"]["status"], reply["content"]["restart"])
        assert replies["remote"] == replies["python3"] == ("shutdown_reply", "ok", True)
        restarted = {}
        for name, kc in kernels.items():  # the kernel exited; VS Code starts it again
            km = managers[name]
            wait_for(lambda km=km: not km.is_alive(), timeout=30, what=f"{name} to exit after shutdown_request")
            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=60)
            reply, outputs = run(kc, "kept", **vr.CELL)
            restarted[name] = (reply["status"], reply.get("ename"), reply["execution_count"])
        assert restarted["remote"] == restarted["python3"] == ("error", "NameError", 1)
