"""The kernel's configuration, read once from the environment: one variable per kernel row of
`remote_kernel.settings.SETTINGS` (its parser, its default), plus the rules between settings here.

Reading never fails: a value that cannot be used becomes a `problem`, a sentence saying what
to fix, which the kernel shows on the first cell instead of dying at start-up. A value that is
used, but not as given (a time limit above a hosted pool's cap, a setting of the embedded pool
given with an endpoint), becomes a `notice`, shown once on the first cell.
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remote_kernel.contract import DEFAULT_API_VERSION, EXECUTION_LIMIT, JUPYTER_REPR_VERSIONS
from remote_kernel.settings import EMBEDDED_SETTINGS, KERNEL_SETTINGS, pool_argv

#: a hosted pool's cap on one execution; local pools take what the kernel asks
MAX_TIMEOUT = DEFAULT_TIMEOUT = EXECUTION_LIMIT
#: what a management endpoint looks like
ENDPOINT = re.compile(r"^(https?|http\+unix)://[^/\s]+")
#: the settings whose wrong value is kept (and reported) rather than replaced by the default, as kept
KEPT_WHEN_WRONG: dict[str, Callable[[str], str]] = {"auth_mode": str.lower, "api_version": str, "identifier": str}


@dataclass(frozen=True)
class KernelConfig:
    """What the kernel needs to reach its session; `token` is never printed."""

    endpoint: str | None  # None: start an embedded local pool
    auth_mode: str
    token: str | None = field(default=None, repr=False)
    api_version: str = DEFAULT_API_VERSION
    identifier: str = ""
    identifier_from_env: bool = False
    timeout: float = DEFAULT_TIMEOUT
    keep_session: bool = False
    rich: bool = True  # REMOTE_KERNEL_RICH: carry displays, figures and tables home (the session shim)
    download_limit: int = 4 << 30  # REMOTE_KERNEL_DOWNLOAD_LIMIT: the largest file %download accepts, in bytes
    active_content: bool = False  # REMOTE_KERNEL_ACTIVE_CONTENT: let scripts in outputs reach the front end
    files: str = "off"  # REMOTE_KERNEL_FILES: "notebook" syncs the notebook's folder to the session (notebook_files)
    files_exclude: tuple[str, ...] = ()  # REMOTE_KERNEL_FILES_EXCLUDE: patterns left out of that sync
    #: the embedded pool's settings that were given, as variable → value (checked)
    pool_settings: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()

    @property
    def embedded(self) -> bool:
        """True when the kernel runs its own local pool (no POOL_MANAGEMENT_ENDPOINT)."""
        return self.endpoint is None

    @property
    def jupyter_repr(self) -> bool:
        """Whether execute requests can ask for the display repr of a result."""
        return self.api_version in JUPYTER_REPR_VERSIONS

    @property
    def hosted(self) -> bool:
        """True for an Azure Container Apps pool, whose cap on one execution is 220 s."""
        return self.endpoint is not None and is_hosted(self.endpoint)

    @property
    def pool_type(self) -> str:
        if self.embedded:
            return "embedded local pool"
        if self.hosted:
            return "Azure Container Apps session pool"
        return "session pool at a custom endpoint"

    @property
    def execution_limit(self) -> float:
        """The longest `timeoutInSeconds` the kernel sends: 220 on a hosted pool, else the cell time limit."""
        return MAX_TIMEOUT if self.hosted else max(MAX_TIMEOUT, self.timeout)

    def pool_args(self) -> list[str]:
        """The `remote-kernel pool` options that carry this kernel's settings to its embedded pool."""
        values: dict[str, object] = {EMBEDDED_SETTINGS[name].key: value for name, value in self.pool_settings.items()}
        if self.timeout > MAX_TIMEOUT:
            values["max_execution_time"] = self.timeout
        return pool_argv(values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KernelConfig:
        """Read every setting of `settings.SETTINGS` once; collect what is wrong instead of raising.

        Each variable is read by its row's parser; what follows here are the rules between settings
        (the authentication mode's default, the hosted cap on the time limit, the pool's settings
        with an endpoint)."""
        env = os.environ if env is None else env
        problems: list[str] = []
        notices: list[str] = []
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        for row in KERNEL_SETTINGS:
            assert row.variable is not None
            raw = env.get(row.variable, "")
            raw = raw.strip() if row.strip else raw
            values[row.key] = row.default
            if not raw:
                continue
            given[row.key] = raw
            if row.key == "endpoint" and not ENDPOINT.match(raw):
                from remote_kernel.sessions.auth import redacted_url  # not at start-up: it imports httpx

                problems.append(f"POOL_MANAGEMENT_ENDPOINT={redacted_url(raw)!r} is not an http(s) URL: set "
                                "it to the pool's management endpoint, https://<region>.dynamicsessions.io/"
                                "subscriptions/"
                                "…/sessionPools/<pool>, or unset it to use an embedded local pool.")
            try:
                values[row.key] = row.read(raw)
            except ValueError as error:
                problems.append(str(error))
                if row.key in KEPT_WHEN_WRONG:  # kept as given (what `%session` shows); others fall back
                    values[row.key] = KEPT_WHEN_WRONG[row.key](raw)

        endpoint: str | None = values["endpoint"]
        if endpoint is not None:
            endpoint = endpoint.rstrip("/")

        token: str | None = values["token"]
        auth_mode: str | None = values["auth_mode"]
        if auth_mode is None:
            if endpoint is None:
                auth_mode = "token"
            elif endpoint.lower().startswith("https://"):
                auth_mode = "token" if token else "azure"
            else:
                auth_mode = "token" if token else "none"
        elif auth_mode == "token" and endpoint is not None and not token:
            problems.append("REMOTE_KERNEL_AUTH=token needs REMOTE_KERNEL_TOKEN: set it to the pool's bearer token, "
                            "or set REMOTE_KERNEL_AUTH=azure to sign in with Azure identity.")

        identifier = values["identifier"] or str(uuid.uuid4())

        timeout: float = values["timeout"]
        if timeout > MAX_TIMEOUT and endpoint is not None and is_hosted(endpoint):
            notices.append(f"REMOTE_KERNEL_TIMEOUT={given['timeout']} is more than a hosted pool allows: cells here "
                           f"may run {MAX_TIMEOUT:g} s at most (the service's cap). Use %%long for a longer cell, or "
                           "the embedded local pool (unset POOL_MANAGEMENT_ENDPOINT), which takes any limit.")
            timeout = MAX_TIMEOUT

        pool_settings = _pool_settings(env, problems)
        if endpoint is not None and pool_settings:
            notices.append(f"{', '.join(pool_settings)} only set{'s' if len(pool_settings) == 1 else ''} up the "
                           "embedded local pool; with POOL_MANAGEMENT_ENDPOINT set, the pool there decides "
                           "(ignored).")
            pool_settings = {}

        return cls(endpoint=endpoint, auth_mode=auth_mode, token=token, api_version=values["api_version"],
                   identifier=identifier, identifier_from_env="identifier" in given, timeout=timeout,
                   keep_session=values["keep_session"], rich=values["rich"], pool_settings=pool_settings,
                   download_limit=values["download_limit"], active_content=values["active_content"],
                   files=values["files"], files_exclude=values["files_exclude"], problems=tuple(problems),
                   notices=tuple(notices))

    def describe(self, *, endpoint: str | None = None) -> list[tuple[str, str]]:
        """The settings as (name, value) rows for `%session` (the rows of `SETTINGS` with a label); never the token."""
        from remote_kernel.sessions.auth import redacted_url  # not at start-up: it imports httpx

        where = endpoint or self.endpoint
        rows: list[tuple[str, str]] = []
        for row in KERNEL_SETTINGS:
            if row.label is None:
                continue
            if row.key == "endpoint":
                rows.append((row.label, redacted_url(where) if where else "(starting)"))
            elif row.key == "identifier":
                rows.append((row.label, self.identifier + (f"  ({row.variable})" if self.identifier_from_env
                                                           else "")))
            elif row.key == "auth_mode":
                rows.append((row.label, self.auth_mode + ("  (token set)" if self.token and self.auth_mode == "token"
                                                          else "")))
                rows.append(("pool type", self.pool_type))
            else:
                rows.append((row.label, row.row(getattr(self, row.key))))
        if self.embedded:
            rows += [(f"session {row.key}", row.row(self.pool_settings.get(name, row.default_text)))
                     for name, row in EMBEDDED_SETTINGS.items()]
        return rows


def is_hosted(endpoint: str) -> bool:
    """Whether an endpoint is an Azure Container Apps session pool (the host names it)."""
    host = re.sub(r"^[a-z]+://", "", endpoint.strip().lower()).split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return host.endswith(".dynamicsessions.io")


def _pool_settings(env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """The embedded pool's settings that are given, checked (what is wrong goes to `problems`), as the
    text their pool flags take."""
    found: dict[str, str] = {}
    for name, row in EMBEDDED_SETTINGS.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            found[name] = row.format(row.read(raw))
        except ValueError as error:
            problems.append(str(error))
    return found
