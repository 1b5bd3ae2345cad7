"""The worker's reply pipe is untrusted input (issue 15 findings 1 and 2, issue 13 deliverable 7).

Session code can write to the worker's fd 4 itself. The pool reads it a chunk at a time, accepts
a line only for the execution that is running (by an id session code never sees), and stops a
session that writes anything it was not asked for, or too much; its memory stays bounded.
"""
from __future__ import annotations

import time
import uuid

import httpx
import pytest
from conftest import start_pool
from kernel_support import API

FORGE_PYTHON = ("import os, json\nos.write(4, (json.dumps({'id': 'x', 'ok': True, 'stdout': 'FORGED\\n', "
                "'stderr': '', 'result': '', 'error': None, 'ms': 1}) + '\\n').encode())\nprint('real')")
FORGE_NODE = ("require('fs').writeSync(4, JSON.stringify({id: 'x', ok: true, stdout: 'FORGED\\n', stderr: '', "
              "result: '', error: null, ms: 1}) + '\\n'); console.log('real');")


def execute(pool, identifier: str, code: str, timeout: float = 60) -> dict:
    response = httpx.post(f"{pool.endpoint}/executions", params={"api-version": API, "identifier": identifier},
                          headers=pool.headers, json={"code": code, "timeoutInSeconds": 60}, timeout=timeout + 30)
    response.raise_for_status()
    return response.json()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory now, or (VmHWM) the most it ever had."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


@pytest.fixture(scope="module")
def node_pool():
    p = start_pool("--container-type", "NodeLTS", "--max-sessions", "10")
    yield p
    p.stop()


@pytest.mark.parametrize("language", ["python", "node"])
def test_a_forged_reply_stops_the_session_and_never_answers_another_execution(language, pool, node_pool):
    target, code = (pool, FORGE_PYTHON) if language == "python" else (node_pool, FORGE_NODE)
    identifier = str(uuid.uuid4())
    execute(target, identifier, "1" if language == "python" else "1")
    forged = execute(target, identifier, code)
    assert forged["status"] == "Failed" and forged["error"]["error"]["code"] == "SessionLost"
    assert "forged" in forged["error"]["error"]["message"] and "FORGED" not in str(forged["result"])
    after = execute(target, identifier, "print('next')" if language == "python" else "console.log('next')")
    assert after["status"] == "Succeeded" and after["result"]["stdout"] == "next\n"  # a fresh session, its own answer


def test_a_line_for_another_execution_written_by_session_code_stops_the_session(pool):
    identifier = str(uuid.uuid4())
    # the thread writes once the next execution runs (a file it makes says so), so that a slow machine
    # cannot let the line land between the two executions, where the session would be replaced unseen
    execute(pool, identifier, "import os, threading, time\n"
                              "def forge():\n"
                              "    while not os.path.exists('/mnt/data/running'):\n"
                              "        time.sleep(0.05)\n"
                              "    os.write(4, b'{\"id\": 1}\\n')\n"
                              "threading.Thread(target=forge, daemon=True).start()")
    answer = execute(pool, identifier, "import time\nopen('/mnt/data/running', 'w').close()\ntime.sleep(3)")
    later = execute(pool, identifier, "print('fresh')")
    assert "misbehaved" in str(answer) + str(later)
    assert later["status"] == "Succeeded" or later["error"]["error"]["code"] == "SessionLost"


def test_endless_lines_on_the_pipe_leave_the_pools_memory_bounded():
    """A thread writing 10 MiB pieces of one endless line: the pool stops the session at its line limit
    (24 MiB); the pool's RSS grows by less than the stated bound per session (see PROTOCOL.md)."""
    pool = start_pool("--max-sessions", "4")
    try:
        identifier = str(uuid.uuid4())
        execute(pool, identifier, "1")
        before = rss_kib(pool.process.pid)
        answer = execute(pool, identifier, "import os\nchunk = b'x' * (10 << 20)\nwhile True:\n    os.write(4, chunk)")
        assert answer["error"]["error"]["code"] == "SessionLost" and "line over" in answer["error"]["error"]["message"]
        grown = rss_kib(pool.process.pid) - before
        assert grown < 100 << 10, f"the pool grew by {grown} KiB"
    finally:
        pool.stop()


