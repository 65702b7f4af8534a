"""Simulated iPhones: the Live Activity state machine and the device registry (apns.md §6)."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.activity import _PUSH_TRANSITIONS, ActivityState, PushEvent
from simulator.devices import ActivityOutcome, DeliveryOutcome, DeviceRegistry
from simulator.profile import DeviceProfile
from simulator.validation import TokenKind

BUNDLE = "com.example.app"
T0 = 1_700_000_000.0
HOUR = 3600.0


IDEAL = DeviceProfile(budgets=False)
"""An idealised phone: these tests are about ActivityKit's rules, not budgets (test_sim_budgets)."""


def make_registry(seed: int = 7, **kwargs: Any) -> DeviceRegistry:
    kwargs.setdefault("default_profile", IDEAL)
    return DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(seed), **kwargs)


def start_aps(ts: float = T0, /, **extra: Any) -> dict[str, Any]:
    aps: dict[str, Any] = {
        "event": "start",
        "timestamp": ts,
        "attributes-type": "ScoreAttributes",
        "attributes": {"match": "A-B"},
        "content-state": {"score": 0},
        "alert": {"title": "Kick-off", "body": "A vs B"},
    }
    aps.update(extra)
    return aps


def update_aps(ts: float, score: int, /, **extra: Any) -> dict[str, Any]:
    return {"event": "update", "timestamp": ts, "content-state": {"score": score}, **extra}


def end_aps(ts: float, score: int | None = None, /, **extra: Any) -> dict[str, Any]:
    aps: dict[str, Any] = {"event": "end", "timestamp": ts, **extra}
    if score is not None:
        aps["content-state"] = {"score": score}
    return aps


def send(
    reg: DeviceRegistry, token: str, aps: Any, now: float, priority: int = 10, apns_id: str = "id"
) -> DeliveryOutcome:
    return reg.deliver(token, {"aps": aps}, now=now, priority=priority, apns_id=apns_id)


def started(
    reg: DeviceRegistry | None = None, now: float = T0, /, **extra: Any
) -> tuple[DeviceRegistry, str]:
    """A registry with device "phone" and one started activity; returns its update token."""
    reg = reg or make_registry()
    if "phone" not in reg.devices:
        reg.add_device("phone", now=now)
    outcome = send(reg, reg.devices["phone"].push_to_start_token, start_aps(now, **extra), now)
    assert outcome.outcome is ActivityOutcome.STARTED and outcome.issued_token
    return reg, outcome.issued_token


def activity(reg: DeviceRegistry, now: float, index: int = 0) -> dict[str, Any]:
    snap = reg.device_snapshot("phone", now)
    assert snap is not None
    result: dict[str, Any] = snap["activities"][index]
    return result


# -- start, tokens, reports --------------------------------------------------------------------


def test_start_creates_activity_token_and_report() -> None:
    reg = make_registry()
    device = reg.add_device("phone", channels=["ch1"], now=T0)
    outcome = send(reg, device.push_to_start_token, start_aps(), T0, apns_id="a-1")
    assert outcome == DeliveryOutcome(
        "phone", "phone-1", ActivityOutcome.STARTED, "", outcome.issued_token
    )
    token = outcome.issued_token
    assert token is not None and len(token) == 64 and token == token.lower()
    info = reg.lookup(token)
    assert info is not None and info.kind is TokenKind.ACTIVITY and info.bundle_id == BUNDLE
    [report] = reg.token_reports()
    assert (report.device, report.activity_id, report.activity_token) == ("phone", "phone-1", token)
    assert report.push_to_start_token == device.push_to_start_token
    assert (report.attributes_type, report.attributes, report.issued_at) == (
        "ScoreAttributes",
        {"match": "A-B"},
        T0,
    )
    assert reg.token_reports() == []  # drained
    act = activity(reg, T0)
    assert act["state"] == "active" and act["content_state"] == {"score": 0}
    assert act["events"][0]["event"] == "start" and act["events"][0]["apns_id"] == "a-1"


