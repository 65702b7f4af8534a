"""Replaying recorded APNs pushes into fresh simulated iPhones (`lockstep replay --pushes FILE`).

The file is what `lockstep simulator --record-pushes` (`simulator.record`) wrote. Each push is
delivered straight to a new `DeviceRegistry`, the simulated devices behind the fake APNs, with no
network, TLS or token auth in between: APNs had already accepted every recorded push, and what is
being asked is what each device would have shown. The devices are re-created with their recorded
names and push-to-start tokens (from the start pushes). Update tokens differ from run to run: a
start line's `activity_token` (the token the recording simulator issued) is mapped to the token
this registry issues, and later pushes to it follow. Pushes to tokens that cannot be mapped (a
recording begun mid-activity) are counted and skipped.

Device time is the recorded wall time (`at`), so push timestamps, stale and dismissal dates keep
their meaning. With `speed`, the pushes are spaced as recorded divided by `speed` (to watch it
happen); without, they go in at once. `apns_dir` also writes each delivered push as a `.apns`
file (`simulator.apnsfile`).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.apns.wire import LIVE_ACTIVITY_TOPIC_SUFFIX
from simulator.apnsfile import ApnsFileWriter
from simulator.devices import DeliveryOutcome, DeviceRegistry

__all__ = [
    "PushFileError",
    "PushReplay",
    "PushReplayResult",
    "RecordedPush",
    "bundle_of",
    "load_pushes",
    "parse_pushes",
    "replay_pushes",
]

DEFAULT_BUNDLE = "com.example.lockstep"


class PushFileError(ValueError):
    """A line of a pushes file that cannot be replayed."""


@dataclass(frozen=True, slots=True)
class RecordedPush:
    """One line of a pushes file."""

    t: float
    at: float | None
    token: str
    device: str | None
    topic: str
    priority: int
    apns_id: str | None
    payload: dict[str, Any]
    activity_token: str | None = None

    @property
    def event(self) -> str | None:
        """The `aps.event` (start, update, end)."""
        aps = self.payload.get("aps")
        event = aps.get("event") if isinstance(aps, dict) else None
        return event if isinstance(event, str) else None


def _push(raw: Any, where: str) -> RecordedPush:
    if not isinstance(raw, dict):
        raise PushFileError(f"{where}: a line is a JSON object")
    t, token, payload = raw.get("t"), raw.get("token"), raw.get("payload")
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise PushFileError(f"{where}: 't' must be a number")
    if not isinstance(token, str) or not isinstance(payload, dict):
        raise PushFileError(f"{where}: 'token' (string) and 'payload' (object) are required")
    at = raw.get("at")
    priority = raw.get("priority")
    return RecordedPush(
        t=float(t),
        at=float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
        token=token.lower(),
        device=raw["device"] if isinstance(raw.get("device"), str) and raw["device"] else None,
        topic=str(raw.get("topic") or ""),
        priority=priority if isinstance(priority, int) else 10,
        apns_id=raw["apns_id"] if isinstance(raw.get("apns_id"), str) else None,
        payload=payload,
        activity_token=str(raw["activity_token"]).lower()
        if isinstance(raw.get("activity_token"), str)
        else None,
    )


def parse_pushes(lines: Iterable[str], *, name: str = "pushes") -> list[RecordedPush]:
    """Parse a pushes file's lines (blank lines skipped), in time order; raises PushFileError."""
    pushes = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PushFileError(f"{name}:{number}: not JSON ({exc.msg})") from None
        pushes.append(_push(raw, f"{name}:{number}"))
    return sorted(pushes, key=lambda p: p.t)


def load_pushes(path: Path) -> list[RecordedPush]:
    """Read and parse a pushes file."""
    with Path(path).open(encoding="utf-8") as handle:
        return parse_pushes(handle, name=Path(path).name)


