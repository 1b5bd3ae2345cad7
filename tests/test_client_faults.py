"""The client against a loopback server that misbehaves on purpose: retries, breaks, garbage."""
from __future__ import annotations

import asyncio
import io
import json
import os
import socket

import pytest
from fault_server import (
    CountingTransport,
    Exchange,
    FaultServer,
    Received,
    answer,
    error_answer,
    json_answer,
    reset_after,
    stall,
)

from remote_kernel.sessions import (
    BadRequest,
    ExecutionTimeout,
    PayloadTooLarge,
    PoolFull,
    RemoteAuthenticationError,
    RemoteFileNotFound,
    RetryPolicy,
    ServiceUnavailable,
    SessionLost,
    SessionsClient,
    StaticToken,
    TokenProvider,
    UnexpectedResponse,
)

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, total=10.0)
TOKEN = "s3cret-token-value"


def succeeded(value=2, **extra):
    return json_answer(200, {"id": "e1", "identifier": "nb", "status": "Succeeded",
                             "result": {"stdout": "", "stderr": "", "executionResult": value,
                                        "executionTimeInMilliseconds": 3}}, extra or None)


def running(execution_id="e1", location=None):
    location = location or f"/executions/{execution_id}?api-version=2025-10-02-preview&identifier=nb"
    return json_answer(200, {"id": execution_id, "identifier": "nb", "status": "Running"},
                       {"Operation-Location": location, "operation-id": execution_id})


