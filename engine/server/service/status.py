"""Delivery status: where each targeted device stands with an activity, from the service's rows.

`GET /api/live-activity/{activity_id}` and `GET /api/live-activity/stream/{stream_key}` answer with
it, so a caller can tell an activity the devices show from one the API accepted but a device never
took up: APNs accepts a push-to-start a phone then drops (its push-to-start budget is spent, the
user did not tap Allow, apns.md §6), and the only sign of it is the update token that never comes.

A recipient's state, from its durable row (engine/server/store/records.py):

    dead            its token no longer works (410, BadDeviceToken): nothing more is sent
    starting        the push-to-start is not confirmed by APNs yet
    awaiting_token  APNs accepted the push-to-start, but the device reported no update token;
                    `overdue` once it waited longer than `[live] token_timeout`
    refused_limit   overdue, and the device was at its Live Activity limit when the start was
                    made: the start probably met the older activities still on screen and iOS
                    ignored it (apns.md §6); a start that never met a full device reads
                    `awaiting_token` (the user has not tapped Allow, or the budget was spent)
    ended           the activity ended and APNs accepted its end for this device
    dismissed       ended, and its dismissal time has passed: it left the Lock Screen
    throttled       live, but the device's priority-10 budget is low or spent (the engine's
                    `PriorityBudget`): routine updates go at priority 5, which iOS shows late
    live            the device has an update token; `current` says if it has the newest content

With each state, the last answer about a push to that device (`last_status`, `last_reason`,
`last_at`), kept in memory since the server started, and `held`: why its newest content is not
sent yet, when that is known, the very reason a call counted it in `devices_queued`: the engine's
hold of the push (`paced`, `behind` another push of its lane, `backoff`), or `awaiting_token`
when a started device has no update token for content newer than what it has. A wait for the
update token is counted from APNs's acceptance of the start (after a restart, from the
activity's start).

Read-only: it never changes a row and needs no lock (a row is read whole between awaits).
A restricted API key (contract/scope.py) reads only what it reaches: another activity is 403,
and a page leaves it out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Final

from engine.delivery.budget import BudgetState
from engine.delivery.items import Hold, HoldReason
from engine.server.contract import errors, models
from engine.server.contract.responses import HeldReason, RecipientState, iso
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.service.state import Activity, Recipient, Registry
from engine.server.store.records import unpack_state

STATES: Final = models.RECIPIENT_STATES
"""Every recipient state, in the order a device goes through them."""

MAX_PAGE: Final = 500

Budgets = Callable[[str, str], BudgetState | None]
"""Where a device's priority-10 budget stands, by (activity id, device id): `Engine.budget`."""

Holds = Callable[[str, str], Hold | None]
"""Why the newest push to a device waits in the engine, by (activity id, device id):
`Engine.hold`."""

_HELD: Final[dict[HoldReason, HeldReason]] = {
    HoldReason.PACED: "paced",
    HoldReason.BEHIND: "behind",
    HoldReason.BACKOFF: "backoff",
}
_SETTLED_STATES: Final = frozenset({"dead", "ended", "dismissed"})

__all__ = [
    "MAX_PAGE",
    "STATES",
    "Budgets",
    "DeliveryStatus",
    "Holds",
    "held_reason",
    "overdue",
    "recipient_state",
    "waiting_since",
]


def waiting_since(act: Activity, rec: Recipient) -> float:
    """Since when a started recipient waits for its update token (wall seconds): APNs's
    acceptance of the start, or, after a restart, the activity's start."""
    return rec.last_at if rec.last_at is not None else act.row.started_at


def recipient_state(
    act: Activity,
    rec: Recipient,
    now: float | None = None,
    *,
    token_timeout: float | None = None,
    budget: Budgets | None = None,
) -> RecipientState:
    """The state of one recipient at `now` (table in the module docstring). Without `now` an
    ended one is never called dismissed nor a wait overdue; without `budget`, never throttled."""
    row = rec.row
    if row.dead:
        return "dead"
    if not row.started:
        return "starting"
    if row.update_token is None:
        if rec.crowded and overdue(act, rec, now, token_timeout):
            return "refused_limit"
        return "awaiting_token"
    if act.row.ended and row.sent_version >= act.row.version:
        dismissal = act.row.dismissal_date
        if now is not None and dismissal is not None and dismissal <= now:
            return "dismissed"
        return "ended"
    if budget is not None and not act.row.ended:
        state = budget(act.row.activity_id, row.device_id)
        if state is not None and state.low:
            return "throttled"
    return "live"


def held_reason(
    act: Activity, rec: Recipient, state: RecipientState, holds: Holds | None
) -> HeldReason | None:
    """Why the recipient's newest content is not sent yet, if it waits (module docstring)."""
    if state in _SETTLED_STATES:
        return None
    row = rec.row
    if row.started and row.update_token is None:
        return "awaiting_token" if row.sent_version < act.row.version else None
    hold = None if holds is None else holds(act.row.activity_id, row.device_id)
    return None if hold is None else _HELD[hold.reason]


