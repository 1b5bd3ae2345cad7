"""How the pool answers for each kind of session: the per-runtime policy of its HTTP and MCP faces.

`sandbox.Runtime` says how a runtime's worker is started; `AnswerPolicy` says how requests for it are
read and answered (which body an execution takes, how its streams are cut, what its value looks like,
which MCP tools it offers). Both are keyed by `Runtime.name`, so a new container type is one Runtime
factory and one entry of POLICIES; no route or tool asks for a runtime by name.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from remote_kernel.pool.sandbox import Runtime
from remote_kernel.settings import PoolSettings

SHELL_STREAM_LIMIT = 4096  # bytes per stream a Shell answer keeps unless the request names another cap


def python_command(argv: list[str], stdin: str | None) -> str:
    """Python source that runs `argv` (with `stdin`) in the session, prints its streams and returns its exit code."""
    return ("(lambda r: (__import__('sys').stdout.write(r.stdout), __import__('sys').stderr.write(r.stderr), "
            f"r.returncode)[-1])(__import__('subprocess').run({argv!r}, input={stdin!r}, "
            "capture_output=True, text=True, errors='replace'))")


def node_command(argv: list[str], stdin: str | None) -> str:
    """JavaScript that runs `argv` (with `stdin`) through child_process and returns its exit code."""
    return ("(() => { const r = require('child_process').spawnSync("
            f"{json.dumps(argv[0])}, {json.dumps(argv[1:])}, {{input: {json.dumps(stdin or '')}, "
            "encoding: 'utf-8'}); process.stdout.write(r.stdout || ''); "
            "process.stderr.write(r.stderr || (r.error ? String(r.error) + '\\n' : '')); "
            "return r.status === null ? 128 : r.status; })()")


def shell_command(argv: list[str], stdin: str | None) -> str:
    """The Shell worker's own request: it runs `argv` itself."""
    return json.dumps({"execCommandAndArgs": argv, **({"stdin": stdin} if stdin is not None else {})})


@dataclass(frozen=True)
class AnswerPolicy:
    """How requests for one runtime's sessions are read and answered."""

    #: an execute body holds a shell command (`shellCommand`/`execCommandAndArgs`), not source code
    shell_body: bool = False
    #: bytes each stream keeps when the request names no cap (None: all of it)
    stream_cap: int | None = None
    #: streams are cut in UTF-8 bytes, silently (hosted Shell pools), rather than in characters
    cut_in_bytes: bool = False
    #: `useEmptyKernel` starts a fresh session (a Shell command is a new process anyway: no)
    empty_kernel: bool = True
    #: the worker always returns the value's display text, which becomes the hosted default rendering
    #: unless the request asked for the Jupyter form (values.hosted_value)
    hosted_values: bool = False
    #: the one field of a v1 answer that carries an image: Python clients read `result` (langchain,
    #: llama-index, SK, AutoGen), the NodeLTS tutorial reads `executionResult`
    v1_image_field: str = "result"
    #: a v2 answer's status is the command's exit code (a string) and it has no executionResult (spec
    #: examples; langchain's SessionsBashTool)
    status_is_exit_code: bool = False
    #: the MCP shell tool's code for `argv` and its stdin
    command: Callable[[list[str], str | None], str] = python_command
    #: whether the MCP Python tool is offered (a NodeLTS session has no Python)
    has_python: bool = True


POLICIES = {
    "python": AnswerPolicy(hosted_values=True),
    "node": AnswerPolicy(v1_image_field="executionResult", command=node_command, has_python=False),
    "shell": AnswerPolicy(shell_body=True, stream_cap=SHELL_STREAM_LIMIT, cut_in_bytes=True, empty_kernel=False,
                          status_is_exit_code=True, command=shell_command),
}


def policy_of(runtime: Runtime | str) -> AnswerPolicy:
    """The answer policy of `runtime` (a Runtime or its name)."""
    name = runtime if isinstance(runtime, str) else runtime.name
    try:
        return POLICIES[name]
    except KeyError:
        raise LookupError(f"No answer policy for the runtime {name!r}: add one to pool/runtimes.py POLICIES") from None


#: the container types a pool serves (`--container-type`), each the Runtime made from the pool's options
CONTAINER_TYPES: dict[str, Callable[[PoolSettings], Runtime]] = {
    "PythonLTS": lambda options: Runtime.python(options.python),
    "NodeLTS": lambda options: Runtime.node(options.node),
    "Shell": lambda options: Runtime.shell(),
}
