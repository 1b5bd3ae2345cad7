"""Every setting of the kernel and the local pool, declared once: one `Setting` row each.

A row says what the setting is called (its environment variable, its `remote-kernel pool` flag, or
both), how its text is read (`parse`: the typed value, or ValueError saying what is wrong), its
default, what it means, and where it applies (`scope`). Everything else is derived from `SETTINGS`:
the kernel's environment reader (`kernel/config.py`), the rows `%session` shows, the embedded pool's
command line (`pool_argv`), the `remote-kernel pool` flags (`add_pool_arguments`), the typed object
the pool runs with (`PoolSettings`) and the README's settings tables (`markdown_table`; a test checks
the README against them: `python -m remote_kernel.settings` prints them).

A plain frozen table rather than traitlets: the settings come from the environment and one command
line, need no observers or config files, and the kernel reads them before anything heavy loads.

Standard library only: the kernel's start-up, the wheel's build hook (through `kernel/config.py`) and
the pool read it, and the pool never imports the kernel.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from remote_kernel.contract import (
    API_VERSIONS,
    AUTH_MODES,
    DEFAULT_API_VERSION,
    EXECUTION_LIMIT,
    IDENTIFIER,
    IDENTIFIER_RULE,
    SHELL_EXECUTION_LIMIT,
)
from remote_kernel.sizes import format_size, parse_size

if TYPE_CHECKING:  # not at the kernel's start-up: only the pool's command line needs it
    import argparse

Scope = Literal["kernel", "pool", "both"]  # read by the kernel, a flag of the pool, or a kernel's setting for its pool

#: the pool types a local pool can run (the languages' `container_type`s, and hosted Shell pools)
CONTAINER_TYPES = ("PythonLTS", "NodeLTS", "Shell")
EGRESS_MODES = ("enabled", "disabled")
SANDBOX_MODES = ("auto", "bubblewrap", "none")
FILES_MODES = ("off", "notebook")
MCP_MODES = ("on", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


# --- parsers: the text as given (stripped) → the value, or ValueError with what is wrong (no value, no name) ---

def choice(*choices: str, fold: bool = True) -> Callable[[str], str]:
    """One of `choices` (case-insensitive unless `fold` is False)."""
    def parse(text: str) -> str:
        value = text.lower() if fold else text
        if value not in choices:
            raise ValueError(f"is not one of {', '.join(choices)}")
        return value
    return parse


def api_version(text: str) -> str:
    if text not in API_VERSIONS:
        raise ValueError(f"is not supported: use one of {', '.join(API_VERSIONS)}")
    return text


def identifier(text: str) -> str:
    if not IDENTIFIER.fullmatch(text):
        raise ValueError(f"is not a valid identifier: use {IDENTIFIER_RULE}")
    return text


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError("is not a positive number of seconds")
    return value


def size(text: str) -> int:
    """A byte count as people write it (`512M`, `2G`, `4096`): `sizes.parse_size`."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise ValueError(str(error).removeprefix(f"{text!r} ")) from None


def egress(text: str) -> str:
    """`disabled`, `enabled` or `allow=HOST[,HOST…]` (the hosts as given)."""
    if text.lower() in EGRESS_MODES:
        return text.lower()
    if text.lower().startswith("allow=") and text[len("allow="):].strip(", "):
        return "allow=" + text[len("allow="):]
    raise ValueError(f"is not one of {', '.join(EGRESS_MODES)} or allow=HOST[,HOST…]")


def switch_on(text: str) -> bool:
    """True only for 1, true, yes or on."""
    return text.lower() in TRUE_WORDS


def switch_off(text: str) -> bool:
    """False only for 0, false, no or off."""
    return text.lower() not in FALSE_WORDS


