"""Certificates for the fake APNs: a local CA and a server certificate it signs.

`ensure_certificates(folder)` writes `ca.pem`, `server.pem` and `server.key` (reusing them when
present and still valid), so a client can trust the simulator by loading `ca.pem`. The server
certificate names `localhost`, `127.0.0.1` and `::1`, and the APNs host names, so a client
configured
for `api.sandbox.push.apple.com` can be pointed at the simulator with only a CA change.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
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
    paths = CertificatePaths(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(_pem_key(key))
    paths.key.chmod(0o600)
    return paths


def _still_valid(paths: CertificatePaths, now: dt.datetime) -> bool:
    if not (paths.ca.exists() and paths.cert.exists() and paths.key.exists()):
        return False
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
    paths = CertificatePaths(root / "ca.pem", root / "server.pem", root / "server.key")
    return paths if _still_valid(paths, moment) else _issue(root, moment)


def server_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A TLS 1.2+ server context offering ALPN `h2` only, as APNs does (apns.md §1)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(paths.cert), str(paths.key))
    ctx.set_alpn_protocols(["h2"])
    return ctx


def client_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A client context that trusts the simulator's CA and asks for ALPN `h2`."""
    ctx = ssl.create_default_context(cafile=str(paths.ca))
    ctx.set_alpn_protocols(["h2"])
    return ctx
