"""ES256 provider tokens for APNs token auth (apns.md §2).

`SigningKey` holds a `.p8` key with its key id and team id and never shows the key in a repr, a log
or an error. `ProviderToken.issue` signs a compact JWS with the raw 64-byte R||S signature
APNs wants
(RFC 7518 §3.4), taking its issue time as a parameter so a clock can be injected. `decode_token` and
`verify_token` are the other half, used by the simulator to check tokens exactly as APNs does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

_ES256 = ec.ECDSA(hashes.SHA256())
_COORD = 32  # bytes per P-256 coordinate; R||S is 64 bytes


class TokenFormatError(ValueError):
    """A string that is not a well-formed ES256 compact JWS."""


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of `b64url`; raises `TokenFormatError` on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenFormatError("segment is not base64url") from exc


class SigningKey:
    """A P-256 signing key with its APNs key id and team id. The key material never prints."""

    __slots__ = ("_private", "key_id", "team_id")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("APNs signing keys are P-256 (ES256) keys")
        self._private = private_key
        self.key_id = key_id
        self.team_id = team_id

    @classmethod
    def generate(cls, key_id: str, team_id: str) -> SigningKey:
        """A fresh random key (for the simulator and tests)."""
        return cls(ec.generate_private_key(ec.SECP256R1()), key_id, team_id)

    @classmethod
    def from_p8(cls, pem: bytes, key_id: str, team_id: str) -> SigningKey:
        """Load the PKCS#8 PEM text of a `.p8` file."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            # Do not chain: the underlying error may quote the key material.
            raise ValueError("not a valid unencrypted PKCS#8 .p8 key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the .p8 key is not an elliptic-curve key")
        return cls(key, key_id, team_id)

    @classmethod
    def from_file(cls, path: str | Path, key_id: str, team_id: str) -> SigningKey:
        """Load a `.p8` file from disk."""
        return cls.from_p8(Path(path).read_bytes(), key_id, team_id)

    def to_p8(self) -> bytes:
        """The PKCS#8 PEM text, for writing a `.p8` file a client can load."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write_p8(self, path: str | Path) -> Path:
        """Write the `.p8` file with owner-only permissions."""
        target = Path(path)
        target.write_bytes(self.to_p8())
        target.chmod(0o600)
        return target

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, for verifying."""
        return self._private.public_key()

    def sign(self, message: bytes) -> bytes:
        """Raw 64-byte R||S ES256 signature of `message`."""
        r, s = decode_dss_signature(self._private.sign(message, _ES256))
        return r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, team_id={self.team_id!r})"


@dataclass(frozen=True, slots=True)
class ProviderToken:
    """A signed provider token. `value` is a bearer credential and is left out of the repr."""

    value: str = field(repr=False)
    key_id: str
    team_id: str
    issued_at: int

    @classmethod
    def issue(cls, key: SigningKey, issued_at: int) -> ProviderToken:
        """Sign `{"alg":"ES256","kid"}` / `{"iss","iat"}` with `key` at `issued_at` (unix s)."""
        header = b64url(
            json.dumps({"alg": "ES256", "kid": key.key_id}, separators=(",", ":")).encode()
        )
        claims = b64url(
            json.dumps({"iss": key.team_id, "iat": int(issued_at)}, separators=(",", ":")).encode()
        )
        signing_input = f"{header}.{claims}"
        signature = b64url(key.sign(signing_input.encode("ascii")))
        return cls(f"{signing_input}.{signature}", key.key_id, key.team_id, int(issued_at))

    @property
    def header_value(self) -> bytes:
        """The `authorization` header value: `bearer <jwt>`."""
        return b"bearer " + self.value.encode("ascii")


@dataclass(frozen=True, slots=True)
class DecodedToken:
    """The parts of a compact JWS, parsed but not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def key_id(self) -> str | None:
        """The `kid` header, if a string."""
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def team_id(self) -> str | None:
        """The `iss` claim, if a string."""
        iss = self.claims.get("iss")
        return iss if isinstance(iss, str) else None

    @property
    def issued_at(self) -> int | None:
        """The `iat` claim, if an integer number of seconds."""
        iat = self.claims.get("iat")
        return iat if isinstance(iat, int) and not isinstance(iat, bool) else None


def decode_token(value: str) -> DecodedToken:
    """Split and parse a compact JWS; raises `TokenFormatError` if it is not one."""
    parts = value.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenFormatError("a JWT has three non-empty dot-separated segments")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenFormatError("JWT header or claims are not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenFormatError("JWT header and claims must be JSON objects")
    signature = b64url_decode(parts[2])
    return DecodedToken(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def verify_token(
    token: DecodedToken, public_key: ec.EllipticCurvePublicKey, *, accept_der: bool = False
) -> bool:
    """True if `token` is ES256-signed by `public_key` with a raw R||S (or, optionally, DER) sig."""
    if token.header.get("alg") != "ES256":
        return False
    sig = token.signature
    if len(sig) == 2 * _COORD:
        der = encode_dss_signature(
            int.from_bytes(sig[:_COORD], "big"), int.from_bytes(sig[_COORD:], "big")
        )
    elif accept_der:
        der = sig
    else:
        return False
    try:
        public_key.verify(der, token.signing_input, _ES256)
    except (InvalidSignature, ValueError):
        return False
    return True
