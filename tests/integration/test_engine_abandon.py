"""`Engine.abandon` against the fake APNs in memory, on trio's MockClock.

Another node delivers the abandoned activity now: its queued and held pushes resolve at once,
its push in flight completes but is never retried, and every other activity carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from engine.apns.reasons import Reason
from engine.delivery.coalescer import ABANDONED
from engine.delivery.dispatch import PushHandle
from engine.delivery.items import HoldReason
from engine.engine import Engine, open_engine
from engine.payload import Alert, EventKind, LiveActivityContent
from engine.results import DeliveryStatus
from simulator.devices import TokenReport
from simulator.faults import FaultPlan
from tests.helpers.simkit import Kit, engine_config, make_kit, memory_connector

# Every answer takes 2 s, so a push stays in flight long enough to abandon its activity meanwhile.
SLOW = "latency=fixed:2000"
# ... and every answer is a 500: without the abandon, each push would be retried.
SLOW_FAILING = SLOW + ",burst=InternalServerError:1"


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@asynccontextmanager
async def running(kit: Kit, max_lanes: int = 1000) -> AsyncIterator[Engine]:
    """An engine on the kit's fake APNs, within an absolute timeout."""
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async with open_engine(
                engine_config(kit, max_attempts=3, max_lanes=max_lanes),
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
            ) as engine:
                yield engine
            nursery.cancel_scope.cancel()


async def start(engine: Engine, kit: Kit, activity: str, device: str) -> PushHandle:
    return await engine.start(
        activity,
        kit.push_to_start_token(device),
        {"step": 0},
        attributes_type="DeployAttributes",
        attributes={"activity_id": activity},
        alert=Alert("Deploy", "started"),
        lane=device,
    )


def pushes_to(kit: Kit, device: str) -> int:
    return sum(1 for record in kit.apns.log if record.device == device)


def abandoned_at_once(handle: PushHandle) -> None:
    result = handle.result_nowait()
    assert result is not None, "an abandoned push must resolve at once"
    assert (result.status, result.detail, result.outcome) == (
        DeliveryStatus.FAILED,
        ABANDONED,
        None,
    )


async def test_queued_pushes_resolve_at_once_the_one_in_flight_completes_others_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags(SLOW))
    reports: list[TokenReport] = []
    kit.apns.token_sinks.append(reports.append)
    async with running(kit) as engine:
        started = [await start(engine, kit, f"deploy-{n}", f"iphone-{n}") for n in (1, 2)]
        for handle in started:
            assert (await handle.result()).status is DeliveryStatus.ACCEPTED
        tokens = {report.device: report.activity_token for report in reports}
        flying = await engine.update("deploy-1", tokens["iphone-1"], {"step": 1}, lane="iphone-1")
        await trio.sleep(0.5)
        assert flying.held is None and not flying.done  # sent, its answer 1.5 s away
        queued = await engine.update("deploy-1", tokens["iphone-1"], {"step": 2}, lane="iphone-1")
        assert queued.held is not None and queued.held.reason is HoldReason.BEHIND
        other = await engine.update("deploy-2", tokens["iphone-2"], {"step": 1}, lane="iphone-2")

        assert engine.abandon("deploy-1") == 1
        abandoned_at_once(queued)
        assert (await flying.result()).status is DeliveryStatus.ACCEPTED
        assert (await other.result()).status is DeliveryStatus.ACCEPTED
        later = await engine.update("deploy-2", tokens["iphone-2"], {"step": 2}, lane="iphone-2")
        assert (await later.result()).status is DeliveryStatus.ACCEPTED
        await engine.drain()
        stats = engine.stats()
        assert (stats["delivery_abandoned"], stats["delivery_lanes"]) == (1.0, 1.0)
        assert not engine.dispatcher.dead_tokens
    assert pushes_to(kit, "iphone-1") == 2  # the start and the update in flight, nothing after
    (mine,) = kit.device("iphone-1")["activities"]
    assert mine["content_state"] == {"step": 1}
    (theirs,) = kit.device("iphone-2")["activities"]
    assert theirs["content_state"] == {"step": 2}


async def test_a_push_in_flight_that_fails_is_settled_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags(SLOW_FAILING))
    async with running(kit) as engine:
        flying = await start(engine, kit, "deploy-1", "iphone-1")
        await trio.sleep(0.5)
        assert flying.held is None and not flying.done
        behind = await engine.update(
            "deploy-1", kit.push_to_start_token("iphone-1"), {"step": 1}, lane="iphone-1"
        )
        assert engine.abandon("deploy-1") == 1
        abandoned_at_once(behind)
        result = await flying.result()
        assert (result.status, result.reason) == (
            DeliveryStatus.FAILED,
            Reason.INTERNAL_SERVER_ERROR,
        )
        assert result.detail.startswith(ABANDONED)
        await trio.sleep(300)  # far past any backoff: a retry would have gone by now
        await engine.drain()
        assert engine.stats()["delivery_abandoned"] == 2.0
        assert engine.stats()["delivery_lanes"] == 0.0
    assert len(kit.apns.log) == 1  # the only push: nothing was retried


async def test_a_push_backing_off_resolves_at_once_and_is_never_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags(SLOW_FAILING))
    async with running(kit) as engine:
        handle = await start(engine, kit, "deploy-1", "iphone-1")
        assert not await handle.answered_unless_held()  # sent, failed, waiting for its retry
        assert handle.held is not None and handle.held.reason is HoldReason.BACKOFF
        drained_at: list[float] = []

        async def drain() -> None:
            await engine.drain()
            drained_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert not drained_at  # the retry is still queued
            abandoned = trio.current_time()
            assert engine.abandon("deploy-1") == 1
            abandoned_at_once(handle)
        assert drained_at == [abandoned]  # a waiting drain returns at once, not at the backoff
        await trio.sleep(300)
    assert len(kit.apns.log) == 1  # the only push: nothing was retried


async def test_taking_the_activity_back_opens_its_lane_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags(SLOW))
    reports: list[TokenReport] = []
    kit.apns.token_sinks.append(reports.append)
    async with running(kit) as engine:
        assert (await (await start(engine, kit, "deploy-1", "iphone-1")).result()).ok
        (report,) = reports
        assert engine.abandon("deploy-1") == 0  # idle: dropped, nothing to settle
        assert engine.stats()["delivery_lanes"] == 0.0
        # Another node sent a newer state meanwhile, stamped one second ahead; owning the
        # activity again, the caller passes the newest timestamp it stored.
        newest = int(kit.now()) + 1
        back = await engine.submit(
            "deploy-1",
            report.activity_token,
            LiveActivityContent(EventKind.UPDATE, {"step": 5}),
            lane="iphone-1",
            min_timestamp=newest,
        )
        assert (await back.result()).status is DeliveryStatus.ACCEPTED
    (activity,) = kit.device("iphone-1")["activities"]
    assert activity["content_state"] == {"step": 5}
    assert activity["last_timestamp"] > newest and activity["order_violations"] == 0


async def test_a_submit_waiting_for_room_gets_the_abandoned_lanes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags(SLOW_FAILING))
    async with running(kit, max_lanes=1) as engine:
        busy = await start(engine, kit, "deploy-1", "iphone-1")
        assert not await busy.answered_unless_held()  # its lane backs off: busy, not evictable
        submitted_at: list[float] = []

        async def submit() -> None:
            await start(engine, kit, "deploy-2", "iphone-2")
            submitted_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await trio.testing.wait_all_tasks_blocked()
            assert not submitted_at  # at capacity
            abandoned = trio.current_time()
            assert engine.abandon("deploy-1") == 1
        assert submitted_at == [abandoned]
