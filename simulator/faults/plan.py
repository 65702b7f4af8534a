"""`FaultPlan`, a frozen description of how the fake APNs misbehaves, and its per-connection draws.

A plan is read from a dict, a TOML file or the command-line form (`simulator.faults.flags`), and
all three go through one `msgspec.convert` into the `Checked` records of `simulator.faults.schema`,
so they share every rule and every error names the field at fault.

`ConnectionFaults` turns a plan into the fault sequence of one connection, request by request.
Pure: no I/O, no clock, only the connection's seeded `random.Random`.
"""

from __future__ import annotations

import os
import random
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from engine.apns.reasons import Reason
from simulator.faults import flags
from simulator.faults.actions import NO_FAULT, FaultAction, FaultStats, count
from simulator.faults.parts import ErrorBurst, FixedLatency, Latency
from simulator.faults.schema import (
    Checked,
    Count,
    FaultPlanError,
    Milliseconds,
    Probability,
    StreamLimit,
    convert,
)


class FaultPlan(Checked, frozen=True):
    """A seeded, frozen description of APNs misbehaviour; the defaults inject nothing.

    `latency_ms` delays every answer; `bursts` start runs of 429/500/503 (apns.md §3);
    `goaway_after_streams` sends GOAWAY with `goaway_reason` after answering that many streams on a
    connection (apns.md §4); `drop_probability` closes the TCP connection without answering;
    `reset_probability` answers RST_STREAM (INTERNAL_ERROR); with `limit_swing_probability` the
    server announces one of `limit_swing_values` as MAX_CONCURRENT_STREAMS, as APNs does when it
    swings between 1 and its usual limit (apns.md §4); `unregister_probability` turns the token of
    an answered request `Unregistered` (410) from then on.

    Device events (`simulator.faults.devices`), drawn per accepted push from their own seeded
    generator, not per connection: `rotate_probability` gives the activity a new update token,
    `dismiss_probability` has the user swipe it away, and `offline_probability` takes the device
    off the network for `offline_ms` (APNs keeps its pushes meanwhile).
    """

    seed: int = 0
    latency_ms: Latency | None = None
    bursts: tuple[ErrorBurst, ...] = ()
    goaway_after_streams: Count | None = None
    goaway_reason: Reason = Reason.SHUTDOWN
    drop_probability: Probability = 0.0
    reset_probability: Probability = 0.0
    limit_swing_probability: Probability = 0.0
    limit_swing_values: tuple[StreamLimit, ...] = ()
    unregister_probability: Probability = 0.0
    rotate_probability: Probability = 0.0
    dismiss_probability: Probability = 0.0
    offline_probability: Probability = 0.0
    offline_ms: Milliseconds = 30_000.0

    def check(self) -> None:
        """A swing needs a limit to announce."""
        if self.limit_swing_probability > 0 and not self.limit_swing_values:
            raise FaultPlanError(
                "limit_swing_values",
                "must list at least one limit when limit_swing_probability > 0",
            )

    @property
    def active_latency(self) -> Latency | None:
        """`latency_ms`, or None when it can never delay anything."""
        latency = self.latency_ms
        if isinstance(latency, FixedLatency) and latency.ms == 0:
            return None
        return latency

    @property
    def has_device_events(self) -> bool:
        """True when accepted pushes may rotate, dismiss or take devices offline."""
        return (
            self.rotate_probability > 0
            or self.dismiss_probability > 0
            or self.offline_probability > 0
        )

    @property
    def is_empty(self) -> bool:
        """True when no request's answer can ever be affected (device events aside)."""
        return (
            self.active_latency is None
            and all(b.probability == 0 for b in self.bursts)
            and self.goaway_after_streams is None
            and self.drop_probability == 0
            and self.reset_probability == 0
            and self.limit_swing_probability == 0
            and self.unregister_probability == 0
        )

    def for_connection(self, index: int) -> ConnectionFaults:
        """The fault sequence of the server's `index`-th connection (0-based)."""
        return ConnectionFaults(self, index)

    # -- loading and saving

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FaultPlan:
        """A plan from its dict/TOML form; unknown keys and bad values raise `FaultPlanError`."""
        return convert(data, cls)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> FaultPlan:
        """A plan from a TOML file laid out as `from_dict` expects."""
        try:
            with Path(path).open("rb") as file:
                data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise FaultPlanError(os.fspath(path), f"not valid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_flags(cls, spec: str) -> FaultPlan:
        """A plan from the compact ``key=value,...`` form (`simulator.faults.flags`).

        The values are text, so the conversion reads numbers from strings (``strict=False``);
        otherwise the rules are those of `from_dict`, and an error names the item at fault.
        """
        parsed = flags.parse(spec)
        try:
            return convert(parsed.data, cls, strict=False)
        except FaultPlanError as exc:
            raise parsed.blame(exc) from None

    @classmethod
    def from_arg(cls, value: str) -> FaultPlan:
        """A plan from a command-line value: a path ending in ``.toml``, else the flag form."""
        return cls.from_toml(value) if value.endswith(".toml") else cls.from_flags(value)

    def to_dict(self) -> dict[str, Any]:
        """The dict/TOML form; `from_dict(plan.to_dict()) == plan`.

        Built from the plan's JSON form, so it holds only what a TOML or JSON file can (lists,
        reason strings, a latency table with its ``kind``); unset optional fields are left out, as
        TOML has no null.
        """
        fields: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self))
        return {name: value for name, value in fields.items() if value is not None}


