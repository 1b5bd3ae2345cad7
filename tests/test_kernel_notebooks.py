"""Notebooks on the embedded default: nbclient, papermill, and the embedded pool's lifetime."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import nbformat
import psutil
import pytest
from kernel_support import KERNEL_NAME, ROOT, IpcKernelManager, embedded_env, install_kernelspec, kernel, run, wait_for
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def embedded(monkeypatch, tmp_path):
    """A copy of notebooks/ to run in, with an environment that makes kernels start their own pool."""
    install_kernelspec()
    for name in ("POOL_MANAGEMENT_ENDPOINT", "REMOTE_KERNEL_TOKEN", "REMOTE_KERNEL_AUTH", "REMOTE_KERNEL_IDENTIFIER"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder)
    return folder


def execute(path, folder):
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, kernel_name=book.metadata.kernelspec.name, timeout=180, startup_timeout=60,
                   kernel_manager_class=IpcKernelManager,
                   resources={"metadata": {"path": str(folder)}}).execute()
    return book


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_every_notebook_runs_with_nbclient(embedded, name):
    book = execute(embedded / name, embedded)
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    expected_errors = sum("raises-exception" in cell.metadata.get("tags", []) for cell in book.cells)
    assert sum(o.output_type == "error" for o in outputs) == expected_errors


def test_quickstart_shows_state_a_plot_an_error_and_a_file_round_trip(embedded):
    book = execute(embedded / "quickstart.ipynb", embedded)
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any(o.output_type == "error" and o.ename == "ZeroDivisionError" for o in outputs)
    assert any("still here after the error" in o.get("text", "") for o in outputs)
    assert (embedded / "quickstart-table.csv").exists()
    assert any(o.get("data", {}).get("text/plain") == "True" for o in outputs)


def test_failing_cell_raises_cell_execution_error_naming_the_remote_exception(embedded):
    book = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("{}['missing']"), new_code_cell("x")],
                        metadata={"kernelspec": {"name": KERNEL_NAME, "display_name": "r", "language": "python"}})
    with pytest.raises(CellExecutionError) as failure:
        NotebookClient(book, kernel_name=KERNEL_NAME, timeout=120, startup_timeout=60,
                       kernel_manager_class=IpcKernelManager).execute()
    assert "KeyError" in str(failure.value) and "missing" in str(failure.value)


def test_papermill_runs_the_parameterised_notebook(embedded):
    import papermill

    out = embedded / "parameters-out.ipynb"
    papermill.execute_notebook(str(embedded / "parameters.ipynb"), str(out), parameters={"n": 5, "label": "five"},
                               kernel_name=KERNEL_NAME, cwd=str(embedded), progress_bar=False,
                               kernel_manager_class=IpcKernelManager)
    book = nbformat.read(out, as_version=4)
    last = book.cells[-1].outputs
    assert any(o.get("data", {}).get("text/plain") == "30" for o in last)
    assert any("five" in o.get("text", "") for o in last)


def _embedded_pool_of(km) -> psutil.Process:
    kernel_process = psutil.Process(km.provisioner.process.pid)
    pools = [p for p in kernel_process.children(recursive=True) if "pool" in p.cmdline()]
    assert len(pools) == 1
    return pools[0]


def test_embedded_pool_stops_with_the_kernel_even_on_sigkill():
    install_kernelspec()
    with kernel(embedded_env()) as (km, kc):
        reply, _ = run(kc, "1 + 1")
        assert reply["status"] == "ok"
        pool = _embedded_pool_of(km)
        assert "--parent-pid" in pool.cmdline() and not any("REMOTE_KERNEL_TOKEN" in a for a in pool.cmdline())
        sessions = pool.children(recursive=True)
        assert sessions, "the pool runs the kernel's session (and a ready one)"
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        gone = lambda p: not p.is_running() or p.status() == psutil.STATUS_ZOMBIE  # noqa: E731
        wait_for(lambda: gone(pool) and all(gone(s) for s in sessions), timeout=5,
                 what="the embedded pool and its sessions to stop after its kernel was killed")


def test_embedded_pool_stops_on_shutdown():
    install_kernelspec()
    with kernel(embedded_env()) as (km, kc):
        run(kc, "1 + 1")
        pool = _embedded_pool_of(km)
    wait_for(lambda: not pool.is_running() or pool.status() == psutil.STATUS_ZOMBIE, timeout=10,
             what="the embedded pool to stop")


def test_a_dead_embedded_pool_is_replaced_and_the_loss_is_said():
    install_kernelspec()
    with kernel(embedded_env()) as (km, kc):
        run(kc, "x = 1")
        pool = _embedded_pool_of(km)
        pool.kill()
        reply, _ = run(kc, "x", timeout=120)
        assert reply["ename"] == "EmbeddedPoolError" and "state is lost" in reply["evalue"]
        reply, outputs = run(kc, "'x' in dir()", timeout=120)
        assert reply["status"] == "ok" and outputs[-1]["content"]["data"]["text/plain"] == "False"


def test_remote_kernel_run_prints_each_cell_and_writes_the_executed_notebook(embedded):
    """The README's first command ends in `remote-kernel run`: what the user sees at the terminal."""
    done = subprocess.run([sys.executable, "-m", "remote_kernel", "run", str(embedded / "quickstart.ipynb")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = done.stdout
    assert "In [2]: import sys, platform" in shown and "'hello from the session'" in shown
    assert "[image/png" in shown and "ZeroDivisionError" in shown and "still here after the error" in shown
    written = embedded / "quickstart.executed.ipynb"
    assert f"is in {written}" in shown
    book = nbformat.read(written, as_version=4)
    assert any("image/png" in o.get("data", {}) for cell in book.cells if cell.cell_type == "code"
               for o in cell.outputs)


def test_remote_kernel_run_fails_on_a_failing_cell_and_says_which(embedded):
    book = new_notebook(cells=[new_code_cell("print('before')"), new_code_cell("{}['missing']"),
                               new_code_cell("print('never')")])
    path = embedded / "failing.ipynb"
    nbformat.write(book, path)
    done = subprocess.run([sys.executable, "-m", "remote_kernel", "run", str(path), "--output",
                           str(embedded / "out.ipynb")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1
    assert "before" in done.stdout and "KeyError" in done.stdout and "never" not in done.stdout
    assert "A cell failed" in done.stdout and (embedded / "out.ipynb").exists()


def test_the_wheel_ships_both_kernelspecs_with_logos(tmp_path):
    """`pip install .` registers every kernel the README names (the build hook writes them as shared data)."""
    import zipfile

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "hatchling" in done.stderr:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    for kernel_name in ("remote-python", "remote-javascript"):
        shipped = {n.rsplit("/", 1)[-1] for n in names if f"share/jupyter/kernels/{kernel_name}/" in n}
        assert shipped == {"kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg"}, (kernel_name, shipped)


def test_the_embedded_pool_listens_on_a_private_unix_socket_and_no_tcp_port():
    """No other local user can reach the embedded pool: no TCP port, a socket only its owner may open."""
    import stat

    with kernel(embedded_env()) as (km, kc):
        reply, _ = run(kc, "1 + 1")
        assert reply["status"] == "ok"
        pools = [p for p in psutil.Process(km.provisioner.pid).children(recursive=True)
                 if "pool" in p.cmdline() and "remote_kernel" in p.cmdline()]
        assert len(pools) == 1
        pool = pools[0]
        assert [c for c in pool.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN] == []
        path = pool.cmdline()[pool.cmdline().index("--socket") + 1]
        assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    wait_for(lambda: not os.path.exists(os.path.dirname(path)), timeout=15, what="the socket's folder to be removed")
