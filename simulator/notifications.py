"""The app side of one simulated iPhone: notifications, badge, background wakes, calls, widgets.

Live Activities have their own tokens and state machine (`simulator.activity`); every other push
goes to one of the app's own tokens (`Device.app_tokens`) and lands here, in `AppSide.receive`.
Which push type a token kind takes is the validator's step 12 (`simulator.validation`); a push
that reaches this module with a type its token does not take (a direct call, a replay) is ignored
as `wrong-push-type`.

- `alert` on the device token: a notification in the list (newest last), with its title, subtitle
  and body (strings, or `{loc-key, loc-args}` objects kept as given; the alert dictionary's
  `title-loc-key`/`title-loc-args`, `subtitle-loc-key`/`subtitle-loc-args` and
  `loc-key`/`loc-args` are gathered into such objects), sound, badge, interruption level, thread
  id, category and collapse id. A push whose `apns-collapse-id` matches a notification still in
  the list replaces it: the old entry goes, the new one is the newest (apns.md §1,
  `apns-collapse-id` merges notifications). `aps.badge` sets the app's badge, 0 clears it. A push
  with a badge or a sound but no alert text changes the badge (or plays its sound) and adds no
  entry (`no-alert`); one with none of the three shows nothing (`nothing-to-show`, ignored and
  logged). Both are counted in `notifications_silent`. An unknown `interruption-level` is shown
  as `active`, the level iOS gives a notification that names none; the entry keeps what was sent
  in `interruption_level_sent`. The simulated app is assumed to hold the entitlements that
  `critical` and `time-sensitive` need. `content-available` on an alert push is not counted as a
  background wake (only `background` pushes wake the app here).
- `background` on the device token (`aps.content-available: 1`): wakes the app, at most
  `DeviceProfile.background_budget` times per hour. Over the budget the wake is dropped and
  logged (`background-budget`): iOS may also hold a throttled push and deliver it later, but it
  promises nothing, and a sender must never count on a background push arriving. Priority 5 is
  the only one APNs accepts for it; an absent `apns-priority` reads as 5 (validator step 7), and
  priority 1 is treated like 5. A priority-10 push reaching the device directly is ignored.
- `voip` on the VoIP token: the app reports an incoming call for every push, as PushKit requires
  on iOS 13 and later (an app that does not is terminated, and its VoIP pushes stop). Each call is
  recorded with the push's payload.
- `widgets` on the widget token (iOS 26): only the exact body `{"aps":{"content-changed":true}}`
  reloads the app's widgets, at most `DeviceProfile.widget_reload_budget` times per day (WidgetKit's
  reload budget); anything else is ignored (`not-content-changed`), and a reload over the budget is
  dropped (`widget-budget`). A reload is counted (`widget_reloads`) and its time kept
  (`widget_reloaded_at`); the simulated widget extension then reads the server's current values
  (`simulator.widgets`) and the widget shows them (`show_widget`: `widget` in the snapshot, at
  most `WIDGET_METRICS` of them, by key; `widget_failed` keeps the values shown before and says
  why the read failed).

A malformed known `aps` key (an alert that is neither a string nor an object, a badge that is not
a non-negative integer, a sound that is neither a string nor an object, a non-string
interruption level, thread id or category) makes the whole push ignored as
`bad-payload (aps.<key>)`, so a sender sees its mistake instead of a half-shown notification.

Every ignored or dropped push is logged with its reason (the event shape of `simulator.activity`,
`event: "ignored"`). Pure: no I/O, no clock reads; the time comes in with each push. Memory is
bounded: the notification list, the call list and the log keep at most `limit` entries each,
the oldest dropped first and counted.

Budgets are the shared `simulator.budget.Bucket` (one refill rule for every budget of a phone),
or a never-spent one when the profile turns budgets off; both behind the `Budget` protocol.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from simulator.activity import EventLog, PushFacts, is_number
from simulator.budget import Bucket
from simulator.profile import DeviceProfile
from simulator.validation import TokenKind

HOUR: Final = 3600.0
DAY: Final = 86_400.0

INTERRUPTION_LEVELS: Final = frozenset({"passive", "active", "time-sensitive", "critical"})
"""The values of `aps.interruption-level` iOS knows (iOS 15+)."""

DEFAULT_INTERRUPTION_LEVEL: Final = "active"
"""The level of a notification that names none, or names one iOS does not know."""

WIDGETS_BODY: Final = {"aps": {"content-changed": True}}
"""The one body a `widgets` push may carry (iOS 26 widget push updates)."""

WIDGET_METRICS: Final = 64
"""The most metric values a simulated widget keeps (a real widget shows a handful)."""


class AppDetail(enum.StrEnum):
    """Why an app push was ignored or dropped, or what a delivered one did."""

    WRONG_PUSH_TYPE = "wrong-push-type"  # a push type this token kind does not take
    BAD_PAYLOAD = "bad-payload"  # a known aps key of the wrong type (the key is named after it)
    NOTHING_TO_SHOW = "nothing-to-show"  # an alert push without alert text, badge or sound
    NOT_CONTENT_AVAILABLE = "not-content-available"  # background push without content-available 1
    BACKGROUND_PRIORITY = "background-priority-10"  # APNs never delivers one (validator step 7)
    BACKGROUND_BUDGET = "background-budget"  # over the hourly wake budget: dropped
    NOT_CONTENT_CHANGED = "not-content-changed"  # a widgets body other than the exact one
    WIDGET_BUDGET = "widget-budget"  # over the daily reload budget: dropped
    # What a delivered push did:
    SHOWN = "shown"
    REPLACED = "replaced"  # shown in place of the notification with the same collapse id
    NO_ALERT = "no-alert"  # badge or sound only: nothing added to the list
    WOKEN = "woken"
    CALL = "call"
    RELOADED = "reloaded"


@dataclass(frozen=True, slots=True)
class AppResult:
    """What one push did to the app: `delivered` False means ignored or dropped (see `detail`)."""

    delivered: bool
    detail: str


class Budget(Protocol):
    """A device-side budget: spend one push at `now`, or learn how many are left."""

    def take(self, now: float) -> bool:
        """Spend one if the budget has one at `now`; False when it is spent."""
        ...

    def remaining(self, now: float) -> int:
        """Whole pushes left at `now`."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The state a restart keeps."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a `to_json` result."""
        ...


class _Unlimited:
    """The budget of a profile with `budgets` off: never spent."""

    def take(self, now: float) -> bool:
        """Always True."""
        del now
        return True

    def remaining(self, now: float) -> int:
        """A number no sender reaches."""
        del now
        return 2**31 - 1

    def to_json(self) -> dict[str, Any]:
        """Nothing to keep."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Nothing to take back."""
        del state


