"""One provider token for every node: what a node does with the stored token (apns.md §2).

APNs wants one token reused "across many servers and connections", changed at most once per 20
minutes (apns.md §2). Nodes sharing a database keep the team's current token in one row per
(team id, key id); the shell (engine/server/store/pgtokens.py) reads it under a row lock and asks
`plan` what to do, so exactly one node issues per generation and every other adopts it:

* A **fresh** stored token (younger than `max_age`, by this node's clock) is adopted, unless it is
  the very token APNs just called expired (`failed`).
* Otherwise, when this node holds a fresh token of its own that is not the failed one (issued
  locally while the database could not be reached), that one is published: the node keeps its
  token and the others move to it, one change instead of two.
* Otherwise a new token is issued and stored.

A forced refresh (`failed` given) therefore replaces the stored token only while it is still the
failed one: a node whose report arrives after another's refresh finds a different token stored
and adopts it. Pure: no I/O, no clock reads (`now` is a parameter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.apns.auth import ProviderToken

__all__ = ["Adopt", "Issue", "Publish", "StoredToken", "plan"]


@dataclass(frozen=True, slots=True)
class StoredToken:
    """The shared row's token and its `iat` (unix seconds); the value is a credential."""

    value: str = field(repr=False)
    issued_at: int

    def token(self, key_id: str, team_id: str) -> ProviderToken:
        """As a `ProviderToken` of the row's key and team."""
        return ProviderToken(self.value, key_id, team_id, self.issued_at)


@dataclass(frozen=True, slots=True)
class Adopt:
    """Use the stored token."""

    stored: StoredToken


@dataclass(frozen=True, slots=True)
class Publish:
    """Store this node's own token for everyone."""

    token: ProviderToken


@dataclass(frozen=True, slots=True)
class Issue:
    """Issue a new token, store it and use it."""


Decision = Adopt | Publish | Issue


def plan(
    stored: StoredToken | None,
    ours: ProviderToken | None,
    *,
    now: float,
    max_age: float,
    failed: ProviderToken | None = None,
) -> Decision:
    """What to do with the stored token (see the module docstring). `stored` None: no token
    stored yet; `ours`: the node's current token; `failed`: the token APNs called expired."""
    failed_value = failed.value if failed is not None else None
    if stored is not None and stored.value != failed_value and now - stored.issued_at < max_age:
        return Adopt(stored)
    # Ours cannot be the stored token here: that one was stale or failed, and so is ours then.
    if ours is not None and ours.value != failed_value and now - ours.issued_at < max_age:
        return Publish(ours)
    return Issue()
