"""Widget reloads: tell each device's widgets, with an iOS 26 `widgets` push, that metrics changed.

A `widgets` push goes to the app's widget token on the topic `<bundle>.push-type.widgets` with the
one body `{"aps":{"content-changed":true}}` (`engine.apppush`, `wire.TOPIC_SUFFIXES`): it carries
no data, it only makes WidgetKit reload the app's widgets, which then read the current values from
the device API (`GET /api/devices/{device_id}/metrics`). So one push says everything any number
of metric changes could say, and the plan keeps **at most one pending push per device**:

- `want` marks a device as owing a reload; a device that already owes one is left as it is (the
  change is *coalesced*), and one whose push is in flight owes one more after it.
- A device is sent at most one push per `min_interval` seconds and at most `daily_budget` per day:
  a bucket that holds `daily_budget` pushes and regains one every `86400 / daily_budget` seconds
  (WidgetKit's reload budget, commonly cited as 40-70 a day; past it iOS drops reloads). A push
  APNs did not accept spends nothing. A device over its budget keeps its one pending reload until
  the bucket has one again: the newest values are read then, whatever changed meanwhile.
- What APNs answers decides what comes next (apns.md §3): a refused stream, a new connection or a
  refreshed provider token retries at once (a bounded streak, then as a failure); 429, 5xx or no
  answer retries with backoff (1 s doubling to 60 s, at least APNs' `retry-after`), up to
  `max_attempts`; a dead token (410, BadDeviceToken) forgets the device's widget token until the
  app registers another one; a request APNs calls wrong is given up on and logged.

`WidgetPlan` is the pure core (monotonic `now` passed in, no trio); `WidgetPusher` is its trio
shell on the engine's `send_app_push`. Memory: one small record per device with a widget token.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import trio

from engine.apns.pool import PoolClosedError
from engine.apns.reasons import Outcome
from engine.apppush import AppPushResult
from engine.engine import Engine
from engine.server.store.records import DeviceRow

__all__ = ["WIDGETS_BODY", "WidgetConfig", "WidgetPlan", "WidgetPusher", "WidgetSend"]

log = logging.getLogger("lockstep.widgets")

DAY: Final = 86_400.0
WIDGETS_BODY: Final = b'{"aps":{"content-changed":true}}'
"""The one body a `widgets` push carries (iOS 26 WidgetKit push updates)."""
PUSH_TYPE: Final = "widgets"
BACKOFF_CAP: Final = 60.0
MAX_FREE_RETRIES: Final = 5  # immediate retries in a row before one counts as a failure
_FREE: Final = frozenset({Outcome.UNPROCESSED, Outcome.NEW_CONNECTION, Outcome.REFRESH_AUTH})
_BACKOFF: Final = frozenset({Outcome.RETRY, Outcome.TRANSPORT})


@dataclass(frozen=True, slots=True)
class WidgetConfig:
    """The `[widgets]` knobs (see the module docstring)."""

    daily_budget: int = 40  # pushes per device per day (WidgetKit's reload budget)
    min_interval: float = 60.0  # seconds between two pushes to one device
    max_attempts: int = 8  # failures of one reload before it is given up
    max_in_flight: int = 256  # widget pushes waiting for APNs at once, all devices together
    priority: int = 5  # a reload is not urgent: APNs may wait for a good moment (apns.md §1)
    expiration: int = 86_400  # seconds APNs keeps a push for an offline device

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be at least {low}, got {value!r}"
            for name, value, low in (
                ("daily_budget", self.daily_budget, 1),
                ("min_interval", self.min_interval, 0),
                ("max_attempts", self.max_attempts, 1),
                ("max_in_flight", self.max_in_flight, 1),
                ("expiration", self.expiration, 0),
            )
            if not value >= low
        ]
        if self.priority not in (1, 5, 10):
            problems.append(f"priority must be 1, 5 or 10, got {self.priority!r}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class WidgetSend:
    """One push to send now: `token` is the device's widget token."""

    device_id: str
    token: str


