"""Per-lane mailboxes step by step: coalescing, ordering, pacing, timestamps, outcomes, bounds.

Every test drives `engine.delivery.coalescer.Coalescer` with explicit monotonic (`now`) and wall
(`wall`) times; wall times are realistic unix seconds because bodies need 10-digit timestamps.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.apns.reasons import REASONS, Outcome, Reason, outcome_for
from engine.delivery.coalescer import BACKOFF_CAP, MAX_FREE_RETRIES, Coalescer
from engine.delivery.items import Busy, Item, LaneError, LaneKey, failure_status
from engine.results import DeliveryStatus
from tests.helpers.coalescerkit import (
    END,
    LANE,
    OTHER,
    START,
    UPDATE,
    W0,
    Harness,
    payload,
    statuses,
)

# --------------------------------------------------------------------------------------------------
# Configuration, items, outcome mapping


@pytest.mark.parametrize("interval", [0.0, 0.5, 0.999, -1.0, float("nan"), float("inf")])
def test_pacing_interval_below_one_second_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="pacing_interval"):
        Coalescer(pacing_interval=interval)


@pytest.mark.parametrize(
    ("name", "value"), [("max_lanes", 0), ("max_attempts", 0), ("max_closed", -1)]
)
def test_bad_bounds_are_refused(name: str, value: int) -> None:
    config: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=name):
        Coalescer(**config)


def test_item_checks_kind_and_priority_and_compares_by_identity() -> None:
    update = payload(UPDATE, 1)
    with pytest.raises(ValueError, match="does not match"):
        Item(START, "t", update, 10, None, 1)
    with pytest.raises(ValueError, match="priority"):
        Item(UPDATE, "t", update, 7, None, 1)
    a = Item.build(update, "t", 1)
    b = Item.build(update, "t", 1)
    assert a != b and a == a
    assert (a.kind, a.priority, a.expiration, a.waiter) == (UPDATE, 5, None, None)
    assert Item.build(update, "t", 1, priority=10, expiration=5).priority == 10


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (200, None, Outcome.ACCEPTED),
        (429, Reason.TOO_MANY_REQUESTS, Outcome.RETRY),
        (429, Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES, Outcome.RETRY),
        (500, Reason.INTERNAL_SERVER_ERROR, Outcome.RETRY),
        (503, Reason.SERVICE_UNAVAILABLE, Outcome.RETRY),
        (502, None, Outcome.RETRY),
        (403, Reason.EXPIRED_PROVIDER_TOKEN, Outcome.REFRESH_AUTH),
        (503, Reason.SHUTDOWN, Outcome.NEW_CONNECTION),
        (403, Reason.UNRELATED_KEY_ID_IN_TOKEN, Outcome.NEW_CONNECTION),
        (410, Reason.UNREGISTERED, Outcome.DROP_TOKEN),
        (410, Reason.EXPIRED_TOKEN, Outcome.DROP_TOKEN),
        (400, Reason.BAD_DEVICE_TOKEN, Outcome.DROP_TOKEN),
        (410, None, Outcome.DROP_TOKEN),
        (400, Reason.BAD_TOPIC, Outcome.FIX_REQUEST),
        (413, Reason.PAYLOAD_TOO_LARGE, Outcome.FIX_REQUEST),
        (404, None, Outcome.FIX_REQUEST),
    ],
)
def test_outcome_for(status: int, reason: Reason | None, outcome: Outcome) -> None:
    assert outcome_for(status, reason) is outcome


# What the reason table may hand out: a rejection is never "accepted" nor "no answer".
REJECTION_OUTCOMES = {
    Outcome.RETRY,
    Outcome.NEW_CONNECTION,
    Outcome.REFRESH_AUTH,
    Outcome.DROP_TOKEN,
    Outcome.FIX_REQUEST,
}


def test_outcome_for_follows_the_reason_table_for_every_reason() -> None:
    for reason, info in REASONS.items():
        assert info.outcome in REJECTION_OUTCOMES, reason
        assert outcome_for(info.status, reason) is info.outcome


def test_outcome_for_a_200_is_accepted_whatever_the_reason() -> None:
    assert outcome_for(200, Reason.SHUTDOWN) is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (Reason.UNREGISTERED, DeliveryStatus.REJECTED),
        (Reason.BAD_DEVICE_TOKEN, DeliveryStatus.REJECTED),
        (Reason.BAD_TOPIC, DeliveryStatus.REJECTED),
        (Reason.TOO_MANY_REQUESTS, DeliveryStatus.FAILED),
        (Reason.EXPIRED_PROVIDER_TOKEN, DeliveryStatus.FAILED),
        (Reason.SHUTDOWN, DeliveryStatus.FAILED),
        (None, DeliveryStatus.FAILED),  # a bare 410 or 404 names nothing to fix
    ],
)
def test_failure_status_follows_the_reason(reason: Reason | None, status: DeliveryStatus) -> None:
    assert failure_status(reason) is status


# --------------------------------------------------------------------------------------------------
# Coalescing and send order


def test_fresh_lane_is_ready_at_once_with_a_wall_clock_timestamp() -> None:
    h = Harness().at(100.25)
    item, superseded = h.offer(UPDATE, 1)
    assert superseded == []
    assert h.co.next_ready_at() == 100.25
    d = h.take_one()
    assert (d.lane, d.item, d.timestamp, d.attempt) == (LANE, item, W0 + 100, 1)
    assert d.body == item.payload.render(W0 + 100)
    assert h.co.next_ready_at() is None


def test_latest_update_wins_while_pending() -> None:
    h = Harness()
    first, _ = h.offer(UPDATE, 1)
    second, superseded = h.offer(UPDATE, 2)
    assert statuses(superseded) == [(first.seq, DeliveryStatus.SUPERSEDED)]
    third, superseded = h.offer(UPDATE, 3)
    assert statuses(superseded) == [(second.seq, DeliveryStatus.SUPERSEDED)]
    assert h.take_one().item is third
    assert h.co.stats.coalesced == 2


def test_latest_wins_while_one_is_in_flight_and_one_in_flight_per_lane() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    h.offer(UPDATE, 2)
    u3, superseded = h.offer(UPDATE, 3)
    assert len(superseded) == 1
    h.at(10.0)
    assert h.take() == []  # u3 waits for the push in flight, however long it takes
    assert statuses(h.complete(d1, Outcome.ACCEPTED)) == [(d1.item.seq, DeliveryStatus.ACCEPTED)]
    d3 = h.take_one()
    assert d3.item is u3 and d3.timestamp == W0 + 10


def test_end_replaces_a_pending_update_and_a_newer_end_replaces_the_first() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    u2, _ = h.offer(UPDATE, 2)
    e1, superseded = h.offer(END, 3)
    assert statuses(superseded) == [(u2.seq, DeliveryStatus.SUPERSEDED)]
    e2, superseded = h.offer(END, 4)
    assert statuses(superseded) == [(e1.seq, DeliveryStatus.SUPERSEDED)]
    h.complete(d1, Outcome.ACCEPTED)
    assert h.at(1.0).take_one().item is e2


def test_start_goes_first_and_end_never_before_a_pending_start() -> None:
    h = Harness()
    s, _ = h.offer(START, 0, token="p2s")
    u, _ = h.offer(UPDATE, 1)
    e, superseded = h.offer(END, 2)
    assert statuses(superseded) == [(u.seq, DeliveryStatus.SUPERSEDED)]  # never the start
    d = h.take_one()
    assert d.item is s and d.item.token == "p2s" and d.item.priority == 10
    h.complete(d, Outcome.ACCEPTED)
    assert h.take() == []  # paced
    assert h.at(1.0).take_one().item is e


def test_second_start_is_refused_while_pending_or_once_the_lane_is_in_use() -> None:
    h = Harness()
    h.offer(START)
    with pytest.raises(LaneError, match="start must be its first push"):
        h.offer(START)
    h.offer(UPDATE, 1, lane=OTHER)
    with pytest.raises(LaneError, match="already in use"):
        h.offer(START, lane=OTHER)
    assert h.co.stats.pending == 2


def test_update_after_end_is_refused_pending_or_in_flight() -> None:
    h = Harness()
    h.offer(END, 1)
    with pytest.raises(LaneError, match="is ending: no update after the end"):
        h.offer(UPDATE, 2)
    d = h.take_one()
    with pytest.raises(LaneError, match="is ending"):
        h.offer(UPDATE, 2)
    e2, _ = h.offer(END, 3)  # a newer final state is still welcome while the first is in flight
    assert h.co.stats.pending == 1
    h.complete(d, Outcome.RETRY)
    assert h.at(1.0).take_one().item is e2


def test_closed_lane_refuses_everything_with_a_clear_error() -> None:
    h = Harness()
    h.offer(END, 1)
    settled = h.complete(h.take_one(), Outcome.ACCEPTED)
    assert [s.status for s in settled] == [DeliveryStatus.ACCEPTED]
    assert h.co.is_closed(LANE) and h.co.stats.lanes == 0
    for kind in (START, UPDATE, END):
        with pytest.raises(LaneError, match="activity 'act-1' already ended on lane 'device-1'"):
            h.offer(kind)


def test_end_pending_when_an_earlier_end_is_accepted_fails_as_already_ended() -> None:
    h = Harness()
    h.offer(END, 1)
    d = h.take_one()
    e2, _ = h.offer(END, 2)
    settled = h.complete(d, Outcome.ACCEPTED)
    assert statuses(settled) == [
        (d.item.seq, DeliveryStatus.ACCEPTED),
        (e2.seq, DeliveryStatus.FAILED),
    ]
    assert "already ended" in settled[1].detail


# --------------------------------------------------------------------------------------------------
# Pacing and timestamps


@pytest.mark.parametrize("interval", [1.0, 2.5])
def test_one_push_per_lane_per_pacing_interval(interval: float) -> None:
    h = Harness(pacing_interval=interval).at(5.0)
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    h.at(5.1)
    h.complete(d1, Outcome.ACCEPTED)
    u2, _ = h.offer(UPDATE, 2)
    assert h.co.next_ready_at() == 5.0 + interval
    assert h.at(5.0 + interval - 0.01).take() == []
    d2 = h.at(5.0 + interval).take_one()
    assert d2.item is u2 and d2.timestamp > d1.timestamp


def test_idle_lane_past_its_pacing_is_ready_when_offered() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    h.complete(h.take_one(), Outcome.ACCEPTED)
    h.at(30.0).offer(UPDATE, 2)
    assert h.co.next_ready_at() == 30.0
    assert h.take_one().timestamp == W0 + 30


def test_timestamps_strictly_increase_within_one_wall_second() -> None:
    # A refused stream is retried at once, so two attempts fall in the same wall second.
    h = Harness().at(0.2)
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    h.complete(d1, Outcome.UNPROCESSED)
    d2 = h.take_one()
    assert (d1.timestamp, d2.timestamp) == (W0, W0 + 1)
    assert d2.item is d1.item and d2.attempt == 2


def test_never_ahead_of_the_wall_clock_by_more_than_the_interval() -> None:
    h = Harness().at(0.5)
    h.offer(UPDATE, 1)
    d = h.take_one()
    assert d.timestamp == W0
    h.complete(d, Outcome.UNPROCESSED)
    d = h.take_one()
    assert d.timestamp == W0 + 1  # W0 + 1 <= wall (W0 + 0.5) + 1
    h.complete(d, Outcome.UNPROCESSED)
    assert h.take() == []  # W0 + 2 > W0 + 1.5: waits for the wall clock
    assert h.co.next_ready_at() == pytest.approx(1.0)
    d = h.at(1.0).take_one()
    assert d.timestamp == W0 + 2 and d.timestamp <= h.wall + 1.0


def test_wall_clock_stepping_back_holds_the_lane_until_it_catches_up() -> None:
    h = Harness().at(0.2)
    h.offer(UPDATE, 1)
    h.complete(h.take_one(), Outcome.ACCEPTED)  # ts W0
    h.at(1.2)
    h.skew = -5.0  # wall is now W0 - 3.8
    h.offer(UPDATE, 2)
    assert h.take() == []
    assert h.co.next_ready_at() == pytest.approx(1.2 + 3.8)
    d = h.at(5.0).take_one()
    assert d.timestamp == W0 + 1


def test_min_timestamp_seeds_the_lane() -> None:
    h = Harness()
    h.offer(UPDATE, 1, min_timestamp=W0 + 100)
    assert h.take() == []  # W0 + 101 is 100 s ahead of the wall clock
    assert h.co.next_ready_at() == pytest.approx(100.0)
    assert h.at(100.0).take_one().timestamp == W0 + 101


def test_take_ready_honours_limit_in_ready_order() -> None:
    h = Harness()
    lanes = [(f"act-{i}", "dev") for i in range(5)]
    items = []
    for i, lane in enumerate(lanes):
        h.at(i * 0.01)
        items.append(h.offer(UPDATE, i, lane=lane)[0])
    assert [d.item for d in h.take(limit=2)] == items[:2]
    assert [d.item for d in h.take(limit=0)] == []
    assert [d.item for d in h.take(limit=10)] == items[2:]


# --------------------------------------------------------------------------------------------------
# Outcomes


def test_retry_backoff_grows_and_caps_at_sixty_seconds() -> None:
    h = Harness(max_attempts=100)
    h.offer(UPDATE, 1)
    waits = []
    for _ in range(9):
        d = h.take_one()
        assert h.complete(d, Outcome.RETRY) == []
        assert (h.co.stats.pending, h.co.stats.in_flight) == (1, 0)
        ready = h.co.next_ready_at()
        assert ready is not None
        waits.append(ready - h.now)
        h.at(ready)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, BACKOFF_CAP, BACKOFF_CAP, BACKOFF_CAP]
    d = h.take_one()
    assert d.attempt == 10
    h.complete(d, Outcome.ACCEPTED)
    h.offer(UPDATE, 2)
    h.complete(h.at(h.now + 1).take_one(), Outcome.RETRY)
    assert h.co.next_ready_at() == h.now + 1.0  # an accepted push resets the backoff


def test_backoff_jitter_stays_within_half_to_full() -> None:
    h = Harness(rng=random.Random(7), max_attempts=100)
    h.offer(UPDATE, 1)
    for n in range(1, 9):
        h.complete(h.take_one(), Outcome.TRANSPORT)
        ready = h.co.next_ready_at()
        assert ready is not None
        base = min(BACKOFF_CAP, 2.0 ** (n - 1))
        assert max(base * 0.5, 1.0) <= ready - h.now <= base  # never sooner than pacing
        h.at(ready)


@pytest.mark.parametrize(
    ("retry_after", "wait"), [(30.0, 30.0), (500.0, BACKOFF_CAP), (0.2, 1.0), (float("nan"), 1.0)]
)
def test_retry_after_raises_the_backoff_up_to_the_cap(retry_after: float, wait: float) -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    h.complete(h.take_one(), Outcome.RETRY, retry_after=retry_after)
    assert h.co.next_ready_at() == wait


def test_backoff_replaces_pacing_only_when_longer() -> None:
    h = Harness(pacing_interval=3.0)
    h.offer(UPDATE, 1)
    h.complete(h.take_one(), Outcome.RETRY)  # backoff 1 s < pacing 3 s
    assert h.co.next_ready_at() == 3.0
    h.at(3.0).complete(h.take_one(), Outcome.RETRY)  # backoff 2 s from t=3 < pacing to t=6
    assert h.co.next_ready_at() == 6.0
    h.at(6.0).complete(h.take_one(), Outcome.RETRY, retry_after=10.0)
    assert h.co.next_ready_at() == 16.0


def test_retry_keeps_only_the_newest_state() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    u2, _ = h.offer(UPDATE, 2)
    settled = h.complete(d1, Outcome.RETRY, reason=Reason.SERVICE_UNAVAILABLE)
    assert statuses(settled) == [(d1.item.seq, DeliveryStatus.SUPERSEDED)]
    d2 = h.at(1.0).take_one()
    assert d2.item is u2 and d2.attempt == 1
    h.complete(d2, Outcome.RETRY)
    assert h.co.next_ready_at() == 3.0  # the lane's failure streak continues: 2 s


def test_failed_update_is_superseded_by_a_pending_end_and_end_by_a_newer_end() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d = h.take_one()
    e1, _ = h.offer(END, 2)
    assert statuses(h.complete(d, Outcome.TRANSPORT)) == [(d.item.seq, DeliveryStatus.SUPERSEDED)]
    d = h.at(1.0).take_one()
    assert d.item is e1
    e2, _ = h.offer(END, 3)
    assert statuses(h.complete(d, Outcome.TRANSPORT)) == [(e1.seq, DeliveryStatus.SUPERSEDED)]
    assert h.at(3.0).take_one().item is e2


def test_failed_start_is_retried_before_pending_updates() -> None:
    h = Harness()
    s, _ = h.offer(START)
    d = h.take_one()
    h.offer(UPDATE, 1)
    assert h.complete(d, Outcome.RETRY) == []
    d = h.at(1.0).take_one()
    assert d.item is s and d.attempt == 2 and d.timestamp == W0 + 1


def test_update_waiting_for_its_retry_is_replaced_and_the_newer_counts_afresh() -> None:
    h = Harness(max_attempts=2)
    u1, _ = h.offer(UPDATE, 1)
    assert h.complete(h.take_one(), Outcome.RETRY) == []  # u1: 1 of 2 attempts, waits 1 s
    u2, superseded = h.offer(UPDATE, 2)
    assert statuses(superseded) == [(u1.seq, DeliveryStatus.SUPERSEDED)]
    assert superseded[0].detail == "replaced by a newer update"
    d = h.at(1.0).take_one()
    assert d.item is u2 and d.attempt == 1
    assert h.complete(d, Outcome.RETRY) == []  # u2's first failure: not given up
    assert h.co.stats.pending == 1


def test_failed_end_is_retried_and_closes_the_lane_once_accepted() -> None:
    h = Harness()
    e, _ = h.offer(END, 1)
    d1 = h.take_one()
    assert h.complete(d1, Outcome.TRANSPORT) == []
    with pytest.raises(LaneError, match="ending"):
        h.offer(UPDATE, 2)  # still ending while the end waits for its retry
    d2 = h.at(1.0).take_one()
    assert d2.item is e and d2.attempt == 2 and d2.timestamp == d1.timestamp + 1
    assert statuses(h.complete(d2, Outcome.ACCEPTED)) == [(e.seq, DeliveryStatus.ACCEPTED)]
    assert h.co.is_closed(LANE)


def test_transport_retry_gets_a_fresh_timestamp() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    h.complete(d1, Outcome.TRANSPORT)
    d2 = h.at(1.0).take_one()
    assert d2.item is d1.item and d2.timestamp == d1.timestamp + 1
    assert d2.body != d1.body


def test_max_attempts_fails_an_update_and_keeps_the_lane_open() -> None:
    h = Harness(max_attempts=3)
    u1, _ = h.offer(UPDATE, 1)
    for attempt in (1, 2):
        d = h.take_one()
        assert d.attempt == attempt
        assert h.complete(d, Outcome.RETRY) == []
        h.at(h.co.next_ready_at() or 0.0)
    settled = h.complete(h.take_one(), Outcome.RETRY, reason=Reason.TOO_MANY_REQUESTS)
    assert statuses(settled) == [(u1.seq, DeliveryStatus.FAILED)]
    assert settled[0].reason is Reason.TOO_MANY_REQUESTS
    assert "gave up after 3 attempts (last: retry)" in settled[0].detail
    u2, _ = h.offer(UPDATE, 2)
    assert h.take() == []  # the failure streak still applies: 4 s
    assert h.at(h.now + 4.0).take_one().item is u2


def test_max_attempts_on_start_closes_the_lane_and_fails_what_is_pending() -> None:
    h = Harness(max_attempts=1)
    s, _ = h.offer(START)
    d = h.take_one()
    u, _ = h.offer(UPDATE, 1)
    settled = h.complete(d, Outcome.RETRY)
    assert statuses(settled) == [(s.seq, DeliveryStatus.FAILED), (u.seq, DeliveryStatus.FAILED)]
    assert "start failed" in settled[1].detail
    with pytest.raises(LaneError, match="closed: its start failed"):
        h.offer(UPDATE, 2)
    assert h.co.stats.pending == 0 and h.co.stats.lanes == 0


def test_max_attempts_on_end_closes_the_lane() -> None:
    h = Harness(max_attempts=1)
    h.offer(END, 1)
    settled = h.complete(h.take_one(), Outcome.TRANSPORT)
    assert [s.status for s in settled] == [DeliveryStatus.FAILED]
    with pytest.raises(LaneError, match="closed: its end failed"):
        h.offer(END, 2)


def test_refresh_auth_retries_at_once_uncounted_then_counts_when_repeated() -> None:
    h = Harness(max_attempts=1).at(0.5)
    u, _ = h.offer(UPDATE, 1)
    assert h.complete(h.take_one(), Outcome.REFRESH_AUTH) == []
    assert h.co.next_ready_at() == 0.5  # not paced, not counted
    settled = h.complete(h.take_one(), Outcome.REFRESH_AUTH)
    assert statuses(settled) == [(u.seq, DeliveryStatus.FAILED)]  # the second in a row is a RETRY


def test_refresh_auth_then_other_outcome_resets_the_streak() -> None:
    h = Harness(max_attempts=2).at(0.5)
    h.offer(UPDATE, 1)
    h.complete(h.take_one(), Outcome.REFRESH_AUTH)
    h.complete(h.take_one(), Outcome.RETRY)  # attempt counted: 1 of 2
    h.at(1.5).complete(h.take_one(), Outcome.REFRESH_AUTH)  # free again: not consecutive
    assert h.co.next_ready_at() == 1.5


@pytest.mark.parametrize("outcome", [Outcome.UNPROCESSED, Outcome.NEW_CONNECTION])
def test_unprocessed_retries_at_once_until_the_free_bound(outcome: Outcome) -> None:
    h = Harness(max_attempts=1)
    u, _ = h.offer(UPDATE, 1)
    for i in range(MAX_FREE_RETRIES):
        h.at(float(i))  # one wall second each, so the wall-clock rule never holds the lane
        d = h.take_one()
        assert h.complete(d, outcome) == []
        assert h.co.next_ready_at() == h.now
    h.at(float(MAX_FREE_RETRIES))
    settled = h.complete(h.take_one(), outcome)
    assert statuses(settled) == [(u.seq, DeliveryStatus.FAILED)]  # the 21st counts as a RETRY


def test_drop_token_fails_every_pending_item_for_that_token_only() -> None:
    h = Harness()
    h.offer(UPDATE, 1, token="A")
    d = h.take_one()
    u2, _ = h.offer(UPDATE, 2, token="A")
    settled = h.complete(d, Outcome.DROP_TOKEN, reason=Reason.UNREGISTERED)
    rejected = DeliveryStatus.REJECTED  # a named reason never to retry: rejected, not failed
    assert statuses(settled) == [(d.item.seq, rejected), (u2.seq, rejected)]
    assert all(s.reason is Reason.UNREGISTERED for s in settled)
    assert "Unregistered" in settled[0].detail
    assert h.co.stats.pending == 0 and h.co.stats.lanes == 1  # the lane itself stays open
    u3, _ = h.offer(UPDATE, 3, token="B")  # e.g. a rotated update token
    assert h.at(1.0).take_one().item is u3


def test_drop_token_spares_items_for_another_token() -> None:
    h = Harness()
    h.offer(UPDATE, 1, token="A")
    d = h.take_one()
    u2, _ = h.offer(UPDATE, 2, token="B")
    assert statuses(h.complete(d, Outcome.DROP_TOKEN)) == [(d.item.seq, DeliveryStatus.FAILED)]
    assert h.at(1.0).take_one().item is u2


def test_drop_token_on_start_closes_the_lane() -> None:
    h = Harness()
    s, _ = h.offer(START, token="p2s")
    d = h.take_one()
    u, _ = h.offer(UPDATE, 1, token="upd")
    settled = h.complete(d, Outcome.DROP_TOKEN, reason=Reason.BAD_DEVICE_TOKEN)
    assert statuses(settled) == [(s.seq, DeliveryStatus.REJECTED), (u.seq, DeliveryStatus.REJECTED)]
    assert h.co.is_closed(LANE)


def test_drop_token_on_end_with_a_newer_end_for_another_token_continues() -> None:
    h = Harness()
    h.offer(END, 1, token="A")
    d = h.take_one()
    e2, _ = h.offer(END, 2, token="B")
    assert statuses(h.complete(d, Outcome.DROP_TOKEN)) == [(d.item.seq, DeliveryStatus.FAILED)]
    assert not h.co.is_closed(LANE)
    d2 = h.at(1.0).take_one()
    assert d2.item is e2
    h.complete(d2, Outcome.ACCEPTED)
    assert h.co.is_closed(LANE)


def test_drop_token_on_update_with_pending_end_for_that_token_closes_the_lane() -> None:
    h = Harness()
    h.offer(UPDATE, 1, token="A")
    d = h.take_one()
    e, _ = h.offer(END, 2, token="A")
    settled = h.complete(d, Outcome.DROP_TOKEN)
    assert statuses(settled) == [
        (d.item.seq, DeliveryStatus.FAILED),
        (e.seq, DeliveryStatus.FAILED),
    ]
    assert h.co.is_closed(LANE)


def test_fix_request_fails_the_update_and_the_lane_continues_paced() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d = h.take_one()
    u2, _ = h.offer(UPDATE, 2)
    settled = h.complete(d, Outcome.FIX_REQUEST, reason=Reason.BAD_TOPIC)
    assert statuses(settled) == [(d.item.seq, DeliveryStatus.REJECTED)]
    assert settled[0].detail == "APNs refused the request (BadTopic)"
    assert h.take() == []
    assert h.at(1.0).take_one().item is u2


def test_fix_request_on_start_or_end_closes_the_lane() -> None:
    h = Harness()
    h.offer(START)
    h.offer(UPDATE, 1)
    settled = h.complete(h.take_one(), Outcome.FIX_REQUEST)
    assert [s.status for s in settled] == [DeliveryStatus.FAILED, DeliveryStatus.FAILED]
    h.offer(END, 1, lane=OTHER)
    h.complete(h.take_one(), Outcome.FIX_REQUEST)
    assert h.co.is_closed(LANE) and h.co.is_closed(OTHER)


def test_complete_refuses_a_dispatch_that_is_not_in_flight() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    d = h.take_one()
    h.complete(d, Outcome.ACCEPTED)
    with pytest.raises(LaneError, match="not in flight"):
        h.complete(d, Outcome.ACCEPTED)
    other = Harness()
    other.offer(UPDATE, 1)
    with pytest.raises(LaneError, match="not in flight"):
        h.complete(other.take_one(), Outcome.ACCEPTED)


# --------------------------------------------------------------------------------------------------
# Bounds and bookkeeping


def test_busy_at_max_lanes_and_existing_lanes_still_accept() -> None:
    h = Harness(max_lanes=2)
    h.offer(UPDATE, 1, lane=("a", "d"))
    h.offer(END, 1, lane=("b", "d"))
    with pytest.raises(Busy, match="capacity"):
        h.offer(UPDATE, 1, lane=("c", "d"))
    h.offer(UPDATE, 2, lane=("a", "d"))  # coalesces, allocates nothing
    for d in h.take():
        h.complete(d, Outcome.ACCEPTED)  # lane b ends and closes
    h.offer(UPDATE, 1, lane=("c", "d"))
    with pytest.raises(Busy):
        h.offer(UPDATE, 1, lane=("e", "d"))
    assert h.co.forget(("a", "d")) is True  # idle: may be dropped
    h.offer(UPDATE, 1, lane=("e", "d"))


def test_idle_lanes_are_evicted_for_new_ones_once_safely_past_their_timestamp() -> None:
    h = Harness(max_lanes=2)
    h.offer(UPDATE, 1, lane=("a", "d"))
    h.offer(UPDATE, 1, lane=("b", "d"))
    sent = {d.lane: d for d in h.take()}
    for d in sent.values():
        h.complete(d, Outcome.ACCEPTED)
    assert h.co.stats.idle == 2
    h.at(1.9)  # idle for less than interval + 1 s: its timestamp may still be ahead of the wall
    with pytest.raises(Busy):
        h.offer(UPDATE, 1, lane=("c", "d"))
    h.at(2.0)
    h.offer(UPDATE, 1, lane=("c", "d"))  # the longest-idle lane ("a") made room
    assert h.co.stats.evicted == 1 and h.co.stats.lanes == 2
    h.offer(UPDATE, 2, lane=("b", "d"))  # "b" is busy again: not evictable
    with pytest.raises(Busy):
        h.offer(UPDATE, 1, lane=("e", "d"))
    (c,) = [d for d in h.take() if d.lane == ("c", "d")]
    # A re-opened lane's first timestamp is newer than everything the evicted lane sent.
    h.co.complete(c, Outcome.ACCEPTED, now=h.now)
    h.at(10.0)
    h.offer(UPDATE, 3, lane=("a", "d"))
    again = [d for d in h.take() if d.lane == ("a", "d")]
    assert again and again[0].timestamp > sent[("a", "d")].timestamp


def test_forget_refuses_busy_lanes() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    assert h.co.forget(LANE) is False
    d = h.take_one()
    assert h.co.forget(LANE) is False
    h.complete(d, Outcome.ACCEPTED)
    assert h.co.forget(LANE) is True
    assert h.co.forget(LANE) is False


def test_closed_lane_memory_is_a_bounded_lru() -> None:
    h = Harness(max_closed=2)
    lanes = [(f"act-{i}", "d") for i in range(3)]
    for lane in lanes[:2]:
        h.offer(END, 1, lane=lane)
    for d in h.take():
        h.complete(d, Outcome.ACCEPTED)
    with pytest.raises(LaneError):
        h.offer(UPDATE, 1, lane=lanes[0])  # touching lane 0 makes lane 1 the oldest
    h.offer(END, 1, lane=lanes[2])
    h.complete(h.take_one(), Outcome.ACCEPTED)
    assert [h.co.is_closed(lane) for lane in lanes] == [True, False, True]
    assert h.co.stats.closed_lanes == 2
    h.offer(START, lane=lanes[1])  # forgotten: the lane opens afresh


def test_max_closed_zero_remembers_no_closed_lane() -> None:
    h = Harness(max_closed=0)
    h.offer(END, 1)
    h.complete(h.take_one(), Outcome.ACCEPTED)
    assert not h.co.is_closed(LANE)
    assert (h.co.stats.lanes, h.co.stats.closed_lanes) == (0, 0)
    h.offer(START)  # nothing remembered: the lane opens afresh
    assert h.take_one().item.kind is START


def test_stats_track_every_counter() -> None:
    h = Harness()
    h.offer(UPDATE, 1)
    h.offer(UPDATE, 2)
    h.offer(UPDATE, 1, lane=OTHER)
    s = h.co.stats
    assert (s.lanes, s.scheduled, s.pending, s.in_flight, s.offered, s.coalesced) == (
        2,
        2,
        2,
        0,
        3,
        1,
    )
    d1, d2 = h.take()
    s = h.co.stats
    assert (s.scheduled, s.pending, s.in_flight, s.dispatched) == (0, 0, 2, 2)
    h.complete(d1, Outcome.ACCEPTED)
    h.complete(d2, Outcome.FIX_REQUEST)
    s = h.co.stats
    assert (s.in_flight, s.accepted, s.failed, s.pending) == (0, 1, 1, 0)


def test_dispatch_repr_leaves_the_body_out() -> None:
    h = Harness()
    h.offer(UPDATE, 12345)
    d = h.take_one()
    assert b"12345" in d.body
    assert "12345" not in repr(d) and "w1" not in repr(d)


# --------------------------------------------------------------------------------------------------
# Holds: why a pending item is not sent now, and the earliest time it can be


def hold_of(h: Harness, item: Item | None = None, lane: LaneKey = LANE) -> tuple[str, float] | None:
    held = h.co.hold(lane, now=h.now, wall_now=h.wall, item=item)
    return None if held is None else (held.reason.value, held.until)


def test_nothing_is_held_on_a_fresh_or_unknown_or_idle_lane() -> None:
    h = Harness().at(2.0)
    assert hold_of(h) is None  # unknown lane
    assert h.co.holds(LANE, now=h.now, wall_now=h.wall) == []
    u1, _ = h.offer(UPDATE, 1)
    assert hold_of(h, u1) is None and hold_of(h) is None  # a fresh lane sends at once
    d1 = h.take_one()
    assert hold_of(h, u1) is None  # sent: no longer pending
    h.complete(d1, Outcome.ACCEPTED)
    assert hold_of(h) is None  # idle: nothing pending
    assert h.co.holds(LANE, now=h.now, wall_now=h.wall) == []


def test_a_push_offered_while_its_lane_has_one_in_flight_is_behind_it_then_paced() -> None:
    h = Harness().at(2.0)
    h.offer(UPDATE, 1)
    d1 = h.take_one()
    u2, _ = h.at(2.1).offer(UPDATE, 2)
    assert hold_of(h, u2) == ("behind", 3.0)  # one interval after the push in flight went out
    h.at(2.2).complete(d1, Outcome.ACCEPTED)
    assert hold_of(h, u2) == ("paced", 3.0) == hold_of(h)
    u3, _ = h.offer(UPDATE, 3)  # replaces u2, held the same
    assert hold_of(h, u2) is None and hold_of(h, u3) == ("paced", 3.0)
    assert hold_of(h.at(3.0), u3) is None  # its time has come
    assert h.take_one().item is u3


def test_a_push_queued_behind_an_earlier_event_waits_one_interval_more_each() -> None:
    h = Harness(pacing_interval=2.0).at(1.0)
    start, _ = h.offer(START, 0)
    update, _ = h.offer(UPDATE, 1)
    end, _ = h.offer(END, 2)  # replaces the update
    assert hold_of(h, start) is None
    assert hold_of(h, update) is None and hold_of(h, end) == ("behind", 3.0)
    holds = h.co.holds(LANE, now=h.now, wall_now=h.wall)
    assert [(i, x if x is None else x.reason.value) for i, x in holds] == [
        (start, None),
        (end, "behind"),
    ]


def test_a_lane_backing_off_holds_its_retry_and_what_comes_after() -> None:
    h = Harness(pacing_interval=1.0).at(10.0)
    u1, _ = h.offer(UPDATE, 1)
    d1 = h.take_one()
    h.at(10.1).complete(d1, Outcome.RETRY)  # first failure: backoff 1 s from now
    assert hold_of(h, u1) == ("backoff", 11.1)
    u2, _ = h.offer(UPDATE, 2)  # replaces the retry, still backing off
    assert hold_of(h, u2) == ("backoff", 11.1)


def test_a_timestamp_ahead_of_the_wall_clock_holds_the_push_until_it_catches_up() -> None:
    h = Harness().at(0.0)
    u1, _ = h.offer(UPDATE, 1, min_timestamp=W0 + 5)  # e.g. sent before a restart
    assert hold_of(h, u1) == ("paced", 5.0)  # timestamp W0 + 6 at most one interval ahead
    assert h.take() == [] and h.co.next_ready_at() == 5.0
