"""Outbox bookkeeping: what an APNs result does to a recipient (no I/O: fake engine and store)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from engine.apns.reasons import Outcome, Reason
from engine.delivery.items import LaneError
from engine.results import DeliveryResult, DeliveryStatus
from engine.server.contract import models
from engine.server.service.devices import Devices
from engine.server.service.outbox import Outbox
from engine.server.service.state import Activity, Recipient, Registry
from engine.server.store.records import ActivityRow, DeviceRow, Op, RecipientRow, pack_state

TOKEN = "ab" * 32


class NullStore:
    """Accepts every write; remembers the ops."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    async def write(self, ops: Sequence[Op]) -> None:
        self.ops.extend(ops)

    async def commit(self, ops: Sequence[Op], undo: object) -> None:
        """`StoreGuard.commit`: never fails here, so nothing is rolled back."""
        await self.write(ops)

    def stats(self) -> dict[str, float]:
        return {}


class NoEngine:
    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing is submitted in these tests")


def world(update_token: str | None) -> tuple[Registry, Activity, Recipient, Outbox, NullStore]:
    reg = Registry()
    reg.devices["d1"] = DeviceRow(
        device_id="d1", name="d1", push_to_start_token=TOKEN, channels=[], registered_at=0.0
    )
    row = ActivityRow(
        activity_id="a1",
        stream_key=None,
        type="value",
        state=pack_state({"title": "t"}),
        alert=None,
        version=1,
        ended=False,
        started_at=0.0,
        updated_at=0.0,
        ended_at=None,
        dismissal_date=None,
        update_count=0,
        channels=[],
        metadata=None,
        tags=None,
    )
    act = Activity(row)
    rec = Recipient(
        RecipientRow(
            activity_id="a1",
            device_id="d1",
            start_token=TOKEN,
            update_token=update_token,
            started=update_token is not None,
            sent_version=0,
            dead=False,
        )
    )
    act.recipients["d1"] = rec
    reg.activities["a1"] = act
    store = NullStore()
    outbox = Outbox(NoEngine(), store, reg, attributes_type="T", wall_clock=lambda: 0.0)  # type: ignore[arg-type]
    return reg, act, rec, outbox, store


def gone(token: str) -> DeliveryResult:
    return DeliveryResult(
        DeliveryStatus.REJECTED,
        token,
        reason=Reason.UNREGISTERED,
        outcome=Outcome.DROP_TOKEN,
        http_status=410,
    )


def test_a_dead_start_token_kills_a_recipient_that_never_started() -> None:
    _, act, rec, outbox, _ = world(update_token=None)
    outbox._settled(act, rec, 1, True, gone(TOKEN))
    assert rec.row.dead


def test_a_dead_start_token_spares_an_activity_the_device_runs() -> None:
    _, act, rec, outbox, _ = world(update_token="cd" * 32)
    outbox._settled(act, rec, 1, True, gone(TOKEN))
    assert not rec.row.dead
    outbox._settled(act, rec, 1, False, gone("cd" * 32))  # its own update token dying does
    assert rec.row.dead


def refused_locally(token: str) -> DeliveryResult:
    """What the engine answers, without a request, for a token APNs killed before."""
    return DeliveryResult(
        DeliveryStatus.REJECTED,
        token,
        reason=Reason.UNREGISTERED,
        outcome=Outcome.DROP_TOKEN,
        detail="the device token is dead (APNs said so before)",
    )


def bad_device_token(token: str) -> DeliveryResult:
    return DeliveryResult(
        DeliveryStatus.REJECTED,
        token,
        reason=Reason.BAD_DEVICE_TOKEN,
        outcome=Outcome.DROP_TOKEN,
        http_status=400,
    )


@pytest.mark.parametrize("kill", [gone, bad_device_token, refused_locally])
@pytest.mark.parametrize("start", [True, False])
def test_every_dead_token_answer_marks_the_recipient_dead_once(
    kill: Callable[[str], DeliveryResult], start: bool
) -> None:
    _, act, rec, outbox, _ = world(update_token=None if start else "cd" * 32)
    token = TOKEN if start else "cd" * 32
    outbox._settled(act, rec, 1, start, kill(token))
    assert rec.row.dead and outbox.marked_dead == 1 and outbox.dirty == 1
    assert rec.queued_version == 0  # not handed back for another try
    outbox._dirty.clear()
    # Later answers for the same token (the other two kinds included) change nothing more.
    for again in (gone, bad_device_token, refused_locally):
        outbox._settled(act, rec, 1, start, again(token))
    assert outbox.marked_dead == 1 and outbox.dirty == 0 and outbox.failed == 0
    assert outbox.rejected == 4


@pytest.mark.trio
async def test_a_dead_recipient_is_written_once_and_never_submitted_again() -> None:
    reg, act, rec, outbox, store = world(update_token="cd" * 32)
    outbox._settled(act, rec, 1, False, gone("cd" * 32))
    outbox._settled(act, rec, 1, False, refused_locally("cd" * 32))
    await outbox.flush()
    assert [op.row.dead for op in store.ops] == [True]  # type: ignore[union-attr]
    act.row.version = 2  # a newer state: the dead recipient is neither pending nor sent it
    assert list(reg.pending()) == []
    assert await outbox.send_latest(act, rec) is None  # NoEngine would raise on a submit
    assert await outbox.recover() == 0


