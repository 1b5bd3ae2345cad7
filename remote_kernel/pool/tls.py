"""HTTPS for the pool: a certificate authority of its own, or a certificate the user gives.

Hosted pools are HTTPS only, and some clients refuse an `http://` endpoint (Semantic Kernel).
`--tls` keeps a small CA in the pool's folder (reused while it is valid, so a user trusts it once per
folder: the trust lines name files whose content is renewed in place) and signs a fresh server
certificate for loopback at every start. The CA is name-constrained (RFC 5280 4.2.1.10) to the names it
serves (`localhost`, 127.0.0.1, ::1 and the `--host` given) and lives CA_DAYS days, renewed at a start
within RENEW_BEFORE of its end: its key, if stolen, cannot sign a certificate that a client trusting the
bundle would accept for any other name (a package index, `management.azure.com`). The trust lines it prints point
Python at a bundle of the public CAs (certifi) plus this CA, so the same process still reaches
public HTTPS sites, and Node.js at the CA alone (NODE_EXTRA_CA_CERTS adds to Node's own list).
Certificates are made with `cryptography`.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "remote_kernel local pool CA"
CA_DAYS = 7
RENEW_BEFORE = datetime.timedelta(days=2)  # a CA with less left is replaced at start (a pool runs ≥ 2 days)


class TlsProblem(RuntimeError):
    """The certificate or key cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class TlsFiles:
    """What uvicorn serves and what clients must trust."""

    cert: Path
    key: Path
    ca: Path | None = None  # the pool's own CA (None: a certificate the user gave)
    bundle: Path | None = None  # the public CAs plus the pool's CA, for SSL_CERT_FILE / REQUESTS_CA_BUNDLE

    def trust_lines(self) -> list[str]:
        """The lines a user pastes into a shell so that clients trust this pool."""
        if self.ca is None:
            return ["# TLS with the given certificate: clients must trust its issuer"]
        return [f"export SSL_CERT_FILE={self.bundle}", f"export REQUESTS_CA_BUNDLE={self.bundle}",
                f"export NODE_EXTRA_CA_CERTS={self.ca}"]


def default_folder() -> Path:
    """Where the pool's CA lives when no --data-root is given: the user's data folder."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "remote_kernel" / "tls"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only (created 0600, never world-readable for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _constraints(host: str) -> x509.NameConstraints:
    """The only names the CA may vouch for: those of `_names(host)` (DNS names with their subdomains)."""
    permitted: list[x509.GeneralName] = []
    for name in _names(host):
        if isinstance(name, x509.IPAddress):
            address = name.value
            permitted.append(x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}")))
        else:
            permitted.append(name)
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def _reusable(cert: x509.Certificate, host: str) -> bool:
    """Whether a stored CA may sign for `host` now: constrained to a set covering its names, valid for at
    least RENEW_BEFORE more, and short-lived (a CA made by an older version, unconstrained or for
    ten years, is replaced)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return False
    needed = set(_constraints(host).permitted_subtrees or [])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return (constraints.excluded_subtrees is None and needed <= set(constraints.permitted_subtrees or [])
            and cert.not_valid_after_utc - _now() > RENEW_BEFORE
            and lifetime <= datetime.timedelta(days=CA_DAYS, minutes=10))


def _load_or_make_ca(folder: Path, host: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / "ca.pem", folder / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError:  # a damaged file: make a new CA
            pass
        else:
            if isinstance(key, ec.EllipticCurvePrivateKey) and _reusable(cert, host):
                return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "remote_kernel")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_constraints(host), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _names(host: str) -> list[x509.GeneralName]:
    """The server certificate's names: loopback by every spelling, plus the address it binds."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        if not address.is_unspecified and x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    return names


def make_own(folder: Path, host: str) -> TlsFiles:
    """The pool's CA (made on first use) and a new server certificate signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca_cert, ca_key = _load_or_make_ca(folder, host)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remote_kernel local pool")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(ca_cert.not_valid_after_utc)  # never outlives its CA
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server-key.pem"
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    bundle = folder / "ca-bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n\n# " + CA_NAME.encode() + b"\n" + ca_pem)
    return TlsFiles(cert_path, key_path, folder / "ca.pem", bundle)


def given(cert: str, key: str) -> TlsFiles:
    """A certificate and key the user gives, checked now so that a mistake is reported before serving."""
    files = TlsFiles(Path(cert).resolve(), Path(key).resolve())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key)
    except FileNotFoundError as missing:
        raise TlsProblem(f"{missing.filename}: no such file") from None
    except (ssl.SSLError, OSError) as error:
        raise TlsProblem(f"--tls-cert {cert} / --tls-key {key} cannot be used together: {error}") from None
    return files