def client_for(server: FaultServer, **kwargs) -> SessionsClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("auth", StaticToken(TOKEN))
    return SessionsClient(kwargs.pop("endpoint", server.url), "nb", **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_429_with_retry_after_is_honoured_and_the_execution_resent():
    async def scenario():
        server = FaultServer.sequence(
            error_answer(429, "SessionsCountExceedsLimit", "too many sessions", {"Retry-After": "1"}),
            succeeded(2))
        async with server, client_for(server) as client:
            execution = await client.execute("1+1")
        assert execution.succeeded and execution.result == 2
        assert len(server.requests) == 2
        assert server.requests[1].at - server.requests[0].at >= 1.0  # base delay alone is 0.01 s

    run(scenario())


def test_503_twice_then_200_succeeds():
    async def scenario():
        server = FaultServer.sequence(answer(503), answer(503), json_answer(200, {"value": []}))
        async with server, client_for(server) as client:
            assert await client.list_files() == []
        assert len(server.requests) == 3

    run(scenario())


def test_an_execution_that_may_have_started_is_never_resent():
    async def scenario():
        server = FaultServer.sequence(answer(503, b"busy"), then=succeeded())
        async with server, client_for(server) as client:
            with pytest.raises(ServiceUnavailable, match="503"):
                await client.execute("counter += 1")
        assert len(server.requests) == 1

    run(scenario())


def test_pool_full_is_reported_once_the_retries_are_spent():
    async def scenario():
        server = FaultServer(error_answer(429, "SessionsCountExceedsLimit", "the pool is at 2 sessions"))
        async with server, client_for(server) as client:
            with pytest.raises(PoolFull, match="max-sessions") as caught:
                await client.execute("1")
        assert len(server.requests) == FAST.attempts
        assert "the pool is at 2 sessions" in caught.value.message

    run(scenario())


def test_retry_after_beyond_the_time_budget_gives_up_at_once():
    async def scenario():
        server = FaultServer(error_answer(429, "SessionsCountExceedsLimit", "full", {"Retry-After": "3600"}))
        async with server, client_for(server) as client:
            with pytest.raises(PoolFull):
                await client.list_files()
        assert len(server.requests) == 1

    run(scenario())


def test_a_connection_that_never_opened_is_retried_then_reported():
    async def scenario():
        with socket.socket() as probe:  # a port with nobody listening
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        transport = CountingTransport()
        async with SessionsClient(f"http://127.0.0.1:{port}", "nb", retry=FAST, transport=transport) as client:
            with pytest.raises(ServiceUnavailable, match="cannot connect.*POOL_MANAGEMENT_ENDPOINT"):
                await client.execute("1")
        assert len(transport.requests) == FAST.attempts  # safe to resend: it never reached a pool

    run(scenario())


def test_connection_reset_during_an_upload_is_reported_not_hung(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(8 << 20))

    async def scenario():
        server = FaultServer(reset_after(256 << 10))
        async with server, client_for(server) as client:
            with pytest.raises(ServiceUnavailable, match="(?i)uploading 'big.bin'.*broke after"):
                await client.upload(source)
        assert len(server.requests) == FAST.attempts  # a file can be sent again, so it was

    run(scenario())


def test_an_unseekable_stream_is_sent_once_when_the_connection_breaks():
    class Pipe(io.RawIOBase):
        def __init__(self):
            self.left = 4 << 20

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = b"x" * n
            self.left -= n
            return n

    async def scenario():
        server = FaultServer(reset_after(64 << 10))
        async with server, client_for(server) as client:
            with pytest.raises(ServiceUnavailable):
                await client.upload(Pipe(), "piped.bin")
        assert len(server.requests) == 1
        assert server.requests[0].headers.get("transfer-encoding") == "chunked"

    run(scenario())


def test_an_unparseable_body_becomes_the_unexpected_response_error():
    async def scenario():
        server = FaultServer(answer(200, b"<html>gateway login</html>", {"Content-Type": "text/html"}))
        async with server, client_for(server) as client:
            with pytest.raises(UnexpectedResponse) as caught:
                await client.execute("1")
        assert caught.value.status_code == 200
        assert "<html>gateway login" in caught.value.message and "not JSON" in caught.value.message

    run(scenario())


def test_json_in_the_wrong_shape_is_unexpected_too():
    async def scenario():
        server = FaultServer(json_answer(200, {"properties": {"status": "Success"}}))
        async with server, client_for(server) as client:
            with pytest.raises(UnexpectedResponse, match="Executing the cell failed: .*no status"):
                await client.execute("1")

    run(scenario())


def test_an_unknown_status_code_reports_status_and_first_bytes():
    async def scenario():
        server = FaultServer(answer(418, b"I am a teapot"))
        async with server, client_for(server) as client:
            with pytest.raises(UnexpectedResponse, match="418.*I am a teapot") as caught:
                await client.file_info("a.txt")
        assert caught.value.status_code == 418

    run(scenario())


def test_a_token_provider_that_fails_gives_the_authentication_error_with_its_hint():
    class Broken(TokenProvider):
        hint = "Check the vault that holds the token."

        async def token(self):
            raise OSError("vault unreachable")

    async def scenario():
        server = FaultServer(succeeded())
        async with server, client_for(server, auth=Broken()) as client:
            with pytest.raises(RemoteAuthenticationError) as caught:
                await client.execute("1")
        assert "vault unreachable" in caught.value.message and "Check the vault" in caught.value.message
        assert server.requests == []

    run(scenario())


def test_401_says_what_to_check_and_never_shows_the_token_even_if_echoed():
    async def scenario():
        server = FaultServer(error_answer(401, "Unauthorized", f"bad token Bearer {TOKEN}"))
        async with server, client_for(server) as client:
            with pytest.raises(RemoteAuthenticationError) as caught:
                await client.list_files()
            assert TOKEN not in repr(client)
        message = str(caught.value)
        assert TOKEN not in message and "<token>" in message
        assert "Azure ContainerApps Session Executor" in message and "dynamicsessions.io" in message
        assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"

    run(scenario())


def test_upload_too_large_and_bad_request_keep_the_pools_message():
    async def scenario():
        server = FaultServer.sequence(
            error_answer(413, "PayloadTooLarge", "upload exceeds 128 MiB"),
            error_answer(400, "InvalidFileName", "names may not contain '..'"))
        async with server, client_for(server) as client:
            with pytest.raises(PayloadTooLarge, match="upload exceeds 128 MiB"):
                await client.upload(io.BytesIO(b"data"), "a.bin")
            with pytest.raises(BadRequest, match=r"names may not contain '\.\.'"):
                await client.upload(io.BytesIO(b"data"), "b.bin")

    run(scenario())


def test_a_long_execution_is_followed_through_operation_location_under_the_endpoint_path():
    base = "/subscriptions/s/resourceGroups/r/sessionPools/p"

    async def scenario():
        server = FaultServer.sequence(running("e7"), running("e7"), succeeded(42, **{"x-ms-session-guid": "pod-9"}))
        async with server:
            async with client_for(server, endpoint=server.url + base) as client:
                execution = await client.execute("slow()")
        assert execution.succeeded and execution.result == 42 and execution.session_guid == "pod-9"
        polls = server.requests[1:]
        assert [r.path for r in polls] == [f"{base}/executions/e7"] * 2
        assert all(r.query == {"api-version": "2025-10-02-preview", "identifier": "nb"} for r in polls)
        assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in polls)

    run(scenario())


def test_an_operation_location_on_another_host_is_not_followed_with_the_token():
    async def scenario():
        server = FaultServer.sequence(running("e3", "https://elsewhere.example/executions/e3"), succeeded(1))
        async with server, client_for(server) as client:
            execution = await client.execute("1")
        assert execution.result == 1
        assert server.requests[1].path == "/executions/e3"

    run(scenario())


