"""The remote-javascript kernel on its embedded NodeLTS pool: jupyter_kernel_test and the notebook."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import jupyter_kernel_test
import nbformat
import pytest
from nbclient import NotebookClient

from kernel_support import ROOT, embedded_env

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
        assert "embedded local pool" in shown and "session:               active" in shown, shown
        reply, output_msgs = self.execute_helper("%rm numbers.json\nfs.existsSync('/mnt/data/numbers.json')")
        results = [m["content"]["data"]["text/plain"] for m in output_msgs if m["msg_type"] == "execute_result"]
        assert results == ["false"]


@pytest.mark.skipif(shutil.which("node") is None, reason=NO_NODE)
def test_javascript_notebook_runs_with_nbclient(monkeypatch, tmp_path):
    install_javascript_kernelspec()
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_TOKEN", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_IDENTIFIER"):
        monkeypatch.delenv(name, raising=False)
    book = nbformat.read(ROOT / "notebooks" / "javascript.ipynb", as_version=4)
    assert book.metadata.kernelspec.name == KERNEL_NAME
    NotebookClient(book, kernel_name=KERNEL_NAME, timeout=120, startup_timeout=60,
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
