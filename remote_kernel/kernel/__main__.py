"""`python -m remote_kernel.kernel [--language python] -f {connection_file}`: what a kernelspec runs."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Launch the kernel for the language named by `--language` (default python)."""
    args = list(sys.argv[1:] if argv is None else argv)
    language = "python"
    for index, arg in enumerate(args):
        if arg == "--language" and index + 1 < len(args):
            language = args[index + 1]
            del args[index:index + 2]
            break
        if arg.startswith("--language="):
            language = arg.split("=", 1)[1]
            del args[index]
            break

    from ipykernel.kernelapp import IPKernelApp

    from remote_kernel.kernel.kernel import RemoteKernel

    IPKernelApp.launch_instance(argv=args, kernel_class=RemoteKernel.for_language(language))


if __name__ == "__main__":
    main()
