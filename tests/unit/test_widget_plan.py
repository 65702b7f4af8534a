"""The widget reload plan (pure): coalescing, pacing, the daily budget, and APNs' answers."""

from __future__ import annotations

import itertools
import random

import pytest

from engine.apns.reasons import Outcome, Reason
from engine.apppush import AppPushResult, app_topic
from engine.server.service.widgets import DAY, WidgetConfig, WidgetPlan, WidgetSend

OK = AppPushResult(Outcome.ACCEPTED, http_status=200)


def plan(**config: float) -> WidgetPlan:
    return WidgetPlan(WidgetConfig(**config))  # type: ignore[arg-type]


def take(p: WidgetPlan, now: float, limit: int = 100) -> list[str]:
    return [s.device_id for s in p.take_ready(now, limit)]


def test_a_change_is_sent_at_once_and_later_ones_wait_for_one_push() -> None:
    p = plan(min_interval=60)
    assert p.want("a", "t1", now=0.0)
    assert p.want("b", "t2", now=0.0)
    sends = p.take_ready(0.0, 10)
    assert sends == [WidgetSend("a", "t1"), WidgetSend("b", "t2")]
    assert p.in_flight == 2
    # While in flight, any number of changes owe one more push.
    assert p.want("a", "t1", now=1.0)
    assert not p.want("a", "t1", now=2.0)
    assert not p.want("a", "t1", now=3.0)
    assert p.coalesced == 2 and p.pending == 1
    assert take(p, 3.0) == []  # in flight: nothing more for `a`
    p.done(sends[0], OK, now=4.0)
    p.done(sends[1], OK, now=4.0)
    assert p.next_at() == 64.0  # paced: one push per min_interval
    assert take(p, 63.9) == []
    assert take(p, 64.0) == ["a"]
    assert p.sent == 2 and p.pending == 0


def test_limit_bounds_the_pushes_taken() -> None:
    p = plan()
    for n in range(5):
        p.want(f"d{n}", "t", now=0.0)
    assert take(p, 0.0, limit=2) == ["d0", "d1"]
    assert take(p, 0.0, limit=0) == []
    assert take(p, 0.0) == ["d2", "d3", "d4"]


def test_the_daily_budget_holds_the_pending_push_until_it_refills() -> None:
    p = plan(daily_budget=2, min_interval=0)
    now = 0.0
    for _ in range(2):
        p.want("a", "t", now=now)
        (send,) = p.take_ready(now, 1)
        p.done(send, OK, now=now)
        now += 1
    p.want("a", "t", now=now)
    assert p.take_ready(now, 1) == []  # spent: held
    assert p.held == 1
    refill = DAY / 2
    at = p.next_at()
    assert at is not None and at == pytest.approx(refill)  # one push regained after DAY / 2
    assert take(p, at) == ["a"]