def test_an_ordinary_failure_does_not_mark_dead() -> None:
    _, act, rec, outbox, _ = world(update_token="cd" * 32)
    rec.queued_version = 1
    failed = DeliveryResult(DeliveryStatus.FAILED, "cd" * 32, detail="gave up after 3 attempts")
    outbox._settled(act, rec, 1, False, failed)
    assert not rec.row.dead and outbox.marked_dead == 0 and outbox.failed == 1
    assert rec.queued_version == 0  # the next call (or restart) queues the newest state again


def test_accepted_advances_and_superseded_changes_nothing() -> None:
    _, act, rec, outbox, _ = world(update_token="cd" * 32)
    outbox._settled(act, rec, 1, False, DeliveryResult(DeliveryStatus.SUPERSEDED, "cd" * 32))
    assert rec.row.sent_version == 0 and outbox.dirty == 0
    outbox._settled(act, rec, 1, False, DeliveryResult(DeliveryStatus.ACCEPTED, "cd" * 32))
    assert rec.row.sent_version == 1 and outbox.dirty == 1


@pytest.mark.trio
async def test_a_token_report_revives_a_dead_recipient() -> None:
    reg, act, rec, outbox, store = world(update_token=None)
    rec.row.dead = True
    act.row.version = 0  # nothing to push: only the bookkeeping is under test
    devices = Devices(reg, store, outbox, wall_clock=lambda: 0.0)  # type: ignore[arg-type]
    await devices.report_token(
        models.ActivityTokenReport(device_id="d1", activity_id="a1", activity_token="ef" * 32)
    )
    assert not rec.row.dead and rec.row.update_token == "ef" * 32 and rec.row.started
    assert store.ops


class ClosedLaneEngine:
    """An engine whose lane for the activity is closed (its end failed for good, say)."""

    def __init__(self) -> None:
        self.calls = 0

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise LaneError("activity 'a1' on lane 'd1' is closed: its end failed (BadDeviceToken)")


@pytest.mark.trio
async def test_a_token_report_for_a_closed_lane_releases_nothing() -> None:
    reg, _, rec, _, store = world(update_token="cd" * 32)
    engine = ClosedLaneEngine()
    outbox = Outbox(engine, store, reg, attributes_type="T", wall_clock=lambda: 0.0)  # type: ignore[arg-type]
    devices = Devices(reg, store, outbox, wall_clock=lambda: 0.0)  # type: ignore[arg-type]
    report = models.ActivityTokenReport(device_id="d1", activity_id="a1", activity_token="ef" * 32)
    accepted = await devices.report_token(report)
    assert accepted.released == 0 and engine.calls == 1
    assert rec.row.update_token == "ef" * 32
    # The same report again tries nothing; another token tries once more, and is refused again.
    assert (await devices.report_token(report)).released == 0 and engine.calls == 1
    again = models.ActivityTokenReport(device_id="d1", activity_id="a1", activity_token="0f" * 32)
    assert (await devices.report_token(again)).released == 0 and engine.calls == 2


@pytest.mark.parametrize("bad", ["", "abc\n", "a/b", "x" * 129, "é"])
def test_device_ids_are_checked_whole(bad: str) -> None:
    from engine.server.contract import errors
    from engine.server.service.devices import check_device_id

    with pytest.raises(errors.BadRequest, match="device_id"):
        check_device_id(bad)
    check_device_id("iphone-1.home:2")


class Recording:
    """An engine that records each submit's `min_timestamp` and answers with a live handle."""

    def __init__(self) -> None:
        self.floors: list[int] = []

    async def submit(self, *args: Any, min_timestamp: int = 0, **kwargs: Any) -> Any:
        from engine.delivery.dispatch import PushHandle

        self.floors.append(min_timestamp)
        return PushHandle(TOKEN, 0.0)


async def test_an_activity_taken_over_pushes_above_what_its_last_owner_may_have_sent() -> None:
    reg, act, rec, _, store = world(update_token=TOKEN)
    rec.row.sent_version = 1  # fully delivered by the previous owner: nothing to recover
    engine = Recording()
    wall = [1000.0]
    outbox = Outbox(engine, store, reg, attributes_type="T", wall_clock=lambda: wall[0])  # type: ignore[arg-type]
    wall[0] = 5000.4  # the partition comes here later
    assert await outbox.recover([act]) == 0
    act.row.version = 2  # the next update, on a lane this node opens now
    assert await outbox.send_latest(act, rec) is not None
    assert engine.floors == [5001]  # above its clock plus one pacing interval, not its start's


async def test_nothing_is_handed_over_for_an_activity_this_node_no_longer_holds() -> None:
    reg, act, rec, _, store = world(update_token=TOKEN)
    engine = Recording()
    outbox = Outbox(engine, store, reg, attributes_type="T", wall_clock=lambda: 0.0)  # type: ignore[arg-type]
    reg.activities.pop("a1")  # its partition moved to another node mid-call
    assert await outbox.send_latest(act, rec) is None
    start = await outbox.send_start(act, rec, reg.devices["d1"], None)  # type: ignore[arg-type]
    assert start.result_nowait() is not None and "another node" in start.result_nowait().detail  # type: ignore[union-attr]
    assert engine.floors == []
