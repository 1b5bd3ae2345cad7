"""The Node.js session worker on its own: PROTOCOL.md spoken over fds 3/4, without the pool."""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "remote_kernel" / "pool" / "workers" / "node_worker.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (install nodejs, version 20 or later)")


class NodeWorker:
    """`node node_worker.js` with its command pipe on fd 3 and its reply pipe on fd 4."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.log_path = cwd.parent / f"{cwd.name}-worker.log"
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def place_pipes() -> None:  # in the child, before exec
            read_copy, write_copy = os.dup(commands_read), os.dup(replies_write)
            os.dup2(read_copy, 3)
            os.dup2(write_copy, 4)

        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [NODE, str(WORKER)], cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={"PATH": os.environ.get("PATH", ""), **(env or {})},
                preexec_fn=place_pipes, close_fds=False,
            )
        os.close(commands_read)
        os.close(replies_write)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_replies, daemon=True).start()
        self.ready = self.next_reply()
        self._count = 0

    def _read_replies(self) -> None:
        with os.fdopen(self._replies, "rb") as replies:
            for line in replies:
                self.replies.put(json.loads(line))
        self.replies.put(None)

    def next_reply(self, timeout: float = 30) -> dict:
        reply = self.replies.get(timeout=timeout)
        assert reply is not None, f"the worker ended: {self.log()}"
        return reply

    def send(self, code: str, jupyter: bool = False) -> str:
        self._count += 1
        execution_id = f"e{self._count}"
        line = json.dumps({"id": execution_id, "op": "execute", "code": code, "jupyter": jupyter})
        os.write(self._commands, (line + "\n").encode())
        return execution_id

    def run(self, code: str, jupyter: bool = False, timeout: float = 30) -> dict:
        execution_id = self.send(code, jupyter)
        reply = self.next_reply(timeout)
        assert reply["id"] == execution_id
        return reply

    def ok(self, code: str, **kwargs) -> dict:
        reply = self.run(code, **kwargs)
        assert reply["ok"], reply
        return reply

    def value(self, code: str, **kwargs):
        return self.ok(code, **kwargs)["result"]

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def close_commands(self) -> None:
        os.close(self._commands)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        try:
            os.close(self._commands)
        except OSError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def start_worker(tmp_path):
    workers = []

    def start(env: dict[str, str] | None = None) -> NodeWorker:
        cwd = tmp_path / f"data{len(workers)}"
        cwd.mkdir()
        worker = NodeWorker(cwd, env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker) -> NodeWorker:
    return start_worker()


def test_worker_announces_ready_with_the_node_runtime(worker):
    assert worker.ready["ready"] is True
    assert worker.ready["runtime"]["name"] == "node"
    assert worker.ready["runtime"]["version"] == subprocess.check_output([NODE, "-p", "process.versions.node"], text=True).strip()


def test_declarations_of_every_kind_persist_across_executions(worker):
    worker.ok("var v = 1; let l = 2; const c = 3; function f() { return 4 }\nclass K { five() { return 5 } }")
    assert worker.value("[v, l, c, f(), new K().five()]") == [1, 2, 3, 4, 5]
    worker.ok("let {a, b: [bb, ...rest]} = {a: 1, b: [2, 3, 4]}")
    assert worker.value("[a, bb, rest]") == [1, 2, [3, 4]]


def test_a_cell_can_run_again_without_redeclaration_errors(worker):
    cell = "let n = 1\nconst m = n + 1\nclass Point { constructor(x) { this.x = x } }\nm"
    assert worker.value(cell) == 2
    assert worker.value(cell) == 2
    assert worker.value("new Point(7).x") == 7


def test_console_methods_map_to_stdout_and_stderr(worker):
    reply = worker.ok(
        'console.log("log"); console.info("info"); console.debug("debug"); process.stdout.write("raw\\n");'
        'console.error("error"); console.warn("warn"); process.stderr.write("rawerr\\n")'
    )
    assert reply["stdout"] == "log\ninfo\ndebug\nraw\n"
    assert reply["stderr"] == "error\nwarn\nrawerr\n"
    trace = worker.ok('console.trace("here")')
    assert trace["stdout"] == "" and trace["stderr"].startswith("Trace: here")


def test_hello_world_prints_to_stdout_with_an_empty_result(worker):
    reply = worker.ok('console.log("hello-world")')
    assert reply["stdout"] == "hello-world\n" and reply["stderr"] == "" and reply["result"] == ""
    assert reply["error"] is None and reply["ms"] >= 0


@pytest.mark.parametrize(("code", "expected"), [
    ("1+3", 4),
    ("1+2", 3),
    ('"a" + "b"', "ab"),
    ("null", None),
    ("true", True),
    ("2.5", 2.5),
    ("[1, {a: [2, null]}]", [1, {"a": [2, None]}]),
    ("{a: 1, b: 'x'}", {"a": 1, "b": "x"}),
    ("undefined", ""),
    ("var unset", ""),
    ("let q = 5", ""),
    ("if (true) { 7 }", 7),
    ("NaN", "NaN"),
    ("10n", "10n"),
    ("new Map([[1, 2]])", "Map(1) { 1 => 2 }"),
    ("function named() {}; named", "[Function: named]"),
    ("new Date(0)", "1970-01-01T00:00:00.000Z"),
    ("const cyclic = {}; cyclic.self = cyclic; cyclic", "<ref *1> { self: [Circular *1] }"),
])
def test_trailing_expression_is_a_json_value_or_its_inspected_text(worker, code, expected):
    assert worker.value(code) == expected


def test_jupyter_flag_returns_the_inspected_text(worker):
    assert worker.value("'abc'", jupyter=True) == "'abc'"
    assert worker.value("[1, 2]", jupyter=True) == "[ 1, 2 ]"
    assert worker.value("undefined", jupyter=True) == ""


def test_thrown_error_fails_with_its_stack_and_keeps_state(worker):
    worker.ok("var kept = 41")
    reply = worker.run("kept += 1\nfunction boom() { throw new TypeError('bad thing') }\nboom()")
    assert reply["ok"] is False
    assert reply["error"] == {"name": "TypeError", "message": "bad thing"}
    assert reply["stderr"].startswith("TypeError: bad thing\n    at boom (cell-")
    assert "node_worker" not in reply["stderr"] and "node:vm" not in reply["stderr"]
    assert worker.value("kept") == 42


def test_thrown_non_error_value_is_reported(worker):
    reply = worker.run("throw 5")
    assert reply["ok"] is False and reply["error"]["message"] == "5" and "5" in reply["stderr"]


def test_syntax_error_shows_the_offending_line(worker):
    reply = worker.run("let fine = 1\nlet broken = ;")
    assert reply["ok"] is False and reply["error"]["name"] == "SyntaxError"
    assert "let broken = ;" in reply["stderr"] and "Unexpected token" in reply["stderr"]


def test_syntax_error_in_a_cell_with_await_points_at_the_cell(worker):
    reply = worker.run("const v = await Promise.resolve(1)\nconsole.log(v")
    assert reply["ok"] is False and reply["error"]["name"] == "SyntaxError"
    assert reply["stderr"].startswith("cell-1:2\nconsole.log(v\n")
    reply = worker.run("await foo(;")
    assert reply["stderr"].startswith("cell-2:1\nawait foo(;\n          ^\n")
    reply = worker.run("await foo(")
    assert reply["error"]["message"] == "Unexpected end of input"
    assert reply["stderr"].startswith("cell-3:1\nawait foo(\n          ^\n")


def test_top_level_await_returns_the_trailing_value_and_keeps_declarations(worker):
    code = (
        "const delay = (ms, v) => new Promise(r => setTimeout(() => r(v), ms))\n"
        "let got = await delay(10, 'late')\n"
        "const {x, y = 2} = await Promise.resolve({x: 1})\n"
        "function helper() { return got.toUpperCase() }\n"
        "class Box { constructor(v) { this.v = v } }\n"
        "if (true) { var inBlock = 'block' }\n"
        "console.log('after await')\n"
        "got + x + y"
    )
    reply = worker.ok(code)
    assert reply["result"] == "late12" and reply["stdout"] == "after await\n"
    assert worker.value("[got, x, y, helper(), new Box(3).v, inBlock]") == ["late", 1, 2, "LATE", 3, "block"]
    assert worker.value(code) == "late12"  # and it runs again


def test_top_level_await_without_trailing_expression_gives_empty_result(worker):
    assert worker.value("const r = await Promise.resolve(3);") == ""
    assert worker.value("for await (const v of [Promise.resolve(1)]) { console.log(v) }") == ""
    assert worker.value("r") == 3


def test_rejected_top_level_await_fails_with_its_stack(worker):
    reply = worker.run("await Promise.reject(new RangeError('nope'))")
    assert reply["ok"] is False and reply["error"] == {"name": "RangeError", "message": "nope"}
    assert reply["stderr"].startswith("RangeError: nope")


def test_async_and_done_wait_for_callbacks_and_take_the_done_value(worker):
    reply = worker.ok(
        "$$.async();\n"
        "setTimeout(() => { console.log('from the callback'); console.error('err too') }, 20);\n"
        "setTimeout(() => $$.done({answer: 42}), 60);\n"
        "'ignored trailing value'"
    )
    assert reply["stdout"] == "from the callback\n" and reply["stderr"] == "err too\n"
    assert reply["result"] == {"answer": 42}


def test_done_without_a_value_gives_an_empty_result(worker):
    assert worker.value("$$.async(); setTimeout($$.done, 10)") == ""


def test_a_stale_done_does_not_end_a_later_execution(worker):
    worker.ok("$$.async(); var staleDone = $$.done; setTimeout(() => $$.done(1), 10)")
    reply = worker.ok("$$.async(); staleDone('stale'); setTimeout(() => $$.done('fresh'), 50)")
    assert reply["result"] == "fresh"


def test_error_in_a_callback_fails_the_pending_execution(worker):
    reply = worker.run("$$.async(); setTimeout(() => { throw new Error('in callback') }, 10)")
    assert reply["ok"] is False and reply["error"] == {"name": "Error", "message": "in callback"}
    assert "in callback" in reply["stderr"]
    assert worker.value("1") == 1


def test_seed_file_sample_writes_the_file_before_done(worker):
    # the seed's sample, with its 10 s wait shortened (the pool tests run it verbatim)
    code = (
        '$$.async(); var fs2 = require("fs");\nvar path2 = require("path");\n\n'
        '// Define the file path and content\nvar filePath2 = path.join(process.cwd(), "example.txt");\n'
        'var fileContent2 = "Hello, this is a sample content!";\n\n// Write the file\n'
        'fs2.writeFile(filePath2, fileContent2, (err) => {\nif (err) {\n'
        'console.log(`Error file creation  ${err.message}`);\n'
        'return console.error(`A problem occurred while writing the file: ${err.message}`);\n}\n'
        'console.log("File has been created and saved successfully!");\n});\n setTimeout($$.done, 200)'
    )
    reply = worker.ok(code)
    assert reply["stdout"] == "File has been created and saved successfully!\n" and reply["result"] == ""
    assert (worker.cwd / "example.txt").read_text() == "Hello, this is a sample content!"


def test_builtin_modules_are_globals_and_require_finds_them(worker):
    assert worker.value("[path.join('a', 'b'), typeof fs.readFileSync, require('os').EOL]") == ["a/b", "function", "\n"]
    assert worker.value("require('node:util').format('%d!', 3)") == "3!"
    worker.ok("var path = 'shadowed'")
    assert worker.value("path") == "shadowed"


def test_require_finds_packages_in_the_working_folder(worker):
    package = worker.cwd / "node_modules" / "greeter"
    package.mkdir(parents=True)
    (package / "package.json").write_text('{"name": "greeter", "main": "main.js"}')
    (package / "main.js").write_text("module.exports = (who) => `hello ${who}`;")
    esm = worker.cwd / "node_modules" / "esm-only"
    esm.mkdir()
    (esm / "package.json").write_text('{"name": "esm-only", "type": "module", "exports": "./index.js"}')
    (esm / "index.js").write_text("export const answer = 42;")
    assert worker.value("require('greeter')('node')") == "hello node"
    assert worker.value("const { answer } = await import('esm-only'); answer") == 42
    reply = worker.run("require('no-such-package')")
    assert reply["ok"] is False and reply["error"]["message"].startswith("Cannot find module 'no-such-package'")


def test_output_is_capped_per_stream_keeping_its_head_and_tail(start_worker):
    worker = start_worker({"REMOTE_KERNEL_MAX_OUTPUT": "100"})
    reply = worker.ok("for (let i = 0; i < 50; i++) console.log(`line ${String(i).padStart(5, '0')}`); console.error('short')")
    lines = [f"line {i:05d}\n" for i in range(50)]  # 11 bytes each
    head, tail = "".join(lines[:4]), "".join(lines[-5:])  # whole lines only, within 50 and 56 bytes
    marker = (f"[output truncated: {50 * 11 - 44 - 55} bytes left out here (the first 44 and the last 55 are "
              "shown). To get all of it, write it to a file in /mnt/data (`fs.writeFileSync('out.txt', text)`) "
              "and `%download out.txt`]\n")
    assert reply["stdout"] == head + marker + tail
    assert reply["stderr"] == "short\n"
    # one long line: cut by bytes, never inside a multi-byte character
    reply = worker.ok("console.log('é'.repeat(80))")
    assert reply["stdout"].startswith("é" * 25 + "\n[output truncated: 62 bytes left out here (the first 50 and the last 49")
    assert reply["stdout"].endswith("]\n" + "é" * 24 + "\n")
    # at most the limit: all of it
    assert worker.ok("console.log('x'.repeat(99))")["stdout"] == "x" * 99 + "\n"


def test_sigint_stops_a_busy_loop_and_keeps_state(worker):
    worker.ok("var counter = 0")
    worker.send("fs.writeFileSync('started', '1'); while (true) { counter++ }")
    wait_for(lambda: (worker.cwd / "started").exists(), what="the loop to start")
    worker.interrupt()
    reply = worker.next_reply()
    assert reply["ok"] is False and reply["error"]["name"] == "Interrupted"
    assert worker.value("counter > 0") is True


# `started` is written once the cell's synchronous part is over: a SIGINT within microseconds of
# that part's end can be swallowed by Node's vm watchdog (see the worker's header).
@pytest.mark.parametrize("code", [
    "$$.async(); setTimeout(() => fs.writeFileSync('started', '1'), 0)",
    "await null; fs.writeFileSync('started', '1'); await new Promise(() => {})",
])
def test_sigint_ends_a_pending_execution_and_keeps_state(worker, code):
    worker.ok("var before = 'kept'")
    worker.send(code)
    wait_for(lambda: (worker.cwd / "started").exists(), what="the execution to start")
    worker.interrupt()
    reply = worker.next_reply()
    assert reply["ok"] is False and reply["error"]["name"] == "Interrupted"
    assert worker.value("before") == "kept"


def test_a_sigint_that_follows_an_interrupt_command_late_does_not_end_the_next_execution(worker):
    """The pool sends an interrupt command, then a SIGINT a moment later (for synchronous code). On a loaded
    machine the SIGINT's handler can run after that execution ended and the next one began: it is the
    interrupted execution's, and the next one must finish."""
    first = worker.send("await new Promise(() => {})")
    os.write(worker._commands, (json.dumps({"op": "interrupt", "id": first}, separators=(",", ":")) + "\n").encode())
    assert worker.next_reply()["error"]["name"] == "Interrupted"
    second = worker.send("fs.writeFileSync('second', '1'); await new Promise((resolve) => setTimeout(resolve, 1000))\n"
                         "'finished'")
    wait_for(lambda: (worker.cwd / "second").exists(), what="the second execution to start")
    worker.interrupt()  # the late SIGINT of the first execution's interrupt
    reply = worker.next_reply()
    assert reply["id"] == second and reply["ok"] is True and reply["result"] == "finished", reply


