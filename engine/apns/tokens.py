"""The provider-token cache shared by every APNs connection (apns.md §2).

APNs wants one token reused across all connections and servers, refreshed no more than once every
20 minutes and no less than once every 60 (apns.md §2). `TokenSource` keeps that one token: it
issues the first lazily, replaces it once it is `max_age` old (50 minutes by default, inside the
1-hour validity with margin for clock drift), and replaces it early when APNs answers
`ExpiredProviderToken` or `MissingProviderToken` for it.

No locks: the engine runs on one trio thread and every method here is synchronous, so each call is
atomic with respect to every other task. The wall clock is injected, so a test can run an hour of
token life in microseconds.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.wire import TOKEN_MAX_AGE, TOKEN_MIN_REFRESH

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MIN_REFRESH", "TokenSource"]

DEFAULT_MAX_AGE = 3000.0
"""Refresh after 50 minutes: well inside the 1-hour validity, as clients in the wild do (§2)."""

DEFAULT_MIN_REFRESH = float(TOKEN_MIN_REFRESH)
"""APNs answers 429 TooManyProviderTokenUpdates to faster token changes (apns.md §2)."""


class TokenSource:
    """One provider token for every connection, refreshed by age or on APNs' say-so.

    Refresh rules:

    * `current()` replaces the token once it is `max_age` seconds old. The new token is then
      0 seconds old, so age alone refreshes at most once per generation.
    * `on_expired(failed)` replaces the token only if `failed` is still the current one. Every push
      in flight carries the same token, so when a burst of them comes back expired, the first
      report refreshes and all the others find `failed` already superseded and get the new token:
      one refresh per generation, however many reports.
    * A token younger than `min_refresh` that APNs calls expired cannot be explained by its age:
      clock skew or an APNs fault is the likely cause. Refusing to refresh would pin every
      connection to a token APNs rejects until `max_age`; refreshing is the only way out of a
      fault and harmless under skew. It stays at one refresh per generation, and what spaces
      generations out in *time* is the caller's retry backoff (the REFRESH_AUTH retry goes through
      the scheduler), so persistent skew yields one refresh per backoff step, never a storm of
      TooManyProviderTokenUpdates. `early_refreshes` counts these so the skew is visible.
    """

    __slots__ = (
        "_early_refreshes",
        "_forced_refreshes",
        "_generation",
        "_key",
        "_max_age",
        "_min_refresh",
        "_token",
        "_wall_clock",
    )

    def __init__(
        self,
        key: SigningKey,
        *,
        wall_clock: Callable[[], float],
        max_age: float = DEFAULT_MAX_AGE,
        min_refresh: float = DEFAULT_MIN_REFRESH,
    ) -> None:
        if not 0 < max_age < TOKEN_MAX_AGE:
            raise ValueError(
                f"max_age must be between 0 and {TOKEN_MAX_AGE} s: APNs rejects older tokens"
            )
        if not 0 <= min_refresh <= max_age:
            raise ValueError("min_refresh must be between 0 and max_age")
        self._key = key
        self._wall_clock = wall_clock
        self._max_age = float(max_age)
        self._min_refresh = float(min_refresh)
        self._token: ProviderToken | None = None
        self._generation = 0
        self._forced_refreshes = 0
        self._early_refreshes = 0

    # ----------------------------------------------------------------------------------------------
    # Queries

    @property
    def key_id(self) -> str:
        """The signing key's 10-character key id (`kid`)."""
        return self._key.key_id

    @property
    def team_id(self) -> str:
        """The team id (`iss`)."""
        return self._key.team_id

    @property
    def generation(self) -> int:
        """How many tokens have been issued: 0 before the first, then +1 per refresh."""
        return self._generation

    @property
    def refreshes(self) -> int:
        """How many times the token was replaced (by age or on an expired report)."""
        return max(self._generation - 1, 0)

    @property
    def forced_refreshes(self) -> int:
        """Replacements caused by `on_expired` rather than by age."""
        return self._forced_refreshes

    @property
    def early_refreshes(self) -> int:
        """Forced replacements of a token younger than `min_refresh`: a sign of clock skew."""
        return self._early_refreshes

    @property
    def cached(self) -> ProviderToken | None:
        """The current token without checking its age (None before the first `current()`)."""
        return self._token

    def age(self) -> float | None:
        """Seconds since the current token's `iat`, or None if none was issued yet."""
        if self._token is None:
            return None
        return self._wall_clock() - self._token.issued_at

    # ----------------------------------------------------------------------------------------------
    # Commands

    def current(self) -> ProviderToken:
        """The token to put in the next request; issues or refreshes it when due."""
        token = self._token
        now = self._wall_clock()
        if token is None or now - token.issued_at >= self._max_age:
            return self._issue(now)
        return token

    def on_expired(self, failed: ProviderToken) -> ProviderToken:
        """APNs rejected `failed` as expired or missing: the token to retry with.

        Refreshes only if `failed` is still the current token; otherwise someone already did and
        the current token (refreshed by age if due) is returned.
        """
        if self._token is None or failed != self._token:
            return self.current()
        now = self._wall_clock()
        self._forced_refreshes += 1
        if now - failed.issued_at < self._min_refresh:
            self._early_refreshes += 1
        return self._issue(now)

    # ----------------------------------------------------------------------------------------------
    # Internals

    def _issue(self, now: float) -> ProviderToken:
        token = ProviderToken.issue(self._key, int(now))
        self._token = token
        self._generation += 1
        return token

    def __repr__(self) -> str:
        # Never the token value or the key: both are credentials (apns.md §2).
        age = self.age()
        shown = "None" if age is None else f"{age:.1f}s"
        return (
            f"TokenSource(key_id={self.key_id!r}, team_id={self.team_id!r}, "
            f"generation={self._generation}, age={shown})"
        )
