"""Simulated iPhones of one app: tokens, push-to-start, and delivery to Live Activities.

The fake APNs server validates a request, asks `DeviceRegistry.lookup` about the token (this class
is the server's `TokenDirectory`), and hands every accepted push to `DeviceRegistry.deliver`. The
Live Activity rules themselves live in `simulator.activity` (apns.md §6).

Pure: no I/O and no clock reads. The caller passes the wall time (`now`, unix seconds) to every
call that can move time forward. Time-based transitions (stale-date, the 8 h lifetime, dismissal)
are computed lazily when a device is touched; `lookup` takes no time, so a dismissed activity's
token reads as unregistered only once that dismissal has been materialised. The server therefore
calls `advance(now)` periodically (about once a second is plenty) and may call it before a lookup.

Tokens: every device has a push-to-start token (apns.md §6, Tokens); a push-to-start creates an
activity and issues a fresh per-activity update token, queued as a `TokenReport` that the server
posts to the engine's device API, as the iOS app would. A dismissed activity's token becomes
unregistered (410 with the dismissal time as its timestamp).

One phone's own state (profile, budgets, app side, offline store) is a `Device`
(simulator/device.py); this module owns the devices, the token directory, delivery, the user's and
the network's actions (Allow, dismissal, rotation, outages) and the state a restart keeps.

Snapshot shape (`snapshot(now)` returns a list of these; `device_snapshot(name, now)` one of them;
the README's control API section lists every key):

    {"name": str, "push_to_start_token": str, "channels": [str],
     "tokens": {"device", "voip", "widgets"}, "profile": {...}, "online": bool,
     "budget": {"updates_left", "updates_per_hour", "push_to_start_left", ...},
     "stored": [pushes APNs keeps while offline], "stored_dropped": int,
     "ignored": int,              # pushes to the push-to-start token that started nothing
     "events": [event], "events_dropped": int,     # push-to-start pushes, oldest first
     "activities": [{
        "activity_id": str, "token": str,
        "state": "active" | "stale" | "ended" | "dismissed",
        "attributes_type": str, "attributes": {...}, "content_state": {...},
        "last_timestamp": number, "stale_date": number | null, "dismissal_at": number | null,
        "relevance_score": number | null, "last_alert": {...} | null,
        "applied": int, "ignored": int, "order_violations": int,
        "held": {"timestamp", "reason", "due_at", ...} | null,
        "throttled": int, "delayed": int, "superseded": int, "awaiting_allow": bool,
        "started_at": number, "ended_at": number | null,
        "events": [event], "events_dropped": int}]}

    event = {"at": number (device time), "event": "start" | "update" | "end" | "ignored" | "stale"
             | "ended-by-system" | "dismissed", "timestamp": number | null (aps.timestamp),
             "detail": str, "apns_id": str | null, "priority": int | null}

The app's own pushes (alert, background, voip, widgets; rules in simulator/notifications.py) add,
to the same device object:

    {"badge": int,                                # the app icon's badge, 0 for none
     "notifications": [notification], "notifications_dropped": int,    # newest last
     "notifications_replaced": int,               # replaced by a push with their collapse id
     "notifications_silent": int,                 # alert pushes with no alert text
     "background_wakes": int, "widget_reloads": int,
     "widget_reloaded_at": number | null,         # device time of the last widget reload
     "widget": {"metrics": {key: value}, "shown_at": number | null, "error": str | null},
                                                  # what the widget shows (simulator/widgets.py)
     "calls": [{"at": number, "apns_id": str, "payload": {...}}], "calls_dropped": int,
     "app_events": [event], "app_events_dropped": int}   # app pushes ignored or dropped, and why

    notification = {"apns_id": str, "at": number, "title", "subtitle", "body": str | {"loc-key",
                    "loc-args"} | null, "sound": str | {...} | null, "badge": int | null,
                    "interruption_level": "passive" | "active" | "time-sensitive" | "critical",
                    "interruption_level_sent": str | null, "thread_id": str | null,
                    "category": str | null, "collapse_id": str | null, "replaced": int}

Memory is bounded: at most `max_kept` activities per device (the oldest dismissed ones are pruned
first), `log_limit` log entries per activity or device, `report_limit` queued token reports, and
`retired_limit` tokens of pruned activities remembered as unregistered.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from engine.apns.wire import LIVE_ACTIVITY_TOPIC_SUFFIX
from simulator.activity import (
    EVENT_LOG_LIMIT,
    ActivityOutcome,
    ActivityState,
    Detail,
    LiveActivity,
    PushEvent,
    PushFacts,
    is_future,
    parse_start,
)
from simulator.device import Device
from simulator.offline import StoredPush
from simulator.profile import AllowPrompt, DeviceProfile
from simulator.validation import TokenInfo, TokenKind

_HEX: Final = re.compile(r"[0-9a-fA-F]+")

__all__ = [
    "ActivityOutcome",
    "DeliveryOutcome",
    "Detail",
    "Device",
    "DeviceRegistry",
    "TokenReport",
]


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one accepted push did. `device` is "" when the token is unknown to the registry."""

    device: str
    activity_id: str | None
    outcome: ActivityOutcome
    detail: str = ""
    issued_token: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the control API's `delivered` list)."""
        return {
            "device": self.device,
            "activity_id": self.activity_id,
            "outcome": self.outcome.value,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class TokenReport:
    """An update token the device app would report to its backend after a start."""

    device: str
    push_to_start_token: str
    activity_id: str
    activity_token: str
    attributes_type: str
    attributes: dict[str, Any]
    issued_at: float


class DeviceRegistry:
    """The simulated iPhones of one app (bundle id), and the token directory over them."""

    def __init__(
        self,
        *,
        bundle_id: str,
        rng: random.Random,
        max_active: int = 5,
        token_bytes: int = 32,
        max_kept: int = 50,
        log_limit: int = EVENT_LOG_LIMIT,
        report_limit: int = 10_000,
        retired_limit: int = 100_000,
        default_profile: DeviceProfile | None = None,
    ) -> None:
        """Create an empty registry; `rng` is the only source of generated tokens.

        `default_profile` is the profile of a device added without one (default: `DeviceProfile()`,
        every budget on).
        """
        if not 1 <= max_active <= max_kept:
            raise ValueError(f"need 1 <= max_active ({max_active}) <= max_kept ({max_kept})")
        if token_bytes < 1:
            raise ValueError("token_bytes must be positive")
        self.bundle_id = bundle_id
        self.topic = bundle_id + LIVE_ACTIVITY_TOPIC_SUFFIX
        self._rng = rng
        self._max_active = max_active
        self._token_bytes = token_bytes
        self._max_kept = max_kept
        self._log_limit = log_limit
        self._devices: dict[str, Device] = {}
        self._tokens: dict[str, TokenInfo] = {}
        self._owners: dict[str, tuple[Device, LiveActivity | None]] = {}
        self._app_owners: dict[str, tuple[Device, TokenKind]] = {}  # app, VoIP, widget tokens
        self._reports: deque[TokenReport] = deque(maxlen=report_limit)
        self._retired: deque[str] = deque()
        self._retired_limit = retired_limit
        self.default_profile = default_profile or DeviceProfile()
        self._due: list[tuple[float, int, Device, LiveActivity]] = []  # min-heap of due times
        self._returns: list[tuple[float, str]] = []  # min-heap: when a plan outage ends, device
        self._due_seq = itertools.count()  # tie-breaker, so heap entries never compare objects
        self._activity_count = 0
        self.reports_dropped = 0
        self.changes = 0  # counts calls that change what a restart must keep (simulator/state.py)

    # -- devices and tokens -------------------------------------------------------------------

    @property
    def devices(self) -> Mapping[str, Device]:
        """The devices by name (read-only use)."""
        return self._devices

    def add_device(
        self,
        name: str,
        *,
        push_to_start_token: str | None = None,
        channels: Sequence[str] = (),
        profile: DeviceProfile | None = None,
        now: float,
    ) -> Device:
        """Add an iPhone with a push-to-start token (generated from the rng unless given).

        A given token must be hex (APNs tokens are); it is stored lower-case, as the validator
        looks tokens up. `now` is accepted for symmetry with the other calls and not stored.
        """
        self.changes += 1
        if not name or not name.isprintable():
            raise ValueError(f"device name must be non-empty and printable: {name!r}")
        if name in self._devices:
            raise ValueError(f"a device named {name!r} already exists")
        if push_to_start_token is None:
            token = self._new_token()
        elif _HEX.fullmatch(push_to_start_token) is None:
            raise ValueError(f"push-to-start token for {name!r} must be hex digits")
        else:
            token = push_to_start_token.lower()
            if token in self._tokens:
                raise ValueError(f"token {token[:8]}... for {name!r} is already in use")
        device = Device(name, token, channels, self._log_limit, profile or self.default_profile)
        if any(t in self._tokens for t in device.app_tokens.values()):
            raise ValueError(f"the app tokens derived for {name!r} are already in use")
        self._devices[name] = device
        self._register(device, token, TokenKind.PUSH_TO_START)
        self._owners[token] = (device, None)
        for kind, app in device.app_tokens.items():
            self._register(device, app, kind)
            self._app_owners[app] = (device, kind)
        return device

    def _register(self, device: Device, token: str, kind: TokenKind) -> None:
        """Record a token this app's APNs environment issued to `device`."""
        self._tokens[token] = TokenInfo(
            self.bundle_id, kind, environment=device.profile.environment
        )

    def lookup(self, token: str) -> TokenInfo | None:
        """The token directory for the validator: kind, bundle id, unregistration time, or None."""
        return self._tokens.get(token)

    def unregister(self, token: str, at_ms: int) -> None:
        """Mark a token unregistered since `at_ms` (unix ms); lookup then reports it (410)."""
        self.changes += 1
        info = self._tokens.get(token)
        if info is None:
            raise KeyError(f"unknown token {token[:8]}...")
        if info.unregistered_at_ms is None:
            self._tokens[token] = replace(info, unregistered_at_ms=at_ms)

    def expire_token(self, token: str, at_ms: int) -> None:
        """Mark a token expired from `at_ms` (unix ms, may be ahead): from then on the validator
        answers 410 `ExpiredToken` with that time (apns.md §3). The earliest instant given wins."""
        self.changes += 1
        info = self._tokens.get(token)
        if info is None:
            raise KeyError(f"unknown token {token[:8]}...")
        if info.expired_at_ms is None or at_ms < info.expired_at_ms:
            self._tokens[token] = replace(info, expired_at_ms=at_ms)

    def rotate_token(self, token: str, *, now: float) -> str:
        """Give a live activity a new update token (apns.md §6: update tokens may rotate).

        The old token is unregistered from `now`; a `TokenReport` for the new one is queued.
        """
        owner = self._owners.get(token)
        act = owner[1] if owner is not None else None
        if owner is None or act is None or act.token != token or not act.is_live:
            raise KeyError(f"not the token of a live activity: {token[:8]}...")
        new = self._new_token()
        self.unregister(token, int(now * 1000))
        act.token = new
        self._register(owner[0], new, TokenKind.ACTIVITY)
        self._owners[new] = owner
        self._retire(token)
        self._report(owner[0], act, now)
        return new

    def token_reports(self) -> list[TokenReport]:
        """Drain the queued token reports, oldest first (`reports_dropped` counts overflow)."""
        if not self._reports:
            return []  # the common case: the server drains after every push
        reports = list(self._reports)
        self._reports.clear()
        return reports

    # -- state that survives a restart (simulator/state.py) -------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Devices, every token APNs knows (dead ones too), and the token generator; JSON-ready."""
        tokens = {
            token: [info.kind.value, info.unregistered_at_ms, info.environment, info.expired_at_ms]
            for token, info in self._tokens.items()
            if info.bundle_id == self.bundle_id
        }
        return {
            "bundle_id": self.bundle_id,
            "devices": [device.to_state() for device in self._devices.values()],
            "tokens": tokens,
            "retired": list(self._retired),
            "owners": {
                token: [device.name, None if act is None else act.activity_id]
                for token, (device, act) in self._owners.items()
            },
            "rng": _rng_state(self._rng),
            "reports_dropped": self.reports_dropped,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace everything with an `export_state` result (ValueError if it does not fit)."""
        if state.get("bundle_id") != self.bundle_id:
            raise ValueError(
                f"saved devices belong to {state.get('bundle_id')!r}, not {self.bundle_id!r}"
            )
        try:
            devices = [Device.from_state(raw, self._log_limit) for raw in state["devices"]]
            tokens = {
                str(token): TokenInfo(self.bundle_id, TokenKind(kind), at_ms, env, expired_ms)
                for token, (kind, at_ms, env, expired_ms) in state["tokens"].items()
            }
            retired = deque(str(t) for t in state["retired"])
            rng_state = _rng_from_state(state["rng"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"saved devices are damaged: {exc!r}") from None
        self._devices = {device.name: device for device in devices}
        self._tokens, self._retired = tokens, retired
        self._rng.setstate(rng_state)
        self.reports_dropped = int(state.get("reports_dropped", 0))
        self._owners, self._app_owners = {}, {}
        self._activity_count = 0
        self._returns = [
            (d.back_online_at, d.name) for d in devices if d.back_online_at is not None
        ]
        heapq.heapify(self._returns)
        for token, (name, activity_id) in state.get("owners", {}).items():
            device = self._devices.get(name)
            act = (
                None
                if device is None or activity_id is None
                else device.activities.get(activity_id)
            )
            if device is not None and (activity_id is None or act is not None):
                self._owners[token] = (device, act)  # rotated-away tokens still find their activity
        for device in devices:
            self._owners[device.push_to_start_token] = (device, None)
            for kind, app in device.app_tokens.items():
                self._app_owners[app] = (device, kind)
                self._tokens.setdefault(
                    app, TokenInfo(self.bundle_id, kind, None, device.profile.environment)
                )
            for act in device.activities.values():
                self._activity_count += 1
                if act.token:
                    self._owners[act.token] = (device, act)
        self._rebuild_schedule()
        # Apps report their activities' current tokens when they launch (ActivityKit's
        # `pushTokenUpdates` yields the token in force first): a backend that missed a report
        # before the restart gets it now; one that had it sees the same token again.
        for device in devices:
            for act in device.activities.values():
                if act.token and act.is_live:
                    self._report(device, act, act.started_at)

    # -- delivery and time ---------------------------------------------------------------------

    def deliver(
        self,
        token: str,
        payload: Mapping[str, Any],
        *,
        now: float,
        priority: int,
        apns_id: str,
        push_type: str = "liveactivity",
        expiration: int | None = None,
        collapse_id: str | None = None,
    ) -> DeliveryOutcome:
        """Apply an accepted push to the device that owns `token` (the hot path).

        The server has already decided to accept the push; only device-side rules apply here.
        `expiration` and `collapse_id` are the request's headers, for APNs's storage while the
        device is offline.
        """
        self.changes += 1
        device = self._device_of(token)
        if device is None:
            return DeliveryOutcome("", None, ActivityOutcome.IGNORED, Detail.UNKNOWN_TOKEN)
        if not device.online:
            stored = StoredPush(
                token, payload, priority, apns_id, push_type, expiration, collapse_id, now
            )
            return self._store(device, stored)
        return self._deliver_online(
            token, payload, push_type, collapse_id, PushFacts(now, priority, apns_id)
        )

    def _device_of(self, token: str) -> Device | None:
        """The device holding `token` (any kind), or None."""
        owner = self._owners.get(token)
        if owner is not None:
            return owner[0]
        app_owner = self._app_owners.get(token)
        return None if app_owner is None else app_owner[0]

    def _deliver_online(
        self,
        token: str,
        payload: Mapping[str, Any],
        push_type: str,
        collapse_id: str | None,
        push: PushFacts,
    ) -> DeliveryOutcome:
        """Hand a push to the device that holds `token`, which is online."""
        owner = self._owners.get(token)
        if owner is None:
            device, kind = self._app_owners[token]
            return self._to_app(device, kind, payload, push_type, collapse_id, push)
        device, act = owner
        aps = payload.get("aps")
        event = aps.get("event") if isinstance(aps, dict) else None
        if act is None:
            return self._to_push_to_start(device, aps, event, push)
        now = push.now
        self._touch(device, act, now)
        if not isinstance(aps, dict):
            result = act.ignore(Detail.NOT_LIVE_ACTIVITY, {}, push)
        elif event == "update" or event == "end":
            result = act.receive(
                PushEvent(event),
                aps,
                now=now,
                priority=push.priority,
                apns_id=push.apns_id,
                gate=device,
            )
            self._touch(device, act, now)
        else:
            result = act.ignore(Detail.BAD_EVENT, aps, push)
        return DeliveryOutcome(device.name, act.activity_id, result.outcome, result.detail)

    def _store(self, device: Device, push: StoredPush) -> DeliveryOutcome:
        """APNs keeps a push for an offline device (apns.md §1, `apns-expiration`)."""
        facts = PushFacts(push.stored_at, push.priority, push.apns_id)
        if push.expiration == 0:
            device.log.add(push.stored_at, "not-stored", None, Detail.NOT_STORED, facts)
            return DeliveryOutcome(device.name, None, ActivityOutcome.IGNORED, Detail.NOT_STORED)
        device.log.add(push.stored_at, "stored", None, "offline", facts)
        replaced, lost = device.store.keep(push)
        for gone, why in ((replaced, Detail.SUPERSEDED), (lost, Detail.STORE_FULL)):
            if gone is not None:  # say why a push APNs kept will never arrive
                gone_facts = PushFacts(push.stored_at, gone.priority, gone.apns_id)
                device.log.add(push.stored_at, "dropped", None, why, gone_facts)
        return DeliveryOutcome(device.name, None, ActivityOutcome.STORED, "offline")

    # -- what the user and the network do to a device (the control API's actions) -------------

    def set_online(self, name: str, online: bool, *, now: float) -> list[DeliveryOutcome]:
        """Take a device off the network or bring it back; coming back delivers what APNs kept.

        Returns what each kept push did, in delivery order (expired ones are dropped). An outage
        the plan scheduled to end (`take_offline`) is replaced by this command.
        """
        self.changes += 1
        device = self._device(name)
        device.back_online_at = None
        if device.online == online:
            return []
        if not online:
            device.online = False
            device.log.add(now, "offline")
            return []
        self.advance(now)
        return self._come_back(device, now)

    def take_offline(self, name: str, *, now: float, until: float) -> None:
        """An outage from `now` to `until` (the fault plan's `offline`): the device comes back by
        itself when `advance` reaches `until`, and receives then what APNs kept."""
        self.set_online(name, False, now=now)
        device = self._devices[name]
        device.back_online_at = until
        heapq.heappush(self._returns, (until, name))

    def _come_back(self, device: Device, now: float) -> list[DeliveryOutcome]:
        """Put `device` back on the network at `now` and deliver what APNs kept for it."""
        device.online = True
        device.log.add(now, "online")
        results = []
        for push in device.store.drain():
            facts = PushFacts(now, push.priority, push.apns_id)
            why = None
            if push.expires_at() < now:
                why = Detail.EXPIRED
            elif self._device_of(push.token) is not device:
                why = Detail.UNKNOWN_TOKEN  # its activity was pruned meanwhile
            if why is not None:
                device.log.add(now, "dropped", None, why, facts)
                results.append(DeliveryOutcome(device.name, None, ActivityOutcome.IGNORED, why))
                continue
            results.append(
                self._deliver_online(
                    push.token, push.payload, push.push_type, push.collapse_id, facts
                )
            )
        return results

    def allow(self, name: str, activity_id: str, *, now: float) -> str:
        """The user tapped "Allow": the activity gets its update token, reported as usual."""
        device, act = self._activity(name, activity_id, now)
        if not (act.awaiting_allow and act.is_live):
            raise LookupError(f"activity {activity_id!r} on {name!r} is not waiting for Allow")
        self._issue_token(device, act, now)
        return act.token

    def deny(self, name: str, activity_id: str, *, now: float) -> None:
        """The user tapped "Don't Allow": the activity ends and leaves the Lock Screen."""
        device, act = self._activity(name, activity_id, now)
        if not (act.awaiting_allow and act.is_live):
            raise LookupError(f"activity {activity_id!r} on {name!r} is not waiting for Allow")
        act.awaiting_allow = False
        act.dismiss(now, Detail.DENIED)
        self._touch(device, act, now)

    def dismiss(self, name: str, activity_id: str, *, now: float) -> None:
        """The user swiped the activity away: its token answers 410 from `now` (apns.md §3)."""
        device, act = self._activity(name, activity_id, now)
        if act.state is ActivityState.DISMISSED:
            raise LookupError(f"activity {activity_id!r} on {name!r} is already dismissed")
        act.dismiss(now, "user")
        self._touch(device, act, now)

    def rotate(self, name: str, activity_id: str, *, now: float) -> str:
        """ActivityKit hands the activity a new update token (`rotate_token`, by name)."""
        _, act = self._activity(name, activity_id, now)
        if not act.token:
            raise LookupError(f"activity {activity_id!r} on {name!r} has no update token yet")
        return self.rotate_token(act.token, now=now)

    def expire_device_token(self, name: str, token: str, *, now: float) -> None:
        """One of the device's tokens expires now: 410 `ExpiredToken` from then (apns.md §3)."""
        if self._device_of(token) is not self._device(name):
            raise KeyError(f"device {name!r} holds no token {token[:8]}...")
        self.expire_token(token, int(now * 1000))

    def _device(self, name: str) -> Device:
        device = self._devices.get(name)
        if device is None:
            raise KeyError(f"no simulated device named {name!r}")
        return device

    def _activity(self, name: str, activity_id: str, now: float) -> tuple[Device, LiveActivity]:
        """A device's activity, advanced to `now`; KeyError names what is missing."""
        self.changes += 1
        device = self._device(name)
        act = device.activities.get(activity_id)
        if act is None:
            raise KeyError(f"device {name!r} has no activity {activity_id!r}")
        self._touch(device, act, now)
        return device, act

    def advance(self, now: float) -> None:
        """Materialise every time transition due by `now` (cheap when nothing is due).

        Call it periodically and before lookups: it is what makes a dismissed activity's token
        read as unregistered without `lookup` needing the time.
        """
        while True:
            back = self._returns[0][0] if self._returns else math.inf
            if self._due and self._due[0][0] <= min(now, back):
                due, _, device, act = heapq.heappop(self._due)
                if act.scheduled != due:
                    continue  # superseded by a later push, or pruned
                act.scheduled = None
                self._touch(device, act, due)  # one event at a time, in time order
            elif back <= now:
                at, name = heapq.heappop(self._returns)
                returning = self._devices.get(name)
                if returning is not None and returning.back_online_at == at:  # still planned
                    returning.back_online_at = None
                    self.changes += 1
                    self._come_back(returning, at)  # delivered when the outage ended
            else:
                return

    def settle(self, now: float, *, rounds: int = 100_000) -> float:
        """Let time run from `now` until no update is held; returns the instant that took.

        Held updates fall due after the priority-5 delay or when a budget refills, so this ends;
        `rounds` bounds it all the same (ValueError past it).
        """
        for _ in range(rounds):
            self.advance(now)
            due = [
                act.held.due
                for device in self._devices.values()
                for act in device.activities.values()
                if act.held is not None
            ]
            if not due:
                return now
            now = max(now, min(due))
        raise ValueError(f"updates still held after {rounds} rounds")

    # -- inspection -----------------------------------------------------------------------------

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Every device in the order added, as of `now` (shape in the module docstring)."""
        self.advance(now)
        return [device.snapshot(now) for device in self._devices.values()]

    def device_snapshot(self, name: str, now: float) -> dict[str, Any] | None:
        """One device as of `now`, or None when there is no such device."""
        device = self._devices.get(name)
        if device is None:
            return None
        self._advance_device(device, now)
        return device.snapshot(now)

    # -- internals ------------------------------------------------------------------------------

    def _to_push_to_start(
        self, device: Device, aps: Any, event: Any, push: PushFacts
    ) -> DeliveryOutcome:
        """A push to a push-to-start token: only a valid `start` does anything (apns.md §6)."""
        if not isinstance(aps, dict):
            return self._ignore_start(device, Detail.NOT_LIVE_ACTIVITY, {}, push)
        if event != "start":
            return self._ignore_start(device, Detail.BAD_EVENT, aps, push)
        start = parse_start(aps)
        if start is None:
            return self._ignore_start(device, Detail.BAD_START, aps, push)
        if is_future(start.timestamp, push.now):
            return self._ignore_start(device, Detail.FUTURE_TIMESTAMP, aps, push)
        self._advance_device(device, push.now)
        if _is_duplicate(device, start.attributes):
            return self._ignore_start(device, Detail.DUPLICATE_START, aps, push)
        if device.live_count() >= self._max_active:
            return self._ignore_start(device, Detail.LIMIT_REACHED, aps, push)
        if device.profile.budgets and not device.push_to_start_budget.take(push.now):
            return self._ignore_start(device, Detail.PUSH_TO_START_BUDGET, aps, push)
        device.seq += 1
        activity_id = f"{device.name}-{device.seq}"
        act = LiveActivity(
            activity_id=activity_id,
            token="",
            start=start,
            now=push.now,
            log_limit=self._log_limit,
            apns_id=push.apns_id,
            priority=push.priority,
        )
        device.activities[activity_id] = act
        self._activity_count += 1
        device.log.add(push.now, "start", start.timestamp, activity_id, push)
        self._schedule(device, act)
        self._prune(device, push.now)
        prompt = device.profile.allow_prompt
        if prompt is AllowPrompt.DENY:  # the user answers "Don't Allow" at once
            act.dismiss(push.now, Detail.DENIED)
            self._touch(device, act, push.now)
            return DeliveryOutcome(device.name, activity_id, ActivityOutcome.ENDED, Detail.DENIED)
        if prompt is AllowPrompt.MANUAL:  # the token waits for `allow` (apns.md §6, Tokens)
            act.awaiting_allow = True
            return DeliveryOutcome(
                device.name, activity_id, ActivityOutcome.STARTED, "awaiting-allow"
            )
        token = self._issue_token(device, act, push.now)
        return DeliveryOutcome(device.name, activity_id, ActivityOutcome.STARTED, "", token)

    def _issue_token(self, device: Device, act: LiveActivity, now: float) -> str:
        """Give a started activity its update token and queue the app's report of it."""
        token = self._new_token()
        act.token = token
        act.awaiting_allow = False
        self._register(device, token, TokenKind.ACTIVITY)
        self._owners[token] = (device, act)
        self._report(device, act, now)
        return token

    def _to_app(
        self,
        device: Device,
        kind: TokenKind,
        payload: Mapping[str, Any],
        push_type: str,
        collapse_id: str | None,
        push: PushFacts,
    ) -> DeliveryOutcome:
        """A push to the app's own token (alert, background, VoIP or widgets; notifications.py)."""
        result = device.app.receive(kind, push_type, payload, collapse_id, push)
        outcome = ActivityOutcome.APPLIED if result.delivered else ActivityOutcome.IGNORED
        return DeliveryOutcome(device.name, None, outcome, result.detail)

    def _ignore_start(
        self, device: Device, detail: Detail, aps: Mapping[str, Any], push: PushFacts
    ) -> DeliveryOutcome:
        """Record a push to the push-to-start token that started nothing."""
        device.ignored += 1
        device.log.add(push.now, "ignored", aps.get("timestamp"), detail, push)
        return DeliveryOutcome(device.name, None, ActivityOutcome.IGNORED, detail)

    def _report(self, device: Device, act: LiveActivity, now: float) -> None:
        """Queue the report an app sends when ActivityKit hands it an update token."""
        if len(self._reports) == self._reports.maxlen:
            self.reports_dropped += 1
        self._reports.append(
            TokenReport(
                device.name,
                device.push_to_start_token,
                act.activity_id,
                act.token,
                act.attributes_type,
                dict(act.attributes),
                now,
            )
        )

    def _advance_device(self, device: Device, now: float) -> None:
        """Advance every activity of one device that is not dismissed yet."""
        for act in device.activities.values():
            if act.state is not ActivityState.DISMISSED:
                self._touch(device, act, now)

    def _touch(self, device: Device, act: LiveActivity, now: float) -> None:
        """Advance one activity, then sync its token and its place in the due-time queue."""
        act.advance(now, device)
        at_ms = act.unregistered_at_ms
        if at_ms is not None:  # dismissed: its update token is gone (410 from now on)
            info = self._tokens.get(act.token)
            if info is not None and info.unregistered_at_ms is None:
                self._tokens[act.token] = replace(info, unregistered_at_ms=at_ms)
        self._schedule(device, act)

    def _schedule(self, device: Device, act: LiveActivity) -> None:
        """Queue the activity's next due time, unless already queued.

        Superseded entries stay in the heap and are skipped when popped; the heap is rebuilt when
        they outnumber the activities, so it stays bounded.
        """
        due = act.next_due_at()
        if due == act.scheduled:
            return
        act.scheduled = due
        if due is None:
            return
        heapq.heappush(self._due, (due, next(self._due_seq), device, act))
        if len(self._due) > 2 * self._activity_count + 64:
            self._rebuild_schedule()

    def _rebuild_schedule(self) -> None:
        """Drop superseded heap entries: one entry per activity with a pending transition."""
        entries = []
        for device in self._devices.values():
            for act in device.activities.values():
                act.scheduled = act.next_due_at()
                if act.scheduled is not None:
                    entries.append((act.scheduled, next(self._due_seq), device, act))
        heapq.heapify(entries)
        self._due = entries

    def _prune(self, device: Device, now: float) -> None:
        """Keep at most `max_kept` activities per device, dropping dismissed ones oldest first.

        If only ended (not yet dismissed) ones could go, the oldest is dismissed early: it would
        leave the Lock Screen within 4 h anyway, and memory must stay bounded.
        """
        while len(device.activities) > self._max_kept:
            victim = _oldest(device, ActivityState.DISMISSED) or _oldest(
                device, ActivityState.ENDED
            )
            if victim is None:
                return
            if victim.state is ActivityState.ENDED:
                victim.dismiss(now, "pruned")
                self._touch(device, victim, now)
            del device.activities[victim.activity_id]
            self._activity_count -= 1
            victim.scheduled = None
            if victim.token:  # an activity still waiting for Allow has none
                self._owners.pop(victim.token, None)
                self._retire(victim.token)

    def _retire(self, token: str) -> None:
        """Keep a dead token answering 410, for a bounded number of later dead tokens."""
        self._retired.append(token)
        if len(self._retired) > self._retired_limit:
            old = self._retired.popleft()
            self._tokens.pop(old, None)
            self._owners.pop(old, None)

    def _new_token(self) -> str:
        """A fresh lower-case hex token from the seeded rng (drawn again on the rare clash)."""
        while True:
            token = self._rng.randbytes(self._token_bytes).hex()
            if token not in self._tokens:
                return token


def _rng_state(rng: random.Random) -> list[Any]:
    """`random.Random.getstate()` as JSON-ready lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_state(state: Sequence[Any]) -> tuple[Any, ...]:
    """The `setstate` argument a `_rng_state` result describes."""
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)


def _oldest(device: Device, state: ActivityState) -> LiveActivity | None:
    """The first-started activity of a device in `state`, or None."""
    return next((a for a in device.activities.values() if a.state is state), None)


def _is_duplicate(device: Device, attributes: Mapping[str, Any]) -> bool:
    """A second push-to-start for an `activity_id` the device already has.

    A push-to-start whose answer was lost (the connection dropped after APNs processed it) is
    retried by any careful sender, so a device can receive the same start twice. The app keys its
    activities by the `activity_id` attribute and ends such a duplicate at once, as Lockstep's iOS
    app does; the simulated app does the same, and counts it as ignored (`duplicate-start`).
    """
    wanted = attributes.get("activity_id")
    if wanted is None:
        return False
    return any(act.attributes.get("activity_id") == wanted for act in device.activities.values())
