"""The notebook in a real browser: JupyterLab on loopback, headless Chromium, rich output on the page.

The test starts JupyterLab itself (a temp root folder, a token, the remote-python kernelspec on
JUPYTER_PATH), drives Debian's Chromium with Playwright (never a downloaded browser), runs every
cell of notebooks/rich-output.ipynb and reads what the page shows. It saves the screenshot that
the README shows (docs/rich-output.png). It skips, saying why, where Chromium, Playwright or
JupyterLab is missing; `scripts/test` installs them.
"""
from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from kernel_support import ROOT, embedded_env, install_kernelspec

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "rich-output.ipynb"
SCREENSHOT = ROOT / "docs" / "rich-output.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: JupyterLab settings for a quiet, fully rendered page: every cell in the DOM, no news fetched
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}

#: nothing fetched from outside (news, updates, extensions); root is fine in CI's container
LAB_CONFIG = """
c.ServerApp.allow_root = True
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"
"""


def missing() -> str | None:
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed (pip install -e '.[test]')"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns something true; that value, or a TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab on 127.0.0.1 serving a copy of the notebook; its URL with the token."""
    spec_root = install_kernelspec()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    for kernel_name in ("python3", "remote-python"):
        (root / f"trust-{kernel_name}.ipynb").write_text(json.dumps(trust_notebook(kernel_name)))
    settings = tmp_path / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(LAB_CONFIG)
    port, token = free_port(), secrets.token_hex(16)
    env = {**embedded_env(), "JUPYTER_PATH": str(spec_root), "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    log = open(tmp_path / "lab.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'ws'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 90, "JupyterLab answering")
        specs = httpx.get(f"{base}/api/kernelspecs", params={"token": token}, timeout=10).json()
        assert "remote-python" in specs["kernelspecs"], specs
        yield f"{base}/doc/tree/{NOTEBOOK}?token={token}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


#: safe outputs (each must look as a local kernel shows it), then script cases (none may run)
TRUST_CELLS = [
    'import pandas as pd\npd.DataFrame({"city": ["Lisbon", "Oslo"], "rain_mm": [774, 763]})',
    "import matplotlib.pyplot as plt\nplt.figure(figsize=(3, 2)); plt.plot([1, 3, 2]); plt.show()",
    'from IPython.display import display, Markdown, Latex\ndisplay(Markdown("**Markdown** with a [link](https://jupyter.org)"))',
    'display(Latex(r"$\\alpha^2 + \\sqrt{\\beta}$"))',
    "import plotly.io as pio, plotly.graph_objects as go\npio.renderers.default = 'plotly_mimetype'\n"
    "go.Figure(go.Bar(y=[1, 3, 2])).show()",
    "from IPython.display import Javascript, HTML, SVG\n"
    "display(Javascript(\"document.body.dataset.ran = 'javascript'\"))\n"
    "display(HTML('<img src=x onerror=\"document.body.dataset.ran = \\'onerror\\'\"><b>kept</b>'))\n"
    "display(HTML('<script>document.body.dataset.ran = \"script\"</script>'))\n"
    "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"><rect width=\"9\" height=\"9\"/></svg>'))",
]


