"""Provider-token (JWT) checks for the fake APNs, one `ConnectionAuth` per HTTP/2 connection.

APNs trusts a request through its `authorization: bearer <jwt>` header (apns.md §2). The token must
be a compact ES256 JWS whose `kid` names a trusted key, whose `iss` is that key's team and whose
`iat` is less than an hour old. A connection also carries state: it binds to the key of its first
accepted token, and it may switch to a new token at most once every 20 minutes.

`ConnectionAuth.check` applies these rules, in this order (the first that fails decides the answer):

1. header missing or empty → `MissingProviderToken`; not `bearer <jwt>` → `InvalidProviderToken`.
2. not a decodable JWT, `alg` not ES256, `kid` unknown, `iss` not the key's team, or a signature
   that does not verify (raw R||S; DER only with `accept_der`) → `InvalidProviderToken`; a
   genuine token signed with a key the account has disabled → `Forbidden` (an assumption: APNs
   documents `Forbidden` only as "never retry", apns.md §3, and a disabled key is the account
   state no retry can fix).
3. `iat` missing or not an integer → `InvalidProviderToken`; older than `max_age` →
   `ExpiredProviderToken`; more than `FUTURE_IAT_LIMIT` seconds ahead → `InvalidProviderToken`.
4. a `kid` other than the one the connection is bound to → `UnrelatedKeyIdInToken`.
5. a new token less than `min_refresh` seconds after the current one was adopted →
   `TooManyProviderTokenUpdates`; otherwise the new token becomes the current one.

Verification is cached by header value, so the common case (the same token on every request of a
connection) costs one bytes comparison and an expiry check, never an ECDSA verification.

The module is pure: no I/O and no clock reads; `now` is always a parameter (unix seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from engine.apns import wire
from engine.apns.auth import SigningKey, TokenFormatError, decode_token, verify_token
from engine.apns.reasons import Reason

FUTURE_IAT_LIMIT: Final = 3600
"""An `iat` more than this many seconds ahead of `now` is `InvalidProviderToken`.

What APNs answers for a future `iat` is not documented (apns.md "Could not confirm" 7). APNs only
says `iat` must be "within one hour of the current time" (apns.md §2), so a token issued more than
an hour in the future is treated as invalid rather than expired: refreshing it would not help.
"""

_CACHE_SIZE: Final = 4
"""Verified header values kept per connection: the current token, a newer one turned away with
429, and a little slack. Tiny on purpose: a connection uses one token at a time."""

_BEARER: Final = b"bearer"

_MISSING: Final = Reason.MISSING_PROVIDER_TOKEN
_INVALID: Final = Reason.INVALID_PROVIDER_TOKEN


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key APNs trusts, with the key id and team id it was issued under."""

    key_id: str
    team_id: str
    public_key: EllipticCurvePublicKey = field(repr=False)
    disabled: bool = False
    """The account disabled the key: its tokens verify but are answered `Forbidden`."""

    @classmethod
    def from_signing_key(cls, key: SigningKey) -> TrustedKey:
        """The public half of `key`, trusted under its own key id and team id."""
        return cls(key.key_id, key.team_id, key.public_key)


