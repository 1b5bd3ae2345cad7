"""The client of the dynamic-sessions REST contract. Knows nothing of Jupyter.

`SessionsClient` speaks every api-version of the contract; `auth_from_settings` picks how it
authenticates; every error it raises is a `SessionsError` (the tree is in `models`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from remote_kernel.contract import DEFAULT_API_VERSION
from remote_kernel.sessions.models import (
    AnswerTooLarge,
    BadRequest,
    ConfigurationError,
    Execution,
    ExecutionError,
    ExecutionStatus,
    ExecutionTimeout,
    ImageResult,
    PayloadTooLarge,
    PoolFull,
    RemoteAuthenticationError,
    RemoteFile,
    RemoteFileNotFound,
    ServiceUnavailable,
    SessionInfo,
    SessionLost,
    SessionNotFound,
    SessionsError,
    UnexpectedResponse,
)
from remote_kernel.sessions.wire import SUPPORTED_API_VERSIONS

if TYPE_CHECKING:
    from remote_kernel.sessions.auth import AzureIdentity, NoAuth, StaticToken, TokenProvider, auth_from_settings
    from remote_kernel.sessions.client import RetryPolicy, SessionsClient

#: imported on first use: the client and auth import httpx (~0.1 s), which a kernel needs only at its
#: first cell, not before it answers its front end (the models and the wire are light)
_LAZY = {"SessionsClient": "client", "RetryPolicy": "client", "AzureIdentity": "auth", "NoAuth": "auth",
         "StaticToken": "auth", "TokenProvider": "auth", "auth_from_settings": "auth"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "AnswerTooLarge",
    "SessionsClient",
    "RetryPolicy",
    "TokenProvider",
    "StaticToken",
    "NoAuth",
    "AzureIdentity",
    "auth_from_settings",
    "SUPPORTED_API_VERSIONS",
    "DEFAULT_API_VERSION",
    "Execution",
    "ExecutionStatus",
    "ExecutionError",
    "ImageResult",
    "RemoteFile",
    "SessionInfo",
    "SessionsError",
    "RemoteAuthenticationError",
    "PoolFull",
    "SessionNotFound",
    "SessionLost",
    "RemoteFileNotFound",
    "BadRequest",
    "PayloadTooLarge",
    "ExecutionTimeout",
    "ServiceUnavailable",
    "UnexpectedResponse",
    "ConfigurationError",
]
