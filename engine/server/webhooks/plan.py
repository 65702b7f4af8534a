"""What a webhook delivery asks of the Live Activities service, as plain data.

The mappings (`github`, `generic`) are pure: they turn one delivery into a `Plan`, and the
service shell (`engine.server.service.webhooks`) runs it. A `Put` is a stream PUT; a `Finish`
ends the stream with its final state (and, when the stream never started because its first
events were missed, the shell starts it with that state first, so the outcome still shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from engine.server.contract import errors, models

__all__ = ["Action", "Finish", "Plan", "Put", "UnsupportedEvent", "malformed"]


@dataclass(frozen=True, slots=True)
class Put:
    """`PUT /api/live-activity/stream/{key}` with `request`."""

    key: str
    request: models.StreamRequest


@dataclass(frozen=True, slots=True)
class Finish:
    """End stream `key` showing `request` (a full state, so it can also start the stream)."""

    key: str
    request: models.StreamRequest
    auto_dismiss_minutes: int | None = None  # None: the server's default

    def end_request(self) -> models.StreamDeleteRequest:
        """The stream DELETE that ends it with the final state."""
        state = self.request.content_state
        if self.auto_dismiss_minutes is not None:
            state = _with(state, auto_dismiss_minutes=self.auto_dismiss_minutes)
        return models.StreamDeleteRequest(content_state=state)


Action = Put | Finish
"""One stream call of a plan."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The calls one delivery makes, in order, and a one-line summary for the delivery log.

    A plan without actions (GitHub's `ping`, or an event state that shows nothing) changes
    nothing and is answered 200 with its summary.
    """

    event: str
    summary: str
    actions: tuple[Action, ...] = ()


class UnsupportedEvent(errors.ApiError):
    """400: an event this kind of webhook does not map; the message names the ones it does."""

    status = 400
    code = "unsupported_event"


def malformed(where: str, detail: str) -> errors.BadRequest:
    """400 for a payload that lacks what the mapping needs; `where` is a JSON pointer."""
    return errors.BadRequest(f"payload {where or '(root)'}: {detail}", field=where or "body")


def _with(state: models.ContentState, **changes: Any) -> models.ContentState:
    return msgspec.structs.replace(state, **changes)
