"""jupyter_kernel_test's conformance suite against remote-python on its embedded pool."""
from __future__ import annotations

import os
import re
import time
import unittest

import jupyter_kernel_test
from kernel_support import embedded_env, install_kernelspec, start_new_kernel


class RemotePythonKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "remote-python"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('careful', file=sys.stderr)"
    code_generate_error = "raise ValueError('this cell fails')"
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": "'a' + 'b'", "result": "'ab'"},
        {"code": "[1, 2, 3]", "result": "[1, 2, 3]"},
    ]
    code_display_data = [
        {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()", "mime": "image/png"},
    ]
    code_page_something = "%upload?"
    code_clear_output = "from IPython.display import clear_output; clear_output()"  # through the rich shim
    #: compared with ipykernel's answer for the same code and cursor (see test_completion)
    completion_codes = ["zi", "collections.Ordered", "set_in_the_sess", "print(ab", "x = obj.al", "obj.", "%ti",
                        "import collections\ncollections.Ordered"]
    code_inspect_sample = "print"
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n", "%upload a.csv"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2", "for i in range(3):"]
    invalid_code_samples = ["import = 7q", "1 +* 2)"]

    @classmethod
    def setUpClass(cls) -> None:
        install_kernelspec()
        saved, env = dict(os.environ), embedded_env()
        os.environ.clear()
        os.environ.update(env)
        try:
            super().setUpClass()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        # the first cell waits for the embedded pool; ipykernel runs the same, for the answers to compare
        cls.local_km, cls.local_kc = start_new_kernel(kernel_name="python3")
        for kc in (cls.kc, cls.local_kc):
            reply = kc.execute_interactive(cls.setup_cell, timeout=120, output_hook=lambda msg: None)
            assert reply["content"]["status"] == "ok", reply
            deadline = time.monotonic() + 120
            while not cls.complete(kc, "zi")["matches"]:  # jedi's first answer takes seconds (on both)
                assert time.monotonic() < deadline, "no completion within 120 s"

    setup_cell = "import collections\nset_in_the_session = 1\nclass C:\n    alpha = 1\n    def alpine(self): pass\nobj = C()"

    @classmethod
    def tearDownClass(cls) -> None:
        cls.local_kc.stop_channels()
        cls.local_km.shutdown_kernel(now=True)
        super().tearDownClass()

    @staticmethod
    def complete(kc, code: str, cursor: int | None = None) -> dict:
        msg_id = kc.complete(code, cursor)
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def test_completion(self):
        """remote-python answers what ipykernel answers for the same code and cursor (IPython 8 or 9)."""
        for code in self.completion_codes:
            with self.subTest(code=code):
                remote, local = self.complete(self.kc, code), self.complete(self.local_kc, code)
                for key in ("status", "matches", "cursor_start", "cursor_end"):
                    self.assertEqual(remote[key], local[key], key)
                self.assertEqual(remote["metadata"].get("_jupyter_types_experimental"),
                                 local["metadata"].get("_jupyter_types_experimental"))
        self.assertIn("set_in_the_session", self.complete(self.kc, "set_in_the_sess")["matches"])

    @staticmethod
    def inspect(kc, code: str, detail_level: int) -> dict:
        msg_id = kc.inspect(code, len(code), detail_level)
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def test_inspection_is_ipykernels_coloured_plain_text(self):
        """Shift+Tab: the same MIME types and the same coloured text as ipykernel (but the cell's file name)."""
        for code, level in (("print", 0), ("obj.alpine", 0), ("obj.alpine", 1), ("collections.OrderedDict", 0),
                            ("no_such_name", 0)):
            with self.subTest(code=code, level=level):
                remote, local = self.inspect(self.kc, code, level), self.inspect(self.local_kc, code, level)
                self.assertEqual((remote["status"], remote["found"]), (local["status"], local["found"]))
                self.assertEqual(sorted(remote["data"]), sorted(local["data"]))
                if local["found"]:
                    cell_file = re.compile(r"(File:\x1b\[[0-9;]*m\s+).*")
                    self.assertEqual(cell_file.sub("", remote["data"]["text/plain"]),
                                     cell_file.sub("", local["data"]["text/plain"]))
                    self.assertIn("\x1b[", remote["data"]["text/plain"])  # coloured, as ipykernel's

    def execute_helper(self, code, timeout=60, silent=False, store_history=True, stop_on_error=True):
        return super().execute_helper(code, timeout=timeout, silent=silent, store_history=store_history,
                                      stop_on_error=stop_on_error)

    def test_kernel_info_advertises_no_debugger_and_no_subshells(self):
        self.flush_channels()
        self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=10)
        assert reply["content"]["supported_features"] == []
        assert reply["content"]["language_info"]["name"] == "python"

    def test_silent_execution_publishes_nothing_and_is_not_counted(self):
        self.flush_channels()
        reply, outputs = self.execute_helper("print('quiet'); 1 + 1", silent=True)
        assert reply["content"]["status"] == "ok" and outputs == []
        first, _ = self.execute_helper("1")
        second, _ = self.execute_helper("2")
        hidden, _ = self.execute_helper("3", store_history=False)
        third, _ = self.execute_helper("4")
        counts = [r["content"]["execution_count"] for r in (first, second, hidden, third)]
        assert counts[1] == counts[0] + 1 and counts[2] == counts[1] and counts[3] == counts[1] + 1

    def test_user_expressions_are_evaluated_in_the_session(self):
        self.flush_channels()
        self.execute_helper("answer = 6 * 7")
        msg_id = self.kc.execute("pass", user_expressions={"a": "answer + 0", "bad": "nope"})
        reply = self.kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        expressions = reply["content"]["user_expressions"]
        assert expressions["a"]["status"] == "ok" and expressions["a"]["data"]["text/plain"] == "42"
        assert expressions["bad"]["status"] == "error" and expressions["bad"]["ename"] == "NameError"

    def test_completion_does_not_count_or_show_in_history(self):
        self.flush_channels()
        before, _ = self.execute_helper("0")
        self.kc.complete("pri", 3)
        assert "print" in self.kc.get_shell_msg(timeout=10)["content"]["matches"]
        after, _ = self.execute_helper("0")
        assert after["content"]["execution_count"] == before["content"]["execution_count"] + 1


if __name__ == "__main__":
    unittest.main()
