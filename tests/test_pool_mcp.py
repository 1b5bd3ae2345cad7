"""The pool's MCP server at /mcp, driven by the official MCP Python SDK's own client (and by the hosted
tutorials' bare JSON-RPC calls): launchShell, runShellCommandInRemoteEnvironment,
runPythonCodeInRemoteEnvironment over sandboxed sessions, with the x-ms-apikey checked."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from conftest import PoolProcess, bubblewrap_usable, start_pool
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

TOOLS = {"launchShell", "runShellCommandInRemoteEnvironment", "runPythonCodeInRemoteEnvironment"}


@pytest.fixture(scope="module")
def shell_pool():
    pool = start_pool("--container-type", "Shell", "--max-sessions", "10", "--ready-sessions", "1")
    yield pool
    pool.stop()


def with_client(pool: PoolProcess, scenario: Callable[[ClientSession], Awaitable[Any]], key: str | None = None) -> Any:
    """Run `scenario` with an initialized SDK client session on the pool's MCP endpoint."""
    async def main() -> Any:
        headers = {"x-ms-apikey": pool.token if key is None else key}
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(60, read=300)) as http:
            async with streamable_http_client(f"{pool.endpoint}/mcp", http_client=http) as (read, write, _):
                async with ClientSession(read, write) as client:
                    await client.initialize()
                    return await scenario(client)
    return asyncio.run(asyncio.wait_for(main(), 180))


def test_the_sdk_client_lists_the_three_tools_and_runs_python_and_shell_in_one_environment(pool):
    async def scenario(client: ClientSession) -> dict:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        launched = await client.call_tool("launchShell", {})
        environment = launched.structuredContent["environmentId"]
        first = await client.call_tool("runPythonCodeInRemoteEnvironment",
                                       {"environmentId": environment, "pythonCode": "x = 6\nprint('hi')\nx * 7"})
        again = await client.call_tool("runPythonCodeInRemoteEnvironment",
                                       {"environmentId": environment, "pythonCode": "open('made.txt', 'w').write('x')\nx"})
        shell = await client.call_tool("runShellCommandInRemoteEnvironment",
                                       {"environmentId": environment, "shellCommand": "ls; id -u; exit 3"})
        argv = await client.call_tool("runShellCommandInRemoteEnvironment",
                                      {"environmentId": environment, "execCommandAndArgs": ["cat"], "stdin": "in\n"})
        failed = await client.call_tool("runPythonCodeInRemoteEnvironment",
                                        {"environmentId": environment, "pythonCode": "1/0"})
        unknown = await client.call_tool("runPythonCodeInRemoteEnvironment",
                                         {"environmentId": "not-launched", "pythonCode": "1"})
        return {"tools": tools, "first": first, "again": again, "shell": shell, "argv": argv, "failed": failed,
                "unknown": unknown}

    seen = with_client(pool, scenario)
    assert set(seen["tools"]) == TOOLS
    assert seen["tools"]["runPythonCodeInRemoteEnvironment"].inputSchema["required"] == ["environmentId", "pythonCode"]
    assert seen["first"].structuredContent == {"status": "Succeeded", "stdout": "hi\n", "stderr": "", "result": 42}
    assert seen["again"].structuredContent["result"] == 6  # one session: the state is kept
    shell = seen["shell"].structuredContent
    assert shell["exitCode"] == 3 and shell["stdout"].startswith("made.txt\n")
    if bubblewrap_usable()[0]:
        assert shell["stdout"].endswith("\n65534\n")  # sandboxed like any session
    assert seen["argv"].structuredContent == {"stdout": "in\n", "stderr": "", "exitCode": 0}
    assert seen["failed"].structuredContent["status"] == "Failed"
    assert "ZeroDivisionError" in seen["failed"].structuredContent["stderr"]
    assert seen["unknown"].isError and "launchShell" in seen["unknown"].content[0].text


def test_a_shell_pool_serves_the_same_tools(shell_pool):
    async def scenario(client: ClientSession) -> tuple:
        environment = (await client.call_tool("launchShell", {})).structuredContent["environmentId"]
        shell = await client.call_tool("runShellCommandInRemoteEnvironment",
                                       {"environmentId": environment, "shellCommand": "echo hello > f; cat f"})
        python = await client.call_tool("runPythonCodeInRemoteEnvironment",
                                        {"environmentId": environment, "pythonCode": "print(open('f').read().upper())"})
        return shell.structuredContent, python.structuredContent

    shell, python = with_client(shell_pool, scenario)
    assert shell == {"stdout": "hello\n", "stderr": "", "exitCode": 0}
    assert python["status"] == "Succeeded" and python["stdout"] == "HELLO\n\n"


def test_a_wrong_or_missing_api_key_is_refused(pool):
    for headers in ({}, {"x-ms-apikey": "wrong"}, {"Authorization": f"Bearer {pool.token}"}):
        answer = httpx.post(f"{pool.endpoint}/mcp", headers=headers,
                            json={"jsonrpc": "2.0", "id": "1", "method": "initialize"})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "Unauthorized"
    with pytest.raises(BaseException) as refused:  # the SDK client fails to initialize
        with_client(pool, lambda client: client.list_tools(), key="wrong")
    assert "401" in repr(refused.value) or "Unauthorized" in repr(refused.value)


def test_the_tutorials_bare_json_rpc_calls_work(pool):
    """sessions-tutorial-shell-mcp.md: curl with only Content-Type and x-ms-apikey, no MCP session."""
    headers = {"Content-Type": "application/json", "x-ms-apikey": pool.token}
    initialized = httpx.post(f"{pool.endpoint}/mcp", headers=headers, timeout=60,
                             json={"jsonrpc": "2.0", "id": "1", "method": "initialize"}).json()
    assert initialized["result"]["protocolVersion"] == "2025-03-26"
    assert "tools" in initialized["result"]["capabilities"]
    launched = httpx.post(f"{pool.endpoint}/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": "2", "method": "tools/call", "params": {"name": "launchShell", "arguments": {}}}).json()
    environment = launched["result"]["structuredContent"]["environmentId"]
    ran = httpx.post(f"{pool.endpoint}/mcp", headers=headers, timeout=120, json={
        "jsonrpc": "2.0", "id": "3", "method": "tools/call", "params": {
            "name": "runShellCommandInRemoteEnvironment",
            "arguments": {"environmentId": environment, "shellCommand": "echo Hello from a shell session"}}}).json()
    assert ran["result"]["structuredContent"]["stdout"] == "Hello from a shell session\n"
