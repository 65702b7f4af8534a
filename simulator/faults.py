"""Seeded fault plans: how the fake APNs server misbehaves, reproducibly.

A `FaultPlan` is a frozen description of APNs misbehaviour: answer latency, bursts of 429/500/503
(apns.md §3), GOAWAY after a number of streams, dropped connections, RST_STREAM, swings of
MAX_CONCURRENT_STREAMS (apns.md §4, peers.md §4) and device tokens that turn `Unregistered`.
The server asks `plan.for_connection(i)` for a `ConnectionFaults` per accepted connection and calls
its `next(token)` once per request, in arrival order. The connection's random generator is seeded
from the text ``f"{seed}:{i}"`` (string seeds are hashed with SHA-512, not the salted `hash()`), so
connection *i* always sees the same faults for the same seed and the same number of requests (the
tokens matter only to the once-per-token rule of `unregister_token` below).

Every configured fault draws the same number of random values on every request, whether it fires or
not, so one fault's outcome never shifts the sequence of another within a plan.

Precedence when several fire on one request: **drop > reset > reject**. A drop closes the TCP
connection without answering, so it clears everything else except the latency before it; a reset
answers RST_STREAM (INTERNAL_ERROR) instead of a response; a reject answers the burst's reason.
A burst keeps counting its requests while a higher-precedence fault wins one of them. GOAWAY and a
stream-limit swing ride along with a reset or a reject; `unregister_token` only comes with a request
the plan lets through, fires at most once per token per connection, and means: answer this request
normally, then treat the token as `Unregistered` (410, timestamp = now) for every later request.

Plans come from a TOML file (keys as the `FaultPlan` fields, ``[latency_ms]`` with a ``kind``,
``[[bursts]]``), from a dict, or from the compact command-line form of `FaultPlan.from_flags`::

    spec    := item ("," item)*              blank items and spaces around items are ignored
    seed=INT                                 random seed (default 0)
    latency=fixed:MS                         every answer waits MS milliseconds
    latency=uniform:LOW:HIGH                 uniform between LOW and HIGH milliseconds
    latency=lognormal:MEDIAN:P99             lognormal with that median and 99th percentile
    burst=REASON:PROBABILITY[:LENGTH]        repeatable; LENGTH requests (default 1) answered REASON
    goaway_after=N                           GOAWAY after answering the Nth stream of a connection
    goaway_reason=REASON                     reason in the GOAWAY debug data (default Shutdown)
    drop=P | reset=P | unregister=P          per-request probabilities
    swing=P:V1/V2/...                        with probability P announce one of the listed limits

Example: ``seed=7,latency=uniform:1:20,burst=ServiceUnavailable:0.01:5,goaway_after=500,drop=0.001,
reset=0.001,swing=0.01:1/10/1000,unregister=0.001``. Every error is a `FaultPlanError` (a
`ValueError`) naming the field, and for flags the item, at fault.
"""

from __future__ import annotations

import math
import os
import random
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import ClassVar, Final

from engine.apns.reasons import Reason, parse_reason, status_of

BURST_STATUSES: Final = frozenset({429, 500, 503})
"""Statuses a burst may answer with: the retryable rejections of apns.md §3."""

MAX_SETTINGS_VALUE: Final = 2**32 - 1  # SETTINGS values are 32-bit (RFC 9113 §6.5.1)
_STD_NORMAL: Final = NormalDist()
_Z99: Final = _STD_NORMAL.inv_cdf(0.99)
_TINY: Final = 1e-12  # keeps inv_cdf away from 0, where it is undefined


