"""No call waits for a push it already knows is held (engine, service and simulator on MockClock).

A call waits up to `notify_wait` for APNs answers; when the engine already holds every push of
the call (its lane's pacing, a push of the lane in flight), the call is answered at once with
those devices in `devices_queued`, and the status says why each waits. A call whose pushes go out
now waits as before. The last state reaches every device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import models
from engine.server.service import LiveConfig
from simulator.faults import FaultPlan
from simulator.faults.parts import FixedLatency
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

WINDOW = 0.5  # notify_wait of these tests (mock seconds)
PHONES = ("iphone-1", "iphone-2")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def put(n: int) -> models.StreamRequest:
    state = {"title": "score", "type": "value", "value": n}
    return models.decode(models.StreamRequest, msgspec.json.encode({"content_state": state}))


def shown_value(h: Harness, name: str, activity_id: str) -> Any:
    act = h.shown(name, activity_id)
    return None if act is None else act["content_state"]["value"]


def held_of(h: Harness, activity_id: str) -> list[tuple[str, str | None, bool]]:
    return [(d.state, d.held, d.current) for d in h.service.status.activity(activity_id).devices]


async def timed(h: Harness, n: int) -> tuple[models.StreamPutResponse, float]:
    t0 = trio.current_time()
    reply = await h.service.live.stream("score", put(n))
    return reply, trio.current_time() - t0


async def test_a_call_whose_pushes_are_all_paced_returns_without_waiting_the_window(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=len(PHONES))
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", live=LiveConfig(notify_wait=WINDOW)) as h:
            activity_id = str((await h.service.live.stream("score", put(0))).activity_id)
            await trio.sleep(5)  # both phones report their update tokens
            assert held_of(h, activity_id) == [("live", None, True)] * 2
            # Ready lanes: the pushes go out now and the call waits for their answers.
            first, _ = await timed(h, 1)
            assert (first.devices_notified, first.devices_queued) == (2, 0)
            # Same instant: both lanes sent less than a second ago, so both pushes are held.
            second, elapsed = await timed(h, 2)
            assert elapsed < 0.01  # the durable write only, not the window
            assert (second.devices_notified, second.devices_queued) == (0, 2)
            assert second.errors is None
            assert held_of(h, activity_id) == [("live", "paced", False)] * 2
            # Twenty calls a second for three seconds: each answered at once, latest wins (a
            # push that goes out now is answered at once here: the fake APNs is in memory).
            for n in range(3, 63):
                await trio.sleep(0.05)
                reply, elapsed = await timed(h, n)
                assert elapsed < 0.01, (n, elapsed)  # a few ms (the write), never the window
                assert (reply.devices_notified or 0) + (reply.devices_queued or 0) == 2
            await trio.sleep(2.0)  # one pacing interval and the answers
            assert [shown_value(h, name, activity_id) for name in PHONES] == [62, 62]
            assert held_of(h, activity_id) == [("live", None, True)] * 2
            for name in PHONES:
                phone = h.shown(name, activity_id)
                assert phone is not None and phone["order_violations"] == 0


async def test_a_call_behind_a_push_in_flight_returns_at_once_and_one_going_out_waits(
    autojump_clock: Any, tmp_path: Path
) -> None:
    # Every APNs answer takes longer than the window.
    kit = make_kit(devices=1, plan=FaultPlan(latency_ms=FixedLatency(800)))
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", live=LiveConfig(notify_wait=WINDOW)) as h:
            activity_id = str((await h.service.live.stream("score", put(0))).activity_id)
            await trio.sleep(5)
            # The push goes out now: its answer could come in time, so the call waits it out.
            first, elapsed = await timed(h, 1)
            assert elapsed == pytest.approx(WINDOW, abs=0.01)
            assert (first.devices_notified, first.devices_queued) == (0, 1)
            assert held_of(h, activity_id) == [("live", None, False)]  # in flight, not held
            # The next state is behind the push in flight: answered at once.
            second, elapsed = await timed(h, 2)
            assert elapsed < 0.01
            assert (second.devices_notified, second.devices_queued) == (0, 1)
            assert held_of(h, activity_id) == [("live", "behind", False)]
            await trio.sleep(3.0)
            assert shown_value(h, "iphone-1", activity_id) == 2
            assert held_of(h, activity_id) == [("live", None, True)]


async def test_a_call_waiting_for_update_tokens_says_so_per_device(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(
            kit, tmp_path / "db", forward_reports=False, live=LiveConfig(notify_wait=WINDOW)
        ) as h:
            started, elapsed = await timed(h, 0)
            assert started.devices_notified == 1
            activity_id = str(started.activity_id)
            await trio.sleep(1)
            assert held_of(h, activity_id) == [("awaiting_token", None, True)]
            update, elapsed = await timed(h, 1)
            assert elapsed < 0.01 and (update.devices_notified, update.devices_queued) == (0, 1)
            assert held_of(h, activity_id) == [("awaiting_token", "awaiting_token", False)]
