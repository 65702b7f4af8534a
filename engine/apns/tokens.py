"""The provider-token cache shared by every APNs connection (apns.md §2).

APNs wants one token reused across all connections and servers, refreshed no more than once every
20 minutes and no less than once every 60 (apns.md §2). `TokenSource` keeps that one token: it
issues the first lazily, replaces it once it is `max_age` old (50 minutes by default, inside the
1-hour validity with margin for clock drift), and replaces it early when APNs answers
`ExpiredProviderToken` or `MissingProviderToken` for it.

No locks: the engine runs on one trio thread and every method here is synchronous, so each call is
atomic with respect to every other task. The wall clock is injected, so a test can run an hour of
token life in microseconds.

**Coordinated mode** (`coordinated=True`): several processes share one token through a database
(engine/server/store/pgtokens.py, deciding with `engine.apns.sharedtoken.plan`), so that N nodes
look like one client to APNs. The source then leaves refreshes to that shell: the shell `adopt`s
the shared token, replacing it when it is `max_age` old (`due_at`), and `on_expired` only marks
the failed token (`refresh_wanted`) and calls `on_refresh_wanted` so the shell refreshes it once
for every node. The source still issues by itself when it holds no token yet or its token is
`fallback_age` old (the database has not handed a fresh one: better a possible 429 than a token
APNs certainly rejects as expired), and the shell calls `refresh_locally` when the database
cannot be reached for a wanted refresh. The price of one token for N nodes: the immediate retry
the scheduler grants an expired answer still carries the failed token (the shared refresh is a
database round trip away); the retry after it, past the scheduler's backoff, carries the new one.
Switching to a token of its own at once instead would make each node change tokens twice, the
second time inside APNs' 20 minutes.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.wire import TOKEN_MAX_AGE, TOKEN_MIN_REFRESH

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MIN_REFRESH", "TokenSource", "fallback_age"]

DEFAULT_MAX_AGE = 3000.0
"""Refresh after 50 minutes: well inside the 1-hour validity, as clients in the wild do (§2)."""

DEFAULT_MIN_REFRESH = float(TOKEN_MIN_REFRESH)
"""APNs answers 429 TooManyProviderTokenUpdates to faster token changes (apns.md §2)."""


def fallback_age(max_age: float) -> float:
    """The age at which a coordinated source issues by itself: halfway from `max_age` to the
    hour APNs accepts (3300 s for the default 3000), leaving the shared refresh time to happen."""
    return max_age + (TOKEN_MAX_AGE - max_age) / 2


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
        "_adoptions",
        "_coordinated",
        "_early_refreshes",
        "_forced_refreshes",
        "_generation",
        "_key",
        "_local_fallbacks",
        "_max_age",
        "_min_refresh",
        "_refresh_wanted",
        "_token",
        "_wall_clock",
        "on_refresh_wanted",
    )

    def __init__(
        self,
        key: SigningKey,
        *,
        wall_clock: Callable[[], float],
        max_age: float = DEFAULT_MAX_AGE,
        min_refresh: float = DEFAULT_MIN_REFRESH,
        coordinated: bool = False,
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
        self._coordinated = coordinated
        self._refresh_wanted: ProviderToken | None = None
        self._adoptions = 0
        self._local_fallbacks = 0
        # Coordinated mode: called (synchronously, on the engine's thread) when `on_expired`
        # marks a token for a shared refresh; the shell wakes up on it.
        self.on_refresh_wanted: Callable[[], None] | None = None

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

    @property
    def coordinated(self) -> bool:
        """Whether refreshes are left to a shell that shares the token (module docstring)."""
        return self._coordinated

    @property
    def max_age(self) -> float:
        """Seconds after which the token is replaced."""
        return self._max_age

    @property
    def due_at(self) -> float | None:
        """Wall time at which the current token is `max_age` old (None before the first)."""
        return None if self._token is None else self._token.issued_at + self._max_age

    @property
    def refresh_wanted(self) -> ProviderToken | None:
        """Coordinated mode: the current token, once APNs called it expired and until a shared
        refresh replaced it; else None."""
        return self._refresh_wanted

    @property
    def adoptions(self) -> int:
        """Tokens taken from elsewhere (`adopt`), not issued here."""
        return self._adoptions

    @property
    def local_fallbacks(self) -> int:
        """Coordinated mode: tokens issued here because no fresh shared one came in time."""
        return self._local_fallbacks

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
        if token is None:
            return self._issue(now)
        age = now - token.issued_at
        if age >= self._max_age:
            if not self._coordinated:
                return self._issue(now)
            if age >= fallback_age(self._max_age):
                self._local_fallbacks += 1
                return self._issue(now)
        return token

    def on_expired(self, failed: ProviderToken) -> ProviderToken:
        """APNs rejected `failed` as expired or missing: the token to retry with.

        Refreshes only if `failed` is still the current token; otherwise someone already did and
        the current token (refreshed by age if due) is returned.
        """
        if self._token is None or failed != self._token:
            return self.current()
        if self._coordinated:
            # One refresh for every node, through the shell: mark it and wake the shell up.
            if self._refresh_wanted is None:
                self._refresh_wanted = failed
                if self.on_refresh_wanted is not None:
                    self.on_refresh_wanted()
            return failed
        return self.refresh_locally(failed)

    def refresh_locally(self, failed: ProviderToken) -> ProviderToken:
        """`on_expired`'s own refresh, without asking anyone: the uncoordinated rule, and the
        coordinated shell's way out when the database cannot be reached."""
        if self._token is None or failed != self._token:
            return self.current()
        now = self._wall_clock()
        self._forced_refreshes += 1
        if now - failed.issued_at < self._min_refresh:
            self._early_refreshes += 1
        return self._issue(now)

    def adopt(self, token: ProviderToken) -> bool:
        """Use `token` (the shared one, issued by this or another node) from now on; False when
        it is the current token already. A wanted refresh is settled by any other token."""
        if token.key_id != self._key.key_id or token.team_id != self._key.team_id:
            raise ValueError("the token was signed for another key or team")
        if token == self._token:
            return False
        self._token = token
        self._generation += 1
        self._adoptions += 1
        self._refresh_wanted = None
        return True

    def issue_new(self) -> ProviderToken:
        """A new token signed now, NOT made current (the shell stores it first, then adopts)."""
        return ProviderToken.issue(self._key, int(self._wall_clock()))

    # ----------------------------------------------------------------------------------------------
    # Internals

    def _issue(self, now: float) -> ProviderToken:
        token = ProviderToken.issue(self._key, int(now))
        self._token = token
        self._generation += 1
        self._refresh_wanted = None
        return token

    def __repr__(self) -> str:
        # Never the token value or the key: both are credentials (apns.md §2).
        age = self.age()
        shown = "None" if age is None else f"{age:.1f}s"
        return (
            f"TokenSource(key_id={self.key_id!r}, team_id={self.team_id!r}, "
            f"generation={self._generation}, age={shown})"
        )
