"""Notification pushes: exact bodies, size checks, and how the coalescer queues them.

A notification is an `alert` push with no `aps.timestamp`; its lane's update slot keeps only the
newest (a replacement supersedes the pending original) and lanes never merge (two notifications
are two lanes). It does not spend the ActivityKit priority budget.
"""

from __future__ import annotations

import json

import pytest

from engine.apns.reasons import Outcome
from engine.apns.wire import MAX_DEVICE_PAYLOAD
from engine.delivery.budget import PriorityBudget
from engine.delivery.coalescer import Coalescer
from engine.delivery.items import Item
from engine.notification import Notification, prepare_notification
from engine.payload import EventKind, InvalidContent, PayloadTooLarge
from engine.results import DeliveryStatus

W0 = 1_800_000_000


def test_body_layout_and_headers() -> None:
    note = Notification(
        title="Deploy",
        subtitle="prod",
        body="v2 is live",
        badge=3,
        sound="default",
        interruption_level="time-sensitive",
        mutable_content=True,
        extra={"lockstep": {"notification_id": "pn_1"}},
        collapse_id="pn_1",
    )
    prepared = prepare_notification(note)
    body = prepared.render(W0)
    assert json.loads(body) == {
        "aps": {
            "alert": {"title": "Deploy", "subtitle": "prod", "body": "v2 is live"},
            "badge": 3,
            "sound": "default",
            "interruption-level": "time-sensitive",
            "mutable-content": 1,
        },
        "lockstep": {"notification_id": "pn_1"},
    }
    assert b"timestamp" not in body and prepared.size == len(body)
    assert prepared.event is EventKind.ALERT and prepared.push_type == "alert"
    assert prepared.collapse_id == "pn_1" and prepared.priority == 10


def test_badge_only_and_passive_priority() -> None:
    badge = prepare_notification(Notification(badge=0))
    assert json.loads(badge.render(W0)) == {"aps": {"badge": 0}}
    quiet = prepare_notification(Notification(title="t", interruption_level="passive"))
    assert quiet.priority == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "alert"),
        ({"title": "t", "badge": -1}, "badge"),
        ({"title": "t", "badge": 2**31}, "badge"),
        ({"title": "t", "badge": True}, "badge"),
        ({"title": "t", "interruption_level": "loud"}, "interruption_level"),
        ({"title": "t", "extra": {"aps": {}}}, "extra"),
        ({"title": "t", "collapse_id": "x" * 65}, "collapse_id"),
        ({"title": "t", "collapse_id": ""}, "collapse_id"),
    ],
)
def test_invalid_notifications_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidContent) as info:
        Notification(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_oversized_body_names_its_exact_size() -> None:
    note = Notification(title="t", body="x" * MAX_DEVICE_PAYLOAD)
    with pytest.raises(PayloadTooLarge) as info:
        prepare_notification(note)
    assert info.value.size > MAX_DEVICE_PAYLOAD and info.value.limit == MAX_DEVICE_PAYLOAD
    assert str(info.value).startswith("alert payload is")


def _item(title: str, seq: int, collapse_id: str = "pn_1") -> Item:
    note = Notification(title=title, collapse_id=collapse_id)
    return Item.build(prepare_notification(note), "tok", seq)


def test_a_replacement_supersedes_the_pending_original_on_its_lane() -> None:
    co = Coalescer()
    first, second = _item("one", 1), _item("two", 2)
    assert co.offer(("pn_1", "dev"), first, now=0) == []
    settled = co.offer(("pn_1", "dev"), second, now=0)
    assert [(s.item, s.status) for s in settled] == [(first, DeliveryStatus.SUPERSEDED)]
    (dispatch,) = co.take_ready(now=0, wall_now=W0, limit=10)
    assert dispatch.item is second and json.loads(dispatch.body)["aps"]["alert"]["title"] == "two"


def test_two_notifications_are_never_merged() -> None:
    co = Coalescer()
    assert co.offer(("pn_1", "dev"), _item("one", 1), now=0) == []
    assert co.offer(("pn_2", "dev"), _item("two", 2, "pn_2"), now=0) == []
    sent = co.take_ready(now=0, wall_now=W0, limit=10)
    assert sorted(d.item.seq for d in sent) == [1, 2]
    for d in sent:
        assert [s.status for s in co.complete(d, Outcome.ACCEPTED, now=0)] == [
            DeliveryStatus.ACCEPTED
        ]


def test_notifications_do_not_spend_the_activity_budget() -> None:
    budget = PriorityBudget(2, 1)
    co = Coalescer(budget=budget)
    for n in range(5):
        co.offer((f"pn_{n}", "dev"), _item(f"n{n}", n, f"pn_{n}"), now=0)
    sent = co.take_ready(now=0, wall_now=W0, limit=10)
    assert len(sent) == 5 and all(d.priority == 10 for d in sent)
    state = co.budget(("pn_0", "dev"), now=0)
    assert state is None or not state.low


def test_values_that_cannot_be_sent_are_refused() -> None:
    with pytest.raises(InvalidContent) as info:
        Notification(title=3)  # type: ignore[arg-type]
    assert info.value.field == "title"
    with pytest.raises(InvalidContent) as info:
        prepare_notification(Notification(title="t", extra={"when": object()}))
    assert info.value.field == "extra"
