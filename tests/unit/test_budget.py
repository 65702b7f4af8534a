"""The priority-10 budget: which priority each push goes with, the refill, the bound on memory,
and the coalescer stamping the pick on its dispatches (plain monotonic times, no clock)."""

from __future__ import annotations

import pytest

from engine.apns.reasons import Outcome
from engine.config import ConfigError, DeliveryConfig
from engine.delivery.budget import HOUR, PriorityBudget
from engine.delivery.coalescer import Coalescer
from engine.delivery.items import Item, LaneKey
from engine.payload import Alert, EventKind, LiveActivityContent, prepare

LANE: LaneKey = ("act-1", "device-1")
DEVICE = "device-1"
OTHER = "device-2"
W0 = 1_800_000_000


def test_routine_pushes_spend_down_to_the_reserve_then_go_at_5() -> None:
    budget = PriorityBudget(30, 10)
    picks = [budget.pick(DEVICE, 5, routine=True, now=float(n)) for n in range(25)]
    # The refill over 25 s is 25/120 of a push: 20 go at 10, leaving the reserve of 10.
    assert picks == [10] * 20 + [5] * 5
    state = budget.state(DEVICE, 25.0)
    assert (state.left, state.low, state.spent) == (10, True, False)
    assert budget.state(OTHER, 25.0).low is False  # each lane has its own budget


def test_important_pushes_go_at_their_own_priority_and_count_past_the_budget() -> None:
    budget = PriorityBudget(3, 1)
    assert [budget.pick(DEVICE, 10, routine=False, now=0.0) for _ in range(5)] == [10] * 5
    assert budget.state(DEVICE, 0.0).spent
    assert budget.pick(DEVICE, 5, routine=False, now=0.0) == 5  # an explicit 5 is not counted
    assert budget.pick(DEVICE, 5, routine=True, now=0.0) == 5
    # Past the budget the level stays at zero: one push is back after one interval (1200 s).
    assert budget.state(DEVICE, 1199.0).left == 0
    assert budget.state(DEVICE, 1200.0).left == 1
    assert budget.state(DEVICE, 1000.0).left == 1  # an earlier time counts as the last one


def test_a_quiet_hour_refills_the_whole_budget() -> None:
    budget = PriorityBudget(30, 0)
    for _ in range(30):
        assert budget.pick(DEVICE, 5, routine=True, now=0.0) == 10
    assert budget.pick(DEVICE, 5, routine=True, now=0.0) == 5
    assert budget.state(DEVICE, HOUR).left == 30


def test_a_reserve_equal_to_the_budget_keeps_routine_updates_at_5() -> None:
    budget = PriorityBudget(5, 5)
    assert budget.pick(DEVICE, 5, routine=True, now=0.0) == 5
    assert len(budget) == 0  # nothing spent, nothing remembered


def test_memory_is_bounded_least_recently_used_first() -> None:
    budget = PriorityBudget(2, 0, max_devices=2)
    lanes = ["a", "b", "c"]
    for lane in lanes[:2]:
        budget.pick(lane, 10, routine=False, now=0.0)
    budget.pick(lanes[0], 10, routine=False, now=0.0)  # "a" is now the most recently used
    budget.pick(lanes[2], 10, routine=False, now=0.0)
    assert len(budget) == 2
    assert budget.state(lanes[1], 0.0).left == 2  # forgotten: a full budget again
    assert budget.state(lanes[0], 0.0).spent


@pytest.mark.parametrize(
    ("hourly", "reserve", "max_lanes", "match"),
    [(0, 0, 1, "hourly"), (3, 4, 1, "reserve"), (3, -1, 1, "reserve"), (3, 1, 0, "max_devices")],
)
def test_bad_numbers_are_refused(hourly: int, reserve: int, max_lanes: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PriorityBudget(hourly, reserve, max_devices=max_lanes)


def test_delivery_config_checks_the_budget_knobs() -> None:
    assert DeliveryConfig(hourly_budget=0, budget_reserve=0).hourly_budget == 0
    with pytest.raises(ConfigError, match=r"delivery\.hourly_budget"):
        DeliveryConfig(hourly_budget=-1, budget_reserve=0)
    with pytest.raises(ConfigError, match=r"delivery\.budget_reserve"):
        DeliveryConfig(hourly_budget=30, budget_reserve=31)


def test_only_silent_updates_left_to_the_engine_are_routine() -> None:
    silent = prepare(LiveActivityContent(EventKind.UPDATE, {"n": 1}))
    alert = prepare(LiveActivityContent(EventKind.UPDATE, {"n": 1}, alert=Alert("t", "b")))
    assert Item.build(silent, "t", 1).routine
    assert not Item.build(silent, "t", 1, priority=5).routine
    assert not Item.build(alert, "t", 1).routine
    assert not Item.build(prepare(LiveActivityContent(EventKind.END, {"n": 1})), "t", 1).routine


def test_the_coalescer_sends_with_the_budgets_pick() -> None:
    co = Coalescer(budget=PriorityBudget(2, 1))
    assert co.budget(LANE, now=0.0) is not None
    update = prepare(LiveActivityContent(EventKind.UPDATE, {"n": 1}))
    end = prepare(LiveActivityContent(EventKind.END, {"n": 2}))
    sent = []
    for n, payload in enumerate([update, update, end]):
        co.offer(LANE, Item.build(payload, "tok", n), now=float(n))
        (dispatch,) = co.take_ready(now=float(n), wall_now=W0 + n, limit=1)
        co.complete(dispatch, Outcome.ACCEPTED, now=float(n))
        sent.append((dispatch.item.priority, dispatch.priority))
    # One routine update at 10 (down to the reserve), the next at 5, the end at 10 regardless.
    assert sent == [(5, 10), (5, 5), (10, 10)]
    state = co.budget(LANE, now=2.0)
    assert state is not None and state.spent
    # The budget is the device's, shared by its activities.
    other = co.budget(("act-2", LANE[1]), now=2.0)
    assert other is not None and other.spent


def test_without_a_budget_every_push_goes_at_its_own_priority() -> None:
    co = Coalescer()
    assert co.budget(LANE, now=0.0) is None
    co.offer(LANE, Item.build(prepare(LiveActivityContent(EventKind.UPDATE, {})), "t", 1), now=0)
    (dispatch,) = co.take_ready(now=0.0, wall_now=W0, limit=1)
    assert dispatch.priority == 5


def test_a_divided_budget_is_a_share_of_cap_reserve_and_refill() -> None:
    budget = PriorityBudget(30, 3)
    budget.divide(3)  # three nodes push to the same phones
    spent = [budget.pick("d", 10, routine=True, now=0.0) for _ in range(12)]
    # 10 in the bucket, 1 kept in reserve: 9 routine pushes at 10, then 5.
    assert spent.count(10) == 9 and spent[9:] == [5, 5, 5]
    assert budget.state("d", 0.0).left == 1
    assert budget.state("d", 360.0).left == 2  # refills at a third of the rate: one per 6 min
    budget.divide(1)
    assert budget.state("d", 360.0).left == 2  # the level carries over; the cap is whole again
    assert budget.state("d", 360.0 + 120.0 * 28).left == 30
    budget.divide(2)
    assert budget.state("d", 360.0 + 120.0 * 28).left == 15  # cut to the new cap
    with pytest.raises(ValueError, match="parts"):
        budget.divide(0)
