"""A step-by-step harness for `engine.delivery.coalescer.Coalescer`: explicit monotonic (`now`)
and wall (`wall`) times; wall times are realistic unix seconds because bodies need 10-digit
timestamps."""

from __future__ import annotations

import random
from typing import Any

from engine.apns.reasons import Outcome
from engine.delivery.coalescer import Coalescer
from engine.delivery.items import Dispatch, Item, LaneKey, Settled
from engine.payload import Alert, EventKind, LiveActivityContent, PreparedPayload, prepare
from engine.results import DeliveryStatus

W0 = 1_800_000_000  # wall clock at monotonic 0
LANE: LaneKey = ("act-1", "device-1")
OTHER: LaneKey = ("act-2", "device-1")


class ZeroRandom(random.Random):
    """Jitter factor exactly 1: backoffs are the bare exponential."""

    def random(self) -> float:
        return 0.0


def payload(kind: EventKind, n: int) -> PreparedPayload:
    """A prepared payload of `kind` whose content state is `{"n": n}`."""
    if kind is EventKind.START:
        return prepare(
            LiveActivityContent(
                kind,
                {"n": n},
                alert=Alert("Kick-off", "A vs B"),
                attributes_type="Match",
                attributes={"id": "m"},
            )
        )
    return prepare(LiveActivityContent(kind, {"n": n}))


class Harness:
    """A coalescer plus two clocks moving together (wall = W0 + now + skew)."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("rng", ZeroRandom())
        self.co = Coalescer(**config)
        self.now = 0.0
        self.skew = 0.0
        self.seq = 0

    @property
    def wall(self) -> float:
        """The wall clock: it moves with `now`, plus `skew`."""
        return W0 + self.now + self.skew

    def item(self, kind: EventKind, n: int = 0, token: str = "tok-A") -> Item:
        """A new item (the next `seq`; its waiter is `f"w{seq}"`)."""
        self.seq += 1
        return Item.build(payload(kind, n), token, self.seq, waiter=f"w{self.seq}")

    def offer(
        self, kind: EventKind, n: int = 0, *, lane: LaneKey = LANE, token: str = "tok-A", **kw: Any
    ) -> tuple[Item, list[Settled]]:
        """Offer a new item on `lane` now; returns it and what it superseded."""
        item = self.item(kind, n, token)
        return item, self.co.offer(lane, item, now=self.now, **kw)

    def take(self, limit: int = 100) -> list[Dispatch]:
        """What is ready now."""
        return self.co.take_ready(now=self.now, wall_now=self.wall, limit=limit)

    def take_one(self) -> Dispatch:
        """The one dispatch ready now (asserts there is exactly one)."""
        got = self.take()
        assert len(got) == 1, got
        return got[0]

    def complete(self, d: Dispatch, outcome: Outcome, **kw: Any) -> list[Settled]:
        """Complete `d` now with `outcome`."""
        return self.co.complete(d, outcome, now=self.now, **kw)

    def at(self, t: float) -> Harness:
        """Move both clocks to monotonic time `t`."""
        self.now = t
        return self


def statuses(settled: list[Settled]) -> list[tuple[int, DeliveryStatus]]:
    """`(seq, status)` of each settlement, in order."""
    return [(s.item.seq, s.status) for s in settled]


START, UPDATE, END = EventKind.START, EventKind.UPDATE, EventKind.END
