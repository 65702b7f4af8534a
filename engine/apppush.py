"""One-off app pushes: a push of another type than a Live Activity, one attempt, one answer.

Live Activity pushes go through lanes (ordering, timestamps, coalescing; `engine.delivery`). The
app's own pushes carry no `aps.timestamp` and have no lane: a `widgets` push, for one, has a fixed
body (`{"aps":{"content-changed":true}}`) and only says "reload". `send_app_push` sends one such
request on the engine's pool and reports what became of it as an `AppPushResult`; whether and
when to try again is the caller's (its `outcome` says what to do, apns.md §3).

The topic is the bundle id with the push type's suffix (`wire.TOPIC_SUFFIXES`, apns.md §1): the
one the token's push type needs, e.g. `<bundle>.push-type.widgets`. A token APNs already declared
dead (410, BadDeviceToken) is refused here without a request, as `Engine.submit` does; a new
DROP_TOKEN answer adds the token to the same dead list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.apns import wire
from engine.apns.connection import Answered, NoAnswer
from engine.apns.pool import ApnsPool
from engine.apns.protocol import PushRequest
from engine.apns.reasons import Outcome, Reason, outcome_for

__all__ = ["AppPushResult", "app_topic", "send_app_push"]


@dataclass(frozen=True, slots=True)
class AppPushResult:
    """What became of one app push: the `Outcome` says what to do next (apns.md §3)."""

    outcome: Outcome
    http_status: int | None = None  # None: no answer from APNs
    reason: Reason | None = None
    retry_after: float | None = None  # seconds, when APNs sent a `retry-after`
    detail: str = ""

    @property
    def accepted(self) -> bool:
        """APNs accepted the push (a 200)."""
        return self.outcome is Outcome.ACCEPTED


def app_topic(bundle_id: str, push_type: str) -> str:
    """The `apns-topic` of a push type: the bundle id plus the type's suffix (apns.md §1)."""
    if push_type not in wire.PUSH_TYPES:
        raise ValueError(f"unknown apns-push-type {push_type!r}")
    return bundle_id + wire.TOPIC_SUFFIXES.get(push_type, "")


async def send_app_push(
    pool: ApnsPool,
    request: PushRequest,
    *,
    dead: Mapping[str, Reason | None],
    mark_dead: Callable[[str, Reason | None], None],
) -> AppPushResult:
    """Send `request` once (waiting for a free stream slot) and classify the answer.

    `dead` holds the tokens APNs killed before (with the reason): nothing is sent to them.
    `mark_dead(token, reason)` is called when this answer kills the token.
    """
    if request.token in dead:
        return AppPushResult(
            Outcome.DROP_TOKEN,
            reason=dead[request.token],
            detail="the device token is dead (APNs said so before)",
        )
    result = await pool.send(request)
    if isinstance(result, Answered):
        answer = result.answer
        outcome = outcome_for(answer.status, answer.reason)
        if outcome is Outcome.DROP_TOKEN:
            mark_dead(request.token, answer.reason)
        return AppPushResult(
            outcome,
            http_status=answer.status,
            reason=answer.reason,
            retry_after=answer.retry_after,
            detail=answer.reason_text or "",
        )
    if isinstance(result, NoAnswer):
        return AppPushResult(Outcome.TRANSPORT, detail=result.reason)
    return AppPushResult(Outcome.UNPROCESSED, detail=result.reason)
