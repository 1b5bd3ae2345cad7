"""Where the bearer token comes from: azure-identity, a static token, or none.

A provider is asked for a token before every request and must answer fast from its cache.
Tokens never appear in a repr, a log line or an error message.
"""
from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from remote_kernel.contract import AUTH_MODES
from remote_kernel.sessions.models import ConfigurationError, RemoteAuthenticationError

DYNAMIC_SESSIONS_SCOPE = "https://dynamicsessions.io/.default"


class TokenProvider(ABC):
    """Gives the bearer token for each request (None: send no Authorization header)."""

    #: What to check when the pool refuses the token; part of the authentication error.
    hint: str = ""

    @abstractmethod
    async def token(self) -> str | None:
        """The token to send now. Raises RemoteAuthenticationError when none can be had."""

    def invalidate(self) -> None:
        """Forget a cached token the pool refused, so that the next `token()` gets a new one."""
        return None  # nothing cached by default

    @property
    def refreshable(self) -> bool:
        """Whether `invalidate()` can lead to a different token (worth one more try after a 401)."""
        return False

    def describe(self) -> str:
        """How requests are authenticated, in words fit for `%session` (never the token)."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAuth(TokenProvider):
    """Send no token: for a local pool started with --no-auth."""

    hint = ("No token was sent (REMOTE_KERNEL_AUTH=none). Set REMOTE_KERNEL_AUTH=token and "
            "REMOTE_KERNEL_TOKEN to the pool's token, or REMOTE_KERNEL_AUTH=azure for a hosted pool.")

    async def token(self) -> str | None:
        return None

    def describe(self) -> str:
        return "none (no Authorization header)"


class StaticToken(TokenProvider):
    """A bearer token used as is (REMOTE_KERNEL_TOKEN): the local pool's --token, or any token."""

    hint = ("The token is REMOTE_KERNEL_TOKEN: for the local pool it must equal the pool's --token; for a "
            "hosted pool it must be an Entra token that has not expired.")

    def __init__(self, token: str) -> None:
        if not token or not token.strip():
            raise RemoteAuthenticationError("The static token is empty: set REMOTE_KERNEL_TOKEN to the pool's token.")
        self.__token = token.strip()

    async def token(self) -> str | None:
        return self.__token

    def describe(self) -> str:
        return "static token (REMOTE_KERNEL_TOKEN)"

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"

    def __reduce__(self) -> Any:  # never pickle a secret along
        raise TypeError("a StaticToken cannot be pickled")


class AzureIdentity(TokenProvider):
    """Entra tokens from azure-identity's DefaultAzureCredential, for hosted pools.

    The credential is created on first use. Tokens are cached and fetched again five minutes
    before they expire; fetching (a blocking call) runs in a worker thread, never on the loop.
    """

    REFRESH_MARGIN = 300.0  # seconds

    hint = ("The token came from azure-identity (DefaultAzureCredential) for the scope "
            f"{DYNAMIC_SESSIONS_SCOPE}.")

    def __init__(self, scope: str = DYNAMIC_SESSIONS_SCOPE, *, credential: Any = None,
                 credential_factory: Callable[[], Any] | None = None) -> None:
        self.scope = scope
        self._credential = credential
        self._credential_factory = credential_factory or _default_azure_credential
        self._cached: tuple[str, float] | None = None  # (token, expires_on as a unix time)
        self._lock = threading.Lock()
        self.fetches = 0  # how many tokens were fetched: for tests and diagnostics

    async def token(self) -> str | None:
        cached = self._fresh()
        if cached is not None:
            return cached
        return await asyncio.to_thread(self._fetch)

    def invalidate(self) -> None:
        self._cached = None

    @property
    def refreshable(self) -> bool:
        return True

    def describe(self) -> str:
        return f"azure-identity (DefaultAzureCredential, scope {self.scope})"

    def __repr__(self) -> str:
        return f"AzureIdentity(scope={self.scope!r})"

    def _fresh(self) -> str | None:
        cached = self._cached
        if cached is not None and cached[1] - time.time() > self.REFRESH_MARGIN:
            return cached[0]
        return None

    def _fetch(self) -> str:
        with self._lock:  # concurrent requests share one fetch
            cached = self._fresh()
            if cached is not None:
                return cached
            try:
                if self._credential is None:
                    self._credential = self._credential_factory()
                access = self._credential.get_token(self.scope)
            except Exception as exc:  # azure-identity raises many kinds; all mean "no token"
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise RemoteAuthenticationError(
                    f"Getting a token for {self.scope} from azure-identity failed: {first_line}. Sign in "
                    "with `az login`, give this machine a managed identity, or set AZURE_CLIENT_ID, "
                    "AZURE_TENANT_ID and AZURE_CLIENT_SECRET; for a pool with a fixed token set "
                    "REMOTE_KERNEL_AUTH=token and REMOTE_KERNEL_TOKEN instead."
                ) from exc
            self.fetches += 1
            token: str = access.token
            self._cached = (token, float(access.expires_on))
            return token


def _default_azure_credential() -> Any:
    from azure.identity import DefaultAzureCredential  # imported late: it is slow to import

    return DefaultAzureCredential()


def auth_from_settings(mode: str | None, token: str | None, endpoint: str) -> TokenProvider:
    """The provider that REMOTE_KERNEL_AUTH and REMOTE_KERNEL_TOKEN ask for.

    With no mode: `azure` for an https endpoint, `token` otherwise (the local pool).
    """
    if mode is None or not mode.strip():
        mode = "azure" if urlsplit(endpoint).scheme.lower() == "https" else "token"
    mode = mode.strip().lower()
    if mode == "azure":
        return AzureIdentity()
    if mode == "token":
        if not token or not token.strip():
            raise RemoteAuthenticationError(
                "REMOTE_KERNEL_AUTH is 'token' (the default for an http endpoint) but no token is set: "
                "set REMOTE_KERNEL_TOKEN to the pool's token (the local pool takes it with --token), or "
                "set REMOTE_KERNEL_AUTH=none for a pool started with --no-auth."
            )
        return StaticToken(token)
    if mode == "none":
        return NoAuth()
    raise ConfigurationError(
        f"REMOTE_KERNEL_AUTH={mode!r} is not a mode this client knows: use one of {', '.join(AUTH_MODES)}."
    )


#: query parameters whose values are not secret (everything else in a shown URL is redacted)
_PUBLIC_PARAMETERS = {"api-version", "identifier", "path", "skip"}


def redacted_url(url: str) -> str:
    """`url` as it may be shown or logged: no `user:password@`, query values other than the public ones redacted."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url.strip())
        netloc = parts.netloc.rpartition("@")[2]
        query = urlencode([(name, value if name.lower() in _PUBLIC_PARAMETERS else "REDACTED")
                           for name, value in parse_qsl(parts.query, keep_blank_values=True)], safe="<>")
        return urlunsplit((parts.scheme, netloc, parts.path, query, "REDACTED" if parts.fragment else ""))
    except ValueError:
        return "<an endpoint that is not a URL>"