def patterns(text: str) -> tuple[str, ...]:
    """Comma-separated patterns, blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def as_given(value: str) -> str:
    """The text itself (a path, a host, a token)."""
    return value


@dataclass(frozen=True)
class Setting:
    """One setting: its names, how it is read, its default and its meaning."""

    key: str  # the attribute it becomes (`KernelConfig`'s for the kernel, `PoolSettings`' and argparse's for the pool)
    scope: Scope
    help: str  # what it means (the README's words; the pool's --help uses `flag_help` when given)
    default: Any  # the value when not given (None: none, or one derived where it is read)
    default_text: str  # the default as the README, %session and --help say it
    parse: Callable[[str], Any] = as_given
    variable: str | None = None  # the environment variable (scope kernel and both)
    flag: str | None = None  # the `remote-kernel pool` flag (scope pool and both)
    format: Callable[[Any], str] = str  # a value back to the text its flag takes
    literal: bool = True  # the README shows `default_text` as code
    strip: bool = True  # the variable's value is read without surrounding white space
    # the pool's command line
    flag_help: str | None = None  # --help's words, where they differ from the README's
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    switch: bool = False  # a flag without a value (store_true)
    group: str | None = None  # flags of one group exclude each other
    # `%session`
    label: str | None = None  # its row in `%session` (None: not shown there, or shown by the session)
    show: Callable[[Any], str] | None = None  # the value as that row shows it (default: `value  (VARIABLE)`)

    def read(self, raw: str) -> Any:
        """The value of the variable's text `raw` (already stripped); ValueError with the whole problem."""
        try:
            return self.parse(raw)
        except ValueError as error:
            raise ValueError(f"{self.variable}={raw!r} {error}.") from None

    def row(self, value: Any) -> str:
        """What `%session` shows for `value`."""
        return self.show(value) if self.show else f"{value}  ({self.variable})"