def test_lookup_kinds_and_unknown() -> None:
    reg, token = started()
    pts = reg.devices["phone"].push_to_start_token
    assert reg.lookup(pts) == reg.lookup(pts) and reg.lookup(pts).kind is TokenKind.PUSH_TO_START  # type: ignore[union-attr]
    assert reg.lookup(token).kind is TokenKind.ACTIVITY  # type: ignore[union-attr]
    assert reg.lookup("00" * 32) is None
    assert reg.topic == BUNDLE + ".push-type.liveactivity"


def test_tokens_are_deterministic_per_seed() -> None:
    a, b, c = make_registry(1), make_registry(1), make_registry(2)
    tokens = [r.add_device("x", now=T0).push_to_start_token for r in (a, b, c)]
    assert tokens[0] == tokens[1] != tokens[2]


def test_add_device_validation() -> None:
    reg = make_registry()
    reg.add_device("a", push_to_start_token="ABCDEF01", now=T0)
    assert reg.devices["a"].push_to_start_token == "abcdef01"  # stored as the validator looks up
    with pytest.raises(ValueError, match="already exists"):
        reg.add_device("a", now=T0)
    with pytest.raises(ValueError, match="already in use"):
        reg.add_device("b", push_to_start_token="abcdef01", now=T0)
    with pytest.raises(ValueError, match="hex"):
        reg.add_device("c", push_to_start_token="../etc", now=T0)
    with pytest.raises(ValueError, match="non-empty"):
        reg.add_device("", now=T0)
    with pytest.raises(ValueError):
        make_registry(max_active=0)


# -- updates and ordering ----------------------------------------------------------------------


def test_newer_update_applies() -> None:
    reg, token = started()
    outcome = send(reg, token, update_aps(T0 + 1, 1, **{"relevance-score": 50}), T0 + 1, 5, "u1")
    assert (outcome.outcome, outcome.activity_id) == (ActivityOutcome.APPLIED, "phone-1")
    act = activity(reg, T0 + 1)
    assert act["content_state"] == {"score": 1} and act["last_timestamp"] == T0 + 1
    assert act["relevance_score"] == 50 and act["applied"] == 2
    assert act["events"][-1] == {
        "at": T0 + 1,
        "event": "update",
        "timestamp": T0 + 1,
        "detail": "",
        "apns_id": "u1",
        "priority": 5,
    }


@pytest.mark.parametrize(
    ("ts", "detail"),
    [(T0 + 10, "equal-timestamp"), (T0 + 9, "stale-timestamp"), (T0 - 100, "stale-timestamp")],
)
def test_equal_and_older_updates_are_ignored_and_counted(ts: float, detail: str) -> None:
    reg, token = started()
    send(reg, token, update_aps(T0 + 10, 1), T0 + 10)
    outcome = send(reg, token, update_aps(ts, 99), T0 + 11)
    assert (outcome.outcome, outcome.detail) == (ActivityOutcome.IGNORED, detail)
    act = activity(reg, T0 + 11)
    assert act["content_state"] == {"score": 1}
    assert (act["ignored"], act["order_violations"], act["applied"]) == (1, 1, 2)


def test_update_equal_to_start_timestamp_is_ignored() -> None:
    reg, token = started()
    assert send(reg, token, update_aps(T0, 1), T0 + 1).detail == "equal-timestamp"


@pytest.mark.parametrize(
    ("ahead", "outcome"),
    [(8 * HOUR, ActivityOutcome.APPLIED), (8 * HOUR + 1, ActivityOutcome.IGNORED)],
)
def test_future_timestamp_limit(ahead: float, outcome: ActivityOutcome) -> None:
    reg, token = started()
    result = send(reg, token, update_aps(T0 + 5 + ahead, 1), T0 + 5)
    assert result.outcome is outcome
    if outcome is ActivityOutcome.IGNORED:
        assert result.detail == "future-timestamp"
        assert activity(reg, T0 + 5)["order_violations"] == 0


def test_future_start_is_ignored() -> None:
    reg = make_registry()
    pts = reg.add_device("phone", now=T0).push_to_start_token
    result = send(reg, pts, start_aps(T0 + 9 * HOUR), T0)
    assert (result.outcome, result.detail) == (ActivityOutcome.IGNORED, "future-timestamp")


