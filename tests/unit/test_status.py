"""Delivery status: each recipient's state from its row (engine/server/service/status.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from engine.delivery.budget import BudgetState
from engine.delivery.items import Hold, HoldReason
from engine.server.contract import errors
from engine.server.contract.responses import HeldReason
from engine.server.service.state import Activity, Recipient, Registry
from engine.server.service.status import DeliveryStatus, held_reason, recipient_state
from engine.server.store.records import ActivityRow, RecipientRow, StreamRow, pack_state

TOKEN = "ab" * 32


def activity(*, version: int = 2, ended: bool = False) -> Activity:
    return Activity(
        ActivityRow(
            activity_id="a1",
            stream_key="build-1",
            type="value",
            state=pack_state({"title": "t"}),
            alert=None,
            version=version,
            ended=ended,
            started_at=0.0,
            updated_at=1_800_000_000.0,
            ended_at=None,
            dismissal_date=None,
            update_count=0,
            channels=[],
            metadata=None,
            tags=None,
        )
    )


def recipient(
    *, started: bool = True, token: str | None = "cd" * 32, sent: int = 2, dead: bool = False
) -> Recipient:
    return Recipient(
        RecipientRow(
            activity_id="a1",
            device_id="d1",
            start_token=TOKEN,
            update_token=token,
            started=started,
            sent_version=sent,
            dead=dead,
        )
    )


@pytest.mark.parametrize(
    ("rec", "ended", "state"),
    [
        (recipient(dead=True), False, "dead"),
        (recipient(dead=True, started=False), False, "dead"),
        (recipient(started=False, token=None, sent=0), False, "starting"),
        (recipient(token=None, sent=1), False, "awaiting_token"),  # the phone never reported one
        (recipient(token=None, sent=1), True, "awaiting_token"),  # its end waits for it too
        (recipient(sent=1), False, "live"),
        (recipient(sent=2), False, "live"),
        (recipient(sent=1), True, "live"),  # the end is not confirmed yet
        (recipient(sent=2), True, "ended"),
    ],
)
def test_each_row_has_one_state(rec: Recipient, ended: bool, state: str) -> None:
    assert recipient_state(activity(ended=ended), rec) == state


@pytest.mark.parametrize(
    ("dismissal", "now", "state"),
    [(None, 2e9, "ended"), (100, 99.0, "ended"), (100, 100.0, "dismissed"), (100, None, "ended")],
)
def test_an_ended_activity_is_dismissed_once_its_dismissal_time_passes(
    dismissal: int | None, now: float | None, state: str
) -> None:
    act = activity(ended=True)
    act.row.dismissal_date = dismissal
    assert recipient_state(act, recipient(sent=2), now) == state


def test_the_status_of_an_activity_and_of_its_stream() -> None:
    reg = Registry()
    act = activity()
    act.recipients = {"d2": recipient(sent=1), "d1": recipient(token=None, sent=1)}
    reg.activities["a1"] = act
    reg.streams["build-1"] = StreamRow(stream_key="build-1", activity_id="a1")
    reg.streams["idle"] = StreamRow(stream_key="idle", activity_id=None)
    status = DeliveryStatus(reg, lambda: 1_800_000_100.0)
    answer = status.activity("a1")
    assert [(d.device_id, d.state, d.current) for d in answer.devices] == [
        ("d1", "awaiting_token", False),
        ("d2", "live", False),
    ]
    assert (answer.version, answer.updated_at) == (2, "2027-01-15T08:00:00.000Z")
    assert answer.content_state == {"title": "t"}  # the latest accepted state, as pushed
    assert status.stream("build-1") == answer
    for call, name in ((status.activity, "nope"), (status.stream, "nope"), (status.stream, "idle")):
        with pytest.raises(errors.NotFound, match=name):
            call(name)


def test_pages_by_id_and_by_state() -> None:
    reg = Registry()
    for n in range(5):
        act = activity()
        act.row.activity_id = f"a{n}"
        act.recipients = {"d1": recipient(token=None if n % 2 else "cd" * 32, sent=1)}
        reg.activities[f"a{n}"] = act
    status = DeliveryStatus(reg, lambda: 1_800_000_100.0)
    first = status.page(None, 2, None)
    assert [a.activity_id for a in first.activities] == ["a0", "a1"] and first.next == "a1"
    rest = status.page(None, 10, first.next)
    assert [a.activity_id for a in rest.activities] == ["a2", "a3", "a4"] and rest.next is None
    waiting = status.page("awaiting_token", 100, None)
    assert [a.activity_id for a in waiting.activities] == ["a1", "a3"]
    assert status.page("dead", 100, None).activities == []
    for state, limit, field in (("asleep", 10, "state"), (None, 0, "limit"), (None, 501, "limit")):
        with pytest.raises(errors.BadRequest, match=field):
            status.page(state, limit, None)


def test_the_most_recently_updated_come_first_for_the_page() -> None:
    reg = Registry()
    for n, updated in enumerate((30.0, 10.0, 50.0, 30.0, 20.0)):
        act = activity()
        act.row.activity_id, act.row.updated_at = f"a{n}", 1_800_000_000.0 + updated
        act.recipients = {"d1": recipient()}
        reg.activities[f"a{n}"] = act
    status = DeliveryStatus(reg, lambda: 1_800_000_100.0)
    newest = status.recent(3)
    assert [a.activity_id for a in newest] == ["a2", "a0", "a3"]  # a tie goes by id
    assert newest[0].devices[0].state == "live"
    assert [a.activity_id for a in status.recent(100)] == ["a2", "a0", "a3", "a4", "a1"]
    assert len(status.recent(0)) == 1  # clamped to 1..500
    assert DeliveryStatus(Registry(), lambda: 0.0).recent(50) == []


@pytest.mark.parametrize(
    ("crowded", "answered_at", "now", "state", "is_overdue"),
    [
        (False, 1000.0, 1120.0, "awaiting_token", False),  # exactly the timeout: not yet
        (False, 1000.0, 1120.5, "awaiting_token", True),  # Allow never tapped
        (True, 1000.0, 1100.0, "awaiting_token", False),  # full device, still in time
        (True, 1000.0, 1121.0, "refused_limit", True),  # full device: iOS ignored the start
        (True, None, 121.0, "refused_limit", True),  # after a restart: from the start (t=0)
        (True, None, 119.0, "awaiting_token", False),
    ],
)
def test_a_missing_update_token_is_overdue_after_the_timeout(
    crowded: bool, answered_at: float | None, now: float, state: str, is_overdue: bool
) -> None:
    reg = Registry()
    act = activity()
    rec = recipient(token=None, sent=1)
    rec.crowded, rec.last_at = crowded, answered_at
    act.recipients = {"d1": rec}
    reg.activities["a1"] = act
    status = DeliveryStatus(reg, lambda: now, token_timeout=120.0)
    (device,) = status.activity("a1").devices
    assert (device.state, device.overdue) == (state, is_overdue)
    assert device.waiting_since is not None
    assert [a.activity_id for a in status.page(state, 10, None).activities] == ["a1"]
    # Without a timeout nothing is ever overdue.
    assert recipient_state(act, rec, now) == "awaiting_token"


@pytest.mark.parametrize(
    ("budget", "ended", "state"),
    [
        (BudgetState(20, low=False, spent=False), False, "live"),
        (BudgetState(5, low=True, spent=False), False, "throttled"),
        (BudgetState(0, low=True, spent=True), False, "throttled"),
        (None, False, "live"),  # budgets off
        (BudgetState(0, low=True, spent=True), True, "live"),  # an end is never held back
    ],
)
def test_a_live_device_with_a_low_budget_is_throttled(
    budget: BudgetState | None, ended: bool, state: str
) -> None:
    asked: list[tuple[str, str]] = []

    def budgets(activity_id: str, device_id: str) -> BudgetState | None:
        asked.append((activity_id, device_id))
        return budget

    act = activity(ended=ended)
    rec = recipient(sent=1)
    act.recipients = {"d1": rec}
    assert recipient_state(act, rec, 1.0, budget=budgets) == state
    assert asked == ([] if ended else [("a1", "d1")])
    status = DeliveryStatus(Registry(), lambda: 1.0, budget=budgets)
    (device,) = status._status(act, 1.0).devices
    assert (device.state, device.waiting_since, device.overdue) == (state, None, False)


@pytest.mark.parametrize("reason", list(HoldReason))
def test_every_engine_hold_is_an_api_word(reason: HoldReason) -> None:
    act, rec = activity(version=3), recipient(sent=2)
    hold = Hold(reason, 10.0)
    assert held_reason(act, rec, "live", lambda _a, _d: hold) == reason.value
    assert reason.value in get_args(HeldReason)


def test_held_says_why_the_newest_content_waits_and_nothing_once_settled() -> None:
    paced = Hold(HoldReason.PACED, 10.0)
    act = activity(version=3)
    assert held_reason(act, recipient(sent=2), "live", None) is None  # no engine to ask
    assert held_reason(act, recipient(sent=2), "live", lambda _a, _d: None) is None
    waiting = recipient(token=None, sent=2)
    assert held_reason(act, waiting, "awaiting_token", None) == "awaiting_token"
    assert held_reason(act, recipient(token=None, sent=3), "awaiting_token", None) is None
    for state in ("dead", "ended", "dismissed"):
        assert held_reason(act, recipient(sent=2), state, lambda _a, _d: paced) is None
