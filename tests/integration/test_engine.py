"""The real engine against the fake APNs in memory, on trio's MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.apns.reasons import Outcome, Reason
from engine.engine import open_engine
from engine.metrics import EngineListener
from engine.payload import Alert
from engine.results import DeliveryStatus
from simulator.devices import TokenReport
from tests.helpers.simkit import engine_config, make_kit, memory_connector


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_start_updates_end_reach_the_device_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    reports: list[TokenReport] = []
    kit.apns.token_sinks.append(reports.append)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            config = engine_config(kit)
            async with open_engine(
                config,
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
            ) as engine:
                started = await engine.start(
                    "deploy-1",
                    kit.push_to_start_token("iphone-1"),
                    {"step": 0},
                    attributes_type="DeployAttributes",
                    attributes={"activity_id": "deploy-1"},
                    alert=Alert("Deploy", "started"),
                    lane="iphone-1",
                )
                result = await started.result()
                assert result.status is DeliveryStatus.ACCEPTED and result.apns_id
                (report,) = reports
                handles = [
                    await engine.update(
                        "deploy-1", report.activity_token, {"step": n}, lane="iphone-1"
                    )
                    for n in range(1, 21)
                ]
                end = await engine.end(
                    "deploy-1", report.activity_token, {"step": 99}, lane="iphone-1"
                )
                assert (await end.result()).status is DeliveryStatus.ACCEPTED
                statuses = [h.result_nowait() for h in handles]
                assert all(s is not None and s.ok for s in statuses)
            device = kit.device("iphone-1")
            (activity,) = device["activities"]
            assert activity["content_state"] == {"step": 99}
            assert activity["state"] in ("ended", "dismissed")
            assert activity["order_violations"] == 0
            # 20 rapid updates were coalesced: far fewer pushes than submissions.
            assert len(kit.apns.log) < 10
            nursery.cancel_scope.cancel()


async def test_a_waiting_submit_gets_the_room_of_a_lane_gone_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At max_lanes, `submit` waits; an idle lane becomes evictable with no event marking it."""
    kit = make_kit()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async with open_engine(
                engine_config(kit, max_lanes=1),
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
            ) as engine:
                first = await engine.start(
                    "a-1",
                    kit.push_to_start_token("iphone-1"),
                    {"n": 1},
                    attributes_type="T",
                    attributes={"activity_id": "a-1"},
                    alert=Alert("A", "started"),
                    lane="iphone-1",
                )
                assert (await first.result()).status is DeliveryStatus.ACCEPTED
                began = trio.current_time()
                second = await engine.start(
                    "a-2",
                    kit.push_to_start_token("iphone-2"),
                    {"n": 2},
                    attributes_type="T",
                    attributes={"activity_id": "a-2"},
                    alert=Alert("B", "started"),
                    lane="iphone-2",
                )
                assert (await second.result()).status is DeliveryStatus.ACCEPTED
                assert trio.current_time() - began < 10  # not stuck until some other event
            nursery.cancel_scope.cancel()


class _Connections(EngineListener):
    """Counts the pool's connection events the engine passes to its listener."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    def connection_opened(self) -> None:
        self.opened += 1

    def connection_closed(self, reason: str | None) -> None:
        self.closed += 1


async def test_the_engines_listener_hears_the_pools_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    listener = _Connections()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async with open_engine(
                engine_config(kit),
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
                listener=listener,
            ) as engine:
                handle = await engine.start(
                    "a-1",
                    kit.push_to_start_token("iphone-1"),
                    {"step": 0},
                    attributes_type="T",
                    attributes={"activity_id": "a-1"},
                    alert=Alert("A", "go"),
                    lane="iphone-1",
                )
                assert (await handle.result()).status is DeliveryStatus.ACCEPTED
                assert listener.opened == 1
            nursery.cancel_scope.cancel()
    assert listener.closed == 1  # the engine closed its connection on the way out


async def test_a_token_known_dead_is_refused_locally_in_the_same_words(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """APNs kills a token once; every later push to it is refused without a request, with the
    same dead-token outcome and reason, so a caller needs one rule for both."""
    kit = make_kit()
    unknown = "0d" * 32  # no simulated iPhone holds it: BadDeviceToken (apns.md §3)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async with open_engine(
                engine_config(kit),
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
            ) as engine:
                results = []
                for n in range(2):
                    handle = await engine.start(
                        f"a-{n}",
                        unknown,
                        {"n": n},
                        attributes_type="T",
                        attributes={"activity_id": f"a-{n}"},
                        alert=Alert("A", "go"),
                        lane="iphone-9",
                    )
                    results.append(await handle.result())
                sent = len(kit.apns.log)
            nursery.cancel_scope.cancel()
    answered, refused = results
    assert answered.http_status == 400 and refused.http_status is None  # no second request
    assert sent == 1
    for result in results:
        assert result.status is DeliveryStatus.REJECTED
        assert result.reason is Reason.BAD_DEVICE_TOKEN
        assert result.outcome is Outcome.DROP_TOKEN