class FaultPlanError(ValueError):
    """A fault plan that cannot be used; `field` names the offending field (or flag key)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def under(self, prefix: str) -> FaultPlanError:
        """The same error, reported inside the table or list item `prefix`."""
        return FaultPlanError(f"{prefix}.{self.field}", self.message)


def _check_probability(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise FaultPlanError(name, f"must be a probability in [0, 1], got {value!r}")


def _check_ms(name: str, value: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise FaultPlanError(name, f"must be a finite number of milliseconds >= 0, got {value!r}")


def _check_count(name: str, value: int, low: int = 1, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FaultPlanError(name, f"must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise FaultPlanError(name, f"must be an integer <= {high}, got {value!r}")


def _reason(name: str, value: object, statuses: frozenset[int] | None = None) -> Reason:
    parsed = parse_reason(str(value)) if isinstance(value, str) else None
    if parsed is None:
        raise FaultPlanError(name, f"unknown APNs reason {value!r}")
    if statuses is not None and status_of(parsed) not in statuses:
        allowed = ", ".join(str(s) for s in sorted(statuses))
        raise FaultPlanError(
            name, f"{parsed.value} has status {status_of(parsed)}; expected one of {allowed}"
        )
    return parsed


# --- latency -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FixedLatency:
    """Every answer waits exactly `ms` milliseconds."""

    kind: ClassVar[str] = "fixed"
    ms: float

    def __post_init__(self) -> None:
        _check_ms("ms", self.ms)

    def sample(self, rng: random.Random) -> float:
        """The delay in seconds (draws nothing)."""
        return self.ms / 1000.0


@dataclass(frozen=True, slots=True)
class UniformLatency:
    """Answers wait a uniform time between `low_ms` and `high_ms` milliseconds."""

    kind: ClassVar[str] = "uniform"
    low_ms: float
    high_ms: float

    def __post_init__(self) -> None:
        _check_ms("low_ms", self.low_ms)
        _check_ms("high_ms", self.high_ms)
        if self.high_ms < self.low_ms:
            raise FaultPlanError(
                "high_ms", f"must be >= low_ms ({self.low_ms}), got {self.high_ms}"
            )

    def sample(self, rng: random.Random) -> float:
        """The delay in seconds (one draw)."""
        return (self.low_ms + (self.high_ms - self.low_ms) * rng.random()) / 1000.0


@dataclass(frozen=True, slots=True)
class LognormalLatency:
    """Lognormal answer time given by its median and 99th percentile, in milliseconds.

    A lognormal's median is e^mu and its p99 is e^(mu + z99*sigma), so sigma = ln(p99/median)/z99.
    Real APNs latency has a long tail (peers.md §4); this is the shape that models it.
    """

    kind: ClassVar[str] = "lognormal"
    median_ms: float
    p99_ms: float
    sigma: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_ms("median_ms", self.median_ms)
        _check_ms("p99_ms", self.p99_ms)
        if self.median_ms <= 0:
            raise FaultPlanError("median_ms", f"must be > 0, got {self.median_ms}")
        if self.p99_ms < self.median_ms:
            raise FaultPlanError(
                "p99_ms", f"must be >= median_ms ({self.median_ms}), got {self.p99_ms}"
            )
        object.__setattr__(self, "sigma", math.log(self.p99_ms / self.median_ms) / _Z99)

    def sample(self, rng: random.Random) -> float:
        """The delay in seconds (one draw, by inverse CDF so the draw count is fixed)."""
        z = _STD_NORMAL.inv_cdf(max(rng.random(), _TINY))
        return self.median_ms * math.exp(self.sigma * z) / 1000.0


Latency = FixedLatency | UniformLatency | LognormalLatency
"""The latency distributions, tagged by their `kind`."""

_LATENCY_KINDS: Final[dict[str, tuple[type[Latency], tuple[str, ...]]]] = {
    "fixed": (FixedLatency, ("ms",)),
    "uniform": (UniformLatency, ("low_ms", "high_ms")),
    "lognormal": (LognormalLatency, ("median_ms", "p99_ms")),
}


def latency_to_dict(latency: Latency) -> dict[str, object]:
    """The TOML/dict form of any latency distribution (``kind`` plus its parameters)."""
    _, names = _LATENCY_KINDS[latency.kind]
    return {"kind": latency.kind, **{n: getattr(latency, n) for n in names}}


def latency_from_values(kind: str, values: Mapping[str, float]) -> Latency:
    """Build the `kind` distribution from its parameters (already type-checked numbers)."""
    cls, names = _LATENCY_KINDS[kind]
    return cls(*(values[n] for n in names))


# --- error bursts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorBurst:
    """With `probability` per request, start answering `length` requests in a row with `reason`.

    Only 429/500/503 reasons are allowed (apns.md §3): the transient failures a sender must retry.
    """

    reason: Reason
    probability: float
    length: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", _reason("reason", self.reason, BURST_STATUSES))
        _check_probability("probability", self.probability)
        _check_count("length", self.length)

    def to_dict(self) -> dict[str, object]:
        """The TOML/dict form."""
        return {"reason": self.reason.value, "probability": self.probability, "length": self.length}


# --- actions and counters ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultAction:
    """What the server does to one request. `FaultAction.NONE` (the same object) means nothing.

    `latency` (seconds) is waited before whatever else happens. At most one of `drop_connection`,
    `reset` and `reject` is set (precedence drop > reset > reject). `goaway` is sent after this
    stream's answer; `set_max_streams` is announced in a SETTINGS frame; `unregister_token` marks
    the request's token `Unregistered` after answering it normally.
    """

    NONE: ClassVar[FaultAction]

    latency: float = 0.0
    reject: Reason | None = None
    reset: bool = False
    drop_connection: bool = False
    goaway: Reason | None = None
    set_max_streams: int | None = None
    unregister_token: bool = False


FaultAction.NONE = FaultAction()
NO_FAULT: Final = FaultAction.NONE
"""Module-level alias of `FaultAction.NONE`."""


@dataclass(frozen=True, slots=True)
class FaultStats:
    """How many of each fault took effect (after precedence); add them up across connections."""

    requests: int = 0
    delayed: int = 0
    latency_total_s: float = 0.0
    bursts: int = 0
    rejected: int = 0
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    resets: int = 0
    drops: int = 0
    goaways: int = 0
    limit_swings: int = 0
    unregistered: int = 0

    def __add__(self, other: FaultStats) -> FaultStats:
        by_reason = dict(self.rejected_by_reason)
        for reason, count in other.rejected_by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
        return FaultStats(
            requests=self.requests + other.requests,
            delayed=self.delayed + other.delayed,
            latency_total_s=self.latency_total_s + other.latency_total_s,
            bursts=self.bursts + other.bursts,
            rejected=self.rejected + other.rejected,
            rejected_by_reason=by_reason,
            resets=self.resets + other.resets,
            drops=self.drops + other.drops,
            goaways=self.goaways + other.goaways,
            limit_swings=self.limit_swings + other.limit_swings,
            unregistered=self.unregistered + other.unregistered,
        )

    @classmethod
    def total(cls, stats: Iterable[FaultStats]) -> FaultStats:
        """The sum of `stats` (all zero for none)."""
        result = cls()
        for item in stats:
            result = result + item
        return result

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the control API."""
        return {
            "requests": self.requests,
            "delayed": self.delayed,
            "latency_total_s": self.latency_total_s,
            "bursts": self.bursts,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "resets": self.resets,
            "drops": self.drops,
            "goaways": self.goaways,
            "limit_swings": self.limit_swings,
            "unregistered": self.unregistered,
        }


