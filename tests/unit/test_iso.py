"""`responses.iso` reuses the last millisecond's text: always the same text `datetime` spells."""

from __future__ import annotations

import datetime as dt
import random

from engine.server.contract.responses import iso


def spelled(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def test_iso_matches_datetime_next_to_and_far_from_millisecond_edges() -> None:
    rng = random.Random(7)
    edges = (0.0, 1e-7, -1e-7, 4.9e-7, 5e-7, 5.1e-7, 9.9949e-4, 9.995e-4, 9.9951e-4)
    for i in range(20000):
        base = 1.7e9 + rng.randrange(3000) / 1000
        ts = base + rng.random() * 0.003 if i % 2 else base + rng.choice(edges)
        assert iso(ts) == spelled(ts), ts
    assert iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso(-0.0005) == spelled(-0.0005)
