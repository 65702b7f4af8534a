"""`PushHandle` on MockClock: a result, a hold, and a wait that ends as soon as the push is held."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.delivery.dispatch import PushHandle
from engine.delivery.items import Hold, HoldReason
from engine.results import DeliveryResult, DeliveryStatus

TOKEN = "ab" * 32
ACCEPTED = DeliveryResult(DeliveryStatus.ACCEPTED, TOKEN, apns_id="id-1", http_status=200)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.mark.parametrize("until", [0.01, 1.0])
async def test_a_held_push_is_not_waited_for(
    autojump_clock: trio.testing.MockClock, until: float
) -> None:
    handle = PushHandle(TOKEN, trio.current_time())
    t0 = trio.current_time()
    handle.held = Hold(HoldReason.PACED, t0 + until)
    assert await handle.answered_unless_held() is False
    assert trio.current_time() == t0


async def test_a_push_going_out_now_is_waited_for_until_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle = PushHandle(TOKEN, trio.current_time())
    t0 = trio.current_time()

    async def answer() -> None:
        await trio.sleep(0.01)
        handle.hold(None)  # no change: nobody is woken for nothing
        await trio.sleep(0.05)
        handle.settle(ACCEPTED)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        assert await handle.answered_unless_held() is True
    assert trio.current_time() == pytest.approx(t0 + 0.06)
    assert await handle.answered_unless_held() is True  # known: at once
    assert handle.held is None


async def test_a_wait_ends_when_the_push_becomes_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle = PushHandle(TOKEN, trio.current_time())
    t0 = trio.current_time()

    async def fail_and_back_off() -> None:
        await trio.sleep(0.02)  # APNs answered 500: the lane backs off for a second
        handle.hold(Hold(HoldReason.BACKOFF, trio.current_time() + 1.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail_and_back_off)
        assert await handle.answered_unless_held() is False
    assert trio.current_time() == pytest.approx(t0 + 0.02)
    handle.settle(ACCEPTED)
    handle.hold(Hold(HoldReason.PACED, t0 + 9))  # a settled push is never held
    assert handle.held is None
    assert await handle.result() is ACCEPTED


async def test_result_waits_through_holds(autojump_clock: trio.testing.MockClock) -> None:
    handle = PushHandle(TOKEN, trio.current_time())

    async def later() -> None:
        await trio.sleep(0.5)
        handle.hold(Hold(HoldReason.BEHIND, trio.current_time() + 1.0))
        await trio.sleep(1.0)
        handle.settle(ACCEPTED)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert await handle.result() is ACCEPTED
    assert trio.current_time() == pytest.approx(1.5)
