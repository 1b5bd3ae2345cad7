"""`remote-kernel`: run a local session pool, run a notebook, or install the kernelspecs."""
from __future__ import annotations

import argparse
import sys

from remote_kernel.contract import EXECUTION_LIMIT, SHELL_EXECUTION_LIMIT
from remote_kernel.sizes import parse_size


def _size(text: str) -> int:
    """A byte count such as 128M, 1G or 4096."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _egress(text: str) -> str:
    """`disabled`, `enabled` or `allow=HOST[,HOST…]`."""
    if text in ("enabled", "disabled") or (text.startswith("allow=") and text[len("allow="):].strip(", ")):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use enabled, disabled or allow=HOST[,HOST…]")


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remote-kernel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    pool = commands.add_parser(
        "pool",
        help="run a local session pool that speaks the dynamic-sessions REST contract",
        description="Run a local session pool on loopback. Every session runs in its own sandbox.",
    )
    pool.add_argument("--container-type", choices=["PythonLTS", "NodeLTS", "Shell"], default="PythonLTS",
                      help="what each session runs: IPython, Node.js, or bash commands as a hosted Shell pool "
                           "(default: PythonLTS)")
    pool.add_argument("--max-sessions", type=int, default=100,
                      help="sessions allowed at once; past it a new identifier gets 429 (default: 100)")
    pool.add_argument("--cooldown", type=float, default=300,
                      help="seconds a session may stay idle before it is deleted (default: 300)")
    pool.add_argument("--ready-sessions", type=int, default=1,
                      help="sessions kept started ahead, so a new identifier needs no cold start (default: 1)")
    pool.add_argument("--egress", type=_egress, default="disabled",
                      help="network access from sessions: disabled, enabled (each session in its own network "
                           "namespace, the host's own addresses unreachable), or allow=HOST[,HOST…] (only those; "
                           "e.g. allow=pypi.org,files.pythonhosted.org) (default: disabled)")
    pool.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    pool.add_argument("--port", type=int, default=6000, help="port to bind; 0 picks a free one (default: 6000)")
    pool.add_argument("--socket", default=None, metavar="PATH",
                      help="listen on this Unix socket (mode 0600: only this user) instead of --host/--port; "
                           "the endpoint is then http+unix://PATH (percent-encoded), as the kernel's embedded pool uses")
    auth = pool.add_mutually_exclusive_group()
    auth.add_argument("--token", help="bearer token clients must send (default: $REMOTE_KERNEL_TOKEN, "
                                      "else a random one, printed); visible to every user in the process "
                                      "list: prefer REMOTE_KERNEL_TOKEN or --token-file")
    auth.add_argument("--token-file", metavar="PATH",
                      help="read the bearer token from the first line of this file (kept out of the process list)")
    auth.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    tls = pool.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true",
                     help="serve HTTPS with a certificate signed by the pool's own CA (kept in DATA_ROOT/tls, or "
                          "~/.local/share/remote_kernel/tls); prints the lines that make clients trust it")
    tls.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain) file")
    pool.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    pool.add_argument("--mcp", choices=["on", "off"], default="on",
                      help="serve the hosted pools' MCP server at /mcp (default: on)")
    pool.add_argument("--mcp-key", default=None,
                      help="the key MCP clients send as x-ms-apikey (default: $REMOTE_KERNEL_MCP_KEY, else the "
                           "bearer token, else none)")
    pool.add_argument("--sandbox", choices=["auto", "bubblewrap", "none"], default="auto",
                      help="auto: bubblewrap when it can run, else unsandboxed with a warning (default: auto)")
    pool.add_argument("--python", default=None,
                      help="interpreter for Python sessions (default: the one running the pool)")
    pool.add_argument("--node", default=None, help="Node.js for NodeLTS sessions (default: node on PATH)")
    pool.add_argument("--data-root", default=None,
                      help="folder holding the sessions' data (default: a new temporary folder)")
    pool.add_argument("--max-upload", type=_size, default=128 << 20,
                      help="largest upload accepted, e.g. 128M (default: 128M)")
    pool.add_argument("--memory", type=_size, default=1 << 30,
                      help="memory each session may use, e.g. 1G (default: 1G)")
    pool.add_argument("--max-processes", type=int, default=128,
                      help="processes and threads each session may run (default: 128)")
    pool.add_argument("--cpus", type=float, default=1.0,
                      help="CPU time each session may use, in cores (cgroup cpu quota); 0: no limit (default: 1)")
    pool.add_argument("--disk", type=_size, default=1 << 30,
                      help="bytes a session may write to /mnt/data or /tmp, e.g. 1G (default: 1G)")
    pool.add_argument("--max-execution-time", type=float, default=None,
                      help="seconds one execution may run; a larger timeoutInSeconds is clamped to it "
                           f"(default: the hosted service's cap, {EXECUTION_LIMIT:g}; {SHELL_EXECUTION_LIMIT:g} for "
                           "Shell pools)")
    pool.add_argument("--parent-pid", type=int, default=None,
                      help="stop when this process is gone (used by the kernel's embedded pool)")
    pool.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])

    run = commands.add_parser(
        "run", help="execute a notebook on a remote kernel and print its cells' outputs",
        description="Execute a notebook (as Run All would), print each code cell with its outputs, and write the "
                    "executed notebook next to it (or to --output).")
    run.add_argument("notebook", help="the .ipynb file to execute")
    run.add_argument("--output", default=None, help="where to write the executed notebook "
                                                    "(default: NAME.executed.ipynb beside the notebook)")
    run.add_argument("--kernel", default="remote-python", help="kernel name (default: remote-python)")
    run.add_argument("--timeout", type=float, default=600, help="seconds one cell may take (default: 600)")

    install = commands.add_parser("install", help="install a kernelspec for Jupyter")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (this environment)")
    where.add_argument("--prefix", help="install into this prefix")
    install.add_argument("--language", choices=["python", "javascript"], default="python",
                         help="the sessions' language (default: python)")
    install.add_argument("--name", default=None, help="kernel name (default: remote-python / remote-javascript)")
    install.add_argument("--display-name", default=None, help="name shown in the launcher")
    install.add_argument("--env", action="append", type=_env_pair, default=[], metavar="KEY=VALUE",
                         help="an environment variable for the kernel (repeatable); never put a secret here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pool":
        from remote_kernel.pool.server import run

        return run(args)
    if args.command == "run":
        from pathlib import Path

        from remote_kernel.run import run as run_notebook

        notebook = Path(args.notebook)
        if not notebook.is_file():
            print(f"remote-kernel run: no notebook at {notebook}", file=sys.stderr)
            return 2
        return run_notebook(notebook, output=Path(args.output) if args.output else None, kernel_name=args.kernel,
                            timeout=args.timeout)
    from remote_kernel.kernelspec import install

    path = install(
        language=args.language,
        name=args.name,
        display_name=args.display_name,
        env=dict(args.env),
        user=args.user,
        sys_prefix=args.sys_prefix,
        prefix=args.prefix,
    )
    print(f"Installed kernelspec in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
