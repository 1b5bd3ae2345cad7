"""The remote-javascript kernel on its embedded NodeLTS pool: jupyter_kernel_test and the notebook."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

import jupyter_kernel_test
import nbformat
import pytest
from conftest import start_pool
from kernel_support import ROOT, ContractProxy, IpcKernelManager, collect, embedded_env, kernel, pool_env, run, wait_for
from nbclient import NotebookClient

from remote_kernel.kernel.javascript import INTERRUPTED

KERNEL_NAME = "remote-javascript"
NO_NODE = "Node.js is not installed (install nodejs, version 18 or later)"
_SPEC_ROOT: Path | None = None


def install_javascript_kernelspec() -> Path:
    """Install remote-javascript with `remote-kernel install --prefix` into a temp dir on JUPYTER_PATH (once)."""
    global _SPEC_ROOT
    if _SPEC_ROOT is None:
        prefix = Path(tempfile.mkdtemp(prefix="rk-js-spec-"))
        subprocess.run([sys.executable, "-m", "remote_kernel", "install", "--language", "javascript",
                        "--prefix", str(prefix)], check=True, capture_output=True, cwd=ROOT)
        _SPEC_ROOT = prefix / "share" / "jupyter"
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(_SPEC_ROOT), os.environ.get("JUPYTER_PATH")]))
    return _SPEC_ROOT


@unittest.skipIf(shutil.which("node") is None, NO_NODE)
class RemoteJavaScriptKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "javascript"
    file_extension = ".js"

    code_hello_world = "console.log('hello, world')"
    code_stderr = "console.error('careful')"
    code_generate_error = "throw new Error('this cell fails')"
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": "'a' + 'b'", "result": "'ab'"},
        {"code": "[1, 2, 3]", "result": "[ 1, 2, 3 ]"},
        {"code": "({ a: 1 })", "result": "{ a: 1 }"},
        {"code": "new Map([[1, 2]])", "result": "Map(1) { 1 => 2 }"},
    ]
    completion_samples = [
        {"text": "Math.flo", "matches": {"floor"}},
        {"text": "set_in_the_sess", "matches": {"set_in_the_session"}},  # the remote context answers
        {"text": "JSON.str", "matches": {"stringify"}},
    ]
    code_inspect_sample = "path.join"
    complete_code_samples = ["1", "console.log('hello, world')", "function f(x) {\n  return x * 2\n}",
                             "const re = /[(]/ // an open bracket in a regex and a comment: don't count",
                             "%files"]
    incomplete_code_samples = ["function f(x) {", "const s = `a ${b", "call(1,\n  2", "/* open comment", "x ="]
    invalid_code_samples = ["})", "let s = 'cut\n'", "f(1]"]

    @classmethod
    def setUpClass(cls) -> None:
        install_javascript_kernelspec()
        saved, env = dict(os.environ), embedded_env()
        os.environ.clear()
        os.environ.update(env)
        try:
            super().setUpClass()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        # the first cell waits for the embedded pool to start
        reply = cls.kc.execute_interactive("let set_in_the_session = 1", timeout=120, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply

    def execute_helper(self, code, timeout=60, silent=False, store_history=True, stop_on_error=True):
        return super().execute_helper(code, timeout=timeout, silent=silent, store_history=store_history,
                                      stop_on_error=stop_on_error)

    def test_kernel_info_names_javascript(self):
        self.flush_channels()
        msg_id = self.kc.kernel_info()
        info = self.kc.get_shell_msg(timeout=10)["content"]
        assert info["language_info"]["name"] == "javascript"
        assert info["language_info"]["file_extension"] == ".js"
        assert info["language_info"]["codemirror_mode"] == "javascript"
        assert msg_id

    def test_error_reply_carries_the_javascript_error(self):
        self.flush_channels()
        reply, output_msgs = self.execute_helper("null.property")
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "TypeError"
        assert "Cannot read properties of null" in reply["content"]["evalue"]

    def test_state_persists_between_cells(self):
        self.flush_channels()
        self.execute_helper("let kept = 20; const more = 22")
        reply, output_msgs = self.execute_helper("kept + more")
        results = [m for m in output_msgs if m["msg_type"] == "execute_result"]
        assert results and results[0]["content"]["data"]["text/plain"] == "42"

    def test_user_expressions_are_evaluated_in_the_session(self):
        self.flush_channels()
        msg_id = self.kc.execute("var expressed = [1, 2]", user_expressions={"size": "expressed.length", "bad": "nope.x"})
        reply = self.kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        found = reply["content"]["user_expressions"]
        assert found["size"] == {"status": "ok", "data": {"text/plain": "2"}, "metadata": {}}
        assert found["bad"]["status"] == "error" and found["bad"]["ename"] == "ReferenceError"

    def test_kernel_magics_work_unchanged(self):
        self.flush_channels()
        local = Path(tempfile.mkdtemp(prefix="rk-js-upload-")) / "numbers.json"
        local.write_text("[1, 2, 3]")
        reply, output_msgs = self.execute_helper(
            f"%upload {local}\nJSON.parse(fs.readFileSync('/mnt/data/numbers.json', 'utf8')).length")
        assert reply["content"]["status"] == "ok", reply
        results = [m["content"]["data"]["text/plain"] for m in output_msgs if m["msg_type"] == "execute_result"]
        assert results == ["3"]
        reply, output_msgs = self.execute_helper("%session")
        shown = "".join(str(m["content"].get("text", m["content"].get("data", ""))) for m in output_msgs)
        assert reply["content"]["status"] == "ok"
        assert "embedded local pool" in shown and re.search(r"^session: +active", shown, re.MULTILINE), shown
        reply, output_msgs = self.execute_helper("%rm numbers.json\nfs.existsSync('/mnt/data/numbers.json')")
        results = [m["content"]["data"]["text/plain"] for m in output_msgs if m["msg_type"] == "execute_result"]
        assert results == ["false"]

    def test_console_error_is_a_stderr_stream_apart_from_the_error(self):
        self.flush_channels()
        for code in ("console.error('careful'); throw new Error('boom')",
                     "console.error('careful'); JSON.parse('{')",
                     "console.error('careful'); await null; throw 5"):
            reply, output_msgs = self.execute_helper(code)
            assert reply["content"]["status"] == "error"
            shown = [(m["msg_type"], m["content"].get("name")) for m in output_msgs]
            assert shown == [("stream", "stderr"), ("error", None)], (code, shown)
            assert output_msgs[0]["content"]["text"] == "careful\n"
            assert "careful" not in "\n".join(output_msgs[1]["content"]["traceback"]), code

    def test_an_interrupted_cell_says_so_in_nodes_words(self):
        self.flush_channels()
        for code in ("console.log('started'); while (true) {}",
                     "console.log('started'); await new Promise(() => {})"):
            msg_id = self.kc.execute(code)
            outputs = until_text(self.kc, msg_id, "started")
            self.km.interrupt_kernel()
            reply = self.kc.get_shell_msg(timeout=60)
            outputs += collect(self.kc, msg_id)
            assert reply["content"]["status"] == "error"
            assert (reply["content"]["ename"], reply["content"]["evalue"]) == INTERRUPTED
            assert "KeyboardInterrupt" not in json.dumps([m["content"] for m in outputs])
        reply, output_msgs = self.execute_helper("'still here'")
        assert [m["content"]["data"]["text/plain"] for m in output_msgs if m["msg_type"] == "execute_result"] == [
            "'still here'"]


def until_text(kc, msg_id: str, text: str, timeout: float = 60) -> list[dict]:
    """The request's IOPub outputs, read until a stream shows `text`."""
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while not any(text in m["content"].get("text", "") for m in found if m["msg_type"] == "stream"):
        assert time.monotonic() < deadline, f"{text!r} was not shown within {timeout} s"
        try:
            message = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] not in ("status", "execute_input"):
            found.append(message)
    return found