@pytest.mark.parametrize(
    ("aps", "detail"),
    [
        ({"event": "update", "content-state": {"score": 1}}, "bad-timestamp"),
        ({"event": "update", "timestamp": "1", "content-state": {}}, "bad-timestamp"),
        ({"event": "update", "timestamp": True, "content-state": {}}, "bad-timestamp"),
        ({"event": "update", "timestamp": T0 + 1}, "bad-payload"),
        ({"event": "update", "timestamp": T0 + 1, "content-state": []}, "bad-payload"),
        (update_aps(T0 + 1, 1, **{"stale-date": "soon"}), "bad-payload"),
        (update_aps(T0 + 1, 1, alert="hi"), "bad-payload"),
        ({"event": "start", **start_aps(T0 + 1)}, "bad-event"),
        ({"event": "pause", "timestamp": T0 + 1}, "bad-event"),
        ({"timestamp": T0 + 1, "content-state": {}}, "bad-event"),
        ("not-a-dict", "not-live-activity"),
    ],
)
def test_malformed_pushes_to_an_activity(aps: Any, detail: str) -> None:
    reg, token = started()
    result = send(reg, token, aps, T0 + 1)
    assert (result.outcome, result.detail) == (ActivityOutcome.IGNORED, detail)
    act = activity(reg, T0 + 1)
    assert act["ignored"] == 1 and act["order_violations"] == 0
    assert act["content_state"] == {"score": 0}


def test_payload_without_aps_is_ignored() -> None:
    reg, token = started()
    result = reg.deliver(token, {"other": 1}, now=T0 + 1, priority=10, apns_id="x")
    assert (result.outcome, result.detail) == (ActivityOutcome.IGNORED, "not-live-activity")


def test_unknown_token() -> None:
    reg = make_registry()
    result = send(reg, "ab" * 32, update_aps(T0, 1), T0)
    assert result == DeliveryOutcome("", None, ActivityOutcome.IGNORED, "unknown-token")


# -- end, dismissal, lifetime ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dismissal", "state_now", "dismissal_at"),
    [
        (T0 + 50, "dismissed", T0 + 100),  # past: removed at once, at the time of the end
        (T0 + 100, "dismissed", T0 + 100),  # equal to now counts as past
        (T0 + 100 + HOUR, "ended", T0 + 100 + HOUR),  # within the 4 h window
        (T0 + 100 + 9 * HOUR, "ended", T0 + 100 + 4 * HOUR),  # capped at end + 4 h
        (None, "ended", T0 + 100 + 4 * HOUR),  # absent: up to 4 h on the Lock Screen
    ],
)
def test_end_and_dismissal_date(
    dismissal: float | None, state_now: str, dismissal_at: float
) -> None:
    reg, token = started()
    extra = {} if dismissal is None else {"dismissal-date": dismissal}
    result = send(reg, token, end_aps(T0 + 100, 7, **extra), T0 + 100)
    assert (result.outcome, result.detail) == (ActivityOutcome.ENDED, "")
    act = activity(reg, T0 + 100)
    assert act["state"] == state_now and act["dismissal_at"] == dismissal_at
    assert act["ended_at"] == T0 + 100 and act["content_state"] == {"score": 7}
    assert activity(reg, dismissal_at - 0.001)["state"] == state_now
    assert activity(reg, dismissal_at)["state"] == "dismissed"
    assert reg.lookup(token).unregistered_at_ms == int(dismissal_at * 1000)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("end_ts", "detail"), [(T0 + 5, "stale-timestamp"), (T0 + 10, "equal-timestamp")]
)
def test_end_with_old_timestamp_ends_but_keeps_newer_state(end_ts: float, detail: str) -> None:
    reg, token = started()
    send(reg, token, update_aps(T0 + 10, 3), T0 + 10)
    result = send(reg, token, end_aps(end_ts, 1), T0 + 20)
    assert (result.outcome, result.detail) == (ActivityOutcome.ENDED, detail)
    act = activity(reg, T0 + 20)
    assert act["state"] == "ended" and act["content_state"] == {"score": 3}
    assert act["last_timestamp"] == T0 + 10
    assert (act["order_violations"], act["ignored"]) == (1, 0)


