"""Client certificates for certificate-based auth to the fake APNs (apns.md §9).

APNs also trusts a provider by the TLS client certificate Apple issued for one app. Such a
certificate names the app's bundle id in its subject UID, says which environment it serves by
Apple's extensions 1.2.840.113635.100.6.3.1 (development, i.e. sandbox) and .2 (production), and
may list further topics (`<bundle>.voip`, `<bundle>.complication`, ...) in the extension
1.2.840.113635.100.6.3.6.

`ensure_client_certificates(certs, bundle_id=...)` issues one certificate per environment under
the simulator's CA, into the state folder next to `ca.pem`: `client-sandbox.pem` and
`client-production.pem`, each holding the certificate and its private key (0600), the form
clients such as aioapns (`client_cert=`) and curl (`--cert`) load. They are reused across runs
while they still name the bundle, are signed by the current CA and stay valid for a day more.

`read_client_certificate(der)` turns the certificate a client presented into the
`ClientCertificate` the validator judges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.apns import wire
from simulator.certs import CertificatePaths, write_private
from simulator.profile import ENVIRONMENTS, PRODUCTION, SANDBOX
from simulator.validation import ClientCertificate

DEVELOPMENT_OID: Final = x509.ObjectIdentifier("1.2.840.113635.100.6.3.1")
PRODUCTION_OID: Final = x509.ObjectIdentifier("1.2.840.113635.100.6.3.2")
TOPICS_OID: Final = x509.ObjectIdentifier("1.2.840.113635.100.6.3.6")
_ENVIRONMENT_OIDS: Final = {SANDBOX: DEVELOPMENT_OID, PRODUCTION: PRODUCTION_OID}

VALIDITY: Final = dt.timedelta(days=365)
"""Apple's APNs certificates are valid for one year (apns.md §9)."""

_NULL: Final = b"\x05\x00"  # DER NULL: the Apple environment extensions carry no value
_SEQUENCE: Final = 0x30
_UTF8_STRING: Final = 0x0C


# --- the topics extension (DER) ---------------------------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    """One DER element (definite length, short or long form)."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def encode_topics(topics: Iterable[tuple[str, str]]) -> bytes:
    """The topics extension's value for (topic, kind) pairs, kind being e.g. `app` or `voip`.

    Each topic is a UTF8String followed by a SEQUENCE naming its kind; readers such as pushy's
    TopicUtil take every string of the outer SEQUENCE as a topic and skip the rest.
    """
    items = b"".join(
        _der(_UTF8_STRING, topic.encode()) + _der(_SEQUENCE, _der(_UTF8_STRING, kind.encode()))
        for topic, kind in topics
    )
    return _der(_SEQUENCE, items)


def _element(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, next position) of the DER element at `pos`; ValueError if malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        size = first
    if pos + size > len(data):
        raise ValueError("truncated content")
    return tag, data[pos : pos + size], pos + size


def decode_topics(value: bytes) -> frozenset[str]:
    """The topics in a topics extension's value: every UTF8String of its outer SEQUENCE.

    A value that is not such a SEQUENCE yields no topics rather than an error: a certificate
    the simulator cannot read covers only its bundle.
    """
    try:
        tag, content, end = _element(value, 0)
        if tag != _SEQUENCE or end != len(value):
            return frozenset()
        topics: set[str] = set()
        pos = 0
        while pos < len(content):
            tag, item, pos = _element(content, pos)
            if tag == _UTF8_STRING:
                topics.add(item.decode())
    except (ValueError, UnicodeDecodeError):
        return frozenset()
    return frozenset(topics)


# --- issuing and reading ----------------------------------------------------------------------


def default_topics(bundle_id: str) -> list[tuple[str, str]]:
    """The bundle and every push-type topic of it, as a certificate with all capabilities has."""
    return [(bundle_id, "app")] + [
        (bundle_id + suffix, push_type) for push_type, suffix in wire.TOPIC_SUFFIXES.items()
    ]


def issue_client_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    bundle_id: str | None,
    environments: Iterable[str],
    topics: Iterable[tuple[str, str]] | None = None,
    team_id: str = "LOCKSTEP01",
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate and its key, signed by the CA, in the shape Apple issues them.

    `bundle_id` None leaves the subject UID out (a certificate that names no app); `topics`
    None lists `default_topics(bundle_id)`, an empty list leaves the extension out. The
    certificate expires after `VALIDITY`, never after its CA.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.USER_ID, bundle_id)] if bundle_id else []
    label = bundle_id or "no bundle"
    names += [
        x509.NameAttribute(NameOID.COMMON_NAME, f"Apple Push Services: {label}"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, team_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lockstep simulator"),
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    for environment in sorted(set(environments)):
        oid = _ENVIRONMENT_OIDS[environment]
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, _NULL), critical=False)
    if topics is None:
        topics = default_topics(bundle_id) if bundle_id else ()
    listed = list(topics)
    if listed:
        value = encode_topics(listed)
        builder = builder.add_extension(x509.UnrecognizedExtension(TOPICS_OID, value), False)
    return builder.sign(ca_key, hashes.SHA256()), key


def identity_of(cert: x509.Certificate) -> ClientCertificate:
    """What `cert` says: its bundle (subject UID), environments and every topic it covers."""
    uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    bundle = str(uids[0].value) if uids and uids[0].value else None
    present = {ext.oid for ext in cert.extensions}
    environments = frozenset(env for env, oid in _ENVIRONMENT_OIDS.items() if oid in present)
    topics: frozenset[str] = frozenset()
    if TOPICS_OID in present:
        ext = cert.extensions.get_extension_for_oid(TOPICS_OID).value
        assert isinstance(ext, x509.UnrecognizedExtension)  # cryptography knows no such type
        topics = decode_topics(ext.value)
    return ClientCertificate(bundle, environments, (topics | {bundle}) if bundle else topics)


def read_client_certificate(der: bytes) -> ClientCertificate:
    """The identity of a DER certificate a client presented (one TLS already verified)."""
    return identity_of(x509.load_der_x509_certificate(der))


def client_certificate_path(folder: Path, environment: str) -> Path:
    """Where the client certificate (with its key) for `environment` lives in `folder`."""
    return folder / f"client-{environment}.pem"


def _reusable(
    path: Path, ca_cert: x509.Certificate, bundle_id: str, environment: str, now: dt.datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    identity = identity_of(cert)
    return (
        identity.bundle_id == bundle_id
        and identity.environments == {environment}
        and cert.not_valid_after_utc > now + dt.timedelta(days=1)
    )


def ensure_client_certificates(
    certs: CertificatePaths,
    *,
    bundle_id: str,
    team_id: str = "LOCKSTEP01",
    now: dt.datetime | None = None,
) -> dict[str, Path]:
    """One client certificate per environment for `bundle_id`, next to the CA; reused if good.

    Returns environment → path of a PEM holding the certificate and then its key (0600).
    """
    moment = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)  # certs.py issues P-256 CAs
    out: dict[str, Path] = {}
    for environment in ENVIRONMENTS:
        path = client_certificate_path(certs.ca.parent, environment)
        if not _reusable(path, ca_cert, bundle_id, environment, moment):
            cert, key = issue_client_certificate(
                ca_cert,
                ca_key,
                bundle_id=bundle_id,
                environments=[environment],
                team_id=team_id,
                now=moment,
            )
            write_private(path, client_pem(cert, key))
        out[environment] = path
    return out


def client_pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A certificate and its private key in one PEM, as `load_cert_chain(path)` reads it."""
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
