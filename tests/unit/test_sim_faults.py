"""Seeded fault plans of the fake APNs (simulator.faults): reproducibility, rates, parsing."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.apns.reasons import Reason
from simulator.faults import (
    NO_FAULT,
    ErrorBurst,
    FaultAction,
    FaultPlan,
    FaultPlanError,
    FaultStats,
    FixedLatency,
    LognormalLatency,
    UniformLatency,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "bench" / "faults" / "example.toml"

FULL_FLAGS = (
    "seed=7,latency=uniform:1:20,burst=ServiceUnavailable:0.01:5,goaway_after=500,"
    "drop=0.001,reset=0.001,swing=0.01:1/10/1000,unregister=0.001,"
    "rotate=0.002,dismiss=0.003,offline=0.004:1500"
)
FULL_DICT: dict[str, Any] = {
    "seed": 7,
    "latency_ms": {"kind": "uniform", "low_ms": 1, "high_ms": 20},
    "bursts": [{"reason": "ServiceUnavailable", "probability": 0.01, "length": 5}],
    "goaway_after_streams": 500,
    "drop_probability": 0.001,
    "reset_probability": 0.001,
    "limit_swing_probability": 0.01,
    "limit_swing_values": [1, 10, 1000],
    "unregister_probability": 0.001,
    "rotate_probability": 0.002,
    "dismiss_probability": 0.003,
    "offline_probability": 0.004,
    "offline_ms": 1500,
}
FULL_TOML = """
seed = 7
goaway_after_streams = 500
drop_probability = 0.001
reset_probability = 0.001
limit_swing_probability = 0.01
limit_swing_values = [1, 10, 1000]
unregister_probability = 0.001
rotate_probability = 0.002
dismiss_probability = 0.003
offline_probability = 0.004
offline_ms = 1500

[latency_ms]
kind = "uniform"
low_ms = 1
high_ms = 20