def trust_notebook(kernel_name: str) -> dict:
    """TRUST_CELLS as a notebook for `kernel_name`."""
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
             for source in TRUST_CELLS]
    return {"cells": cells, "metadata": {"kernelspec": {"name": kernel_name, "display_name": kernel_name,
                                                        "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def outputs_of(page, index: int) -> list[str]:
    """The outputs of the code cell `index` as words: text, img, svg, markdown, table, plotly, latex, other."""
    return page.evaluate("""(index) => {
        const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
        const cell = cells[index];
        if (!cell) return null;
        return [...cell.querySelectorAll('.jp-OutputArea-output')].map(out => {
            if (out.querySelector('table')) return 'table';
            if (out.matches('.js-plotly-plot') || out.querySelector('.js-plotly-plot')) return 'plotly';
            if (out.classList.contains('jp-RenderedLatex') || out.querySelector('.jp-RenderedLatex'))
                return out.querySelector('mjx-container') ? 'latex' : 'latex-source';
            if (out.classList.contains('jp-RenderedSVG') || out.querySelector('.jp-RenderedSVG')) return 'svg';
            if (out.querySelector('img')) return 'img';
            if (out.classList.contains('jp-RenderedMarkdown') || out.querySelector('.jp-RenderedMarkdown'))
                return 'markdown';
            if (out.classList.contains('jp-RenderedText') || out.querySelector('.jp-RenderedText')) return 'text';
            return 'other';
        });
    }""", index)


def kernel_states(lab_url: str) -> list[str]:
    """The execution state of each kernel the server runs for a notebook, read from its REST API."""
    base, _, query = lab_url.partition("/doc/")
    token = query.rpartition("token=")[2]
    sessions = httpx.get(f"{base}/api/sessions", params={"token": token}, timeout=10).json()
    return [s["kernel"]["execution_state"] for s in sessions if s.get("kernel")]


def prompts(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
        .map(p => p.textContent.trim())""")


def test_rich_output_notebook_runs_in_jupyterlab_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1100, "height": 2450})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(lab)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            wait_until(lambda: kernel_states(lab) == ["idle"], 90, "the notebook's kernel to be started and idle")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            code_cells = len(prompts(page))
            wait_until(lambda: all(p not in ("[ ]:", "[*]:") and p.startswith("[") for p in prompts(page)),
                       120, f"all {code_cells} code cells to finish")
            table, plots, displays, loop = (outputs_of(page, i) for i in range(4))
            assert table == ["table"]
            table_cells = page.locator(".jp-Notebook .jp-CodeCell").first.locator(
                ".jp-OutputArea-output table td").all_inner_texts()
            assert [cell.strip() for cell in table_cells[:3]] == ["Lisbon", "21.5", "774"]
            assert {"Nairobi", "24.1", "1213"} <= {cell.strip() for cell in table_cells}
            assert plots == ["text", "img", "text", "img", "text"]
            assert displays == ["text", "markdown", "text", "svg", "text"]
            assert loop == ["text", "markdown"]
            texts = page.locator(".jp-Notebook .jp-CodeCell").nth(3).inner_text()
            assert "step 5 of 5" in texts and "step 4 of 5" not in texts
            assert "\x1e" not in page.locator(".jp-Notebook").inner_text()
            wait_until(lambda: page.evaluate("() => [...document.querySelectorAll('.jp-Notebook img')]"
                                             ".every(img => img.complete && img.naturalWidth > 0)"),
                       30, "the images to be decoded")
            # a picture that changes only when the page does: without the animated kernel-activity circle
            page.add_style_tag(content=".jp-Notebook-ExecutionIndicator { visibility: hidden; }")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.locator(".jp-NotebookPanel").first.screenshot(path=str(SCREENSHOT), animations="disabled")
        finally:
            browser.close()


def run_all(page, url: str, kernels: int, timeout: float = 120) -> None:
    """Open `url`, wait for its kernel (the `kernels`-th of the server), run every cell, wait for each to finish."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
    wait_until(lambda: (states := kernel_states(url)) and len(states) == kernels and set(states) == {"idle"}, 90,
               f"{kernels} kernel(s) started and idle")
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    wait_until(lambda: all(p not in ("[ ]:", "[*]:") and p.startswith("[") for p in prompts(page)),
               timeout, "all cells to finish")


def test_safe_outputs_look_as_on_a_local_kernel_and_no_script_runs(lab, tmp_path):
    """DataFrame, figure, Markdown, LaTeX and plotly render as with ipykernel; the script cases run nothing.

    The same notebook runs on ipykernel first: there the script cases do run (the page records it),
    which shows that the check below can see a script that ran.
    """
    from playwright.sync_api import sync_playwright

    base, _, query = lab.partition("/doc/tree/")
    token = query.rpartition("token=")[2]
    seen: dict[str, tuple[list[list[str]], str | None, int]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1100, "height": 2400})
        try:
            for opened, kernel_name in enumerate(("python3", "remote-python"), start=1):
                page = browser.new_page()
                page.set_default_timeout(60_000)
                page.on("dialog", lambda dialog: dialog.dismiss())
                run_all(page, f"{base}/doc/tree/trust-{kernel_name}.ipynb?token={token}", opened)
                wait_until(lambda: page.locator(".jp-Notebook .js-plotly-plot").count() > 0, 60, "the plotly figure")
                wait_until(lambda: page.locator(".jp-Notebook mjx-container").count() > 0, 60, "the typeset LaTeX")
                shown = [outputs_of(page, i) for i in range(len(TRUST_CELLS))]
                ran = page.evaluate("() => document.body.dataset.ran || null")
                scripts = page.evaluate("() => document.querySelectorAll('.jp-OutputArea script').length")
                seen[kernel_name] = (shown, ran, scripts)
                page.close()
        finally:
            browser.close()
    local, remote = seen["python3"], seen["remote-python"]
    assert remote[0][:5] == local[0][:5] == [["table"], ["img"], ["markdown"], ["latex"], ["plotly"]], seen
    assert local[1] is not None  # on ipykernel the page ran a script of the last cell
    assert remote[1] is None and remote[2] == 0, seen