def overdue(act: Activity, rec: Recipient, now: float | None, token_timeout: float | None) -> bool:
    """Whether a started recipient without an update token waited past `token_timeout`."""
    if now is None or token_timeout is None or rec.row.update_token is not None:
        return False
    return rec.row.started and not rec.row.dead and now - waiting_since(act, rec) > token_timeout


class DeliveryStatus:
    """The status calls of the API, over the service's registry."""

    def __init__(
        self,
        registry: Registry,
        wall_clock: Callable[[], float],
        *,
        token_timeout: float | None = None,
        budget: Budgets | None = None,
        holds: Holds | None = None,
    ) -> None:
        """Answer from `registry` (the service's working copy) as of `wall_clock()`; a wait
        for an update token is overdue after `token_timeout` seconds; `budget` tells throttled
        devices, `holds` why a device's push waits."""
        self._reg = registry
        self._wall = wall_clock
        self._timeout = token_timeout
        self._budget = budget
        self._holds = holds

    def state(self, act: Activity, rec: Recipient, now: float) -> RecipientState:
        """One recipient's state at `now`, with this status's timeout and budgets."""
        return recipient_state(act, rec, now, token_timeout=self._timeout, budget=self._budget)

    def activity(self, activity_id: str, scope: KeyScope = FULL_ACCESS) -> models.ActivityStatus:
        """The status of one activity; 404 when there is none with that id, 403 out of reach."""
        act = self._reg.activities.get(activity_id)
        if act is None:
            raise errors.NotFound(f"no activity with id {activity_id!r}")
        scope.check_reach(act.row.channels, f"activity {activity_id}")
        return self._status(act, self._wall())

    def stream(self, stream_key: str, scope: KeyScope = FULL_ACCESS) -> models.ActivityStatus:
        """The status of a stream's current activity; 404 without such a stream or activity,
        403 out of reach."""
        stream = self._reg.streams.get(stream_key)
        act = None if stream is None else self._reg.activities.get(stream.activity_id or "")
        if act is None:
            raise errors.NotFound(f"no stream with key {stream_key!r}")
        scope.check_reach(act.row.channels, f"stream {stream_key!r}")
        return self._status(act, self._wall())

    def page(
        self,
        state: str | None = None,
        limit: int = 100,
        after: str | None = None,
        scope: KeyScope = FULL_ACCESS,
    ) -> models.ActivityStatusList:
        """Activities by id, those after `after`, with a device in `state` if given; 400 on a
        state or limit it does not know."""
        if state is not None and state not in STATES:
            raise errors.BadRequest(f"state must be one of {', '.join(STATES)}", field="state")
        if not 1 <= limit <= MAX_PAGE:
            raise errors.BadRequest(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        found: list[models.ActivityStatus] = []
        now = self._wall()
        for activity_id in sorted(self._reg.activities):
            if after is not None and activity_id <= after:
                continue
            act = self._reg.activities[activity_id]
            if not scope.reaches(act.row.channels):
                continue
            if state is None or any(
                self.state(act, rec, now) == state for rec in act.recipients.values()
            ):
                if len(found) == limit:
                    return models.ActivityStatusList(activities=found, next=found[-1].activity_id)
                found.append(self._status(act, now))
        return models.ActivityStatusList(activities=found)

    def recent(self, limit: int) -> list[models.ActivityStatus]:
        """The `limit` most recently updated activities, newest first (ties by id), for the
        lock screens page; `limit` is clamped to 1..MAX_PAGE."""
        limit = max(1, min(limit, MAX_PAGE))
        now = self._wall()
        newest = heapq.nsmallest(
            limit,
            self._reg.activities.values(),
            key=lambda act: (-act.row.updated_at, act.row.activity_id),
        )
        return [self._status(act, now) for act in newest]

    def _status(self, act: Activity, now: float) -> models.ActivityStatus:
        row = act.row
        return models.ActivityStatus(
            activity_id=row.activity_id,
            stream_key=row.stream_key,
            version=row.version,
            ended=row.ended,
            updated_at=iso(row.updated_at),
            devices=[self._device(act, d, rec, now) for d, rec in sorted(act.recipients.items())],
            content_state=unpack_state(row.state),
        )

    def _device(
        self, act: Activity, device_id: str, rec: Recipient, now: float
    ) -> models.RecipientStatus:
        state = self.state(act, rec, now)
        waiting = state in ("awaiting_token", "refused_limit")
        return models.RecipientStatus(
            device_id=device_id,
            state=state,
            confirmed_version=rec.row.sent_version,
            current=rec.row.sent_version >= act.row.version,
            last_status=rec.last_status,
            last_reason=rec.last_reason,
            last_at=None if rec.last_at is None else iso(rec.last_at),
            waiting_since=iso(waiting_since(act, rec)) if waiting else None,
            overdue=waiting and overdue(act, rec, now, self._timeout),
            held=held_reason(act, rec, state, self._holds),
        )
