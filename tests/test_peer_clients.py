"""Client libraries written for the hosted service, driven unchanged against real local pools.

Each client runs in its own process from tests/peers/ (Python ones in tests/peers/.venv, which
tests/peers/install.sh makes and scripts/test runs; LlamaIndex TS from tests/peers/node_modules), with
only its documented settings: the endpoint, a token callback, and the trust lines `--tls` printed. The
assertions are on what the client returns to its caller. A client that is not installed skips, saying so.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PoolProcess, bubblewrap_usable, start_pool

pytestmark = pytest.mark.slow  # each test starts client libraries in processes of their own (5–30 s each)

PEERS = Path(__file__).resolve().parent / "peers"
VENV_PYTHON = PEERS / ".venv" / "bin" / "python"
INSTALL_HINT = "run tests/peers/install.sh (scripts/test does)"


@pytest.fixture(scope="module")
def https_pool():
    """A PythonLTS pool serving HTTPS with its own CA (the clients trust it through the printed lines)."""
    pool = start_pool("--tls", "--max-sessions", "30", "--ready-sessions", "1")
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def shell_pool():
    pool = start_pool("--container-type", "Shell", "--max-sessions", "10", "--ready-sessions", "1")
    yield pool
    pool.stop()


def trust_env(pool: PoolProcess) -> dict[str, str]:
    """The three lines `remote-kernel pool --tls` prints, for a pool started with --data-root."""
    tls = pool.data_root / "tls"
    return {"SSL_CERT_FILE": str(tls / "ca-bundle.pem"), "REQUESTS_CA_BUNDLE": str(tls / "ca-bundle.pem"),
            "NODE_EXTRA_CA_CERTS": str(tls / "ca.pem")}


def python_client(module: str) -> None:
    """Skip unless the peer venv can import `module`."""
    if not VENV_PYTHON.exists():
        pytest.skip(f"the peer clients' environment is missing: {INSTALL_HINT}")
    probe = subprocess.run([str(VENV_PYTHON), "-c", f"import {module}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{module} is not installed in tests/peers/.venv ({probe.stderr.strip()[-200:]}): {INSTALL_HINT}")


def drive(argv: list[str], pool: PoolProcess, tmp_path: Path, extra_env: dict[str, str] | None = None) -> dict:
    """Run one client script; return the JSON it printed after `PEER-RESULT`."""
    env = {**os.environ, "POOL_MANAGEMENT_ENDPOINT": pool.endpoint, "REMOTE_KERNEL_TOKEN": pool.token,
           "WORK_DIR": str(tmp_path), **(extra_env or {})}
    env.pop("PYTHONPATH", None)  # the clients are the hosted service's clients: nothing of ours is imported
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEER-RESULT ")]
    assert done.returncode == 0 and lines, (f"{argv[-1]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                                            f"{done.stderr[-3000:]}\npool log:\n{pool.log()[-2000:]}")
    return json.loads(lines[-1][len("PEER-RESULT "):])


def test_semantic_kernel_executes_uploads_after_executing_lists_and_downloads_over_https(https_pool, tmp_path):
    python_client("semantic_kernel")
    answer = drive([str(VENV_PYTHON), str(PEERS / "semantic_kernel_client.py")], https_pool, tmp_path,
                   trust_env(https_pool))
    assert "Status:\nSuccess" in answer["execute"] and "Result:\n42" in answer["execute"]
    assert "Stdout:\nhello" in answer["execute"]
    # the upload goes out with the execute call's `Content-Type: application/json` (SK's shared client)
    assert answer["upload"] == {"filename": "numbers.csv", "full_path": "/mnt/data/numbers.csv", "size": 12}
    assert "numbers.csv" in answer["list"]
    assert "Result:\n3" in answer["read_by_code"]
    assert answer["download"] == "a,b\n1,2\n3,4\n"
    assert "Status:\nFailure" in answer["failure"] and "ZeroDivisionError" in answer["failure"]


def test_autogen_package_probe_functions_with_requirements_and_failures(https_pool, tmp_path):
    python_client("autogen_ext.code_executors.azure")
    answer = drive([str(VENV_PYTHON), str(PEERS / "autogen_client.py")], https_pool, tmp_path,
                   trust_env(https_pool))
    packages = set(answer["packages"])
    assert {"pandas", "numpy", "ipython", "matplotlib"} <= {p.lower() for p in packages}, sorted(packages)[:20]
    assert len(packages) > 20  # one entry per package, not one bogus entry for the whole list
    assert answer["function"] == {"exit_code": 0, "output": "3\n"}  # the pandas requirement was found
    assert answer["missing"]["exit_code"] == 1 and "surely-not-installed-package" in answer["missing"]["output"]
    assert answer["failed"]["exit_code"] == 1 and "NameError" in answer["failed"]["output"]


def test_langchain_python_tool_values_plot_and_files(https_pool, tmp_path):
    python_client("langchain_azure_dynamic_sessions")
    answer = drive([str(VENV_PYTHON), str(PEERS / "langchain_client.py"), "python"], https_pool, tmp_path,
                   trust_env(https_pool))
    assert answer["value"] == {"result": 42, "stdout": "hello\n", "stderr": ""}
    assert answer["list"]["result"] == "[1, 2, 3]"  # a list is its display text (docs/clients.md)
    assert answer["plot"]["content"]["result"] == {"type": "image", "format": "png"}  # base64 stripped for the model
    assert answer["plot"]["png_copies"] == 1  # and the answer kept beside it carries the PNG once, not twice
    assert answer["upload"] == {"filename": "hello.txt", "size": 10}
    assert answer["download"] == "hello file" and "hello.txt" in answer["files"]


def test_langchain_bash_tool_on_a_shell_pool(shell_pool, tmp_path):
    python_client("langchain_azure_dynamic_sessions")
    answer = drive([str(VENV_PYTHON), str(PEERS / "langchain_client.py"), "bash"], shell_pool, tmp_path)
    assert answer["echo"] == {"stdout": "hello\n", "stderr": "oops\n", "exitCode": 0}
    assert answer["exit"]["exitCode"] == 3
    if bubblewrap_usable()[0]:
        assert answer["user"]["stdout"] == "65534\n"  # the sandbox's user, not the pool's
        assert answer["network"]["stdout"] == "no-network\n"  # egress is disabled by default
    assert answer["upload"] == {"filename": "lines.txt", "size": 8}
    assert answer["count"]["stdout"].strip() == "2" and answer["download"] == "one\ntwo\n"
    assert "lines.txt" in answer["files"]


def test_llamaindex_ts_legacy_python_execute_over_https(https_pool, tmp_path):
    if not shutil.which("node"):
        pytest.skip("Node.js is not installed")
    if not (PEERS / "node_modules" / "@llamaindex" / "azure").is_dir():
        pytest.skip(f"@llamaindex/azure is not installed in tests/peers/node_modules: {INSTALL_HINT}")
    answer = drive(["node", str(PEERS / "llamaindex_client.cjs")], https_pool, tmp_path, trust_env(https_pool))
    assert answer["value"]["result"] == 42 and answer["value"]["stdout"] == "hello\n"
    assert answer["value"]["status"] == "Success"
    assert answer["none"]["status"] == "Success" and answer["none"]["result"] == ""  # None: "" (docs/clients.md)
    # the tool saves the image under tool-output/ and returns a path to it (doubled: a bug of the tool's own)
    saved = list((tmp_path / "tool-output").glob("*.png"))
    assert len(saved) == 1 and saved[0].read_bytes().startswith(b"\x89PNG")
    assert answer["plot"]["result"].endswith(saved[0].name)
    assert answer["upload"]["filename"] == "hello.txt" and "hello.txt" in answer["list"]
