"""The HTTP front's connection table: which connection to close when every slot is taken.

Sans-IO (no trio, no clock): the server tells the table what each connection is doing and asks
it, when a new client waits and the table is full, for the connection to give up. Each
connection is in one of three phases:

- `IDLE`: waiting for a request to begin (a fresh connection before its first byte, or a
  keep-alive connection between requests);
- `READING`: a request has begun and its head or body is still arriving;
- `BUSY`: the app is working on a request, its answer is being written, or the connection was
  handed to the HTTP/2 handler. Never given up: the work it holds was accepted.

The one given up is the longest-idle `IDLE` connection, else the `READING` connection whose request
began longest ago (under a slow-client attack that is the one nearest its head deadline anyway);
with every connection `BUSY` there is none, and the new client waits for a connection to end.
Both queues are kept in the order connections entered their phase, so the choice is O(1).
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from typing import Any

__all__ = ["Phase", "Slot", "SlotTable"]


class Phase(enum.Enum):
    """What a connection is doing; see the module docstring."""

    IDLE = "idle"
    READING = "reading"
    BUSY = "busy"


class Slot:
    """One connection's entry: its phase, its read deadline, and whether it was given up.

    `scope` is whatever the server uses to interrupt the connection's current read (a trio
    cancel scope); the table never touches it.
    """

    __slots__ = ("deadline", "evicted", "phase", "scope")

    def __init__(self, deadline: float) -> None:
        self.phase = Phase.IDLE
        self.deadline = deadline
        self.evicted = False
        self.scope: Any = None


class SlotTable:
    """At most `capacity` connections; which one to give up when a new client waits."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the connection cap must be at least 1, got {capacity}")
        self.capacity = capacity
        self._slots: set[Slot] = set()
        self._queues: dict[Phase, OrderedDict[Slot, None]] = {
            Phase.IDLE: OrderedDict(),
            Phase.READING: OrderedDict(),
        }

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def full(self) -> bool:
        """True when a new connection needs one given up (or one ending) first."""
        return len(self._slots) >= self.capacity

    def open(self, deadline: float = math.inf) -> Slot:
        """A new connection's slot, `IDLE` until its first byte (may overfill: check `full`)."""
        slot = Slot(deadline)
        self._slots.add(slot)
        self._queues[Phase.IDLE][slot] = None
        return slot

    def close(self, slot: Slot) -> None:
        """The connection ended: its slot is free."""
        self._slots.discard(slot)
        self._unqueue(slot)

    def enter(self, slot: Slot, phase: Phase) -> None:
        """`slot` starts `phase` now (at the back of that phase's queue)."""
        self._unqueue(slot)
        slot.phase = phase
        if phase is not Phase.BUSY and not slot.evicted and slot in self._slots:
            self._queues[phase][slot] = None

    def idle(self) -> list[Slot]:
        """The `IDLE` connections, longest idle first."""
        return list(self._queues[Phase.IDLE])

    def victim(self) -> Slot | None:
        """The connection to give up (marked `evicted`, out of the queues), or None."""
        for phase in (Phase.IDLE, Phase.READING):
            queue = self._queues[phase]
            if queue:
                slot, _ = queue.popitem(last=False)
                slot.evicted = True
                return slot
        return None

    def _unqueue(self, slot: Slot) -> None:
        queue = self._queues.get(slot.phase)
        if queue is not None:
            queue.pop(slot, None)
