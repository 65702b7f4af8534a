"""Abandoning an activity step by step: pending items settle at once, nothing more is sent.

`Coalescer.abandon` is what a node does when another node delivers the activity now. Driven with
the step-by-step harness of `tests.helpers.coalescerkit` (explicit monotonic and wall times).
"""

from __future__ import annotations

import pytest

from engine.apns.reasons import Outcome, Reason
from engine.delivery.coalescer import ABANDONED
from engine.delivery.items import LaneError, LaneKey
from engine.results import DeliveryStatus
from tests.helpers.coalescerkit import END, LANE, OTHER, START, UPDATE, Harness, statuses

SECOND: LaneKey = (LANE[0], "device-2")  # the same activity on another device


def test_abandon_settles_every_pending_item_of_every_lane_of_the_activity() -> None:
    h = Harness()
    start, _ = h.offer(START)
    update, _ = h.offer(UPDATE, 1)
    end, _ = h.offer(END, 2, lane=SECOND)
    other_act, _ = h.offer(UPDATE, 1, lane=OTHER)
    settled = h.co.abandon(LANE[0])
    assert statuses(settled) == [(i.seq, DeliveryStatus.FAILED) for i in (start, update, end)]
    assert all(s.detail == ABANDONED and s.reason is None for s in settled)
    # Only the other activity is still queued, and it goes out as before.
    (d,) = h.take()
    assert d.item is other_act
    s = h.co.stats
    assert (s.lanes, s.pending, s.scheduled, s.abandoned, s.failed) == (1, 0, 0, 3, 0)
    assert h.co.next_ready_at() is None
    assert h.co.holds(LANE, now=h.now, wall_now=h.wall) == []


def test_abandon_of_an_unknown_activity_settles_nothing() -> None:
    h = Harness()
    h.offer(UPDATE, 1, lane=OTHER)
    assert h.co.abandon("nobody") == []
    assert h.co.stats.pending == 1


def test_an_idle_lane_is_dropped_and_a_later_offer_opens_it_afresh() -> None:
    h = Harness()
    h.offer(START)
    first = h.take_one()
    h.complete(first, Outcome.ACCEPTED)
    assert h.co.stats.idle == 1
    assert h.co.abandon(LANE[0]) == []
    assert (h.co.stats.lanes, h.co.stats.idle) == (0, 0)
    # Owning it again: a start is a first push again; `min_timestamp` keeps timestamps newer.
    h.at(2.0)
    h.offer(START, min_timestamp=first.timestamp + 2)
    assert h.take_one().timestamp == first.timestamp + 3


def test_a_lane_waiting_to_retry_is_dropped_and_its_retry_never_sent() -> None:
    h = Harness()
    update, _ = h.offer(UPDATE, 1)
    h.complete(h.take_one(), Outcome.RETRY)  # backing off: queued, not in flight
    assert h.co.next_ready_at() is not None
    assert statuses(h.co.abandon(LANE[0])) == [(update.seq, DeliveryStatus.FAILED)]
    h.at(120.0)
    assert h.take() == []
    assert (h.co.stats.scheduled, h.co.stats.lanes) == (0, 0)


def test_the_push_in_flight_completes_but_a_failure_is_not_retried() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    flying = h.take_one()
    pending, _ = h.offer(UPDATE, 2)
    assert statuses(h.co.abandon(LANE[0])) == [(pending.seq, DeliveryStatus.FAILED)]
    assert h.co.stats.lanes == 1  # kept until its push completes
    settled = h.complete(flying, Outcome.TRANSPORT, reason=None)
    assert statuses(settled) == [(flying.item.seq, DeliveryStatus.FAILED)]
    assert settled[0].detail.startswith(ABANDONED) and "transport" in settled[0].detail
    h.at(120.0)
    assert h.take() == []
    s = h.co.stats
    assert (s.lanes, s.in_flight, s.pending, s.abandoned, s.failed) == (0, 0, 0, 2, 0)


@pytest.mark.parametrize(
    ("outcome", "reason", "status"),
    [
        (Outcome.RETRY, Reason.INTERNAL_SERVER_ERROR, DeliveryStatus.FAILED),
        (Outcome.UNPROCESSED, None, DeliveryStatus.FAILED),
        (Outcome.REFRESH_AUTH, Reason.EXPIRED_PROVIDER_TOKEN, DeliveryStatus.FAILED),
        (Outcome.DROP_TOKEN, Reason.UNREGISTERED, DeliveryStatus.REJECTED),
        (Outcome.FIX_REQUEST, Reason.BAD_TOPIC, DeliveryStatus.REJECTED),
    ],
)
def test_an_abandoned_start_that_fails_leaves_the_lane_open_to_a_new_owner(
    outcome: Outcome, reason: Reason | None, status: DeliveryStatus
) -> None:
    h = Harness()
    h.offer(START)
    flying = h.take_one()
    h.co.abandon(LANE[0])
    settled = h.complete(flying, outcome, reason=reason)
    assert statuses(settled) == [(flying.item.seq, status)] and settled[0].reason is reason
    # A failed start would close a lane this node delivers; this one is simply forgotten.
    assert not h.co.is_closed(LANE) and h.co.stats.lanes == 0
    h.offer(START)


