"""Delivery status: each recipient's state from its row (engine/server/service/status.py)."""

from __future__ import annotations

import pytest

from engine.server.contract import errors
from engine.server.service.state import Activity, Recipient, Registry
from engine.server.service.status import DeliveryStatus, recipient_state
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
