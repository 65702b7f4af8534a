"""Authenticating a delivery with its webhook's secret, in constant time. Pure.

- GitHub signs the raw body: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
- A generic webhook sends the secret itself in `X-Webhook-Secret`.

Failures are 401s that say what is wrong with the header, never what was expected: the secret
and the expected signature appear in no message. Header values arrive decoded as Latin-1 (the
HTTP layer's convention), so encoding them back as Latin-1 gives the bytes that were sent, which
are compared with the secret's UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from engine.server.contract.errors import Unauthorized

__all__ = ["GITHUB_SIGNATURE", "SECRET_HEADER", "check_secret", "check_signature", "sign"]

GITHUB_SIGNATURE: Final = "x-hub-signature-256"
SECRET_HEADER: Final = "x-webhook-secret"


def sign(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(secret: str, body: bytes, header: str | None) -> None:
    """401 unless `header` is the body's HMAC-SHA256 signature with `secret`."""
    if not header:
        raise Unauthorized(
            "missing X-Hub-Signature-256 header: set the webhook's secret in GitHub's settings"
        )
    if not header.startswith("sha256="):
        raise Unauthorized("X-Hub-Signature-256 must be 'sha256=<hex digest>'")
    # compare_digest over equal-type ASCII: the time does not depend on where they differ.
    given = header.encode("latin-1", "replace")
    if not hmac.compare_digest(given, sign(secret, body).encode()):
        raise Unauthorized("X-Hub-Signature-256 does not match the body and the webhook's secret")


def check_secret(secret: str, header: str | None) -> None:
    """401 unless `header` is `secret`."""
    if not header:
        raise Unauthorized("missing X-Webhook-Secret header (the webhook's secret)")
    if not hmac.compare_digest(header.encode("latin-1", "replace"), secret.encode()):
        raise Unauthorized("X-Webhook-Secret does not match the webhook's secret")
