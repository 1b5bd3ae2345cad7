"""The hosted session pools' platform MCP server, served by the local pool at `/mcp`.

Hosted pools with `mcpServerSettings.isMCPServerEnabled` answer MCP (Streamable HTTP, JSON answers,
no MCP session needed) with three tools whatever their container type: `launchShell` (an
`environmentId`; the session is allocated lazily), `runShellCommandInRemoteEnvironment`
(`shellCommand` or `execCommandAndArgs`) and `runPythonCodeInRemoteEnvironment` (`pythonCode`),
authenticated by an `x-ms-apikey` header (MicrosoftDocs sessions-tutorial-shell-mcp.md,
sessions-tutorial-python-mcp.md). Built on the official MCP Python SDK (`mcp`), stateless with
JSON answers as the tutorials' curl calls expect; the environments are the pool's own sessions,
so they are sandboxed, limited and expired like any other.

On a PythonLTS pool a shell command runs through the session's interpreter (subprocess, same
sandbox and /mnt/data); on a Shell pool Python code runs as `python3 -c` (a fresh process each
time: no state kept between snippets); a NodeLTS pool runs shell commands through Node.js's
child_process and neither lists nor runs the Python tool.
"""
from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Message, Receive, Scope, Send

from remote_kernel.contract import EXECUTION_LIMIT, IDENTIFIER
from remote_kernel.pool.pool import Pool, PoolFull, SessionStartFailed
from remote_kernel.pool.runtimes import policy_of
from remote_kernel.pool.values import hosted_value

SERVER_NAME = "remote_kernel local pool (Container Apps MCP tools)"
#: what a bare `initialize` (the tutorials send no params) is taken to ask for
DEFAULT_INITIALIZE = {"protocolVersion": "2025-03-26", "capabilities": {},
                      "clientInfo": {"name": "unnamed client", "version": "0"}}
MAX_BODY = 4 << 20
MAX_ENVIRONMENTS = 10_000  # environment ids remembered (a session itself still expires after the cooldown)

ENVIRONMENT = {"environmentId": {"type": "string", "description": "The id launchShell returned"}}
TOOLS = [
    types.Tool(name="launchShell", description="Create a new remote environment (a sandboxed session) and return "
                                               "its environmentId; the session starts with the first command.",
               inputSchema={"type": "object", "properties": {}},
               outputSchema={"type": "object", "properties": {"environmentId": {"type": "string"}},
                             "required": ["environmentId"]}),
    types.Tool(name="runShellCommandInRemoteEnvironment",
               description="Run a shell command in a remote environment: shellCommand (run by bash) or "
                           "execCommandAndArgs (an argv list). Returns stdout, stderr and exitCode.",
               inputSchema={"type": "object", "required": ["environmentId"], "properties": {
                   **ENVIRONMENT, "shellCommand": {"type": "string"},
                   "execCommandAndArgs": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                   "stdin": {"type": "string"}, "timeoutInSeconds": {"type": "number", "exclusiveMinimum": 0}}}),
    types.Tool(name="runPythonCodeInRemoteEnvironment",
               description="Run Python code in a remote environment. Returns stdout, stderr, the value of the last "
                           "expression (result) and the status.",
               inputSchema={"type": "object", "required": ["environmentId", "pythonCode"], "properties": {
                   **ENVIRONMENT, "pythonCode": {"type": "string"},
                   "timeoutInSeconds": {"type": "number", "exclusiveMinimum": 0}}}),
]


def tools_for(runtime: str) -> list[types.Tool]:
    """The tools a pool of `runtime` sessions lists: a NodeLTS session has no Python, so its pool does not
    offer runPythonCodeInRemoteEnvironment (a call still answers why, as an error result)."""
    has_python = policy_of(runtime).has_python
    return [tool for tool in TOOLS if has_python or tool.name != "runPythonCodeInRemoteEnvironment"]


class ToolFailure(Exception):
    """A tool call that cannot run; its message goes back to the agent as an error result."""


