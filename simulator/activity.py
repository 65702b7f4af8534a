"""One Live Activity on a simulated iPhone: a pure state machine (apns.md §6).

States: ACTIVE → STALE (stale-date reached) → ENDED (an `end` push, or the system after 8 h) →
DISMISSED (dismissal-date reached, or 4 h after the end). Two explicit transition tables drive it:

- `_PUSH_TRANSITIONS`: (state, push event) → handler, for `update` and `end` pushes;
- `_TIME_TRANSITIONS`: (state, time event) → handler, for stale-date, 8 h lifetime, dismissal.

Nothing runs in the background. Time-based transitions are materialised lazily by `advance(now)`,
which every push calls first; the time recorded for such a transition is the instant it became due,
not the instant it was noticed, so the event log stays in time order.

Rules implemented (apns.md §6 and Apple Developer Forums thread 776165):
- an `update` applies only if its `aps.timestamp` is newer than the last applied one; an older
  one is `stale-timestamp`, an equal one `equal-timestamp` (undocumented, the conservative
  reading); both count as `ignored` and as `order_violations`;
- a timestamp more than 8 h ahead of `now` is dropped (`future-timestamp`), for every event;
- an `end` is never dropped for an old timestamp, but its content-state only replaces a newer one
  when its own timestamp is newer; otherwise the order violation is counted and the state kept;
- a push to an ended or dismissed activity is ignored (`activity-ended`);
- `stale-date`, `relevance-score` and `content-state` together form the activity's content, which
  each applied update replaces as a whole (an update without `stale-date` clears it), as
  ActivityKit's `ActivityContent` does.

Held updates (apns.md §1, Budget rules): the device's `Gate` decides whether an update applies at
once. A priority-5 update waits a short delay (longer in Low Power Mode); a priority-10 update past
the hourly budget is throttled until the budget regains one. An activity holds at most one update,
the newest: a newer push replaces the held one (`superseded`), an older one is ordered against it
as against the shown state. A priority-5 update replacing a priority-5 one keeps the earlier due
time, so a steady stream of them is shown every delay, not starved. An update applied at once
drops an older held one. An `end` is never held: it applies a held update first when that one is
newer, else drops it. A held update is applied when due; the system ending the activity drops it.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

ACTIVE_LIFETIME: Final = 8 * 3600.0
"""Seconds an activity may stay active before the system ends it (apns.md §6, Lifetime)."""

LOCK_SCREEN_AFTER_END: Final = 4 * 3600.0
"""Seconds an ended activity may stay on the Lock Screen before dismissal (apns.md §6)."""

FUTURE_TOLERANCE: Final = 8 * 3600.0
"""A push timestamp further than this ahead of the device clock is dropped (forum 776165)."""

EVENT_LOG_LIMIT: Final = 200
"""Default number of event-log entries kept per activity (older ones are counted, then dropped)."""


class ActivityState(enum.Enum):
    """Where an activity is in its lifecycle."""

    ACTIVE = "active"
    STALE = "stale"
    ENDED = "ended"
    DISMISSED = "dismissed"


class ActivityOutcome(enum.Enum):
    """What a delivered push did on the device (or, for `stored`, at APNs while it is offline)."""

    STARTED = "started"
    APPLIED = "applied"
    ENDED = "ended"
    IGNORED = "ignored"
    HELD = "held"  # accepted by the device, shown later (detail: the `HoldReason`)
    STORED = "stored"  # the device is offline: APNs keeps the push (simulator/devices.py)


class HoldReason(enum.StrEnum):
    """Why the device holds an update instead of showing it at once."""

    THROTTLED = "throttled"  # priority 10 past the hourly update budget
    LOW_PRIORITY = "low-priority"  # priority 5: applied after the device's delay


class Detail(enum.StrEnum):
    """Why a push was ignored (or, on an `end`, why its content-state was not applied)."""

    STALE_TIMESTAMP = "stale-timestamp"
    EQUAL_TIMESTAMP = "equal-timestamp"
    FUTURE_TIMESTAMP = "future-timestamp"
    BAD_TIMESTAMP = "bad-timestamp"  # update/end without a numeric aps.timestamp
    BAD_PAYLOAD = "bad-payload"  # a known aps key with the wrong type, or an update without state
    ACTIVITY_ENDED = "activity-ended"
    LIMIT_REACHED = "limit-reached"
    BAD_START = "bad-start"
    BAD_EVENT = "bad-event"
    NOT_LIVE_ACTIVITY = "not-live-activity"  # no `aps` dictionary at all
    UNKNOWN_TOKEN = "unknown-token"
    DUPLICATE_START = "duplicate-start"  # the app already shows this activity_id (see devices.py)
    PUSH_TO_START_BUDGET = "push-to-start-budget"  # apns.md §6, Observed budgets
    SUPERSEDED = "superseded"  # a held update replaced by a newer push before it was shown
    DENIED = "denied"  # the user answered "Don't Allow"
    NOT_STORED = "not-stored"  # offline device, `apns-expiration: 0` (apns.md §1)
    EXPIRED = "expired"  # stored while offline, past its `apns-expiration` when it came back
    STORE_FULL = "store-full"  # stored while offline, pushed out by newer ones (bounded store)


class PushEvent(enum.Enum):
    """The `aps.event` values a push may carry to an existing activity."""

    UPDATE = "update"
    END = "end"


class _Due(enum.Enum):
    """Time events, computed from the activity's own dates."""

    STALE = "stale"
    LIFETIME = "lifetime"
    DISMISSAL = "dismissal"
    RELEASE = "release"  # a held update is due


