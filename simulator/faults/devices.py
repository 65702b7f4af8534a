"""Device events from the seeded plan: rotations, dismissals and outages, as phones do them.

Connection faults (`simulator.faults.plan`) are drawn per connection; these are drawn per accepted
push from one generator seeded with ``f"{seed}:devices"``, in the order APNs accepted the pushes,
so the same traffic under the same plan moves the same phones the same way. Every push draws three
numbers, fired or not, so one event's outcome never shifts another's sequence.

What the fake APNs does with a `DeviceEvent` (simulator/apns.py), after the push is delivered:
`rotate` gives the activity the push reached a new update token (reported like the first, apns.md
§6 Tokens), `dismiss` has the user swipe that activity away (its token answers 410 from then on),
and `offline_for` takes the device off the network for that many seconds (APNs keeps its pushes
meanwhile, simulator/offline.py).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from simulator.faults.plan import FaultPlan


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """What happens to a device after one accepted push (all False/None: nothing)."""

    rotate: bool = False
    dismiss: bool = False
    offline_for: float | None = None  # seconds

    @property
    def any(self) -> bool:
        """True when something happens."""
        return self.rotate or self.dismiss or self.offline_for is not None


NOTHING: Final = DeviceEvent()


class DeviceEvents:
    """The device-event sequence of one plan: call `next()` once per accepted push."""

    __slots__ = ("_plan", "_rng")

    def __init__(self, plan: FaultPlan) -> None:
        """Events drawn from the plan's probabilities with its own seeded generator."""
        self._plan = plan
        self._rng = random.Random(f"{plan.seed}:devices")

    def next(self) -> DeviceEvent:
        """The events after the next accepted push."""
        plan, rng = self._plan, self._rng
        rotate = rng.random() < plan.rotate_probability
        dismiss = rng.random() < plan.dismiss_probability
        offline = rng.random() < plan.offline_probability
        if not (rotate or dismiss or offline):
            return NOTHING
        return DeviceEvent(rotate, dismiss, plan.offline_ms / 1000 if offline else None)
