"""Micro-benchmark of the coalescer's per-push cycle: offer, take_ready, complete on 10k lanes.

Measured with `make bench-micro` (`--benchmark-enable`); under `make test` each body runs once as
an ordinary test, so the assertions below keep it honest. One round is 10,000 pushes.
"""

from __future__ import annotations

import random

from pytest_benchmark.fixture import BenchmarkFixture

from engine.apns.reasons import Outcome
from engine.delivery.coalescer import Coalescer
from engine.delivery.items import Item, LaneKey
from engine.payload import EventKind, LiveActivityContent, prepare

LANES = 10_000
W0 = 1_800_000_000
PAYLOAD = prepare(LiveActivityContent(EventKind.UPDATE, {"homeScore": 2, "awayScore": 1}))


def test_offer_take_complete_10k_lanes(benchmark: BenchmarkFixture) -> None:
    co = Coalescer(rng=random.Random(0))
    lanes: list[LaneKey] = [(f"act-{i}", f"device-{i}") for i in range(LANES)]
    tokens = [f"{i:064x}" for i in range(LANES)]
    clock = [0.0]
    seq = [0]

    def cycle() -> int:
        now = clock[0]
        base = seq[0]
        for i, lane in enumerate(lanes):
            co.offer(lane, Item(EventKind.UPDATE, tokens[i], PAYLOAD, 5, None, base + i), now=now)
        seq[0] = base + LANES
        sent = co.take_ready(now=now, wall_now=W0 + now, limit=LANES)
        for dispatch in sent:
            co.complete(dispatch, Outcome.ACCEPTED, now=now)
        clock[0] = now + 1.0  # one pacing interval: every lane is ready again next round
        return len(sent)

    assert benchmark(cycle) == LANES
    stats = co.stats
    assert (stats.lanes, stats.pending, stats.in_flight) == (LANES, 0, 0)
    assert stats.accepted == stats.dispatched == stats.offered


ACTIVITIES = 100_000


def test_abandon_10k_of_100k_activities(benchmark: BenchmarkFixture) -> None:
    """A partition move: one activity in ten goes to another node, each with an update queued.

    One round abandons 10,000 activities out of 100,000 (one lane each), every one with a push
    pending, so the cost is what they hold, not a scan of every lane per activity.
    """
    lanes: list[LaneKey] = [(f"act-{i}", f"device-{i}") for i in range(ACTIVITIES)]
    gone = [lane[0] for lane in lanes[::10]]

    def setup() -> tuple[tuple[Coalescer], dict[str, object]]:
        co = Coalescer(rng=random.Random(0), max_lanes=ACTIVITIES)
        for i, lane in enumerate(lanes):
            co.offer(lane, Item(EventKind.UPDATE, f"{i:064x}", PAYLOAD, 5, None, i), now=0.0)
        return (co,), {}

    def run(co: Coalescer) -> int:
        settled = sum(len(co.abandon(activity)) for activity in gone)
        assert co.stats.lanes == ACTIVITIES - len(gone)
        return settled

    # `pedantic` (a fresh coalescer per round, built outside the timing) has no type hints.
    settled = benchmark.pedantic(run, setup=setup, rounds=5)  # type: ignore[no-untyped-call]
    assert settled == len(gone)
