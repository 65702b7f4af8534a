"""The priority-10 budget: how many immediate pushes each device may still spend this hour.

iOS gives every app an hourly budget of priority-10 Live Activity updates; past it, updates are
throttled (held) until the budget comes back, while priority-5 updates never count but are shown
opportunistically, after a delay (apns.md §1, Budget rules). Apple publishes no number, so the
budget is a knob (`DeliveryConfig.hourly_budget`, default 30: the low end of what devices are
reported to allow without the "frequent updates" entitlement).

The tracker spends it where it matters. Per device (a lane's `lane_key`: the service's device id,
else the device token), shared by all the activities on it, a bucket of `hourly` pushes regains
one every `3600 / hourly` seconds, the same continuous refill the simulator models. Apple does not
say whether the budget is per activity or per app on a device; sharing it is the cautious reading:
per activity, five activities on one phone would spend five budgets. `pick` chooses a push's
priority when it is sent:

- an important push (a start, an end, an alert, or a priority the caller gave explicitly) goes at
  its own priority, and a priority-10 one is counted, even past the budget: a start or an alert
  is what the user should see now, and an end is never held by iOS (its final state is shown);
- a routine push (a silent update whose priority the caller left to the engine) goes at 10 while
  more than `reserve` pushes are left, so it is shown at once, and at 5 once the budget runs low,
  so what is left stays for the important ones and nothing is throttled.

Memory is bounded: at most `max_devices` buckets are kept, the least recently used dropped first
(a dropped device starts again with a full bucket); a device that has spent nothing is not kept.
Pure: no clock reads, `now` is monotonic seconds passed in; a time earlier than the bucket's last
one counts as that last one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

__all__ = ["HOUR", "BudgetState", "PriorityBudget"]

HOUR: Final = 3600.0
"""The budget's period (apns.md §1: the budget is hourly)."""


class BudgetState:
    """Where a device's budget stands: pushes left now and whether routine ones are demoted."""

    __slots__ = ("left", "low", "spent")

    def __init__(self, left: int, low: bool, spent: bool) -> None:
        """`left` whole pushes; `low` when routine updates go at 5; `spent` when none is left."""
        self.left = left
        self.low = low
        self.spent = spent


class _Bucket:
    __slots__ = ("at", "level")

    def __init__(self, level: float, at: float) -> None:
        self.level = level
        self.at = at


class PriorityBudget:
    """Per-device priority-10 budgets on the caller's clock (see module docstring)."""

    def __init__(self, hourly: int, reserve: int, *, max_devices: int = 200_000) -> None:
        """`hourly` priority-10 pushes per device per hour; routine pushes go at 10 only while
        more than `reserve` are left; at most `max_devices` devices remembered."""
        if hourly < 1:
            raise ValueError(f"hourly must be at least 1, got {hourly!r}")
        if not 0 <= reserve <= hourly:
            raise ValueError(f"reserve must be within 0..{hourly}, got {reserve!r}")
        if max_devices < 1:
            raise ValueError(f"max_devices must be at least 1, got {max_devices!r}")
        self.hourly = hourly
        self.reserve = reserve
        self._interval = HOUR / hourly
        self._max = max_devices
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

        self._cap = float(hourly)  # what a device's bucket holds at most (`divide`)
        self._reserve = float(reserve)

    def divide(self, parts: int) -> None:
        """Keep `1 / parts` of every device's budget: `parts` engines (the nodes of a cluster)
        push to the same devices, each tracking only its own pushes, and together they must not
        spend more than the device has. The cap, the reserve and the refill rate all scale;
        a level above the new cap is cut to it. `divide(1)` restores the whole budget."""
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts!r}")
        self._cap = self.hourly / parts
        self._reserve = self.reserve / parts
        self._interval = HOUR * parts / self.hourly
        for bucket in self._buckets.values():
            bucket.level = min(bucket.level, self._cap)

    def _level(self, device: str, now: float) -> float:
        """The device's budget at `now`, refilled (a full one is not stored)."""
        bucket = self._buckets.get(device)
        if bucket is None:
            return self._cap
        if now > bucket.at:
            bucket.level = min(self._cap, bucket.level + (now - bucket.at) / self._interval)
            bucket.at = now
        return bucket.level

    def pick(self, device: str, priority: int, *, routine: bool, now: float) -> int:
        """The priority to send a push with now; a priority-10 push spends one from the device."""
        level = self._level(device, now)
        if routine:
            priority = 10 if level - 1.0 >= self._reserve else 5
        if priority == 10:
            self._spend(device, level, now)
        return priority

    def _spend(self, device: str, level: float, now: float) -> None:
        bucket = self._buckets.get(device)
        if bucket is None:
            bucket = self._buckets[device] = _Bucket(level, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(device)
        # Past the budget the level stays at zero: iOS holds the push, it does not borrow.
        bucket.level = max(0.0, level - 1.0)

    def state(self, device: str, now: float) -> BudgetState:
        """The device's budget at `now`, for warnings and status."""
        level = self._level(device, now)
        left = int(level + 1e-9)  # a refill of exactly one push is one whole push
        return BudgetState(left, level - 1.0 < self._reserve, left == 0)

    def __len__(self) -> int:
        """How many devices have spent part of their budget (and are remembered)."""
        return len(self._buckets)