[[bursts]]
reason = "ServiceUnavailable"
probability = 0.01
length = 5
"""


def _run(plan: FaultPlan, n: int, index: int = 0, tokens: int = 0) -> list[FaultAction]:
    """`n` actions of connection `index`; `tokens` > 0 cycles that many tokens, else distinct."""
    conn = plan.for_connection(index)
    return [conn.next(f"tok{i % tokens if tokens else i}") for i in range(n)]


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_and_connection_give_identical_sequences() -> None:
    plan = FaultPlan.from_flags(FULL_FLAGS)
    first = _run(plan, 10_000, index=3, tokens=100)
    again = _run(FaultPlan.from_flags(FULL_FLAGS), 10_000, index=3, tokens=100)
    assert first == again
    assert sum(a is not NO_FAULT for a in first) > 9_000  # latency alone touches almost all


@pytest.mark.parametrize(
    ("seed", "index"),
    [(8, 3), (7, 4)],
    ids=["other-seed", "other-connection"],
)
def test_other_seed_or_connection_gives_other_sequence(seed: int, index: int) -> None:
    base = FaultPlan.from_flags(FULL_FLAGS)
    other = FaultPlan.from_dict({**FULL_DICT, "seed": seed})
    assert _run(base, 10_000, index=3) != _run(other, 10_000, index=index)


def test_known_first_actions_are_stable_across_processes() -> None:
    # The connection RNG is seeded with the text "1:0", which `random` hashes with SHA-512 rather
    # than the per-process salted hash(): these values are the same in every run.
    plan = FaultPlan(seed=1, latency_ms=UniformLatency(0, 1000))
    assert [a.latency for a in _run(plan, 3)] == pytest.approx(
        [0.7259748788500867, 0.419767232753784, 0.37059490820682306], abs=1e-12
    )


def test_full_plan_sequence_is_pinned() -> None:
    # The whole action sequence of a plan using every fault, pinned (the digest of its JSON form):
    # a change to how plans are read, or to the order or number of draws, shows up here first.
    conn = FaultPlan.from_flags(FULL_FLAGS).for_connection(2)
    rows = [msgspec.to_builtins(conn.next(f"tok{i % 50}")) for i in range(5000)]
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert digest == "b0c168e7f587e48c8bed43cc65247e319110ee6ff35a4af622f289429381f55f"
    stats = conn.stats
    counts = (stats.bursts, stats.rejected, stats.resets, stats.drops, stats.limit_swings)
    assert counts == (48, 240, 7, 4, 52)


def test_one_fault_does_not_shift_another() -> None:
    # Every configured fault draws on every request, so changing how often drops fire leaves
    # the latency sequence alone (a drop still keeps its latency).
    a = FaultPlan(seed=5, latency_ms=UniformLatency(0, 10), drop_probability=0.01)
    b = FaultPlan(seed=5, latency_ms=UniformLatency(0, 10), drop_probability=0.5)
    assert [x.latency for x in _run(a, 2000)] == [x.latency for x in _run(b, 2000)]


# --- rates -------------------------------------------------------------------------------------

N = 40_000


@pytest.mark.parametrize(
    ("plan", "stat", "rate"),
    [
        (FaultPlan(seed=1, drop_probability=0.02), "drops", 0.02),
        (FaultPlan(seed=2, reset_probability=0.05), "resets", 0.05),
        (FaultPlan(seed=3, unregister_probability=0.01), "unregistered", 0.01),
        (
            FaultPlan(seed=4, limit_swing_probability=0.03, limit_swing_values=(1, 9)),
            "limit_swings",
            0.03,
        ),
        (
            FaultPlan(seed=5, bursts=(ErrorBurst(Reason.INTERNAL_SERVER_ERROR, 0.04),)),
            "rejected",
            0.04,
        ),
        (FaultPlan(seed=6, bursts=(ErrorBurst(Reason.TOO_MANY_REQUESTS, 0.001),)), "bursts", 0.001),
    ],
    ids=["drop", "reset", "unregister", "swing", "burst-500", "burst-429"],
)
def test_each_fault_fires_at_roughly_its_probability(
    plan: FaultPlan, stat: str, rate: float
) -> None:
    conn = plan.for_connection(0)
    for i in range(N):
        conn.next(f"tok{i}")
    count = getattr(conn.stats, stat)
    expected = N * rate
    # Five standard deviations of a binomial, plus slack: generous, yet fails a wrong rate.
    slack = 5 * math.sqrt(expected * (1 - rate)) + 2
    assert abs(count - expected) <= slack, (count, expected)


def test_unregister_fires_at_most_once_per_token_per_connection() -> None:
    actions = _run(FaultPlan(unregister_probability=1.0), 10, tokens=3)
    assert [a.unregister_token for a in actions] == [True] * 3 + [False] * 7


# --- bursts ------------------------------------------------------------------------------------


def _runs(flags: list[bool]) -> list[int]:
    """Lengths of the maximal runs of True in `flags`."""
    runs, current = [], 0
    for flag in [*flags, False]:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_bursts_last_exactly_their_length() -> None:
    plan = FaultPlan(seed=11, bursts=(ErrorBurst(Reason.SERVICE_UNAVAILABLE, 0.01, length=7),))
    conn = plan.for_connection(0)
    actions = [conn.next("t") for _ in range(20_000)]
    runs = _runs([a.reject is Reason.SERVICE_UNAVAILABLE for a in actions])
    assert len(runs) > 50
    assert all(run % 7 == 0 for run in runs)  # back-to-back bursts join into multiples
    assert conn.stats.rejected == 7 * conn.stats.bursts
    assert conn.stats.rejected_by_reason == {"ServiceUnavailable": conn.stats.rejected}


def test_certain_burst_rejects_everything_in_blocks() -> None:
    plan = FaultPlan(bursts=(ErrorBurst(Reason.TOO_MANY_REQUESTS, 1.0, length=4),))
    conn = plan.for_connection(0)
    actions = [conn.next("t") for _ in range(10)]
    assert all(a.reject is Reason.TOO_MANY_REQUESTS for a in actions)
    assert conn.stats.bursts == 3  # requests 1, 5 and 9 start one


def test_first_matching_burst_wins_and_blocks_others_while_running() -> None:
    plan = FaultPlan(
        bursts=(
            ErrorBurst(Reason.INTERNAL_SERVER_ERROR, 1.0, length=2),
            ErrorBurst(Reason.SERVICE_UNAVAILABLE, 1.0, length=9),
        )
    )
    assert [a.reject for a in _run(plan, 4)] == [Reason.INTERNAL_SERVER_ERROR] * 4


def test_burst_keeps_counting_through_a_reset() -> None:
    # Every request sits in some burst; a reset hides the reject but still uses up the request.
    plan = FaultPlan(
        seed=2,
        bursts=(ErrorBurst(Reason.SERVICE_UNAVAILABLE, 1.0, length=4),),
        reset_probability=0.3,
    )
    conn = plan.for_connection(0)
    actions = [conn.next("t") for _ in range(400)]
    assert all((a.reject is not None) != a.reset for a in actions)
    assert 0 < conn.stats.resets < 200
    assert conn.stats.bursts == 100


# --- goaway, swings, precedence ----------------------------------------------------------------


@pytest.mark.parametrize("reason", [Reason.SHUTDOWN, Reason.SERVICE_UNAVAILABLE])
def test_goaway_fires_exactly_at_the_nth_stream(reason: Reason) -> None:
    plan = FaultPlan(goaway_after_streams=25, goaway_reason=reason)
    conn = plan.for_connection(0)
    actions = [conn.next("t") for _ in range(60)]
    assert [i + 1 for i, a in enumerate(actions) if a.goaway is not None] == [25]
    assert actions[24] == FaultAction(goaway=reason)
    assert conn.streams_seen == 60
    assert conn.stats.goaways == 1


def test_swings_announce_a_new_value_each_time() -> None:
    plan = FaultPlan(limit_swing_probability=1.0, limit_swing_values=(1, 1000))
    values = [a.set_max_streams for a in _run(plan, 7)]
    assert set(values) == {1, 1000}
    assert all(a != b for a, b in itertools.pairwise(values))
    single = FaultPlan(limit_swing_probability=1.0, limit_swing_values=(5,))
    assert {a.set_max_streams for a in _run(single, 5)} == {5}


def test_swings_pick_among_all_values() -> None:
    plan = FaultPlan(seed=3, limit_swing_probability=1.0, limit_swing_values=(1, 10, 1000))
    values = [a.set_max_streams for a in _run(plan, 300)]
    assert set(values) == {1, 10, 1000}
    assert all(a != b for a, b in itertools.pairwise(values))


EVERYTHING = dict(
    bursts=(ErrorBurst(Reason.SERVICE_UNAVAILABLE, 1.0, length=3),),
    goaway_after_streams=1,
    limit_swing_probability=1.0,
    limit_swing_values=(1,),
    unregister_probability=1.0,
    latency_ms=FixedLatency(2),
)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"drop_probability": 1.0, "reset_probability": 1.0},
            FaultAction(latency=0.002, drop_connection=True),
        ),
        (
            {"reset_probability": 1.0},
            FaultAction(latency=0.002, reset=True, goaway=Reason.SHUTDOWN, set_max_streams=1),
        ),
        (
            {},
            FaultAction(
                latency=0.002,
                reject=Reason.SERVICE_UNAVAILABLE,
                goaway=Reason.SHUTDOWN,
                set_max_streams=1,
            ),
        ),
    ],
    ids=["drop-beats-all", "reset-beats-reject", "reject-beats-unregister"],
)
def test_precedence_drop_reset_reject(extra: dict[str, float], expected: FaultAction) -> None:
    plan = FaultPlan(**EVERYTHING, **extra)  # type: ignore[arg-type]
    conn = plan.for_connection(0)
    assert conn.next("t") == expected
    stats = conn.stats
    assert (stats.drops, stats.resets, stats.rejected, stats.unregistered) == (
        int(expected.drop_connection),
        int(expected.reset),
        int(expected.reject is not None),
        0,
    )


def test_unregister_only_on_requests_let_through() -> None:
    plan = FaultPlan(unregister_probability=1.0, goaway_after_streams=1)
    assert plan.for_connection(0).next("t") == FaultAction(
        goaway=Reason.SHUTDOWN, unregister_token=True
    )


# --- latency -----------------------------------------------------------------------------------


def _latencies(latency: FixedLatency | UniformLatency | LognormalLatency, n: int) -> list[float]:
    return [a.latency for a in _run(FaultPlan(seed=9, latency_ms=latency), n)]


def test_fixed_latency_is_exact() -> None:
    assert set(_latencies(FixedLatency(5), 100)) == {0.005}


def test_uniform_latency_stays_in_bounds() -> None:
    samples = _latencies(UniformLatency(1, 20), 20_000)
    assert min(samples) >= 0.001 and max(samples) <= 0.020
    assert statistics.fmean(samples) == pytest.approx(0.0105, rel=0.03)
    assert min(samples) < 0.0012 and max(samples) > 0.0198


def test_lognormal_latency_matches_median_and_p99() -> None:
    samples = sorted(_latencies(LognormalLatency(3, 40), 40_000))
    assert all(s > 0 for s in samples)
    assert statistics.median(samples) == pytest.approx(0.003, rel=0.2)
    assert samples[int(0.99 * len(samples))] == pytest.approx(0.040, rel=0.2)


def test_lognormal_sigma_from_median_and_p99() -> None:
    assert LognormalLatency(3, 40).sigma == pytest.approx(math.log(40 / 3) / 2.3263478740408408)
    assert LognormalLatency(3, 3).sigma == 0.0


# --- empty plans and stats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan(),
        FaultPlan(seed=99, latency_ms=FixedLatency(0)),
        FaultPlan(bursts=(ErrorBurst(Reason.SHUTDOWN, 0.0, 3),), limit_swing_values=(1,)),
    ],
    ids=["default", "zero-latency", "zero-probabilities"],
)
def test_empty_plan_yields_only_the_no_fault_constant(plan: FaultPlan) -> None:
    assert plan.is_empty
    conn = plan.for_connection(0)
    assert all(conn.next("t") is FaultAction.NONE for _ in range(1000))
    assert conn.streams_seen == 1000
    assert conn.stats == FaultStats(requests=1000)


def test_non_empty_plan_returns_the_constant_when_nothing_fires() -> None:
    plan = FaultPlan(drop_probability=0.001)
    assert not plan.is_empty
    actions = _run(plan, 500)
    assert sum(a is NO_FAULT for a in actions) >= 490
    assert NO_FAULT is FaultAction.NONE


def test_stats_add_up_across_connections() -> None:
    plan = FaultPlan.from_flags(FULL_FLAGS)
    conns = [plan.for_connection(i) for i in range(3)]
    for conn in conns:
        for i in range(3000):
            conn.next(f"t{i % 40}")
    total = FaultStats.total(c.stats for c in conns)
    assert total.requests == 9000
    assert total.goaways == 3
    assert total.drops == sum(c.stats.drops for c in conns)
    assert total.rejected_by_reason["ServiceUnavailable"] == total.rejected
    assert total == conns[0].stats + conns[1].stats + conns[2].stats
    assert FaultStats.total([]) == FaultStats()
    as_dict = total.to_dict()
    assert as_dict["requests"] == 9000 and as_dict["rejected_by_reason"] == {
        "ServiceUnavailable": total.rejected
    }


def test_stats_are_declared_once_and_handed_out_as_copies() -> None:
    assert list(FaultStats().to_dict()) == list(FaultStats.__struct_fields__)
    a = FaultStats(requests=2, rejected=1, rejected_by_reason={"TooManyRequests": 1})
    b = FaultStats(
        requests=3,
        latency_total_s=0.5,
        rejected=2,
        rejected_by_reason={"TooManyRequests": 1, "ServiceUnavailable": 1},
    )
    assert a + b == FaultStats(
        requests=5,
        latency_total_s=0.5,
        rejected=3,
        rejected_by_reason={"TooManyRequests": 2, "ServiceUnavailable": 1},
    )
    assert a.rejected_by_reason == {"TooManyRequests": 1}  # adding leaves both sides alone
    assert (a + b).to_dict()["rejected_by_reason"] == {
        "ServiceUnavailable": 1,
        "TooManyRequests": 2,
    }
    conn = FaultPlan(bursts=(ErrorBurst(Reason.TOO_MANY_REQUESTS, 1.0),)).for_connection(0)
    conn.next("t")
    first = conn.stats
    first.rejected_by_reason["TooManyRequests"] = 99
    first.rejected = 99
    conn.next("t")
    assert conn.stats == FaultStats(
        requests=2, bursts=2, rejected=2, rejected_by_reason={"TooManyRequests": 2}
    )


# --- loading -----------------------------------------------------------------------------------


def test_toml_flags_and_dict_give_the_same_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(FULL_TOML)
    from_toml = FaultPlan.from_toml(path)
    assert from_toml == FaultPlan.from_flags(FULL_FLAGS) == FaultPlan.from_dict(FULL_DICT)
    assert FaultPlan.from_arg(str(path)) == from_toml
    assert FaultPlan.from_arg(FULL_FLAGS) == from_toml
    assert from_toml.limit_swing_values == (1, 10, 1000)
    assert from_toml.bursts == (ErrorBurst(Reason.SERVICE_UNAVAILABLE, 0.01, 5),)


@pytest.mark.parametrize(
    ("flags", "latency"),
    [
        ("latency=fixed:5", FixedLatency(5)),
        ("latency=uniform:1:20", UniformLatency(1, 20)),
        ("latency=lognormal:3:40", LognormalLatency(3, 40)),
    ],
)
def test_latency_flags(flags: str, latency: object) -> None:
    assert FaultPlan.from_flags(flags).latency_ms == latency


def test_flags_tolerate_spaces_blank_items_and_repeat_bursts() -> None:
    plan = FaultPlan.from_flags(
        " burst=TooManyRequests:0.1 , ,burst=Shutdown:0.2:3,goaway_reason=IdleTimeout,"
    )
    assert plan.bursts == (
        ErrorBurst(Reason.TOO_MANY_REQUESTS, 0.1, 1),
        ErrorBurst(Reason.SHUTDOWN, 0.2, 3),
    )
    assert plan.goaway_reason is Reason.IDLE_TIMEOUT
    assert FaultPlan.from_flags("") == FaultPlan()


def test_example_plan_loads() -> None:
    plan = FaultPlan.from_toml(EXAMPLE)
    assert plan.latency_ms == LognormalLatency(3, 40)
    assert plan.goaway_after_streams == 2000
    assert {b.reason for b in plan.bursts} >= {Reason.SERVICE_UNAVAILABLE, Reason.TOO_MANY_REQUESTS}
    assert plan.limit_swing_values == (1, 1000)
    assert 0 < plan.unregister_probability < plan.reset_probability
    assert FaultPlan.from_dict(plan.to_dict()) == plan


def test_to_dict_round_trips_the_full_plan() -> None:
    plan = FaultPlan.from_flags(FULL_FLAGS)
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    assert FaultPlan.from_dict(FaultPlan().to_dict()) == FaultPlan()
    # The TOML form: lists, reason strings, a tagged latency table, and no nulls.
    assert plan.to_dict() == {**FULL_DICT, "goaway_reason": "Shutdown"}
    assert plan.to_dict()["limit_swing_values"] == [1, 10, 1000]
    assert None not in FaultPlan().to_dict().values()


def test_flags_read_numbers_through_the_same_conversion() -> None:
    plan = FaultPlan.from_flags("drop=1e-3, latency=fixed:2.5, burst=Shutdown:0.25:2, seed=-4")
    assert plan == FaultPlan.from_dict(
        {
            "drop_probability": 0.001,
            "latency_ms": {"kind": "fixed", "ms": 2.5},
            "bursts": [{"reason": "Shutdown", "probability": 0.25, "length": 2}],
            "seed": -4,
        }
    )


_prob = st.floats(0, 1)
_ms = st.floats(0, 1e4)
_latency = st.one_of(
    st.none(),
    st.builds(FixedLatency, _ms),
    st.tuples(_ms, _ms).map(lambda t: UniformLatency(min(t), max(t))),
    st.tuples(st.floats(0.01, 1e3), st.floats(1, 100)).map(
        lambda t: LognormalLatency(t[0], t[0] * t[1])
    ),
)
_burst = st.builds(
    ErrorBurst,
    st.sampled_from(
        [Reason.TOO_MANY_REQUESTS, Reason.INTERNAL_SERVER_ERROR, Reason.SERVICE_UNAVAILABLE]
    ),
    _prob,
    st.integers(1, 100),
)
_plans = st.builds(
    FaultPlan,
    seed=st.integers(-(2**40), 2**40),
    latency_ms=_latency,
    bursts=st.lists(_burst, max_size=3).map(tuple),
    goaway_after_streams=st.none() | st.integers(1, 50),
    drop_probability=_prob,
    reset_probability=_prob,
    limit_swing_probability=_prob,
    limit_swing_values=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4).map(tuple),
    unregister_probability=_prob,
)


@settings(max_examples=150, deadline=None)
@given(plan=_plans, index=st.integers(0, 1000))
def test_any_plan_round_trips_and_keeps_its_invariants(plan: FaultPlan, index: int) -> None:
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    actions = _run(plan, 60, index=index, tokens=7)
    assert actions == _run(plan, 60, index=index, tokens=7)
    for action in actions:
        assert action.latency >= 0
        assert action.drop_connection + action.reset + (action.reject is not None) <= 1
        if action.drop_connection:
            assert action == FaultAction(latency=action.latency, drop_connection=True)
        if action.unregister_token:
            assert action.reject is None and not action.reset


# --- validation --------------------------------------------------------------------------------

DICT_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"seed": "7"}, "seed"),
    ({"seed": True}, "seed"),
    ({"latency_ms": 5}, "latency_ms"),
    ({"latency_ms": {"kind": "gamma", "ms": 1}}, "latency_ms.kind"),
    ({"latency_ms": {"ms": 1}}, "latency_ms.kind"),
    ({"latency_ms": {"kind": "fixed"}}, "latency_ms.ms"),
    ({"latency_ms": {"kind": "fixed", "ms": 1, "sigma": 2}}, "latency_ms"),
    ({"latency_ms": {"kind": "fixed", "ms": -1}}, "latency_ms.ms"),
    ({"latency_ms": {"kind": "fixed", "ms": "5"}}, "latency_ms.ms"),
    ({"latency_ms": {"kind": "fixed", "ms": math.inf}}, "latency_ms.ms"),
    ({"latency_ms": {"kind": "uniform", "low_ms": 5, "high_ms": 1}}, "latency_ms.high_ms"),
    ({"latency_ms": {"kind": "uniform", "low_ms": -5, "high_ms": 1}}, "latency_ms.low_ms"),
    ({"latency_ms": {"kind": "lognormal", "median_ms": 0, "p99_ms": 1}}, "latency_ms.median_ms"),
    ({"latency_ms": {"kind": "lognormal", "median_ms": 3, "p99_ms": 2}}, "latency_ms.p99_ms"),
    ({"bursts": {"reason": "Shutdown"}}, "bursts"),
    ({"bursts": ["Shutdown"]}, "bursts[0]"),
    ({"bursts": [{"reason": "Shutdown", "probability": 0.1, "len": 2}]}, "bursts[0]"),
    ({"bursts": [{"probability": 0.1}]}, "bursts[0].reason"),
    ({"bursts": [{"reason": "Shutdown"}]}, "bursts[0].probability"),
    ({"bursts": [{"reason": "NoSuchReason", "probability": 0.1}]}, "bursts[0].reason"),
    ({"bursts": [{"reason": "BadDeviceToken", "probability": 0.1}]}, "bursts[0].reason"),
    ({"bursts": [{"reason": 503, "probability": 0.1}]}, "bursts[0].reason"),
    ({"bursts": [{"reason": "Shutdown", "probability": 1.5}]}, "bursts[0].probability"),
    ({"bursts": [{"reason": "Shutdown", "probability": 0.1, "length": 0}]}, "bursts[0].length"),
    ({"bursts": [{"reason": "Shutdown", "probability": 0.1, "length": 2.5}]}, "bursts[0].length"),
    ({"goaway_after_streams": 0}, "goaway_after_streams"),
    ({"goaway_after_streams": "10"}, "goaway_after_streams"),
    ({"goaway_reason": "Bye"}, "goaway_reason"),
    ({"drop_probability": -0.1}, "drop_probability"),
    ({"reset_probability": 1.01}, "reset_probability"),
    ({"limit_swing_probability": math.nan}, "limit_swing_probability"),
    ({"unregister_probability": "0.1"}, "unregister_probability"),
    ({"limit_swing_probability": 0.1}, "limit_swing_values"),
    ({"limit_swing_values": [1, 0]}, "limit_swing_values[1]"),
    ({"limit_swing_values": [2**32]}, "limit_swing_values[0]"),
    ({"limit_swing_values": 1000}, "limit_swing_values"),
    ({"limit_swing_values": ["1000"]}, "limit_swing_values[0]"),
]


@pytest.mark.parametrize(("data", "field"), DICT_ERRORS, ids=[f for _, f in DICT_ERRORS])
def test_dict_validation_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(FaultPlanError) as info:
        FaultPlan.from_dict(data)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


ERROR_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"drop_probability": 1.5}, "drop_probability: must be a number in [0, 1], got 1.5"),
    ({"seed": True}, "seed: must be an integer, got True"),
    ({"goaway_after_streams": 0}, "goaway_after_streams: must be an integer >= 1, got 0"),
    (
        {"limit_swing_values": [5, 0]},
        "limit_swing_values[1]: must be an integer in [1, 4294967295], got 0",
    ),
    (
        {"latency_ms": {"kind": "fixed", "ms": math.inf}},
        "latency_ms.ms: must be a finite number >= 0, got inf",
    ),
    (
        {"latency_ms": {"kind": "lognormal", "median_ms": 0, "p99_ms": 1}},
        "latency_ms.median_ms: must be a finite number > 0, got 0",
    ),
    (
        {"latency_ms": {"kind": "gamma"}},
        "latency_ms.kind: must be one of fixed, uniform, lognormal, got 'gamma'",
    ),
    (
        {"latency_ms": [1]},
        "latency_ms: must be a table with kind one of fixed, uniform, lognormal, got [1]",
    ),
    (
        {"latency_ms": {"kind": "uniform", "low_ms": 1, "high_ms": 2, "ms": 3}},
        "latency_ms: unknown key(s) 'ms'; expected some of high_ms, kind, low_ms",
    ),
    ({"bursts": [{"probability": 0.1}]}, "bursts[0].reason: is required"),
    (
        {"bursts": [{"reason": "Nope", "probability": 0.1}]},
        "bursts[0].reason: unknown APNs reason 'Nope'",
    ),
    (
        {"bursts": [{"reason": 503, "probability": 0.1}]},
        "bursts[0].reason: must be a known APNs reason, got 503",
    ),
    (
        {"bursts": [{"reason": "BadTopic", "probability": 0.1}]},
        "bursts[0].reason: BadTopic has status 400; expected one of 429, 500, 503",
    ),
    ({"bursts": "x"}, "bursts: must be a list, got 'x'"),
]


@pytest.mark.parametrize(
    ("data", "message"), ERROR_MESSAGES, ids=[m.partition(":")[0] for _, m in ERROR_MESSAGES]
)
def test_validation_errors_say_what_the_field_must_be(data: dict[str, Any], message: str) -> None:
    with pytest.raises(FaultPlanError) as info:
        FaultPlan.from_dict(data)
    assert str(info.value) == message


def test_flag_errors_use_the_same_words_as_dict_errors() -> None:
    with pytest.raises(FaultPlanError) as info:
        FaultPlan.from_flags("seed=1, drop=1.5")
    assert str(info.value) == "drop: must be a number in [0, 1], got '1.5' (in 'drop=1.5')"


def test_unknown_keys_are_named() -> None:
    with pytest.raises(FaultPlanError, match=r"unknown key\(s\) 'drop', 'latency'"):
        FaultPlan.from_dict({"drop": 0.1, "latency": 3, "seed": 1})


def test_unknown_keys_in_a_toml_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('seed = 1\n[[bursts]]\nreason = "Shutdown"\nprobability = 0.1\nlenght = 3\n')
    with pytest.raises(FaultPlanError, match="lenght") as info:
        FaultPlan.from_toml(path)
    assert info.value.field == "bursts[0]"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("seed = = 1\n")
    with pytest.raises(FaultPlanError, match="not valid TOML") as info:
        FaultPlan.from_toml(path)
    assert info.value.field == str(path)


FLAG_ERRORS: list[tuple[str, str, str]] = [
    ("drop", "drop", "key=value"),
    ("=0.1", "=0.1", "key=value"),
    ("dorp=0.1", "dorp", "unknown fault flag"),
    ("seed=1,seed=2", "seed", "more than once"),
    ("seed=x", "seed", "integer"),
    ("drop=lots", "drop", "number"),
    ("drop=1.5", "drop", "[0, 1]"),
    ("reset=-1", "reset", "[0, 1]"),
    ("unregister=2", "unregister", "[0, 1]"),
    ("latency=gamma:1", "latency", "fixed:MS"),
    ("latency=uniform:1", "latency", "uniform:LOW:HIGH"),
    ("latency=fixed:x", "latency", "number"),
    ("latency=uniform:9:1", "latency", "high_ms"),
    ("burst=Shutdown", "burst", "REASON:PROBABILITY"),
    ("burst=Shutdown:0.1:2:3", "burst", "REASON:PROBABILITY"),
    ("burst=BadTopic:0.1", "burst", "status 400"),
    ("burst=Nope:0.1", "burst", "unknown APNs reason"),
    ("burst=Shutdown:0.1:0", "burst", "length"),
    ("burst=Shutdown:0.1:x", "burst", "integer"),
    ("goaway_after=0", "goaway_after", ">= 1"),
    ("goaway_reason=Bye", "goaway_reason", "unknown APNs reason"),
    ("swing=0.1", "swing", "PROBABILITY:V1/V2"),
    ("swing=0.1:1/x", "swing", "integer"),
    ("swing=0.1:0/10", "swing", "limit_swing_values[0]"),
    ("swing=7:1", "swing", "[0, 1]"),
]


@pytest.mark.parametrize(("flags", "key", "text"), FLAG_ERRORS, ids=[f for f, _, _ in FLAG_ERRORS])
def test_flag_errors_name_the_bad_item(flags: str, key: str, text: str) -> None:
    with pytest.raises(FaultPlanError) as info:
        FaultPlan.from_flags(flags)
    assert info.value.field == key
    assert text in str(info.value)
    bad_item = flags.split(",")[-1]
    assert bad_item in str(info.value)


def test_second_burst_error_points_at_that_burst() -> None:
    with pytest.raises(FaultPlanError, match="'burst=Shutdown:9'"):
        FaultPlan.from_flags("burst=Shutdown:0.5,burst=Shutdown:9")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: FixedLatency(-1), "ms"),
        (lambda: UniformLatency(2, 1), "high_ms"),
        (lambda: LognormalLatency(5, 1), "p99_ms"),
        (lambda: ErrorBurst(Reason.BAD_TOPIC, 0.1), "reason"),
        (lambda: ErrorBurst(Reason.SHUTDOWN, 0.1, length=0), "length"),
        (lambda: FaultPlan(seed=1.5), "seed"),  # type: ignore[arg-type]
        (lambda: FaultPlan(latency_ms=3), "latency_ms"),  # type: ignore[arg-type]
        (lambda: FaultPlan(bursts=("x",)), "bursts[0]"),  # type: ignore[arg-type]
        (lambda: FaultPlan(goaway_reason="Bye"), "goaway_reason"),  # type: ignore[arg-type]
        (lambda: FaultPlan(drop_probability=True), "drop_probability"),
        (lambda: FaultPlan().for_connection(-1), "index"),
    ],
    ids=[
        "fixed",
        "uniform",
        "lognormal",
        "burst-reason",
        "burst-length",
        "seed",
        "latency",
        "bursts",
        "goaway-reason",
        "drop-bool",
        "index",
    ],
)
def test_direct_construction_is_validated(build: Any, field: str) -> None:
    with pytest.raises(FaultPlanError) as info:
        build()
    assert info.value.field == field


def test_replace_and_direct_construction_check_like_from_dict() -> None:
    plan = FaultPlan(seed=3)
    assert msgspec.structs.replace(plan, seed=9) == FaultPlan(seed=9)
    with pytest.raises(FaultPlanError) as info:
        msgspec.structs.replace(plan, drop_probability=2.0)
    assert info.value.field == "drop_probability"
    latency = FixedLatency(5)  # an int is stored as the float the TOML form would give
    assert (
        type(latency.ms) is float and latency == FaultPlan.from_flags("latency=fixed:5").latency_ms
    )


def test_direct_construction_accepts_reason_strings_and_lists() -> None:
    burst = ErrorBurst("ServiceUnavailable", 0.1)  # type: ignore[arg-type]
    assert burst.reason is Reason.SERVICE_UNAVAILABLE
    plan = FaultPlan(limit_swing_values=[1, 2], bursts=[burst])  # type: ignore[arg-type]
    assert plan.limit_swing_values == (1, 2) and plan.bursts == (burst,)