def test_cancelling_while_polling_stops_promptly():
    async def scenario():
        polled = asyncio.Event()

        async def still_running(request: Received, exchange: Exchange) -> None:
            if len(server.requests) >= 3:
                polled.set()
            await running("e1")(request, exchange)

        server = FaultServer(still_running)
        async with server, client_for(server) as client:
            task = asyncio.create_task(client.execute("forever()", timeout=200))
            await asyncio.wait_for(polled.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 2)  # a deadline, not a measurement: it ends at once
        assert task.cancelled()

    run(scenario())


def test_cancelling_a_synchronous_execution_closes_its_connection():
    async def scenario():
        server = FaultServer(stall())
        async with server, client_for(server) as client:
            task = asyncio.create_task(client.execute("import time; time.sleep(100)"))
            await server.wait_for_requests(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            deadline = asyncio.get_running_loop().time() + 5
            while server.disconnects < 1:
                assert asyncio.get_running_loop().time() < deadline, "the pool never saw the client leave"
                await asyncio.sleep(0.01)

    run(scenario())


def test_a_pool_that_never_answers_raises_execution_timeout_after_the_margin():
    async def scenario():
        server = FaultServer(stall())
        async with server, client_for(server) as client:
            client.execution_margin = 0.3
            with pytest.raises(ExecutionTimeout, match="no answer within"):
                await client.execute("import time; time.sleep(100)", timeout=1)
        assert len(server.requests) == 1

    run(scenario())


def test_an_execution_the_pool_forgot_means_the_session_was_lost():
    async def scenario():
        server = FaultServer.sequence(running("e1"), error_answer(404, "ExecutionNotFound", "no execution e1"))
        async with server, client_for(server) as client:
            with pytest.raises(SessionLost):
                await client.execute("x")

    run(scenario())


def test_a_download_that_breaks_leaves_no_file_behind(tmp_path):
    async def truncated(request: Received, exchange: Exchange) -> None:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 100000)
        await exchange.writer.drain()
        exchange.reset()

    async def scenario():
        server = FaultServer.sequence(truncated, error_answer(404, "FileNotFound", "no such file"))
        async with server, client_for(server) as client:
            with pytest.raises(ServiceUnavailable, match="broke after .* of 10000000 bytes.*nothing was saved"):
                await client.download("big.bin", tmp_path / "big.bin")
            with pytest.raises(RemoteFileNotFound):
                await client.download("gone.bin", tmp_path / "gone.bin")
        assert list(tmp_path.iterdir()) == []

    run(scenario())


def test_download_into_a_folder_keeps_the_remote_name_and_reports_progress(tmp_path):
    payload = os.urandom(3 << 20)

    async def scenario():
        server = FaultServer(answer(200, payload, {"Content-Type": "application/octet-stream"}))
        seen: list[tuple[int, int | None]] = []
        async with server, client_for(server) as client:
            written = await client.download("sub/report 1.bin", tmp_path, progress=lambda d, t: seen.append((d, t)))
        assert written == len(payload)
        assert (tmp_path / "report 1.bin").read_bytes() == payload
        assert seen[0] == (0, len(payload)) and seen[-1] == (len(payload), len(payload))
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert server.requests[0].path == "/files/report 1.bin/content"
        assert server.requests[0].query["path"] == "sub"

    run(scenario())


def test_requests_share_one_kept_alive_connection():
    async def scenario():
        server = FaultServer(json_answer(200, {"value": []}))
        async with server, client_for(server) as client:
            for _ in range(5):
                await client.list_files()
        assert len(server.requests) == 5 and server.connections == 1

    run(scenario())


def test_a_v1_session_is_deleted_through_the_newer_version_and_a_missing_one_is_fine():
    async def scenario():
        server = FaultServer.sequence(answer(204),
                                      error_answer(404, "SessionWithIdentifierNotFound", "no such session"))
        async with server, client_for(server, api_version="2024-02-02-preview") as client:
            await client.delete_session()
            await client.delete_session()
        first = server.requests[0]
        assert (first.method, first.path) == ("DELETE", "/session")
        assert first.query == {"api-version": "2025-10-02-preview", "identifier": "nb"}

    run(scenario())


def test_a_reassigned_identifier_names_a_new_session_on_the_wire():
    async def scenario():
        server = FaultServer(succeeded(1))
        async with server, client_for(server) as client:
            await client.execute("1")
            client.identifier = "nb-new & odd"
            await client.execute("1")
        assert [r.query["identifier"] for r in server.requests] == ["nb", "nb-new & odd"]  # encoded, decoded
        assert json.loads(server.requests[1].body)["timeoutInSeconds"] == 220  # the client's default

    run(scenario())