@pytest.mark.skipif(shutil.which("node") is None, reason=NO_NODE)
def test_an_interrupted_cell_on_a_hosted_style_pool_says_so_in_nodes_words():
    node_pool = start_pool("--container-type", "NodeLTS", "--max-sessions", "4", "--ready-sessions", "1")
    proxy = ContractProxy(node_pool.endpoint)  # the contract only: an interrupt closes the request
    install_javascript_kernelspec()
    try:
        with kernel(pool_env(node_pool, str(uuid.uuid4()), POOL_MANAGEMENT_ENDPOINT=proxy.endpoint),
                    name=KERNEL_NAME) as (km, kc):
            assert run(kc, "1")[0]["status"] == "ok"
            msg_id = kc.execute("fs.writeFileSync('started', '1'); while (true) {}")
            wait_for(lambda: any(path.endswith("/executions") for _, path in proxy.requests[-1:]), what="the execution")
            time.sleep(1)  # the loop runs
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=60)
            outputs = collect(kc, msg_id)
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == INTERRUPTED[0]
            assert "KeyboardInterrupt" not in json.dumps([m["content"] for m in outputs])
    finally:
        proxy.close()
        node_pool.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason=NO_NODE)
def test_javascript_notebook_runs_with_nbclient(monkeypatch, tmp_path):
    install_javascript_kernelspec()
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_TOKEN", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_IDENTIFIER"):
        monkeypatch.delenv(name, raising=False)
    book = nbformat.read(ROOT / "notebooks" / "javascript.ipynb", as_version=4)
    assert book.metadata.kernelspec.name == KERNEL_NAME
    NotebookClient(book, kernel_name=KERNEL_NAME, timeout=120, startup_timeout=60, kernel_manager_class=IpcKernelManager,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    texts = "".join(o.get("text", "") for o in outputs)
    results = [o["data"].get("text/plain") for o in outputs if o.output_type == "execute_result"]
    assert "HELLO!" in texts and "count is now 2" in texts
    assert "{ greeting: 'hello', count: 2 }" in results
    assert "notes.txt is written" in texts and "22" in results  # the $$.done value: the file's size
    assert "'written by a callback'" in results  # read back with a top-level await
    assert (tmp_path / "notes.txt").read_text() == "written by a callback\n"  # %download brought it here
    errors = [o for o in outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "SyntaxError"
    assert "still here after the error, count = 2" in texts
