"""The kernel's pure parts: configuration, output mapping, magic parsing, is_complete, kernelspecs."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import pytest

from remote_kernel.kernel import outputs, vscode
from remote_kernel.kernel.config import KernelConfig
from remote_kernel.kernel.languages import JAVASCRIPT, PYTHON
from remote_kernel.kernel.magics import MagicError, Progress, files_table, parse_line, split_cell
from remote_kernel.kernel.render import rendered
from remote_kernel.kernelspec import install, spec
from remote_kernel.sessions.models import (
    Execution,
    ExecutionError,
    ExecutionStatus,
    ImageResult,
    PoolFull,
    RemoteAuthenticationError,
    RemoteFile,
    SessionLost,
)

IPYTHON_TRACEBACK = (
    "---------------------------------------------------------------------------\n"
    "ZeroDivisionError                         Traceback (most recent call last)\n"
    "Cell In[3], line 1\n----> 1 1/0\n\nZeroDivisionError: division by zero\n"
)


def failed(stderr: str, name: str = "", message: str = "", stdout: str = "") -> Execution:
    return Execution(id="e", status=ExecutionStatus.FAILED, stdout=stdout, stderr=stderr,
                     error=ExecutionError(name, message))


# --- configuration ------------------------------------------------------------------------------

def test_no_endpoint_means_embedded_pool_with_token_auth_and_fresh_identifier():
    first, second = KernelConfig.from_env({}), KernelConfig.from_env({})
    assert first.embedded and first.auth_mode == "token" and not first.problems
    assert first.identifier != second.identifier and len(first.identifier) == 36
    assert first.api_version == "2025-10-02-preview" and first.timeout == 220 and not first.keep_session


def test_https_endpoint_defaults_to_azure_auth_and_settings_are_read():
    config = KernelConfig.from_env({
        "POOL_MANAGEMENT_ENDPOINT": "https://westus.dynamicsessions.io/subscriptions/s/resourceGroups/r/sessionPools/p/",
        "REMOTE_KERNEL_IDENTIFIER": "my-notebook", "REMOTE_KERNEL_TIMEOUT": "30",
        "REMOTE_KERNEL_KEEP_SESSION": "1", "REMOTE_KERNEL_API_VERSION": "2024-02-02-preview"})
    assert config.auth_mode == "azure" and not config.problems
    assert config.endpoint.endswith("/sessionPools/p") and config.identifier == "my-notebook"
    assert config.timeout == 30 and config.keep_session and not config.jupyter_repr
    assert config.pool_type == "Azure Container Apps session pool"


def test_bad_settings_become_problems_that_say_what_to_fix_and_never_raise():
    config = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "ftp://nowhere", "REMOTE_KERNEL_AUTH": "magic",
                                    "REMOTE_KERNEL_API_VERSION": "1999", "REMOTE_KERNEL_TIMEOUT": "soon",
                                    "REMOTE_KERNEL_IDENTIFIER": "a b"})
    text = "\n".join(config.problems)
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_API_VERSION",
                 "REMOTE_KERNEL_TIMEOUT", "REMOTE_KERNEL_IDENTIFIER"):
        assert name in text


def test_session_description_never_shows_the_token():
    config = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9", "REMOTE_KERNEL_TOKEN": "s3cr3t"})
    assert config.auth_mode == "token"
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.describe())


# --- outputs ------------------------------------------------------------------------------------

def test_stdout_stderr_and_value_become_streams_and_one_execute_result():
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout="hi\n", stderr="careful\n",
                          result=42, has_result=True)
    messages, err = rendered(execution, 7)
    assert err is None
    assert messages == [("stream", {"name": "stdout", "text": "hi\n"}),
                        ("stream", {"name": "stderr", "text": "careful\n"}),
                        ("execute_result", {"execution_count": 7, "data": {"text/plain": "42"}, "metadata": {}})]


def test_values_show_like_python_and_none_shows_nothing():
    def shown(value, jupyter=False):
        execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, result=value, has_result=True)
        messages, _ = rendered(execution, 1, jupyter_repr=jupyter)
        return [m[1]["data"]["text/plain"] for m in messages]

    assert shown("a") == ["'a'"] and shown([1, "x"]) == ["[1, 'x']"] and shown(None) == []
    assert shown("array([1, 2])", jupyter=True) == ["array([1, 2])"] and shown("", jupyter=True) == []
    js = Execution(id="e", status=ExecutionStatus.SUCCEEDED, result={"a": True}, has_result=True)
    assert rendered(js, 1, format_value=JAVASCRIPT.format_value)[0][0][1]["data"]["text/plain"] == '{"a": true}'


def test_a_truncated_stream_shows_its_tail_after_the_live_text_whatever_was_shown_live():
    head, tail = "".join(f"line {i}\n" for i in range(10)), "line 98\nline 99\n"
    marker = "[output truncated: 500 bytes left out here (the first 70 and the last 16 are shown). Get all of it.]\n"
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, stdout=head + marker + tail)

    def shown(fed: str) -> str:
        messages, _ = rendered(execution, 1, fed=(("stdout", fed),))
        return "".join(m[1]["text"] for m in messages if m[0] == "stream")

    assert shown(head[:20]) == head + marker + tail  # the live route: what was fed is the head's start
    # a live log capped on its own showed more than the head: the rest is the marker and the tail
    assert shown(head + "".join(f"line {i}\n" for i in range(10, 40))) == head + "".join(
        f"line {i}\n" for i in range(10, 40)) + marker + tail


def test_no_trailing_expression_gives_no_execute_result():
    messages, _ = rendered(Execution(id="e", status=ExecutionStatus.SUCCEEDED, result=None), 1)
    assert messages == []


def test_image_becomes_display_data_png():
    execution = Execution(id="e", status=ExecutionStatus.SUCCEEDED, image=ImageResult("png", b"\x89PNG"))
    (msg_type, content), = rendered(execution, 1)[0]
    assert msg_type == "display_data" and content["data"]["image/png"] == "iVBORw==" and "text/plain" in content["data"]


def test_failure_is_exactly_one_error_with_parsed_name_and_kept_traceback():
    messages, err = rendered(failed(IPYTHON_TRACEBACK), 1)
    assert messages == [err]
    assert err[1]["ename"] == "ZeroDivisionError" and err[1]["evalue"] == "division by zero"
    assert "----> 1 1/0" in err[1]["traceback"]


def test_stderr_written_before_a_failure_stays_a_stream():
    messages, err = rendered(failed("warned\n" + IPYTHON_TRACEBACK, "ZeroDivisionError",
                                                "division by zero", stdout="out\n"), 1)
    assert [m[0] for m in messages] == ["stream", "stream", "error"]
    assert messages[1][1] == {"name": "stderr", "text": "warned\n"}


def test_plain_python_traceback_and_failure_without_any_text_still_have_a_traceback_line():
    plain = "Traceback (most recent call last):\n  File \"<cell>\", line 1\nKeyError: 'k'\n"
    _, err = rendered(failed(plain), 1)
    assert (err[1]["ename"], err[1]["evalue"]) == ("KeyError", "'k'")
    _, err = rendered(failed("", "Boom", ""), 1)
    assert err[1]["traceback"] == ["Boom"]


def test_transport_errors_are_named_for_the_error_tree_and_say_what_to_do():
    name, content = outputs.transport_error(RemoteAuthenticationError("refused: check REMOTE_KERNEL_TOKEN"))
    assert name == "error" and content["ename"] == "RemoteAuthenticationError"
    assert content["traceback"] == ["RemoteAuthenticationError: refused: check REMOTE_KERNEL_TOKEN"]
    assert "next cell starts a new session" in outputs.transport_error(SessionLost("gone"))[1]["traceback"][-1]
    assert outputs.transport_error(PoolFull("no room"))[1]["ename"] == "PoolFull"
    assert outputs.transport_error(SessionLost("gone"))[1]["ename"] == "SessionLost"
    reply = outputs.error_reply(outputs.transport_error(PoolFull("no room")), 3)
    assert reply["status"] == "error" and reply["execution_count"] == 3 and reply["ename"] == "PoolFull"


# --- magics -------------------------------------------------------------------------------------

def test_kernel_magics_are_recognised_and_remote_ones_pass_through():
    assert parse_line("%upload data.csv").name == "upload"
    assert parse_line("%files?").help and parse_line("%upload -h").help
    for line in ("%%time", "%pip install x", "!ls", "%timeit 1", "x = 1", "%%upload"):
        assert parse_line(line) is None


def test_a_cell_may_start_with_magics_and_go_on_with_code():
    calls, rest = split_cell("%upload a.csv\n%files\nimport pandas\n%upload late")
    assert [c.name for c in calls] == ["upload", "files"] and rest == "import pandas\n%upload late"
    calls, rest = split_cell("%%time\n%upload x\n")
    assert calls == [] and rest == "%%time\n%upload x\n"
    assert split_cell("print(1)") == ([], "print(1)")


def test_quoted_arguments_and_unbalanced_quotes():
    assert parse_line('%upload "my file.csv" data/x.csv').args() == ["my file.csv", "data/x.csv"]
    with pytest.raises(MagicError, match="usage"):
        parse_line('%upload "oops').args()


def test_progress_bar_is_one_display_updated_in_place():
    sent = []
    progress = Progress(lambda t, c: sent.append((t, c)), "upload x", 100, interval=0)
    progress(0, 100)
    progress(50, 100)
    progress.done = 100
    progress.finish()
    assert [t for t, _ in sent] == ["display_data", "update_display_data", "update_display_data"]
    assert len({c["transient"]["display_id"] for _, c in sent}) == 1
    assert "100%" in sent[-1][1]["data"]["text/plain"]


def test_files_table_has_name_size_modified():
    table = files_table([RemoteFile("b.csv", 2048, datetime(2024, 4, 23, 19, 36, tzinfo=timezone.utc)),
                         RemoteFile("sub", is_directory=True)])
    lines = table["text/plain"].splitlines()
    assert lines[0].split() == ["name", "size", "modified"]
    assert lines[2].startswith("sub/") and "2.0 KiB" in lines[3] and "2024-04-23 19:36:00" in lines[3]
    assert "<table>" in table["text/html"]


# --- is_complete, VS Code -----------------------------------------------------------------------

@pytest.mark.parametrize("code, status", [
    ("1 + 1", "complete"), ("for i in range(3):", "incomplete"), ("def f(x):\n    return (x +", "incomplete"),
    ("1 +* 2)", "invalid"), ("%upload a.csv", "complete"), ("!ls", "complete"),
])
def test_python_is_complete_is_answered_locally(code, status):
    assert PYTHON.is_complete(code)["status"] == status


def test_incomplete_python_gives_an_indent():
    assert PYTHON.is_complete("if True:")["indent"] == "    "


def test_javascript_bracket_check():
    assert JAVASCRIPT.is_complete("f(1)")["status"] == "complete"
    assert JAVASCRIPT.is_complete("function f() {")["status"] == "incomplete"
    assert JAVASCRIPT.is_complete("})")["status"] == "invalid"


def test_vscode_hidden_snippets_are_recognised_only_when_not_stored():
    setup = vscode.classify('import matplotlib\n__vsc_ipynb_file__ = "/x.ipynb"\n%config Completer.use_jedi = False',
                            store_history=False, session_started=False)
    assert setup.route == "local"
    assert setup.deferred == '__vsc_ipynb_file__ = "/x.ipynb"\n%config Completer.use_jedi = False'
    assert vscode.classify("%matplotlib inline\n%config InlineBackend.figure_formats = ['png']", False, True).route == "local"
    assert vscode.classify('_VSCODE_getVariable("info", False, x)', False, True).route == "session"
    assert vscode.classify('_VSCODE_getVariable("info", False, x)', False, False).route == "local"
    assert vscode.classify("__vsc_ipynb_file__", store_history=True, session_started=True) is None
    assert vscode.classify("print(1)", store_history=False, session_started=True) is None


def test_vscode_background_snippets_are_parsed_as_the_extension_builds_them():
    import vscode_requests as vr

    code, mime = vr.background(3, vr.complete_statement('print("a\\tb\n" + x.', 17))
    hidden = vscode.classify(code, store_history=False, session_started=False)
    assert hidden.route == "background" and hidden.background.mime == mime
    assert hidden.background.complete == ('print("a\\tb\n" + x.', 17)
    code, _ = vr.background(4, vr.inspect_statement("obj.beta", 8, 1))
    assert vscode.classify(code, False, True).background.inspect == ("obj.beta", 8, 1)
    code, _ = vr.background(5, vr.all_variable_descriptions())
    body = vscode.classify(code, False, True).background
    assert body.complete is None and body.inspect is None and "_VSCODE_getVariableDescriptions" in body.body


def test_missing_file_hint_only_for_files_the_kernel_has(tmp_path):
    from remote_kernel.kernel.magics import missing_file_hint, stdin_needed

    (tmp_path / "data.csv").write_text("x")
    evalue = "[Errno 2] No such file or directory: '{}'"
    assert "%upload data.csv" in missing_file_hint("FileNotFoundError", evalue.format("data.csv"), tmp_path)
    assert missing_file_hint("FileNotFoundError", evalue.format("other.csv"), tmp_path) is None
    assert missing_file_hint("OSError", evalue.format("data.csv"), tmp_path) is None
    (tmp_path / "raw" / "sub").mkdir(parents=True)
    assert "`%upload raw/sub raw/sub`" in missing_file_hint("FileNotFoundError", evalue.format("raw/sub"), tmp_path)
    (tmp_path / "y").mkdir()
    hint = missing_file_hint("FileNotFoundError", evalue.format("../data.csv"), tmp_path / "y")
    assert "%upload ../data.csv data.csv`, then open it as 'data.csv'" in hint
    assert stdin_needed("%debug") and stdin_needed("x = 1\n%pdb on") and not stdin_needed("%pdb off")


# --- kernelspec ---------------------------------------------------------------------------------

def test_spec_uses_absolute_interpreter_message_interrupts_and_no_debugger():
    kernel = spec("python", env={"POOL_MANAGEMENT_ENDPOINT": "https://x"})
    assert kernel["argv"][0] == sys.executable and "{connection_file}" in kernel["argv"]
    assert kernel["interrupt_mode"] == "message" and kernel["metadata"]["debugger"] is False
    assert kernel["language"] == "python" and kernel["env"] == {"POOL_MANAGEMENT_ENDPOINT": "https://x"}
    assert spec("javascript")["language"] == "javascript"


def test_install_with_prefix_writes_spec_and_logos(tmp_path):
    path = install(name="remote-test", display_name="Remote test", env={"A": "1"}, prefix=str(tmp_path))
    folder = tmp_path / "share" / "jupyter" / "kernels" / "remote-test"
    assert path == str(folder)
    kernel = json.loads((folder / "kernel.json").read_text())
    assert kernel["display_name"] == "Remote test" and kernel["env"] == {"A": "1"}
    assert {"logo-32x32.png", "logo-64x64.png", "logo-svg.svg"} <= {p.name for p in folder.iterdir()}


def test_client_traceback_equal_to_stderr_still_splits_off_earlier_stderr():
    stderr = "warned\n" + IPYTHON_TRACEBACK
    execution = Execution(id="e", status=ExecutionStatus.FAILED, stderr=stderr,
                          error=ExecutionError("ZeroDivisionError", "division by zero", traceback=stderr))
    messages, err = rendered(execution, 1)
    assert messages[0] == ("stream", {"name": "stderr", "text": "warned\n"}) and messages[1] == err


# --- noticing a lost session ------------------------------------------------------------------

class FakeInfoClient:
    """Answers session_info like a pool without session guids."""

    def __init__(self, created):
        self.created, self.calls = created, 0

    async def session_info(self):
        from remote_kernel.sessions.models import SessionInfo, SessionNotFound

        self.calls += 1
        if self.created is None:
            raise SessionNotFound("gone")
        return SessionInfo(identifier="i", created_at=self.created)


def test_a_new_session_guid_is_reported_once():
    import asyncio

    from remote_kernel.kernel.continuity import SESSION_LOST, SessionContinuity

    watch = SessionContinuity()
    notes = [asyncio.run(watch.after_execution(None, guid)) for guid in ("a", "a", "b", "b")]
    assert notes == [None, None, SESSION_LOST, None]
    watch.lost()  # an error already said so
    assert asyncio.run(watch.after_execution(None, "c")) is None


def test_without_guids_the_creation_time_is_compared_only_after_an_idle_spell():
    import asyncio

    from remote_kernel.kernel.continuity import IDLE_BEFORE_CHECK, SESSION_LOST, SessionContinuity

    client = FakeInfoClient(datetime(2024, 1, 1, tzinfo=timezone.utc))
    watch = SessionContinuity()
    assert asyncio.run(watch.after_execution(client, None)) is None and client.calls == 1
    assert asyncio.run(watch.before_cell(client)) is None and client.calls == 1  # not idle: no request
    asyncio.run(watch.after_execution(client, None))
    assert client.calls == 1  # one request for the first cell only
    watch.last_contact -= IDLE_BEFORE_CHECK + 1
    client.created = datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert asyncio.run(watch.before_cell(client)) == SESSION_LOST
    asyncio.run(watch.after_execution(client, None))
    watch.last_contact -= IDLE_BEFORE_CHECK + 1
    client.created = None  # deleted: the next execution creates a new one
    assert asyncio.run(watch.before_cell(client)) == SESSION_LOST


def test_python_results_without_display_repr_show_reprs_unquoted():
    show = PYTHON.format_value
    assert show("ab") == "'ab'" and show(42) == "42" and show([1, "a"]) == "[1, 'a']"
    assert show("   x\n0  1") == "   x\n0  1" and show("array([1, 2])") == "array([1, 2])"
    assert show("<object at 0x1>") == "<object at 0x1>"


def test_the_shim_writes_the_grammar_the_kernel_decodes():
    """rich_shim.py is source sent to the session (standalone): its marker names are those of events.py,
    and a marker it writes decodes to the event it meant."""
    import asyncio

    from remote_kernel.kernel import events, rich_shim
    from remote_kernel.kernel.decode import StreamDecoder

    for name in ("MARK_START", "MARK_END", "INLINE", "RESULT_PLACE", "CLEAR", "CLEAR_WAIT", "FLUSH",
                 "DISPLAY", "UPDATE", "RESULT", "PAGE", "ERROR"):
        assert getattr(rich_shim, name) == getattr(events, name), name
    from pathlib import Path

    back = Path(rich_shim.__file__).with_name("back_channel_shim.py").read_text(encoding="utf-8")
    for kind in events.BACK_CHANNEL_TYPES:
        assert f'"type": "{kind}"' in back, kind

    written: list[str] = []
    shim = rich_shim.RichShim.__new__(rich_shim.RichShim)
    shim.nonce, shim.cell, shim.tees, shim.marking = "0000abcd", 3, [], False

    class Out:
        def write(self, text: str) -> None:
            written.append(text)

        def flush(self) -> None:
            pass

    import sys
    real, sys.stdout = sys.stdout, Out()
    try:
        tokens = (rich_shim.CLEAR_WAIT, rich_shim.RESULT_PLACE,
                  rich_shim.INLINE + f'{{"type": "{rich_shim.RESULT}", "data": {{"text/plain": "x"}}}}')
        for token in tokens:
            shim.mark(token)
    finally:
        sys.stdout = real

    async def decode() -> list[events.OutputEvent]:
        decoder = StreamDecoder(nonce="0000abcd")
        return [event async for event in decoder.feed("stdout", "".join(written))]

    assert asyncio.run(decode()) == [events.Clear(wait=True), events.ResultPlace(),
                                     events.Result({"text/plain": "x"}, {}, False, len(tokens[2]))]


def test_the_hidden_folder_and_the_helper_mark_are_the_shims():
    """The shim (standalone source) and the kernel name its folder and a helper's answer line alike."""
    from remote_kernel.kernel import events, magics, rich, rich_shim
    from remote_kernel.kernel.helper import HELPER_MARK

    assert rich_shim.FOLDER == events.FOLDER == rich.FOLDER == magics.HIDDEN_FOLDER
    assert HELPER_MARK.strip() == rich_shim.HELPER_MARK


