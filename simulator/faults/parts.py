"""The parts of a fault plan: answer-latency distributions and bursts of retryable errors.

The latency distributions form a union tagged by ``kind`` (``fixed``, ``uniform``, ``lognormal``),
which is how a TOML table or a dict names one. Each `sample(rng)` makes a fixed number of draws,
whatever it returns, so that a plan's random sequence never depends on earlier outcomes.
"""

from __future__ import annotations

import functools
import math
import random
from statistics import NormalDist
from typing import Final

from engine.apns.reasons import Reason, status_of
from simulator.faults.schema import (
    Checked,
    Count,
    FaultPlanError,
    Milliseconds,
    PositiveMilliseconds,
    Probability,
)

BURST_STATUSES: Final = frozenset({429, 500, 503})
"""Statuses a burst may answer with: the retryable rejections of apns.md §3."""

_STD_NORMAL: Final = NormalDist()
_Z99: Final = _STD_NORMAL.inv_cdf(0.99)
_TINY: Final = 1e-12  # keeps inv_cdf away from 0, where it is undefined


class FixedLatency(Checked, frozen=True, tag_field="kind", tag="fixed"):
    """Every answer waits exactly `ms` milliseconds."""

    ms: Milliseconds

    def sample(self, rng: random.Random) -> float:
        """The delay in seconds (draws nothing)."""
        return self.ms / 1000.0


class UniformLatency(Checked, frozen=True, tag_field="kind", tag="uniform"):
    """Answers wait a uniform time between `low_ms` and `high_ms` milliseconds."""

    low_ms: Milliseconds
    high_ms: Milliseconds

    def check(self) -> None:
        """The range must not be reversed."""
        if self.high_ms < self.low_ms:
            raise FaultPlanError(
                "high_ms", f"must be >= low_ms ({self.low_ms}), got {self.high_ms}"
            )

    def sample(self, rng: random.Random) -> float:
        """The delay in seconds (one draw)."""
        return (self.low_ms + (self.high_ms - self.low_ms) * rng.random()) / 1000.0


class LognormalLatency(Checked, frozen=True, dict=True, tag_field="kind", tag="lognormal"):
    """Lognormal answer time given by its median and 99th percentile, in milliseconds.

    A lognormal's median is e^mu and its p99 is e^(mu + z99*sigma), so sigma = ln(p99/median)/z99.
    Real APNs latency has a long tail (peers.md §4); this is the shape that models it.
    """

    median_ms: PositiveMilliseconds
    p99_ms: Milliseconds

    def check(self) -> None:
        """The 99th percentile cannot lie below the median (equal means no spread at all)."""
        if self.p99_ms < self.median_ms:
            raise FaultPlanError(
                "p99_ms", f"must be >= median_ms ({self.median_ms}), got {self.p99_ms}"
            )

    @functools.cached_property
    def sigma(self) -> float:
        """The spread of the underlying normal (computed once, kept in the `dict=True` slot)."""
        return math.log(self.p99_ms / self.median_ms) / _Z99

    def sample(self, rng: random.Random) -> float:
        """The delay in seconds (one draw, by inverse CDF so the draw count is fixed)."""
        z = _STD_NORMAL.inv_cdf(max(rng.random(), _TINY))
        return self.median_ms * math.exp(self.sigma * z) / 1000.0


Latency = FixedLatency | UniformLatency | LognormalLatency
"""The latency distributions, tagged by their ``kind``."""

LATENCY_KINDS: Final[dict[str, type[Latency]]] = {
    str(cls.__struct_config__.tag): cls for cls in (FixedLatency, UniformLatency, LognormalLatency)
}
"""Each latency distribution by its ``kind``."""


class ErrorBurst(Checked, frozen=True):
    """With `probability` per request, start answering `length` requests in a row with `reason`.

    Only 429/500/503 reasons are allowed (apns.md §3): the transient failures a sender must retry.
    """

    reason: Reason
    probability: Probability
    length: Count = 1

    def check(self) -> None:
        """The reason's status, from the shared reason table, must be a retryable one."""
        status = status_of(self.reason)
        if status not in BURST_STATUSES:
            allowed = ", ".join(str(s) for s in sorted(BURST_STATUSES))
            raise FaultPlanError(
                "reason", f"{self.reason.value} has status {status}; expected one of {allowed}"
            )
