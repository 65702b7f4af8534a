"""The app side of a simulated iPhone (simulator.notifications): one table per push type."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.activity import PushFacts
from simulator.devices import ActivityOutcome, DeviceRegistry
from simulator.notifications import DAY, HOUR, WIDGET_METRICS, AppDetail, AppResult, AppSide
from simulator.profile import DeviceProfile, parse_profile
from simulator.validation import TokenKind

T0 = 1_700_000_000.0
BUNDLE = "com.example.app"


def app(limit: int = 50, **profile: Any) -> AppSide:
    return AppSide(DeviceProfile(**profile), limit)


def push(
    side: AppSide,
    aps: Any,
    *,
    kind: TokenKind = TokenKind.DEVICE,
    push_type: str = "alert",
    now: float = T0,
    priority: int = 10,
    collapse_id: str | None = None,
    apns_id: str = "id-1",
    extra: dict[str, Any] | None = None,
) -> AppResult:
    payload = {"aps": aps, **(extra or {})}
    return side.receive(kind, push_type, payload, collapse_id, PushFacts(now, priority, apns_id))


def last_event(side: AppSide) -> dict[str, Any]:
    entry: dict[str, Any] = side.snapshot()["app_events"][-1]
    return entry


# -- alert ----------------------------------------------------------------------------------------

LOC = {"loc-key": "GAME_%@", "loc-args": ["A", "B"]}

# (id, aps, the entry's fields that matter: None means no entry; badge after)
ALERTS: list[tuple[str, dict[str, Any], dict[str, Any] | None, int]] = [
    ("string alert is the body", {"alert": "Hi"}, {"title": None, "body": "Hi"}, 0),
    (
        "title, subtitle, body",
        {"alert": {"title": "T", "subtitle": "S", "body": "B"}},
        {"title": "T", "subtitle": "S", "body": "B"},
        0,
    ),
    ("loc objects kept as given", {"alert": {"title": LOC, "body": LOC}}, {"title": LOC}, 0),
    (
        "loc keys gathered into objects",
        {"alert": {"title-loc-key": "T_%@", "title-loc-args": ["x"], "loc-key": "B"}},
        {
            "title": {"loc-key": "T_%@", "loc-args": ["x"]},
            "body": {"loc-key": "B", "loc-args": []},
            "subtitle": None,
        },
        0,
    ),
    (
        "subtitle loc key",
        {"alert": {"subtitle-loc-key": "S"}},
        {"subtitle": {"loc-key": "S", "loc-args": []}},
        0,
    ),
    (
        "sound, badge, thread, category",
        {
            "alert": {"body": "B"},
            "sound": "default",
            "badge": 4,
            "thread-id": "t1",
            "category": "REPLY",
        },
        {"sound": "default", "badge": 4, "thread_id": "t1", "category": "REPLY"},
        4,
    ),
    (
        "critical sound object",
        {"alert": "x", "sound": {"critical": 1, "name": "a.caf", "volume": 1.0}},
        {"sound": {"critical": 1, "name": "a.caf", "volume": 1.0}},
        0,
    ),
    ("no level is active", {"alert": "x"}, {"interruption_level": "active"}, 0),
    (
        "passive",
        {"alert": "x", "interruption-level": "passive"},
        {"interruption_level": "passive", "interruption_level_sent": "passive"},
        0,
    ),
    (
        "time-sensitive",
        {"alert": "x", "interruption-level": "time-sensitive"},
        {"interruption_level": "time-sensitive"},
        0,
    ),
    (
        "critical",
        {"alert": "x", "interruption-level": "critical"},
        {"interruption_level": "critical"},
        0,
    ),
    (
        "unknown level shown as active",
        {"alert": "x", "interruption-level": "urgent"},
        {"interruption_level": "active", "interruption_level_sent": "urgent"},
        0,
    ),
    ("badge only", {"badge": 7}, None, 7),
    ("sound only", {"sound": "default"}, None, 0),
    ("empty title and body", {"alert": {"title": "", "body": ""}, "badge": 2}, None, 2),
]


@pytest.mark.parametrize(
    ("aps", "fields", "badge"), [r[1:] for r in ALERTS], ids=[r[0] for r in ALERTS]
)
def test_alert(aps: dict[str, Any], fields: dict[str, Any] | None, badge: int) -> None:
    side = app()
    result = push(side, aps, collapse_id=None, apns_id="abc")
    snap = side.snapshot()
    assert snap["badge"] == badge
    if fields is None:
        assert result == AppResult(True, AppDetail.NO_ALERT)
        assert snap["notifications"] == [] and snap["notifications_silent"] == 1
        return
    assert result == AppResult(True, AppDetail.SHOWN)
    [entry] = snap["notifications"]
    assert entry["apns_id"] == "abc" and entry["at"] == T0
    assert {k: entry[k] for k in fields} == fields
    assert snap["notifications_silent"] == 0 and snap["app_events"] == []


@pytest.mark.parametrize(
    ("aps", "key"),
    [
        ({"alert": 5}, "alert"),
        ({"alert": ["x"]}, "alert"),
        ({"alert": {"title": 5}}, "alert.title"),
        ({"alert": {"body": True}}, "alert.body"),
        ({"alert": "x", "badge": -1}, "badge"),
        ({"alert": "x", "badge": True}, "badge"),
        ({"alert": "x", "badge": "3"}, "badge"),
        ({"alert": "x", "badge": 2.0}, "badge"),
        ({"alert": "x", "sound": 1}, "sound"),
        ({"alert": "x", "interruption-level": 2}, "interruption-level"),
        ({"alert": "x", "thread-id": 2}, "thread-id"),
        ({"alert": "x", "category": ["c"]}, "category"),
    ],
)
def test_malformed_alert_is_ignored_naming_the_key(aps: dict[str, Any], key: str) -> None:
    side = app()
    side.badge = 3
    result = push(side, aps)
    assert result == AppResult(False, f"bad-payload (aps.{key})")
    snap = side.snapshot()
    assert snap["notifications"] == [] and snap["badge"] == 3
    assert last_event(side)["detail"] == f"bad-payload (aps.{key})"
    assert last_event(side)["event"] == "ignored"


@pytest.mark.parametrize("aps", [{}, {"content-available": 1}, {"alert": {}}, "not an object"])
def test_alert_push_with_nothing_to_show(aps: Any) -> None:
    side = app()
    result = push(side, aps, priority=5, apns_id="quiet")
    assert result == AppResult(False, AppDetail.NOTHING_TO_SHOW)
    snap = side.snapshot()
    assert snap["notifications"] == [] and snap["notifications_silent"] == 1
    assert snap["app_events"] == [
        {
            "at": T0,
            "event": "ignored",
            "timestamp": None,
            "detail": "nothing-to-show",
            "apns_id": "quiet",
            "priority": 5,
        }
    ]


def test_badge_zero_clears_it() -> None:
    side = app()
    push(side, {"alert": "a", "badge": 5})
    push(side, {"alert": "b"})  # no badge key: unchanged
    assert side.badge == 5
    push(side, {"badge": 0})
    assert side.badge == 0


def test_collapse_id_replaces_the_earlier_notification() -> None:
    side = app()
    push(side, {"alert": "score 0-0"}, collapse_id="match", apns_id="1")
    push(side, {"alert": "other"}, collapse_id="news", apns_id="2")
    push(side, {"alert": "plain"}, apns_id="3")
    result = push(side, {"alert": "score 1-0"}, collapse_id="match", apns_id="4", now=T0 + 5)
    assert result == AppResult(True, AppDetail.REPLACED)
    again = push(side, {"alert": "score 2-0"}, collapse_id="match", apns_id="5", now=T0 + 9)
    assert again.detail == AppDetail.REPLACED
    snap = side.snapshot()
    assert [n["apns_id"] for n in snap["notifications"]] == ["2", "3", "5"]  # newest last
    assert snap["notifications"][-1]["body"] == "score 2-0"
    assert snap["notifications"][-1]["replaced"] == 2
    assert snap["notifications_replaced"] == 2


def test_notification_list_is_bounded() -> None:
    side = app(limit=3)
    for n in range(5):
        push(side, {"alert": f"n{n}"}, apns_id=str(n))
    snap = side.snapshot()
    assert [n["body"] for n in snap["notifications"]] == ["n2", "n3", "n4"]
    assert snap["notifications_dropped"] == 2


@given(st.lists(st.tuples(st.sampled_from([None, "a", "b", "c"]), st.booleans()), max_size=40))
def test_list_accounting(pushes: list[tuple[str | None, bool]]) -> None:
    """Every shown push is in the list, dropped or replaced; collapse ids in the list are unique."""
    side = app(limit=4)
    shown = 0
    for n, (collapse_id, has_alert) in enumerate(pushes):
        aps = {"alert": f"n{n}"} if has_alert else {"badge": n}
        result = push(side, aps, collapse_id=collapse_id, apns_id=str(n))
        shown += result.detail in (AppDetail.SHOWN, AppDetail.REPLACED)
    snap = side.snapshot()
    listed = snap["notifications"]
    assert len(listed) <= 4
    assert shown == len(listed) + snap["notifications_dropped"] + snap["notifications_replaced"]
    ids = [n["collapse_id"] for n in listed if n["collapse_id"] is not None]
    assert len(ids) == len(set(ids))
    assert [int(n["apns_id"]) for n in listed] == sorted(int(n["apns_id"]) for n in listed)


# -- background -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aps", "priority", "detail"),
    [
        ({"content-available": 1}, 5, AppDetail.WOKEN),
        ({"content-available": 1}, 1, AppDetail.WOKEN),
        ({"content-available": 1, "alert": "ignored here"}, 5, AppDetail.WOKEN),
        ({"content-available": 1}, 10, AppDetail.BACKGROUND_PRIORITY),
        ({}, 5, AppDetail.NOT_CONTENT_AVAILABLE),
        ({"content-available": 0}, 5, AppDetail.NOT_CONTENT_AVAILABLE),
        ({"content-available": True}, 5, AppDetail.NOT_CONTENT_AVAILABLE),
        ({"content-available": "1"}, 5, AppDetail.NOT_CONTENT_AVAILABLE),
    ],
)
def test_background(aps: dict[str, Any], priority: int, detail: AppDetail) -> None:
    side = app()
    result = push(side, aps, push_type="background", priority=priority)
    woken = detail is AppDetail.WOKEN
    assert result == AppResult(woken, detail)
    snap = side.snapshot()
    assert snap["background_wakes"] == int(woken)
    assert snap["notifications"] == []  # a background push never shows anything
    assert [e["detail"] for e in snap["app_events"]] == ([] if woken else [detail])


def wake(side: AppSide, now: float) -> AppResult:
    return push(side, {"content-available": 1}, push_type="background", priority=5, now=now)


def test_background_budget_refills_one_every_period_over_capacity() -> None:
    side = app(background_budget=3)
    assert [wake(side, T0).delivered for _ in range(4)] == [True, True, True, False]
    assert last_event(side)["detail"] == "background-budget"
    assert not wake(side, T0 + HOUR / 3 - 1).delivered  # one regained every 1,200 s
    assert wake(side, T0 + HOUR / 3).delivered
    assert not wake(side, T0 + HOUR / 3).delivered
    # An hour of quiet gives the whole budget back, never more.
    assert [wake(side, T0 + 3 * HOUR).delivered for _ in range(4)] == [True, True, True, False]
    assert side.snapshot()["background_wakes"] == 7


def test_budgets_off_never_drop() -> None:
    side = app(background_budget=1, widget_reload_budget=1, budgets=False)
    assert all(wake(side, T0).delivered for _ in range(50))
    reloads = [
        push(side, {"content-changed": True}, kind=TokenKind.WIDGETS, push_type="widgets")
        for _ in range(50)
    ]
    assert all(r.delivered for r in reloads)
    assert side._wake_budget.remaining(T0) >= 2**31 - 1  # an idealised phone: never spent


# -- voip -----------------------------------------------------------------------------------------


def test_every_voip_push_rings() -> None:
    side = app(limit=2)
    for n in range(3):
        result = push(
            side,
            {},
            kind=TokenKind.VOIP,
            push_type="voip",
            now=T0 + n,
            apns_id=f"call-{n}",
            extra={"caller": f"+4670000000{n}"},
        )
        assert result == AppResult(True, AppDetail.CALL)
    snap = side.snapshot()
    assert snap["calls"] == [
        {"at": T0 + 1, "apns_id": "call-1", "payload": {"aps": {}, "caller": "+46700000001"}},
        {"at": T0 + 2, "apns_id": "call-2", "payload": {"aps": {}, "caller": "+46700000002"}},
    ]
    assert snap["calls_dropped"] == 1


# -- widgets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aps", "extra", "detail"),
    [
        ({"content-changed": True}, None, AppDetail.RELOADED),
        ({"content-changed": 1}, None, AppDetail.NOT_CONTENT_CHANGED),
        ({"content-changed": False}, None, AppDetail.NOT_CONTENT_CHANGED),
        ({"content-changed": True, "alert": "x"}, None, AppDetail.NOT_CONTENT_CHANGED),
        ({"content-changed": True}, {"data": 1}, AppDetail.NOT_CONTENT_CHANGED),
        ({}, None, AppDetail.NOT_CONTENT_CHANGED),
    ],
)
def test_widgets_body(aps: dict[str, Any], extra: dict[str, Any] | None, detail: str) -> None:
    side = app()
    result = push(side, aps, kind=TokenKind.WIDGETS, push_type="widgets", extra=extra)
    reloaded = detail == AppDetail.RELOADED
    assert result == AppResult(reloaded, detail)
    assert side.snapshot()["widget_reloads"] == int(reloaded)


def test_widget_reload_budget_is_per_day() -> None:
    side = app(widget_reload_budget=40)

    def reload(now: float) -> bool:
        aps = {"content-changed": True}
        return push(side, aps, kind=TokenKind.WIDGETS, push_type="widgets", now=now).delivered

    assert sum(reload(T0) for _ in range(45)) == 40
    assert last_event(side)["detail"] == "widget-budget"
    assert not reload(T0 + DAY / 40 - 1)
    assert reload(T0 + DAY / 40)
    assert side.snapshot()["widget_reloads"] == 41


def test_the_widget_shows_what_its_extension_read() -> None:
    side = app()
    assert side.snapshot()["widget"] == {"metrics": {}, "shown_at": None, "error": None}
    side.show_widget({"b": "green", "a": 1.5}, T0 + 1)
    side.widget_failed("HTTP 503", T0 + 2)  # a later read fails: the values stay
    widget = side.snapshot()["widget"]
    assert widget["metrics"] == {"a": 1.5, "b": "green"} and widget["shown_at"] == T0 + 1
    assert widget["error"].startswith("HTTP 503")
    side.show_widget({f"k{n:03}": n for n in range(100)}, T0 + 3)
    assert len(side.snapshot()["widget"]["metrics"]) == WIDGET_METRICS  # bounded
    side.snapshot()["widget"]["metrics"].clear()  # a snapshot is a copy
    assert side.snapshot()["widget"]["error"] is None and side.snapshot()["widget"]["metrics"]


def test_a_reload_records_when_it_happened_and_a_restart_keeps_it() -> None:
    side = app()
    assert side.snapshot()["widget_reloaded_at"] is None
    push(side, {"content-changed": True}, kind=TokenKind.WIDGETS, push_type="widgets", now=T0 + 5)
    push(side, {"content-changed": 1}, kind=TokenKind.WIDGETS, push_type="widgets", now=T0 + 9)
    assert side.snapshot()["widget_reloaded_at"] == T0 + 5  # an ignored push reloads nothing
    copy = app()
    copy.restore(side.to_state())
    assert copy.snapshot()["widget_reloaded_at"] == T0 + 5
    older = side.to_state()
    del older["widget_reloaded_at"]  # a state file from before the field existed
    copy.restore(older)
    assert copy.snapshot()["widget_reloaded_at"] is None


# -- routing, buckets, bounds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "push_type"),
    [
        (TokenKind.DEVICE, "voip"),
        (TokenKind.DEVICE, "widgets"),
        (TokenKind.DEVICE, "liveactivity"),
        (TokenKind.VOIP, "alert"),
        (TokenKind.WIDGETS, "background"),
        (TokenKind.ACTIVITY, "alert"),
    ],
)
def test_a_push_type_the_token_does_not_take_is_ignored(kind: TokenKind, push_type: str) -> None:
    side = app()
    result = push(side, {"alert": "x"}, kind=kind, push_type=push_type)
    assert result == AppResult(False, AppDetail.WRONG_PUSH_TYPE)
    assert side.snapshot()["notifications"] == [] and side.snapshot()["calls"] == []


def test_event_log_is_bounded() -> None:
    side = app(limit=2)
    for _ in range(5):
        push(side, {})
    snap = side.snapshot()
    assert len(snap["app_events"]) == 2 and snap["app_events_dropped"] == 3


def test_the_app_side_survives_a_restart() -> None:
    side = app(limit=3)
    for n in range(5):
        push(side, {"alert": {"title": f"n{n}"}, "badge": n})
    push(side, {"content-available": 1}, push_type="background", priority=5, now=T0 + 1)
    copy = app(limit=3)
    copy.restore(side.to_state())
    assert copy.snapshot() == side.snapshot()
    assert copy.to_state() == side.to_state()


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="limit"):
        AppSide(DeviceProfile(), 0)
    with pytest.raises(ValueError, match="background_budget must be at least 1 per hour"):
        parse_profile({"background_budget": 0})
    with pytest.raises(ValueError, match="widget_reload_budget must be at least 1 per day"):
        parse_profile({"widget_reload_budget": 0})
    assert parse_profile({"background_budget": 6}).background_budget == 6


# -- through the device registry ------------------------------------------------------------------


def test_registry_routes_app_tokens_to_the_app_side() -> None:
    reg = DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(1))
    device = reg.add_device("phone", now=T0)
    tokens = device.app_tokens
    cases: list[tuple[TokenKind, str, dict[str, Any], int, str]] = [
        (TokenKind.DEVICE, "alert", {"aps": {"alert": "hello", "badge": 1}}, 10, "shown"),
        (TokenKind.DEVICE, "background", {"aps": {"content-available": 1}}, 5, "woken"),
        (TokenKind.VOIP, "voip", {"aps": {}, "id": "c1"}, 10, "call"),
        (TokenKind.WIDGETS, "widgets", {"aps": {"content-changed": True}}, 10, "reloaded"),
        (TokenKind.WIDGETS, "widgets", {"aps": {"content-changed": 1}}, 10, "not-content-changed"),
    ]
    for kind, push_type, payload, priority, detail in cases:
        outcome = reg.deliver(
            tokens[kind],
            payload,
            now=T0,
            priority=priority,
            apns_id=detail,
            push_type=push_type,
            collapse_id=None,
        )
        expected = ActivityOutcome.IGNORED if detail.startswith("not") else ActivityOutcome.APPLIED
        assert (outcome.device, outcome.activity_id) == ("phone", None)
        assert (outcome.outcome, outcome.detail) == (expected, detail)
    snap = reg.device_snapshot("phone", T0)
    assert snap is not None
    assert snap["badge"] == 1 and [n["body"] for n in snap["notifications"]] == ["hello"]
    assert (snap["background_wakes"], snap["widget_reloads"], len(snap["calls"])) == (1, 1, 1)
    assert [e["detail"] for e in snap["app_events"]] == ["not-content-changed"]
    assert snap["activities"] == [] and snap["ignored"] == 0
    assert json.loads(json.dumps(snap)) == snap
