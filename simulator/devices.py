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

Snapshot shape (`snapshot(now)` returns a list of these; `device_snapshot(name, now)` one of them):

    {"name": str, "push_to_start_token": str, "channels": [str],
     "ignored": int,              # pushes to the push-to-start token that started nothing
     "events": [event], "events_dropped": int,     # push-to-start pushes, oldest first
     "activities": [{
        "activity_id": str, "token": str,
        "state": "active" | "stale" | "ended" | "dismissed",
        "attributes_type": str, "attributes": {...}, "content_state": {...},
        "last_timestamp": number, "stale_date": number | null, "dismissal_at": number | null,
        "relevance_score": number | null, "last_alert": {...} | null,
        "applied": int, "ignored": int, "order_violations": int,
        "started_at": number, "ended_at": number | null,
        "events": [event], "events_dropped": int}]}

    event = {"at": number (device time), "event": "start" | "update" | "end" | "ignored" | "stale"
             | "ended-by-system" | "dismissed", "timestamp": number | null (aps.timestamp),
             "detail": str, "apns_id": str | null, "priority": int | null}

Memory is bounded: at most `max_kept` activities per device (the oldest dismissed ones are pruned
first), `log_limit` log entries per activity or device, `report_limit` queued token reports, and
`retired_limit` tokens of pruned activities remembered as unregistered.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import re
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from engine.apns.wire import LIVE_ACTIVITY_TOPIC_SUFFIX
from simulator.activity import (
    EVENT_LOG_LIMIT,
    ActivityOutcome,
    ActivityState,
    Detail,
    EventLog,
    LiveActivity,
    PushEvent,
    PushFacts,
    is_future,
    parse_start,
)
from simulator.profile import DeviceProfile
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


