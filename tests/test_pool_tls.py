"""`remote-kernel pool --tls` and `--tls-cert/--tls-key`: HTTPS that Python and Node.js clients verify."""
from __future__ import annotations

import os
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import certifi
import httpx
import pytest

from conftest import ROOT, start_pool
from kernel_support import kernel, pool_env, result_of, run


def launch(*options: str) -> tuple[subprocess.Popen, list[str]]:
    """A pool started as a user starts it; its stdout lines up to the summary line that ends the header."""
    process = subprocess.Popen([sys.executable, "-m", "remote_kernel", "pool", "--port", "0", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "REMOTE_KERNEL_TOKEN": "tls-test-token"})
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if " sessions, sandbox: " in line:
            break
    return process, lines


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(20)


def exported(lines: list[str]) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))


def test_tls_pool_prints_the_lines_that_make_python_and_node_trust_it(tmp_path):
    process, lines = launch("--tls", "--data-root", str(tmp_path), "--ready-sessions", "0")
    try:
        env = exported(lines)
        endpoint = env["POOL_MANAGEMENT_ENDPOINT"]
        assert endpoint.startswith("https://127.0.0.1:"), lines
        assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == str(tmp_path / "tls" / "ca-bundle.pem")
        assert env["NODE_EXTRA_CA_CERTS"] == str(tmp_path / "tls" / "ca.pem")
        bundle = Path(env["SSL_CERT_FILE"]).read_text()
        assert Path(certifi.where()).read_text().strip() in bundle  # the public CAs are kept
        assert stat.S_IMODE((tmp_path / "tls" / "ca-key.pem").stat().st_mode) == 0o600

        with pytest.raises(httpx.ConnectError):  # a client that was not told to trust the pool refuses it
            httpx.get(f"{endpoint}/health", verify=ssl.create_default_context(cafile=certifi.where()))
        trusted = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
        assert httpx.get(f"{endpoint}/health", verify=trusted).json()["status"] == "ok"
        for host in ("localhost", "[::1]"):
            try:
                answer = httpx.get(endpoint.replace("127.0.0.1", host) + "/health", verify=trusted)
            except httpx.ConnectError as refused:  # the pool listens on 127.0.0.1 only: ::1 may refuse
                assert "certificate" not in str(refused).lower(), refused
            else:
                assert answer.status_code == 200

        probe = subprocess.run([sys.executable, "-c", "import httpx, sys; print(httpx.get(sys.argv[1]).status_code)",
                                f"{endpoint}/health"], capture_output=True, text=True,
                               env={**os.environ, "SSL_CERT_FILE": env["SSL_CERT_FILE"]})
        assert probe.stdout.strip() == "200", probe.stderr  # httpx (used by SK, MCP) reads SSL_CERT_FILE
        if shutil.which("node"):
            node = subprocess.run(["node", "-e", "fetch(process.argv[1]).then(r => console.log(r.status), "
                                                 "e => { console.error(e.cause || e); process.exit(1) })",
                                   f"{endpoint}/health"], capture_output=True, text=True,
                                  env={**os.environ, "NODE_EXTRA_CA_CERTS": env["NODE_EXTRA_CA_CERTS"]})
            assert node.stdout.strip() == "200", node.stderr
    finally:
        stop(process)
    first_ca = (tmp_path / "tls" / "ca.pem").read_bytes()
    process, lines = launch("--tls", "--data-root", str(tmp_path), "--ready-sessions", "0")
    stop(process)
    assert (tmp_path / "tls" / "ca.pem").read_bytes() == first_ca  # trusted once: the CA is kept and reused


def test_a_given_certificate_and_key_are_served(tmp_path):
    from remote_kernel.pool.tls import make_own

    own = make_own(tmp_path / "elsewhere", "127.0.0.1")  # stands for a certificate the user already has
    pool = start_pool("--tls-cert", str(own.cert), "--tls-key", str(own.key), "--ready-sessions", "0")
    try:
        assert pool.endpoint.startswith("https://")
        answer = httpx.get(f"{pool.endpoint}/health", verify=ssl.create_default_context(cafile=str(own.ca)))
        assert answer.json()["status"] == "ok"
    finally:
        pool.stop()


@pytest.mark.parametrize("options, message", [
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "no such file"),
    (["--tls-cert", "/nonexistent/cert.pem"], "--tls-cert and --tls-key go together"),
])
def test_unusable_tls_files_stop_the_pool_with_a_reason(options, message):
    done = subprocess.run([sys.executable, "-m", "remote_kernel", "pool", "--port", "0", *options],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_kernel_runs_cells_on_an_https_pool(tmp_path):
    pool = start_pool("--tls", "--ready-sessions", "1")
    try:
        env = pool_env(pool, str(uuid.uuid4()), SSL_CERT_FILE=str(pool.data_root / "tls" / "ca-bundle.pem"))
        with kernel(env, cwd=tempfile.mkdtemp()) as (_, kc):
            reply, outputs = run(kc, "6 * 7")
            assert reply["status"] == "ok" and result_of(outputs) == "42"
    finally:
        pool.stop()