def test_an_abandoned_push_accepted_counts_as_accepted_and_an_end_still_closes() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    h.offer(END, 1, lane=OTHER)
    update, end = h.take()
    h.co.abandon(LANE[0])
    h.co.abandon(OTHER[0])
    assert statuses(h.complete(update, Outcome.ACCEPTED)) == [
        (update.item.seq, DeliveryStatus.ACCEPTED)
    ]
    assert statuses(h.complete(end, Outcome.ACCEPTED)) == [(end.item.seq, DeliveryStatus.ACCEPTED)]
    assert h.co.stats.lanes == 0 and not h.co.is_closed(LANE)
    assert h.co.is_closed(OTHER)  # the activity has ended, whoever delivers it
    with pytest.raises(LaneError, match="already ended"):
        h.offer(UPDATE, 2, lane=OTHER)


def test_an_offer_after_the_abandon_joins_the_lane_behind_its_push_in_flight() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    flying = h.take_one()
    h.co.abandon(LANE[0])
    back, _ = h.offer(UPDATE, 2)  # the activity is this node's again before the answer came
    with pytest.raises(LaneError, match="already in use"):
        h.offer(START)
    assert h.take() == []  # one push in flight per lane, still
    settled = h.complete(flying, Outcome.RETRY)
    assert statuses(settled) == [(flying.item.seq, DeliveryStatus.FAILED)]
    h.at(1.0)
    again = h.take_one()
    assert again.item is back and again.timestamp > flying.timestamp
    h.complete(again, Outcome.RETRY)  # an ordinary lane once more: retried
    h.at(10.0)
    assert h.take_one().item is back


def test_abandoning_twice_while_in_flight_settles_what_came_in_between() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    flying = h.take_one()
    assert h.co.abandon(LANE[0]) == []
    between, _ = h.offer(UPDATE, 2)
    assert statuses(h.co.abandon(LANE[0])) == [(between.seq, DeliveryStatus.FAILED)]
    h.complete(flying, Outcome.ACCEPTED)
    assert h.co.stats.lanes == 0


def test_abandoned_lanes_free_room_for_new_ones() -> None:
    h = Harness(max_lanes=2)
    h.offer(UPDATE, 1)
    h.offer(UPDATE, 1, lane=SECOND)
    h.co.abandon(LANE[0])
    h.offer(UPDATE, 1, lane=OTHER)
    h.offer(UPDATE, 1, lane=("act-3", "device-1"))
    assert h.co.stats.lanes == 2


def test_many_lanes_abandoned_while_queued_leave_stale_entries_that_are_skipped() -> None:
    h = Harness()
    h.offer(UPDATE, 1, lane=("gone", "d"))
    h.at(0.5)
    h.offer(UPDATE, 1, lane=OTHER)
    h.co.abandon("gone")
    assert h.co.next_ready_at() == 0.5  # the stale entry on top was skipped
    for i in range(70):
        h.offer(UPDATE, 1, lane=(f"late-{i}", "d"))
    for i in range(69):
        h.co.abandon(f"late-{i}")
    h.offer(UPDATE, 1, lane=LANE)  # the heap is rebuilt: stale entries outnumber live ones
    assert len(h.co._heap) == 3
    assert [d.lane for d in h.take()] == [OTHER, ("late-69", "d"), LANE]
    for i in range(3):
        h.offer(UPDATE, 1, lane=(f"again-{i}", "d"))
    h.co.abandon("again-0")
    h.co.abandon("again-1")
    (d,) = h.take()  # `take_ready` skips stale entries too
    assert d.lane == ("again-2", "d")
    assert h.co.stats.scheduled == 0 and h.co.next_ready_at() is None


def test_an_activity_on_several_devices_is_found_on_each_as_lanes_come_and_go() -> None:
    h = Harness()
    devices = [(LANE[0], f"device-{n}") for n in range(1, 5)]
    for lane in devices:
        h.offer(UPDATE, 1, lane=lane)
    for d in h.take():
        h.complete(d, Outcome.ACCEPTED)
    assert h.co.forget(devices[0]) and h.co.forget(devices[1])  # four lanes, then two
    assert h.co.forget(devices[2])  # then one
    kept, _ = h.offer(UPDATE, 2, lane=devices[3])
    h.at(1.0)
    back, _ = h.offer(UPDATE, 2, lane=devices[0])  # two again
    assert statuses(h.co.abandon(LANE[0])) == [
        (kept.seq, DeliveryStatus.FAILED),
        (back.seq, DeliveryStatus.FAILED),
    ]
    assert h.co.stats.lanes == 0
    assert h.co.abandon(LANE[0]) == []