class Gate(Protocol):
    """The device's budgets, as an activity asks them (simulator/devices.py implements it)."""

    def hold(self, priority: int, now: float) -> tuple[HoldReason, float] | None:
        """None to apply an update now (spending budget if it counts); else why and until when."""
        ...

    def release(self, reason: HoldReason, at: float) -> float | None:
        """At a held update's due time: None to apply it now, else when to try again."""
        ...

    def spend(self, priority: int, now: float) -> None:
        """A push that is never held (an `end`) still spends budget at priority 10."""
        ...


class OpenGate:
    """A device without budgets: every update applies at once."""

    def hold(self, priority: int, now: float) -> tuple[HoldReason, float] | None:
        """Never holds."""
        del priority, now
        return None

    def release(self, reason: HoldReason, at: float) -> float | None:
        """Always releases."""
        del reason, at
        return None

    def spend(self, priority: int, now: float) -> None:
        """Nothing to spend."""
        del priority, now


OPEN_GATE: Final = OpenGate()


@dataclass(frozen=True, slots=True)
class PushResult:
    """The result of one push on one activity."""

    outcome: ActivityOutcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StartPayload:
    """The validated fields of a push-to-start payload (apns.md §6, `aps` keys)."""

    timestamp: float
    attributes_type: str
    attributes: dict[str, Any]
    content_state: dict[str, Any]
    alert: dict[str, Any]
    stale_date: float | None
    relevance_score: float | None


@dataclass(frozen=True, slots=True)
class _Content:
    """The validated fields of an update or end payload."""

    timestamp: float
    content_state: dict[str, Any] | None
    stale_date: float | None
    relevance_score: float | None
    alert: dict[str, Any] | None
    dismissal_date: float | None