@dataclass(slots=True)
class _Tally:
    """The mutable counters behind `ConnectionFaults.stats`."""

    delayed: int = 0
    latency_total_s: float = 0.0
    bursts: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    resets: int = 0
    drops: int = 0
    goaways: int = 0
    limit_swings: int = 0
    unregistered: int = 0

    def add(self, action: FaultAction) -> None:
        if action.latency > 0:
            self.delayed += 1
            self.latency_total_s += action.latency
        if action.reject is not None:
            self.rejected[action.reject.value] = self.rejected.get(action.reject.value, 0) + 1
        self.resets += action.reset
        self.drops += action.drop_connection
        self.goaways += action.goaway is not None
        self.limit_swings += action.set_max_streams is not None
        self.unregistered += action.unregister_token

    def snapshot(self, requests: int) -> FaultStats:
        return FaultStats(
            requests=requests,
            delayed=self.delayed,
            latency_total_s=self.latency_total_s,
            bursts=self.bursts,
            rejected=sum(self.rejected.values()),
            rejected_by_reason=dict(self.rejected),
            resets=self.resets,
            drops=self.drops,
            goaways=self.goaways,
            limit_swings=self.limit_swings,
            unregistered=self.unregistered,
        )


# --- the plan ----------------------------------------------------------------------------------