#: session code that finds the running execution's reply id in its own process's memory (a Python cell runs in
#: the worker's process: the command line it came in is there) and writes a reply with it whose body is `{body}`
#: (JSON text; NaN and Infinity written as Python's json module writes them)
FORGE_WITH_ID = """# forge-{marker}
import json, os, re
found = None
pattern = re.compile(rb'"id": "([0-9a-f]{{24}})", "op": "execute", "code": "# forge-{marker}')
for line in open('/proc/self/maps'):
    fields = line.split()
    if 'r' not in fields[1]:
        continue
    start, end = (int(x, 16) for x in fields[0].split('-'))
    try:
        with open('/proc/self/mem', 'rb', 0) as mem:
            mem.seek(start)
            match = pattern.search(mem.read(end - start))
    except (OSError, OverflowError, ValueError):
        continue
    if match:
        found = match.group(1).decode()
        break
assert found, 'the id was not found'
os.write(4, ('{{"id": "' + found + '", ' + {body!r} + '}}\\n').encode())
"""
FORGED_BODIES = {
    "ms Infinity": '"ok": true, "stdout": "", "stderr": "", "result": "", "error": null, "ms": Infinity',
    "result NaN": '"ok": true, "stdout": "", "stderr": "", "result": NaN, "error": null, "ms": 1',
    "result -Infinity in a list": '"ok": true, "stdout": "", "result": [1, -Infinity], "ms": 1',
    "stdout a number": '"ok": true, "stdout": 5, "stderr": "", "result": "", "ms": 1',
    "error a number": '"ok": false, "stdout": "", "stderr": "", "result": "", "error": 7, "ms": 1',
    "error name a list": '"ok": false, "error": {"name": ["x"], "message": "m"}, "ms": 1',
    "ms a string": '"ok": true, "stdout": "", "result": "", "ms": "soon"',
    "ms 1e308 squared": '"ok": true, "result": "", "ms": 1e999',
    "a result 500 deep": '"ok": true, "result": ' + "[" * 500 + "]" * 500 + ', "ms": 1',
    "ok a string": '"ok": "yes", "result": "", "ms": 1',
    "stdout 4 MiB": None,  # over what a stream may hold (twice the 1 MiB cap and 1 MiB; written below)
}


def test_a_reply_forged_with_the_right_id_gets_a_clean_answer_and_no_traceback():
    """Session code can learn the reply id (PROTOCOL.md); whatever it then writes, the pool answers that
    execution with SessionLost ("misbehaved", saying what was wrong), the next one runs in a fresh session,
    and the pool's log has no traceback (a forged Infinity was an HTTP 500 before)."""
    pool = start_pool("--max-sessions", "40", "--ready-sessions", "1")
    try:
        for name, body in FORGED_BODIES.items():
            identifier = str(uuid.uuid4())
            marker = uuid.uuid4().hex
            if body is None:
                code = FORGE_WITH_ID.format(marker=marker, body='"ok": true, "stdout": "' + "x" * (4 << 20) + '"')
            else:
                code = FORGE_WITH_ID.format(marker=marker, body=body) + "import time\ntime.sleep(1)\n"
            answer = execute(pool, identifier, code)
            assert answer["status"] == "Failed", (name, answer)
            assert answer["error"]["error"]["code"] == "SessionLost", name  # an ErrorResponse
            assert "misbehaved" in answer["error"]["error"]["message"], name
            after = execute(pool, identifier, "print('next')")
            assert after["status"] == "Succeeded" and after["result"]["stdout"] == "next\n", (name, after)
        health = httpx.get(f"{pool.endpoint}/health", timeout=30)
        assert health.status_code == 200
    finally:
        pool.stop()
    log = pool.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def test_a_result_whose_values_outweigh_the_pools_bound_is_answered_with_a_note(pool):
    """A reply of 6 MiB holding two million empty lists weighs ~130 MiB as values in the pool: the answer
    carries a note instead of keeping them (replies.MAX_RESULT_HELD), and the pool goes on answering."""
    identifier = str(uuid.uuid4())
    code = FORGE_WITH_ID.format(marker=uuid.uuid4().hex,
                                body='"ok": true, "stdout": "", "result": [' + "[]," * 2_000_000 + '[]], "ms": 1')
    answer = execute(pool, identifier, code + "import time\ntime.sleep(1)\n")
    assert answer["status"] == "Succeeded", str(answer)[:500]
    note = answer["result"]["executionResult"]
    assert isinstance(note, str) and "MiB of the pool's memory" in note and "smaller value" in note
    assert httpx.get(f"{pool.endpoint}/health", timeout=30).status_code == 200


