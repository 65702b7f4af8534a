"""Provider-token rules of the fake APNs (simulator.auth), driven by a fake `now` (apns.md §2)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.apns.auth import ProviderToken, SigningKey, b64url, verify_token
from engine.apns.reasons import Reason
from simulator import auth as sim_auth
from simulator.auth import ConnectionAuth, KeyRing, TrustedKey

T0 = 1_700_000_000
KEY = SigningKey.generate("KEYID00001", "TEAM000001")
OTHER_KEY = SigningKey.generate("KEYID00002", "TEAM000001")  # same team, another key
STRANGER = SigningKey.generate("KEYID00003", "TEAM000003")  # not in the key ring


def _ring() -> KeyRing:
    return KeyRing.from_signing_keys(KEY, OTHER_KEY)


def _conn(**kwargs: object) -> ConnectionAuth:
    return ConnectionAuth(_ring(), **kwargs)  # type: ignore[arg-type]


def _header(key: SigningKey = KEY, iat: int = T0) -> bytes:
    return ProviderToken.issue(key, iat).header_value


def _forge(header: dict[str, object], claims: dict[str, object], key: SigningKey = KEY) -> bytes:
    """A JWS with arbitrary header/claims, R||S-signed by `key`."""
    h = b64url(json.dumps(header).encode())
    c = b64url(json.dumps(claims).encode())
    sig = b64url(key.sign(f"{h}.{c}".encode()))
    return f"bearer {h}.{c}.{sig}".encode()


def _der_token(key: SigningKey, iat: int = T0) -> bytes:
    """The same token APNs wants, but with the DER signature many crypto libraries produce."""
    h = b64url(json.dumps({"alg": "ES256", "kid": key.key_id}).encode())
    c = b64url(json.dumps({"iss": key.team_id, "iat": iat}).encode())
    private = serialization.load_pem_private_key(key.to_p8(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    der = private.sign(f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"bearer {h}.{c}.{b64url(der)}".encode()


def _tamper(header: bytes) -> bytes:
    """Flip one character of the signature segment."""
    head, _, sig = header.rpartition(b".")
    flipped = b"A" if sig[:1] != b"A" else b"B"
    return head + b"." + flipped + sig[1:]


# --- single-request rules (a fresh connection each time) -------------------------------------

_VALID = _header()

CASES: list[tuple[str, bytes | None, Reason | None]] = [
    ("valid", _VALID, None),
    ("scheme is case-insensitive", b"Bearer " + _VALID[len(b"bearer ") :], None),
    ("missing", None, Reason.MISSING_PROVIDER_TOKEN),
    ("empty", b"", Reason.MISSING_PROVIDER_TOKEN),
    ("no scheme", _VALID[len(b"bearer ") :], Reason.INVALID_PROVIDER_TOKEN),
    ("basic scheme", b"basic " + _VALID[len(b"bearer ") :], Reason.INVALID_PROVIDER_TOKEN),
    ("bearer only", b"bearer ", Reason.INVALID_PROVIDER_TOKEN),
    ("two segments", b"bearer abc.def", Reason.INVALID_PROVIDER_TOKEN),
    ("not json", b"bearer abc.def.ghi", Reason.INVALID_PROVIDER_TOKEN),
    ("non-ascii", "bearer é.é.é".encode(), Reason.INVALID_PROVIDER_TOKEN),
    (
        "wrong alg",
        _forge({"alg": "ES384", "kid": KEY.key_id}, {"iss": KEY.team_id, "iat": T0}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    (
        "alg none",
        _forge({"alg": "none", "kid": KEY.key_id}, {"iss": KEY.team_id, "iat": T0}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    ("unknown kid", _header(STRANGER), Reason.INVALID_PROVIDER_TOKEN),
    (
        "kid missing",
        _forge({"alg": "ES256"}, {"iss": KEY.team_id, "iat": T0}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    (
        "wrong team",
        _forge({"alg": "ES256", "kid": KEY.key_id}, {"iss": "TEAM999999", "iat": T0}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    (
        "signed by another key under this kid",
        _forge({"alg": "ES256", "kid": KEY.key_id}, {"iss": KEY.team_id, "iat": T0}, OTHER_KEY),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    ("tampered signature", _tamper(_VALID), Reason.INVALID_PROVIDER_TOKEN),
    ("DER signature", _der_token(KEY), Reason.INVALID_PROVIDER_TOKEN),
    (
        "iat missing",
        _forge({"alg": "ES256", "kid": KEY.key_id}, {"iss": KEY.team_id}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    (
        "iat not int",
        _forge({"alg": "ES256", "kid": KEY.key_id}, {"iss": KEY.team_id, "iat": "1700000000"}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    (
        "iat float",
        _forge({"alg": "ES256", "kid": KEY.key_id}, {"iss": KEY.team_id, "iat": T0 + 0.5}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    ("expired", _header(iat=T0 - 3601), Reason.EXPIRED_PROVIDER_TOKEN),
    ("exactly one hour old", _header(iat=T0 - 3600), None),
    ("one hour ahead", _header(iat=T0 + 3600), None),
    ("more than one hour ahead", _header(iat=T0 + 3601), Reason.INVALID_PROVIDER_TOKEN),
    (
        "absurd iat does not overflow",
        _forge({"alg": "ES256", "kid": KEY.key_id}, {"iss": KEY.team_id, "iat": 10**400}),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
]


@pytest.mark.parametrize(("header", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_single_request_rules(header: bytes | None, expected: Reason | None) -> None:
    conn = _conn()
    assert conn.check(header, T0) == expected
    assert conn.has_valid_token is (expected is None)
    assert conn.bound_key_id == (KEY.key_id if expected is None else None)


def test_der_signature_accepted_when_enabled() -> None:
    assert _conn(accept_der=True).check(_der_token(KEY), T0) is None
    # R||S stays valid in that mode too.
    assert _conn(accept_der=True).check(_VALID, T0) is None


def test_max_age_is_configurable() -> None:
    assert _conn(max_age=60).check(_header(iat=T0 - 61), T0) == Reason.EXPIRED_PROVIDER_TOKEN
    assert _conn(max_age=60).check(_header(iat=T0 - 60), T0) is None


def test_future_limit_constant_is_one_hour() -> None:
    assert sim_auth.FUTURE_IAT_LIMIT == 3600


# --- connection state -------------------------------------------------------------------------


def test_same_token_keeps_working_until_it_expires() -> None:
    conn = _conn()
    for t in range(T0, T0 + 3601, 600):
        assert conn.check(_VALID, t) is None
    assert conn.check(_VALID, T0 + 3601) == Reason.EXPIRED_PROVIDER_TOKEN
    assert conn.token_switches == 0


def test_unrelated_key_id_after_binding() -> None:
    conn = _conn()
    assert conn.check(_header(KEY), T0) is None
    assert conn.check(_header(OTHER_KEY), T0 + 3000) == Reason.UNRELATED_KEY_ID_IN_TOKEN
    assert conn.bound_key_id == KEY.key_id
    assert conn.bound_team_id == KEY.team_id
    # A fresh connection may use the other key.
    assert _conn().check(_header(OTHER_KEY), T0) is None


def test_invalid_token_does_not_bind_the_connection() -> None:
    conn = _conn()
    assert conn.check(_tamper(_header(OTHER_KEY)), T0) == Reason.INVALID_PROVIDER_TOKEN
    assert conn.bound_key_id is None
    assert conn.check(_header(KEY), T0) is None
    assert conn.bound_key_id == KEY.key_id


def test_too_many_token_updates_within_twenty_minutes() -> None:
    conn = _conn()
    first = _header(iat=T0)
    assert conn.check(first, T0) is None
    newer = _header(iat=T0 + 600)
    assert conn.check(newer, T0 + 600) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    assert conn.check(newer, T0 + 1199) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    # The old token is still the current one and still accepted.
    assert conn.check(first, T0 + 1199) is None
    # ECDSA signatures are randomised: re-signing the same claims makes a different token.
    assert conn.check(_header(iat=T0), T0 + 1199) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    assert conn.token_switches == 0


def test_token_update_allowed_after_twenty_minutes() -> None:
    conn = _conn()
    assert conn.check(_header(iat=T0), T0) is None
    second = _header(iat=T0 + 1200)
    assert conn.check(second, T0 + 1200) is None
    assert conn.token_switches == 1
    # The clock for the next switch restarts at the adoption of the second token.
    third = _header(iat=T0 + 1500)
    assert conn.check(third, T0 + 1500) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    assert conn.check(third, T0 + 2400) is None
    assert conn.token_switches == 2
    # Going back to an older token is a switch like any other.
    assert conn.check(second, T0 + 2500) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES


def test_min_refresh_is_configurable() -> None:
    conn = _conn(min_refresh=0)
    assert conn.check(_header(iat=T0), T0) is None
    assert conn.check(_header(iat=T0 + 1), T0 + 1) is None
    assert conn.token_switches == 1


def test_switch_allowed_once_the_current_token_expired() -> None:
    # A token issued 50 min ago expires 10 min after adoption; the client must be able to move on.
    conn = _conn()
    old = _header(iat=T0 - 3000)
    assert conn.check(old, T0) is None
    assert conn.check(old, T0 + 601) == Reason.EXPIRED_PROVIDER_TOKEN
    assert conn.check(_header(iat=T0 + 601), T0 + 601) is None
    assert conn.token_switches == 1


def test_rejected_switch_is_not_adopted() -> None:
    conn = _conn()
    assert conn.check(_header(iat=T0), T0) is None
    assert conn.check(_header(iat=T0 + 1), T0 + 1) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    # The 429 did not restart the 20-minute clock.
    assert conn.check(_header(iat=T0 + 1200), T0 + 1200) is None


def test_verification_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = verify_token

    def counting(*args: object, **kwargs: object) -> bool:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("simulator.auth.verify_token", counting)
    conn = _conn()
    for i in range(50):
        assert conn.check(_VALID, T0 + i) is None
    assert calls == 1
    # Expiry is still checked against each `now`, even from the cache.
    assert conn.check(_VALID, T0 + 3601) == Reason.EXPIRED_PROVIDER_TOKEN
    assert calls == 1
    # A newer token turned away with 429, then the current one again: no re-verification.
    newer = _header(iat=T0 + 10)
    assert conn.check(newer, T0 + 10) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    assert conn.check(_VALID, T0 + 11) is None
    assert conn.check(newer, T0 + 12) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    assert calls == 2


def test_cache_keeps_the_current_token_under_churn(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = verify_token

    def counting(*args: object, **kwargs: object) -> bool:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("simulator.auth.verify_token", counting)
    conn = _conn()
    assert conn.check(_VALID, T0) is None
    for i in range(1, 10):
        assert conn.check(_header(iat=T0 + i), T0 + i) == Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
    before = calls
    assert conn.check(_VALID, T0 + 20) is None
    assert calls == before


def test_key_ring_changes_invalidate_the_cache() -> None:
    ring = KeyRing()
    conn = ConnectionAuth(ring)
    assert conn.check(_VALID, T0) == Reason.INVALID_PROVIDER_TOKEN
    ring.add(TrustedKey.from_signing_key(KEY))
    assert conn.check(_VALID, T0) is None
    # The kid now names a different public key: the cached verification must not survive.
    ring.add(TrustedKey(KEY.key_id, KEY.team_id, STRANGER.public_key))
    assert conn.check(_VALID, T0 + 1) == Reason.INVALID_PROVIDER_TOKEN


def test_key_ring_basics() -> None:
    ring = _ring()
    assert len(ring) == 2
    assert KEY.key_id in ring
    assert ring.get("NOPE") is None
    found = ring.get(KEY.key_id)
    assert found is not None and found.team_id == KEY.team_id
    assert {k.key_id for k in ring} == {KEY.key_id, OTHER_KEY.key_id}


def test_a_disabled_key_is_forbidden_and_a_forgery_stays_invalid() -> None:
    ring = _ring()
    ring.disable(KEY.key_id)
    conn = ConnectionAuth(ring)
    assert conn.check(_header(), T0) == Reason.FORBIDDEN
    assert conn.check(_tamper(_header()), T0) == Reason.INVALID_PROVIDER_TOKEN
    assert conn.check(_header(KEY, T0 - 7200), T0) == Reason.FORBIDDEN  # before the age check
    assert not conn.has_valid_token and conn.bound_key_id is None
    # The other key of the account still works, and the ring keeps the disabled key's identity.
    assert conn.check(_header(OTHER_KEY), T0) is None
    disabled = ring.get(KEY.key_id)
    assert disabled is not None and disabled.disabled and disabled.team_id == KEY.team_id
    with pytest.raises(KeyError):
        ring.disable("NOPE")


def test_disabling_a_key_drops_verifications_made_before() -> None:
    ring = _ring()
    conn = ConnectionAuth(ring)
    assert conn.check(_VALID, T0) is None
    ring.disable(KEY.key_id)
    assert conn.check(_VALID, T0 + 1) == Reason.FORBIDDEN


def test_reprs_carry_no_secrets() -> None:
    conn = _conn()
    token = ProviderToken.issue(KEY, T0)
    assert conn.check(token.header_value, T0) is None
    texts = [repr(conn), repr(_ring()), repr(TrustedKey.from_signing_key(KEY))]
    for part in token.value.split("."):
        for text in texts:
            assert part not in text
    assert "KEYID00001" in repr(conn)  # key ids are not secret, and useful in logs
    assert "public_key" not in repr(TrustedKey.from_signing_key(KEY))