def test_end_without_content_state_keeps_state() -> None:
    reg, token = started()
    assert send(reg, token, end_aps(T0 + 1), T0 + 1).outcome is ActivityOutcome.ENDED
    assert activity(reg, T0 + 1)["content_state"] == {"score": 0}


@pytest.mark.parametrize("later", [end_aps(T0 + 30, 9), update_aps(T0 + 30, 9)])
def test_push_after_end_is_ignored(later: dict[str, Any]) -> None:
    reg, token = started()
    send(reg, token, end_aps(T0 + 10, 1), T0 + 10)
    for now in (T0 + 30, T0 + 10 + 5 * HOUR):  # ended, then dismissed
        result = send(reg, token, later, now)
        assert (result.outcome, result.detail) == (ActivityOutcome.IGNORED, "activity-ended")
    act = activity(reg, T0 + 10 + 5 * HOUR)
    assert act["content_state"] == {"score": 1} and act["ignored"] == 2


def test_eight_hour_lifetime_then_four_hour_dismissal() -> None:
    reg, token = started()
    send(reg, token, update_aps(T0 + 60, 1), T0 + 60)
    assert activity(reg, T0 + 8 * HOUR - 1)["state"] == "active"
    act = activity(reg, T0 + 8 * HOUR)
    assert act["state"] == "ended" and act["ended_at"] == T0 + 8 * HOUR
    assert act["dismissal_at"] == T0 + 12 * HOUR
    assert act["events"][-1]["event"] == "ended-by-system"
    assert send(reg, token, update_aps(T0 + 9 * HOUR, 2), T0 + 9 * HOUR).detail == "activity-ended"
    assert reg.lookup(token).unregistered_at_ms is None  # type: ignore[union-attr]
    act = activity(reg, T0 + 12 * HOUR)
    assert act["state"] == "dismissed"
    assert [e["event"] for e in act["events"]][-3:] == ["ended-by-system", "ignored", "dismissed"]


def test_token_unregistered_once_dismissal_is_materialised() -> None:
    reg, token = started()
    send(reg, token, end_aps(T0 + 10, 1, **{"dismissal-date": T0 + 60}), T0 + 10)
    reg.advance(T0 + 59)
    assert reg.lookup(token).unregistered_at_ms is None  # type: ignore[union-attr]
    # lookup takes no time: the dismissal shows only once something advanced past it.
    reg.advance(T0 + 61)
    info = reg.lookup(token)
    assert info is not None and info.kind is TokenKind.ACTIVITY
    assert info.unregistered_at_ms == int((T0 + 60) * 1000)


def test_advance_materialises_transitions_without_pushes() -> None:
    reg, token = started(**{"stale-date": T0 + 30})
    reg.advance(T0 + 12 * HOUR)
    assert reg.lookup(token).unregistered_at_ms == int((T0 + 12 * HOUR) * 1000)  # type: ignore[union-attr]
    events = [(e["event"], e["at"]) for e in activity(reg, T0 + 12 * HOUR)["events"]]
    assert events == [
        ("start", T0),
        ("stale", T0 + 30),
        ("ended-by-system", T0 + 8 * HOUR),
        ("dismissed", T0 + 12 * HOUR),
    ]


# -- stale-date --------------------------------------------------------------------------------


def test_stale_date_and_refresh() -> None:
    reg, token = started()
    send(reg, token, update_aps(T0 + 1, 1, **{"stale-date": T0 + 100}), T0 + 1)
    assert activity(reg, T0 + 99)["state"] == "active"
    assert activity(reg, T0 + 100)["state"] == "stale"
    # A later stale-date makes it active again; an update without one clears it.
    send(reg, token, update_aps(T0 + 150, 2, **{"stale-date": T0 + 300}), T0 + 150)
    assert activity(reg, T0 + 150)["state"] == "active"
    send(reg, token, update_aps(T0 + 160, 3), T0 + 160)
    act = activity(reg, T0 + 1000)
    assert act["state"] == "active" and act["stale_date"] is None


