"""`remote-kernel pool`: start the local session pool and serve it until told to stop."""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from remote_kernel.exits import leave
from remote_kernel.pool.egress import EgressPolicy
from remote_kernel.pool.mcp_lazy import LazyMcp
from remote_kernel.pool.pool import Pool
from remote_kernel.pool.runtimes import CONTAINER_TYPES
from remote_kernel.pool.sandbox import Limits, Runtime, Sandbox, SandboxUnavailable
from remote_kernel.settings import PoolSettings

if TYPE_CHECKING:  # TLS (cryptography) loads only with --tls, the MCP SDK at the first /mcp request (mcp_lazy):
    # a pool starts without them in a fraction of the time (tests/test_startup_imports.py keeps it so)
    from remote_kernel.pool.tls import TlsFiles
    from remote_kernel.pool.web import PoolServer

log = logging.getLogger("remote_kernel.pool")


def run(args: PoolSettings) -> int:
    """Run the pool in the foreground with the settings of its command line; returns the process exit code."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s pool %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        runtime = runtime_for(args)
        limits = Limits(memory=args.memory, processes=args.max_processes, disk=args.disk, cpus=args.cpus)
        sandbox = Sandbox.choose(args.sandbox, runtime, limits, egress=EgressPolicy.parse(args.egress))
    except SandboxUnavailable as problem:
        print(f"remote-kernel pool: {problem}", file=sys.stderr)
        return 2
    if args.max_sessions < 1:
        print("remote-kernel pool: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    limit = args.max_execution_time
    if limit is None:  # the hosted cap of the container type: 220 s, 600 s for Shell
        # (REMOTE_KERNEL_EXECUTION_CAP shortens that default, for tests of long cells)
        limit = float(os.environ.get("REMOTE_KERNEL_EXECUTION_CAP") or runtime.max_timeout)
        args = replace(args, max_execution_time=limit)
    if not limit >= 1:
        print("remote-kernel pool: --max-execution-time must be at least 1 (seconds)", file=sys.stderr)
        return 2
    tls = None
    if args.tls or args.tls_cert or args.tls_key:
        from remote_kernel.pool.tls import TlsProblem

        try:
            tls = tls_files(args)
        except TlsProblem as problem:
            print(f"remote-kernel pool: {problem}", file=sys.stderr)
            return 2
    try:
        code = asyncio.run(serve(args, sandbox, tls))
    except OSError as error:
        where = args.socket or f"{args.host}:{args.port}"
        print(f"remote-kernel pool: cannot listen on {where}: {error.strerror}; "
              + ("choose another --socket path" if args.socket else "choose another --port (0 picks a free one)"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    leave(code)  # the clean-up is done: no finalization (exits.py)


def read_token_file(path: str) -> str:
    """The token in `path` (its first line, without surrounding white space); SystemExit if unusable."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise SystemExit(f"remote-kernel pool: --token-file {path}: cannot read a token from it "
                         f"({exc if not isinstance(exc, IndexError) else 'the file is empty'})") from None
    if not token:
        raise SystemExit(f"remote-kernel pool: --token-file {path}: the file is empty")
    return token


def runtime_for(args: PoolSettings) -> Runtime:
    """The sessions' runtime, by --container-type (runtimes.CONTAINER_TYPES; PythonLTS when not given)."""
    return CONTAINER_TYPES.get(args.container_type, CONTAINER_TYPES["PythonLTS"])(args)


def tls_files(args: PoolSettings) -> TlsFiles | None:
    """The certificate to serve (None: plain HTTP)."""
    from remote_kernel.pool.tls import TlsProblem, default_folder, given, make_own

    if (args.tls or args.tls_cert) and args.socket:
        raise TlsProblem("--tls and --socket do not go together: a Unix socket is already private to its owner")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise TlsProblem("--tls-cert and --tls-key go together: give both, or use --tls for a pool-made certificate")
    if args.tls_cert and args.tls_key:
        return given(args.tls_cert, args.tls_key)
    if args.tls:
        return make_own(Path(args.data_root).resolve() / "tls" if args.data_root else default_folder(), args.host)
    return None


