"""The client of the dynamic-sessions REST contract. Knows nothing of Jupyter.

`SessionsClient` speaks every api-version of the contract; `auth_from_settings` picks how it
authenticates; every error it raises is a `SessionsError` (the tree is in `models`).
"""
from remote_kernel.sessions.auth import AzureIdentity, NoAuth, StaticToken, TokenProvider, auth_from_settings
from remote_kernel.sessions.client import RetryPolicy, SessionsClient
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
from remote_kernel.sessions.wire import DEFAULT_API_VERSION, SUPPORTED_API_VERSIONS

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