SETTINGS: tuple[Setting, ...] = (
    # --- the kernel: how it reaches its session ---
    Setting("endpoint", "kernel", "the pool's management endpoint", None, "unset: start an embedded local pool",
            variable="POOL_MANAGEMENT_ENDPOINT", literal=False, label="endpoint"),
    Setting("api_version", "kernel", ", ".join(f"`{version}`" for version in API_VERSIONS), DEFAULT_API_VERSION,
            DEFAULT_API_VERSION, parse=api_version, variable="REMOTE_KERNEL_API_VERSION", label="api-version",
            show=str),
    Setting("identifier", "kernel", "reuse this session identifier instead of a fresh uuid4", None,
            "fresh per kernel start", parse=identifier, variable="REMOTE_KERNEL_IDENTIFIER", literal=False,
            label="identifier"),
    Setting("auth_mode", "kernel",
            "`azure` (azure-identity, scope `https://dynamicsessions.io/.default`), `token`, or `none`", None,
            "`token` for the embedded pool or when `REMOTE_KERNEL_TOKEN` is set, else `azure` for https endpoints",
            parse=choice(*AUTH_MODES), variable="REMOTE_KERNEL_AUTH", literal=False, label="auth mode"),
    Setting("token", "kernel", "a bearer token used as is", None, "—", variable="REMOTE_KERNEL_TOKEN",
            literal=False, strip=False),
    Setting("timeout", "kernel", f"seconds a cell may run: any value on a local pool; a hosted pool caps it at "
            f"{EXECUTION_LIMIT:g} (a larger value is used as {EXECUTION_LIMIT:g} and the first cell says so)",
            EXECUTION_LIMIT, f"{EXECUTION_LIMIT:g}", parse=seconds, variable="REMOTE_KERNEL_TIMEOUT",
            label="cell timeout", show=lambda value: f"{value:g} s  (REMOTE_KERNEL_TIMEOUT)"),
    Setting("keep_session", "kernel", "`1`: do not delete the session when the kernel shuts down", False, "0",
            parse=switch_on, variable="REMOTE_KERNEL_KEEP_SESSION", label="keep session at exit",
            show=lambda value: "yes" if value else "no"),
    Setting("rich", "kernel", "`0`: plain output mapping only (no display shim)", True, "1", parse=switch_off,
            variable="REMOTE_KERNEL_RICH", label="rich output",
            show=lambda value: "on" if value else "off  (REMOTE_KERNEL_RICH=0)"),
    Setting("active_content", "kernel", "`1`: let scripts, event handlers and `application/javascript` in outputs "
            "reach the front end (see above; `%session active on` does it for a running kernel)", False, "0",
            parse=switch_on, variable="REMOTE_KERNEL_ACTIVE_CONTENT"),
    Setting("download_limit", "kernel", "the largest file `%download` accepts, in bytes or with K, M, G, T",
            4 << 30, "4G", parse=size, variable="REMOTE_KERNEL_DOWNLOAD_LIMIT", label="download limit",
            show=lambda value: f"{value} bytes  (REMOTE_KERNEL_DOWNLOAD_LIMIT)"),
    Setting("files", "kernel", "`notebook`: before each cell the session's working folder gets the files of the "
            "notebook's folder (see \"Files beside the notebook\"; `%session files notebook\\|off` for a running "
            "kernel)", "off", "off", parse=choice(*FILES_MODES), variable="REMOTE_KERNEL_FILES",
            label="files beside the notebook"),
    Setting("files_exclude", "kernel", "comma-separated patterns left out of that sync (matched against a path "
            "under the folder and each name in it, e.g. `data/raw,*.parquet`)", (), "—", parse=patterns,
            variable="REMOTE_KERNEL_FILES_EXCLUDE", literal=False),
    # --- the kernel's settings for its embedded pool (%session shows each as `session <flag>`) ---
    Setting("memory", "both", "memory each session may use (`512M`, `4G`); a session that runs out is lost, and "
            "the error names this setting", 1 << 30, "1G", parse=size, variable="REMOTE_KERNEL_MEMORY",
            flag="--memory", format=format_size, flag_help="memory each session may use, e.g. 1G"),
    Setting("disk", "both", "bytes a session may write to `/mnt/data` and `/tmp`", 1 << 30, "1G", parse=size,
            variable="REMOTE_KERNEL_DISK", flag="--disk", format=format_size,
            flag_help="bytes a session may write to /mnt/data or /tmp, e.g. 1G"),
    Setting("egress", "both", "`enabled`: sessions may reach the network (`%pip install`); "
            "`allow=pypi.org,files.pythonhosted.org`: only those hosts (a pool run as root; see the pool's "
            "`--egress`)", "disabled", "disabled", parse=egress, variable="REMOTE_KERNEL_EGRESS", flag="--egress",
            flag_help="network access from sessions: disabled, enabled (each session in its own network namespace, "
                      "the host's own addresses unreachable), or allow=HOST[,HOST…] (only those; e.g. "
                      "allow=pypi.org,files.pythonhosted.org)"),
    Setting("sandbox", "both", "`auto`, `bubblewrap` (refuse to run without it) or `none`", "auto", "auto",
            parse=choice(*SANDBOX_MODES), variable="REMOTE_KERNEL_SANDBOX", flag="--sandbox", choices=SANDBOX_MODES,
            flag_help="auto: bubblewrap when it can run, else unsandboxed with a warning"),
    Setting("python", "both", "the interpreter sessions run, e.g. a virtual environment's `bin/python` with your "
            "packages", None, "the kernel's own interpreter", variable="REMOTE_KERNEL_PYTHON", flag="--python",
            literal=False, flag_help="interpreter for Python sessions (default: the one running the pool)"),
    # --- the pool's own flags ---
    Setting("container_type", "pool", "what each session runs: IPython, Node.js, or bash commands as a hosted "
            "Shell pool", "PythonLTS", "PythonLTS", flag="--container-type", choices=CONTAINER_TYPES),
    Setting("max_sessions", "pool", "sessions allowed at once; past it a new identifier gets 429", 100, "100",
            parse=int, flag="--max-sessions"),
    Setting("cooldown", "pool", "seconds a session may stay idle before it is deleted", 300.0, "300", parse=float,
            flag="--cooldown", format=lambda value: f"{value:g}"),
    Setting("ready_sessions", "pool", "sessions kept started ahead, so a new identifier needs no cold start", 1, "1",
            parse=int, flag="--ready-sessions"),
    Setting("host", "pool", "address to bind", "127.0.0.1", "127.0.0.1", flag="--host"),
    Setting("port", "pool", "port to bind; 0 picks a free one", 6000, "6000", parse=int, flag="--port"),
    Setting("socket", "pool", "listen on this Unix socket (mode 0600: only this user) instead of --host/--port; "
            "the endpoint is then http+unix://PATH (percent-encoded), as the kernel's embedded pool uses", None, "",
            flag="--socket", metavar="PATH"),
    Setting("token", "pool", "bearer token clients must send (default: $REMOTE_KERNEL_TOKEN, else a random one, "
            "printed); visible to every user in the process list: prefer REMOTE_KERNEL_TOKEN or --token-file", None,
            "", flag="--token", group="auth"),
    Setting("token_file", "pool", "read the bearer token from the first line of this file (kept out of the "
            "process list)", None, "", flag="--token-file", metavar="PATH", group="auth"),
    Setting("no_auth", "pool", "accept requests without a token", False, "", flag="--no-auth", switch=True,
            group="auth"),
    Setting("tls", "pool", "serve HTTPS with a certificate signed by the pool's own CA (kept in DATA_ROOT/tls, or "
            "~/.local/share/remote_kernel/tls); prints the lines that make clients trust it", False, "",
            flag="--tls", switch=True, group="tls"),
    Setting("tls_cert", "pool", "serve HTTPS with this certificate (chain) file", None, "", flag="--tls-cert",
            metavar="PEM", group="tls"),
    Setting("tls_key", "pool", "the private key of --tls-cert", None, "", flag="--tls-key", metavar="PEM"),
    Setting("mcp", "pool", "serve the hosted pools' MCP server at /mcp", "on", "on", flag="--mcp",
            choices=MCP_MODES),
    Setting("mcp_key", "pool", "the key MCP clients send as x-ms-apikey (default: $REMOTE_KERNEL_MCP_KEY, else the "
            "bearer token, else none)", None, "", flag="--mcp-key"),
    Setting("node", "pool", "Node.js for NodeLTS sessions", None, "node on PATH", flag="--node"),
    Setting("data_root", "pool", "folder holding the sessions' data", None, "a new temporary folder",
            flag="--data-root"),
    Setting("max_upload", "pool", "largest upload accepted, e.g. 128M", 128 << 20, "128M", parse=size,
            flag="--max-upload", format=format_size),
    Setting("max_processes", "pool", "processes and threads each session may run", 128, "128", parse=int,
            flag="--max-processes"),
    Setting("cpus", "pool", "CPU time each session may use, in cores (cgroup cpu quota); 0: no limit", 1.0, "1",
            parse=float, flag="--cpus", format=lambda value: f"{value:g}"),
    Setting("max_execution_time", "pool", "seconds one execution may run; a larger timeoutInSeconds is clamped to "
            "it", None, f"the hosted service's cap, {EXECUTION_LIMIT:g}; {SHELL_EXECUTION_LIMIT:g} for Shell pools",
            parse=float, flag="--max-execution-time", format=lambda value: f"{value:g}"),
    Setting("parent_pid", "pool", "stop when this process is gone (used by the kernel's embedded pool)", None, "",
            parse=int, flag="--parent-pid"),
    Setting("log_level", "pool", "", "warning", "", flag="--log-level", choices=LOG_LEVELS),
)

