"""Budget-aware priority through the real engine, service and simulator in memory (MockClock).

A stream updated every second for ten minutes on the simulator's default phone profile (a
priority-10 budget of 30 an hour, priority-5 updates shown after 1 s): the engine spends the
budget on the first updates, then sends routine ones at priority 5, so nothing is ever throttled,
every state is shown within `BOUND` seconds of its PUT, the last one included, with no order
violation; the responses warn once the budget runs low, and the end is shown at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import models
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

BOUND = 2.5
"""Seconds from a PUT until its state is shown (the README's figure): the engine's pacing (1 s),
the phone's priority-5 delay (1 s) and the answer's round trip, with room for none of them to
be missed."""

PHONES = ("iphone-1", "iphone-2")
UPDATES = 600  # one a second for ten minutes
POLL = 0.25  # how often the test looks at the phones (mock seconds)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def put(n: int) -> models.StreamRequest:
    state = {"title": "score", "type": "value", "value": n}
    return models.decode(models.StreamRequest, msgspec.json.encode({"content_state": state}))


def shown(h: Harness, name: str, activity_id: str) -> dict[str, Any] | None:
    """The phone's copy of the activity."""
    return h.shown(name, activity_id)


async def test_a_stream_updated_every_second_for_ten_minutes_shows_its_last_state_in_bound(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=len(PHONES))
    key = "score"
    activity_id = ""
    put_at: dict[int, float] = {}
    seen_at: dict[str, dict[int, float]] = {name: {} for name in PHONES}
    warnings: list[str | None] = []
    states: list[set[str]] = []
    lag: dict[str, list[float]] = {}
    done = trio.Event()
    with trio.fail_after(3600):
        async with open_harness(kit, tmp_path / "db") as h:

            async def watch() -> None:
                while not done.is_set():
                    for name in PHONES:
                        act = shown(h, name, activity_id)
                        if act is not None:
                            value = int(act["content_state"]["value"])
                            seen_at[name].setdefault(value, trio.current_time())
                    await trio.sleep(POLL)

            t0 = trio.current_time()
            activity_id = str((await h.service.live.stream(key, put(0))).activity_id)
            put_at[0] = t0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for n in range(1, UPDATES + 1):
                    await trio.sleep_until(t0 + n)
                    put_at[n] = trio.current_time()
                    warnings.append((await h.service.live.stream(key, put(n))).warning)
                    status = h.service.status.activity(activity_id)
                    states.append({d.state for d in status.devices})
                await trio.sleep(BOUND + 2 * POLL)
                done.set()
            for name in PHONES:
                act = shown(h, name, activity_id)
                assert act is not None and act["content_state"]["value"] == UPDATES
                assert act["order_violations"] == 0 and act["throttled"] == 0
                # Every state is shown within the bound, or overtaken by a newer one that is.
                lags = [
                    min(t for v, t in seen_at[name].items() if v >= n) - put_at[n]
                    for n in range(1, UPDATES + 1)
                ]
                lag[name] = lags
                assert max(lags) <= BOUND, (name, max(lags))
                assert lags[-1] <= BOUND
                priorities = [e["priority"] for e in act["events"] if e["priority"] is not None]
                assert set(priorities[-100:]) == {5}  # routine updates moved to 5 once low
            # The first updates go at 10 and carry no warning; once low, the answers warn, but
            # for the one refilled push every 120 s that goes at 10 again.
            first = next(n for n, w in enumerate(warnings) if w is not None)
            assert warnings[:first] == [None] * first and 15 <= first <= 25
            assert warnings[-1] is not None and "budget low" in warnings[-1]
            assert warnings[first:].count(None) <= (UPDATES - first) // 120 + 1
            # The status agrees with each answer: throttled while the answer warns, else live.
            disagree = [
                (n, w, s)
                for n, (w, s) in enumerate(zip(warnings, states, strict=True))
                if (w is None) != (s == {"live"}) or (w is not None) != (s == {"throttled"})
            ]
            assert not disagree, disagree[:5]
            ended_at = kit.now()
            await h.service.live.end_stream(key, None)
            await trio.sleep(BOUND)
            for name in PHONES:
                act = shown(h, name, activity_id)
                assert act is not None and act["state"] == "ended"
                assert act["content_state"]["value"] == UPDATES
                assert act["ended_at"] - ended_at <= BOUND
            end_states = {d.state for d in h.service.status.activity(activity_id).devices}
            assert end_states == {"ended"}  # an ended activity is never called throttled


async def test_alerts_keep_priority_10_past_the_budget_and_the_answers_say_so(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(3600):
        async with open_harness(kit, tmp_path / "db") as h:
            start = {"content_state": {"title": "goal", "type": "value", "value": 0}}
            started = await h.service.live.start(
                models.decode(models.StartRequest, msgspec.json.encode(start))
            )
            activity_id = str(started.activity_id)
            answers: list[str | None] = []
            for n in range(1, 36):
                await trio.sleep(2)
                body = {
                    "activity_id": activity_id,
                    "content_state": {"title": "goal", "value": n},
                    "alert": {"title": "Goal", "body": f"{n} goals"},
                }
                req = models.decode(models.UpdateRequest, msgspec.json.encode(body))
                answers.append((await h.service.live.update(req)).warning)
            # The start, its first state and about 18 alerts leave the reserve of 10; from then
            # on every answer warns (each alert spends more than the refill brings back).
            first = next(n for n, w in enumerate(answers) if w is not None)
            assert 15 <= first <= 20 and None not in answers[first:]
            assert "budget low" in str(answers[first])
            assert answers[-1] is not None and "budget spent on 1 device" in answers[-1]
            await trio.sleep(5)
            act = h.shown("iphone-1", activity_id)
            assert act is not None and act["order_violations"] == 0
            priorities = [e["priority"] for e in act["events"] if e["priority"] is not None]
            assert set(priorities) == {10}  # alerts are never demoted
            assert act["throttled"] > 0  # and iOS holds them past its budget, as warned