class Environments:
    """The MCP tools over the pool's sessions: environmentId is the session's identifier."""

    def __init__(self, pool: Pool, max_execution_time: float) -> None:
        self.pool = pool
        self.limit = max_execution_time
        self.launched: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.policy = policy_of(pool.sandbox.runtime)

    def launch(self) -> dict[str, Any]:
        environment = str(uuid.uuid4())
        self.launched[environment] = None
        while len(self.launched) > MAX_ENVIRONMENTS:  # ids never used keep nothing alive: forget the oldest
            self.launched.popitem(last=False)
        return {"environmentId": environment}

    def known(self, environment: Any) -> bool:
        """Whether `environment` names an environment: one launchShell returned, or a session of the pool
        that a REST client opened with that identifier (any identifier the official pattern allows)."""
        return isinstance(environment, str) and (environment in self.launched or (
            IDENTIFIER.fullmatch(environment) is not None and self.pool.find(environment) is not None))

    async def _run(self, environment: Any, code: str, timeout: Any) -> Any:
        if not self.known(environment):
            raise ToolFailure(f"Unknown environmentId {environment!r}: call launchShell first and pass the "
                              "environmentId it returned (or the identifier of a session the pool has).")
        limit = self.limit
        seconds = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else min(EXECUTION_LIMIT, limit)
        try:
            session = await self.pool.get(environment)
        except (PoolFull, SessionStartFailed) as problem:
            raise ToolFailure(str(problem)) from None
        outcome = session.submit(code, min(seconds, limit), self.policy.hosted_values)
        await outcome.done.wait()
        return outcome

    async def shell(self, arguments: dict[str, Any]) -> dict[str, Any]:
        command, argv, stdin = arguments.get("shellCommand"), arguments.get("execCommandAndArgs"), arguments.get("stdin")
        if (command is None) == (argv is None):
            raise ToolFailure("Give exactly one of shellCommand (a string) or execCommandAndArgs (a list of strings).")
        argv = list(argv) if argv is not None else ["/bin/bash", "-c", str(command)]
        code = self.policy.command(argv, stdin)
        outcome = await self._run(arguments.get("environmentId"), code, arguments.get("timeoutInSeconds"))
        exit_code = hosted_value(outcome.result) if self.policy.hosted_values else outcome.result
        if outcome.error_code or not isinstance(exit_code, int):
            raise ToolFailure(f"{outcome.error_code or 'Failed'}: {outcome.error_message or outcome.stderr}".strip())
        return {"stdout": outcome.stdout, "stderr": outcome.stderr, "exitCode": exit_code}

    async def python(self, arguments: dict[str, Any]) -> dict[str, Any]:
        code = arguments.get("pythonCode")
        if not isinstance(code, str):
            raise ToolFailure("pythonCode must be a string of Python source.")
        if not self.policy.has_python:
            raise ToolFailure("This pool runs NodeLTS sessions, which have no Python; start a PythonLTS or Shell pool.")
        if self.policy.shell_body:  # a session of commands: the code runs as a new Python process
            code = self.policy.command([sys.executable, "-c", code], None)
        outcome = await self._run(arguments.get("environmentId"), code, arguments.get("timeoutInSeconds"))
        if self.policy.status_is_exit_code:
            status = "Succeeded" if outcome.result == 0 and not outcome.error_code else "Failed"
            return {"status": status, "stdout": outcome.stdout, "stderr": outcome.stderr, "result": ""}
        value = hosted_value(outcome.result)
        return {"status": outcome.status, "stdout": outcome.stdout, "stderr": outcome.stderr,
                "result": value if not isinstance(value, dict) else json.dumps(value)}


def package_version() -> str:
    try:
        return importlib.metadata.version("remote_kernel")
    except importlib.metadata.PackageNotFoundError:
        return "0"


Handler = TypeVar("Handler", bound=Callable[..., Any])


