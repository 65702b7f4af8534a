"""The inbound webhooks' answers: a delivery's outcome and a webhook's delivery log.

Outcomes: `applied` (the delivery changed streams), `ignored` (authenticated and understood, but
nothing to show, e.g. GitHub's `ping`), `duplicate` (a redelivery of a delivery already applied
or ignored: nothing changed), `rejected` (answered with a 4xx; only in the log).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "APPLIED",
    "DUPLICATE",
    "IGNORED",
    "REJECTED",
    "WebhookDelivery",
    "WebhookDeliveryList",
    "WebhookReply",
]

APPLIED: Final = "applied"
IGNORED: Final = "ignored"
DUPLICATE: Final = "duplicate"
REJECTED: Final = "rejected"

Outcome = Literal["applied", "ignored", "duplicate", "rejected"]
_Timestamp = Annotated[str, Meta(description="ISO-8601 time in UTC, e.g. 2025-01-01T12:00:00.000Z")]


class WebhookReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`POST /api/webhooks/{name}` and a replay: what the delivery did."""

    success: bool
    webhook: str
    delivery_id: Annotated[str, Meta(description="X-GitHub-Delivery, X-Delivery-Id, or made up.")]
    event: Annotated[str, Meta(description="The GitHub event, or `delivery` (generic).")]
    outcome: Outcome
    message: str
    streams: Annotated[list[str], Meta(description="The stream keys it changed.")]
    timestamp: _Timestamp


class WebhookDelivery(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of a webhook's delivery log."""

    delivery_id: str
    event: str
    received_at: _Timestamp
    status: Annotated[int, Meta(description="The HTTP status of its latest answer.")]
    outcome: Outcome
    message: str
    streams: list[str]
    replays: Annotated[int, Meta(description="How often it was replayed.")]


class WebhookDeliveryList(msgspec.Struct, kw_only=True):
    """`GET /api/webhooks/{name}/deliveries`: the newest deliveries first (the log keeps the
    webhook's `keep` newest)."""

    webhook: str
    deliveries: list[WebhookDelivery]