def test_a_push_apns_did_not_accept_spends_no_budget() -> None:
    p = plan(daily_budget=1, min_interval=0)
    p.want("a", "t", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.done(send, AppPushResult(Outcome.RETRY, http_status=503), now=0.0)
    at = p.next_at()
    assert at == 1.0  # backoff 1 s, budget untouched
    (send,) = p.take_ready(at, 1)
    p.done(send, OK, now=at)
    assert p.sent == 1


def test_failures_back_off_and_give_up_after_max_attempts() -> None:
    p = plan(max_attempts=3, min_interval=0)
    p.want("a", "t", now=0.0)
    now, waits = 0.0, []
    for _ in range(3):
        (send,) = p.take_ready(now, 1)
        p.done(send, AppPushResult(Outcome.TRANSPORT), now=now)
        at = p.next_at()
        if at is None:
            break
        waits.append(at - now)
        now = at
    assert waits == [1.0, 2.0]
    assert p.next_at() is None and p.failed == 1
    # A new change starts over.
    assert p.want("a", "t", now=now)
    assert take(p, now) == ["a"]


def test_retry_after_is_honoured() -> None:
    p = plan()
    p.want("a", "t", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.done(send, AppPushResult(Outcome.RETRY, http_status=429, retry_after=30.0), now=0.0)
    assert p.next_at() == 30.0


def test_unprocessed_pushes_retry_at_once_a_few_times() -> None:
    p = plan(max_attempts=1)
    p.want("a", "t", now=0.0)
    for _ in range(5):
        (send,) = p.take_ready(0.0, 1)
        p.done(send, AppPushResult(Outcome.UNPROCESSED), now=0.0)
        assert p.next_at() == 0.0
    (send,) = p.take_ready(0.0, 1)
    p.done(send, AppPushResult(Outcome.REFRESH_AUTH, http_status=403), now=0.0)
    assert p.next_at() is None and p.failed == 1  # the streak ran out: a counted failure


def test_a_dead_token_is_forgotten_until_the_app_registers_one() -> None:
    p = plan()
    p.want("a", "dead", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.done(send, AppPushResult(Outcome.DROP_TOKEN, 410, Reason.UNREGISTERED), now=0.0)
    assert len(p) == 0 and p.dropped_tokens == 1 and p.in_flight == 0
    p.want("a", "fresh", now=1.0)
    assert p.take_ready(1.0, 1) == [WidgetSend("a", "fresh")]


def test_a_request_apns_calls_wrong_is_given_up() -> None:
    p = plan()
    p.want("a", "t", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.done(send, AppPushResult(Outcome.FIX_REQUEST, 400, Reason.BAD_TOPIC), now=0.0)
    assert p.next_at() is None and p.failed == 1


def test_a_new_token_while_in_flight_gets_its_own_push() -> None:
    p = plan(min_interval=10)
    p.want("a", "old", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.want("a", "new", now=1.0)  # re-registered with another token
    p.done(send, AppPushResult(Outcome.DROP_TOKEN, 410, Reason.UNREGISTERED), now=2.0)
    assert len(p) == 1 and p.in_flight == 0  # the old token's death does not kill the new one
    assert p.take_ready(2.0, 1) == [WidgetSend("a", "new")]


def test_forget_while_in_flight() -> None:
    p = plan()
    p.want("a", "t", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.forget("a")
    assert p.in_flight == 0 and len(p) == 0
    p.done(send, OK, now=1.0)  # a late answer about a forgotten device changes nothing
    assert p.in_flight == 0 and p.sent == 0 and p.next_at() is None


def test_random_traffic_keeps_the_invariants() -> None:
    """At most one push in flight per device, at most one pending, pacing and budget kept."""
    rng = random.Random(11)
    p = plan(daily_budget=5, min_interval=30)
    flying: dict[str, WidgetSend] = {}
    sent_at: dict[str, list[float]] = {}
    now = 0.0
    for _ in range(3000):
        now += rng.uniform(0, 120)
        device = f"d{rng.randrange(4)}"
        if rng.random() < 0.5:
            p.want(device, "t" + device, now=now)
        for send in p.take_ready(now, 100):
            assert send.device_id not in flying
            flying[send.device_id] = send
        for device_id in list(flying):
            if rng.random() < 0.7:
                outcome = rng.choice([Outcome.ACCEPTED] * 4 + [Outcome.RETRY, Outcome.TRANSPORT])
                p.done(flying.pop(device_id), AppPushResult(outcome), now=now)
                if outcome is Outcome.ACCEPTED:
                    sent_at.setdefault(device_id, []).append(now)
        assert p.in_flight == len(flying)
    assert sum(map(len, sent_at.values())) > 50  # the budget and pacing were exercised
    for times in sent_at.values():
        assert all(b - a >= 30 for a, b in itertools.pairwise(times))
        # The phone's own bucket (simulator/budget.py: 5 a day, one regained every DAY / 5 s)
        # has a push for every one accepted: none would be dropped.
        level, last = 5.0, times[0]
        for t in times:
            level = min(5.0, level + (t - last) / (DAY / 5))
            last = t
            assert level >= 1.0 - 1e-9
            level -= 1.0


def test_config_bounds() -> None:
    with pytest.raises(ValueError, match="daily_budget must be at least 1"):
        WidgetConfig(daily_budget=0)
    with pytest.raises(ValueError, match="priority must be 1, 5 or 10"):
        WidgetConfig(priority=7)


def test_the_widgets_topic() -> None:
    assert app_topic("com.example.app", "widgets") == "com.example.app.push-type.widgets"
    assert app_topic("com.example.app", "alert") == "com.example.app"
    with pytest.raises(ValueError, match="unknown apns-push-type"):
        app_topic("com.example.app", "widget")


def test_a_reload_owed_to_an_old_token_goes_to_the_new_one() -> None:
    p = plan(min_interval=60)
    p.want("a", "old", now=0.0)
    (send,) = p.take_ready(0.0, 1)
    p.done(send, OK, now=0.0)
    p.want("a", "old", now=1.0)  # owed, paced until 60
    p.retoken("a", "new", now=2.0)
    assert p.next_at() == 60.0  # same pacing, same budget
    assert p.take_ready(60.0, 5) == [WidgetSend("a", "new")]
    p.retoken("a", "newer", now=61.0)  # nothing owed: no push, the token is just replaced
    assert p.next_at() is None
    p.want("a", "newer", now=200.0)
    assert p.take_ready(200.0, 5) == [] and p.in_flight == 1  # the earlier push is in flight
    p.retoken("b", "x", now=200.0)  # unknown device: nothing happens
    assert len(p) == 1