KERNEL_SETTINGS = tuple(s for s in SETTINGS if s.scope == "kernel")
#: the kernel's settings for its embedded pool: variable → row
EMBEDDED_SETTINGS = {s.variable: s for s in SETTINGS if s.scope == "both" and s.variable}
POOL_SETTINGS = tuple(s for s in SETTINGS if s.scope in ("pool", "both"))


# --- the pool ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolSettings:
    """What `remote-kernel pool` runs with: one field per pool row of `SETTINGS` (a test checks they agree)."""

    memory: int
    disk: int
    egress: str
    sandbox: str
    python: str | None
    container_type: str
    max_sessions: int
    cooldown: float
    ready_sessions: int
    host: str
    port: int
    socket: str | None
    token: str | None
    token_file: str | None
    no_auth: bool
    tls: bool
    tls_cert: str | None
    tls_key: str | None
    mcp: str
    mcp_key: str | None
    node: str | None
    data_root: str | None
    max_upload: int
    max_processes: int
    cpus: float
    max_execution_time: float | None  # None until the pool knows its runtime's cap
    parent_pid: int | None
    log_level: str

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace) -> PoolSettings:
        """The parsed `remote-kernel pool` command line, typed."""
        return cls(**{f.name: getattr(arguments, f.name) for f in fields(cls)})

    @classmethod
    def defaults(cls, **given: Any) -> PoolSettings:
        """Every setting at its default, except those `given`."""
        return cls(**{row.key: given.pop(row.key, row.default) for row in POOL_SETTINGS}, **given)


