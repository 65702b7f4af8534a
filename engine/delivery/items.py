"""The values the coalescer trades in: items, dispatches, settlements and errors.

An `Item` is one submitted event (its prepared payload, device token, priority and waiter); a
`Dispatch` is one send attempt of an item with its timestamp and rendered body; the coalescer is
told what became of an attempt as an `Outcome` (the shared vocabulary of `engine.apns.reasons`),
and answers with `Settled` records: how an item ended, as the caller's `DeliveryStatus`. A `Hold`
says why a pending item cannot be sent yet and the earliest monotonic time it can.
`LaneError` and `Busy` are the coalescer's two refusals. Pure: no trio, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from engine.apns.reasons import REASONS, Outcome, Reason
from engine.payload import EventKind, PreparedPayload
from engine.results import DeliveryStatus

LaneKey = tuple[str, str]
"""`(activity_id, lane_key)`: the unit of ordering and pacing."""


class DeliveryError(Exception):
    """Base class of the errors the coalescer raises (caller mistakes and overload)."""


class LaneError(DeliveryError):
    """The item cannot go on this lane: a second start, an update after the end, a closed lane."""


class Busy(DeliveryError):
    """A new lane was offered while `max_lanes` lanes are open: explicit overload, retry later."""


FREE_OUTCOMES: Final = frozenset({Outcome.NEW_CONNECTION, Outcome.UNPROCESSED})
"""Outcomes after which APNs certainly did not process the push, so retrying at once is safe
(apns.md §4: a refused stream or one above GOAWAY's last stream id was never seen)."""

# Outcomes that mean "never send this as is again" (apns.md §3, retry guidance).
_FINAL_OUTCOMES: Final = frozenset({Outcome.DROP_TOKEN, Outcome.FIX_REQUEST})


def failure_status(reason: Reason | None) -> DeliveryStatus:
    """How an item that will not be delivered ends: REJECTED when APNs named a reason the table
    says never to retry (a dead token, a request to fix), FAILED otherwise.

    The reason decides, not the outcome: a bare 410 or 404 without a reason string names nothing
    to fix, so it ends FAILED.
    """
    if reason is not None and REASONS[reason].outcome in _FINAL_OUTCOMES:
        return DeliveryStatus.REJECTED
    return DeliveryStatus.FAILED


@dataclass(frozen=True, slots=True, eq=False)
class Item:
    """One push to deliver on a lane; compared by identity, so each submission is distinct.

    `waiter` is opaque here: the dispatcher stores whatever it resolves when the item settles.
    """

    kind: EventKind
    token: str
    payload: PreparedPayload
    priority: int
    expiration: int | None
    seq: int
    waiter: object | None = field(default=None, repr=False)
    # A silent update whose priority the caller left to the engine: the budget picks 10 or 5.
    routine: bool = False

    def __post_init__(self) -> None:
        if self.payload.event is not self.kind:
            raise ValueError(f"item kind {self.kind.value} does not match its payload's event")
        if self.priority not in (5, 10):
            raise ValueError(f"priority must be 5 or 10, got {self.priority!r}")

    @classmethod
    def build(
        cls,
        payload: PreparedPayload,
        token: str,
        seq: int,
        *,
        priority: int | None = None,
        expiration: int | None = None,
        waiter: object | None = None,
    ) -> Item:
        """An item of the payload's kind and default priority, unless `priority` is given.

        Without an explicit `priority`, a payload whose default is 5 (a silent update) is routine:
        the budget may send it at 10 while plenty is left (`engine.delivery.budget`).
        """
        prio = payload.priority if priority is None else priority
        routine = priority is None and payload.priority == 5
        return cls(payload.event, token, payload, prio, expiration, seq, waiter, routine)


@dataclass(frozen=True, slots=True, eq=False)
class Dispatch:
    """One send attempt: send `body` to `item.token`, then report it back with `complete`.

    `attempt` is 1 for the item's first send and grows with every resend of the same item;
    `priority` is the `apns-priority` this attempt goes with (the budget's pick, else the item's).
    """

    lane: LaneKey
    item: Item
    timestamp: int
    body: bytes = field(repr=False)
    attempt: int
    priority: int = 10


@dataclass(frozen=True, slots=True)
class Settled:
    """An item's end: the dispatcher resolves `item.waiter` with a result of this status.

    `reason` is the APNs reason behind a failure when there is one; `timestamp` is the
    `aps.timestamp` of the accepted send.
    """

    item: Item
    status: DeliveryStatus
    reason: Reason | None = None
    detail: str = ""
    timestamp: int | None = None


class HoldReason(enum.StrEnum):
    """Why a pending item is not sent now (the values are API words and never change)."""

    PACED = "paced"
    """Its lane sent less than `pacing_interval` ago, or its next `aps.timestamp` would run more
    than one interval ahead of the wall clock (one push per lane per second, apns.md §6)."""
    BEHIND = "behind"
    """Another push of its lane goes first: one in flight (it is coalesced behind it), or an
    earlier event still queued (a start before an update, an update before the end)."""
    BACKOFF = "backoff"
    """Its lane waits to retry after a failed attempt (apns.md §4)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A pending item's hold: `reason`, and `until`, the earliest monotonic time it can be sent.

    `until` is a lower bound: a push in flight that fails can delay it further, and one refused
    unprocessed lets the next go at once (apns.md §4); neither is known in advance.
    """

    reason: HoldReason
    until: float


@dataclass(frozen=True, slots=True)
class CoalescerStats:
    """Counts for metrics; never used to drive behaviour."""

    lanes: int
    scheduled: int
    pending: int
    in_flight: int
    closed_lanes: int
    offered: int
    coalesced: int
    dispatched: int
    accepted: int
    failed: int
    idle: int = 0  # open lanes with nothing pending or in flight
    evicted: int = 0  # idle lanes forgotten to make room (see `Coalescer._evict_idle`)
    abandoned: int = 0  # items settled because their activity was abandoned (`Coalescer.abandon`)