def test_a_line_of_millions_of_empty_lists_is_refused_before_it_is_parsed():
    """8 M empty lists in a 24 MiB line would take ~660 MiB of the pool's memory as values: the line is refused
    unparsed (its brackets are counted first), the session stopped, and the pool's RSS barely moves."""
    pool = start_pool("--max-sessions", "4", "--ready-sessions", "0")
    try:
        identifier = str(uuid.uuid4())
        execute(pool, identifier, "1")
        before = rss_kib(pool.process.pid, "VmHWM")
        answer = execute(pool, identifier, "import os\nos.write(4, b'[' + b'[],' * (8 << 20) + b'0]\\n')\n"
                                           "import time\ntime.sleep(5)")
        grown = rss_kib(pool.process.pid, "VmHWM") - before  # the peak, even if the memory was given back
        assert grown < 100 << 10, f"the pool grew by {grown} KiB"
        assert answer["error"]["error"]["code"] == "SessionLost", answer  # an ErrorResponse
        assert "brackets" in answer["error"]["error"]["message"], answer
    finally:
        pool.stop()
    assert "Traceback" not in pool.log()


#: a Shell session's background process that reopens its worker's pipes through /proc, stops the worker once
#: told to (the file `go`), steals the next command from the worker's command pipe and answers it with a
#: forged reply carrying that command's id and `ms: Infinity`
SHELL_THIEF = r"""
import json, os, signal, sys, time
worker = int(sys.argv[1])
while not os.path.exists('go'):
    time.sleep(0.05)
try:
    commands = open(f'/proc/{worker}/fd/3', 'rb', 0)
    replies = open(f'/proc/{worker}/fd/4', 'wb', 0)
except OSError as problem:
    open('unreachable', 'w').write(str(problem))
    sys.exit()
os.kill(worker, signal.SIGSTOP)
open('stopped', 'w').close()
line = b''
while not line.endswith(b'\n'):
    line += commands.read(1)
replies.write(b'{"id": "' + json.loads(line)['id'].encode() + b'", "ok": true, "result": 0, "ms": Infinity}\n')
os.kill(worker, signal.SIGCONT)
"""


@pytest.mark.parametrize("sandbox", ["auto", "none"])  # where the pipes are out of reach, and where they are not
def test_a_shell_sessions_process_that_forges_replies_through_proc_gets_a_clean_answer(sandbox):
    pool = start_pool("--container-type", "Shell", "--max-sessions", "4", "--ready-sessions", "0",
                      "--sandbox", sandbox)
    try:
        identifier = str(uuid.uuid4())
        params = {"api-version": API, "identifier": identifier}
        with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
            started = client.post("/executions", params=params, json={
                "shellCommand": "cat > thief.py <<'EOF'\n" + SHELL_THIEF + "EOF\n"  # the working folder: /mnt/data
                                "setsid python3 thief.py $PPID </dev/null >/dev/null 2>&1 &\necho launched"})
            assert started.json()["result"]["stdout"] == "launched\n", started.text
            go = client.post("/files", params=params, files={"file": ("go", b"")})  # the pool's side: no command
            assert go.status_code == 200, go.text
            names: list[str] = []
            for _ in range(600):
                names = [e["name"] for e in client.get("/files", params=params).json()["value"]]
                if "stopped" in names or "unreachable" in names:
                    break
                time.sleep(0.1)
            assert "stopped" in names or "unreachable" in names, names
            answer = client.post("/executions", params=params, json={"shellCommand": "echo real"})
            assert answer.status_code == 200, answer.text  # before: 500 (the forged Infinity)
            body = answer.json()
            if "unreachable" in names:  # a root pool's sandbox: the session's processes cannot reopen the pipes
                assert body["status"] == "0" and body["result"]["stdout"] == "real\n", body
            else:
                error = body["error"]["error"]  # an ErrorResponse
                assert body["status"] == "Failed" and error["code"] == "SessionLost", body
                assert "misbehaved" in error["message"] and "Infinity" in error["message"]
    finally:
        pool.stop()
    assert "Traceback" not in pool.log()
