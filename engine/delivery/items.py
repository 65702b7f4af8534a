"""The values the coalescer trades in: items, dispatches, settlements, outcomes and errors.

An `Item` is one submitted event (its prepared payload, token, priority and waiter); a `Dispatch`
is one send attempt of an item with its timestamp and rendered body; `Settled` says how an item
ended (`Settlement`); `Outcome` classifies what became of an attempt, from the shared reason table
(`outcome_for`). `LaneError` and `Busy` are the coalescer's two refusals. Pure: no trio, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from engine.apns.reasons import Disposition, Reason, disposition_for
from engine.payload import EventKind, PreparedPayload

LaneKey = tuple[str, str]
"""`(activity_id, lane_key)`: the unit of ordering and pacing."""


class DeliveryError(Exception):
    """Base class of the errors the coalescer raises (caller mistakes and overload)."""


class LaneError(DeliveryError):
    """The item cannot go on this lane: a second start, an update after the end, a closed lane."""


class Busy(DeliveryError):
    """A new lane was offered while `max_lanes` lanes are open: explicit overload, retry later."""


class Outcome(enum.Enum):
    """What happened to one dispatch, as reported by the dispatcher."""

    ACCEPTED = "accepted"  # 200 from APNs (apns.md §3)
    RETRY = "retry"  # 429 / 5xx: back off and retry (apns.md §3, retry guidance)
    REFRESH_AUTH = "refresh_auth"  # Expired/MissingProviderToken: the token was refreshed (§2)
    NEW_CONNECTION = "new_connection"  # Shutdown, UnrelatedKeyIdInToken, IdleTimeout
    UNPROCESSED = "unprocessed"  # REFUSED_STREAM, or above GOAWAY's last stream id (apns.md §4)
    TRANSPORT = "transport"  # no answer: connection lost mid-stream, timeout
    DROP_TOKEN = "drop_token"  # 410 Unregistered / ExpiredToken, BadDeviceToken
    FIX_REQUEST = "fix_request"  # any other 4xx: never retried as is (apns.md §3)


class Settlement(enum.Enum):
    """How an item ended its life in the coalescer (each item is settled exactly once)."""

    ACCEPTED = "accepted"
    SUPERSEDED = "superseded"
    FAILED = "failed"


_BY_DISPOSITION: Final[dict[Disposition, Outcome]] = {
    Disposition.RETRY: Outcome.RETRY,
    Disposition.REFRESH_AUTH: Outcome.REFRESH_AUTH,
    Disposition.NEW_CONNECTION: Outcome.NEW_CONNECTION,
    Disposition.DROP_TOKEN: Outcome.DROP_TOKEN,
    Disposition.FIX_REQUEST: Outcome.FIX_REQUEST,
}


def outcome_for(status: int, reason: Reason | None) -> Outcome:
    """The outcome of an APNs answer: 200 is ACCEPTED, anything else follows the reason table."""
    if status == 200:
        return Outcome.ACCEPTED
    return _BY_DISPOSITION[disposition_for(status, reason)]


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
        """An item of the payload's kind and default priority, unless `priority` is given."""
        prio = payload.priority if priority is None else priority
        return cls(payload.event, token, payload, prio, expiration, seq, waiter)


@dataclass(frozen=True, slots=True, eq=False)
class Dispatch:
    """One send attempt: send `body` to `item.token`, then report it back with `complete`.

    `attempt` is 1 for the item's first send and grows with every resend of the same item.
    """

    lane: LaneKey
    item: Item
    timestamp: int
    body: bytes = field(repr=False)
    attempt: int


@dataclass(frozen=True, slots=True)
class Settled:
    """An item's final state: the dispatcher resolves `item.waiter` with it.

    `reason` is the APNs reason behind a failure when there is one; `timestamp` is the
    `aps.timestamp` of the accepted send.
    """

    item: Item
    status: Settlement
    reason: Reason | None = None
    detail: str = ""
    timestamp: int | None = None


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


# Outcomes after which APNs certainly did not process the push, so retrying at once is safe.
FREE_OUTCOMES: Final = frozenset({Outcome.NEW_CONNECTION, Outcome.UNPROCESSED})
