"""The notebook in a real browser: JupyterLab on loopback, headless Chromium, rich output on the page.

The test starts JupyterLab itself (a temp root folder, a token, the remote-python kernelspec on
JUPYTER_PATH), drives Debian's Chromium with Playwright (never a downloaded browser), runs every
cell of notebooks/rich-output.ipynb and reads what the page shows. It saves the screenshot that
the README shows (docs/rich-output.png). It skips, saying why, where Chromium, Playwright or
JupyterLab is missing; `scripts/test` installs them.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kernel_support import ROOT, install_kernelspec

from bench import browser_bench
from bench.browser_bench import CHROMIUM, CHROMIUM_FLAGS, available, jupyterlab

NOTEBOOK = "rich-output.ipynb"
SCREENSHOT = ROOT / "docs" / "rich-output.png"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=str(available()))]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `predicate` until it returns something true (the page's state: 5 times a second)."""
    return browser_bench.wait_until(predicate, timeout, what, interval)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    """A JupyterLab on 127.0.0.1 serving a copy of the notebook; its URL with the token."""
    spec_root = install_kernelspec()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    for kernel_name in ("python3", "remote-python"):
        (root / f"trust-{kernel_name}.ipynb").write_text(json.dumps(trust_notebook(kernel_name)))
    with jupyterlab(tmp_path, root, {"JUPYTER_PATH": str(spec_root)}) as (base, token):
        specs = httpx.get(f"{base}/api/kernelspecs", params={"token": token}, timeout=10).json()
        assert "remote-python" in specs["kernelspecs"], specs
        yield f"{base}/doc/tree/{NOTEBOOK}?token={token}"


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
                wait_until(lambda page=page: page.locator(".jp-Notebook .js-plotly-plot").count() > 0,
                           60, "the plotly figure")
                wait_until(lambda page=page: page.locator(".jp-Notebook mjx-container").count() > 0,
                           60, "the typeset LaTeX")
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



#: the back channel in the page: a slider and its `interact` output, an input box, a tqdm bar, a hostile widget
WIDGET_CELLS = [
    "from ipywidgets import interact\ndef f(x):\n    return x * 2\n_ = interact(f, x=10)",
    "print('hello ' + input('name?'))",
    "import time\nfrom tqdm.notebook import tqdm\nfor _ in tqdm(range(50)):\n    time.sleep(0.01)",
    "import ipywidgets as widgets\nwidgets.HTML('<img src=x onerror=\"window.__pwned = 1\"><b>kept</b>')",
]


def widget_notebook(kernel_name: str) -> dict:
    """WIDGET_CELLS as a notebook for `kernel_name`."""
    notebook = trust_notebook(kernel_name)
    notebook["cells"] = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                          "source": source} for source in WIDGET_CELLS]
    return notebook


def widget_view(page) -> dict:
    """What the page shows of WIDGET_CELLS: the slider's readout, the texts under each cell, the tqdm bar."""
    return page.evaluate("""() => {
        const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
        const text = (cell) => cell ? cell.querySelector('.jp-Cell-outputWrapper').innerText.trim() : null;
        const readout = cells[0] && cells[0].querySelector('.widget-slider .widget-readout');
        const bar = cells[2] && cells[2].querySelector('.widget-hprogress .progress-bar');
        return {
            sliders: cells[0] ? cells[0].querySelectorAll('.widget-slider .noUi-handle').length : 0,
            readout: readout ? readout.innerText.trim() : null,
            outputs: cells.map(text),
            bar: bar ? bar.style.width : null,
            errors: document.querySelectorAll('.jp-Notebook .jupyter-widgets.jupyter-widgets-error-widget').length
                + (document.querySelector('.jp-Notebook').innerText.includes('Error displaying widget') ? 1 : 0),
            pwned: window.__pwned === undefined ? null : window.__pwned,
        };
    }""")


