"""Hatch build hook: write the kernelspecs the wheel installs as shared data.

`pip install .` then puts `share/jupyter/kernels/remote-python` into the environment, where
`jupyter kernelspec list` finds it. The spec comes from `remote_kernel.kernelspec.spec`, the
same function `remote-kernel install` uses.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

DATA = Path("build") / "kernelspec-data"


class KernelspecBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        sys.path.insert(0, str(root))
        try:
            from remote_kernel.kernel.languages import language
            from remote_kernel.kernelspec import SHIPPED, write
        finally:
            sys.path.remove(str(root))
        kernels = root / DATA / "share" / "jupyter" / "kernels"
        shutil.rmtree(root / DATA, ignore_errors=True)
        # an editable install runs from this interpreter; a wheel is portable, and jupyter_client
        # replaces a bare "python" with the interpreter that launches the kernel
        python = sys.executable if version == "editable" else "python"
        for key in SHIPPED:
            write(kernels / language(key).kernel_name, key, python=python)
        if version != "editable":
            build_data["force_include"][str(root / "kernelspec")] = "remote_kernel/kernel/logos"
