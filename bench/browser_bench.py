"""The first result as a user sees it: JupyterLab on loopback, headless Chromium, remote-python and ipykernel.

For each kernel, alternated run by run in one JupyterLab:
- open notebook → first output: from asking the browser for the notebook's page to the output of its
  first cell (`x = 1+1; x`, run as soon as the page shows its new kernel idle: JupyterLab drops a run
  asked before), with the page's own load in both figures;
- restart → first output: from confirming Kernel → "Restart Kernel and Run All Cells" to that cell's
  output again.
Each run opens the notebook in a fresh page and shuts its kernel down after. The medians and the
ratios (run by run, remote-python / ipykernel) are reported; nothing here fails because a machine is slow.

Needs Chromium at /usr/bin/chromium, Playwright and JupyterLab (the test extras); `available()` says
what is missing.

    python -m bench.browser_bench [--runs N]
"""
from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LOCAL_KERNEL, REMOTE_KERNEL, embedded_env, install_kernelspecs, median

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CELL = "x = 1+1; x"
KERNELS = (REMOTE_KERNEL, LOCAL_KERNEL)
#: a quiet page: every cell in the DOM, no news fetched, nothing fetched from outside
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
LAB_CONFIG = """
c.ServerApp.allow_root = True
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"
"""
T = TypeVar("T")


def available() -> str | None:
    """None when the browser benchmark can run here, else what is missing."""
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM}"
    for module in ("playwright", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[test]')"
    return None


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout} s")
        time.sleep(interval)


def notebook(kernel_name: str) -> dict[str, Any]:
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": CELL}],
            "metadata": {"kernelspec": {"name": kernel_name, "display_name": kernel_name, "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@contextmanager
def jupyterlab(work: Path, root: Path, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """A quiet JupyterLab (LAB_SETTINGS, LAB_CONFIG) on 127.0.0.1 serving `root`, its settings, config and
    log in `work`, `env` added to the kernels' environment: (its base URL, its token). The browser test
    starts its JupyterLab here too."""
    for name, values in LAB_SETTINGS.items():
        path = work / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    (work / "config").mkdir()
    (work / "config" / "jupyter_server_config.py").write_text(LAB_CONFIG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    environment = {**embedded_env(), "JUPYTER_CONFIG_DIR": str(work / "config"),
                   "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(work / "ws"),
                   **(env or {})}
    with open(work / "lab.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
             f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'ws'}"],
            stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {(work / 'lab.log').read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 90, "JupyterLab answering", interval=0.2)
        yield base, token
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def shut_down_kernels(base: str, token: str) -> None:
    """End every notebook session of the server (their kernels with them) and wait until none is left."""
    for session in httpx.get(f"{base}/api/sessions", params={"token": token}, timeout=10).json():
        httpx.delete(f"{base}/api/sessions/{session['id']}", params={"token": token}, timeout=60)
    wait_until(lambda: not httpx.get(f"{base}/api/kernels", params={"token": token}, timeout=10).json(), 60,
               "the kernels to be gone", interval=0.2)


def first_output(page: Any) -> str:
    """The text of the first cell's output, with its prompt, or '' while there is none."""
    return str(page.evaluate("""() => {
        const cell = document.querySelector('.jp-Notebook .jp-CodeCell');
        const out = cell && cell.querySelector('.jp-OutputArea-output');
        const prompt = cell && cell.querySelector('.jp-InputPrompt');
        return out ? (prompt ? prompt.textContent.trim() : '') + ' ' + out.textContent.trim() : '';
    }"""))


def kernel_idle(page: Any) -> bool:
    """Whether the page's status bar says its kernel is idle."""
    return bool(page.evaluate("""() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
        .some(item => item.textContent.trim().endsWith('| Idle'))"""))


def one_run(page: Any, base: str, token: str, kernel_name: str) -> dict[str, float]:
    """Open the kernel's notebook, run its cell at once, then restart and run all; the seconds of each."""
    started = time.perf_counter()
    page.goto(f"{base}/doc/tree/{kernel_name}.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell .cm-content", timeout=90_000)
    # JupyterLab drops a cell run before the page is connected to the new kernel: run it as soon as it is
    wait_until(lambda: kernel_idle(page), 120, f"{kernel_name}'s kernel idle on the page")
    page.locator(".jp-Notebook .jp-CodeCell .cm-content").first.click()
    page.keyboard.press("Control+Enter")
    wait_until(lambda: first_output(page).endswith(" 2"), 120, f"{kernel_name}'s first output")
    opened = time.perf_counter() - started
    page.locator(".jp-Notebook .jp-CodeCell .cm-content").first.click()
    page.keyboard.press("Control+Enter")  # a second execution: the prompt says [2], so the restart's [1] is new
    wait_until(lambda: first_output(page) == "[2]: 2", 60, f"{kernel_name}'s second output")
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel and Run All Cells").first.click()
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").first
    button.wait_for(timeout=30_000)
    started = time.perf_counter()
    button.click()
    wait_until(lambda: first_output(page) == "[1]: 2", 120, f"{kernel_name}'s first output after the restart")
    restarted = time.perf_counter() - started
    return {"open_s": opened, "restart_s": restarted}


def measure(runs: int) -> dict[str, Any]:
    """`runs` alternated runs per kernel after a warm-up of each; medians and run-by-run ratios."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="rk-bench-browser-") as folder:
        work = Path(folder)
        install_kernelspecs()
        root = work / "root"
        root.mkdir()
        for name in KERNELS:
            (root / f"{name}.ipynb").write_text(json.dumps(notebook(name)))
        with jupyterlab(work, root) as (base, token), sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(work / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1100, "height": 800})
            try:
                per_run: list[dict[str, dict[str, float]]] = []
                for i in range(runs + 1):  # run 0 warms caches up and is not counted
                    order = KERNELS if i % 2 == 0 else KERNELS[::-1]
                    run: dict[str, dict[str, float]] = {}
                    for name in order:
                        page = browser.new_page()
                        page.set_default_timeout(60_000)
                        try:
                            run[name] = one_run(page, base, token, name)
                        finally:
                            page.close()
                            shut_down_kernels(base, token)
                    if i:
                        per_run.append(run)
                        print(f"   run {i}: " + ", ".join(f"{name} open {t['open_s']:.2f} s, restart "
                                                         f"{t['restart_s']:.2f} s" for name, t in run.items()),
                              flush=True)
            finally:
                browser.close()
                shutil.rmtree(work / "profile", ignore_errors=True)
    out: dict[str, Any] = {name: {key: median([r[name][key] for r in per_run]) for key in ("open_s", "restart_s")}
                           for name in KERNELS}
    for key in ("open_s", "restart_s"):
        out[f"ratio_{key[:-2]}"] = median([r[REMOTE_KERNEL][key] / r[LOCAL_KERNEL][key] for r in per_run])
    return {**out, "runs": runs, "runs_detail": per_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    why = available()
    if why:
        raise SystemExit(f"the browser benchmark cannot run here: {why}")
    result = measure(args.runs)
    print(json.dumps({k: v for k, v in result.items() if k != "runs_detail"}, indent=1))


if __name__ == "__main__":
    main()
