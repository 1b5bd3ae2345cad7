"""The notebook talks back to a session (issue 24): comms (ipywidgets) and stdin, compared with ipykernel.

Each test runs the same script on ipykernel and on remote-python (on the test pool, through its live
extension; `hosted` runs it through a proxy that passes only the contract) and compares what a front
end sees: IOPub messages, replies, and what the session's values become after the front end spoke.
"""
from __future__ import annotations

import os
import re
import sys
import time
import uuid

import pytest
from kernel_support import (
    ContractProxy,
    embedded_env,
    errors_of,
    install_kernelspec,
    pool_env,
    pool_get,
    run,
    start_new_kernel,
    text_of,
    wait_for,
)

pytest.importorskip("ipywidgets")

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MODEL = re.compile(r"IPY_MODEL_[0-9a-f]+")


def _start(pool, folder, proxy: ContractProxy | None = None, first_cell: bool = True,
           identifier: str | None = None) -> dict:
    install_kernelspec()
    local_env = {**embedded_env(), "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    remote_env = pool_env(pool, identifier or str(uuid.uuid4()))
    if proxy is not None:
        remote_env["POOL_MANAGEMENT_ENDPOINT"] = proxy.endpoint
    started = {"python3": start_new_kernel(kernel_name="python3", env=local_env, cwd=str(folder), startup_timeout=60),
               "remote": start_new_kernel(kernel_name="remote-python", env=remote_env, cwd=str(folder),
                                          startup_timeout=60)}
    for name, (_km, kc) in started.items():
        if first_cell:
            reply, _ = run(kc, "pass")
            assert reply["status"] == "ok", (name, reply)
    return started


def _stop(started: dict) -> None:
    for km, kc in started.values():
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module", params=["live", "hosted"])
def kernels(request, pool, tmp_path_factory):
    """{"python3": kc, "remote": kc}: remote-python on the pool's live extension ("live"), or behind a proxy
    that passes only the contract ("hosted": a hosted pool, whose file API takes uploads while a cell runs)."""
    proxy = ContractProxy(pool.endpoint) if request.param == "hosted" else None
    started = _start(pool, tmp_path_factory.mktemp(request.param), proxy)
    try:
        yield {name: kc for name, (km, kc) in started.items()}
    finally:
        _stop(started)
        if proxy is not None:
            proxy.close()


def both(clients: dict, code: str, **options) -> dict:
    return {name: run(kc, code, **options) for name, kc in clients.items()}


def comm_open(outputs: list[dict], model: str | None = None) -> dict:
    opened = [m["content"] for m in outputs if m["msg_type"] == "comm_open"
              and (model is None or m["content"]["data"]["state"].get("_model_name") == model)]
    assert opened, [m["msg_type"] for m in outputs]
    return opened[-1]


def send_comm(kc, msg_type: str, content: dict, metadata: dict | None = None) -> list[dict]:
    """Send a front end's comm message; the IOPub messages it caused (up to its idle)."""
    from kernel_support import collect

    msg = kc.session.msg(msg_type, content, metadata=metadata)
    kc.shell_channel.send(msg)
    return collect(kc, msg["header"]["msg_id"])


def update(kc, comm_id: str, state: dict) -> list[dict]:
    return send_comm(kc, "comm_msg", {"comm_id": comm_id, "data": {"method": "update", "state": state,
                                                                      "buffer_paths": []}})


def comm_msgs(outputs: list[dict]) -> list[dict]:
    return [m["content"]["data"] for m in outputs if m["msg_type"] == "comm_msg"]


def value_of(kc, expression: str) -> str:
    reply, outputs = run(kc, expression)
    assert reply["status"] == "ok", reply
    return [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"][0]


# --- comms ---------------------------------------------------------------------------------------------

def _slider_state(clients: dict) -> dict:
    found = {}
    for name, (reply, outputs) in both(clients, "import ipywidgets as w\ns = w.IntSlider(value=3, max=20)\ns").items():
        opened = comm_open(outputs, "IntSliderModel")
        shown = [m["content"]["data"] for m in outputs if m["msg_type"] == "execute_result"]
        state = {key: MODEL.sub("IPY_MODEL_", str(value)) for key, value in opened["data"]["state"].items()}
        found[name] = (reply["status"], opened["target_name"], sorted(state.items()),
                       opened["data"].get("buffer_paths"), sorted(shown[0]),
                       shown[0]["application/vnd.jupyter.widget-view+json"]["model_id"] == opened["comm_id"])
    return found


def test_a_sliders_comm_open_and_state_are_ipykernels(kernels):
    found = _slider_state(kernels)
    assert found["remote"] == found["python3"]
    assert found["python3"][1] == "jupyter.widget" and found["python3"][5]
    assert ("value", "3") in found["python3"][2]


def _slider(kc) -> str:
    _, outputs = run(kc, "import ipywidgets as w\ns = w.IntSlider(value=3, max=20)\ns")
    return comm_open(outputs, "IntSliderModel")["comm_id"]


def test_a_front_end_update_reaches_the_value_and_the_session_update_reaches_the_front_end(kernels):
    found = {}
    for name, kc in kernels.items():
        comm_id = _slider(kc)
        caused = update(kc, comm_id, {"value": 7})
        value = value_of(kc, "s.value")
        _, outputs = run(kc, "s.value = 9")
        sent = comm_msgs(outputs)
        found[name] = (value, [m for m in comm_msgs(caused) if m.get("method") != "echo_update"], sent)
    assert found["remote"] == found["python3"]
    assert found["python3"][0] == "7"
    assert found["python3"][2] == [{"method": "update", "state": {"value": 9}, "buffer_paths": []}]


def test_an_observers_output_shows_under_the_widgets_cell(kernels):
    found = {}
    for name, kc in kernels.items():
        comm_id = _slider(kc)
        run(kc, "s.observe(lambda change: print('now', change['new']), 'value')")
        caused = update(kc, comm_id, {"value": 5})
        found[name] = text_of(caused, "stdout")
    assert found["remote"] == found["python3"] == "now 5\n"


def test_interact_output_is_replaced_on_change(kernels):
    code = "from ipywidgets import interact\n@interact(x=3)\ndef f(x):\n    print('x is', x)\n"
    found = {}
    for name, kc in kernels.items():
        reply, outputs = run(kc, code)
        assert reply["status"] == "ok", reply
        slider = comm_open(outputs, "IntSliderModel")["comm_id"]
        out = comm_open(outputs, "OutputModel")["comm_id"]
        first = [m for m in comm_msgs(outputs)]
        caused = update(kc, slider, {"value": 4})
        # the Output widget captures the redraw: outputs of this comm message, routed by its msg_id
        captured = [(m["msg_type"], m["content"].get("text"), m["content"].get("wait"))
                    for m in caused if m["msg_type"] in ("stream", "clear_output")]
        msg_ids = [d["state"]["msg_id"] for d in comm_msgs(caused) if "msg_id" in d.get("state", {})]
        found[name] = (bool(first), captured, len(msg_ids) == 2 and msg_ids[0] != "" and msg_ids[1] == "",
                       text_of(outputs, "stdout"))
        assert out
    assert found["remote"] == found["python3"]
    assert ("stream", "x is 4\n", None) in found["python3"][1]


def test_an_output_widget_captures(kernels):
    code = ("import ipywidgets as w\nout = w.Output()\ndisplay(out)\nwith out:\n    print('inside')\n"
            "print('outside')")
    found = {}
    for name, kc in kernels.items():
        msg_id = kc.execute(code)
        from kernel_support import collect

        outputs = collect(kc, msg_id)
        states = [d["state"]["msg_id"] for d in comm_msgs(outputs) if "msg_id" in d.get("state", {})]
        found[name] = (states == [msg_id, ""], text_of(outputs, "stdout"))
    assert found["remote"] == found["python3"] == (True, "inside\noutside\n")


def test_the_widget_control_comm_restores_widgets_after_a_reload(kernels):
    found = {}
    for name, kc in kernels.items():
        comm_id = _slider(kc)
        control = str(uuid.uuid4())
        opened = send_comm(kc, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control",
                                             "data": {}}, metadata={"version": "1.0.0"})
        asked = send_comm(kc, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
        states = comm_msgs(asked)
        assert states, (name, text_of(asked))
        kc.comm_info(target_name="jupyter.widget")
        reply = kc.get_shell_msg(timeout=30)
        while reply["msg_type"] != "comm_info_reply":
            reply = kc.get_shell_msg(timeout=30)
        found[name] = ([m["msg_type"] for m in opened], states[0]["method"], comm_id in states[0]["states"],
                       comm_id in reply["content"]["comms"])
    assert found["remote"] == found["python3"] == ([], "update_states", True, True)


def test_a_tqdm_notebook_bar_completes(kernels):
    pytest.importorskip("tqdm")
    found = {}
    for name, (reply, outputs) in both(kernels, "from tqdm.notebook import tqdm\nfor _ in tqdm(range(5)): pass").items():
        bar = comm_open(outputs, "FloatProgressModel")
        values = [m["content"]["data"]["state"]["value"] for m in outputs if m["msg_type"] == "comm_msg"
                  and m["content"]["comm_id"] == bar["comm_id"] and "value" in m["content"]["data"].get("state", {})]
        found[name] = (reply["status"], bar["data"]["state"]["max"], values[-1] if values else None)
    assert found["remote"] == found["python3"] == ("ok", 5, 5)


def test_widgets_carrying_script_show_none(kernels):
    code = ("import ipywidgets as w\nh = w.HTML(value='<b>bold</b><script>alert(1)</script><img src=x onerror=alert(2)>',"
            " description='<i>d</i><script>alert(3)</script>')\nh")
    _, outputs = run(kernels["remote"], code)
    state = comm_open(outputs, "HTMLModel")["data"]["state"]
    assert "<b>bold</b>" in state["value"] and "<i>d</i>" in state["description"]
    assert "script" not in state["value"] + state["description"] and "onerror" not in state["value"]
    _, outputs = run(kernels["remote"], "h.value = '<a href=\"javascript:alert(4)\">x</a><script>1</script>'")
    assert [d for d in comm_msgs(outputs) if "javascript" in str(d) or "script>" in str(d)] == []
    code = ("out = w.Output()\nout.append_display_data(__import__('IPython').display.HTML('<script>alert(5)</script>"
            "<p>kept</p>'))\nout")
    _, outputs = run(kernels["remote"], code)
    assert "<p>kept</p>" in str(comm_msgs(outputs)) and "alert(5)" not in str(outputs)


def test_an_endless_stream_of_comm_messages_is_bounded(kernels):
    kc = kernels["remote"]
    comm_id = _slider(kc)
    # through ipywidgets: updates past the session's rate are merged, and the last state still arrives
    _, outputs = run(kc, "import time\nend = time.monotonic() + 3\nn = 0\nwhile time.monotonic() < end:\n"
                         "    n += 1\n    s.value = n % 20\nn")
    sent = [d for d in comm_msgs(outputs) if d.get("method") == "update"]
    count = int([m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"][0])
    assert 0 < len(sent) < count and sent[-1]["state"]["value"] == count % 20
    # a hostile session writes the shim's markers itself: the kernel drops what passes its own rate
    code = ("import json, sys\nshim = sys.modules['_remote_kernel_rich'].active\nfor i in range(20000):\n"
            "    shim.mark('j' + json.dumps({'type': 'comm', 'msg_type': 'comm_msg', 'content': {'comm_id': s.model_id,"
            " 'data': {'method': 'update', 'state': {'value': i % 20}}}}))")
    _, outputs = run(kc, code)
    assert len(comm_msgs(outputs)) < 20000 and "faster than" in text_of(outputs, "stderr")
    update(kc, comm_id, {"value": 2})  # the kernel and the widget still work
    assert value_of(kc, "s.value") == "2"


def test_the_states_a_reloaded_page_restores_are_screened(kernels):
    """The control comm's `update_states` (what a reloaded page renders) carries every widget's state:
    an HTML widget's event handler in it reaches the page on ipykernel, never on remote-python."""
    found = {}
    for name, kc in kernels.items():
        _, outputs = run(kc, "import ipywidgets as w\nh = w.HTML('<img src=x onerror=\"alert(3)\"><b>kept</b>')\nh")
        model_id = comm_open(outputs, "HTMLModel")["comm_id"]
        control = str(uuid.uuid4())
        send_comm(kc, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
                  metadata={"version": "1.0.0"})
        states = comm_msgs(send_comm(kc, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}}))
        value = states[0]["states"][model_id]["state"]["value"]
        found[name] = ("onerror" in value, "<b>kept</b>" in value)
    assert found == {"python3": (True, True), "remote": (False, True)}, found


def test_a_malformed_comm_message_from_the_session_is_lost_alone(kernels):
    kc = kernels["remote"]
    comm_id = _slider(kc)
    bad = [{"type": "comm", "msg_type": "comm_msg", "content": ["not", "an", "object"]},
           {"type": "comm", "msg_type": "comm_msg", "content": {"data": {}}},
           {"type": "comm", "msg_type": "comm_msg", "content": {"comm_id": comm_id, "data": {}}, "buffers": ["@@"]},
           {"type": "comm", "msg_type": "shutdown_request", "content": {"comm_id": comm_id}},
           {"type": "input", "prompt": "x", "token": "../../etc/passwd"}]
    code = ("import json, sys\nshim = sys.modules['_remote_kernel_rich'].active\n"
            f"for item in {bad!r}:\n    shim.mark('j' + json.dumps(item))\ns.value = 11")
    reply, outputs = run(kc, code)
    assert reply["status"] == "ok"
    assert comm_msgs(outputs) == [{"method": "update", "state": {"value": 11}, "buffer_paths": []}]
    assert value_of(kc, "s.value") == "11"


def test_a_comm_to_another_target_is_not_forwarded(kernels):
    kc = kernels["remote"]
    _, outputs = run(kc, "from comm import create_comm\nc = create_comm(target_name='evil.target', data={'x': 1})")
    assert not [m for m in outputs if m["msg_type"] == "comm_open"]
    assert "evil.target" in text_of(outputs, "stderr")
    opened = send_comm(kc, "comm_open", {"comm_id": "abc", "target_name": "other.target", "data": {}})
    assert [m["msg_type"] for m in opened] == ["comm_close"]
    malformed = send_comm(kc, "comm_msg", {"comm_id": 5, "data": "not a dict"})
    assert malformed == [] and value_of(kc, "1 + 1") == "2"


# --- stdin ---------------------------------------------------------------------------------------------

def answer_input(kc, code: str, answer: str, **options) -> tuple[dict, list[dict], dict]:
    """Run `code`, answer its input request with `answer`; (reply, outputs, the request's content)."""
    from kernel_support import collect

    msg_id = kc.execute(code, allow_stdin=True, **options)
    request = kc.get_stdin_msg(timeout=60)
    assert request["msg_type"] == "input_request"
    kc.input(answer)
    reply = kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=60)
    return reply["content"], collect(kc, msg_id), request["content"]


def test_input_is_answered_through_stdin(kernels):
    found = {}
    for name, kc in kernels.items():
        reply, outputs, request = answer_input(kc, "name = input('name? ')\nprint('hello', name)\nname", "Ada")
        found[name] = (reply["status"], request, text_of(outputs, "stdout"),
                       [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"])
    assert found["remote"] == found["python3"], (reply, outputs)
    assert found["python3"][1:] == ({"prompt": "name? ", "password": False}, "hello Ada\n", ["'Ada'"])


def test_a_comm_message_while_a_cell_waits_for_input_leaves_that_cell_and_the_next_their_outputs(kernels):
    """A front end's comm message that arrives while a cell waits for input (JupyterLab sends one when an
    Output widget's outputs change), with the next cell queued (Run All): ipykernel 7 handles it at once;
    the cell still gets its answer, the next cell its own outputs and idle, the widget its value (when the
    session gets it relative to the queued cell differs: ipykernel reads it after, remote-python before)."""
    from kernel_support import collect

    found = {}
    for name, kc in kernels.items():
        reply, outputs = run(kc, "import ipywidgets as w\ns = w.IntSlider(5)\ns")
        comm_id = comm_open(outputs, "IntSliderModel")["comm_id"]
        asking = kc.execute("name = input('name? ')\nprint('hello', name)", allow_stdin=True)
        queued = kc.execute("print('after')")
        assert kc.get_stdin_msg(timeout=60)["msg_type"] == "input_request"
        update = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"method": "update", "state": {"value": 7},
                                                                          "buffer_paths": []}})
        kc.shell_channel.send(update)
        # the kernel reads it before the answer: no message says when (ipykernel 7 publishes no status for a
        # comm handled during a cell, remote-python delivers it after the cell), hence a pause, not a wait
        time.sleep(1)
        kc.input("Ada")
        replies = {}
        while len(replies) < 2:
            reply = kc.get_shell_msg(timeout=60)
            replies[reply["parent_header"].get("msg_id")] = reply["content"]["status"]
        found[name] = (replies.get(asking), text_of(collect(kc, asking, timeout=60), "stdout"),
                       replies.get(queued), text_of(collect(kc, queued, timeout=60), "stdout"), value_of(kc, "s.value"))
    assert found["remote"] == found["python3"] == ("ok", "hello Ada\n", "ok", "after\n", "7"), found


