"""Budgets: how many pushes a device (or APNs, per token) takes before it holds or refuses more.

Apple publishes no numbers (apns.md "Could not confirm" 2), so every budget here is a knob with a
documented default (simulator/profile.py, `SimulatorConfig`). One refill rule serves them all, and
the README states it: a budget of N per period is a bucket holding at most N pushes that regains
one every period/N seconds, continuously, from the moment it was last below N. A device that has
been quiet for a whole period always has its full budget back.

Pure: no clock reads; every call takes the time (unix seconds). Time never runs backwards inside a
bucket: a call with an earlier time than the last one is treated as the last one's time, so two
activities of one device materialised slightly out of order cannot mint budget.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Final

HOUR: Final = 3600.0
_ONE: Final = 1.0 - 1e-9  # one whole push, allowing for the rounding of a continuous refill


class Bucket:
    """At most `capacity` pushes per `period` seconds, one regained every `period / capacity` s."""

    __slots__ = ("_at", "_level", "capacity", "interval")

    def __init__(self, capacity: int, period: float = HOUR) -> None:
        """A full bucket."""
        if capacity < 1 or period <= 0:
            raise ValueError(
                f"a budget needs capacity >= 1 and period > 0, not {capacity}/{period}"
            )
        self.capacity = capacity
        self.interval = period / capacity
        self._level = float(capacity)
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is None or now <= self._at:
            self._at = now if self._at is None else self._at
            return
        self._level = min(float(self.capacity), self._level + (now - self._at) / self.interval)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one push if the budget has one at `now`; False when it is spent."""
        self._refill(now)
        if self._level >= _ONE:
            self._level = max(0.0, self._level - 1.0)
            return True
        return False

    def remaining(self, now: float) -> int:
        """Whole pushes left at `now`."""
        self._refill(now)
        return int(self._level)

    def next_at(self, now: float) -> float:
        """The earliest time when one push is available: `now` if `take(now)` would succeed,
        else strictly later (so a caller waiting for it always moves forward)."""
        self._refill(now)
        if self._level >= _ONE:
            return now
        at = self._at if self._at is not None else now
        due = max(at + (1.0 - self._level) * self.interval, math.nextafter(now, math.inf))
        # At wall-clock magnitudes (1e9 s) a time carries only ~0.1 µs, which can leave the refill
        # computed at `due` a hair short of one push: step to the first time that gives it.
        for _ in range(10_000):
            if self._level + (due - at) / self.interval >= _ONE:
                return due
            due = math.nextafter(due, math.inf)
        return due + self.interval  # pragma: no cover - unreachable: each step adds refill

    def is_full(self, now: float) -> bool:
        """True when the bucket has its whole capacity at `now` (nothing to remember)."""
        self._refill(now)
        return self._level >= self.capacity

    def to_json(self) -> dict[str, Any]:
        """The state worth keeping across a restart."""
        return {"level": self._level, "at": self._at}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a state saved by `to_json` (values checked, clamped to the capacity)."""
        level, at = state.get("level"), state.get("at")
        if isinstance(level, int | float) and not isinstance(level, bool):
            self._level = max(0.0, min(float(self.capacity), float(level)))
        if isinstance(at, int | float) and not isinstance(at, bool):
            self._at = float(at)


class PerTokenLimit:
    """APNs's own limit: too many pushes to one device token in quick succession get 429.

    apns.md §3: `429 TooManyRequests`, "too many requests were made consecutively to the same
    device token". The threshold is undocumented: `limit` pushes per `window` seconds per token is
    the knob. Memory is bounded: at most `max_tokens` buckets are kept, the least recently used
    dropped first (a dropped token starts again with a full bucket, the lenient choice).
    """

    def __init__(self, limit: int, window: float, *, max_tokens: int = 100_000) -> None:
        """A limit of `limit` pushes per `window` seconds for each token."""
        Bucket(limit, window)  # validates the numbers once, with the same message
        self.limit = limit
        self.window = window
        self._max_tokens = max_tokens
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, token: str, now: float) -> bool:
        """Count one push to `token` at `now`; False when it must be answered 429."""
        bucket = self._buckets.get(token)
        if bucket is None:
            bucket = self._buckets[token] = Bucket(self.limit, self.window)
            if len(self._buckets) > self._max_tokens:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(token)
        return bucket.take(now)

    def __len__(self) -> int:
        """How many tokens are remembered."""
        return len(self._buckets)
