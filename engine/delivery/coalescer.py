"""Per-lane mailboxes: latest-wins coalescing, one push in flight, increasing timestamps, pacing.

A **lane** is `(activity_id, lane_key)`; the service uses the device id as `lane_key`, so the
push-to-start and the later updates and end of one activity on one device share a lane even though
they go to different tokens. Each lane holds three pending slots (start, update, end), at most one
`Dispatch` in flight, the last `aps.timestamp` it sent and the monotonic time before which it sends
nothing.

Rules (the delivery design; apns.md §6 for why timestamps matter):

- An UPDATE replaces a pending UPDATE; an ALERT (a notification, `engine.notification`) takes the
  same slot: a newer one replaces a pending one on its lane (the service gives each notification
  its own lane, so two different notifications are never merged, and a replacement supersedes
  the pending original); an END replaces a pending UPDATE or END. Replaced items are
  settled SUPERSEDED. A START is never coalesced away; it must be the first item ever offered on a
  lane. After an END is offered (pending or in flight), updates are refused; an END offered while
  another END is in flight waits in the end slot. After a lane closes, everything is refused.
- Send order is START, UPDATE, END. Every send attempt gets `ts = max(int(wall_now), last_ts + 1)`,
  so a device that applies only newer timestamps never applies an older state after a newer one,
  even when a "failed" attempt was in fact delivered. A lane is not ready while its next timestamp
  would be more than `pacing_interval` ahead of the wall clock.
- One send per lane per `pacing_interval` (>= 1 s: timestamps have 1-second resolution). A retry
  waits for `max(pacing, backoff)`; immediate retries (refused streams, a first expired provider
  token) skip pacing because APNs never processed the push.
- Each send attempt's `apns-priority` is the budget's pick when a `PriorityBudget` is given
  (`engine.delivery.budget`: routine updates at 10 while plenty is left, else at 5), else the
  item's own.
- A retry keeps only the newest state: if a newer item of the same slot is pending, the failed one
  is SUPERSEDED and the newer goes next.
- `hold` tells, at any time, why a pending item is not sent now and the earliest time it can be
  (paced, behind another push of its lane, backing off), so a caller waiting for APNs' answer
  within a short window can tell at once that none can come (`engine.delivery.items.Hold`).
- `abandon(activity_id)`: another node delivers the activity now. Every item pending on any of
  its lanes settles FAILED at once (`ABANDONED`), and nothing more is sent for it: an idle lane is
  dropped at once, a lane with a push in flight once that push completes. The push in flight
  cannot be recalled; it completes as APNs answers, but a failure is settled (FAILED, or REJECTED
  when its reason says so) instead of retried, so this node never sends a state after the new
  owner's newer one. A later `offer` on the activity is a new ownership: it opens a fresh lane
  (seed it with `min_timestamp`), or, while the abandoned push is still in flight, joins its lane
  behind it, with a timestamp newer than that push's.

Decisions:

- `Item` compares by identity (`eq=False`), so the dispatcher can key waiters by item or read the
  opaque `waiter`; `Dispatch` likewise, and `complete` checks the dispatch is the one in flight.
- The ready queue is a heap of `(ready_at, stamp, lane)` with lazy deletion: every push takes a
  fresh stamp from one counter and the lane remembers the stamp of its live entry (its version);
  an entry whose stamp differs is stale and skipped. A lane is queued only while it has pending
  items and nothing in flight, and leaves the heap by being popped (a lane held back by the wall
  clock is popped and pushed again with its new time), so each lane has at most one entry. A lane
  dropped while queued (`abandon`) leaves a stale entry: it is skipped when it reaches the top,
  and the heap is rebuilt when stale entries outnumber live ones.
- `abandon` finds an activity's lanes through an index of activity id → lane keys, so abandoning
  many activities after a partition move costs what they hold, not a scan of every open lane.
  Most activities have one lane: the index holds that lane's key itself, and a list only from
  the second lane on (a list per lane made opening a lane half again as slow, partly in the
  garbage collector, which tracks lists but not strings). The index costs about 1 µs per new
  lane; offers on open lanes, the steady state, do not touch it.
- Backoff grows with the lane's consecutive counted failures (not the item's), so a stream of
  updates superseding each other during an outage still backs off; `max_attempts` counts the
  failures of one item. Backoff is `min(60, 2**(n-1))` scaled by a jitter factor in (0.5, 1],
  then raised to `retry_after` (capped at 60 s) when APNs gave one.
- An END that fails while a newer END is pending does not close the lane: the newer END (the final
  state) goes next. An END still pending when an earlier END is accepted is FAILED: the activity
  has already ended and the device ignores later pushes (apns.md §6).
- Lanes stay open until their END is accepted or they fail closed; `forget` drops an idle lane
  (e.g. an activity past its 8-hour lifetime), `abandon` every lane of an activity. Closed lanes
  are remembered in a bounded LRU (`abandon` leaves that memory alone: an activity that ended
  has ended for every node).
- Items settle with the caller's own `DeliveryStatus`, so the dispatcher only adds what APNs said
  (apns id, HTTP status). An item given up on is REJECTED when its APNs reason says never to retry
  as is, FAILED otherwise (`failure_status`); the coalescer never settles an item twice.

Pure: no trio, no clock reads. Monotonic `now` and wall-clock `wall_now` are always parameters.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from typing import Final

from engine.apns.reasons import Outcome, Reason
from engine.delivery.budget import BudgetState, PriorityBudget
from engine.delivery.items import (
    FREE_OUTCOMES,
    Busy,
    CoalescerStats,
    Dispatch,
    Hold,
    HoldReason,
    Item,
    LaneError,
    LaneKey,
    Settled,
    failure_status,
)
from engine.payload import EventKind
from engine.results import DeliveryStatus

__all__ = ["ABANDONED", "BACKOFF_CAP", "JITTER", "MAX_FREE_RETRIES", "Coalescer"]

ABANDONED: Final = "abandoned: another node delivers this activity now"
"""The `detail` of every item settled because its activity was abandoned (`Coalescer.abandon`)."""


BACKOFF_CAP: Final = 60.0
"""Longest wait between attempts, in seconds (also caps APNs' `retry_after`)."""

JITTER: Final = 0.5
"""A backoff is scaled by a factor in (1 - JITTER, 1] so lanes failing together spread out."""

MAX_FREE_RETRIES: Final = 20
"""Consecutive uncounted immediate retries (refused stream, new connection) before backing off."""

_MAX_EXPONENT: Final = 16  # 2**16 s is far above the cap; keeps the float power small

_START: Final = EventKind.START
_END: Final = EventKind.END
_ALERT: Final = EventKind.ALERT
_LATEST: Final = frozenset({EventKind.UPDATE, EventKind.ALERT})  # kinds of the update slot


class _Lane:
    """Mutable state of one open lane."""

    __slots__ = (
        "abandoned",
        "attempts",
        "end",
        "failures",
        "free_streak",
        "in_flight",
        "key",
        "last_ts",
        "ready_at",
        "refresh_streak",
        "retrying",
        "sends",
        "start",
        "update",
        "version",
    )

    def __init__(self, key: LaneKey, now: float) -> None:
        self.key = key
        self.start: Item | None = None
        self.update: Item | None = None
        self.end: Item | None = None
        self.in_flight: Dispatch | None = None
        self.last_ts = 0
        self.ready_at = now  # a fresh lane's first push is ready at once
        self.retrying: Item | None = None  # the item `attempts` and `sends` belong to
        self.attempts = 0  # counted failures of `retrying`
        self.sends = 0  # sends of `retrying`
        self.failures = 0  # consecutive counted failures on the lane: drives the backoff
        self.refresh_streak = 0
        self.free_streak = 0
        self.version = 0  # stamp of the live ready-heap entry; 0 when not queued
        self.abandoned: Dispatch | None = None  # the push in flight when the lane was abandoned

    def has_pending(self) -> bool:
        return self.start is not None or self.update is not None or self.end is not None

    def ending(self) -> bool:
        flight = self.in_flight
        return self.end is not None or (flight is not None and flight.item.kind is _END)


def _describe(lane: LaneKey) -> str:
    return f"activity {lane[0]!r} on lane {lane[1]!r}"


class Coalescer:
    """Per-lane mailboxes and the ready queue; the dispatcher drives it (see module docstring)."""

    def __init__(
        self,
        *,
        pacing_interval: float = 1.0,
        max_lanes: int = 200_000,
        max_attempts: int = 10,
        max_closed: int = 100_000,
        rng: random.Random | None = None,
        budget: PriorityBudget | None = None,
    ) -> None:
        if not (math.isfinite(pacing_interval) and pacing_interval >= 1.0):
            raise ValueError(
                f"pacing_interval must be at least 1.0 s, got {pacing_interval!r}: aps.timestamp "
                "has 1-second resolution, so faster pushes on one lane would share a timestamp"
            )
        for name, value, low in (
            ("max_lanes", max_lanes, 1),
            ("max_attempts", max_attempts, 1),
            ("max_closed", max_closed, 0),
        ):
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value!r}")
        self._interval = float(pacing_interval)
        self._max_lanes = max_lanes
        self._max_attempts = max_attempts
        self._max_closed = max_closed
        # Jitter only spreads retries; an unseeded default is fine, tests pass a seeded one.
        self._rng = rng if rng is not None else random.Random()
        # Without a budget every push goes at its item's priority (apns.md §1 defaults).
        self._budget = budget
        self._lanes: dict[LaneKey, _Lane] = {}
        self._closed: OrderedDict[LaneKey, str] = OrderedDict()
        # Idle open lanes (nothing pending or in flight) → monotonic time they went idle, oldest
        # first: the ones `offer` may evict when `max_lanes` is reached (see `_evict_idle`).
        self._idle: OrderedDict[LaneKey, float] = OrderedDict()
        self._heap: list[tuple[float, int, _Lane]] = []
        self._stamp = 0
        self._scheduled = 0
        self._pending = 0
        self._in_flight = 0
        self._offered = 0
        self._coalesced = 0
        self._dispatched = 0
        self._accepted = 0
        self._failed = 0
        self._evicted = 0
        self._abandoned = 0
        # activity id → the lane key of its open lane, or a list of two or more, for `abandon`.
        self._activities: dict[str, str | list[str]] = {}

    # ----------------------------------------------------------------------------------------------
    # Submission

    def offer(
        self, lane: LaneKey, item: Item, *, now: float, min_timestamp: int = 0
    ) -> list[Settled]:
        """Queue `item` on `lane`; returns the items it replaced (SUPERSEDED).

        `min_timestamp` raises the lane's last timestamp (e.g. the last one sent before a restart),
        so later sends are strictly newer. Raises `LaneError` for a start on a lane already in use,
        an update after an end, or a closed lane; `Busy` for a new lane beyond `max_lanes`.
        """
        state = self._lanes.get(lane)
        if state is None:
            closed = self._closed.get(lane)
            if closed is not None:
                self._closed.move_to_end(lane)
                raise LaneError(closed)
            if len(self._lanes) >= self._max_lanes and not self._evict_idle(now):
                raise Busy(
                    f"delivery is at capacity ({self._max_lanes} open lanes); "
                    f"{_describe(lane)} was not queued, retry later"
                )
            state = self._lanes[lane] = _Lane(lane, now)
            self._index(lane)
        elif item.kind is _START:
            raise LaneError(
                f"{_describe(lane)} is already in use: a start must be its first push "
                "(an activity starts once per lane)"
            )
        elif item.kind in _LATEST and state.ending():
            raise LaneError(f"{_describe(lane)} is ending: no update after the end")
        else:
            self._idle.pop(lane, None)
        if min_timestamp > state.last_ts:
            state.last_ts = min_timestamp
        self._offered += 1
        superseded = self._place(state, item)
        self._pending += 1 - len(superseded)
        if state.in_flight is None and state.version == 0:
            self._schedule(state, now)
        return superseded

    def _place(self, state: _Lane, item: Item) -> list[Settled]:
        """Put `item` in its slot, returning the item it replaces, if any."""
        old: Item | None
        if item.kind is _START:
            state.start = item
            return []
        if item.kind in _LATEST:
            old, state.update = state.update, item
            detail = "replaced by a newer update"
        elif state.update is not None:
            old, state.update, state.end = state.update, None, item
            detail = "replaced by the end, which carries the final state"
        else:
            old, state.end = state.end, item
            detail = "replaced by a newer end"
        if old is None:
            return []
        if old is state.retrying:
            state.retrying = None
        self._coalesced += 1
        return [Settled(old, DeliveryStatus.SUPERSEDED, None, detail)]

    # ----------------------------------------------------------------------------------------------
    # Holds

    def hold(
        self, lane: LaneKey, *, now: float, wall_now: float, item: Item | None = None
    ) -> Hold | None:
        """Why `item` (by default the lane's newest pending item) is not sent at `now`, and the
        earliest time it can be; None when it is ready, or not pending on `lane`.

        It goes out after the items queued before it on its lane (send order START, UPDATE, END),
        one pacing interval apart, from the lane's `ready_at` (the end of its pacing interval or
        backoff; while a push is in flight, one interval after that push was sent), and not
        before its timestamp is within one interval of the wall clock (as `take_ready` checks).
        """
        state = self._lanes.get(lane)
        if state is None:
            return None
        if item is None:
            item = state.end or state.update or state.start
        # The items queued before it on the lane (no list: this runs on every submission).
        if item is None:
            return None
        if item is state.start:
            ahead = 0
        elif item is state.update:
            ahead = int(state.start is not None)
        elif item is state.end:
            ahead = int(state.start is not None) + int(state.update is not None)
        else:
            return None  # sent, settled, or never offered here
        at = max(state.ready_at, now) + ahead * self._interval
        at = max(at, now + state.last_ts + 1 + ahead - (wall_now + self._interval))
        if at <= now:
            return None
        if ahead or state.in_flight is not None:
            return Hold(HoldReason.BEHIND, at)
        return Hold(HoldReason.BACKOFF if state.failures else HoldReason.PACED, at)

    def holds(
        self, lane: LaneKey, *, now: float, wall_now: float
    ) -> list[tuple[Item, Hold | None]]:
        """Every item pending on `lane`, in send order, with its `hold`."""
        return [
            (item, self.hold(lane, now=now, wall_now=wall_now, item=item))
            for item in self._queue(self._lanes.get(lane))
        ]

    @staticmethod
    def _queue(state: _Lane | None) -> list[Item]:
        """The lane's pending items in send order."""
        if state is None:
            return []
        return [item for item in (state.start, state.update, state.end) if item is not None]

    # ----------------------------------------------------------------------------------------------
    # Dispatching

    def next_ready_at(self) -> float | None:
        """Monotonic time of the earliest queued lane (may be in the past), or None if idle."""
        heap = self._heap
        while heap:
            ready_at, stamp, lane = heap[0]
            if lane.version == stamp:
                return ready_at
            heapq.heappop(heap)  # stale: its lane was dropped while queued (`abandon`)
        return None

    def take_ready(self, *, now: float, wall_now: float, limit: int) -> list[Dispatch]:
        """Up to `limit` dispatches for lanes ready at `now`, each with a fresh timestamp."""
        heap = self._heap
        out: list[Dispatch] = []
        deferred: list[tuple[_Lane, float]] = []
        ahead_limit = wall_now + self._interval
        while heap and len(out) < limit:
            ready_at, stamp, lane = heap[0]
            if lane.version != stamp:  # stale, as in `next_ready_at`
                heapq.heappop(heap)
                continue
            if ready_at > now:
                break
            heapq.heappop(heap)
            lane.version = 0
            self._scheduled -= 1
            gap = lane.last_ts + 1 - ahead_limit
            if gap > 0:
                # The next timestamp would run too far ahead of the wall clock; both clocks advance
                # together, so the wall gap becomes a monotonic wait (at least 1 ms, so a rounding
                # remainder cannot make the dispatcher spin).
                deferred.append((lane, now + max(gap, 0.001)))
                continue
            out.append(self._send(lane, now, wall_now))
        for lane, at in deferred:
            lane.ready_at = at
            self._schedule(lane, at)
        return out

    def _send(self, lane: _Lane, now: float, wall_now: float) -> Dispatch:
        item = lane.start or lane.update or lane.end
        assert item is not None  # only lanes with pending items are queued
        ts = max(int(wall_now), lane.last_ts + 1)
        body = item.payload.render(ts)  # before any mutation: it rejects a bad timestamp width
        if item is lane.start:
            lane.start = None
        elif item is lane.update:
            lane.update = None
        else:
            lane.end = None
        if item is not lane.retrying:
            lane.retrying = item
            lane.attempts = 0
            lane.sends = 0
        lane.sends += 1
        lane.last_ts = ts
        lane.ready_at = now + self._interval
        priority = item.priority
        # The budget is ActivityKit's (apns.md §1): a notification does not spend it.
        if self._budget is not None and item.kind is not _ALERT:
            priority = self._budget.pick(lane.key[1], priority, routine=item.routine, now=now)
        dispatch = Dispatch(lane.key, item, ts, body, lane.sends, priority)
        lane.in_flight = dispatch
        self._pending -= 1
        self._in_flight += 1
        self._dispatched += 1
        return dispatch

    def _schedule(self, lane: _Lane, now: float) -> None:
        if lane.ready_at < now:
            lane.ready_at = now  # ready now; keeps lanes that became ready together in FIFO order
        self._stamp += 1
        # Every caller schedules an unqueued lane (`offer` and `complete` check `version == 0`,
        # `take_ready` defers lanes it has just popped), so the heap holds one live entry per
        # scheduled lane; the check is a safety net.
        if lane.version == 0:  # pragma: no branch - never called for a queued lane
            self._scheduled += 1
        lane.version = self._stamp
        heapq.heappush(self._heap, (lane.ready_at, self._stamp, lane))
        # Lanes abandoned while queued leave stale entries; rebuild once they outnumber live ones.
        if len(self._heap) > 2 * self._scheduled + 64:
            self._heap = [(q.ready_at, q.version, q) for q in self._lanes.values() if q.version]
            heapq.heapify(self._heap)

    # ----------------------------------------------------------------------------------------------
    # Outcomes

    def complete(
        self,
        dispatch: Dispatch,
        outcome: Outcome,
        *,
        now: float,
        retry_after: float | None = None,
        reason: Reason | None = None,
    ) -> list[Settled]:
        """Record what happened to `dispatch`; returns the items that settled because of it.

        `reason` is the APNs reason, carried into the settlements of items given up on, where it
        decides between REJECTED and FAILED (`failure_status`); `retry_after` (seconds) is
        honoured up to 60 s. Raises `LaneError` if `dispatch` is not the lane's push in flight.
        """
        lane = self._lanes.get(dispatch.lane)
        if lane is None or lane.in_flight is not dispatch:
            raise LaneError(
                f"this dispatch for {_describe(dispatch.lane)} is not in flight "
                "(completed twice, or not from this coalescer)"
            )
        lane.in_flight = None
        self._in_flight -= 1
        if lane.abandoned is dispatch:
            settled = self._abandoned_send(lane, dispatch, outcome, reason)
        elif outcome is Outcome.ACCEPTED:
            settled = self._accepted_send(lane, dispatch)
        elif outcome is Outcome.DROP_TOKEN:
            settled = self._token_dead(lane, dispatch.item, reason)
        elif outcome is Outcome.FIX_REQUEST:
            lane.failures = lane.refresh_streak = lane.free_streak = 0
            settled = self._give_up(lane, dispatch.item, reason, _refused(reason))
        else:
            settled = self._retry(lane, dispatch.item, outcome, now, retry_after, reason)
        if lane.version == 0 and lane.key in self._lanes:
            if lane.has_pending():
                self._schedule(lane, now)
            else:
                self._idle[lane.key] = now
        return settled

    def _accepted_send(self, lane: _Lane, dispatch: Dispatch) -> list[Settled]:
        lane.failures = lane.refresh_streak = lane.free_streak = 0
        lane.retrying = None
        self._accepted += 1
        settled = [Settled(dispatch.item, DeliveryStatus.ACCEPTED, None, "", dispatch.timestamp)]
        if dispatch.item.kind is _END:
            activity, key = lane.key
            ended = f"activity {activity!r} already ended on lane {key!r}"
            settled += self._close(lane, ended, None, "the activity had already ended")
        return settled

    def _abandoned_send(
        self, lane: _Lane, dispatch: Dispatch, outcome: Outcome, reason: Reason | None
    ) -> list[Settled]:
        """The push in flight when its activity was abandoned has completed: never retried.

        Accepted, it counts as any acceptance (an accepted end closes the lane: the activity has
        ended for every node); otherwise it settles as given up, without closing the lane (the
        new owner decides what comes next). The lane is dropped unless an offer made after the
        abandon is pending on it (the activity came back to this node).
        """
        lane.abandoned = None
        if outcome is Outcome.ACCEPTED:
            settled = self._accepted_send(lane, dispatch)
        else:
            lane.failures = lane.refresh_streak = lane.free_streak = 0
            lane.retrying = None
            self._abandoned += 1
            detail = f"{ABANDONED} (its push in flight ended {outcome.value}, not retried)"
            settled = [Settled(dispatch.item, failure_status(reason), reason, detail)]
        if lane.key in self._lanes and not lane.has_pending():
            self._drop(lane)
        return settled

    def _retry(
        self,
        lane: _Lane,
        item: Item,
        outcome: Outcome,
        now: float,
        retry_after: float | None,
        reason: Reason | None,
    ) -> list[Settled]:
        free = self._is_free(lane, outcome)
        if not free:
            lane.failures += 1
            wait = _backoff(lane.failures, self._rng.random(), retry_after)
            lane.ready_at = max(lane.ready_at, now + wait)
        else:
            lane.ready_at = now  # APNs never processed it: not paced, not counted
        newer = lane.end if item.kind is _END else None
        if item.kind in _LATEST:
            newer = lane.update or lane.end
        if newer is not None:
            lane.retrying = None
            self._coalesced += 1
            return [Settled(item, DeliveryStatus.SUPERSEDED, reason, "replaced by a newer item")]
        if not free:
            lane.attempts += 1
            if lane.attempts >= self._max_attempts:
                detail = f"gave up after {lane.attempts} attempts (last: {outcome.value})"
                return self._give_up(lane, item, reason, detail)
        if item.kind is _START:
            lane.start = item
        elif item.kind in _LATEST:
            lane.update = item
        else:
            lane.end = item
        self._pending += 1
        return []

    def _is_free(self, lane: _Lane, outcome: Outcome) -> bool:
        """Whether this retry is immediate and uncounted; updates the lane's streaks."""
        if outcome is Outcome.REFRESH_AUTH:
            lane.free_streak = 0
            lane.refresh_streak += 1
            return lane.refresh_streak == 1  # a second one in a row: the new token failed too
        lane.refresh_streak = 0
        if outcome in FREE_OUTCOMES:
            lane.free_streak += 1
            return lane.free_streak <= MAX_FREE_RETRIES
        lane.free_streak = 0
        return False

    def _token_dead(self, lane: _Lane, item: Item, reason: Reason | None) -> list[Settled]:
        """The device token is dead: fail the item and every pending item addressed to it."""
        lane.failures = lane.refresh_streak = lane.free_streak = 0
        detail = f"device token is no longer valid ({reason.value if reason else 'unknown'})"
        settled = self._give_up(lane, item, reason, detail)
        if lane.key not in self._lanes:
            return settled
        token = item.token
        for pending in (lane.update, lane.end):  # a start cannot be pending behind a sent item
            if pending is not None and pending.token == token:
                if pending is lane.update:
                    lane.update = None
                else:
                    lane.end = None
                self._pending -= 1
                settled += self._give_up(lane, pending, reason, detail)
                if lane.key not in self._lanes:
                    break
        return settled

    def _give_up(
        self, lane: _Lane, item: Item, reason: Reason | None, detail: str
    ) -> list[Settled]:
        """Fail `item` (no longer in any slot); a failed start, or an end with no newer end
        pending, closes the lane."""
        if item is lane.retrying:
            lane.retrying = None
        self._failed += 1
        settled = [Settled(item, failure_status(reason), reason, detail)]
        if item.kind is _START:
            message = f"{_describe(lane.key)} is closed: its start failed ({detail})"
            settled += self._close(lane, message, reason, "the activity's start failed")
        elif item.kind is _END and lane.end is None:
            message = f"{_describe(lane.key)} is closed: its end failed ({detail})"
            settled += self._close(lane, message, reason, "the activity's end failed")
        return settled

    def _close(
        self, lane: _Lane, message: str, reason: Reason | None, detail: str
    ) -> list[Settled]:
        """Fail what is pending, forget the lane, remember it as closed with `message`."""
        status = failure_status(reason)
        settled = [
            Settled(item, status, reason, detail)
            for item in (lane.start, lane.update, lane.end)
            if item is not None
        ]
        lane.start = lane.update = lane.end = None
        self._pending -= len(settled)
        self._failed += len(settled)
        self._drop(lane)
        if self._max_closed:
            self._closed[lane.key] = message
            if len(self._closed) > self._max_closed:
                self._closed.popitem(last=False)
        return settled

    def _evict_idle(self, now: float) -> bool:
        """Make room for a new lane by forgetting the longest-idle one, if that is safe.

        An idle lane only remembers its last timestamp. Once it has been idle longer than the
        pacing interval plus one second, the wall clock has passed that timestamp (sends are never
        more than one interval ahead of it), so a fresh lane's first timestamp is already newer
        and forgetting loses nothing. A START on such a lane is then accepted again.
        """
        if not self._idle:
            return False
        key, since = next(iter(self._idle.items()))
        if now - since < self._interval + 1.0:
            return False
        self._drop(self._lanes[key])
        self._evicted += 1
        return True

    def _index(self, lane: LaneKey) -> None:
        """Add a new lane to the activity index (see `_drop` for the way out)."""
        activity, key = lane
        keys = self._activities.get(activity)
        if keys is None:
            self._activities[activity] = key
        elif isinstance(keys, str):
            self._activities[activity] = [keys, key]
        else:
            keys.append(key)

    def _drop(self, lane: _Lane) -> None:
        key = lane.key
        self._idle.pop(key, None)
        del self._lanes[key]
        activity, keys = key[0], self._activities[key[0]]
        if isinstance(keys, str):
            del self._activities[activity]
        else:
            keys.remove(key[1])
            if len(keys) == 1:
                self._activities[activity] = keys[0]
        # Only `abandon` drops a queued lane (the others drop idle lanes, or one whose push just
        # completed): its heap entry goes stale and is skipped (`next_ready_at`, `take_ready`).
        if lane.version:
            lane.version = 0
            self._scheduled -= 1

    # ----------------------------------------------------------------------------------------------
    # Housekeeping

    def forget(self, lane: LaneKey) -> bool:
        """Drop an idle lane (nothing pending or in flight); False if it is busy or unknown.

        Its last timestamp is forgotten too: reopen it with `offer(..., min_timestamp=...)`.
        """
        state = self._lanes.get(lane)
        if state is None or state.in_flight is not None or state.has_pending():
            return False
        self._drop(state)
        return True

    def abandon(self, activity_id: str) -> list[Settled]:
        """Stop delivering `activity_id`: another node delivers it now (module docstring).

        Returns the items that were pending on its lanes, each settled FAILED (`ABANDONED`);
        each lane is dropped at once, or, if a push is in flight on it, once that push completes
        (never retried). An unknown activity, or one whose lanes are closed, has nothing to settle.
        """
        keys = self._activities.get(activity_id)
        if keys is None:
            return []
        settled: list[Settled] = []
        for key in [keys] if isinstance(keys, str) else list(keys):  # `_drop` edits the index
            lane = self._lanes[(activity_id, key)]
            pending = self._queue(lane)
            lane.start = lane.update = lane.end = None
            settled += [Settled(item, DeliveryStatus.FAILED, None, ABANDONED) for item in pending]
            if lane.in_flight is None:
                self._drop(lane)
            else:
                lane.abandoned = lane.in_flight  # `complete` settles it instead of retrying
        self._pending -= len(settled)
        self._abandoned += len(settled)
        return settled

    def budget(self, lane: LaneKey, *, now: float) -> BudgetState | None:
        """Where the priority-10 budget of `lane`'s device stands at `now` (shared by every
        activity on it); None when no budget is tracked."""
        if self._budget is None:
            return None
        return self._budget.state(lane[1], now)

    def is_closed(self, lane: LaneKey) -> bool:
        """Whether `lane` is remembered as closed (ended, or its start or end failed)."""
        return lane in self._closed

    @property
    def stats(self) -> CoalescerStats:
        """Current sizes and lifetime counters."""
        return CoalescerStats(
            lanes=len(self._lanes),
            scheduled=self._scheduled,
            pending=self._pending,
            in_flight=self._in_flight,
            closed_lanes=len(self._closed),
            idle=len(self._idle),
            evicted=self._evicted,
            abandoned=self._abandoned,
            offered=self._offered,
            coalesced=self._coalesced,
            dispatched=self._dispatched,
            accepted=self._accepted,
            failed=self._failed,
        )


def _backoff(failures: int, draw: float, retry_after: float | None) -> float:
    """Seconds to wait after the lane's `failures`-th consecutive failure; `draw` is in [0, 1)."""
    base = min(BACKOFF_CAP, 2.0 ** min(failures - 1, _MAX_EXPONENT))
    wait = base * (1.0 - JITTER * draw)
    if retry_after is not None and retry_after > 0:  # NaN compares False: ignored
        wait = max(wait, min(retry_after, BACKOFF_CAP))
    return wait


def _refused(reason: Reason | None) -> str:
    return f"APNs refused the request ({reason.value if reason else 'no reason given'})"