def test_update_with_past_stale_date_is_stale_at_once() -> None:
    reg, token = started()
    result = send(reg, token, update_aps(T0 + 5, 1, **{"stale-date": T0}), T0 + 5)
    assert result.outcome is ActivityOutcome.APPLIED
    assert activity(reg, T0 + 5)["state"] == "stale"


def test_stale_activity_can_still_end() -> None:
    reg, token = started(**{"stale-date": T0 + 1})
    assert activity(reg, T0 + 2)["state"] == "stale"
    assert send(reg, token, end_aps(T0 + 3, 5), T0 + 3).outcome is ActivityOutcome.ENDED


# -- limits, bad starts ------------------------------------------------------------------------


def test_per_device_limit_default_five() -> None:
    reg = make_registry()
    pts = reg.add_device("phone", now=T0).push_to_start_token
    other = reg.add_device("other", now=T0).push_to_start_token
    tokens = [send(reg, pts, start_aps(T0 + i), T0 + i).issued_token for i in range(5)]
    refused = send(reg, pts, start_aps(T0 + 5), T0 + 5)
    assert (refused.outcome, refused.detail) == (ActivityOutcome.IGNORED, "limit-reached")
    assert send(reg, other, start_aps(T0 + 5), T0 + 5).outcome is ActivityOutcome.STARTED
    assert tokens[0] is not None
    send(reg, tokens[0], end_aps(T0 + 6), T0 + 6)  # an ended activity no longer counts
    again = send(reg, pts, start_aps(T0 + 7), T0 + 7)
    assert (again.outcome, again.activity_id) == (ActivityOutcome.STARTED, "phone-6")
    snap = reg.device_snapshot("phone", T0 + 7)
    assert snap is not None and snap["ignored"] == 1
    assert snap["events"][-2]["detail"] == "limit-reached"


def _without(key: str) -> dict[str, Any]:
    aps = start_aps()
    del aps[key]
    return aps


@pytest.mark.parametrize(
    "aps",
    [
        _without("attributes-type"),
        _without("attributes"),
        _without("content-state"),
        _without("alert"),
        _without("timestamp"),
        start_aps(**{"attributes-type": ""}),
        start_aps(attributes=[1]),
        start_aps(**{"content-state": "x"}),
        start_aps(alert="plain string"),
        start_aps(**{"stale-date": "x"}),
    ],
)
def test_bad_start(aps: dict[str, Any]) -> None:
    reg = make_registry()
    pts = reg.add_device("phone", now=T0).push_to_start_token
    result = send(reg, pts, aps, T0)
    assert result == DeliveryOutcome("phone", None, ActivityOutcome.IGNORED, "bad-start")
    assert reg.token_reports() == []
    snap = reg.device_snapshot("phone", T0)
    assert snap is not None and snap["activities"] == [] and snap["ignored"] == 1


@pytest.mark.parametrize(
    ("aps", "detail"), [(update_aps(T0, 1), "bad-event"), ("x", "not-live-activity")]
)
def test_non_start_to_push_to_start_token(aps: Any, detail: str) -> None:
    reg = make_registry()
    pts = reg.add_device("phone", now=T0).push_to_start_token
    assert send(reg, pts, aps, T0).detail == detail


# -- unregister, rotation ----------------------------------------------------------------------


def test_unregister_marks_token_once() -> None:
    reg, token = started()
    reg.unregister(token, 123)
    reg.unregister(token, 456)
    assert reg.lookup(token).unregistered_at_ms == 123  # type: ignore[union-attr]
    pts = reg.devices["phone"].push_to_start_token
    reg.unregister(pts, 5)
    assert reg.lookup(pts).unregistered_at_ms == 5  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        reg.unregister("ff", 1)


