"""Certificates for the fake APNs: a local CA and a server certificate it signs.

`ensure_certificates(folder)` writes `ca.pem`, `ca.key`, `server.pem` and `server.key` (reusing
them when present and still valid), so a client can trust the simulator by loading `ca.pem`. The
server certificate names `localhost`, `127.0.0.1` and `::1`, and the APNs host names, so a client
configured for `api.sandbox.push.apple.com` can be pointed at the simulator with only a CA change.
The CA's key is kept (0600) so that client certificates (`simulator.clientcert`) can be issued
under the same CA on a later run. Every file holding a private key is created 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = (
    "localhost",
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
)
SERVER_IPS = ("127.0.0.1", "::1")
_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    """Where the simulator's TLS material lives."""

    ca: Path
    cert: Path
    key: Path
    ca_key: Path
    """The CA's private key (0600): what client certificates are signed with."""


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lockstep simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> Path:
    """Write `data` to `path` readable by the owner only (0600 from creation, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file that already existed keeps its mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def _paths(folder: Path) -> CertificatePaths:
    return CertificatePaths(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "ca.key"
    )


def _issue(folder: Path, now: dt.datetime) -> CertificatePaths:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Lockstep simulator CA"))
        .issuer_name(_name("Lockstep simulator CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName(n) for n in SERVER_NAMES] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = _paths(folder)
    write_private(paths.ca_key, _pem_key(ca_key))
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(paths.key, _pem_key(key))
    return paths


def _still_valid(paths: CertificatePaths, now: dt.datetime) -> bool:
    files = (paths.ca, paths.cert, paths.key, paths.ca_key)
    if not all(f.exists() for f in files):
        return False  # a state folder from before the CA key was kept: issue everything anew
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc > now + dt.timedelta(days=1)


def ensure_certificates(folder: str | Path, *, now: dt.datetime | None = None) -> CertificatePaths:
    """Reuse the CA and server certificate in `folder`, or issue new ones."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    moment = now or dt.datetime.now(dt.UTC)
    paths = _paths(root)
    return paths if _still_valid(paths, moment) else _issue(root, moment)


def server_ssl_context(
    paths: CertificatePaths, *, client_certificates: bool = True
) -> ssl.SSLContext:
    """A TLS 1.2+ server context offering ALPN `h2` only, as APNs does (apns.md §1).

    With `client_certificates`, it asks for an optional client certificate signed by the
    simulator's CA (certificate auth, apns.md §9): a client without one does token auth, one
    with a certificate from another CA is refused at the handshake, as APNs refuses a revoked one.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(paths.cert), str(paths.key))
    ctx.set_alpn_protocols(["h2"])
    if client_certificates:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=str(paths.ca))
    return ctx


def client_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A client context that trusts the simulator's CA and asks for ALPN `h2`."""
    ctx = ssl.create_default_context(cafile=str(paths.ca))
    ctx.set_alpn_protocols(["h2"])
    return ctx
