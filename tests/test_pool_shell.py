"""`remote-kernel pool --container-type Shell`: the hosted Shell pools' executions, sandboxed like the others."""
from __future__ import annotations

import re
import subprocess
import uuid

import httpx
import pytest
from conftest import bubblewrap_usable, start_pool

VERSION = "2025-10-02-preview"


@pytest.fixture(scope="module")
def shell_pool():
    pool = start_pool("--container-type", "Shell", "--max-sessions", "20", "--ready-sessions", "1")
    yield pool
    pool.stop()


HTTP_POOL = "shell_pool"  # the pool the `http` fixture (conftest.py) is a client of


def execute(http, identifier: str, version: str = VERSION, **body) -> httpx.Response:
    return http.post("/executions", params={"api-version": version, "identifier": identifier}, json=body)


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize("command", ["printf 'a\\nb\\n' | wc -l", "echo out; echo err >&2; exit 7",
                                     "for i in 1 2 3; do echo $((i * i)); done", "false"])
def test_a_command_answers_as_bash_does_with_its_exit_code_as_the_status(http, command):
    local = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    body = execute(http, new_id(), shellCommand=command).json()
    assert body["status"] == str(local.returncode)  # a string: the spec's Shell examples, langchain's parser
    assert body["result"]["stdout"] == local.stdout and body["result"]["stderr"] == local.stderr
    assert "executionResult" not in body["result"]


def test_exec_command_and_args_and_stdin(http):
    identifier = new_id()
    argv = execute(http, identifier, execCommandAndArgs=["printf", "%s|", "a b", "$HOME", "*"]).json()
    assert argv["status"] == "0" and argv["result"]["stdout"] == "a b|$HOME|*|"  # no shell: no expansion
    read = execute(http, identifier, shellCommand='read LINE; echo "first_input:$LINE"', stdin="testinput\n").json()
    assert read["result"]["stdout"] == "first_input:testinput\n"  # the spec's CodeExecution_Execute_ShellCommand
    missing = execute(http, identifier, execCommandAndArgs=["no-such-program-here"]).json()
    assert missing["status"] == "Failed" and missing["error"]["error"]["code"] == "CommandStartError"


def test_streams_are_cut_at_4096_bytes_silently_unless_the_request_names_a_cap(http):
    identifier = new_id()
    cut = execute(http, identifier, shellCommand="head -c 10000 /dev/zero | tr '\\0' x; echo done >&2").json()
    assert cut["status"] == "0" and cut["result"]["stdout"] == "x" * 4096  # as LangChain measured on hosted pools
    whole = execute(http, identifier, shellCommand="head -c 10000 /dev/zero | tr '\\0' x",
                    outputStreamsMaxLength=20000).json()
    assert whole["result"]["stdout"] == "x" * 10000


def test_past_the_workers_1_mib_the_head_and_the_last_lines_are_kept(http):
    command = "seq 1 300000; echo the answer is 42"  # 1.9 MB
    local = subprocess.run(["bash", "-c", command], capture_output=True, text=True).stdout
    stdout = execute(http, new_id(), shellCommand=command, outputStreamsMaxLength=4 << 20).json()["result"]["stdout"]
    head, marker, tail = re.fullmatch(r"(.*?\n)(\[output truncated: [^\n]*\]\n)(.*)", stdout, re.S).groups()
    assert local.startswith(head) and local.endswith(tail) and tail.endswith("300000\nthe answer is 42\n")
    left_out = int(re.match(r"\[output truncated: (\d+) bytes left out", marker)[1])
    assert len(head) + left_out + len(tail) == len(local) and len(head) + len(tail) <= 1 << 20


def test_files_persist_between_commands_and_through_the_file_api(http):
    identifier = new_id()
    params = {"api-version": "2025-02-02-preview", "identifier": identifier, "path": "/mnt/data"}
    assert http.post("/files", params=params, files={"file": ("in.txt", b"one\ntwo\n")}).status_code == 200
    execute(http, identifier, shellCommand="wc -l < in.txt > count.txt; cd /tmp; export GONE=1")
    after = execute(http, identifier, shellCommand="cat /mnt/data/count.txt; pwd; echo ${GONE:-unset}").json()
    assert after["result"]["stdout"] == "2\n/mnt/data\nunset\n"  # files stay; each command is a new shell
    assert http.get("/files/count.txt/content", params=params).content == b"2\n"


@pytest.mark.skipif(not bubblewrap_usable()[0], reason=bubblewrap_usable()[1] or "bubblewrap is usable")
def test_commands_run_in_the_sandbox(http, shell_pool):
    body = execute(http, new_id(), shellCommand=(
        "id -u; cat /etc/shadow /etc/passwd 2>&1; env | sort; "
        "(exec 3<>/dev/tcp/1.1.1.1/53) 2>/dev/null && echo network || echo no-network")).json()
    out = body["result"]["stdout"]
    assert out.startswith("65534\n") and "no-network" in out
    assert shell_pool.token not in out and "REMOTE_KERNEL_TOKEN" not in out
    assert "root:x:" not in out and "/etc/shadow: No such file" in out  # the host's /etc is not there


def test_a_command_past_its_timeout_is_stopped_and_the_session_answers_again(http):
    identifier = new_id()
    late = execute(http, identifier, shellCommand="echo started; sleep 60", timeoutInSeconds=1).json()
    assert late["status"] == "Failed" and late["error"]["error"]["code"] == "ExecutionTimeout"
    assert late["result"]["stdout"] == "started\n"
    assert execute(http, identifier, shellCommand="echo again").json()["result"]["stdout"] == "again\n"
    background = execute(http, identifier, shellCommand="sleep 30 & echo detached").json()
    assert background["status"] == "0" and background["result"]["stdout"] == "detached\n"


def test_asynchronous_commands_are_polled(http):
    identifier = new_id()
    started = execute(http, identifier, shellCommand="sleep 1; echo late", executionType="Asynchronous")
    location = started.headers["Operation-Location"]
    polled = started.json()
    while polled["status"] in ("NotStarted", "Running"):  # queued, then running
        polled = http.get(location).json()
    assert polled["status"] == "0" and polled["result"]["stdout"] == "late\n"


@pytest.mark.parametrize("body", [{}, {"shellCommand": "echo", "execCommandAndArgs": ["echo"]},
                                  {"shellCommand": 5}, {"execCommandAndArgs": []},
                                  {"execCommandAndArgs": ["echo", 1]}, {"shellCommand": "cat", "stdin": 3}])
def test_malformed_shell_bodies_are_400(http, body):
    answer = execute(http, new_id(), **body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "InvalidShellCommand"


def test_metadata_names_bash(http):
    runtimes = http.get("/metadata", params={"api-version": VERSION}).json()["runtimes"]
    assert runtimes[0]["name"] == "bash" and runtimes[0]["version"]