def test_sigint_while_idle_is_ignored(worker):
    worker.ok("var alive = true")
    worker.interrupt()
    assert worker.value("alive") is True
    assert worker.process.poll() is None


def test_process_exit_ends_the_execution_not_the_worker(worker):
    failed = worker.run("console.log('before'); process.exit(3); console.log('after')")
    assert failed["ok"] is False and failed["stdout"] == "before\n"
    assert failed["error"] == {"name": "ProcessExit", "message": "process.exit(3) was called"}
    assert worker.ok("process.exit()")["result"] == ""
    assert worker.value("'still here'") == "still here"


def test_replies_come_in_order_one_per_execute(worker):
    ids = [worker.send(f"$$.async(); setTimeout(() => $$.done({i}), {30 - 10 * i})") for i in range(3)]
    replies = [worker.next_reply() for _ in ids]
    assert [r["id"] for r in replies] == ids and [r["result"] for r in replies] == [0, 1, 2]


def test_output_after_an_execution_ends_goes_to_the_debug_log(worker):
    worker.ok("setTimeout(() => console.log('late line'), 10)")
    wait_for(lambda: "late line" in worker.log(), what="the late line in the log")
    assert worker.ok("console.log('next')")["stdout"] == "next\n"


def test_worker_exits_when_the_command_pipe_closes(worker):
    worker.send("setInterval(() => {}, 1000); 1")
    assert worker.next_reply()["result"] == 1
    worker.close_commands()
    assert worker.process.wait(20) == 0


