"""Token providers: lazy azure-identity with a cached, refreshed token; static; none; settings."""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest
from fault_server import FaultServer, json_answer

from remote_kernel.sessions import (
    AzureIdentity,
    ConfigurationError,
    NoAuth,
    RemoteAuthenticationError,
    SessionsClient,
    StaticToken,
    auth_from_settings,
)


@dataclass
class AccessToken:
    token: str
    expires_on: int


class FakeCredential:
    """Stands in for DefaultAzureCredential: hands out numbered tokens, records where it ran."""

    def __init__(self, lifetime: float = 3600, fail: Exception | None = None) -> None:
        self.lifetime = lifetime
        self.fail = fail
        self.calls: list[tuple[str, int]] = []  # (scope, thread id)

    def get_token(self, scope: str) -> AccessToken:
        self.calls.append((scope, threading.get_ident()))
        if self.fail:
            raise self.fail
        return AccessToken(f"token-{len(self.calls)}", int(time.time() + self.lifetime))


def test_azure_credential_is_created_lazily_and_its_blocking_call_runs_off_the_loop():
    created: list[FakeCredential] = []

    def factory() -> FakeCredential:
        created.append(FakeCredential())
        return created[-1]

    provider = AzureIdentity(credential_factory=factory)
    assert created == []  # nothing happens until a token is needed

    async def scenario():
        loop_thread = threading.get_ident()
        first = await provider.token()
        again = await asyncio.gather(*(provider.token() for _ in range(5)))
        return loop_thread, first, again

    loop_thread, first, again = asyncio.run(scenario())
    assert first == "token-1" and set(again) == {"token-1"}
    assert len(created) == 1 and created[0].calls[0][0] == "https://dynamicsessions.io/.default"
    assert created[0].calls[0][1] != loop_thread
    assert provider.fetches == 1


def test_azure_token_is_fetched_again_within_five_minutes_of_expiry():
    credential = FakeCredential(lifetime=299)  # already inside the refresh margin
    provider = AzureIdentity(credential=credential)

    async def scenario():
        return [await provider.token() for _ in range(3)]

    assert asyncio.run(scenario()) == ["token-1", "token-2", "token-3"]
    credential.lifetime = 3600
    provider.invalidate()
    assert asyncio.run(scenario()) == ["token-4", "token-4", "token-4"]


def test_azure_failure_is_an_authentication_error_that_says_what_to_do():
    provider = AzureIdentity(credential=FakeCredential(fail=RuntimeError("DefaultAzureCredential failed to "
                                                                          "retrieve a token\nmore lines")))
    with pytest.raises(RemoteAuthenticationError) as caught:
        asyncio.run(provider.token())
    message = caught.value.message
    assert "failed to retrieve a token" in message and "more lines" not in message
    assert "az login" in message and "REMOTE_KERNEL_TOKEN" in message


def test_a_refused_azure_token_is_replaced_once_and_only_once():
    async def scenario():
        server = FaultServer.sequence(json_answer(401, {"error": {"code": "Unauthorized", "message": "expired"}}),
                                      json_answer(200, {"value": []}),
                                      then=json_answer(401, {"error": {"code": "Unauthorized", "message": "no"}}))
        credential = FakeCredential()
        async with server, SessionsClient(server.url, "nb", auth=AzureIdentity(credential=credential)) as client:
            assert await client.list_files() == []
            with pytest.raises(RemoteAuthenticationError, match="Azure ContainerApps Session Executor"):
                await client.list_files()
        assert [r.headers["authorization"] for r in server.requests] == [
            "Bearer token-1", "Bearer token-2", "Bearer token-2", "Bearer token-3"]

    asyncio.run(scenario())


def test_tokens_never_show_in_reprs():
    provider = StaticToken("very-secret")
    assert "very-secret" not in repr(provider) and "very-secret" not in provider.describe()
    client = SessionsClient("http://127.0.0.1:9", "nb", auth=provider)
    assert "very-secret" not in repr(client)
    asyncio.run(client.aclose())
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(provider)


def test_settings_choose_azure_for_https_and_the_token_otherwise():
    assert isinstance(auth_from_settings(None, None, "https://eastus.dynamicsessions.io/subscriptions/x"),
                      AzureIdentity)
    assert isinstance(auth_from_settings(None, "t", "http://127.0.0.1:6000"), StaticToken)
    assert isinstance(auth_from_settings("NONE", None, "http://127.0.0.1:6000"), NoAuth)
    assert isinstance(auth_from_settings("azure", "ignored", "http://127.0.0.1:6000"), AzureIdentity)
    assert asyncio.run(auth_from_settings("token", " t \n", "https://x").token()) == "t"


def test_token_mode_without_a_token_says_to_set_remote_kernel_token():
    with pytest.raises(RemoteAuthenticationError, match="REMOTE_KERNEL_TOKEN"):
        auth_from_settings(None, None, "http://127.0.0.1:6000")
    with pytest.raises(RemoteAuthenticationError, match="REMOTE_KERNEL_TOKEN"):
        auth_from_settings("token", "  ", "https://x")


def test_unknown_auth_mode_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="azure, token, none") as caught:
        auth_from_settings("kerberos", None, "https://x")
    assert isinstance(caught.value, ValueError)


def test_endpoint_must_be_a_plain_http_url():
    for bad in ("ftp://x", "eastus.dynamicsessions.io", "https://x/p?api-version=1"):
        with pytest.raises(ConfigurationError):
            SessionsClient(bad, "nb")
