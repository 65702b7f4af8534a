"""What became of a push, as the caller sees it: `DeliveryResult`, a value, never an exception.

Every submitted event ends in exactly one result, whose `DeliveryStatus` is one of:
- `ACCEPTED`: APNs answered 200 (`apns_id` set).
- `SUPERSEDED`: a newer state of the same activity lane replaced it before it was sent (latest
  wins); nothing is lost, the newer state carries on.
- `REJECTED`: APNs refused it for good: its `reason` calls for `Outcome.DROP_TOKEN` (a dead
  token) or `Outcome.FIX_REQUEST` (a request to fix) in the shared reason table (apns.md §3).
- `FAILED`: no delivery after every retry (transport failures, 5xx past `max_attempts`), or a
  refusal that named no reason; or abandoned, because another node delivers its activity now
  (`Engine.abandon`: `detail` starts "abandoned: "; a push abandoned before it was sent has no
  `outcome` whatever its token, one abandoned in flight ends with APNs' answer, never retried).

`DeliveryStatus` is the end of the whole push; `engine.apns.reasons.Outcome` is the end of one
attempt. The coalescer settles items with a `DeliveryStatus` too, so both layers share one word.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from engine.apns.reasons import Outcome, Reason


class DeliveryStatus(enum.StrEnum):
    """The four ends of a push (the values are metric labels and never change)."""

    ACCEPTED = "accepted"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The end of one submitted event.

    `outcome` is what the reason table calls for given `reason` (None when APNs gave no reason);
    `http_status` is the status of the answer that ended it, when one did.
    """

    status: DeliveryStatus
    device_token: str
    apns_id: str | None = None
    reason: Reason | None = None
    outcome: Outcome | None = None
    http_status: int | None = None
    timestamp_ms: int | None = None  # 410: when APNs saw the token stop being valid
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Accepted by APNs, or replaced by a newer state that carries on."""
        return self.status in (DeliveryStatus.ACCEPTED, DeliveryStatus.SUPERSEDED)
