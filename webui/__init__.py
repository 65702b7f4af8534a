"""The lock screens page: plain HTML, CSS and JavaScript shipped in the package, no build step.

`lockstep serve` serves it at `/` on the API port and `lockstep simulator` on its control port:
it belongs to neither, so it lives beside them (the simulator never leans on the server, and the
engine never on the simulator).

The page polls `GET /api/dashboard` about once a second (a JSON `Dashboard`: the simulated
iPhones, the simulator's push log and, on the server, the delivery status of the most recently
updated activities) and draws every phone as a lock screen beside the server's view. It loads
nothing from the network but its own origin (`CONTENT_SECURITY_POLICY`).

`PATHS` says where each file is served (`/`, `/ui/app.css`, `/ui/app.js`); `asset(name)` or
`asset_at(path)` is the file (None for anything else: a request for it answers 404).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Final

__all__ = [
    "ASSET_NAMES",
    "CONTENT_SECURITY_POLICY",
    "PATHS",
    "Asset",
    "asset",
    "asset_at",
    "page_headers",
]

_TYPES: Final = {
    "index.html": b"text/html; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
}
ASSET_NAMES: Final = tuple(_TYPES)
"""The files of the page."""

PATHS: Final = {"/": "index.html", "/ui/app.css": "app.css", "/ui/app.js": "app.js"}
"""Where each file is served (the page loads the other two from there)."""

CONTENT_SECURITY_POLICY: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only the page's own files and its own API: no inline script, no third party, no framing."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page and its media type."""

    body: bytes
    content_type: bytes


@functools.cache
def asset(name: str) -> Asset | None:
    """The page's file `name` (`""` is `index.html`), or None for a name it does not have."""
    name = name or "index.html"
    content_type = _TYPES.get(name)
    if content_type is None:
        return None
    body = resources.files(__package__).joinpath(name).read_bytes()
    return Asset(body, content_type)


def asset_at(path: str) -> Asset | None:
    """The file served at `path` (see `PATHS`), or None."""
    name = PATHS.get(path)
    return None if name is None else asset(name)


def page_headers() -> tuple[tuple[bytes, bytes], ...]:
    """Headers for every file of the page: the CSP, no MIME sniffing, no referrer."""
    return (
        (b"content-security-policy", CONTENT_SECURITY_POLICY),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    )
