"""`python -m remote_kernel.kernel [--language python] -f {connection_file}`: what a kernelspec runs.

The configuration is read, and an embedded pool (when there is no endpoint) started, before
ipykernel is imported: the pool's start-up then overlaps the kernel's, instead of following it. The
sessions client, which the first cell needs next, is imported only once the kernel has answered
kernel_info (`RemoteSession.warm_up`): imported in a thread meanwhile, it held the GIL against
ipykernel's own start, and the kernel was ready 60-70 ms later.
"""
from __future__ import annotations

import atexit
import sys

OUTSTREAM = "remote_kernel.kernel.outstream.OutStream"  # the kernel's sys.stdout/stderr: an empty flush is free


def main(argv: list[str] | None = None) -> None:
    """Launch the kernel for the language named by `--language` (default python)."""
    args = list(sys.argv[1:] if argv is None else argv)
    key = "python"
    for index, arg in enumerate(args):
        if arg == "--language" and index + 1 < len(args):
            key = args[index + 1]
            del args[index:index + 2]
            break
        if arg.startswith("--language="):
            key = arg.split("=", 1)[1]
            del args[index]
            break

    from remote_kernel.kernel.config import KernelConfig
    from remote_kernel.kernel.embedded import EmbeddedPool
    from remote_kernel.kernel.languages import language

    spec = language(key)
    settings = KernelConfig.from_env()
    embedded = None
    if settings.embedded and not settings.problems:
        embedded = EmbeddedPool(spec.container_type, options=settings.pool_args())
        embedded.start()  # the sessions client (httpx) loads once the kernel has answered kernel_info (warm_up)

    from ipykernel.kernelapp import IPKernelApp

    from remote_kernel.kernel.kernel import RemoteKernel

    kernel_class = RemoteKernel.for_language(key, settings=settings, embedded=embedded)
    try:
        IPKernelApp.launch_instance(argv=args, kernel_class=kernel_class, outstream_class=OUTSTREAM)
    finally:
        if embedded is not None:
            embedded.stop(1.0)  # a no-op after the kernel's own shutdown; the clean-up if the app failed to start


def leave_after_clean_up(finished: list[bool]) -> None:
    """The last exit handler (registered first): once the kernel has finished normally and every other exit
    handler has run (ipykernel's sockets closed, the session's pool stopped), leave without the interpreter's
    finalization (`exits.leave`), as the pool does. After an error or sys.exit, Python's own exit and status."""
    if finished:
        from remote_kernel.exits import leave

        leave(0)


if __name__ == "__main__":
    finished: list[bool] = []
    atexit.register(leave_after_clean_up, finished)
    main()
    finished.append(True)
