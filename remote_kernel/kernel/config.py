"""The kernel's configuration, read once from the environment (DESIGN.md's table).

Reading never fails: a value that cannot be used becomes a `problem`, a sentence saying what
to fix, which the kernel shows on the first cell instead of dying at start-up. A value that is
used, but not as given (a time limit above a hosted pool's cap, a setting of the embedded pool
given with an endpoint), becomes a `notice`, shown once on the first cell.
"""
from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Mapping

from remote_kernel.contract import (API_VERSIONS, AUTH_MODES, DEFAULT_API_VERSION, EXECUTION_LIMIT, IDENTIFIER,
                                     IDENTIFIER_RULE, JUPYTER_REPR_VERSIONS)
from remote_kernel.sizes import format_size, parse_size

#: a hosted pool's cap on one execution; local pools take what the kernel asks
MAX_TIMEOUT = DEFAULT_TIMEOUT = EXECUTION_LIMIT
#: The embedded pool's settings: variable → (pool option, its default as `%session` shows it)
EMBEDDED_SETTINGS = {
    "REMOTE_KERNEL_MEMORY": ("--memory", "1G"),
    "REMOTE_KERNEL_DISK": ("--disk", "1G"),
    "REMOTE_KERNEL_EGRESS": ("--egress", "disabled"),
    "REMOTE_KERNEL_SANDBOX": ("--sandbox", "auto"),
    "REMOTE_KERNEL_PYTHON": ("--python", "the kernel's own interpreter"),
}
EGRESS_MODES = ("enabled", "disabled")
SANDBOX_MODES = ("auto", "bubblewrap", "none")
FILES_MODES = ("off", "notebook")  # REMOTE_KERNEL_FILES


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
        args = [arg for name, value in self.pool_settings.items() for arg in (EMBEDDED_SETTINGS[name][0], value)]
        if self.timeout > MAX_TIMEOUT:
            args += ["--max-execution-time", f"{self.timeout:g}"]
        return args

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KernelConfig:
        """Read every setting once; collect what is wrong instead of raising."""
        env = os.environ if env is None else env
        problems: list[str] = []

        endpoint = env.get("POOL_MANAGEMENT_ENDPOINT", "").strip() or None
        if endpoint is not None:
            if not re.match(r"^(https?|http\+unix)://[^/\s]+", endpoint):
                from remote_kernel.sessions.auth import redacted_url  # not at start-up: it imports httpx

                problems.append(f"POOL_MANAGEMENT_ENDPOINT={redacted_url(endpoint)!r} is not an http(s) URL: set "
                                "it to the pool's management endpoint, https://<region>.dynamicsessions.io/"
                                "subscriptions/"
                                "…/sessionPools/<pool>, or unset it to use an embedded local pool.")
            endpoint = endpoint.rstrip("/")

        token = env.get("REMOTE_KERNEL_TOKEN") or None
        auth_mode = env.get("REMOTE_KERNEL_AUTH", "").strip().lower()
        if not auth_mode:
            if endpoint is None:
                auth_mode = "token"
            elif endpoint.lower().startswith("https://"):
                auth_mode = "token" if token else "azure"
            else:
                auth_mode = "token" if token else "none"
        if auth_mode not in AUTH_MODES:
            problems.append(f"REMOTE_KERNEL_AUTH={auth_mode!r} is not one of {', '.join(AUTH_MODES)}.")
        elif auth_mode == "token" and endpoint is not None and not token:
            problems.append("REMOTE_KERNEL_AUTH=token needs REMOTE_KERNEL_TOKEN: set it to the pool's bearer token, "
                            "or set REMOTE_KERNEL_AUTH=azure to sign in with Azure identity.")

        api_version = env.get("REMOTE_KERNEL_API_VERSION", "").strip() or DEFAULT_API_VERSION
        if api_version not in API_VERSIONS:
            problems.append(f"REMOTE_KERNEL_API_VERSION={api_version!r} is not supported: use one of "
                            f"{', '.join(API_VERSIONS)}.")

        identifier = env.get("REMOTE_KERNEL_IDENTIFIER", "").strip()
        from_env = bool(identifier)
        if from_env and not IDENTIFIER.fullmatch(identifier):
            problems.append(f"REMOTE_KERNEL_IDENTIFIER={identifier!r} is not a valid identifier: use "
                            f"{IDENTIFIER_RULE}.")
        identifier = identifier or str(uuid.uuid4())

        notices: list[str] = []
        timeout = DEFAULT_TIMEOUT
        raw_timeout = env.get("REMOTE_KERNEL_TIMEOUT", "").strip()
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
                if not 0 < timeout < float("inf"):
                    raise ValueError
            except ValueError:
                problems.append(f"REMOTE_KERNEL_TIMEOUT={raw_timeout!r} is not a positive number of seconds.")
                timeout = DEFAULT_TIMEOUT
        if timeout > MAX_TIMEOUT and endpoint is not None and is_hosted(endpoint):
            notices.append(f"REMOTE_KERNEL_TIMEOUT={raw_timeout} is more than a hosted pool allows: cells here may "
                           f"run {MAX_TIMEOUT:g} s at most (the service's cap). Use %%long for a longer cell, or "
                           "the embedded local pool (unset POOL_MANAGEMENT_ENDPOINT), which takes any limit.")
            timeout = MAX_TIMEOUT

        pool_settings = _pool_settings(env, problems)
        if endpoint is not None and pool_settings:
            notices.append(f"{', '.join(pool_settings)} only set{'s' if len(pool_settings) == 1 else ''} up the "
                           "embedded local pool; with POOL_MANAGEMENT_ENDPOINT set, the pool there decides "
                           "(ignored).")
            pool_settings = {}

        keep = env.get("REMOTE_KERNEL_KEEP_SESSION", "0").strip().lower() in ("1", "true", "yes", "on")
        rich = env.get("REMOTE_KERNEL_RICH", "1").strip().lower() not in ("0", "false", "no", "off")
        download_limit = 4 << 30
        raw_limit = env.get("REMOTE_KERNEL_DOWNLOAD_LIMIT", "").strip()
        if raw_limit:
            match = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", raw_limit, re.I)
            if match and int(match.group(1)) > 0:
                download_limit = int(match.group(1)) << (10 * " KMGT".index(match.group(2).upper() or " "))
            else:
                problems.append(f"REMOTE_KERNEL_DOWNLOAD_LIMIT={raw_limit!r} is not a size: give bytes, or a number "
                                "with K, M, G or T (e.g. 4G).")
        active = env.get("REMOTE_KERNEL_ACTIVE_CONTENT", "0").strip().lower() in ("1", "true", "yes", "on")
        files = env.get("REMOTE_KERNEL_FILES", "").strip().lower() or "off"
        if files not in FILES_MODES:
            problems.append(f"REMOTE_KERNEL_FILES={files!r} is not one of {', '.join(FILES_MODES)}.")
            files = "off"
        exclude = tuple(p.strip() for p in env.get("REMOTE_KERNEL_FILES_EXCLUDE", "").split(",") if p.strip())
        return cls(endpoint=endpoint, auth_mode=auth_mode, token=token, api_version=api_version,
                   identifier=identifier, identifier_from_env=from_env, timeout=timeout, keep_session=keep,
                   rich=rich, pool_settings=pool_settings, download_limit=download_limit, active_content=active,
                   files=files, files_exclude=exclude, problems=tuple(problems), notices=tuple(notices))

    def describe(self, *, endpoint: str | None = None) -> list[tuple[str, str]]:
        """The settings as (name, value) rows for `%session`; never the token."""
        from remote_kernel.sessions.auth import redacted_url  # not at start-up: it imports httpx

        where = endpoint or self.endpoint
        shown = redacted_url(where) if where else "(starting)"
        return [
            ("endpoint", shown),
            ("api-version", self.api_version),
            ("identifier", self.identifier + ("  (REMOTE_KERNEL_IDENTIFIER)" if self.identifier_from_env else "")),
            ("auth mode", self.auth_mode + ("  (token set)" if self.token and self.auth_mode == "token" else "")),
            ("pool type", self.pool_type),
            ("cell timeout", f"{self.timeout:g} s  (REMOTE_KERNEL_TIMEOUT)"),
            ("keep session at exit", "yes" if self.keep_session else "no"),
            ("rich output", "on" if self.rich else "off  (REMOTE_KERNEL_RICH=0)"),
            ("download limit", f"{self.download_limit} bytes  (REMOTE_KERNEL_DOWNLOAD_LIMIT)"),
            ("files beside the notebook", f"{self.files}  (REMOTE_KERNEL_FILES)"),
        ] + ([(f"session {option[2:]}", f"{self.pool_settings.get(name, default)}  ({name})")
              for name, (option, default) in EMBEDDED_SETTINGS.items()] if self.embedded else [])


