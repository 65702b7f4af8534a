"""Client certificates for certificate auth (simulator.clientcert) and the CA that signs them."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulator.certs import CertificatePaths, ensure_certificates, write_private
from simulator.clientcert import (
    DEVELOPMENT_OID,
    PRODUCTION_OID,
    TOPICS_OID,
    decode_topics,
    default_topics,
    encode_topics,
    ensure_client_certificates,
    identity_of,
    issue_client_certificate,
    read_client_certificate,
)

BUNDLE = "com.example.app"
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ca(paths: CertificatePaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


# --- the topics extension ---------------------------------------------------------------------


def test_topics_round_trip_short_and_long_form() -> None:
    few = [(BUNDLE, "app"), (BUNDLE + ".voip", "voip")]
    assert decode_topics(encode_topics(few)) == {BUNDLE, BUNDLE + ".voip"}
    many = default_topics(BUNDLE)  # over 127 bytes: long-form DER lengths
    value = encode_topics(many)
    assert value[1] & 0x80 and len(value) > 200
    assert decode_topics(value) == {topic for topic, _ in many}


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x30",  # no length
        b"\x04\x00",  # not a SEQUENCE
        b"\x30\x00\x00",  # bytes after the SEQUENCE
        b"\x30\x85\x00\x00\x00\x00\x01",  # a five-byte length
        b"\x30\x82\x00",  # a length cut short
        b"\x30\x05\x0c\x01a",  # content cut short
        b"\x30\x03\x0c\x01",  # an element cut short
        b"\x30\x03\x0c\x01\xff",  # not UTF-8
    ],
)
def test_unreadable_topics_cover_nothing(value: bytes) -> None:
    assert decode_topics(value) == frozenset()


def test_only_strings_of_the_outer_sequence_are_topics() -> None:
    # SEQUENCE { UTF8String "a", SEQUENCE { UTF8String "b" }, INTEGER 1 }
    value = b"\x30\x0b\x0c\x01a\x30\x03\x0c\x01b\x02\x01\x01"
    assert decode_topics(value) == {"a"}


# --- issuing and reading ------------------------------------------------------------------------


def test_issued_certificate_reads_back(tmp_path: Path) -> None:
    ca_cert, ca_key = _ca(ensure_certificates(tmp_path, now=NOW))
    cert, _ = issue_client_certificate(
        ca_cert, ca_key, bundle_id=BUNDLE, environments=["sandbox"], now=NOW
    )
    oids = {ext.oid for ext in cert.extensions}
    assert DEVELOPMENT_OID in oids and PRODUCTION_OID not in oids and TOPICS_OID in oids
    identity = read_client_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert identity.bundle_id == BUNDLE
    assert identity.environments == {"sandbox"}
    assert identity.topics == {topic for topic, _ in default_topics(BUNDLE)}
    assert BUNDLE + ".voip" in identity.topics
    cert.verify_directly_issued_by(ca_cert)
    assert cert.not_valid_after_utc - NOW <= dt.timedelta(days=365)


@pytest.mark.parametrize(
    ("bundle", "environments", "topics", "expected"),
    [
        (BUNDLE, ["production", "sandbox"], [], (BUNDLE, {"production", "sandbox"}, {BUNDLE})),
        (BUNDLE, [], [], (BUNDLE, set(), {BUNDLE})),
        (None, ["sandbox"], None, (None, {"sandbox"}, set())),
        (None, ["sandbox"], [("com.x", "app")], (None, {"sandbox"}, {"com.x"})),
    ],
    ids=["universal, bundle only", "no environment", "no bundle", "no bundle, listed topic"],
)
def test_identity_of_each_shape(
    tmp_path: Path,
    bundle: str | None,
    environments: list[str],
    topics: list[tuple[str, str]] | None,
    expected: tuple[str | None, set[str], set[str]],
) -> None:
    ca_cert, ca_key = _ca(ensure_certificates(tmp_path, now=NOW))
    cert, _ = issue_client_certificate(
        ca_cert, ca_key, bundle_id=bundle, environments=environments, topics=topics, now=NOW
    )
    identity = identity_of(cert)
    assert (identity.bundle_id, set(identity.environments), set(identity.topics)) == expected


# --- files in the state folder ------------------------------------------------------------------


def test_one_certificate_per_environment_private_and_loadable(tmp_path: Path) -> None:
    certs = ensure_certificates(tmp_path, now=NOW)
    paths = ensure_client_certificates(certs, bundle_id=BUNDLE, now=NOW)
    assert set(paths) == {"sandbox", "production"}
    for environment, path in paths.items():
        assert path.parent == tmp_path and environment in path.name
        assert _mode(path) == 0o600
        pem = path.read_bytes()
        assert b"BEGIN CERTIFICATE" in pem and b"BEGIN PRIVATE KEY" in pem
        ssl.create_default_context().load_cert_chain(str(path))  # cert + key in one file
        identity = identity_of(x509.load_pem_x509_certificate(pem))
        assert identity.bundle_id == BUNDLE and identity.environments == {environment}
    assert _mode(certs.ca_key) == 0o600 and _mode(certs.key) == 0o600


def test_reused_across_runs_and_reissued_when_stale(tmp_path: Path) -> None:
    certs = ensure_certificates(tmp_path, now=NOW)
    first = {
        e: p.read_bytes()
        for e, p in ensure_client_certificates(certs, bundle_id=BUNDLE, now=NOW).items()
    }
    again = ensure_client_certificates(
        ensure_certificates(tmp_path, now=NOW), bundle_id=BUNDLE, now=NOW
    )
    assert {e: p.read_bytes() for e, p in again.items()} == first
    # Another bundle id: reissued for it.
    other = ensure_client_certificates(certs, bundle_id="com.example.other", now=NOW)
    assert identity_of(x509.load_pem_x509_certificate(other["sandbox"].read_bytes())).bundle_id == (
        "com.example.other"
    )
    # Close to the end of its year: reissued.
    late = NOW + dt.timedelta(days=365)
    renewed = ensure_client_certificates(certs, bundle_id=BUNDLE, now=late)
    cert = x509.load_pem_x509_certificate(renewed["production"].read_bytes())
    assert cert.not_valid_after_utc > late + dt.timedelta(days=1)


def test_a_new_ca_reissues_the_client_certificates(tmp_path: Path) -> None:
    certs = ensure_certificates(tmp_path, now=NOW)
    old = ensure_client_certificates(certs, bundle_id=BUNDLE, now=NOW)["sandbox"].read_bytes()
    # A state folder from before the CA key was kept: everything is issued anew.
    certs.ca_key.unlink()
    fresh = ensure_certificates(tmp_path, now=NOW)
    assert fresh.ca_key.exists()
    path = ensure_client_certificates(fresh, bundle_id=BUNDLE, now=NOW)["sandbox"]
    assert path.read_bytes() != old
    x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(_ca(fresh)[0])


def test_a_damaged_file_is_reissued(tmp_path: Path) -> None:
    certs = ensure_certificates(tmp_path, now=NOW)
    path = ensure_client_certificates(certs, bundle_id=BUNDLE, now=NOW)["sandbox"]
    path.write_bytes(b"not a certificate")
    ensure_client_certificates(certs, bundle_id=BUNDLE, now=NOW)
    assert identity_of(x509.load_pem_x509_certificate(path.read_bytes())).bundle_id == BUNDLE


def test_write_private_narrows_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o600