def test_getpass_asks_for_a_password(kernels):
    found = {}
    for name, kc in kernels.items():
        reply, outputs, request = answer_input(kc, "import getpass\nlen(getpass.getpass())", "secret")
        found[name] = (reply["status"], request["password"],
                       [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"])
    assert found["remote"] == found["python3"] == ("ok", True, ["6"])


def test_pdb_reads_its_commands_through_stdin(kernels):
    found = {}
    for name, kc in kernels.items():
        reply, outputs, request = answer_input(kc, "x = 5\nimport pdb; pdb.set_trace()\nprint('after', x)", "c")
        # the prompt differs: ipykernel's shell replaces pdb.set_trace with IPython's debugger ("ipdb>")
        found[name] = (reply["status"], request["prompt"].strip() in ("(Pdb)", "ipdb>"),
                       text_of(outputs, "stdout").endswith("after 5\n"))
    assert found["remote"] == found["python3"]
    assert found["python3"][0] == "ok" and found["python3"][2]


def test_input_without_stdin_raises_without_the_shims_frames(kernels):
    found = {}
    for name, (reply, outputs) in both(kernels, "input('name? ')", allow_stdin=False).items():
        frames = ANSI.sub("", "\n".join(errors_of(outputs)[0]["traceback"]))
        found[name] = (reply["status"], reply["ename"], reply["evalue"], "remote_kernel" in frames,
                       "refuse" in frames)
    assert found["remote"] == found["python3"]
    assert found["python3"][:2] == ("error", "StdinNotImplementedError")


def test_interrupting_a_cell_waiting_for_input_ends_it_as_ipykernel_does(kernels):
    from kernel_support import collect

    found = {}
    for name, kc in kernels.items():
        msg_id = kc.execute("input('wait? ')", allow_stdin=True)
        assert kc.get_stdin_msg(timeout=60)["msg_type"] == "input_request"
        time.sleep(0.5)  # the request is out: the cell waits for its answer
        interrupt = kc.session.msg("interrupt_request", {})
        kc.control_channel.send(interrupt)
        reply = kc.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=60)
        outputs = collect(kc, msg_id)
        error = errors_of(outputs)[0]
        found[name] = (reply["content"]["status"], error["ename"], error["evalue"])
        assert value_of(kc, "1 + 1") == "2"
    assert found["remote"] == found["python3"]
    assert found["python3"] == ("error", "KeyboardInterrupt", "Interrupted by user")


def test_input_says_why_it_cannot_ask_where_the_pool_takes_no_files_during_a_cell(pool, tmp_path):
    """A hosted pool that answers file requests only between executions: input() raises saying why, and the
    session and the kernel go on."""
    install_kernelspec()
    proxy = ContractProxy(pool.endpoint, stall_files=True)
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    km, kc = start_new_kernel(kernel_name="remote-python", env=env, cwd=str(tmp_path), startup_timeout=60)
    try:
        run(kc, "pass")
        reply, outputs = run(kc, "input('name? ')", allow_stdin=True)
        assert (reply["status"], reply["ename"]) == ("error", "StdinNotImplementedError")
        assert "does not accept files while a cell runs" in reply["evalue"]
        assert value_of(kc, "1 + 1") == "2"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        proxy.close()


def test_matplotlib_widget_shows_an_ipympl_canvas(kernels):
    """`%matplotlib widget` (ipympl): the figure is a canvas widget, opened as on ipykernel."""
    pytest.importorskip("ipympl")
    code = ("%matplotlib widget\nimport matplotlib.pyplot as plt\nfig = plt.figure(figsize=(3, 2))\n"
            "plt.plot([1, 3, 2])\nplt.show()")
    found = {}
    for name, (reply, outputs) in both(kernels, code).items():
        opened = {m["content"]["data"]["state"].get("_model_name"): m["content"] for m in outputs
                  if m["msg_type"] == "comm_open"}
        canvas = opened.get("MPLCanvasModel") or {}
        views = [m["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for m in outputs
                 if m["msg_type"] in ("display_data", "execute_result")
                 and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
        found[name] = (reply["status"], canvas.get("target_name"), canvas.get("data", {}).get("state", {}).get(
            "_model_module"), sorted(canvas.get("data", {}).get("state", {})), sorted(opened),
            views == [canvas.get("comm_id")], text_of(outputs, "stderr"))
        # back to inline figures: an image again
        _, outputs = run(kernels[name], "plt.close('all')\n%matplotlib inline\nplt.plot([1, 2])\nplt.show()")
        found[name] += (sorted({m["msg_type"] for m in outputs} - {"status", "execute_input"}),
                        ["image/png" in m["content"]["data"] for m in outputs if m["msg_type"] == "display_data"])
    assert found["remote"] == found["python3"], found
    assert found["python3"][:3] == ("ok", "jupyter.widget", "jupyter-matplotlib") and found["python3"][5]
    assert found["python3"][7:] == (["comm_close", "display_data"], [True])  # the canvas closed, then inline


def test_tqdm_auto_chooses_the_notebook_bar(kernels):
    """`tqdm.auto` picks its notebook bar where it sees a Jupyter kernel with ipywidgets (it looks for
    ipykernel's shell module), as on ipykernel."""
    pytest.importorskip("tqdm")
    code = ("import sys\nkernel_seen = 'ipykernel.zmqshell' in sys.modules\nfrom tqdm.auto import tqdm\n"
            "for _ in tqdm(range(4)): pass\nprint(tqdm.__module__, kernel_seen)")
    found = {}
    for name, (reply, outputs) in both(kernels, code).items():
        bars = [m["content"]["data"]["state"]["max"] for m in outputs if m["msg_type"] == "comm_open"
                and m["content"]["data"]["state"].get("_model_name") == "FloatProgressModel"]
        found[name] = (reply["status"], text_of(outputs, "stdout"), bars)
    assert found["remote"] == found["python3"] == ("ok", "tqdm.auto True\n", [4]), found


@pytest.mark.parametrize("path", ["live", "hosted"])
def test_the_control_comm_of_a_page_opened_before_any_cell_is_answered_as_on_ipykernel(pool, tmp_path, path):
    """A page (re)loaded on a kernel that has run no cell opens ipywidgets' control comm at once and asks
    for the widgets' states: answered as ipykernel answers it (nothing has registered that target yet: the
    comm is closed, with the comm manager's log lines), whether or not a session exists yet."""
    proxy = ContractProxy(pool.endpoint) if path == "hosted" else None
    started = _start(pool, tmp_path, proxy, first_cell=False)
    try:
        found = {}
        for name, (_km, kc) in started.items():
            control = str(uuid.uuid4())
            opened = send_comm(kc, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control",
                                                 "data": {}}, metadata={"version": "1.0.0"})
            asked = send_comm(kc, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
            kc.comm_info(target_name="jupyter.widget.control")
            reply = kc.get_shell_msg(timeout=30)
            while reply["msg_type"] != "comm_info_reply":
                reply = kc.get_shell_msg(timeout=30)
            found[name] = ([m["msg_type"] for m in opened], [m["msg_type"] for m in asked], comm_msgs(asked),
                           reply["content"]["comms"], text_of(opened + asked).replace(control, "<id>"))
        assert found["remote"] == found["python3"], found
        assert found["python3"][:2] == (["stream", "comm_close"], ["stream"])
    finally:
        _stop(started)
        if proxy is not None:
            proxy.close()


def _numbered(text: str, ids: dict[str, str]) -> str:
    """`text` with widget model ids numbered in order of appearance (they differ between kernels)."""
    return MODEL.sub(lambda found: ids.setdefault(found.group(0), f"IPY_MODEL_{len(ids)}"), text)


def test_jslink_and_jsdlink_open_their_link_models(kernels):
    """`jslink`/`jsdlink` link two widgets in the front end: their link models' comms, as on ipykernel,
    and unlinking closes them."""
    code = ("import ipywidgets as w\na, b = w.IntSlider(1), w.IntSlider(2)\nt = w.Text('x')\n"
            "l = w.jslink((a, 'value'), (b, 'value'))\nd = w.jsdlink((a, 'value'), (t, 'value'))\n"
            "w.VBox([a, b, t])")
    found = {}
    for name, kc in kernels.items():
        reply, outputs = run(kc, code)
        ids: dict[str, str] = {}
        opened = [(m["content"]["target_name"], m["content"]["data"]["state"]["_model_name"],
                   _numbered(str(m["content"]["data"]["state"].get("source")), ids),
                   _numbered(str(m["content"]["data"]["state"].get("target")), ids)) for m in outputs
                  if m["msg_type"] == "comm_open"]
        links = [c["comm_id"] for c in (comm_open(outputs, "LinkModel"), comm_open(outputs, "DirectionalLinkModel"))]
        _, closing = run(kc, "l.unlink()\nd.unlink()")
        closed = [m["content"]["comm_id"] for m in closing if m["msg_type"] == "comm_close"]
        found[name] = (reply["status"], [o for o in opened if "Link" in o[1]], closed == links)
    assert found["remote"] == found["python3"], found
    assert [o[1] for o in found["python3"][1]] == ["LinkModel", "DirectionalLinkModel"] and found["python3"][2]


def _until_idle(kc, msg_id: str, timeout: float = 120) -> list[dict]:
    """Every IOPub message (of any parent) up to the idle status of request `msg_id`."""
    import queue

    deadline, found = time.monotonic() + timeout, []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no idle status for {msg_id}") from None
            continue
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                and msg["content"]["execution_state"] == "idle":
            return found
        found.append(msg)


@pytest.mark.parametrize("path", ["live", "hosted"])
def test_a_widget_updated_by_a_thread_between_cells_reaches_the_front_end(pool, tmp_path, path):
    """A session's thread updates a widget after its cell ended (no cell runs): ipykernel publishes the
    update at once; remote-python's session holds it and sends it with its next execution (no request of
    the kernel is open to carry it while the session is idle). Either way the front end gets every update,
    in order, and none is lost."""
    identifier = str(uuid.uuid4())
    proxy = ContractProxy(pool.endpoint) if path == "hosted" else None
    started = _start(pool, tmp_path, proxy, identifier=identifier)
    code = ("import threading, time\nimport ipywidgets as w\ns = w.IntSlider(0)\nended = threading.Event()\n"
            "def work():\n    ended.wait()\n    time.sleep(0.5)  # the execution has returned: no cell runs\n"
            "    s.value = 5\n    s.description = 'from a thread'\n    open('published.txt', 'w').close()\n"
            "get_ipython().events.register('post_run_cell', lambda result: ended.set())\n"
            "threading.Thread(target=work).start()\ns")
    published = {"python3": lambda: (tmp_path / "published.txt").exists(),
                 "remote": lambda: "published.txt" in {entry["name"] for entry in
                                                       pool_get(pool, "files", identifier).json()["value"]}}
    try:
        found = {}
        for name, (_km, kc) in started.items():
            _, outputs = run(kc, code)
            slider = comm_open(outputs, "IntSliderModel")["comm_id"]
            wait_for(published[name], timeout=60, what="the thread's updates")
            msg_id = kc.execute("s.value, s.description")
            seen = _until_idle(kc, msg_id)
            found[name] = ([m["content"]["data"] for m in seen if m["msg_type"] == "comm_msg"
                            and m["content"]["comm_id"] == slider],
                           [m["content"]["data"]["text/plain"] for m in seen if m["msg_type"] == "execute_result"])
        assert found["remote"] == found["python3"], found
        assert found["python3"][0] == [{"method": "update", "state": {"value": 5}, "buffer_paths": []},
                                       {"method": "update", "state": {"description": "from a thread"},
                                        "buffer_paths": []}]
    finally:
        _stop(started)
        if proxy is not None:
            proxy.close()


def test_comm_messages_that_wait_for_a_cell_reach_the_session_in_one_execution(kernels):
    """Front-end messages that arrive while a cell runs (a slider dragged during a long cell): ipykernel
    handles each at once; remote-python delivers them after the cell, all in one execution (counted by the
    session's executions). Each observer's output still has its own message as parent, on both."""
    setup = ("import ipywidgets as w\ns = w.IntSlider(0)\nruns = []\n"
             "get_ipython().events.register('pre_execute', lambda: runs.append(1))\n"
             "s.observe(lambda change: print('now', change['new']), 'value')\ns")
    found, deliveries = {}, {}
    for name, kc in kernels.items():
        reply, outputs = run(kc, setup)
        slider = comm_open(outputs, "IntSliderModel")["comm_id"]
        asking = kc.execute("input('go? ')", allow_stdin=True)
        assert kc.get_stdin_msg(timeout=60)["msg_type"] == "input_request"
        sent = []
        for value in (1, 2, 3):
            msg = kc.session.msg("comm_msg", {"comm_id": slider, "data": {"method": "update",
                                                                          "state": {"value": value},
                                                                          "buffer_paths": []}})
            kc.shell_channel.send(msg)
            sent.append(msg["header"]["msg_id"])
        # the kernel reads them before the answer: no message says when (ipykernel 7 publishes no status for a
        # comm handled during a cell), hence a pause, not a wait
        time.sleep(1)
        kc.input("go")
        seen = _until_idle(kc, asking)
        counting = kc.execute("len(runs)")
        seen += _until_idle(kc, counting)
        # pre_execute runs for every cell and, from the comm package, for every comm message on both kernels:
        # what remote-python counts more are the executions that carried the messages
        deliveries[name] = int([m["content"]["data"]["text/plain"] for m in seen if m["msg_type"] == "execute_result"
                                and m["parent_header"]["msg_id"] == counting][0])
        found[name] = ([(m["content"]["text"], sent.index(m["parent_header"]["msg_id"])) for m in seen
                        if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") in sent],
                       value_of(kc, "s.value"))
    assert found["remote"] == found["python3"], found
    assert found["python3"] == ([("now 1\n", 0), ("now 2\n", 1), ("now 3\n", 2)], "3")
    assert deliveries["remote"] - deliveries["python3"] == 1, deliveries


def test_a_comm_message_handled_beside_a_running_request_gets_its_busy_and_idle(kernels):
    """ipywidgets' front end sends a widget's next change only after the kernel's idle status for the last
    one. A comm message that arrives while a cell or another comm message is being handled gets its own
    busy and idle, after it was handled, as on ipykernel (whose synchronous handlers take messages one at a
    time); without them a page kept every later change of that widget to itself (an `interact` output
    restored after a reload showed an old value)."""
    found = {}
    for name, kc in kernels.items():
        _, outputs = run(kc, "import time\nimport ipywidgets as w\ns, t = w.IntSlider(0), w.IntSlider(0)\n"
                             "s.observe(lambda change: time.sleep(2), 'value')\nw.VBox([s, t])")
        slow, other = [m["content"]["comm_id"] for m in outputs if m["msg_type"] == "comm_open"
                       and m["content"]["data"]["state"].get("_model_name") == "IntSliderModel"]
        sent = {}
        cell = kc.execute("time.sleep(3)")
        time.sleep(1)  # the cell runs: the next message comes beside it
        for label, comm_id, value in (("beside a cell", other, 1), ("first", slow, 2), ("beside a comm", other, 3)):
            msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"method": "update",
                                                                           "state": {"value": value},
                                                                           "buffer_paths": []}})
            kc.shell_channel.send(msg)
            sent[msg["header"]["msg_id"]] = label
            if label == "beside a cell":
                _until_idle(kc, cell)
        last = kc.execute("t.value")
        seen = _until_idle(kc, last)
        seen = [m for m in seen if m["parent_header"].get("msg_id") in sent]
        while not [m for m in seen if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                   and sent[m["parent_header"]["msg_id"]] == "beside a comm"]:
            try:
                msg = kc.get_iopub_msg(timeout=30)
            except Exception:
                break
            if msg["parent_header"].get("msg_id") in sent:
                seen.append(msg)
        found[name] = {label: [m["msg_type"] if m["msg_type"] != "status" else m["content"]["execution_state"]
                               for m in seen if sent[m["parent_header"]["msg_id"]] == label]
                       for label in sent.values()}
    assert found["remote"] == found["python3"], found
    assert found["python3"]["beside a comm"] == ["busy", "comm_msg", "idle"]