def _flag_type(row: Setting) -> Callable[[str], Any]:
    """`row.parse` as argparse calls it: int and float as they are (argparse names them in its message), else
    what is wrong as argparse shows it (`argument --memory: 'lots' is not a size: …`)."""
    if row.parse in (int, float, as_given):
        return row.parse

    import argparse

    def parse(value: str) -> Any:
        try:
            return row.parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{value!r} {error}") from None
    return parse


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """The `remote-kernel pool` flags, one per pool row of `SETTINGS`."""
    groups: dict[str, Any] = {}
    for row in POOL_SETTINGS:
        assert row.flag is not None
        target: Any = parser
        if row.group:
            if row.group not in groups:
                groups[row.group] = parser.add_mutually_exclusive_group()
            target = groups[row.group]
        words = row.flag_help or row.help
        if row.default_text and not row.switch and "(default:" not in words:
            words += f" (default: {row.default_text})"
        options: dict[str, Any] = {"help": words or None, "default": row.default}
        if row.switch:
            target.add_argument(row.flag, action="store_true", **options)
            continue
        if row.parse is not as_given:
            options["type"] = _flag_type(row)
        if row.choices:
            options["choices"] = list(row.choices)
        if row.metavar:
            options["metavar"] = row.metavar
        target.add_argument(row.flag, **options)


def pool_argv(values: Mapping[str, Any]) -> list[str]:
    """The `remote-kernel pool` options that give the pool these values (by key: `{"ready_sessions": 1}`)."""
    rows = {row.key: row for row in POOL_SETTINGS}
    argv: list[str] = []
    for key, value in values.items():
        row = rows[key]
        assert row.flag is not None
        if row.switch:
            argv += [row.flag] if value else []
        else:
            argv += [row.flag, value if isinstance(value, str) else row.format(value)]
    return argv


# --- the README ---------------------------------------------------------------------------------------------

def markdown_rows(scopes: Iterable[Scope]) -> list[str]:
    """The README's table rows of the environment variables of these scopes."""
    wanted = set(scopes)
    return [f"| `{row.variable}` | {row.help} | {f'`{row.default_text}`' if row.literal else row.default_text} |"
            for row in SETTINGS if row.scope in wanted and row.variable]


def markdown_table(scopes: Iterable[Scope]) -> str:
    return "\n".join(["| variable | meaning | default |", "|---|---|---|", *markdown_rows(scopes)])


if __name__ == "__main__":
    print(markdown_table(["kernel"]), markdown_table(["both"]), sep="\n\n")