@pytest.mark.parametrize(("code", "expected"), [
    # await only inside functions: a plain script, whose value V8 gives
    ("const later = async () => { await null; return 1 }\nlater() instanceof Promise", True),
    ("const o = { async m() { await null } }\nclass C { async m() { await null } }\ntypeof o.m", "function"),
    # top-level await with the tokens that trip naive scanners
    ("const quote = /'/.source // don't\nawait quote", "'"),
    ("const t = `a${ {b: 1}.b }c`; await t", "a1c"),
    ("const twice = async x => await x * 2; await twice(4)", 8),
    ("const a = 1\nconst b = await Promise.resolve(2)\n;[a, b]", [1, 2]),
    ("await 1 // a trailing comment", 1),
    ("let unset\nawait null\nunset", ""),
    ("function helper() { return 3 }\n(async () => helper())()", "Promise { 3 }"),
    ("for (var i = 0, total = 0; i < 3; i++) total += await i\ntotal", 3),
    ("const [first, , third = 3] = await Promise.resolve([1, 2])\nfirst + third", 4),
    ("label: for (const v of [1]) { await v; break label }\n'after'", "after"),
])
def test_cells_with_tricky_syntax_run_as_written(worker, code, expected):
    assert worker.value(code) == expected


def test_re_running_an_await_cell_keeps_working_and_functions_persist(worker):
    cell = "async function fetchish(v) { return v }\nconst got = await fetchish(7)\ngot"
    assert worker.value(cell) == 7
    assert worker.value(cell) == 7
    assert worker.value("fetchish.name") == "fetchish"