@dataclass(slots=True)
class PushReplayResult:
    """What a replay did."""

    delivered: int = 0
    unmapped: int = 0  # pushes to a token this replay cannot map (skipped)
    outcomes: Counter[str] = field(default_factory=Counter)  # started / applied / ended / ...
    files_written: int = 0
    now: float = 0.0  # device time after the last push
    devices: list[dict[str, Any]] = field(default_factory=list)  # GET /devices shape


class PushReplay:
    """Fresh simulated iPhones fed with recorded pushes, one at a time."""

    def __init__(
        self, *, bundle_id: str = DEFAULT_BUNDLE, apns_dir: Path | None = None, max_active: int = 5
    ) -> None:
        """Devices of app `bundle_id`; `apns_dir`: also write `.apns` files there."""
        self.registry = DeviceRegistry(
            bundle_id=bundle_id, rng=random.Random("push-replay"), max_active=max_active
        )
        self.writer = ApnsFileWriter(apns_dir, bundle_id=bundle_id) if apns_dir else None
        self.result = PushReplayResult()
        self._tokens: dict[str, str] = {}  # recorded token -> this registry's token
        self._t0: float | None = None

    def _now(self, push: RecordedPush) -> float:
        if push.at is not None:
            return push.at
        if self._t0 is None:  # a file without wall times: anchor it at the first push
            self._t0 = time.time() - push.t
        return self._t0 + push.t

    def _token_for(self, push: RecordedPush, now: float) -> str | None:
        if push.token in self._tokens:
            return self._tokens[push.token]
        if push.event != "start" or push.device is None:
            return None
        # A start goes to the device's push-to-start token: (re)create that device.
        if push.device not in self.registry.devices:
            self.registry.add_device(push.device, push_to_start_token=push.token, now=now)
        token = self.registry.devices[push.device].push_to_start_token
        self._tokens[push.token] = token
        return token

    def feed(self, push: RecordedPush) -> DeliveryOutcome | None:
        """Deliver one recorded push; None when its token cannot be mapped."""
        now = self._now(push)
        self.result.now = max(self.result.now, now)
        self.registry.advance(now)
        token = self._token_for(push, now)
        if token is None:
            self.result.unmapped += 1
            return None
        outcome = self.registry.deliver(
            token, push.payload, now=now, priority=push.priority, apns_id=push.apns_id or ""
        )
        if outcome.issued_token and push.activity_token:
            self._tokens[push.activity_token] = outcome.issued_token
        self.result.delivered += 1
        self.result.outcomes[outcome.outcome.value] += 1
        if self.writer is not None and outcome.device:
            body = json.dumps(push.payload, separators=(",", ":"), ensure_ascii=False).encode()
            if self.writer.write(outcome.device, body) is not None:
                self.result.files_written += 1
        return outcome

    def finish(self) -> PushReplayResult:
        """The result, with every device's final state (as the control API shows it) once the
        updates the devices held (priority-5 delay, budgets) have been shown."""
        self.result.devices = self.registry.snapshot(self.registry.settle(self.result.now))
        return self.result


def bundle_of(pushes: Iterable[RecordedPush]) -> str:
    """The app's bundle id, from the first push's topic."""
    for push in pushes:
        if push.topic.endswith(LIVE_ACTIVITY_TOPIC_SUFFIX):
            return push.topic.removesuffix(LIVE_ACTIVITY_TOPIC_SUFFIX)
        if push.topic:
            return push.topic
    return DEFAULT_BUNDLE


async def replay_pushes(
    pushes: list[RecordedPush], *, speed: float | None = None, apns_dir: Path | None = None
) -> PushReplayResult:
    """Feed `pushes` to fresh devices (spaced by `speed` when given) and return the result."""
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    replay = PushReplay(bundle_id=bundle_of(pushes), apns_dir=apns_dir)
    start = trio.current_time()
    for push in pushes:
        if speed is not None:
            await trio.sleep_until(start + push.t / speed)
        replay.feed(push)
    return replay.finish()
