"""`remote-kernel`: run a local session pool, run a notebook, or install the kernelspecs."""
from __future__ import annotations

import argparse
import sys

from remote_kernel.settings import PoolSettings, add_pool_arguments

#: the kernels `remote-kernel install` makes: the keys of the language table (kernel/languages.py, not imported
#: here: a pool's start does not load the kernel; a test checks they agree)
LANGUAGE_KEYS = ("python", "javascript")


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
    add_pool_arguments(pool)  # one flag per pool row of remote_kernel.settings.SETTINGS

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
    install.add_argument("--language", choices=LANGUAGE_KEYS, default="python",
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

        return run(PoolSettings.from_arguments(args))
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