def test_one_setting_says_which_api_versions_answer_with_the_jupyter_repr():
    from remote_kernel.contract import API_VERSIONS, JUPYTER_REPR_VERSIONS
    from remote_kernel.sessions.wire import wire_for

    for version in API_VERSIONS:
        asks = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "https://pool.example",
                                      "REMOTE_KERNEL_API_VERSION": version}).jupyter_repr
        assert asks == (version in JUPYTER_REPR_VERSIONS) == getattr(wire_for(version), "has_jupyter_repr", False)


def test_waiting_for_the_embedded_pool_to_exit_gives_its_code_or_a_timeout():
    import subprocess

    from remote_kernel.kernel.embedded import wait_exit

    quick = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(0.05); sys.exit(3)"])
    assert wait_exit(quick, 30) == 3
    assert quick.returncode == 3  # reaped
    assert wait_exit(quick, 30) == 3  # a reaped process: its code, its pid never looked at again
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            wait_exit(slow, 0.1)
        assert slow.returncode is None
    finally:
        slow.kill()
        slow.wait()


def test_a_cells_file_is_named_by_the_hash_ipykernel_uses():
    """The session's worker names a cell's code /tmp/ipykernel_<pid>/<murmur2>.py, as ipykernel.compiler does
    (a warning's location and a SyntaxError's message show it)."""
    from ipykernel.compiler import murmur2_x86

    from remote_kernel.pool.workers.python_worker import murmur2

    for text in ["", "a", "ab", "abc", "abcd", "x = 1+1; x", "print('héllo ✓')\n" * 300, "é" * 4097]:
        assert murmur2(text.encode("utf-8")) == murmur2_x86(text, 0xC70F6907), text[:20]
