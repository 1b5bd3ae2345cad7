"""The pool's life cycle: start-up output, limits, cooldown, ready sessions, sandbox choice, clean stop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import ROOT, bubblewrap_usable, start_pool

API = {"api-version": "2025-10-02-preview"}


def execute(pool, identifier: str, code: str = "1") -> httpx.Response:
    return httpx.post(f"{pool.endpoint}/executions", params={**API, "identifier": identifier},
                      json={"code": code}, headers=pool.headers, timeout=60)


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def session_processes(pool) -> list[psutil.Process]:
    try:
        return psutil.Process(pool.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_pool_prints_paste_ready_lines_and_a_random_token():
    env = {k: v for k, v in os.environ.items() if k != "REMOTE_KERNEL_TOKEN"}
    process = subprocess.Popen([sys.executable, "-m", "remote_kernel", "pool", "--port", "0", "--ready-sessions", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        endpoint_line = process.stdout.readline().strip()
        token_line = process.stdout.readline().strip()
        assert endpoint_line.startswith("export POOL_MANAGEMENT_ENDPOINT=http://127.0.0.1:")
        port = int(endpoint_line.rsplit(":", 1)[1])
        assert port > 0
        assert token_line.startswith("export REMOTE_KERNEL_TOKEN=")
        token = token_line.split("=", 1)[1]
        assert len(token) >= 32
        ok = httpx.post(f"http://127.0.0.1:{port}/executions", params={**API, "identifier": str(uuid.uuid4())},
                        json={"code": "1"}, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert ok.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0


def test_max_sessions_answers_429_with_retry_after():
    pool = start_pool("--max-sessions", "2", "--ready-sessions", "0")
    try:
        assert execute(pool, str(uuid.uuid4())).status_code == 200
        assert execute(pool, str(uuid.uuid4())).status_code == 200
        full = execute(pool, str(uuid.uuid4()))
        assert full.status_code == 429
        assert full.json()["error"]["code"] == "SessionsCountExceedsLimit"
        assert int(full.headers["Retry-After"]) >= 1
    finally:
        pool.stop()


def test_idle_sessions_expire_after_the_cooldown_and_calls_reset_it():
    pool = start_pool("--cooldown", "5", "--ready-sessions", "0")
    try:
        idle, busy = str(uuid.uuid4()), str(uuid.uuid4())
        execute(pool, idle, "x = 1")
        execute(pool, busy, "x = 1")
        listed = lambda: {s["identifier"] for s in httpx.get(f"{pool.endpoint}/listSessions", params=API,
                                                             headers=pool.headers).json()["sessions"]}
        started = time.monotonic()
        # keep `busy` alive with file calls only, for longer than the cooldown and until `idle` is gone
        while time.monotonic() - started < 6 or idle in listed():
            assert time.monotonic() - started < 60, "the idle session outlived its 5 s cooldown by a minute"
            httpx.get(f"{pool.endpoint}/files", params={**API, "identifier": busy}, headers=pool.headers)
            time.sleep(0.5)
        assert busy in listed()
        assert execute(pool, busy, "x").json()["result"]["executionResult"] == 1
        assert execute(pool, idle, "'x' in globals()").json()["result"]["executionResult"] is False
    finally:
        pool.stop()


def test_a_new_identifier_is_served_by_a_ready_session():
    pool = start_pool("--ready-sessions", "1")
    try:
        assert wait_until(lambda: len(session_processes(pool)) > 0, 30)
        before = {p.pid for p in session_processes(pool)}
        response = execute(pool, str(uuid.uuid4()), "1+1")
        assert response.json()["result"]["executionResult"] == 2
        assert {p.pid for p in session_processes(pool)} & before  # an already-started worker took the call
        assert wait_until(lambda: len({p.pid for p in session_processes(pool)} - before) > 0, 30)  # refilled
    finally:
        pool.stop()


def test_sigterm_stops_the_pool_with_every_session_and_its_data():
    pool = start_pool("--ready-sessions", "1")
    for _ in range(3):
        execute(pool, str(uuid.uuid4()), "open('/mnt/data/f', 'w').write('x')")
    children = session_processes(pool)
    assert children
    pool.process.send_signal(signal.SIGTERM)
    assert pool.process.wait(15) == 0
    assert wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children), 5)
    assert not any(pool.data_root.iterdir())


def test_pool_stops_when_its_parent_is_gone():
    parent = subprocess.Popen(["sleep", "300"])
    pool = start_pool("--parent-pid", str(parent.pid), "--ready-sessions", "1")
    try:
        assert wait_until(lambda: len(session_processes(pool)) > 0, 30)
        children = session_processes(pool)
        parent.kill()
        parent.wait()
        assert pool.process.wait(60) == 0  # a deadline against a hang only, as below
        assert wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children), 30)
    finally:
        pool.stop()


@pytest.mark.skipif(not bubblewrap_usable()[0], reason="bubblewrap is not usable here")
def test_auto_sandbox_falls_back_loudly_without_bubblewrap():
    interpreter_dir = str(Path(sys.executable).parent)
    pool = start_pool("--sandbox", "auto", "--ready-sessions", "0", env={"PATH": interpreter_dir})
    try:
        assert "NOT SANDBOXED" in pool.log()
        first = execute(pool, str(uuid.uuid4()), "print('hi')").json()
        assert "without a sandbox" in first["result"]["stderr"]
        assert first["result"]["stdout"] == "hi\n"
    finally:
        pool.stop()


def test_bubblewrap_sandbox_refuses_to_start_without_it():
    interpreter_dir = str(Path(sys.executable).parent)
    result = subprocess.run([sys.executable, "-m", "remote_kernel", "pool", "--port", "0", "--sandbox", "bubblewrap"],
                            capture_output=True, text=True, env={**os.environ, "PATH": interpreter_dir}, timeout=60)
    assert result.returncode == 2
    assert "bubblewrap" in result.stderr and "apt-get install bubblewrap" in result.stderr


def test_an_interpreter_without_ipython_is_refused_with_what_to_install(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=60)
    bare = tmp_path / "bare" / "bin" / "python"
    result = subprocess.run([sys.executable, "-m", "remote_kernel", "pool", "--port", "0", "--python", str(bare)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot run Python sessions: IPython is not installed in it" in result.stderr
    assert "install ipython" in result.stderr


def test_sessions_run_the_virtual_environment_given_with_python(tmp_path):
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, timeout=60)
    pool = start_pool("--python", str(venv / "bin" / "python"), "--ready-sessions", "0")
    try:
        answer = execute(pool, str(uuid.uuid4()), "import sys; sys.prefix").json()
        assert answer["status"] == "Succeeded", answer
        assert answer["result"]["executionResult"] == str(venv)
    finally:
        pool.stop()


def test_a_client_that_disconnects_interrupts_its_execution(pool):
    identifier = str(uuid.uuid4())
    execute(pool, identifier, "import time\nstate = 'kept'")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{pool.endpoint}/executions", params={**API, "identifier": identifier},
                   json={"code": "import time\nfor i in range(600):\n    time.sleep(0.1)\nstate = 'finished'"},
                   headers=pool.headers, timeout=1)
    after = execute(pool, identifier, "state").json()  # queued behind the interrupted one
    assert after["result"]["executionResult"] == "kept"  # not 'finished': the loop was stopped
