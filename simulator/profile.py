"""What kind of iPhone a simulated device is: its app's settings, the user's answers, its budgets.

A `DeviceProfile` is fixed when the device is created (`POST /devices` takes one; the CLI's
`--profile` sets the default for every device). Every number Apple does not publish is a knob
here, with the default the README lists as an assumption (apns.md "Could not confirm" 2):

- `update_budget`: priority-10 Live Activity updates per hour (apns.md §1, Budget rules). Apple
  publishes no number; 30 is assumed, and `frequent_updates` (the app's
  `NSSupportsLiveActivitiesFrequentUpdates` key, user setting on) raises it to
  `frequent_update_budget`, 120 by default, so a throttled activity applies about one update
  every 30 s, as the forums saw (apns.md §6, Observed budgets, thread 797554).
- `push_to_start_budget`: push-to-starts per hour, 10 (apns.md §6, thread 799505); the
  frequent-updates key does not raise it.
- `low_priority_delay` / `low_power_delay`: how long a priority-5 update waits before the
  device applies it: 1 s normally, 15 min in Low Power Mode (both assumptions; apns.md §1 says
  only "according to the device's power state").
- `allow_prompt`: the user's answer to the "Allow" prompt after a push-to-start (apns.md §6,
  Tokens): `auto` (taps Allow at once), `manual` (waits for the control API), `deny`.
- `environment`: `sandbox` (a development build) or `production`; the device's tokens are valid
  only on the APNs listener of that environment (apns.md §1, Hosts).
- `budgets`: False turns every device-side budget off (an idealised phone, for benchmarks).
- `background_budget`: background (`content-available`) wakes per hour, 3 (Apple's "Pushing
  background updates to your App" says not to send more than two or three an hour and that the
  system throttles past that; no exact number). Over it, a wake is dropped (notifications.py).
- `widget_reload_budget`: widget reloads by `widgets` push per **day**, 40 (WidgetKit's reload
  budget is commonly cited as 40-70 a day; the low end, so a sender tested here is not surprised).

Budgets refill continuously: a budget of N per hour is a bucket of N that regains one push every
3600/N seconds, from the moment it was last spent, never above N (documented in the README).
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

SANDBOX: Final = "sandbox"
PRODUCTION: Final = "production"
ENVIRONMENTS: Final = (SANDBOX, PRODUCTION)


class AllowPrompt(enum.StrEnum):
    """How the simulated user answers the "Allow" prompt after a remote start."""

    AUTO = "auto"
    MANUAL = "manual"
    DENY = "deny"


class DeviceProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The settings of one simulated iPhone (module docstring for each default's source)."""

    frequent_updates: bool = False
    allow_prompt: AllowPrompt = AllowPrompt.AUTO
    environment: str = SANDBOX
    low_power: bool = False
    budgets: bool = True
    update_budget: int = 30
    frequent_update_budget: int = 120
    push_to_start_budget: int = 10
    low_priority_delay: float = 1.0
    low_power_delay: float = 900.0
    background_budget: int = 3
    widget_reload_budget: int = 40

    def __post_init__(self) -> None:
        """Refuse values no phone could have, naming the field."""
        if self.environment not in ENVIRONMENTS:
            raise ValueError(
                f"environment must be 'sandbox' or 'production', not {self.environment!r}"
            )
        for name in ("update_budget", "frequent_update_budget", "push_to_start_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 per hour, not {getattr(self, name)}")
        if self.background_budget < 1:
            raise ValueError(
                f"background_budget must be at least 1 per hour, not {self.background_budget}"
            )
        if self.widget_reload_budget < 1:
            raise ValueError(
                f"widget_reload_budget must be at least 1 per day, not {self.widget_reload_budget}"
            )
        for name in ("low_priority_delay", "low_power_delay"):
            value = getattr(self, name)
            if not 0 <= value <= 86_400:
                raise ValueError(f"{name} must be between 0 and 86400 seconds, not {value}")

    @property
    def hourly_updates(self) -> int:
        """The priority-10 update budget in force (the frequent-updates key raises it)."""
        return self.frequent_update_budget if self.frequent_updates else self.update_budget

    @property
    def priority5_delay(self) -> float:
        """Seconds a priority-5 update waits before it is applied."""
        return self.low_power_delay if self.low_power else self.low_priority_delay

    def to_json(self) -> dict[str, object]:
        """The JSON shape of the control API (the same fields `POST /devices` accepts)."""
        return {f: getattr(self, f) for f in self.__struct_fields__}


def parse_profile(raw: bytes | dict[str, object]) -> DeviceProfile:
    """A profile from JSON bytes or a decoded object; ValueError says which field is wrong."""
    try:
        if isinstance(raw, bytes):
            return msgspec.json.decode(raw, type=DeviceProfile)
        return msgspec.convert(raw, DeviceProfile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid device profile: {exc}") from None
    except msgspec.DecodeError:
        raise ValueError("device profile is not valid JSON") from None