class Device:
    """One simulated iPhone: its push-to-start token, channels and activities (start order)."""

    __slots__ = (
        "activities",
        "app_tokens",
        "channels",
        "ignored",
        "log",
        "name",
        "profile",
        "push_to_start_token",
        "seq",
    )

    def __init__(
        self,
        name: str,
        push_to_start_token: str,
        channels: Sequence[str],
        log_limit: int,
        profile: DeviceProfile | None = None,
    ) -> None:
        """A device with no activities yet."""
        self.name = name
        self.push_to_start_token = push_to_start_token
        self.profile = profile or DeviceProfile()
        self.app_tokens = {kind: app_token(push_to_start_token, kind) for kind in APP_TOKEN_KINDS}
        self.channels = list(channels)
        self.activities: OrderedDict[str, LiveActivity] = OrderedDict()
        self.ignored = 0
        self.log = EventLog(log_limit)
        self.seq = 0

    def live_count(self) -> int:
        """Activities counting against the per-device limit (active or stale)."""
        return sum(1 for act in self.activities.values() if act.is_live)

    def snapshot(self) -> dict[str, Any]:
        """The JSON-ready view documented in the module docstring."""
        return {
            "name": self.name,
            "push_to_start_token": self.push_to_start_token,
            "tokens": {kind.value: token for kind, token in self.app_tokens.items()},
            "profile": self.profile.to_json(),
            "channels": list(self.channels),
            "ignored": self.ignored,
            "events": self.log.entries(),
            "events_dropped": self.log.dropped,
            "activities": [act.snapshot() for act in self.activities.values()],
        }


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
    ) -> None:
        """Create an empty registry; `rng` is the only source of generated tokens."""
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
        self._due: list[tuple[float, int, Device, LiveActivity]] = []  # min-heap of due times
        self._due_seq = itertools.count()  # tie-breaker, so heap entries never compare objects
        self._activity_count = 0
        self.reports_dropped = 0

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
        device = Device(name, token, channels, self._log_limit, profile)
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
        info = self._tokens.get(token)
        if info is None:
            raise KeyError(f"unknown token {token[:8]}...")
        if info.unregistered_at_ms is None:
            self._tokens[token] = replace(info, unregistered_at_ms=at_ms)

    def expire_token(self, token: str, at_ms: int) -> None:
        """Mark a token expired from `at_ms` (unix ms, may be ahead): from then on the validator
        answers 410 `ExpiredToken` with that time (apns.md §3). The earliest instant given wins."""
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
        owner = self._owners.get(token)
        if owner is None:
            app_owner = self._app_owners.get(token)
            if app_owner is not None:
                return self._to_app(app_owner[0], app_owner[1], payload, push_type, collapse_id)
            return DeliveryOutcome("", None, ActivityOutcome.IGNORED, Detail.UNKNOWN_TOKEN)
        device, act = owner
        aps = payload.get("aps")
        event = aps.get("event") if isinstance(aps, dict) else None
        push = PushFacts(now, priority, apns_id)
        if act is None:
            return self._to_push_to_start(device, aps, event, push)
        self._touch(device, act, now)
        if not isinstance(aps, dict):
            result = act.ignore(Detail.NOT_LIVE_ACTIVITY, {}, push)
        elif event == "update" or event == "end":
            result = act.receive(PushEvent(event), aps, now=now, priority=priority, apns_id=apns_id)
            self._touch(device, act, now)
        else:
            result = act.ignore(Detail.BAD_EVENT, aps, push)
        return DeliveryOutcome(device.name, act.activity_id, result.outcome, result.detail)

    def advance(self, now: float) -> None:
        """Materialise every time transition due by `now` (cheap when nothing is due).

        Call it periodically and before lookups: it is what makes a dismissed activity's token
        read as unregistered without `lookup` needing the time.
        """
        while self._due and self._due[0][0] <= now:
            due, _, device, act = heapq.heappop(self._due)
            if act.scheduled != due:
                continue  # superseded by a later push, or pruned
            act.scheduled = None
            self._touch(device, act, now)

    # -- inspection -----------------------------------------------------------------------------

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Every device in the order added, as of `now` (shape in the module docstring)."""
        self.advance(now)
        return [device.snapshot() for device in self._devices.values()]

    def device_snapshot(self, name: str, now: float) -> dict[str, Any] | None:
        """One device as of `now`, or None when there is no such device."""
        device = self._devices.get(name)
        if device is None:
            return None
        self._advance_device(device, now)
        return device.snapshot()

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
        device.seq += 1
        activity_id = f"{device.name}-{device.seq}"
        token = self._new_token()
        act = LiveActivity(
            activity_id=activity_id,
            token=token,
            start=start,
            now=push.now,
            log_limit=self._log_limit,
            apns_id=push.apns_id,
            priority=push.priority,
        )
        device.activities[activity_id] = act
        self._activity_count += 1
        self._register(device, token, TokenKind.ACTIVITY)
        self._owners[token] = (device, act)
        device.log.add(push.now, "start", start.timestamp, activity_id, push)
        self._report(device, act, push.now)
        self._schedule(device, act)
        self._prune(device, push.now)
        return DeliveryOutcome(device.name, activity_id, ActivityOutcome.STARTED, "", token)

    def _to_app(
        self,
        device: Device,
        kind: TokenKind,
        payload: Mapping[str, Any],
        push_type: str,
        collapse_id: str | None,
    ) -> DeliveryOutcome:
        """A push to the app's own token (alert, background, VoIP or widgets)."""
        del kind, payload, push_type, collapse_id
        return DeliveryOutcome(device.name, None, ActivityOutcome.IGNORED, Detail.NOT_LIVE_ACTIVITY)

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
        act.advance(now)
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


APP_TOKEN_KINDS: Final = (TokenKind.DEVICE, TokenKind.VOIP, TokenKind.WIDGETS)
"""The tokens a device's app holds besides its Live Activity ones."""


def app_token(push_to_start_token: str, kind: TokenKind) -> str:
    """The app token of `kind` for the device with this push-to-start token.

    Derived, not drawn from the registry's rng, so adding token kinds leaves every push-to-start
    and activity token a seed produced unchanged; same length as the push-to-start token.
    """
    return hashlib.shake_256(f"{kind.value}:{push_to_start_token}".encode()).hexdigest(
        max(1, len(push_to_start_token) // 2)
    )


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