_PROBABILITIES: Final = (
    "drop_probability",
    "reset_probability",
    "limit_swing_probability",
    "unregister_probability",
)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A seeded, frozen description of APNs misbehaviour; the defaults inject nothing.

    `latency_ms` delays every answer; `bursts` start runs of 429/500/503 (apns.md §3);
    `goaway_after_streams` sends GOAWAY with `goaway_reason` after answering that many streams on a
    connection (apns.md §4); `drop_probability` closes the TCP connection without answering;
    `reset_probability` answers RST_STREAM (INTERNAL_ERROR); with `limit_swing_probability` the
    server announces one of `limit_swing_values` as MAX_CONCURRENT_STREAMS, as APNs does when it
    swings between 1 and its usual limit (apns.md §4); `unregister_probability` turns the token of
    an answered request `Unregistered` (410) from then on.
    """

    seed: int = 0
    latency_ms: Latency | None = None
    bursts: tuple[ErrorBurst, ...] = ()
    goaway_after_streams: int | None = None
    goaway_reason: Reason = Reason.SHUTDOWN
    drop_probability: float = 0.0
    reset_probability: float = 0.0
    limit_swing_probability: float = 0.0
    limit_swing_values: tuple[int, ...] = ()
    unregister_probability: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise FaultPlanError("seed", f"must be an integer, got {self.seed!r}")
        if self.latency_ms is not None and not isinstance(self.latency_ms, Latency):
            raise FaultPlanError(
                "latency_ms", f"must be a latency distribution, got {self.latency_ms!r}"
            )
        object.__setattr__(self, "bursts", tuple(self.bursts))
        for i, burst in enumerate(self.bursts):
            if not isinstance(burst, ErrorBurst):
                raise FaultPlanError(f"bursts[{i}]", f"must be an ErrorBurst, got {burst!r}")
        if self.goaway_after_streams is not None:
            _check_count("goaway_after_streams", self.goaway_after_streams)
        object.__setattr__(self, "goaway_reason", _reason("goaway_reason", self.goaway_reason))
        for name in _PROBABILITIES:
            _check_probability(name, getattr(self, name))
        object.__setattr__(self, "limit_swing_values", tuple(self.limit_swing_values))
        for i, value in enumerate(self.limit_swing_values):
            _check_count(f"limit_swing_values[{i}]", value, high=MAX_SETTINGS_VALUE)
        if self.limit_swing_probability > 0 and not self.limit_swing_values:
            raise FaultPlanError(
                "limit_swing_values",
                "must list at least one limit when limit_swing_probability > 0",
            )

    @property
    def is_empty(self) -> bool:
        """True when no request can ever be affected, so the server may skip the plan."""
        return (
            _active_latency(self.latency_ms) is None
            and all(b.probability == 0 for b in self.bursts)
            and self.goaway_after_streams is None
            and all(getattr(self, name) == 0 for name in _PROBABILITIES)
        )

    def for_connection(self, index: int) -> ConnectionFaults:
        """The fault sequence of the server's `index`-th connection (0-based)."""
        return ConnectionFaults(self, index)

    # -- loading and saving

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FaultPlan:
        """A plan from its dict/TOML form; unknown keys and bad values raise `FaultPlanError`."""
        _only_keys(data, _PLAN_KEYS, "fault plan")
        goaway_after = data.get("goaway_after_streams")
        return cls(
            seed=_int_value(data.get("seed", 0), "seed"),
            latency_ms=_latency_from(data.get("latency_ms")),
            bursts=_bursts_from(data.get("bursts", [])),
            goaway_after_streams=(
                None if goaway_after is None else _int_value(goaway_after, "goaway_after_streams")
            ),
            goaway_reason=_reason(
                "goaway_reason", data.get("goaway_reason", Reason.SHUTDOWN.value)
            ),
            drop_probability=_float_value(data.get("drop_probability", 0.0), "drop_probability"),
            reset_probability=_float_value(data.get("reset_probability", 0.0), "reset_probability"),
            limit_swing_probability=_float_value(
                data.get("limit_swing_probability", 0.0), "limit_swing_probability"
            ),
            limit_swing_values=tuple(
                _int_value(v, f"limit_swing_values[{i}]")
                for i, v in enumerate(
                    _list_value(data.get("limit_swing_values", []), "limit_swing_values")
                )
            ),
            unregister_probability=_float_value(
                data.get("unregister_probability", 0.0), "unregister_probability"
            ),
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> FaultPlan:
        """A plan from a TOML file laid out as `from_dict` expects."""
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise FaultPlanError(os.fspath(path), f"not valid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_flags(cls, spec: str) -> FaultPlan:
        """A plan from the compact ``key=value,...`` form described in the module docstring."""
        data: dict[str, object] = {}
        bursts: list[object] = []
        origins: dict[str, str] = {}  # plan field, or "bursts[i]", -> the item that set it
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not key:
                raise FaultPlanError(item, "expected key=value")
            try:
                fragment = _flag_fragment(key, value)
            except FaultPlanError as exc:
                raise FaultPlanError(key, f"{exc.message} (in {item!r})") from None
            if key == "burst":
                origins[f"bursts[{len(bursts)}]"] = item
                bursts.append(fragment["bursts"])
                continue
            if any(name in data for name in fragment):
                raise FaultPlanError(key, f"given more than once (in {item!r})")
            data.update(fragment)
            origins.update(dict.fromkeys(fragment, item))
        if bursts:
            data["bursts"] = bursts
        try:
            return cls.from_dict(data)
        except FaultPlanError as exc:
            head, _, sub = exc.field.partition(".")
            if head not in origins:  # an element of a list field, e.g. limit_swing_values[0]
                head, sub = head.partition("[")[0], exc.field
            item = origins.get(head, "")
            message = f"{sub}: {exc.message}" if sub else exc.message
            raise FaultPlanError(
                item.partition("=")[0] or exc.field, f"{message} (in {item!r})"
            ) from None

    @classmethod
    def from_arg(cls, value: str) -> FaultPlan:
        """A plan from a command-line value: a path ending in ``.toml``, else the flag form."""
        return cls.from_toml(value) if value.endswith(".toml") else cls.from_flags(value)

    def to_dict(self) -> dict[str, object]:
        """The dict/TOML form; `from_dict(plan.to_dict()) == plan`."""
        out: dict[str, object] = {"seed": self.seed}
        if self.latency_ms is not None:
            out["latency_ms"] = latency_to_dict(self.latency_ms)
        if self.bursts:
            out["bursts"] = [burst.to_dict() for burst in self.bursts]
        if self.goaway_after_streams is not None:
            out["goaway_after_streams"] = self.goaway_after_streams
        out["goaway_reason"] = self.goaway_reason.value
        for name in _PROBABILITIES:
            out[name] = getattr(self, name)
        out["limit_swing_values"] = list(self.limit_swing_values)
        return out


_PLAN_KEYS: Final = frozenset(f.name for f in FaultPlan.__dataclass_fields__.values())


def _active_latency(latency: Latency | None) -> Latency | None:
    """`latency`, or None when it can never delay anything."""
    if isinstance(latency, FixedLatency) and latency.ms == 0:
        return None
    return latency


# --- per-connection decisions ------------------------------------------------------------------


class ConnectionFaults:
    """The fault sequence of one connection: call `next(token)` once per request, in arrival order.

    `streams_seen` counts the requests so far; `stats` counts the faults that took effect.
    """

    __slots__ = (
        "_burst_left",
        "_burst_reason",
        "_bursts",
        "_empty",
        "_last_limit",
        "_latency",
        "_rng",
        "_tally",
        "_unregistered",
        "index",
        "plan",
        "streams_seen",
    )

    def __init__(self, plan: FaultPlan, index: int) -> None:
        _check_count("index", index, low=0)
        self.plan = plan
        self.index = index
        self.streams_seen = 0
        self._empty = plan.is_empty  # decided once: an empty plan costs one branch per request
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes.
        self._rng = random.Random(f"{plan.seed}:{index}")
        self._latency = _active_latency(plan.latency_ms)
        self._bursts = tuple(b for b in plan.bursts if b.probability > 0)
        self._burst_reason: Reason | None = None
        self._burst_left = 0
        self._last_limit: int | None = None
        self._unregistered: set[str] = set()
        self._tally = _Tally()

    @property
    def stats(self) -> FaultStats:
        """A snapshot of this connection's counters."""
        return self._tally.snapshot(self.streams_seen)

    def next(self, token: str) -> FaultAction:
        """The faults for the next request, addressed to device `token`."""
        self.streams_seen += 1
        if self._empty:
            return NO_FAULT
        plan = self.plan
        # Every configured fault draws on every request, fired or not (see the module docstring).
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
        self._tally.add(action)
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
        self._tally.bursts += 1
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


# --- dict and flag parsing ---------------------------------------------------------------------


def _only_keys(data: Mapping[str, object], allowed: Iterable[str], where: str) -> None:
    allowed = sorted(allowed)
    unknown = ", ".join(sorted(repr(key) for key in data if key not in allowed))
    if unknown:
        raise FaultPlanError(
            where, f"unknown key(s) {unknown}; expected some of {', '.join(allowed)}"
        )


def _int_value(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultPlanError(path, f"must be an integer, got {value!r}")
    return value


def _float_value(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultPlanError(path, f"must be a number, got {value!r}")
    return float(value)


def _list_value(value: object, path: str) -> list[object]:
    if not isinstance(value, list | tuple):
        raise FaultPlanError(path, f"must be a list, got {value!r}")
    return list(value)


def _table_value(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise FaultPlanError(path, f"must be a table, got {value!r}")
    return value


def _latency_from(value: object) -> Latency | None:
    if value is None:
        return None
    table = _table_value(value, "latency_ms")
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in _LATENCY_KINDS:
        kinds = ", ".join(_LATENCY_KINDS)
        raise FaultPlanError("latency_ms.kind", f"must be one of {kinds}, got {kind!r}")
    names = _LATENCY_KINDS[kind][1]
    _only_keys(table, ("kind", *names), "latency_ms")
    try:
        _require(table, names)
        return latency_from_values(kind, {n: _float_value(table[n], n) for n in names})
    except FaultPlanError as exc:
        raise exc.under("latency_ms") from None


def _bursts_from(value: object) -> tuple[ErrorBurst, ...]:
    bursts: list[ErrorBurst] = []
    for i, item in enumerate(_list_value(value, "bursts")):
        path = f"bursts[{i}]"
        table = _table_value(item, path)
        _only_keys(table, ("reason", "probability", "length"), path)
        try:
            _require(table, ("reason", "probability"))
            bursts.append(
                ErrorBurst(
                    reason=_reason("reason", table["reason"], BURST_STATUSES),
                    probability=_float_value(table["probability"], "probability"),
                    length=_int_value(table.get("length", 1), "length"),
                )
            )
        except FaultPlanError as exc:
            raise exc.under(path) from None
    return tuple(bursts)


def _require(table: Mapping[str, object], names: Iterable[str]) -> None:
    for name in names:
        if name not in table:
            raise FaultPlanError(name, "is required")


def _flag_number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultPlanError(what, f"{what} must be a number, got {text!r}") from None


def _flag_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FaultPlanError(what, f"{what} must be an integer, got {text!r}") from None


def _flag_parts(value: str, shapes: tuple[str, ...]) -> list[str]:
    """`value` split on ':' into as many parts as one of `shapes` (e.g. "P:V1/V2") names."""
    parts = value.split(":")
    if not any(len(parts) == shape.count(":") + 1 for shape in shapes):
        raise FaultPlanError("value", f"expected {' or '.join(shapes)}, got {value!r}")
    return parts


def _flag_fragment(key: str, value: str) -> dict[str, object]:
    """The plan fields set by one flag item."""
    if key == "seed":
        return {"seed": _flag_int(value, "seed")}
    if key in ("drop", "reset", "unregister"):
        return {f"{key}_probability": _flag_number(value, "probability")}
    if key == "goaway_after":
        return {"goaway_after_streams": _flag_int(value, "stream count")}
    if key == "goaway_reason":
        return {"goaway_reason": value}
    if key == "latency":
        return {"latency_ms": _flag_latency(value)}
    if key == "burst":
        parts = _flag_parts(value, ("REASON:PROBABILITY", "REASON:PROBABILITY:LENGTH"))
        burst: dict[str, object] = {
            "reason": parts[0],
            "probability": _flag_number(parts[1], "probability"),
        }
        if len(parts) == 3:
            burst["length"] = _flag_int(parts[2], "length")
        return {"bursts": burst}
    if key == "swing":
        probability, limits = _flag_parts(value, ("PROBABILITY:V1/V2/...",))
        return {
            "limit_swing_probability": _flag_number(probability, "probability"),
            "limit_swing_values": [_flag_int(v, "limit") for v in limits.split("/")],
        }
    raise FaultPlanError(key, f"unknown fault flag; expected one of {', '.join(_FLAG_KEYS)}")


_FLAG_KEYS: Final = (
    "seed",
    "latency",
    "burst",
    "goaway_after",
    "goaway_reason",
    "drop",
    "reset",
    "swing",
    "unregister",
)
_LATENCY_SHAPES: Final = {
    "fixed": "fixed:MS",
    "uniform": "uniform:LOW:HIGH",
    "lognormal": "lognormal:MEDIAN:P99",
}


def _flag_latency(value: str) -> dict[str, object]:
    kind, _, rest = value.partition(":")
    if kind not in _LATENCY_KINDS:
        raise FaultPlanError("kind", f"expected one of {', '.join(_LATENCY_SHAPES.values())}")
    names = _LATENCY_KINDS[kind][1]
    numbers = rest.split(":") if rest else []
    if len(numbers) != len(names):
        raise FaultPlanError("kind", f"expected {_LATENCY_SHAPES[kind]}, got {value!r}")
    return {"kind": kind, **{n: _flag_number(t, n) for n, t in zip(names, numbers, strict=True)}}