class _Device:
    """One device's widget state."""

    __slots__ = (
        "failures",
        "free",
        "in_flight",
        "level",
        "level_at",
        "pending",
        "ready_at",
        "stamp",
        "token",
    )

    def __init__(self, token: str, level: float, now: float) -> None:
        self.token = token
        self.pending = False
        self.in_flight = False
        self.ready_at = now
        self.level = level  # the budget bucket: pushes left, refilled continuously
        self.level_at = now
        self.failures = 0  # failed attempts of the pending reload
        self.free = 0  # immediate retries in a row
        self.stamp = 0  # the live heap entry's stamp; 0 when not queued


class WidgetPlan:
    """Which devices owe a widget reload, and when each may get it (module docstring)."""

    def __init__(self, config: WidgetConfig) -> None:
        self.config = config
        self._interval = DAY / config.daily_budget
        self._devices: dict[str, _Device] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._stamp = 0
        self.in_flight = 0
        self.sent = 0  # pushes APNs accepted
        self.coalesced = 0  # changes that found their device already owing a reload
        self.held = 0  # times a device waited for its budget
        self.failed = 0  # reloads given up on
        self.dropped_tokens = 0  # widget tokens APNs declared dead

    def __len__(self) -> int:
        return len(self._devices)

    @property
    def pending(self) -> int:
        """Devices owing a reload (not counting those in flight)."""
        return sum(1 for d in self._devices.values() if d.pending)

    def want(self, device_id: str, token: str, now: float) -> bool:
        """The device's widgets should reload; False when it already owed a reload."""
        dev = self._devices.get(device_id)
        if dev is None or dev.token != token:
            level = float(self.config.daily_budget) if dev is None else self._level(dev, now)
            fresh = _Device(token, level, now)
            if dev is not None:  # a new token on the same phone: same budget, same pacing
                fresh.ready_at, fresh.in_flight = dev.ready_at, dev.in_flight
            dev = self._devices[device_id] = fresh
        if dev.pending:
            self.coalesced += 1
            return False
        dev.pending = True
        dev.failures = 0
        if not dev.in_flight:
            self._schedule(device_id, dev, now)
        return True

    def retoken(self, device_id: str, token: str, now: float) -> None:
        """The app registered another widget token: a reload the old one was owed goes to it."""
        dev = self._devices.get(device_id)
        if dev is None or dev.token == token:
            return
        if dev.pending:
            dev.pending = False
            self.want(device_id, token, now)  # the new token's record owes the same reload
        else:
            dev.token = token  # an answer for the old token now reads as stale

    def forget(self, device_id: str) -> None:
        """The device is gone, or has no widget token any more: nothing more for it."""
        dev = self._devices.pop(device_id, None)
        if dev is not None and dev.in_flight:
            self.in_flight -= 1

    def next_at(self) -> float | None:
        """Monotonic time of the earliest queued device (maybe past), or None if none is."""
        while self._heap:
            at, stamp, device_id = self._heap[0]
            dev = self._devices.get(device_id)
            if dev is not None and dev.stamp == stamp:
                return at
            heapq.heappop(self._heap)  # stale: forgotten or rescheduled since
        return None

    def take_ready(self, now: float, limit: int) -> list[WidgetSend]:
        """Up to `limit` pushes to send now; a device without budget is put back for later."""
        out: list[WidgetSend] = []
        while len(out) < limit:
            at = self.next_at()
            if at is None or at > now:
                break
            _, _, device_id = heapq.heappop(self._heap)
            dev = self._devices[device_id]
            dev.stamp = 0
            level = self._level(dev, now)
            if level < 1.0 - 1e-9:
                self.held += 1
                dev.ready_at = now + (1.0 - level) * self._interval
                self._schedule(device_id, dev, now)
                continue
            dev.pending = False
            dev.in_flight = True
            self.in_flight += 1
            out.append(WidgetSend(device_id, dev.token))
        return out

    def done(self, send: WidgetSend, result: AppPushResult, now: float) -> None:
        """What APNs said about `send` (module docstring for what follows)."""
        dev = self._devices.get(send.device_id)
        if dev is None:
            return  # forgotten while in flight
        dev.in_flight = False
        self.in_flight -= 1
        stale = dev.token != send.token  # the app registered another token meanwhile
        outcome = result.outcome
        if outcome is Outcome.ACCEPTED:
            self.sent += 1
            dev.level = max(0.0, self._level(dev, now) - 1.0)
            dev.failures = dev.free = 0
            dev.ready_at = now + self.config.min_interval
        elif stale:
            dev.pending = True  # the new token has not had this reload
        elif outcome is Outcome.DROP_TOKEN:
            self.dropped_tokens += 1
            del self._devices[send.device_id]
            return
        elif outcome in _FREE and dev.free < MAX_FREE_RETRIES:
            dev.free += 1
            dev.pending = True
        elif outcome in _FREE or outcome in _BACKOFF:
            dev.free = 0
            dev.failures += 1
            if dev.failures >= self.config.max_attempts:
                self.failed += 1
            else:
                dev.pending = True
                wait = min(BACKOFF_CAP, 2.0 ** min(dev.failures - 1, 16))
                dev.ready_at = now + max(wait, min(result.retry_after or 0.0, BACKOFF_CAP))
        else:  # FIX_REQUEST: sending it again as is cannot help
            self.failed += 1
        if dev.pending:
            self._schedule(send.device_id, dev, now)

    def _level(self, dev: _Device, now: float) -> float:
        if now > dev.level_at:
            gained = (now - dev.level_at) / self._interval
            dev.level = min(float(self.config.daily_budget), dev.level + gained)
            dev.level_at = now
        return dev.level

    def _schedule(self, device_id: str, dev: _Device, now: float) -> None:
        self._stamp += 1
        dev.stamp = self._stamp
        heapq.heappush(self._heap, (max(dev.ready_at, now), self._stamp, device_id))


