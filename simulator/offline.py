"""What APNs keeps for a device that is offline, and gives it when it comes back (apns.md §1).

APNs answers 200 to a push for an offline device and stores it: `apns-expiration: 0` means one
attempt and no storage; a nonzero value keeps it until that time (unix seconds); without the header
APNs applies its own policy, modelled as `DEFAULT_KEEP` (30 days, the most APNs says it keeps a
push). Apple says only one push per bundle is stored; the simulator keeps the newest push per
(device token, collapse id), so each Live Activity keeps its own newest state and a collapse id
replaces an earlier push with the same id, as it does on the device. When the device comes back,
the kept pushes are delivered in the order they arrived (a replaced push takes its successor's
place at the end). At most `limit` pushes are kept per device; the oldest goes first, and is
counted.

Pure: no clock reads; times are passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_KEEP: Final = 30 * 86_400.0
"""Seconds a push without `apns-expiration` is kept for an offline device (apns.md §1)."""

STORE_LIMIT: Final = 64
"""Pushes kept per offline device; beyond it the oldest is dropped (`store-full`)."""


@dataclass(frozen=True, slots=True)
class StoredPush:
    """One accepted push waiting for its device, with everything needed to deliver it later."""

    token: str
    payload: Mapping[str, Any]
    priority: int
    apns_id: str
    push_type: str
    expiration: int | None
    collapse_id: str | None
    stored_at: float

    def expires_at(self) -> float:
        """The instant after which the push is no longer delivered."""
        if self.expiration is None:
            return self.stored_at + DEFAULT_KEEP
        return float(self.expiration)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: what waits, since when, until when."""
        return {
            "token": self.token,
            "apns_id": self.apns_id,
            "push_type": self.push_type,
            "priority": self.priority,
            "collapse_id": self.collapse_id,
            "stored_at": self.stored_at,
            "expires_at": self.expires_at(),
        }


class OfflineStore:
    """The pushes APNs keeps for one device while it is offline."""

    __slots__ = ("_pushes", "dropped", "limit", "replaced")

    def __init__(self, limit: int = STORE_LIMIT) -> None:
        """An empty store keeping at most `limit` pushes."""
        self._pushes: OrderedDict[tuple[str, str | None], StoredPush] = OrderedDict()
        self.limit = limit
        self.dropped = 0  # pushed out by the limit
        self.replaced = 0  # replaced by a newer push for the same token and collapse id

    def keep(self, push: StoredPush) -> tuple[StoredPush | None, StoredPush | None]:
        """Store `push`; returns (the push it replaced, the push the limit pushed out)."""
        key = (push.token, push.collapse_id)
        replaced = self._pushes.pop(key, None)
        if replaced is not None:
            self.replaced += 1
        self._pushes[key] = push
        if len(self._pushes) > self.limit:
            self.dropped += 1
            return replaced, self._pushes.popitem(last=False)[1]
        return replaced, None

    def drain(self) -> list[StoredPush]:
        """Every kept push in arrival order; the store is empty afterwards."""
        pushes = list(self._pushes.values())
        self._pushes.clear()
        return pushes

    def __len__(self) -> int:
        """How many pushes wait."""
        return len(self._pushes)

    def snapshot(self) -> list[dict[str, Any]]:
        """The waiting pushes, oldest first."""
        return [push.snapshot() for push in self._pushes.values()]

    def to_state(self) -> dict[str, Any]:
        """What a restart keeps (simulator/state.py)."""
        pushes = [
            [p.token, dict(p.payload), p.priority, p.apns_id, p.push_type, p.expiration,
             p.collapse_id, p.stored_at]
            for p in self._pushes.values()
        ]  # fmt: skip
        return {"pushes": pushes, "dropped": self.dropped, "replaced": self.replaced}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a `to_state` result."""
        self._pushes.clear()
        for fields in state.get("pushes", ()):
            push = StoredPush(*fields)
            self._pushes[(push.token, push.collapse_id)] = push
        self.dropped = int(state.get("dropped", 0))
        self.replaced = int(state.get("replaced", 0))
