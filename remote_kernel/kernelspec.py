"""Kernelspecs: one function builds a spec; the wheel's build hook and `remote-kernel install` use it.

Only the standard library is imported at module level, so that the build hook can import this
module before the package's dependencies are installed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from remote_kernel.kernel.languages import language

#: The logos shipped with every kernelspec (in the repository's kernelspec/ folder and in the package).
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
#: The languages whose kernelspecs the wheel ships as shared data.
SHIPPED = ("python", "javascript")


def spec(language_key: str = "python", *, python: str | None = None, display_name: str | None = None,
         env: dict[str, str] | None = None) -> dict[str, Any]:
    """The kernel.json of a remote kernel; `python` defaults to this interpreter's absolute path."""
    lang = language(language_key)
    result: dict[str, Any] = {
        "argv": [python or sys.executable, "-m", "remote_kernel.kernel", "--language", lang.key,
                 "-f", "{connection_file}"],
        "display_name": display_name or lang.display_name,
        "language": lang.language_info["name"],
        "interrupt_mode": "message",
        "metadata": {"debugger": False},
    }
    if env:
        result["env"] = dict(env)
    return result


def logo_folder() -> Path | None:
    """Where the logos are: the package's copy, or the repository's kernelspec/ folder."""
    for folder in (Path(__file__).parent / "kernel" / "logos", Path(__file__).resolve().parent.parent / "kernelspec"):
        if all((folder / name).is_file() for name in LOGOS):
            return folder
    return None


def write(folder: Path, language_key: str = "python", **spec_options: Any) -> Path:
    """Write kernel.json and the logos into `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(spec(language_key, **spec_options), indent=2) + "\n")
    logos = logo_folder()
    if logos is not None:
        for name in LOGOS:
            shutil.copyfile(logos / name, folder / name)
    return folder


def install(language: str = "python", name: str | None = None, display_name: str | None = None,
            env: dict[str, str] | None = None, user: bool = False, sys_prefix: bool = False,
            prefix: str | None = None) -> str:
    """Install a kernelspec with the absolute interpreter path; returns the folder it landed in.

    Without `user`, `sys_prefix` or `prefix` it goes to the user's folder when not root, as
    ipykernel's installer does.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    from remote_kernel.kernel.languages import language as lookup

    lang = lookup(language)
    name = name or lang.kernel_name
    if sys_prefix:
        prefix = sys.prefix
    if not user and prefix is None:
        user = hasattr(os, "geteuid") and os.geteuid() != 0
        if not user:
            prefix = sys.prefix
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp) / name, lang.key, display_name=display_name, env=env)
        folder.chmod(0o755)
        return KernelSpecManager().install_kernel_spec(str(folder), name, user=user, prefix=prefix)