class WidgetPusher:
    """Runs a `WidgetPlan` against the engine: `notify` on a change, `run` in the background."""

    def __init__(
        self, engine: Engine, config: WidgetConfig, *, wall_clock: Callable[[], float]
    ) -> None:
        self.plan = WidgetPlan(config)
        self._engine = engine
        self._wall = wall_clock
        self._wake = trio.Event()

    def notify(self, devices: Iterable[DeviceRow]) -> int:
        """Every device with a widget token owes a reload; returns how many there are."""
        now = trio.current_time()
        count = 0
        for device in devices:
            if device.widget_token is not None:
                self.plan.want(device.device_id, device.widget_token, now)
                count += 1
        if count:
            self._wake.set()
        return count

    def forget(self, device_id: str) -> None:
        """The device left, or dropped its widget token."""
        self.plan.forget(device_id)

    def retoken(self, device_id: str, token: str) -> None:
        """The device registered another widget token."""
        self.plan.retoken(device_id, token, trio.current_time())
        self._wake.set()

    def stats(self) -> dict[str, float]:
        """Gauges and counters for `/metrics` (`widget_*`)."""
        plan = self.plan
        return {
            "widget_devices": float(len(plan)),
            "widget_pending": float(plan.pending),
            "widget_in_flight": float(plan.in_flight),
            "widget_pushes_accepted": float(plan.sent),
            "widget_changes_coalesced": float(plan.coalesced),
            "widget_budget_waits": float(plan.held),
            "widget_reloads_failed": float(plan.failed),
            "widget_tokens_dropped": float(plan.dropped_tokens),
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send what the plan says, when it says, until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                room = self.plan.config.max_in_flight - self.plan.in_flight
                for send in self.plan.take_ready(trio.current_time(), room):
                    nursery.start_soon(self._send, send)
                # Full: only an answer (which sets the event) makes room; else the next due push.
                full = self.plan.in_flight >= self.plan.config.max_in_flight
                at = None if full else self.plan.next_at()
                with trio.move_on_at(at if at is not None else math.inf):
                    await self._wake.wait()

    async def _send(self, send: WidgetSend) -> None:
        config = self.plan.config
        expiration = int(self._wall()) + config.expiration if config.expiration else 0
        try:
            result = await self._engine.send_app_push(
                send.token,
                WIDGETS_BODY,
                push_type=PUSH_TYPE,
                priority=config.priority,
                expiration=expiration,
            )
        except PoolClosedError:
            return  # shutting down: the pending reload goes with the process
        if not result.accepted:
            log.warning(
                "widgets push to %s: %s %s",
                send.device_id,
                result.outcome.value,
                result.reason or result.detail,
            )
        self.plan.done(send, result, trio.current_time())
        self._wake.set()
