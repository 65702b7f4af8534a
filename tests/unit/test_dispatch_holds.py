"""Holds follow the pushes through the dispatcher: cleared when a push is sent, renewed for what
is still pending on its lane when a push completes (a failure backs the lane off)."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest
import trio
import trio.testing

from engine.apns.connection import NoAnswer, OnDone
from engine.apns.pool import ApnsPool
from engine.apns.protocol import PushRequest
from engine.delivery.coalescer import Coalescer
from engine.delivery.dispatch import Dispatcher, PushHandle
from engine.delivery.items import HoldReason, Item, LaneKey
from engine.metrics import EngineListener
from engine.payload import EventKind, LiveActivityContent, prepare
from engine.results import DeliveryStatus

W0 = 1_800_000_000.0
LANE: LaneKey = ("act-1", "iphone-1")
TOKEN = "ab" * 32


class HeldPool:
    """A pool that takes every push and keeps its callback, so the test answers it."""

    free_slots = 10

    def __init__(self) -> None:
        self.sent: list[OnDone] = []

    def try_send(self, request: PushRequest, on_done: OnDone) -> bool:
        self.sent.append(on_done)
        return True


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def offer(dispatcher: Dispatcher, n: int) -> PushHandle:
    """Submit an update as the engine does: offer it, then set its handle's hold."""
    handle = PushHandle(TOKEN, trio.current_time())
    payload = prepare(LiveActivityContent(EventKind.UPDATE, {"n": n}))
    item = Item.build(payload, TOKEN, n, waiter=handle)
    now, wall = trio.current_time(), W0 + trio.current_time()
    dispatcher.settle_all(dispatcher.coalescer.offer(LANE, item, now=now))
    handle.held = dispatcher.coalescer.hold(LANE, now=now, wall_now=wall, item=item)
    dispatcher.wake()
    return handle


async def test_a_failed_push_backs_its_lane_off_and_holds_the_next(
    autojump_clock: Any,
) -> None:
    pool = HeldPool()
    coalescer = Coalescer(rng=random.Random(3))
    dispatcher = Dispatcher(
        coalescer,
        cast(ApnsPool, pool),
        topic="t",
        wall_clock=lambda: W0 + trio.current_time(),
        listener=EngineListener(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        first = offer(dispatcher, 1)
        assert first.held is None  # a fresh lane sends at once
        await trio.testing.wait_all_tasks_blocked()
        assert len(pool.sent) == 1 and first.held is None
        second = offer(dispatcher, 2)
        assert second.held is not None and second.held.reason is HoldReason.BEHIND
        assert second.held.until == pytest.approx(1.0)  # one interval after the first went out
        t0 = trio.current_time()
        pool.sent[0](NoAnswer("connection lost"))  # unknown outcome: a counted failure
        assert (await first.result()).status is DeliveryStatus.SUPERSEDED  # the newer carries on
        held = second.held
        assert held is not None and held.reason is HoldReason.BACKOFF
        assert held.until >= t0 + 0.5  # the first backoff, jittered within (0.5, 1] s
        assert held.until >= 1.0
        await trio.sleep_until(held.until)
        await trio.testing.wait_all_tasks_blocked()
        assert len(pool.sent) == 2 and second.held is None  # sent once the backoff ran out
        nursery.cancel_scope.cancel()
