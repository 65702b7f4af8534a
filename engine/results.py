"""What became of a push: `DeliveryResult`, a value, never an exception.

Every submitted event ends in exactly one result:
- `ACCEPTED`: APNs answered 200 (`apns_id` set).
- `SUPERSEDED`: a newer state of the same activity lane replaced it before it was sent (latest
  wins); nothing is lost, the newer state carries on.
- `REJECTED`: APNs refused it for good (`reason` and its `disposition` from the shared reason table:
  a dead token, or a request to fix).
- `FAILED`: no delivery after every retry (transport failures, 5xx past `max_attempts`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from engine.apns.reasons import Disposition, Reason


class DeliveryStatus(enum.StrEnum):
    """The four ends of a push."""

    ACCEPTED = "accepted"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one submitted event."""

    status: DeliveryStatus
    token: str
    apns_id: str | None = None
    reason: Reason | None = None
    disposition: Disposition | None = None
    http_status: int | None = None
    timestamp_ms: int | None = None  # 410: when APNs saw the token stop being valid
    attempts: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Accepted by APNs, or replaced by a newer state that carries on."""
        return self.status in (DeliveryStatus.ACCEPTED, DeliveryStatus.SUPERSEDED)