async def serve(args: PoolSettings, sandbox: Sandbox, tls: TlsFiles | None = None) -> int:
    assert args.max_execution_time is not None  # run() sets it
    given = None if args.no_auth else (read_token_file(args.token_file) if args.token_file
                                       else args.token or os.environ.get("REMOTE_KERNEL_TOKEN"))
    generated = not args.no_auth and not given
    token = None if args.no_auth else (given or secrets.token_urlsafe(32))
    own_root = args.data_root is None
    data_root = Path(args.data_root or tempfile.mkdtemp(prefix="remote-kernel-pool-")).resolve()
    data_root.mkdir(parents=True, exist_ok=True)
    sessions_root = Path(tempfile.mkdtemp(prefix="pool-", dir=data_root))

    pool = Pool(sandbox, sessions_root, max_sessions=args.max_sessions, cooldown=args.cooldown,
                ready_sessions=args.ready_sessions)
    mcp = LazyMcp(pool, args.max_execution_time) if args.mcp == "on" else None
    mcp_key = None if args.no_auth and not args.mcp_key else (
        args.mcp_key or os.environ.get("REMOTE_KERNEL_MCP_KEY") or token)
    listener = listen_unix(args.socket) if args.socket else listen(args.host, args.port)
    endpoint = endpoint_of(listener, tls is not None)

    def announce() -> None:
        """What a client needs, printed once the pool has started (a kernel reads the endpoint line)."""
        print(f"export POOL_MANAGEMENT_ENDPOINT={endpoint}", flush=True)
        for line in tls.trust_lines() if tls else []:
            print(line, flush=True)
        if token is None:
            print("# no token: any local process can use this pool (--no-auth)", flush=True)
        elif generated:
            print(f"export REMOTE_KERNEL_TOKEN={token}", flush=True)
        else:
            print("# token: the one given (REMOTE_KERNEL_TOKEN, --token-file or --token)", flush=True)
        if mcp is not None:
            key_source = "no key (--no-auth)" if mcp_key is None else (
                "x-ms-apikey: the pool token" if mcp_key == token else "x-ms-apikey: the key given")
            print(f"# MCP server: {endpoint}/mcp ({key_source})", flush=True)
        print(f"# {args.container_type} sessions, sandbox: {sandbox.mode}, egress: {args.egress}, "
              f"max sessions: {args.max_sessions}, cooldown: {args.cooldown:g} s; Ctrl-C stops the pool", flush=True)
        if sandbox.unenforced:
            print(f"# limits this pool cannot hold per session: {', '.join(sandbox.unenforced)} (see the log)",
                  flush=True)

    stopper = Stopper()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopper)
    if listener.family != socket.AF_UNIX and listener.getsockname()[0] not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: other machines can reach this pool", listener.getsockname()[0])
    try:
        # the ready sessions start now: their interpreters load while the HTTP side does (web.py: about 0.15 s
        # of imports), instead of after it
        await pool.start()
        await asyncio.to_thread(importlib.import_module, "remote_kernel.pool.web")  # in a thread: the loop goes on
        from remote_kernel.pool import web  # starting the sessions meanwhile

        served = await web.serve(web.Serving(pool=pool, listener=listener, settings=args, token=token, mcp=mcp,
                                             mcp_key=mcp_key, tls=tls, announce=announce, stopper=stopper))
        if not served:  # the lifespan failed (uvicorn logged why): the pool never served
            return 1
    finally:
        await stop_pool(pool, mcp)  # done by the lifespan already, unless serving failed before its end
        shutil.rmtree(data_root if own_root else sessions_root, ignore_errors=True)
        if args.socket:
            Path(args.socket).unlink(missing_ok=True)
            if args.parent_pid:  # a kernel's embedded pool: the socket's private folder was made for it alone
                try:
                    Path(args.socket).parent.rmdir()  # only when empty; the kernel may be gone (killed)
                except OSError:
                    pass
    return 0


class Stopper:
    """What SIGINT and SIGTERM call: the server's `stop_soon` once it runs; before, a stop it finds when it
    starts (the pool's clean-up still runs)."""

    def __init__(self) -> None:
        self.requested = False
        self.server: PoolServer | None = None  # once serving

    def __call__(self) -> None:
        self.requested = True
        if self.server is not None:
            self.server.stop_soon()


async def stop_pool(pool: Pool, mcp: LazyMcp | None) -> None:
    """Stop the MCP server (if it ever started) and the pool, every session deleted; a second call does nothing
    more."""
    if mcp is not None:
        await mcp.aclose()
    await pool.stop()


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # the protocol makes asyncio set TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def listen_unix(path: str) -> socket.socket:
    """A Unix socket at `path` that only this user may connect to (no TCP port at all)."""
    target = Path(path)
    if target.is_socket():
        target.unlink()  # a socket left by a pool that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(target))
    finally:
        os.umask(old)
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def endpoint_of(listener: socket.socket, tls: bool = False) -> str:
    """The endpoint clients use: http(s)://host:port, or http+unix://<percent-encoded path> for a Unix socket."""
    if listener.family == socket.AF_UNIX:
        return "http+unix://" + quote(listener.getsockname(), safe="")
    host, port = listener.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
