"""Notebook parity (issue 14): the same cell on ipykernel and on remote-python, compared.

Both kernels start in the same fresh folder, ipykernel with its interpreter's bin folder first on PATH (a
kernel started from an activated environment), remote-python on the test pool.
"""
from __future__ import annotations

import os
import re
import sys
import time
import uuid

import pytest
from kernel_support import (
    embedded_env,
    errors_of,
    install_kernelspec,
    pool_env,
    result_of,
    run,
    start_new_kernel,
    text_of,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CELL_FILE = re.compile(r"/tmp/ipykernel_\d+/\d+\.py")  # a cell's file name: the process and the hash differ


@pytest.fixture(scope="module")
def kernels(pool, tmp_path_factory):
    """{"python3": kc, "remote": kc}, both started in the same fresh folder; and that folder."""
    install_kernelspec()
    folder = tmp_path_factory.mktemp("notebook")
    local_env = {**embedded_env(), "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
                 "SHELL": "/bin/bash"}  # a user's terminal (ipykernel's `!` commands run under it)
    started = {}
    try:
        started["python3"] = start_new_kernel(kernel_name="python3", env=local_env, cwd=str(folder),
                                              startup_timeout=60)
        started["remote"] = start_new_kernel(kernel_name="remote-python", env=pool_env(pool, str(uuid.uuid4())),
                                             cwd=str(folder), startup_timeout=60)
        for name, (_km, kc) in started.items():
            reply, _ = run(kc, "pass")
            assert reply["status"] == "ok", (name, reply)
        yield {name: kc for name, (km, kc) in started.items()}, folder
    finally:
        for km, kc in started.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def both(kernels, code: str, **options) -> dict:
    """{"python3": (reply, outputs), "remote": (reply, outputs)} for the same cell."""
    clients, _ = kernels
    return {name: run(kc, code, **options) for name, kc in clients.items()}


def results(answers: dict) -> dict:
    return {name: (reply["status"], result_of(outputs)) for name, (reply, outputs) in answers.items()}


def test_a_module_written_into_the_working_folder_can_be_imported(kernels):
    found = results(both(kernels, "%%writefile parity_mod.py\nX = 41\n"))
    found = results(both(kernels, "import parity_mod\nparity_mod.X + 1"))
    assert found["remote"] == found["python3"] == ("ok", "42")


def test_the_environment_is_the_interpreters(kernels):
    code = ("import os, sys\n"
            "(sys.stdout.encoding, sys.stderr.encoding, "
            "os.popen('python -c \"import sys; print(sys.prefix)\"').read().strip() == sys.prefix, "
            "os.popen('pip --version').read().split(' from ')[1].startswith(sys.prefix))")
    found = results(both(kernels, code))
    assert found["remote"] == found["python3"] == ("ok", "('UTF-8', 'UTF-8', True, True)")
    # A local kernel inherits $SHELL from the terminal that started it (a CI runner may have
    # none); a session has no terminal, so it names a shell that exists, as a login would.
    shell = results(both(kernels, "import os; os.access(os.environ.get('SHELL', ''), os.X_OK)"))
    assert shell["remote"] == ("ok", "True")
    script = {name: (reply["status"], text_of(outputs).strip()) for name, (reply, outputs)
              in both(kernels, f"%%script python3\nimport sys; print(sys.prefix == {sys.prefix!r})").items()}
    assert script["remote"] == script["python3"] == ("ok", "True")
    timed = {name: re.sub(r"[\d.]+", "N", text_of(outputs)).split(" per loop")[0]
             for name, (reply, outputs) in both(kernels, "%timeit -n1 -r1 sum(range(10))").items()}
    assert timed["remote"] == timed["python3"]  # "N ns ± N ns" (µs or ns, never "+-")


def test_pip_install_without_network_says_so_at_once(kernels):
    clients, _ = kernels
    started = time.monotonic()
    reply, outputs = run(clients["remote"], "%pip install some-package-that-needs-the-network")
    assert reply["status"] == "ok"
    said = text_of(outputs, "stderr")
    assert "no network access" in said and "--egress enabled" in said
    assert time.monotonic() - started < 60  # not pip's retries for every index (a generous bound)


@pytest.mark.parametrize("code", ["len?", "str.split??", "?sorted", "%timeit?", "%quickref", "%pdoc len",
                                  "no_such_thing?"])
def test_help_comes_as_a_pager_payload(kernels, code):
    answers = both(kernels, code)
    shapes = {}
    for name, (reply, outputs) in answers.items():
        pages = [(p["source"], sorted(p["data"]), p.get("start")) for p in reply["payload"]]
        shapes[name] = (reply["status"], pages, [(m["msg_type"], m["content"].get("name")) for m in outputs])
    assert shapes["remote"] == shapes["python3"]
    texts = {name: [p["data"]["text/plain"] for p in reply["payload"]] for name, (reply, _) in answers.items()}
    if code in ("len?", "?sorted", "%pdoc len"):  # no file name or list of magics in these: the same text
        assert texts["remote"] == texts["python3"]
    if code != "no_such_thing?":
        assert "\x1b[" in texts["remote"][0] or code == "%quickref"  # coloured, as ipykernel's


@pytest.mark.parametrize("code", ["import math\nmath.sqrt?", "def g(x):\n    'doc'\n    return x\ng?\nprint('after')",
                                  "print('before')\n%magic", "x = [1]\nx??\nx"])
def test_help_inside_a_cell_of_code_is_a_pager_payload_too(kernels, code):
    answers = both(kernels, code)
    found = {}
    for name, (reply, outputs) in answers.items():
        pages = [(p["source"], sorted(p["data"]), p.get("start"), ANSI.sub("", p["data"]["text/plain"]).split("\n")[0])
                 for p in reply["payload"]]
        found[name] = (reply["status"], pages, [(m["msg_type"], m["content"].get("name"), m["content"].get("text"))
                                               for m in outputs if m["msg_type"] == "stream"])
    assert found["remote"] == found["python3"]
    assert found["remote"][1], "no page"


def test_magic_pages_and_lsmagic_shows_the_session_magics(kernels):
    answers = both(kernels, "%magic")
    pages = {name: reply["payload"] for name, (reply, _) in answers.items()}
    assert [p["source"] for p in pages["remote"]] == [p["source"] for p in pages["python3"]] == ["page"]
    assert pages["remote"][0]["data"]["text/plain"].splitlines()[:3] == \
           pages["python3"][0]["data"]["text/plain"].splitlines()[:3]
    from ipykernel.zmqshell import KernelMagics

    listed = {}
    for name, (_reply, outputs) in both(kernels, "%lsmagic").items():
        text = text_of(outputs) + "".join(m["content"]["data"].get("text/plain", "") for m in outputs
                                          if m["msg_type"] == "execute_result")
        listed[name] = set(re.findall(r"%%?\w+", text))
    only_in_ipykernel = {f"%{name}" for name in KernelMagics.magics["line"]}
    assert listed["python3"] - only_in_ipykernel <= listed["remote"]
    assert {"%upload", "%download", "%files"} <= listed["remote"]


def test_debug_says_it_needs_stdin_as_ipykernel_does(kernels):
    both(kernels, "1 / 0")
    found = {name: (reply["status"], reply.get("ename")) for name, (reply, _)
             in both(kernels, "%debug", allow_stdin=False).items()}
    assert found["remote"] == found["python3"] == ("error", "StdinNotImplementedError")


def test_a_missing_file_that_exists_on_the_kernels_side_names_upload(kernels):
    clients, folder = kernels
    (folder / "parity_data.csv").write_text("a,b\n1,2\n")
    cell = "open('parity_data.csv').read().splitlines()"
    answers = both(kernels, cell)
    assert results(answers)["python3"] == ("ok", "['a,b', '1,2']")
    reply, outputs = answers["remote"]
    assert reply["ename"] == "FileNotFoundError"
    assert "%upload parity_data.csv" in text_of(outputs, "stderr")
    reply, _ = run(clients["remote"], "%upload parity_data.csv")
    assert reply["status"] == "ok"
    found = results(both(kernels, cell))
    assert found["remote"] == found["python3"]
    _, outputs = run(clients["remote"], "open('not_here_either.csv')")
    assert errors_of(outputs)[0]["ename"] == "FileNotFoundError" and "%upload" not in text_of(outputs, "stderr")


def test_a_folder_goes_up_and_comes_back_with_one_progress_display(kernels, tmp_path):
    clients, folder = kernels
    kc = clients["remote"]
    project = folder / "project"
    (project / "sub").mkdir(parents=True)
    (project / "a.csv").write_text("1\n")
    (project / "b.txt").write_text("2\n")
    (project / "sub" / "c.csv").write_text("3\n")
    reply, outputs = run(kc, "%upload project")
    assert reply["status"] == "ok", reply
    assert len({m["content"]["transient"]["display_id"] for m in outputs if "display" in m["msg_type"]}) == 1
    assert "Uploaded 3 files" in text_of(outputs, "stdout")
    tree = ("import os\nsorted(os.path.relpath(os.path.join(d, f), 'project') for d, _, fs in os.walk('project') "
            "for f in fs)")
    found = results(both(kernels, tree))  # ipykernel sees the folder where it is; the session, uploaded
    assert found["remote"] == found["python3"] == ("ok", "['a.csv', 'b.txt', 'sub/c.csv']")

    reply, outputs = run(kc, f"%download project/ {tmp_path / 'back'}")
    assert reply["status"] == "ok", reply
    assert len({m["content"]["transient"]["display_id"] for m in outputs if "display" in m["msg_type"]}) == 1
    back = sorted(str(p.relative_to(tmp_path / "back")) for p in (tmp_path / "back").rglob("*") if p.is_file())
    assert back == ["a.csv", "b.txt", "sub/c.csv"]
    assert (tmp_path / "back" / "sub" / "c.csv").read_text() == "3\n"

    reply, outputs = run(kc, f"%upload '{project}/**/*.csv' csvs/")
    assert reply["status"] == "ok" and "Uploaded 2 files" in text_of(outputs, "stdout"), outputs
    reply, outputs = run(kc, f"%download 'csvs/**/*.csv' {tmp_path / 'pattern'}")
    assert reply["status"] == "ok", outputs
    got = sorted(str(p.relative_to(tmp_path / "pattern")) for p in (tmp_path / "pattern").rglob("*") if p.is_file())
    assert got == ["a.csv", "sub/c.csv"]
    reply, outputs = run(kc, f"%download 'project/*.txt' {tmp_path / 'txt'}")
    assert reply["status"] == "ok" and (tmp_path / "txt" / "b.txt").read_text() == "2\n", outputs
    reply, outputs = run(kc, "%download 'project/*.nothing'")
    assert reply["ename"] == "RemoteFileNotFound" and "no remote file matches" in errors_of(outputs)[0]["evalue"]


def test_tracebacks_are_coloured_as_ipykernels_without_frames_of_the_worker(kernels):
    cell = "import sys\nprint('before', file=sys.stderr)\ndef f():\n    x = 1\n\n    return 1 / 0\n\nf()"
    shown = {}
    for name, (reply, outputs) in both(kernels, cell).items():
        error = errors_of(outputs)[0]
        # the same text as JupyterLab joins it, but for the prompt number (issue 14 item 2 is elsewhere)
        shown[name] = (reply["ename"], text_of(outputs, "stderr"),
                       re.sub(r"In\[\d+\]", "In[N]", "\n".join(error["traceback"]).rstrip("\n")))
    # the same text and colours as ipykernel (under IPython 9 too, now that the cell's frames are formatted alike)
    assert shown["remote"][:2] == shown["python3"][:2]
    assert ANSI.sub("", shown["remote"][2]) == ANSI.sub("", shown["python3"][2])
    assert shown["remote"][2] == shown["python3"][2]
    assert ANSI.search(shown["remote"][2]) and "ZeroDivisionError" in shown["remote"][2]
    clients, _ = kernels
    reply, outputs = run(clients["remote"], "input('name? ')", allow_stdin=False)
    frames = "\n".join(errors_of(outputs)[0]["traceback"])
    assert "input(" in ANSI.sub("", frames) and "python_worker" not in frames


@pytest.mark.parametrize("code", ["1/0", "%time 1/0", "raise SystemExit(3)", "%config NoSuchThing.x = 1\n1/0"])
def test_a_failed_cell_answers_with_ipykernels_reply_keys_and_outputs(kernels, code):
    found = {}
    for name, (reply, outputs) in both(kernels, code).items():
        error = errors_of(outputs)[0]
        found[name] = (sorted(set(reply) - {"engine_info", "execution_count"}), reply["user_expressions"],
                       reply["payload"], sorted((m["msg_type"], m["content"].get("name")) for m in outputs),
                       error["ename"], ANSI.sub("", "\n".join(error["traceback"])).rstrip("\n").split("\n")[-1])
    assert found["remote"] == found["python3"]


def test_widgets_show_as_on_ipykernel(kernels):
    pytest.importorskip("ipywidgets")
    cell = "import ipywidgets\nipywidgets.IntSlider(value=3)"
    answers = both(kernels, cell)
    shown = {name: [sorted(m["content"]["data"]) for m in outputs if m["msg_type"] == "execute_result"]
             for name, (_, outputs) in answers.items()}
    assert shown["remote"] == shown["python3"] == [["application/vnd.jupyter.widget-view+json", "text/plain"]]
    assert "need a comm channel" not in text_of(answers["remote"][1], "stderr")  # comms reach the session (issue 24)


def test_past_the_output_cap_the_head_and_the_last_line_are_kept(kernels):
    code = ("for i in range(25000):\n"
            "    print(f'line {i:05d} ' + 'x' * 50)\n"  # 61 bytes a line: 1.5 MB in all
            "print('the answer is 42')")
    found = {name: text_of(outputs, "stdout") for name, (reply, outputs) in both(kernels, code).items()}
    assert found["python3"].endswith("line 24999 " + "x" * 50 + "\nthe answer is 42\n")
    remote = found["remote"]
    assert remote.splitlines()[-1] == found["python3"].splitlines()[-1] == "the answer is 42"
    assert remote.startswith(found["python3"][:4096])
    assert len(remote.encode()) <= (1 << 20) + 400
    head, marker, tail = re.fullmatch(r"(.*?\n)(\[output truncated: [^\n]*\]\n)(.*)", remote, re.S).groups()
    left_out = int(re.match(r"\[output truncated: (\d+) bytes left out", marker)[1])
    assert len(head.encode()) + left_out + len(tail.encode()) == len(found["python3"].encode())
    assert found["python3"].startswith(head) and found["python3"].endswith(tail)  # whole lines, none changed
    assert "%download" in marker


@pytest.mark.parametrize("code", ["input('name? ')", "import getpass; getpass.getpass()"])
def test_input_without_stdin_raises_what_ipykernel_raises(kernels, code):
    found = {name: (reply["status"], reply.get("ename"), [e["ename"] for e in errors_of(outputs)],
                    reply.get("evalue", "").split(" (")[0].rstrip("."))
             for name, (reply, outputs) in both(kernels, code, allow_stdin=False).items()}
    assert found["remote"] == found["python3"]
    assert found["python3"][:3] == ("error", "StdinNotImplementedError", ["StdinNotImplementedError"])
    assert found["python3"][3].endswith("was called, but this frontend does not support input requests")


@pytest.mark.parametrize("code", ["%no_such_magic", "%timeit -x 1", "%%no_such_cell_magic\nx", "%reset -x"])
def test_a_magics_usage_error_fails_the_cell_as_on_ipykernel(kernels, code):
    found = {name: (reply["status"], reply.get("ename"), reply.get("evalue"),
                    [(m["msg_type"], m["content"].get("name"), m["content"].get("text")) for m in outputs])
             for name, (reply, outputs) in both(kernels, code).items()}
    assert found["remote"] == found["python3"]
    assert found["python3"][:2] == ("error", "UsageError")


def test_a_plotly_figure_shows_once_as_on_ipykernel(kernels):
    pytest.importorskip("plotly")
    code = "import plotly.graph_objects as go\ngo.Figure(go.Bar(y=[1, 2]))"
    found = {name: [(m["msg_type"], sorted(m["content"].get("data", {}))) for m in outputs
                    if m["msg_type"] != "stream" or m["content"]["name"] != "stderr"]
             for name, (reply, outputs) in both(kernels, code).items()}
    assert found["remote"] == found["python3"]
    assert [kind for kind, _ in found["python3"]] == ["display_data"]
    # the same bundle for the figure itself
    data = {name: [m["content"]["data"] for m in outputs if m["msg_type"] == "display_data"][0]
            for name, (reply, outputs) in both(kernels, "go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))").items()}
    assert data["remote"] == data["python3"]


# --- a value whose formatting fails (issue 23, finding 15) ---------------------------------------

FAILING_VALUES = {
    "repr raises": "class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nBad()",
    "int past the digits limit": "10**5000",
    "int past the limit inside a list": "[1, 10**5000]",
    "repr raises KeyboardInterrupt": "class Bad:\n    def __repr__(self):\n        raise KeyboardInterrupt\nBad()",
    "repr raises SystemExit": "class Bad:\n    def __repr__(self):\n        raise SystemExit(3)\nBad()",
    "only _repr_html_ raises": ("class Bad:\n    def _repr_html_(self):\n        raise ValueError('no html')\n"
                                "    def __repr__(self):\n        return 'plain text'\nBad()"),
    "_repr_mimebundle_ raises": ("class Bad:\n    def _repr_mimebundle_(self, include=None, exclude=None):\n"
                                 "        raise LookupError('no bundle')\n    def __repr__(self):\n"
                                 "        return 'plain text'\nBad()"),
    "_ipython_display_ raises": "class Bad:\n    def _ipython_display_(self):\n        raise TypeError('no show')\nBad()",
    "a formatter of the wrong type": ("class Bad:\n    def _repr_html_(self):\n        return 42\n"
                                      "    def __repr__(self):\n        return 'plain text'\nBad()"),
    "a registered text formatter raises": ("class Bad:\n    pass\nget_ipython().display_formatter.formatters"
                                           "['text/plain'].for_type(Bad, lambda o, p, c: 1 / 0)\nBad()"),
}
ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def verdict(outputs: list[dict]) -> list[tuple]:
    """What a cell showed, streams aside: each error's name and each result's text (addresses masked)."""
    return [(m["msg_type"], m["content"]["ename"]) if m["msg_type"] == "error"
            else (m["msg_type"], ADDRESS.sub(" at 0x", m["content"]["data"].get("text/plain", "")))
            for m in outputs if m["msg_type"] != "stream"]


@pytest.mark.parametrize("case", sorted(FAILING_VALUES))
def test_a_value_whose_formatting_fails_shows_the_error_as_on_ipykernel_and_keeps_the_session(kernels, case):
    both(kernels, "kept = 41")
    found = {name: (reply["status"], verdict(outputs)) for name, (reply, outputs)
             in both(kernels, FAILING_VALUES[case]).items()}
    after = results(both(kernels, "kept + 1"))
    assert found["remote"] == found["python3"], case
    assert after["remote"] == after["python3"] == ("ok", "42")  # the session, and its variables, are kept


DISPLAYED = {
    "repr raises": "class Bad:\n    def __repr__(self):\n        raise RuntimeError('no repr')\n",
    "only _repr_html_ raises": ("class Bad:\n    def _repr_html_(self):\n        raise ValueError('no html')\n"
                                "    def __repr__(self):\n        return 'plain text'\n"),
    "_repr_png_ raises": ("class Bad:\n    def _repr_png_(self):\n        raise OSError('no png')\n"
                          "    def __repr__(self):\n        return 'plain text'\n"),
    "_repr_mimebundle_ raises": ("class Bad:\n    def _repr_mimebundle_(self, include=None, exclude=None):\n"
                                 "        raise LookupError('no bundle')\n    def __repr__(self):\n"
                                 "        return 'plain text'\n"),
}


@pytest.mark.parametrize("case", sorted(DISPLAYED))
def test_display_of_a_value_whose_formatting_fails_goes_on_as_on_ipykernel(kernels, case):
    """ipykernel shows a display's formatter traceback as an error output, and the cell goes on (status ok)."""
    both(kernels, "kept = 41")
    code = DISPLAYED[case] + "display(Bad())\nprint('after')"
    found = {name: (reply["status"], verdict(outputs), text_of(outputs, "stdout")) for name, (reply, outputs)
             in both(kernels, code).items()}
    after = results(both(kernels, "kept + 1"))
    assert found["remote"] == found["python3"], case
    assert found["python3"][0] == "ok" and found["python3"][2] == "after\n"
    assert after["remote"] == after["python3"] == ("ok", "42")


# --- issue 25: files beside the notebook, stream order, counters, pandas, figures, the session's environment ---


def session_magic(kernels, line: str) -> None:
    clients, _ = kernels
    reply, outputs = run(clients["remote"], line)
    assert reply["status"] == "ok", outputs


def test_files_beside_the_notebook_are_seen_as_ipykernel_sees_them(kernels):
    _, folder = kernels
    (folder / "files25").mkdir()
    (folder / "files25" / "heights.csv").write_text("name,height\nada,170\n")
    (folder / "pkg25").mkdir()
    (folder / "pkg25" / "__init__.py").write_text("VALUE = 7\n")
    (folder / "table25.dat").write_text("1 2\n3 4\n")
    (folder / ".hidden25").write_text("secret\n")
    cells = ["open('files25/heights.csv').read()", "import pkg25\npkg25.VALUE",
             "import numpy as np\nnp.loadtxt('table25.dat').sum()", "!head -1 files25/heights.csv",
             "import os\nos.path.exists('.hidden25')"]
    before = {code: results(both(kernels, code)) for code in cells[:3]}
    for code, found in before.items():  # off by default: the session lacks them, and the hint names the setting
        assert found["python3"][0] == "ok" and found["remote"][0] == "error", (code, found)
    clients, _ = kernels
    _, outputs = run(clients["remote"], "!ls files25")
    assert "%session files notebook" in text_of(outputs, "stderr")
    for code in cells[:4]:
        _, outputs = run(clients["remote"], code)
        assert "%session files notebook" in text_of(outputs, "stderr"), (code, outputs)
    session_magic(kernels, "%session files notebook")
    try:
        for code in cells:
            answers = both(kernels, code)
            found = {name: (reply["status"], result_of(outputs), text_of(outputs)) for name, (reply, outputs)
                     in answers.items()}
            if "hidden25" in code:
                assert found["remote"][:2] == ("ok", "False")  # hidden files stay on the user's side
            else:
                assert found["remote"] == found["python3"], code
        (folder / "files25" / "heights.csv").write_text("name,height\nbob,180\n")  # changed here: seen there
        found = results(both(kernels, cells[0]))
        assert found["remote"] == found["python3"] == ("ok", repr("name,height\nbob,180\n"))
        (folder / "table25.dat").unlink()  # deleted here: gone there
        assert results(both(kernels, "import os\nos.path.exists('table25.dat')"))["remote"] == ("ok", "False")
        # what the session writes does not come back
        results(both(kernels, "open('written25.txt', 'w').write('x')"))
        assert (folder / "written25.txt").exists()  # ipykernel's, in the same folder
    finally:
        session_magic(kernels, "%session files off")


def streams_of(outputs: list[dict]) -> list[tuple[str, str]]:
    """The cell's streams in order, neighbouring text of one stream joined."""
    found: list[tuple[str, str]] = []
    for m in outputs:
        if m["msg_type"] == "stream":
            name, text = m["content"]["name"], m["content"]["text"]
            found[-1:] = [(name, found[-1][1] + text)] if found and found[-1][0] == name else found[-1:] + [(name, text)]
    return found


@pytest.mark.parametrize("code", [
    "import sys\nprint('a', flush=True); print('b', file=sys.stderr, flush=True); print('c', flush=True)",
    "import sys, time\nprint('x', flush=True)\ntime.sleep(1.5)\nprint('d'); print('e', file=sys.stderr); print('f')",
    "import sys\nprint('before')\nsys.stderr.write('careful\\n')\nprint('after', end='')\n"
    "sys.stderr.write('no newline')\nprint('!')\n1/0",
    "import sys\nprint('a'); print('b', file=sys.stderr, flush=True); print('c', flush=True)",
    "import sys\nsys.stderr.write('e1'); print('a', flush=True); print('b', file=sys.stderr)",
    "import logging\nprint('one')\nlogging.getLogger('x').warning('two')\nprint('three', flush=True)",
    "import sys\nfrom IPython.display import display\nprint('a')\nsys.stderr.write('b\\n')\ndisplay('c')\nprint('d')",
])
def test_stdout_and_stderr_arrive_in_the_order_ipykernel_flushes_them(kernels, code):
    """ipykernel shows a stream's text when it is flushed (print(flush=True), logging, a display, 0.2 s after
    an unflushed write, the cell's end: stdout first): the same order here."""
    found = {name: [(m["msg_type"], m["content"].get("name")) if m["msg_type"] != "stream" else m
                    for m in outputs] for name, (reply, outputs) in both(kernels, code).items()}
    found = {name: streams_of([m for m in shown if isinstance(m, dict)]) for name, shown in found.items()}
    found = {name: [(stream, CELL_FILE.sub("<cell>", text)) for stream, text in shown] for name, shown in found.items()}
    assert found["remote"] == found["python3"]
    assert len(found["python3"]) >= 2


@pytest.mark.parametrize("code", [
    "x = 1+1; x",
    "print('a')\n1+1",
    "import sys\nprint('a')\nsys.stdout.write('b')\n'v'",
    "import sys\nsys.stderr.write('e')\n[1, 2]",
    "import time\nprint('a')\ntime.sleep(0.3)\n1+1",
])
def test_what_a_cell_wrote_comes_before_its_value_as_on_ipykernel(kernels, code):
    """ipykernel flushes both streams before it sends the cell's value; the plain value's place in the session
    needs no flush of its own (its text travels in the answer). One stream per cell: which of stdout and stderr
    ipykernel sends first, when both wait, varies on a loaded machine."""
    found = {}
    for name, (reply, outputs) in both(kernels, code).items():
        shown: list[tuple[str, str]] = []
        for m in outputs:
            if m["msg_type"] == "stream":
                stream, text = m["content"]["name"], m["content"]["text"]
                if shown and shown[-1][0] == stream:
                    shown[-1] = (stream, shown[-1][1] + text)
                else:
                    shown.append((stream, text))
            elif m["msg_type"] == "execute_result":
                shown.append(("value", m["content"]["data"]["text/plain"]))
        found[name] = (reply["status"], shown)
    assert found["remote"] == found["python3"]
    assert found["python3"][1][-1][0] == "value"


@pytest.mark.parametrize("between", ["%lsmagic", "len?", "%lsmagic\n%lsmagic", "%pdoc len"])
def test_the_sessions_counter_matches_the_prompt_after_cells_the_kernel_answers(kernels, between):
    clients, _ = kernels
    found = {}
    for name, kc in clients.items():
        run(kc, between)
        reply, _ = run(kc, "40 + 2")
        n = reply["execution_count"]
        _, outputs = run(kc, f"Out[{n}], _i{n}, In[{n}], In[{n - 1}]")
        reply, outputs_error = run(kc, "1/0")
        where = re.search(r"Cell In\[(\d+)\]", ANSI.sub("", "\n".join(errors_of(outputs_error)[0]["traceback"])))
        found[name] = (result_of(outputs), int(where.group(1)) - reply["execution_count"])
    assert found["remote"] == found["python3"]
    assert found["python3"][1] == 0 and found["python3"][0].startswith("(42,")


def test_pandas_shows_wide_frames_as_in_a_notebook(kernels):
    pytest.importorskip("pandas")
    code = ("import pandas as pd\n"
            "wide = pd.DataFrame([[i * j for j in range(25)] for i in range(3)], columns=[f'c{j}' for j in range(25)])\n"
            "print(pd.get_option('display.max_columns'), pd.io.formats.console.get_console_size())\n"
            "print(wide)\nwide")
    found = {name: (reply["status"], text_of(outputs, "stdout"),
                    [m["content"]["data"] for m in outputs if m["msg_type"] == "execute_result"])
             for name, (reply, outputs) in both(kernels, code).items()}
    assert found["remote"] == found["python3"]
    assert found["python3"][1].startswith("20 (80, 60)")


def outputs_text(outputs: list[dict]) -> str:
    """Streams, results and errors of a cell as one text, without colours or prompt numbers."""
    parts = []
    for m in outputs:
        content = m["content"]
        if m["msg_type"] == "stream":
            parts.append(content["text"])
        elif m["msg_type"] == "error":
            parts.append("\n".join(content["traceback"]))
        elif "data" in content:
            parts.append(content["data"].get("text/plain", ""))
    return re.sub(r"In\[\d+\]", "In[N]", ANSI.sub("", "".join(parts))).replace("\r\n", "\n")


@pytest.mark.parametrize("code", [
    "!echo ${BASH_VERSION:+bash}",  # `!` commands run under bash, as a local kernel's do
    "import json\njson.loads('{')",  # library frames shortened with ~ against the user's home, not the session's
    "1 +",  # a SyntaxError names the cell's file as ipykernel names it
    "def f(:\n    pass",
])
def test_the_sessions_environment_reads_as_a_local_kernels(kernels, code):
    found = {name: (reply["status"], outputs_text(outputs).rstrip("\n"), reply.get("evalue"))
             for name, (reply, outputs) in both(kernels, code).items()}
    assert found["remote"] == found["python3"]


def test_cores_are_counted_as_on_the_host(kernels):
    import shutil

    if shutil.which("lscpu") is None:
        pytest.skip("no lscpu here")
    code = "!lscpu --parse=core | grep -v '#' | sort -u | wc -l"  # what joblib/loky count physical cores with
    found = {name: (reply["status"], outputs_text(outputs).strip()) for name, (reply, outputs) in both(kernels, code).items()}
    assert found["remote"] == found["python3"]
    assert int(found["python3"][1]) >= 1


def test_pip_install_of_an_installed_package_says_so_without_network(kernels):
    code = "%pip install numpy"
    found = {name: (reply["status"], [line for line in outputs_text(outputs).splitlines()
                                      if line.startswith(("Requirement", "Note"))])
             for name, (reply, outputs) in both(kernels, code).items()}
    assert found["remote"] == found["python3"]
    assert found["python3"][1][0].startswith("Requirement already satisfied: numpy")


def test_an_exception_whose_str_raises_system_exit_fails_the_cell_as_on_ipykernel(kernels):
    """IPython records the error but its traceback printing raises: ipykernel still answers status error."""
    both(kernels, "kept = 41")
    code = "class Odd(Exception):\n    def __str__(self):\n        raise SystemExit(2)\nraise Odd()"
    found = {name: (reply["status"], reply.get("ename")) for name, (reply, outputs) in both(kernels, code).items()}
    after = results(both(kernels, "kept + 1"))
    assert found["remote"] == found["python3"] == ("error", "SystemExit")
    assert after["remote"] == after["python3"] == ("ok", "42")


def shapes(outputs: list[dict]) -> list[tuple]:
    """What a cell showed, by kind: stream names, MIME types, error names (not the image bytes)."""
    found = []
    for m in outputs:
        content = m["content"]
        if m["msg_type"] == "stream":
            found.append(("stream", content["name"], HEX_ADDRESS.sub("0x…", content["text"])))
        elif m["msg_type"] == "error":
            found.append(("error", content["ename"], content["evalue"]))
        elif "data" in content:
            found.append((m["msg_type"], sorted(content["data"]), content["data"].get("text/plain")))
    return found


HEX_ADDRESS = re.compile(r"0x[0-9a-f]{6,16}")


def test_matplotlib_figures_show_as_on_ipykernel(kernels):
    pytest.importorskip("matplotlib")
    pytest.importorskip("matplotlib_inline")
    cells = ["%config InlineBackend.figure_format = 'svg'", "import matplotlib.pyplot as plt\nplt.plot([1, 2]);",
             "plt.figure()",  # no Axes: its text only
             "%config InlineBackend.figure_format = 'png'", "plt.plot([3]); plt.show(); print('after')",
             "plt.rcParams['text.usetex'] = True\nplt.plot([1]); plt.title('x');",  # drawing fails (no latex here)
             "plt.rcParams['text.usetex'] = False\nimport matplotlib\nmatplotlib.use('svg')\nplt.plot([1]);\n"
             "plt.savefig('parity_figure.svg')",  # another backend: no figure shown at the end
             "matplotlib.use('agg')\nplt.plot([2]);",
             "plt.close('all')\nmatplotlib.use('module://matplotlib_inline.backend_inline')"]
    import shutil

    for code in cells:
        if "usetex" in code and shutil.which("latex"):
            continue  # the drawing would not fail
        found = {name: (reply["status"], shapes(outputs)) for name, (reply, outputs) in both(kernels, code).items()}
        assert found["remote"] == found["python3"], code


def test_a_new_session_counts_from_the_prompt_not_from_one(kernels):
    clients, _ = kernels
    kc = clients["remote"]
    reply, _ = run(kc, "%session new")  # the session's shell starts again at 1; the prompt goes on
    assert reply["status"] == "ok"
    reply, outputs = run(kc, "40 + 2")
    n = reply["execution_count"]
    _, outputs = run(kc, f"Out[{n}], _i{n}")
    assert result_of(outputs) == "(42, '40 + 2')"
