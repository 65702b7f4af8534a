"""The simulated iPhone's budgets and user actions, on plain values (no clock, no sleeping).

Budgets (simulator/budget.py, simulator/profile.py): priority-10 updates per hour, priority-5
delays, push-to-starts per hour; the Allow prompt, dismissal and rotation; offline storage
(simulator/offline.py). Each rule is a table of (profile, pushes) → what the device shows when.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.activity import ActivityOutcome, Detail, HoldReason
from simulator.budget import Bucket, PerTokenLimit
from simulator.devices import DeliveryOutcome, DeviceRegistry
from simulator.offline import DEFAULT_KEEP, STORE_LIMIT
from simulator.profile import AllowPrompt, DeviceProfile, parse_profile

BUNDLE = "com.example.app"
T0 = 1_700_000_000.0


def registry(profile: DeviceProfile | None = None, **kwargs: Any) -> DeviceRegistry:
    reg = DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(5), max_kept=50, **kwargs)
    reg.add_device("phone", profile=profile or DeviceProfile(), now=T0)
    return reg


def start_aps(ts: float, activity_id: str = "a1") -> dict[str, Any]:
    return {
        "event": "start",
        "timestamp": ts,
        "attributes-type": "DeployAttributes",
        "attributes": {"activity_id": activity_id},
        "content-state": {"v": 0},
        "alert": {"title": "Deploy", "body": "started"},
    }


def update(ts: float, v: object, event: str = "update") -> dict[str, Any]:
    return {"aps": {"event": event, "timestamp": ts, "content-state": {"v": v}}}


def start(reg: DeviceRegistry, now: float = T0, activity_id: str = "a1") -> DeliveryOutcome:
    pts = reg.devices["phone"].push_to_start_token
    return reg.deliver(pts, {"aps": start_aps(now, activity_id)}, now=now, priority=10, apns_id="s")


def started(profile: DeviceProfile | None = None) -> tuple[DeviceRegistry, str]:
    reg = registry(profile)
    outcome = start(reg)
    assert outcome.issued_token is not None
    return reg, outcome.issued_token


def send(reg: DeviceRegistry, token: str, ts: float, v: object, now: float, prio: int) -> Any:
    return reg.deliver(token, update(ts, v), now=now, priority=prio, apns_id=f"u{v}")


def shown(reg: DeviceRegistry, now: float, index: int = 0) -> dict[str, Any]:
    snap = reg.device_snapshot("phone", now)
    assert snap is not None
    act: dict[str, Any] = snap["activities"][index]
    return act


# -- the bucket ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "period", "spend_at", "then", "left"),
    [
        (30, 3600.0, [0.0] * 30, 0.0, 0),  # spent
        (30, 3600.0, [0.0] * 30, 119.0, 0),  # one comes back every 120 s
        (30, 3600.0, [0.0] * 30, 120.0, 1),
        (30, 3600.0, [0.0] * 30, 3600.0, 30),
        (30, 3600.0, [0.0] * 30, 99_999.0, 30),  # never above the capacity
        (10, 3600.0, [0.0] * 5, 0.0, 5),
        (2, 10.0, [0.0, 0.0], 5.0, 1),
    ],
)
def test_bucket_regains_one_every_period_over_capacity(
    capacity: int, period: float, spend_at: list[float], then: float, left: int
) -> None:
    bucket = Bucket(capacity, period)
    assert all(bucket.take(T0 + at) for at in spend_at)
    assert bucket.remaining(T0 + then) == left


def test_bucket_refuses_when_spent_and_says_when_one_is_back() -> None:
    bucket = Bucket(30)
    assert [bucket.take(T0) for _ in range(31)] == [True] * 30 + [False]
    assert bucket.next_at(T0) == pytest.approx(T0 + 120)
    assert not bucket.take(T0 + 119.9) and bucket.take(T0 + 120.0)
    assert Bucket(3).next_at(T0) == T0  # a full bucket has one now


def test_bucket_time_running_backwards_mints_nothing() -> None:
    bucket = Bucket(1, 100.0)
    assert bucket.take(T0 + 50)
    assert not bucket.take(T0)  # earlier than the last call: read as T0 + 50
    assert bucket.remaining(T0 + 149) == 0 and bucket.remaining(T0 + 150) == 1


def test_bucket_state_survives_json_and_is_clamped() -> None:
    bucket = Bucket(10)
    for _ in range(4):
        bucket.take(T0)
    copy = Bucket(10)
    copy.restore(bucket.to_json())
    assert copy.remaining(T0) == 6
    copy.restore({"level": 500, "at": "nonsense"})
    assert copy.remaining(T0) == 10


@pytest.mark.parametrize(("capacity", "period"), [(0, 3600.0), (5, 0.0), (-1, 1.0)])
def test_bucket_refuses_impossible_numbers(capacity: int, period: float) -> None:
    with pytest.raises(ValueError, match="capacity"):
        Bucket(capacity, period)


def test_per_token_limit_answers_429_past_the_rate_and_forgets_the_oldest() -> None:
    limit = PerTokenLimit(3, 10.0, max_tokens=2)
    assert [limit.take("aa", T0) for _ in range(4)] == [True, True, True, False]
    assert limit.take("bb", T0)  # another token has its own bucket
    assert not limit.take("aa", T0 + 3.0) and limit.take("aa", T0 + 3.4)  # one back per 3.3 s
    limit.take("cc", T0)
    assert len(limit) == 2  # "bb" (least recently used) was forgotten


# -- priority-10 budget, priority-5 delay ---------------------------------------------------------


def test_sixty_urgent_updates_in_a_second_spend_the_budget_then_the_newest_waits() -> None:
    reg, token = started()
    outcomes = [send(reg, token, T0 + 1 + i / 100, i, T0 + 1 + i / 100, 10) for i in range(60)]
    assert [o.outcome for o in outcomes[:30]] == [ActivityOutcome.APPLIED] * 30
    assert {(o.outcome, o.detail) for o in outcomes[30:]} == {
        (ActivityOutcome.HELD, HoldReason.THROTTLED)
    }
    act = shown(reg, T0 + 2)
    assert act["content_state"] == {"v": 29} and act["held"]["timestamp"] == T0 + 1.59
    assert (act["throttled"], act["superseded"], act["order_violations"]) == (30, 29, 0)
    assert reg.device_snapshot("phone", T0 + 2)["budget"]["updates_left"] == 0  # type: ignore[index]
    # One update comes back 120 s after the budget was spent: the newest held state is shown.
    due = act["held"]["due_at"]
    assert due == pytest.approx(T0 + 1.29 + 120)
    assert shown(reg, due - 0.01)["content_state"] == {"v": 29}
    after = shown(reg, due + 0.01)
    assert after["content_state"] == {"v": 59} and after["held"] is None
    assert after["events"][-1]["detail"] == "released:throttled"


@pytest.mark.parametrize(
    ("profile", "applied_at_once"),
    [
        (DeviceProfile(), 30),
        (DeviceProfile(frequent_updates=True), 60),  # NSSupportsLiveActivitiesFrequentUpdates
        (DeviceProfile(update_budget=5), 5),
        (DeviceProfile(budgets=False), 60),
    ],
)
def test_the_hourly_budget_follows_the_profile(
    profile: DeviceProfile, applied_at_once: int
) -> None:
    reg, token = started(profile)
    outcomes = [send(reg, token, T0 + 1 + i, i, T0 + 1, 10) for i in range(60)]
    assert sum(o.outcome is ActivityOutcome.APPLIED for o in outcomes) == applied_at_once


@pytest.mark.parametrize(
    ("profile", "delay"),
    [
        (DeviceProfile(), 1.0),
        (DeviceProfile(low_power=True), 900.0),
        (DeviceProfile(low_priority_delay=0.0), 0.0),
        (DeviceProfile(budgets=False, low_power=True), 0.0),
    ],
)
def test_priority_5_waits_the_device_delay_and_spends_no_budget(
    profile: DeviceProfile, delay: float
) -> None:
    reg, token = started(profile)
    outcomes, seen = [], []
    for i in range(50):  # one every 0.1 s for 5 s
        outcomes.append(send(reg, token, T0 + 1 + i / 10, i, T0 + 1 + i / 10, 5))
        seen.append(shown(reg, T0 + 1 + i / 10)["content_state"]["v"])
    expected = ActivityOutcome.APPLIED if delay == 0 else ActivityOutcome.HELD
    assert {o.outcome for o in outcomes} == {expected}
    assert seen == sorted(seen)  # never an older state after a newer one
    # A stream of priority-5 updates lands every `delay` seconds, the newest one each time.
    first_change = next((i for i, v in enumerate(seen) if v != 0), None)
    assert first_change == {0.0: 1, 1.0: 10, 900.0: None}[delay]  # update 0 shows no change
    last_sent = T0 + 1 + 4.9
    assert shown(reg, last_sent + delay + 0.01)["content_state"] == {"v": 49}
    budget = reg.device_snapshot("phone", last_sent)["budget"]  # type: ignore[index]
    assert budget["updates_left"] in (None, profile.hourly_updates)


def test_an_urgent_update_shown_at_once_drops_the_older_held_one() -> None:
    reg, token = started()
    assert send(reg, token, T0 + 1, "slow", T0 + 1, 5).outcome is ActivityOutcome.HELD
    assert send(reg, token, T0 + 2, "urgent", T0 + 1.5, 10).outcome is ActivityOutcome.APPLIED
    act = shown(reg, T0 + 100)
    assert act["content_state"] == {"v": "urgent"} and act["held"] is None
    assert (act["superseded"], act["order_violations"]) == (1, 0)


def test_an_older_push_than_the_held_one_is_an_order_violation() -> None:
    reg, token = started()
    send(reg, token, T0 + 5, "new", T0 + 1, 5)
    outcome = send(reg, token, T0 + 3, "old", T0 + 1.1, 10)
    assert (outcome.outcome, outcome.detail) == (ActivityOutcome.IGNORED, Detail.STALE_TIMESTAMP)
    assert send(reg, token, T0 + 5, "dup", T0 + 1.2, 5).detail == Detail.EQUAL_TIMESTAMP
    assert shown(reg, T0 + 10)["content_state"] == {"v": "new"}


@pytest.mark.parametrize(
    ("held_ts", "end_ts", "final", "violations"),
    [
        (T0 + 2, T0 + 3, {"v": "end"}, 0),  # the end is newer: the held update is dropped
        (T0 + 3, T0 + 2, {"v": "held"}, 1),  # the held one is newer: shown, the end's state not
    ],
)
def test_an_end_is_never_held_and_keeps_the_newest_state(
    held_ts: float, end_ts: float, final: dict[str, str], violations: int
) -> None:
    reg, token = started()
    send(reg, token, held_ts, "held", T0 + 1, 5)
    outcome = reg.deliver(
        token, update(end_ts, "end", "end"), now=T0 + 1.1, priority=5, apns_id="e"
    )
    assert outcome.outcome is ActivityOutcome.ENDED
    act = shown(reg, T0 + 1.1)
    assert (act["state"], act["content_state"], act["held"]) == ("ended", final, None)
    assert act["order_violations"] == violations


def test_the_system_ending_an_activity_drops_what_it_held() -> None:
    reg, token = started(DeviceProfile(update_budget=1))
    send(reg, token, T0 + 1, 1, T0 + 1, 10)
    assert send(reg, token, T0 + 2, 2, T0 + 2, 10).outcome is ActivityOutcome.HELD
    assert shown(reg, T0 + 3700)["content_state"] == {"v": 2}  # released at T0 + 3601
    late = T0 + 7.9 * 3600  # the budget is back; the 8 h lifetime ends before the next one is
    assert send(reg, token, late, 3, late, 10).outcome is ActivityOutcome.APPLIED
    assert send(reg, token, late + 1, 4, late + 1, 10).outcome is ActivityOutcome.HELD
    act = shown(reg, T0 + 13 * 3600)
    assert act["state"] == "dismissed" and act["content_state"] == {"v": 3}
    assert act["held"] is None and act["superseded"] == 1


# -- push-to-start budget -------------------------------------------------------------------------


def test_fifteen_push_to_starts_in_a_row_start_ten() -> None:
    reg = DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(5), max_active=20)
    reg.add_device("phone", now=T0)
    outcomes = [start(reg, T0 + i, f"a{i}") for i in range(15)]
    assert [o.outcome for o in outcomes] == [ActivityOutcome.STARTED] * 10 + [
        ActivityOutcome.IGNORED
    ] * 5
    assert {o.detail for o in outcomes[10:]} == {Detail.PUSH_TO_START_BUDGET}
    snap = reg.device_snapshot("phone", T0 + 15)
    assert snap is not None and snap["events"][-1]["detail"] == "push-to-start-budget"
    assert snap["budget"]["push_to_start_left"] == 0
    assert start(reg, T0 + 360, "later").outcome is ActivityOutcome.STARTED  # one per 6 min


# -- the Allow prompt, dismissal, rotation ---------------------------------------------------------


def test_manual_allow_issues_the_token_only_when_the_user_taps_allow() -> None:
    reg = registry(DeviceProfile(allow_prompt=AllowPrompt.MANUAL))
    outcome = start(reg)
    assert (outcome.outcome, outcome.detail, outcome.issued_token) == (
        ActivityOutcome.STARTED,
        "awaiting-allow",
        None,
    )
    assert reg.token_reports() == []
    act = shown(reg, T0)
    assert act["awaiting_allow"] and act["token"] == ""
    token = reg.allow("phone", "phone-1", now=T0 + 30)
    [report] = reg.token_reports()
    assert (report.activity_token, report.issued_at) == (token, T0 + 30)
    assert send(reg, token, T0 + 31, 1, T0 + 31, 10).outcome is ActivityOutcome.APPLIED
    with pytest.raises(LookupError, match="not waiting"):
        reg.allow("phone", "phone-1", now=T0 + 32)


@pytest.mark.parametrize("gone_at", ["dismissed", "ended by the system"])
def test_an_activity_that_left_the_lock_screen_cannot_be_allowed(gone_at: str) -> None:
    reg = registry(DeviceProfile(allow_prompt=AllowPrompt.MANUAL))
    start(reg)
    later = T0 + 5
    if gone_at == "dismissed":
        reg.dismiss("phone", "phone-1", now=later)
    else:
        later = T0 + 9 * 3600  # past the 8 h lifetime
    assert not shown(reg, later)["awaiting_allow"]
    for action in (reg.allow, reg.deny):
        with pytest.raises(LookupError, match="not waiting"):
            action("phone", "phone-1", now=later)
    assert reg.token_reports() == []


def test_deny_ends_the_activity() -> None:
    reg = registry(DeviceProfile(allow_prompt=AllowPrompt.MANUAL))
    start(reg)
    reg.deny("phone", "phone-1", now=T0 + 5)
    act = shown(reg, T0 + 5)
    assert act["state"] == "dismissed" and act["events"][-1]["detail"] == "denied"
    assert reg.token_reports() == []
    denied = registry(DeviceProfile(allow_prompt=AllowPrompt.DENY))
    outcome = start(denied)
    assert (outcome.outcome, outcome.detail) == (ActivityOutcome.ENDED, Detail.DENIED)
    assert shown(denied, T0)["state"] == "dismissed" and denied.token_reports() == []


def test_user_dismissal_makes_the_token_answer_410_from_then() -> None:
    reg, token = started()
    reg.dismiss("phone", "phone-1", now=T0 + 60)
    info = reg.lookup(token)
    assert info is not None and info.unregistered_at_ms == int((T0 + 60) * 1000)
    with pytest.raises(LookupError, match="already dismissed"):
        reg.dismiss("phone", "phone-1", now=T0 + 61)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.allow("nobody", "x", now=T0), KeyError),
        (lambda r: r.dismiss("phone", "nothing", now=T0), KeyError),
        (lambda r: r.rotate("phone", "nothing", now=T0), KeyError),
        (lambda r: r.deny("phone", "phone-1", now=T0), LookupError),
        (lambda r: r.set_online("nobody", False, now=T0), KeyError),
    ],
)
def test_actions_on_what_does_not_exist_say_what_is_missing(call: Any, error: type) -> None:
    reg, _ = started()
    with pytest.raises(error):
        call(reg)


def test_rotation_by_name_reports_the_new_token() -> None:
    reg, token = started()
    reg.token_reports()
    new = reg.rotate("phone", "phone-1", now=T0 + 10)
    assert new != token and reg.token_reports()[0].activity_token == new
    manual = registry(DeviceProfile(allow_prompt=AllowPrompt.MANUAL))
    start(manual)
    with pytest.raises(LookupError, match="no update token"):
        manual.rotate("phone", "phone-1", now=T0)


# -- offline storage ----------------------------------------------------------------------------


def offline_send(
    reg: DeviceRegistry, token: str, ts: float, v: object, now: float, **headers: Any
) -> DeliveryOutcome:
    return reg.deliver(token, update(ts, v), now=now, priority=10, apns_id=f"o{v}", **headers)


def test_an_offline_device_gets_the_newest_kept_push_per_token_when_it_comes_back() -> None:
    reg, token = started()
    reg.set_online("phone", False, now=T0 + 1)
    outcomes = [offline_send(reg, token, T0 + 1 + i, i, T0 + 1 + i) for i in range(1, 4)]
    assert {o.outcome for o in outcomes} == {ActivityOutcome.STORED}
    assert shown(reg, T0 + 10)["content_state"] == {"v": 0}
    snap = reg.device_snapshot("phone", T0 + 10)
    assert snap is not None and [s["apns_id"] for s in snap["stored"]] == ["o3"]
    delivered = reg.set_online("phone", True, now=T0 + 20)
    assert [d.outcome for d in delivered] == [ActivityOutcome.APPLIED]
    assert shown(reg, T0 + 20)["content_state"] == {"v": 3}
    assert reg.set_online("phone", True, now=T0 + 21) == []  # already online


@pytest.mark.parametrize(
    ("headers", "back_at", "outcome", "detail"),
    [
        ({"expiration": 0}, T0 + 3, ActivityOutcome.IGNORED, Detail.NOT_STORED),
        ({"expiration": int(T0) + 60}, T0 + 30, ActivityOutcome.APPLIED, ""),
        ({"expiration": int(T0) + 60}, T0 + 61, ActivityOutcome.IGNORED, Detail.EXPIRED),
        ({}, T0 + DEFAULT_KEEP, ActivityOutcome.APPLIED, ""),
    ],
)
def test_apns_expiration_decides_what_is_kept_and_for_how_long(
    headers: dict[str, Any], back_at: float, outcome: ActivityOutcome, detail: str
) -> None:
    reg = DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(5))
    reg.add_device("phone", profile=DeviceProfile(budgets=False), now=T0)
    start(reg)
    reg.set_online("phone", False, now=T0 + 1)
    pts = reg.devices["phone"].push_to_start_token
    first = reg.deliver(
        pts, {"aps": start_aps(T0 + 2, "a2")}, now=T0 + 2, priority=10, apns_id="x", **headers
    )
    if detail == Detail.NOT_STORED:
        assert (first.outcome, first.detail) == (outcome, detail)
        assert reg.set_online("phone", True, now=back_at) == []
        return
    assert first.outcome is ActivityOutcome.STORED
    [result] = reg.set_online("phone", True, now=back_at)
    expected = ActivityOutcome.STARTED if outcome is ActivityOutcome.APPLIED else outcome
    assert (result.outcome, result.detail) == (expected, detail)


def test_collapse_ids_replace_and_the_store_is_bounded_in_arrival_order() -> None:
    reg, token = started(DeviceProfile(budgets=False))
    reg.set_online("phone", False, now=T0)
    offline_send(reg, token, T0 + 1, "a", T0 + 1, collapse_id="score")
    offline_send(reg, token, T0 + 2, "b", T0 + 2, collapse_id="clock")
    offline_send(reg, token, T0 + 3, "c", T0 + 3, collapse_id="score")  # replaces "a"
    snap = reg.device_snapshot("phone", T0 + 3)
    assert snap is not None and [s["apns_id"] for s in snap["stored"]] == ["ob", "oc"]
    assert snap["stored_replaced"] == 1
    assert [(e["detail"], e["apns_id"]) for e in snap["events"] if e["event"] == "dropped"] == [
        ("superseded", "oa")
    ]
    for i in range(STORE_LIMIT + 5):
        offline_send(reg, token, T0 + 10 + i, i, T0 + 10, collapse_id=f"c{i}")
    snap = reg.device_snapshot("phone", T0 + 11)
    assert snap is not None and len(snap["stored"]) == STORE_LIMIT
    assert snap["stored_dropped"] == 7
    delivered = reg.set_online("phone", True, now=T0 + 20)
    assert len(delivered) == STORE_LIMIT
    assert shown(reg, T0 + 20)["content_state"] == {"v": STORE_LIMIT + 4}


# -- profiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"environment": "staging"}', "environment"),
        (b'{"update_budget": 0}', "update_budget"),
        (b'{"low_power_delay": -1}', "low_power_delay"),
        (b'{"allow_prompt": "maybe"}', "allow_prompt"),
        (b'{"colour": "red"}', "colour"),
        (b"{nope", "not valid JSON"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_profile(raw)


def test_a_profile_round_trips_through_json() -> None:
    profile = DeviceProfile(frequent_updates=True, allow_prompt=AllowPrompt.MANUAL, low_power=True)
    assert parse_profile(profile.to_json()) == profile
    assert (profile.hourly_updates, profile.priority5_delay) == (120, 900.0)


# -- the order promise with budgets, offline storage and rotation in play -------------------------

_OPS = st.one_of(
    st.tuples(
        st.just("send"), st.sampled_from([0.0, 0.05, 0.5, 3.0, 40.0]), st.sampled_from([5, 10])
    ),
    st.tuples(st.sampled_from(["offline", "online", "rotate"]), st.just(0.0), st.just(0)),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 30.0, 130.0, 1000.0]), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(
    profile=st.builds(
        DeviceProfile,
        frequent_updates=st.booleans(),
        low_power=st.booleans(),
        update_budget=st.integers(1, 4),
    ),
    ops=st.lists(_OPS, max_size=40),
    end=st.booleans(),
)
def test_the_device_never_shows_an_older_state_and_ends_on_the_last(
    profile: DeviceProfile, ops: list[tuple[str, float, int]], end: bool
) -> None:
    """Whatever the budgets, delays, outages and rotations, the shown state only moves forward,
    and once every delay and outage is over the device shows the last state sent."""
    reg, token = started(profile)
    now, seq, last = T0, 0, 0
    shown_ts: list[float] = []
    for op, gap, priority in ops:
        now += gap
        if op == "send":
            seq += 1
            assert send(reg, token, T0 + seq, seq, now, priority).outcome is not (
                ActivityOutcome.IGNORED
            )
            last = seq
        elif op == "rotate" and reg.devices["phone"].online:
            token = reg.rotate(
                "phone", "phone-1", now=now
            )  # the app reports it; the sender uses it
        elif op in ("offline", "online"):
            reg.set_online("phone", op == "online", now=now)
        shown_ts.append(shown(reg, now)["last_timestamp"])
    if end:
        seq += 1
        reg.deliver(token, update(T0 + seq, seq, "end"), now=now, priority=10, apns_id="end")
        last = seq
    reg.set_online("phone", True, now=now + 1)
    act = shown(reg, now + 2 * 3600)  # past every delay and budget refill, within the 8 h
    shown_ts.append(act["last_timestamp"])
    assert shown_ts == sorted(shown_ts)
    applied = [e["timestamp"] for e in act["events"] if e["event"] in ("update", "end")]
    assert applied == sorted(applied) and len(set(applied)) == len(applied)
    assert act["order_violations"] == 0 and act["held"] is None
    assert act["content_state"] == {"v": last}
    assert act["state"] in (("ended", "dismissed") if end else ("active", "stale"))


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 200),
    period=st.floats(0.5, 7200.0),
    gaps=st.lists(st.floats(0.0, 500.0), min_size=1, max_size=60),
    start=st.floats(1e9, 2e9),
)
def test_a_refused_take_names_a_later_time_at_which_one_is_taken(
    capacity: int, period: float, gaps: list[float], start: float
) -> None:
    """On fractional wall-clock times too: a caller that waits for `next_at` always moves forward
    and then gets its push (a rounding that kept it waiting at the same instant froze the loop)."""
    bucket, now = Bucket(capacity, period), start
    for gap in gaps:
        now += gap
        if bucket.take(now):
            continue
        later = bucket.next_at(now)
        assert later > now
        assert bucket.take(later)
        now = later


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.floats(0.001, 50.0), min_size=2, max_size=40),
    budget=st.integers(1, 3),
)
def test_throttled_updates_on_fractional_times_are_all_shown_in_the_end(
    times: list[float], budget: int
) -> None:
    reg, token = started(DeviceProfile(update_budget=budget))
    now = T0 + 0.123456789
    for n, gap in enumerate(times, start=1):
        now += gap
        send(reg, token, T0 + n, n, now, 10)
    done = reg.settle(now)  # raises instead of spinning if a held update never falls due
    assert shown(reg, done)["content_state"] == {"v": len(times)}


def test_an_urgent_end_spends_budget_but_is_never_held() -> None:
    reg, token = started(DeviceProfile(update_budget=2))
    reg.deliver(token, update(T0 + 1, "end", "end"), now=T0 + 1, priority=10, apns_id="e")
    assert reg.device_snapshot("phone", T0 + 1)["budget"]["updates_left"] == 1  # type: ignore[index]
    spent, other = started(DeviceProfile(update_budget=1))
    send(spent, other, T0 + 1, 1, T0 + 1, 10)  # the last one
    outcome = spent.deliver(
        other, update(T0 + 2, "end", "end"), now=T0 + 2, priority=10, apns_id="e"
    )
    assert outcome.outcome is ActivityOutcome.ENDED  # shown at once with no budget left