def test_widgets_stdin_and_a_reload_work_in_jupyterlab_as_on_ipykernel(lab, tmp_path):
    """The back channel in the browser, side by side with ipykernel.

    On each kernel: `interact`'s slider is shown and moved with the keyboard (its output follows),
    `input()` shows JupyterLab's input box and the answer reaches the cell, a `tqdm.notebook` bar
    reaches 50/50, a reload of the page renders the slider again (ipywidgets 8's control comm), and
    an `HTML` widget with an `onerror` handler runs it on ipykernel only (which shows that the
    check can see a script that ran). A screenshot per kernel lands in the test's folder.
    After the reload, the interact output shows the last value (26) on both kernels.
    """
    from playwright.sync_api import sync_playwright

    base, _, query = lab.partition("/doc/tree/")
    token = query.rpartition("token=")[2]
    root = tmp_path / "root"
    for kernel_name in ("python3", "remote-python"):
        (root / f"widgets-{kernel_name}.ipynb").write_text(json.dumps(widget_notebook(kernel_name)))
    seen: dict[str, dict] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1100, "height": 1400})
        try:
            for opened, kernel_name in enumerate(("python3", "remote-python"), start=1):
                page = browser.new_page()
                page.set_default_timeout(60_000)
                page.on("dialog", lambda dialog: dialog.accept())
                url = f"{base}/doc/tree/widgets-{kernel_name}.ipynb?token={token}"
                page.goto(url)
                page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
                wait_until(lambda url=url, opened=opened: (states := kernel_states(url)) and len(states) == opened
                           and set(states) == {"idle"}, 90, f"{opened} kernel(s) started and idle")
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                # 2. the input box, answered
                box = page.locator(".jp-Notebook .jp-Stdin-input").first
                box.wait_for(timeout=90_000)
                box.fill("Ada")
                box.press("Enter")
                wait_until(lambda page=page: all(p not in ("[ ]:", "[*]:") and p.startswith("[")
                                                 for p in prompts(page)),
                           120, f"{kernel_name}: all cells to finish ({widget_view(page)})")
                # 1. the slider, moved with the keyboard on its handle; the interact output follows
                wait_until(lambda page=page: widget_view(page)["readout"] == "10", 60, "the slider at 10")
                before = widget_view(page)
                handle = page.locator(".jp-Notebook .widget-slider .noUi-handle").first
                handle.focus()
                for _ in range(3):
                    handle.press("ArrowRight")
                wait_until(lambda page=page: "26" in (widget_view(page)["outputs"][0] or ""),
                           60, "the interact output 26")
                # 3. the tqdm bar complete
                wait_until(lambda page=page: "50/50" in (widget_view(page)["outputs"][2] or ""),
                           60, "the tqdm bar at 50/50")
                if kernel_name == "python3":  # the image's error handler runs once the image has failed to load
                    wait_until(lambda page=page: widget_view(page)["pwned"] == 1, 30, "ipykernel's handler to run")
                after = widget_view(page)
                page.add_style_tag(content=".jp-Notebook-ExecutionIndicator { visibility: hidden; }")
                page.locator(".jp-NotebookPanel").first.screenshot(path=str(tmp_path / f"widgets-{kernel_name}.png"),
                                                                   animations="disabled")
                # 4. saved, then reloaded: the widgets render again, from the kernel's state
                saved = root / f"widgets-{kernel_name}.ipynb"
                page.locator(".jp-Notebook").first.click()
                page.keyboard.press("Control+s")
                wait_until(lambda saved=saved: "application/vnd.jupyter.widget-view+json" in saved.read_text(), 60,
                           f"{kernel_name}: the notebook saved with its widget views")
                page.reload()
                page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
                wait_until(lambda page=page: (view := widget_view(page))["sliders"] == 1
                           and (view["outputs"][3] or "").endswith("kept"), 60,
                           f"{kernel_name}: the slider and the HTML widget rendered after the reload")
                if kernel_name == "python3":
                    wait_until(lambda page=page: widget_view(page)["pwned"] == 1, 30,
                               "ipykernel's handler to run after the reload")
                reloaded = widget_view(page)
                seen[kernel_name] = {"before": before, "after": after, "reloaded": reloaded}
                page.close()
        finally:
            browser.close()
    local, remote = seen["python3"], seen["remote-python"]
    for kernel_name, views in seen.items():
        before, after, reloaded = views["before"], views["after"], views["reloaded"]
        assert before["sliders"] == 1 and before["outputs"][0].endswith("20"), (kernel_name, views)
        assert after["readout"] == "13" and after["outputs"][0].endswith("26"), (kernel_name, views)
        assert after["outputs"][1].endswith("hello Ada"), (kernel_name, views)
        assert after["bar"] == "100%" and "50/50" in after["outputs"][2], (kernel_name, views)
        assert after["outputs"][3].endswith("kept"), (kernel_name, views)
        assert after["errors"] == 0 and reloaded["errors"] == 0, (kernel_name, views)
        assert reloaded["readout"] == "13", (kernel_name, views)
        assert reloaded["bar"] == "100%", (kernel_name, views)
        assert (tmp_path / f"widgets-{kernel_name}.png").stat().st_size > 0
    # the same visible texts on both kernels (tqdm's rate and times aside)
    for key in ("readout", "sliders"):
        assert local["after"][key] == remote["after"][key], seen
    assert local["after"]["outputs"][:2] == remote["after"]["outputs"][:2], seen
    assert local["reloaded"]["outputs"][0].endswith("26") and remote["reloaded"]["outputs"][0].endswith("26"), seen
    assert local["after"]["pwned"] == local["reloaded"]["pwned"] == 1  # on ipykernel the handler ran in the page
    assert remote["after"]["pwned"] is None and remote["reloaded"]["pwned"] is None, seen