class KeyRing:
    """Trusted keys by key id: the simulated developer account's `.p8` keys (apns.md §2)."""

    __slots__ = ("_generation", "_keys")

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        # Bumped on every change so connections drop verifications made under an older key set.
        self._generation = 0
        for key in keys:
            self.add(key)

    @classmethod
    def from_signing_keys(cls, *keys: SigningKey) -> KeyRing:
        """A key ring trusting the public halves of `keys`."""
        return cls(TrustedKey.from_signing_key(k) for k in keys)

    def add(self, key: TrustedKey) -> None:
        """Trust `key`, replacing any key with the same key id."""
        self._keys[key.key_id] = key
        self._generation += 1

    def get(self, key_id: str) -> TrustedKey | None:
        """The trusted key with `key_id`, or None."""
        return self._keys.get(key_id)

    def disable(self, key_id: str) -> None:
        """Mark the key `key_id` disabled (its tokens get `Forbidden`); KeyError if unknown."""
        key = self._keys[key_id]
        self.add(TrustedKey(key.key_id, key.team_id, key.public_key, disabled=True))

    @property
    def generation(self) -> int:
        """A counter that changes whenever the set of trusted keys changes."""
        return self._generation

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={sorted(self._keys)!r})"


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature, key and team have been checked; `iat` still needs `now`."""

    jwt: str = field(repr=False)
    key_id: str
    team_id: str
    issued_at: int


class ConnectionAuth:
    """Token-auth state of one HTTP/2 connection (apns.md §2). See the module docstring."""

    __slots__ = (
        "_accept_der",
        "_adopted_at",
        "_bound_key_id",
        "_bound_team_id",
        "_cache",
        "_cache_generation",
        "_current",
        "_keyring",
        "_max_age",
        "_min_refresh",
        "_switches",
    )

    def __init__(
        self,
        keyring: KeyRing,
        *,
        accept_der: bool = False,
        max_age: int = wire.TOKEN_MAX_AGE,
        min_refresh: int = wire.TOKEN_MIN_REFRESH,
    ) -> None:
        self._keyring = keyring
        # APNs wants raw R||S; DER was once seen accepted (apns.md §2, APNSwift#36), so optional.
        self._accept_der = accept_der
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._cache: dict[bytes, _Verified] = {}
        self._cache_generation = keyring.generation
        self._current: _Verified | None = None
        self._adopted_at = 0.0
        self._bound_key_id: str | None = None
        self._bound_team_id: str | None = None
        self._switches = 0

    @property
    def bound_key_id(self) -> str | None:
        """The key id of the connection's first accepted token, or None before that."""
        return self._bound_key_id

    @property
    def bound_team_id(self) -> str | None:
        """The team id of the connection's first accepted token, or None before that."""
        return self._bound_team_id

    @property
    def has_valid_token(self) -> bool:
        """True once any token was accepted here (apns.md §4: the stream-limit warm-up)."""
        return self._current is not None

    @property
    def token_switches(self) -> int:
        """How many times the connection moved to a new token after its first one."""
        return self._switches

    def check(self, authorization: bytes | None, now: float) -> Reason | None:
        """Check one request's `authorization` header at `now`; None means the token is accepted."""
        if not authorization:
            return _MISSING
        verified = self._verified(authorization)
        if isinstance(verified, Reason):
            return verified
        reason = self._check_age(verified.issued_at, now)
        if reason is not None:
            return reason
        return self._adopt(verified, now)

    def _verified(self, authorization: bytes) -> _Verified | Reason:
        """Rules 1–2 and the `iat` type check, through the per-connection cache."""
        if self._cache_generation != self._keyring.generation:
            self._cache.clear()
            self._cache_generation = self._keyring.generation
        hit = self._cache.get(authorization)
        if hit is not None:
            return hit
        result = self._verify(authorization)
        if isinstance(result, _Verified):
            if len(self._cache) >= _CACHE_SIZE:
                # Evict the oldest entry, but never the current token: it is the hot one.
                for old, entry in self._cache.items():
                    if entry is not self._current:
                        del self._cache[old]
                        break
            self._cache[authorization] = result
        return result

    def _verify(self, authorization: bytes) -> _Verified | Reason:
        """Parse and verify a header value from scratch (runs ECDSA)."""
        jwt = _bearer_jwt(authorization)
        if jwt is None:
            return _INVALID
        try:
            decoded = decode_token(jwt)
        except (TokenFormatError, RecursionError):
            return _INVALID
        if decoded.header.get("alg") != "ES256":
            return _INVALID
        kid = decoded.key_id
        trusted = self._keyring.get(kid) if kid is not None else None
        if trusted is None or decoded.team_id != trusted.team_id:
            return _INVALID
        if not verify_token(decoded, trusted.public_key, accept_der=self._accept_der):
            return _INVALID
        if trusted.disabled:
            return Reason.FORBIDDEN  # checked after the signature: a forgery stays Invalid
        iat = decoded.issued_at
        if iat is None:
            return _INVALID
        return _Verified(jwt, trusted.key_id, trusted.team_id, iat)

    def _check_age(self, iat: int, now: float) -> Reason | None:
        """Rule 3. Comparisons, not `now - iat`: a huge `iat` must not overflow a float."""
        if iat < now - self._max_age:
            return Reason.EXPIRED_PROVIDER_TOKEN
        if iat > now + FUTURE_IAT_LIMIT:
            return _INVALID
        return None

    def _adopt(self, token: _Verified, now: float) -> Reason | None:
        """Rules 4–5: bind the connection to a key, and rate-limit switches to a new token."""
        current = self._current
        if current is None:
            self._bound_key_id = token.key_id
            self._bound_team_id = token.team_id
            self._current = token
            self._adopted_at = now
            return None
        if token.key_id != self._bound_key_id:
            return Reason.UNRELATED_KEY_ID_IN_TOKEN
        if token.jwt == current.jwt:
            return None
        # A client whose current token has expired must be able to move on, or the connection
        # would be stuck between ExpiredProviderToken and 429 until min_refresh has passed.
        current_expired = current.issued_at < now - self._max_age
        if now - self._adopted_at < self._min_refresh and not current_expired:
            return Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES
        self._current = token
        self._adopted_at = now
        self._switches += 1
        return None

    def __repr__(self) -> str:
        # Never the token or key material: only what an operator may see.
        return (
            f"ConnectionAuth(bound_key_id={self._bound_key_id!r}, "
            f"has_valid_token={self.has_valid_token}, token_switches={self._switches})"
        )


def _bearer_jwt(authorization: bytes) -> str | None:
    """The JWT text of a `bearer <jwt>` header value (scheme case-insensitive), or None."""
    scheme, sep, rest = authorization.partition(b" ")
    if not sep or scheme.lower() != _BEARER:
        return None
    rest = rest.strip(b" ")
    if not rest or not rest.isascii():
        return None
    jwt = rest.decode("ascii")
    if any(c.isspace() for c in jwt):
        return None
    return jwt