def _budget(profile: DeviceProfile, capacity: int, period: float) -> Budget:
    return Bucket(capacity, period) if profile.budgets else _Unlimited()


class _Malformed(Exception):
    """A known `aps` key has the wrong type; the argument names it."""


class AppSide:
    """The app's own pushes on one device: notification list, badge, wakes, calls, reloads."""

    __slots__ = (
        "_reload_budget",
        "_wake_budget",
        "background_wakes",
        "badge",
        "calls",
        "calls_dropped",
        "log",
        "notifications",
        "notifications_dropped",
        "notifications_replaced",
        "notifications_silent",
        "widget",
        "widget_reloaded_at",
        "widget_reloads",
    )

    def __init__(self, profile: DeviceProfile, limit: int) -> None:
        """An app with nothing received yet; lists and log keep at most `limit` entries each."""
        if limit < 1:
            raise ValueError("limit must be positive")
        self._wake_budget = _budget(profile, profile.background_budget, HOUR)
        self._reload_budget = _budget(profile, profile.widget_reload_budget, DAY)
        self.badge = 0
        self.notifications: deque[dict[str, Any]] = deque(maxlen=limit)
        self.notifications_dropped = 0
        self.notifications_replaced = 0
        self.notifications_silent = 0
        self.calls: deque[dict[str, Any]] = deque(maxlen=limit)
        self.calls_dropped = 0
        self.background_wakes = 0
        self.widget_reloads = 0
        self.widget_reloaded_at: float | None = None  # device time of the last reload
        # What the widget shows: {"metrics": {key: value}, "shown_at", "error"} (show_widget).
        self.widget: dict[str, Any] = {"metrics": {}, "shown_at": None, "error": None}
        self.log = EventLog(limit)

    def receive(
        self,
        kind: TokenKind,
        push_type: str,
        payload: Mapping[str, Any],
        collapse_id: str | None,
        push: PushFacts,
    ) -> AppResult:
        """Apply one accepted push to the app token of `kind` (the module docstring's rules)."""
        handler = _HANDLERS.get((kind, push_type))
        if handler is None:
            return self._ignore(AppDetail.WRONG_PUSH_TYPE, push)
        aps = payload.get("aps")
        return handler(self, payload, aps if isinstance(aps, dict) else {}, collapse_id, push)

    def snapshot(self) -> dict[str, Any]:
        """The JSON-ready view (shape in simulator/devices.py)."""
        return {
            "badge": self.badge,
            "notifications": [dict(n) for n in self.notifications],
            "notifications_dropped": self.notifications_dropped,
            "notifications_replaced": self.notifications_replaced,
            "notifications_silent": self.notifications_silent,
            "background_wakes": self.background_wakes,
            "widget_reloads": self.widget_reloads,
            "widget_reloaded_at": self.widget_reloaded_at,
            "widget": {**self.widget, "metrics": dict(self.widget["metrics"])},
            "calls": [dict(c) for c in self.calls],
            "calls_dropped": self.calls_dropped,
            "app_events": self.log.entries(),
            "app_events_dropped": self.log.dropped,
        }

    _COUNTERS: Final = (
        "badge",
        "notifications_dropped",
        "notifications_replaced",
        "notifications_silent",
        "background_wakes",
        "widget_reloads",
        "calls_dropped",
    )

    def to_state(self) -> dict[str, Any]:
        """Everything a restart keeps (simulator/state.py); JSON-ready."""
        state: dict[str, Any] = {name: getattr(self, name) for name in self._COUNTERS}
        state["notifications"] = [dict(n) for n in self.notifications]
        state["calls"] = [dict(c) for c in self.calls]
        state["log"] = self.log.to_state()
        state["wake_budget"] = self._wake_budget.to_json()
        state["reload_budget"] = self._reload_budget.to_json()
        state["widget_reloaded_at"] = self.widget_reloaded_at
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a `to_state` result (KeyError/TypeError/ValueError if it is damaged)."""
        for name in self._COUNTERS:
            setattr(self, name, int(state[name]))
        self.notifications.clear()
        self.notifications.extend(dict(n) for n in state["notifications"])
        self.calls.clear()
        self.calls.extend(dict(c) for c in state["calls"])
        self.log.restore(state["log"])
        self._wake_budget.restore(state["wake_budget"])
        self._reload_budget.restore(state["reload_budget"])
        reloaded_at = state.get("widget_reloaded_at")  # absent from older state files
        self.widget_reloaded_at = None if reloaded_at is None else float(reloaded_at)

    def show_widget(self, metrics: Mapping[str, Any], now: float) -> None:
        """The widget extension read these values (key -> value) after a reload: show them."""
        keys = sorted(metrics)[:WIDGET_METRICS]
        self.widget = {"metrics": {k: metrics[k] for k in keys}, "shown_at": now, "error": None}

    def widget_failed(self, error: str, now: float) -> None:
        """The read after a reload failed: the widget keeps what it showed, and says why."""
        self.widget = {**self.widget, "error": f"{error} (at {now:.3f})"}

    # -- per push type ----------------------------------------------------------------------------

    def _alert(
        self,
        payload: Mapping[str, Any],
        aps: Mapping[str, Any],
        collapse_id: str | None,
        push: PushFacts,
    ) -> AppResult:
        del payload
        try:
            entry = _notification(aps, collapse_id, push)
        except _Malformed as exc:
            return self._ignore(f"{AppDetail.BAD_PAYLOAD} (aps.{exc.args[0]})", push)
        if entry["badge"] is not None:
            self.badge = entry["badge"]
        if not any(entry[key] for key in ("title", "subtitle", "body")):
            self.notifications_silent += 1
            if entry["badge"] is None and entry["sound"] is None:
                return self._ignore(AppDetail.NOTHING_TO_SHOW, push)
            return AppResult(True, AppDetail.NO_ALERT)
        detail = AppDetail.SHOWN
        if collapse_id is not None:
            old = next((n for n in self.notifications if n["collapse_id"] == collapse_id), None)
            if old is not None:
                self.notifications.remove(old)
                self.notifications_replaced += 1
                entry["replaced"] = old["replaced"] + 1
                detail = AppDetail.REPLACED
        if len(self.notifications) == self.notifications.maxlen:
            self.notifications_dropped += 1
        self.notifications.append(entry)
        return AppResult(True, detail)

    def _background(
        self,
        payload: Mapping[str, Any],
        aps: Mapping[str, Any],
        collapse_id: str | None,
        push: PushFacts,
    ) -> AppResult:
        del payload, collapse_id
        if push.priority == 10:
            return self._ignore(AppDetail.BACKGROUND_PRIORITY, push)
        available = aps.get("content-available")
        if not is_number(available) or available != 1:
            return self._ignore(AppDetail.NOT_CONTENT_AVAILABLE, push)
        if not self._wake_budget.take(push.now):
            return self._ignore(AppDetail.BACKGROUND_BUDGET, push)
        self.background_wakes += 1
        return AppResult(True, AppDetail.WOKEN)

    def _voip(
        self,
        payload: Mapping[str, Any],
        aps: Mapping[str, Any],
        collapse_id: str | None,
        push: PushFacts,
    ) -> AppResult:
        del aps, collapse_id
        if len(self.calls) == self.calls.maxlen:
            self.calls_dropped += 1
        self.calls.append({"at": push.now, "apns_id": push.apns_id, "payload": dict(payload)})
        return AppResult(True, AppDetail.CALL)

    def _widgets(
        self,
        payload: Mapping[str, Any],
        aps: Mapping[str, Any],
        collapse_id: str | None,
        push: PushFacts,
    ) -> AppResult:
        del collapse_id
        # `True == 1` in Python: the flag must be the JSON literal true, and nothing else may ride.
        if payload != WIDGETS_BODY or aps.get("content-changed") is not True:
            return self._ignore(AppDetail.NOT_CONTENT_CHANGED, push)
        if not self._reload_budget.take(push.now):
            return self._ignore(AppDetail.WIDGET_BUDGET, push)
        self.widget_reloads += 1
        self.widget_reloaded_at = push.now
        return AppResult(True, AppDetail.RELOADED)

    def _ignore(self, detail: str, push: PushFacts) -> AppResult:
        self.log.add(push.now, "ignored", None, detail, push)
        return AppResult(False, detail)


_Handler = Callable[
    [AppSide, Mapping[str, Any], Mapping[str, Any], str | None, PushFacts], AppResult
]

_HANDLERS: Final[dict[tuple[TokenKind, str], _Handler]] = {
    (TokenKind.DEVICE, "alert"): AppSide._alert,
    (TokenKind.DEVICE, "background"): AppSide._background,
    (TokenKind.VOIP, "voip"): AppSide._voip,
    (TokenKind.WIDGETS, "widgets"): AppSide._widgets,
}
"""(token kind, push type) → what the app does; the pairs validator step 12 lets through."""


# -- the notification entry ---------------------------------------------------------------------


def _notification(
    aps: Mapping[str, Any], collapse_id: str | None, push: PushFacts
) -> dict[str, Any]:
    """The list entry an alert push makes (badge and sound included); _Malformed on a bad key."""
    alert = aps.get("alert")
    if isinstance(alert, str):
        title, subtitle, body = None, None, alert or None
    elif isinstance(alert, dict):
        title = _text(alert, "title", "title-loc-key", "title-loc-args")
        subtitle = _text(alert, "subtitle", "subtitle-loc-key", "subtitle-loc-args")
        body = _text(alert, "body", "loc-key", "loc-args")
    elif alert is None:
        title = subtitle = body = None
    else:
        raise _Malformed("alert")
    level = _optional(aps, "interruption-level", str)
    return {
        "apns_id": push.apns_id,
        "at": push.now,
        "title": title,
        "subtitle": subtitle,
        "body": body,
        "sound": _optional(aps, "sound", str | dict),
        "badge": _badge(aps),
        "interruption_level": level if level in INTERRUPTION_LEVELS else DEFAULT_INTERRUPTION_LEVEL,
        "interruption_level_sent": level,
        "thread_id": _optional(aps, "thread-id", str),
        "category": _optional(aps, "category", str),
        "collapse_id": collapse_id,
        "replaced": 0,
    }


def _text(alert: Mapping[str, Any], key: str, loc_key: str, loc_args: str) -> Any:
    """One alert text: a string or a `{loc-key, loc-args}` object as given, gathered, or None."""
    value = alert.get(key)
    if value is None and loc_key in alert:
        value = {"loc-key": alert[loc_key], "loc-args": alert.get(loc_args, [])}
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise _Malformed(f"alert.{key}")
    return value or None  # an empty string shows nothing


def _optional(aps: Mapping[str, Any], key: str, kind: Any) -> Any:
    """An optional key of the given type, or None; _Malformed when present with another type."""
    value = aps.get(key)
    if value is not None and not isinstance(value, kind):
        raise _Malformed(key)
    return value


def _badge(aps: Mapping[str, Any]) -> int | None:
    """`aps.badge` as a count (0 clears the badge), None when absent."""
    value = aps.get("badge")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Malformed("badge")
    return value