@dataclass(slots=True)
class Held:
    """The one update an activity holds back, with when it is next due."""

    content: _Content
    push: PushFacts
    reason: HoldReason
    due: float

    def to_state(self) -> dict[str, Any]:
        """Everything needed to hold it again after a restart."""
        c, p = self.content, self.push
        return {
            "content": [
                c.timestamp,
                c.content_state,
                c.stale_date,
                c.relevance_score,
                c.alert,
                c.dismissal_date,
            ],
            "push": [p.now, p.priority, p.apns_id],
            "reason": self.reason.value,
            "due": self.due,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Held:
        """The held update a `to_state` result describes."""
        return cls(
            _Content(*state["content"]),
            PushFacts(*state["push"]),
            HoldReason(state["reason"]),
            float(state["due"]),
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: what is held, why, and until when."""
        return {
            "timestamp": self.content.timestamp,
            "reason": self.reason.value,
            "due_at": self.due,
            "apns_id": self.push.apns_id,
            "priority": self.push.priority,
            "received_at": self.push.now,
        }


@dataclass(frozen=True, slots=True)
class PushFacts:
    """Delivery facts recorded with every push in the event log."""

    now: float
    priority: int
    apns_id: str


def is_number(value: object) -> bool:
    """True for JSON numbers (int or float), but not for booleans."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_future(timestamp: float, now: float) -> bool:
    """True when a push timestamp is too far ahead of the device clock to be believed."""
    return timestamp > now + FUTURE_TOLERANCE


class _Malformed(Exception):
    """A known `aps` key has the wrong type (or a required one is missing)."""


def _num(aps: Mapping[str, Any], key: str) -> float | None:
    """An optional number, as float; None when absent."""
    value = aps.get(key)
    if value is None:
        return None
    if not is_number(value):
        raise _Malformed(key)
    return float(value)


def _obj(aps: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """An optional JSON object; None when absent."""
    value = aps.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Malformed(key)
    return value


def parse_start(aps: Mapping[str, Any]) -> StartPayload | None:
    """Validate a `start` payload; None when a required field is missing or mistyped.

    Required: `timestamp`, `attributes-type`, `attributes`, `content-state` and `alert` (apns.md §6
    says the alert is required on start).
    """
    kind = aps.get("attributes-type")
    try:
        timestamp, attributes = _num(aps, "timestamp"), _obj(aps, "attributes")
        state, alert = _obj(aps, "content-state"), _obj(aps, "alert")
        stale, score = _num(aps, "stale-date"), _num(aps, "relevance-score")
    except _Malformed:
        return None
    if timestamp is None or attributes is None or state is None or alert is None:
        return None
    if not isinstance(kind, str) or not kind:
        return None
    return StartPayload(timestamp, kind, attributes, state, alert, stale, score)


def _parse_content(aps: Mapping[str, Any], *, require_state: bool) -> _Content | Detail:
    """Validate an `update` (content-state required) or `end` payload."""
    try:
        timestamp = _num(aps, "timestamp")
    except _Malformed:
        timestamp = None
    if timestamp is None:
        return Detail.BAD_TIMESTAMP
    try:
        content = _Content(
            timestamp,
            _obj(aps, "content-state"),
            _num(aps, "stale-date"),
            _num(aps, "relevance-score"),
            _obj(aps, "alert"),
            _num(aps, "dismissal-date"),
        )
    except _Malformed:
        return Detail.BAD_PAYLOAD
    if require_state and content.content_state is None:
        return Detail.BAD_PAYLOAD
    return content


class EventLog:
    """A bounded, ordered event log: past the limit the oldest entries go, and are counted."""

    __slots__ = ("_entries", "dropped")

    def __init__(self, limit: int = EVENT_LOG_LIMIT) -> None:
        """Keep at most `limit` entries."""
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self.dropped = 0

    def add(
        self,
        at: float,
        event: str,
        timestamp: Any = None,
        detail: str = "",
        push: PushFacts | None = None,
    ) -> None:
        """Append one entry: `at` (device time), `event`, `timestamp` (aps), `detail`."""
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self._entries.append(
            {
                "at": at,
                "event": event,
                "timestamp": timestamp if is_number(timestamp) else None,
                "detail": detail,
                "apns_id": push.apns_id if push else None,
                "priority": push.priority if push else None,
            }
        )

    def entries(self) -> list[dict[str, Any]]:
        """A copy of the entries, oldest first."""
        return [dict(entry) for entry in self._entries]

    def to_state(self) -> dict[str, Any]:
        """What a restart keeps (simulator/state.py)."""
        return {"entries": self.entries(), "dropped": self.dropped}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a `to_state` result (entries past the limit count as dropped)."""
        entries = [dict(e) for e in state.get("entries", ()) if isinstance(e, dict)]
        self._entries.clear()
        self._entries.extend(entries)
        self.dropped = int(state.get("dropped", 0)) + max(0, len(entries) - len(self._entries))


class LiveActivity:
    """One Live Activity and the pushes it has seen. Mutable; owned by a device."""

    def __init__(
        self,
        *,
        activity_id: str,
        token: str,
        start: StartPayload,
        now: float,
        log_limit: int = EVENT_LOG_LIMIT,
        apns_id: str = "",
        priority: int = 10,
    ) -> None:
        """Create the activity from a validated push-to-start payload received at `now`."""
        self.activity_id = activity_id
        self.token = token
        self.state = ActivityState.ACTIVE
        self.attributes_type = start.attributes_type
        self.attributes = start.attributes
        self.content_state = start.content_state
        self.last_timestamp = start.timestamp
        self.stale_date = start.stale_date
        self.relevance_score = start.relevance_score
        self.last_alert: dict[str, Any] | None = start.alert
        self.started_at = now
        self.ended_at: float | None = None
        self.dismissal_at: float | None = None
        self.applied = 1
        self.ignored = 0
        self.order_violations = 0
        self.log = EventLog(log_limit)
        self.scheduled: float | None = None  # owner's bookkeeping: the due time it has queued
        self.held: Held | None = None
        self.throttled = 0  # updates held for the budget
        self.delayed = 0  # priority-5 updates held for the device's delay
        self.superseded = 0  # held updates replaced or dropped before they were shown
        self.awaiting_allow = False  # started, update token not issued yet (apns.md §6, Tokens)
        self.log.add(now, "start", start.timestamp, "", PushFacts(now, priority, apns_id))
        self._refresh_staleness(now)

    @property
    def is_live(self) -> bool:
        """True while the activity counts against the device limit (active or stale)."""
        return self.state in (ActivityState.ACTIVE, ActivityState.STALE)

    @property
    def unregistered_at_ms(self) -> int | None:
        """Once dismissed, the update token is dead from this instant (unix ms), else None."""
        if self.state is not ActivityState.DISMISSED or self.dismissal_at is None:
            return None
        return int(self.dismissal_at * 1000)

    def next_due_at(self) -> float | None:
        """When the next time-based transition is due, or None once dismissed."""
        due = self._next_due()
        return None if due is None else due[1]

    def advance(self, now: float, gate: Gate = OPEN_GATE) -> None:
        """Materialise every time-based transition due at or before `now`, in time order."""
        while (due := self._next_due()) is not None and due[1] <= now:
            if due[0] is _Due.RELEASE:
                self._release(gate, due[1])
            else:
                _TIME_TRANSITIONS[(self.state, due[0])](self, due[1])

    def receive(
        self,
        event: PushEvent,
        aps: Mapping[str, Any],
        *,
        now: float,
        priority: int,
        apns_id: str,
        gate: Gate = OPEN_GATE,
    ) -> PushResult:
        """Apply an `update` or `end` push received at `now`, as the device's `gate` allows."""
        self.advance(now, gate)
        handler = _PUSH_TRANSITIONS[(self.state, event)]
        return handler(self, aps, PushFacts(now, priority, apns_id), gate)

    def ignore(self, detail: str, aps: Mapping[str, Any], push: PushFacts) -> PushResult:
        """Record an ignored push and return the IGNORED result."""
        self.ignored += 1
        self.log.add(push.now, "ignored", aps.get("timestamp"), detail, push)
        return PushResult(ActivityOutcome.IGNORED, detail)

    def dismiss(self, at: float, detail: str = "") -> None:
        """Remove the activity from the Lock Screen at `at` (used by pruning as well)."""
        if self.ended_at is None:
            self.ended_at = at
        self._drop_held(at, Detail.ACTIVITY_ENDED)
        self.awaiting_allow = False  # gone from the Lock Screen: no prompt left to answer
        self.state = ActivityState.DISMISSED
        self.dismissal_at = at
        self.log.add(at, "dismissed", None, detail)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view (see the shape in simulator/devices.py)."""
        return {
            "activity_id": self.activity_id,
            "token": self.token,
            "state": self.state.value,
            "attributes_type": self.attributes_type,
            "attributes": dict(self.attributes),
            "content_state": dict(self.content_state),
            "last_timestamp": self.last_timestamp,
            "stale_date": self.stale_date,
            "dismissal_at": self.dismissal_at,
            "relevance_score": self.relevance_score,
            "last_alert": None if self.last_alert is None else dict(self.last_alert),
            "applied": self.applied,
            "ignored": self.ignored,
            "order_violations": self.order_violations,
            "held": None if self.held is None else self.held.snapshot(),
            "throttled": self.throttled,
            "delayed": self.delayed,
            "superseded": self.superseded,
            "awaiting_allow": self.awaiting_allow,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "events": self.log.entries(),
            "events_dropped": self.log.dropped,
        }

    _STATE_FIELDS: Final = (
        "activity_id",
        "token",
        "attributes_type",
        "attributes",
        "content_state",
        "last_timestamp",
        "stale_date",
        "relevance_score",
        "last_alert",
        "started_at",
        "ended_at",
        "dismissal_at",
        "applied",
        "ignored",
        "order_violations",
        "throttled",
        "delayed",
        "superseded",
        "awaiting_allow",
    )

    def to_state(self) -> dict[str, Any]:
        """Everything a restart keeps (simulator/state.py); JSON-ready."""
        state = {name: getattr(self, name) for name in self._STATE_FIELDS}
        state["state"] = self.state.value
        state["log"] = self.log.to_state()
        state["held"] = None if self.held is None else self.held.to_state()
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any], log_limit: int = EVENT_LOG_LIMIT) -> LiveActivity:
        """The activity a `to_state` result describes (KeyError/ValueError if it is damaged)."""
        act = cls.__new__(cls)
        for name in cls._STATE_FIELDS:
            setattr(act, name, state[name])
        act.state = ActivityState(state["state"])
        act.log = EventLog(log_limit)
        act.log.restore(state["log"])
        act.held = None if state["held"] is None else Held.from_state(state["held"])
        act.scheduled = None
        return act

    # -- internals -------------------------------------------------------------------------

    def _next_due(self) -> tuple[_Due, float] | None:
        """The next time event (a held update's release first on a tie), with its instant."""
        due = self._next_state_due()
        if self.held is not None and (due is None or self.held.due <= due[1]):
            return _Due.RELEASE, self.held.due
        return due

    def _next_state_due(self) -> tuple[_Due, float] | None:
        """The next time event of the lifecycle, with the instant it becomes due."""
        if self.state is ActivityState.ACTIVE:
            expires = self.started_at + ACTIVE_LIFETIME
            if self.stale_date is not None and self.stale_date < expires:
                return _Due.STALE, self.stale_date
            return _Due.LIFETIME, expires
        if self.state is ActivityState.STALE:
            return _Due.LIFETIME, self.started_at + ACTIVE_LIFETIME
        if self.state is ActivityState.ENDED and self.dismissal_at is not None:
            return _Due.DISMISSAL, self.dismissal_at
        return None

    def _refresh_staleness(self, now: float) -> None:
        """After new content: stale at once if its stale-date has passed, else active again."""
        stale = self.stale_date is not None and now >= self.stale_date
        self.state = ActivityState.STALE if stale else ActivityState.ACTIVE

    def _order_check(self, timestamp: float) -> Detail | None:
        """None when `timestamp` is newer than every state the device has (shown or held)."""
        newest = self.last_timestamp
        if self.held is not None:
            newest = max(newest, self.held.content.timestamp)
        if timestamp > newest:
            return None
        self.order_violations += 1
        if timestamp == newest:
            return Detail.EQUAL_TIMESTAMP
        return Detail.STALE_TIMESTAMP

    def _hold(self, content: _Content, push: PushFacts, reason: HoldReason, due: float) -> None:
        """Hold `content` (newer than anything held: the caller checked), replacing what was."""
        if self.held is not None:
            if reason is HoldReason.LOW_PRIORITY and self.held.reason is reason:
                due = min(due, self.held.due)  # a burst of priority-5 updates lands together
            self._drop_held(push.now)
        self.held = Held(content, push, reason, due)
        if reason is HoldReason.THROTTLED:
            self.throttled += 1
        else:
            self.delayed += 1
        self.log.add(push.now, "held", content.timestamp, reason, push)

    def _drop_held(self, at: float, detail: str = Detail.SUPERSEDED) -> None:
        """Forget the held update (a newer state won, or the activity ended)."""
        held = self.held
        if held is None:
            return
        self.held = None
        self.superseded += 1
        self.log.add(at, "dropped", held.content.timestamp, detail, held.push)

    def _release(self, gate: Gate, at: float) -> None:
        """A held update is due at `at`: apply it if the gate lets it through, else wait more."""
        held = self.held
        assert held is not None  # only scheduled while something is held
        retry = gate.release(held.reason, at)
        if retry is not None:
            held.due = retry if retry > at else math.nextafter(at, math.inf)  # always forward
            return
        self.held = None
        self._apply(held.content)
        self._refresh_staleness(at)
        self.log.add(at, "update", held.content.timestamp, f"released:{held.reason}", held.push)

    def _apply(self, content: _Content) -> None:
        """Replace the shown content with a newer push's content."""
        if content.content_state is not None:
            self.content_state = content.content_state
        self.last_timestamp = content.timestamp
        self.stale_date = content.stale_date
        self.relevance_score = content.relevance_score
        if content.alert is not None:
            self.last_alert = content.alert
        self.applied += 1


# -- push handlers: (activity, aps, push) -> result -------------------------------------------


def _on_update(
    act: LiveActivity, aps: Mapping[str, Any], push: PushFacts, gate: Gate
) -> PushResult:
    """ACTIVE/STALE + update: apply (or hold) when strictly newer (apns.md §6, §1 budgets)."""
    content = _parse_content(aps, require_state=True)
    if isinstance(content, Detail):
        return act.ignore(content, aps, push)
    if is_future(content.timestamp, push.now):
        return act.ignore(Detail.FUTURE_TIMESTAMP, aps, push)
    if (why := act._order_check(content.timestamp)) is not None:
        return act.ignore(why, aps, push)
    hold = gate.hold(push.priority, push.now)
    if hold is not None:
        act._hold(content, push, *hold)
        return PushResult(ActivityOutcome.HELD, hold[0])
    act._drop_held(push.now)  # older than this one, which is shown now
    act._apply(content)
    act._refresh_staleness(push.now)
    detail = "stale" if act.state is ActivityState.STALE else ""
    act.log.add(push.now, "update", content.timestamp, detail, push)
    return PushResult(ActivityOutcome.APPLIED)


def _on_end(act: LiveActivity, aps: Mapping[str, Any], push: PushFacts, gate: Gate) -> PushResult:
    """ACTIVE/STALE + end: always ends; the final state applies only if newer (forum 776165).

    Never held: a held update newer than the end is shown first, an older one dropped. At
    priority 10 it spends budget like any other (apns.md §1), even with none left.
    """
    content = _parse_content(aps, require_state=False)
    if isinstance(content, Detail):
        return act.ignore(content, aps, push)
    if is_future(content.timestamp, push.now):
        return act.ignore(Detail.FUTURE_TIMESTAMP, aps, push)
    gate.spend(push.priority, push.now)
    held = act.held
    if held is not None and held.content.timestamp > content.timestamp:
        act.held = None
        act._apply(held.content)
        act.log.add(push.now, "update", held.content.timestamp, "released:end", held.push)
    act._drop_held(push.now)
    why = act._order_check(content.timestamp)
    if why is None:
        act._apply(content)
    act.state = ActivityState.ENDED
    act.ended_at = push.now
    act.log.add(push.now, "end", content.timestamp, why or "", push)
    dismissal = content.dismissal_date
    if dismissal is not None and dismissal <= push.now:
        act.dismiss(push.now, "dismissal-date")  # a past date removes it at once (apns.md §6)
    else:
        latest = push.now + LOCK_SCREEN_AFTER_END
        act.dismissal_at = latest if dismissal is None else min(dismissal, latest)
    return PushResult(ActivityOutcome.ENDED, why or "")


def _on_gone(act: LiveActivity, aps: Mapping[str, Any], push: PushFacts, gate: Gate) -> PushResult:
    """ENDED/DISMISSED + anything: a push after the end is ignored (apns.md §6)."""
    del gate
    return act.ignore(Detail.ACTIVITY_ENDED, aps, push)


_PushHandler = Callable[[LiveActivity, Mapping[str, Any], PushFacts, Gate], PushResult]

_PUSH_TRANSITIONS: Final[dict[tuple[ActivityState, PushEvent], _PushHandler]] = {
    (ActivityState.ACTIVE, PushEvent.UPDATE): _on_update,
    (ActivityState.ACTIVE, PushEvent.END): _on_end,
    (ActivityState.STALE, PushEvent.UPDATE): _on_update,
    (ActivityState.STALE, PushEvent.END): _on_end,
    (ActivityState.ENDED, PushEvent.UPDATE): _on_gone,
    (ActivityState.ENDED, PushEvent.END): _on_gone,
    (ActivityState.DISMISSED, PushEvent.UPDATE): _on_gone,
    (ActivityState.DISMISSED, PushEvent.END): _on_gone,
}


# -- time handlers: (activity, instant) -> None ------------------------------------------------


def _become_stale(act: LiveActivity, at: float) -> None:
    """ACTIVE + stale-date reached → STALE."""
    act.state = ActivityState.STALE
    act.log.add(at, "stale")


def _end_by_system(act: LiveActivity, at: float) -> None:
    """ACTIVE/STALE + 8 h lifetime reached → ENDED, dismissed 4 h later (apns.md §6)."""
    act._drop_held(at, Detail.ACTIVITY_ENDED)
    act.awaiting_allow = False  # an ended activity never gets its update token
    act.state = ActivityState.ENDED
    act.ended_at = at
    act.dismissal_at = at + LOCK_SCREEN_AFTER_END
    act.log.add(at, "ended-by-system")


def _dismiss_due(act: LiveActivity, at: float) -> None:
    """ENDED + dismissal time reached → DISMISSED."""
    act.dismiss(at)


_TimeHandler = Callable[[LiveActivity, float], None]

_TIME_TRANSITIONS: Final[dict[tuple[ActivityState, _Due], _TimeHandler]] = {
    (ActivityState.ACTIVE, _Due.STALE): _become_stale,
    (ActivityState.ACTIVE, _Due.LIFETIME): _end_by_system,
    (ActivityState.STALE, _Due.LIFETIME): _end_by_system,
    (ActivityState.ENDED, _Due.DISMISSAL): _dismiss_due,
}