def is_hosted(endpoint: str) -> bool:
    """Whether an endpoint is an Azure Container Apps session pool (the host names it)."""
    host = re.sub(r"^[a-z]+://", "", endpoint.strip().lower()).split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return host.endswith(".dynamicsessions.io")


def _pool_settings(env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """The embedded pool's settings that are given, checked (what is wrong goes to `problems`)."""
    found: dict[str, str] = {}
    for name in EMBEDDED_SETTINGS:
        raw = env.get(name, "").strip()
        if not raw:
            continue
        if name in ("REMOTE_KERNEL_MEMORY", "REMOTE_KERNEL_DISK"):
            try:
                found[name] = format_size(parse_size(raw))
            except ValueError as error:
                problems.append(f"{name}: {error}.")
        elif name == "REMOTE_KERNEL_EGRESS":
            if raw.lower() in EGRESS_MODES or (raw.lower().startswith("allow=") and raw[6:].strip(", ")):
                found[name] = raw if raw.lower().startswith("allow=") else raw.lower()
            else:
                problems.append(f"{name}={raw!r} is not one of {', '.join(EGRESS_MODES)} or allow=HOST[,HOST…].")
        elif name == "REMOTE_KERNEL_SANDBOX":
            if raw.lower() in SANDBOX_MODES:
                found[name] = raw.lower()
            else:
                problems.append(f"{name}={raw!r} is not one of {', '.join(SANDBOX_MODES)}.")
        else:
            found[name] = raw
    return found
