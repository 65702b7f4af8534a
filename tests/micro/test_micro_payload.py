"""Micro-benchmarks for the per-push hot path: payload preparation, rendering, token reuse.

Measured with `make bench-micro` (`--benchmark-enable`); under `make test` each body runs once as
an ordinary test, so the assertions below keep them honest.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pytest_benchmark.fixture import BenchmarkFixture

from engine.apns.auth import SigningKey
from engine.apns.tokens import TokenSource
from engine.payload import EventKind, LiveActivityContent, prepare

TS = 1_700_000_000

# A realistic sports-score content state of about 300 bytes once encoded.
STATE: dict[str, Any] = {
    "homeTeam": "Northfield Rovers",
    "awayTeam": "Southbank United",
    "homeScore": 2,
    "awayScore": 1,
    "period": "2nd half",
    "clock": "67:12",
    "lastEvent": {"kind": "goal", "player": "A. Example", "minute": 66},
    "possession": [54.5, 45.5],
    "shots": {"home": 11, "away": 7},
    "cards": [{"team": "away", "color": "yellow", "minute": 41}],
    "live": True,
}
UPDATE = LiveActivityContent(
    EventKind.UPDATE, STATE, stale_date=TS + 900, relevance_score=75.0, extra={"matchId": "m-42"}
)


def test_state_is_about_300_bytes() -> None:
    assert 280 <= len(msgspec.json.encode(STATE)) <= 320


def test_prepare_update(benchmark: BenchmarkFixture) -> None:
    prepared = benchmark(prepare, UPDATE)
    assert prepared.event is EventKind.UPDATE
    assert prepared.priority == 5


def test_build_and_prepare_update(benchmark: BenchmarkFixture) -> None:
    # Construction validates the content state (JSON-ability walk), so this is the full API cost.
    def build() -> int:
        content = LiveActivityContent(
            EventKind.UPDATE, STATE, stale_date=TS + 900, relevance_score=75.0
        )
        return prepare(content).size

    assert benchmark(build) > 250


def test_render(benchmark: BenchmarkFixture) -> None:
    prepared = prepare(UPDATE)
    body = benchmark(prepared.render, TS)
    assert len(body) == prepared.size


def test_token_current_reuse(benchmark: BenchmarkFixture) -> None:
    now = [float(TS)]
    source = TokenSource(SigningKey.generate("ABC123DEFG", "TEAM123456"), wall_clock=lambda: now[0])
    first = source.current()
    assert benchmark(source.current) is first
    assert source.generation == 1