def registration(register: Any) -> Callable[[Handler], Handler]:
    """One of the SDK's handler registrations (`server.list_tools`, `server.call_tool`), typed: the SDK
    leaves them unannotated, and each gives back the handler it registers."""
    return cast(Callable[[Handler], Handler], register())


def build_server(environments: Environments) -> Server:
    server: Server = Server(SERVER_NAME, version=package_version())

    @registration(server.list_tools)
    async def list_tools() -> list[types.Tool]:
        return tools_for(environments.pool.sandbox.runtime.name)

    @registration(server.call_tool)
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        try:
            if name == "launchShell":
                answer = environments.launch()
            elif name == "runShellCommandInRemoteEnvironment":
                answer = await environments.shell(arguments)
            elif name == "runPythonCodeInRemoteEnvironment":
                answer = await environments.python(arguments)
            else:
                raise ToolFailure(f"No tool {name!r}; see tools/list.")
        except ToolFailure as failure:
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(failure))], isError=True)
        return answer

    return server


class McpEndpoint:
    """The ASGI app behind `/mcp` (the pool's gate has already checked `x-ms-apikey`)."""

    def __init__(self, pool: Pool, max_execution_time: float) -> None:
        self.manager = StreamableHTTPSessionManager(build_server(Environments(pool, max_execution_time)),
                                                    json_response=True,
                                                    stateless=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope, receive, request_id = await tolerant_request(scope, receive)
        await self.manager.handle_request(scope, receive, send if request_id is None else answering(send, request_id))


#: the id the SDK gives a JSON-RPC error it cannot tie to a request (an unknown method such as server/discover)
SDK_UNTIED_ID = "server-error"


def answering(send: Send, request_id: Any) -> Send:
    """`send` that gives the request's id to a JSON error answer the SDK sent with its placeholder id.

    JSON-RPC 2.0 says an error answer carries the request's id when it could be read; clients (the MCP
    SDK's first `server/discover`) match answers by id. Event streams pass through untouched."""
    start: Message | None = None
    body = bytearray()

    async def send_answer(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if not content_type.startswith(b"application/json"):
                return await send(message)
            start = message
            return None
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return None
        content = bytes(body)
        try:
            answer = json.loads(content)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("id") == SDK_UNTIED_ID and "error" in answer:
            content = json.dumps({**answer, "id": request_id}).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        await send({**start, "headers": headers + [(b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    return send_answer


async def tolerant_request(scope: Scope, receive: Receive) -> tuple[Scope, Receive, Any]:
    """Accept the requests the hosted tutorials send: no Accept header, and `initialize` without params.

    The SDK insists on `Accept: application/json` and on initialize's params, which the hosted
    server does not; the request is completed here, nothing else about it changes. Also returns the
    JSON-RPC id of a single request (None otherwise), for `answering`.
    """
    if scope.get("method") != "POST":
        return scope, receive, None
    headers = [(k, v) for k, v in scope["headers"] if k != b"accept"]
    accept = b", ".join(v for k, v in scope["headers"] if k == b"accept")
    if b"application/json" not in accept:
        accept = b"application/json, text/event-stream" + (b", " + accept if accept else b"")
    body, more = bytearray(), True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return scope, _replay([message], receive), None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY:
            return {**scope, "headers": headers + [(b"accept", accept)]}, _replay(
                [{"type": "http.request", "body": bytes(body), "more_body": more}], receive), None
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if isinstance(request, dict) and request.get("method") == "initialize" and request.get("params") is None:
        body = bytearray(json.dumps({**request, "params": DEFAULT_INITIALIZE}).encode())
        headers = [(k, v) for k, v in headers if k != b"content-length"] + [(b"content-length", str(len(body)).encode())]
    request_id = request.get("id") if isinstance(request, dict) else None
    return {**scope, "headers": headers + [(b"accept", accept)]}, _replay(
        [{"type": "http.request", "body": bytes(body), "more_body": False}], receive), request_id


def _replay(messages: list[Message], then: Receive) -> Receive:
    """`receive` that first gives back what was already read, then waits on the connection again."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive
