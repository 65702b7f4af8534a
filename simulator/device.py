"""One simulated iPhone: its tokens, profile, budgets, activities, the app's side, and the
pushes APNs keeps for it while it is offline.

`DeviceRegistry` (simulator/devices.py) owns the devices and the token directory over them; a
`Device` is the per-phone state it works on, and the `Gate` (simulator/activity.py) its activities
ask before showing an update: its profile's priority-5 delay and hourly priority-10 budget
(apns.md §1, Budget rules). Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from simulator.activity import EventLog, HoldReason, LiveActivity
from simulator.budget import Bucket
from simulator.notifications import AppSide
from simulator.offline import OfflineStore
from simulator.profile import DeviceProfile, parse_profile
from simulator.validation import TokenKind

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


class Device:
    """One simulated iPhone: its tokens, profile, budgets, activities (start order), and store.

    It is the `Gate` its activities ask before showing an update (simulator/activity.py): its
    profile's priority-5 delay and hourly priority-10 budget (apns.md §1, Budget rules).
    """

    __slots__ = (
        "activities",
        "app",
        "app_tokens",
        "back_online_at",
        "channels",
        "ignored",
        "log",
        "name",
        "online",
        "profile",
        "push_to_start_budget",
        "push_to_start_token",
        "seq",
        "store",
        "update_budget",
    )

    def __init__(
        self,
        name: str,
        push_to_start_token: str,
        channels: Sequence[str],
        log_limit: int,
        profile: DeviceProfile | None = None,
    ) -> None:
        """A device with no activities yet, online, with full budgets."""
        self.name = name
        self.push_to_start_token = push_to_start_token
        self.profile = profile = profile or DeviceProfile()
        self.app_tokens = {kind: app_token(push_to_start_token, kind) for kind in APP_TOKEN_KINDS}
        self.channels = list(channels)
        self.activities: OrderedDict[str, LiveActivity] = OrderedDict()
        self.ignored = 0
        self.log = EventLog(log_limit)
        self.seq = 0
        self.online = True
        self.back_online_at: float | None = None  # when a plan outage ends (devices.py)
        self.store = OfflineStore()
        self.update_budget = Bucket(profile.hourly_updates)
        self.push_to_start_budget = Bucket(profile.push_to_start_budget)
        self.app = AppSide(self.profile, log_limit)  # alert, background, VoIP, widget pushes

    def live_count(self) -> int:
        """Activities counting against the per-device limit (active or stale)."""
        return sum(1 for act in self.activities.values() if act.is_live)

    def hold(self, priority: int, now: float) -> tuple[HoldReason, float] | None:
        """The `Gate` check for an update arriving at `now` (None: show it now)."""
        if not self.profile.budgets:
            return None
        if priority == 5:  # opportunistic: never counts against the budget (apns.md §1)
            delay = self.profile.priority5_delay
            return None if delay <= 0 else (HoldReason.LOW_PRIORITY, now + delay)
        if self.update_budget.take(now):
            return None
        return HoldReason.THROTTLED, self.update_budget.next_at(now)

    def release(self, reason: HoldReason, at: float) -> float | None:
        """The `Gate` check for a held update falling due at `at` (None: show it now)."""
        if reason is HoldReason.LOW_PRIORITY or not self.profile.budgets:
            return None
        if self.update_budget.take(at):
            return None
        return self.update_budget.next_at(at)

    def to_state(self) -> dict[str, Any]:
        """Everything a restart keeps (simulator/state.py); JSON-ready."""
        return {
            "name": self.name,
            "push_to_start_token": self.push_to_start_token,
            "profile": self.profile.to_json(),
            "channels": list(self.channels),
            "ignored": self.ignored,
            "seq": self.seq,
            "online": self.online,
            "back_online_at": self.back_online_at,
            "log": self.log.to_state(),
            "store": self.store.to_state(),
            "update_budget": self.update_budget.to_json(),
            "push_to_start_budget": self.push_to_start_budget.to_json(),
            "app": self.app.to_state(),
            "activities": [act.to_state() for act in self.activities.values()],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], log_limit: int) -> Device:
        """The device a `to_state` result describes (KeyError/ValueError if it is damaged)."""
        device = cls(
            state["name"],
            state["push_to_start_token"],
            state["channels"],
            log_limit,
            parse_profile(state["profile"]),
        )
        device.ignored, device.seq = int(state["ignored"]), int(state["seq"])
        device.online = bool(state["online"])
        back = state.get("back_online_at")
        device.back_online_at = None if back is None else float(back)
        device.log.restore(state["log"])
        device.store.restore(state["store"])
        device.update_budget.restore(state["update_budget"])
        device.push_to_start_budget.restore(state["push_to_start_budget"])
        device.app.restore(state["app"])
        for raw in state["activities"]:
            act = LiveActivity.from_state(raw, log_limit)
            device.activities[act.activity_id] = act
        return device

    def spend(self, priority: int, now: float) -> None:
        """The `Gate` charge for a push that is never held: priority 10 spends one if any is
        left (apns.md §1: every priority-10 push counts)."""
        if self.profile.budgets and priority == 10:
            self.update_budget.take(now)

    def budget_snapshot(self, now: float) -> dict[str, Any]:
        """Budgets left at `now` (None when the profile switches budgets off)."""
        if not self.profile.budgets:
            return {"updates_left": None, "push_to_start_left": None}
        return {
            "updates_left": self.update_budget.remaining(now),
            "updates_per_hour": self.profile.hourly_updates,
            "push_to_start_left": self.push_to_start_budget.remaining(now),
            "push_to_start_per_hour": self.profile.push_to_start_budget,
        }

    def snapshot(self, now: float) -> dict[str, Any]:
        """The JSON-ready view documented in the module docstring."""
        return {
            "name": self.name,
            "push_to_start_token": self.push_to_start_token,
            "tokens": {kind.value: token for kind, token in self.app_tokens.items()},
            "profile": self.profile.to_json(),
            "online": self.online,
            "back_online_at": self.back_online_at,
            "budget": self.budget_snapshot(now),
            "stored": self.store.snapshot(),
            "stored_dropped": self.store.dropped,
            "stored_replaced": self.store.replaced,
            "channels": list(self.channels),
            "ignored": self.ignored,
            "events": self.log.entries(),
            "events_dropped": self.log.dropped,
            "activities": [act.snapshot() for act in self.activities.values()],
            **self.app.snapshot(),
        }