# --- per-connection decisions ------------------------------------------------------------------


class ConnectionFaults:
    """The fault sequence of one connection: call `next(token)` once per request, in arrival order.

    `streams_seen` counts the requests so far; `stats` counts the faults that took effect.
    """

    __slots__ = (
        "_burst_left",
        "_burst_reason",
        "_bursts",
        "_counts",
        "_empty",
        "_last_limit",
        "_latency",
        "_rng",
        "_unregistered",
        "index",
        "plan",
        "streams_seen",
    )

    def __init__(self, plan: FaultPlan, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise FaultPlanError("index", f"must be an integer >= 0, got {index!r}")
        self.plan = plan
        self.index = index
        self.streams_seen = 0
        self._empty = plan.is_empty  # decided once: an empty plan costs one branch per request
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes.
        self._rng = random.Random(f"{plan.seed}:{index}")
        self._latency = plan.active_latency
        self._bursts = tuple(b for b in plan.bursts if b.probability > 0)
        self._burst_reason: Reason | None = None
        self._burst_left = 0
        self._last_limit: int | None = None
        self._unregistered: set[str] = set()
        self._counts = FaultStats()  # `requests` stays 0: `streams_seen` counts them

    @property
    def stats(self) -> FaultStats:
        """A copy of this connection's counters."""
        counts = self._counts
        by_reason = dict(counts.rejected_by_reason)
        return msgspec.structs.replace(
            counts, requests=self.streams_seen, rejected_by_reason=by_reason
        )

    def next(self, token: str) -> FaultAction:
        """The faults for the next request, addressed to device `token`."""
        self.streams_seen += 1
        if self._empty:
            return NO_FAULT
        plan = self.plan
        # Every configured fault draws on every request, fired or not (see the package docstring).
        latency = 0.0 if self._latency is None else self._latency.sample(self._rng)
        reject = self._next_reject()
        drop = self._chance(plan.drop_probability)
        reset = self._chance(plan.reset_probability)
        limit = self._next_limit()
        unregister = self._chance(plan.unregister_probability)
        goaway = plan.goaway_reason if self.streams_seen == plan.goaway_after_streams else None
        if drop:  # the connection is gone: nothing else reaches the client
            return self._record(FaultAction(latency=latency, drop_connection=True))
        if reset:
            reject = None
        if reset or reject is not None or token in self._unregistered:
            unregister = False
        if not (latency or reject or reset or goaway or unregister) and limit is None:
            return NO_FAULT
        if unregister:
            self._unregistered.add(token)
        if limit is not None:
            self._last_limit = limit
        return self._record(FaultAction(latency, reject, reset, False, goaway, limit, unregister))

    def _record(self, action: FaultAction) -> FaultAction:
        count(self._counts, action)
        return action

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def _next_reject(self) -> Reason | None:
        """The burst reason for this request: a burst in progress, or one starting now."""
        starting: ErrorBurst | None = None
        for burst in self._bursts:
            if self._rng.random() < burst.probability and starting is None:
                starting = burst
        if self._burst_left > 0:
            self._burst_left -= 1
            return self._burst_reason
        if starting is None:
            return None
        self._burst_reason = starting.reason
        self._burst_left = starting.length - 1
        self._counts.bursts += 1
        return starting.reason

    def _next_limit(self) -> int | None:
        """A new MAX_CONCURRENT_STREAMS to announce, preferring one that differs from the last."""
        probability = self.plan.limit_swing_probability
        if probability == 0:
            return None
        fires = self._rng.random() < probability
        pick = self._rng.random()
        if not fires:
            return None
        values = self.plan.limit_swing_values
        choices = [v for v in values if v != self._last_limit] or list(values)
        return choices[int(pick * len(choices))]