def test_expire_token_keeps_the_earliest_instant() -> None:
    reg, token = started()
    reg.expire_token(token, 5_000)
    reg.expire_token(token, 9_000)  # later: the token was already expired by then
    assert reg.lookup(token).expired_at_ms == 5_000  # type: ignore[union-attr]
    reg.expire_token(token, 1_000)
    assert reg.lookup(token).expired_at_ms == 1_000  # type: ignore[union-attr]
    assert reg.lookup(token).unregistered_at_ms is None  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        reg.expire_token("ff", 1)


def test_rotate_token() -> None:
    reg, token = started()
    reg.token_reports()
    new = reg.rotate_token(token, now=T0 + 10)
    assert new != token and reg.lookup(new).kind is TokenKind.ACTIVITY  # type: ignore[union-attr]
    assert reg.lookup(token).unregistered_at_ms == int((T0 + 10) * 1000)  # type: ignore[union-attr]
    [report] = reg.token_reports()
    assert (report.activity_token, report.issued_at) == (new, T0 + 10)
    assert send(reg, new, update_aps(T0 + 11, 4), T0 + 11).outcome is ActivityOutcome.APPLIED
    with pytest.raises(KeyError):
        reg.rotate_token(token, now=T0 + 12)


# -- snapshot shape, bounds --------------------------------------------------------------------

DEVICE_KEYS = {
    "name",
    "push_to_start_token",
    "tokens",
    "profile",
    "online",
    "back_online_at",
    "budget",
    "stored",
    "stored_dropped",
    "stored_replaced",
    "channels",
    "ignored",
    "events",
    "events_dropped",
    "activities",
    # the app's own pushes (simulator/notifications.py)
    "badge",
    "notifications",
    "notifications_dropped",
    "notifications_replaced",
    "notifications_silent",
    "background_wakes",
    "widget_reloads",
    "widget_reloaded_at",
    "widget",
    "calls",
    "calls_dropped",
    "app_events",
    "app_events_dropped",
}
ACTIVITY_KEYS = {
    "activity_id",
    "token",
    "state",
    "attributes_type",
    "attributes",
    "content_state",
    "last_timestamp",
    "stale_date",
    "dismissal_at",
    "relevance_score",
    "last_alert",
    "applied",
    "ignored",
    "order_violations",
    "held",
    "throttled",
    "delayed",
    "superseded",
    "awaiting_allow",
    "started_at",
    "ended_at",
    "events",
    "events_dropped",
}
EVENT_KEYS = {"at", "event", "timestamp", "detail", "apns_id", "priority"}


def test_snapshot_shape_is_json_ready() -> None:
    reg, token = started()
    reg.add_device("second", channels=["Y2hhbm5lbA=="], now=T0)
    send(reg, token, update_aps(T0 + 1, 1), T0 + 1)
    snap = reg.snapshot(T0 + 2)
    assert [d["name"] for d in snap] == ["phone", "second"]
    assert set(snap[0]) == DEVICE_KEYS and snap[1]["channels"] == ["Y2hhbm5lbA=="]
    [act] = snap[0]["activities"]
    assert set(act) == ACTIVITY_KEYS
    assert all(set(e) == EVENT_KEYS for e in act["events"])
    assert act["state"] in {s.value for s in ActivityState}
    assert json.loads(json.dumps(snap)) == snap
    snap[0]["activities"][0]["content_state"]["score"] = 999  # a copy: no effect on the device
    assert activity(reg, T0 + 2)["content_state"] == {"score": 1}
    assert reg.device_snapshot("nobody", T0) is None


def test_event_log_is_bounded() -> None:
    reg, token = started(make_registry(log_limit=10))
    for i in range(1, 30):
        send(reg, token, update_aps(T0 + i, i), T0 + i)
    act = activity(reg, T0 + 30)
    assert len(act["events"]) == 10 and act["events_dropped"] == 20
    assert act["events"][-1]["timestamp"] == T0 + 29 and act["applied"] == 30


def test_token_reports_are_bounded() -> None:
    reg = make_registry(report_limit=3, max_active=50)
    pts = reg.add_device("phone", now=T0).push_to_start_token
    for i in range(5):
        send(reg, pts, start_aps(T0 + i), T0 + i)
    reports = reg.token_reports()
    assert [r.activity_id for r in reports] == ["phone-3", "phone-4", "phone-5"]
    assert reg.reports_dropped == 2


