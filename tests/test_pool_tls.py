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


# the pool's CA vouches for the pool's own names only ---------------------------------------------

def forged(ca_folder: Path, names: list, common_name: str) -> tuple[bytes, bytes]:
    """A server certificate for `names` signed with the pool's CA key (what a thief of that key would make)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate((ca_folder / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_folder / "ca-key.pem").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def handshake(cert: Path, key: Path, bundle: Path, server_hostname: str) -> str | None:
    """A TLS handshake of a client trusting `bundle` (as SSL_CERT_FILE makes it) with a server showing `cert`
    for `server_hostname`: None when the client accepts it, else its verification error."""
    import socket
    import threading

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(bundle))
    ours, theirs = socket.socketpair()

    def serve() -> None:
        try:
            with server_context.wrap_socket(theirs, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_context.wrap_socket(ours, server_hostname=server_hostname):
            return None
    except ssl.SSLCertVerificationError as refused:
        return str(refused)
    finally:
        ours.close()
        thread.join(10)


FORGERIES = {
    "management.azure.com": lambda x509, ip: ([x509.DNSName("management.azure.com")], "management.azure.com"),
    "a package index, CN only": lambda x509, ip: ([], "pypi.org"),
    "a wildcard": lambda x509, ip: ([x509.DNSName("*.azure.com")], "x"),
    "another address": lambda x509, ip: ([x509.IPAddress(ip("10.77.0.1"))], "10.77.0.1"),
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_certificate_for_another_name_signed_with_the_pools_ca_key_is_not_trusted(tmp_path, forgery):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    from remote_kernel.pool.tls import make_own

    own = make_own(tmp_path, "127.0.0.1")
    assert own.bundle is not None and own.ca is not None
    ca = x509.load_pem_x509_certificate(own.ca.read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert ca.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) <= datetime.timedelta(days=8)
    assert handshake(own.cert, own.key, own.bundle, "127.0.0.1") is None  # the pool's own certificate holds
    assert handshake(own.cert, own.key, own.bundle, "localhost") is None

    names, common_name = FORGERIES[forgery](x509, ipaddress.ip_address)
    cert_pem, key_pem = forged(tmp_path, names, common_name)
    (tmp_path / "forged.pem").write_bytes(cert_pem)
    (tmp_path / "forged-key.pem").write_bytes(key_pem)
    target = common_name.replace("*", "login") if not names or isinstance(names[0], x509.DNSName) else "10.77.0.1"
    if forgery == "a wildcard":
        target = "login.azure.com"
    refused = handshake(tmp_path / "forged.pem", tmp_path / "forged-key.pem", own.bundle, target)
    assert refused is not None, f"a certificate for {target} signed with the pool's CA key was trusted"
    leaf = x509.load_pem_x509_certificate(cert_pem)
    subject: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(target)) if target[0].isdigit()
                                 else x509.DNSName(target))
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [])


def test_a_long_lived_unconstrained_ca_left_by_an_older_pool_is_replaced(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from remote_kernel.pool.tls import make_own

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remote_kernel local pool CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "ca.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    own = make_own(tmp_path, "127.0.0.1")
    assert own.ca is not None and own.ca.read_bytes() != old.public_bytes(serialization.Encoding.PEM)
    ca = x509.load_pem_x509_certificate(own.ca.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.NameConstraints).critical
    assert make_own(tmp_path, "127.0.0.1").ca.read_bytes() == own.ca.read_bytes()  # reused while valid
    renamed = make_own(tmp_path, "pool.internal")  # another name to serve: a CA constrained to it
    constraints = x509.load_pem_x509_certificate(renamed.ca.read_bytes()).extensions.get_extension_for_class(
        x509.NameConstraints).value
    assert x509.DNSName("pool.internal") in (constraints.permitted_subtrees or [])