def test_dismissed_activities_are_pruned_oldest_first() -> None:
    reg = make_registry(max_kept=5, max_active=2, retired_limit=2)
    pts = reg.add_device("phone", now=T0).push_to_start_token
    tokens = []
    for i in range(8):
        now = T0 + 10 * i
        token = send(reg, pts, start_aps(now), now).issued_token
        assert token is not None
        tokens.append(token)
        send(reg, token, end_aps(now + 1, **{"dismissal-date": now}), now + 1)  # dismissed at once
    snap = reg.device_snapshot("phone", T0 + 100)
    assert snap is not None
    assert [a["activity_id"] for a in snap["activities"]] == [f"phone-{i}" for i in range(4, 9)]
    # Pruned tokens keep answering 410 for a while (retired_limit), then are forgotten.
    assert reg.lookup(tokens[0]) is None
    assert reg.lookup(tokens[1]).unregistered_at_ms is not None  # type: ignore[union-attr]
    assert reg.lookup(tokens[7]).unregistered_at_ms is not None  # type: ignore[union-attr]


def test_ended_activities_are_dismissed_early_when_over_the_cap() -> None:
    reg = make_registry(max_kept=3, max_active=1)
    pts = reg.add_device("phone", now=T0).push_to_start_token
    for i in range(5):
        token = send(reg, pts, start_aps(T0 + i), T0 + i).issued_token
        assert token is not None
        send(reg, token, end_aps(T0 + i + 0.5), T0 + i + 0.5)  # stays on the Lock Screen 4 h
    snap = reg.device_snapshot("phone", T0 + 10)
    assert snap is not None and len(snap["activities"]) == 3


def test_due_queue_stays_bounded_under_many_updates() -> None:
    reg, token = started()
    for i in range(1, 5000):
        send(reg, token, update_aps(T0 + i, i, **{"stale-date": T0 + i + 60}), T0 + i)
    assert len(reg._due) <= 2 * 1 + 64 + 1
    reg.advance(T0 + 5000 + 59)
    assert activity(reg, T0 + 5000 + 59)["state"] == "stale"


def test_push_transition_table_is_complete() -> None:
    assert set(_PUSH_TRANSITIONS) == {(s, e) for s in ActivityState for e in PushEvent}


# -- property: the order invariant -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=40))
def test_applied_timestamps_strictly_increase(offsets: list[int]) -> None:
    reg, token = started()
    for i, offset in enumerate(offsets):
        send(reg, token, update_aps(T0 + offset, i), T0 + 50 + i)
    act = activity(reg, T0 + 100)
    applied = [e["timestamp"] for e in act["events"] if e["event"] == "update"]
    assert all(a < b for a, b in itertools.pairwise(applied))
    best = max(offsets)
    assert act["content_state"] == {"score": offsets.index(best)}  # ties: the first one wins
    assert act["last_timestamp"] == T0 + best
    assert act["applied"] == 1 + len(applied)
    assert act["ignored"] == act["order_violations"] == len(offsets) - len(applied)


def test_a_second_start_for_the_same_activity_id_is_ended_by_the_app() -> None:
    reg = make_registry()
    reg.add_device("phone", now=T0)
    pts = reg.devices["phone"].push_to_start_token
    first = send(reg, pts, start_aps(T0, attributes={"activity_id": "deploy-7"}), T0)
    assert first.outcome is ActivityOutcome.STARTED
    again = send(reg, pts, start_aps(T0 + 1, attributes={"activity_id": "deploy-7"}), T0 + 1)
    assert (again.outcome, again.detail) == (ActivityOutcome.IGNORED, "duplicate-start")
    other = send(reg, pts, start_aps(T0 + 2, attributes={"activity_id": "deploy-8"}), T0 + 2)
    assert other.outcome is ActivityOutcome.STARTED
    assert len(reg.token_reports()) == 2
