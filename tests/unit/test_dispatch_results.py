"""How the dispatcher words a settled item: the dead-token outcome goes with the dead token, and
an abandoned push, never sent, says nothing of its token."""

from __future__ import annotations

from typing import Any

import pytest

from engine.apns.reasons import Outcome, Reason
from engine.delivery.coalescer import ABANDONED, Coalescer
from engine.delivery.dispatch import Dispatcher, PushHandle, _result_of
from engine.delivery.items import Item, Settled
from engine.metrics import EngineListener
from engine.payload import EventKind, LiveActivityContent, prepare
from engine.results import DeliveryStatus

UPDATE = prepare(LiveActivityContent(EventKind.UPDATE, {"n": 1}))


def settled(status: DeliveryStatus, reason: Reason | None) -> Settled:
    return Settled(Item.build(UPDATE, "ab" * 32, 1), status, reason, "given up")


@pytest.mark.parametrize(
    ("status", "reason", "http", "dead", "outcome"),
    [
        # A 410 or BadDeviceToken for this very token: drop it.
        (DeliveryStatus.REJECTED, Reason.UNREGISTERED, 410, True, Outcome.DROP_TOKEN),
        (DeliveryStatus.REJECTED, Reason.BAD_DEVICE_TOKEN, 400, True, Outcome.DROP_TOKEN),
        # A bare 410 names no reason, yet the token is just as dead (apns.md §3).
        (DeliveryStatus.FAILED, None, 410, True, Outcome.DROP_TOKEN),
        # Taken down with its lane by another token's death: its own token is not dead.
        (DeliveryStatus.REJECTED, Reason.UNREGISTERED, 410, False, None),
        # Nothing to do with tokens: the table's word stands.
        (DeliveryStatus.REJECTED, Reason.BAD_TOPIC, 400, False, Outcome.FIX_REQUEST),
        (DeliveryStatus.FAILED, None, 500, False, None),
    ],
)
def test_the_dead_token_outcome_follows_the_token(
    status: DeliveryStatus,
    reason: Reason | None,
    http: int,
    dead: bool,
    outcome: Outcome | None,
) -> None:
    result = _result_of(settled(status, reason), None, http, None, dead=dead)
    assert result.status is status and result.reason is reason
    assert result.outcome is outcome and result.http_status == http


async def test_an_abandoned_push_says_nothing_of_its_token_even_one_known_dead() -> None:
    coalescer = Coalescer()
    pool: Any = None  # abandoning sends nothing
    dispatcher = Dispatcher(
        coalescer, pool, topic="t", wall_clock=lambda: 1_800_000_000.0, listener=EngineListener()
    )
    handles = [PushHandle(token, 0.0) for token in ("dead", "alive")]
    for n, handle in enumerate(handles):
        item = Item.build(UPDATE, handle.device_token, n, waiter=handle)
        coalescer.offer(("act", handle.device_token), item, now=0.0)
    dispatcher.mark_dead("dead", Reason.UNREGISTERED)
    assert dispatcher.abandon("act") == 2
    for handle in handles:
        result = handle.result_nowait()
        assert result is not None
        assert (result.status, result.outcome, result.detail) == (
            DeliveryStatus.FAILED,
            None,
            ABANDONED,
        )
    assert list(dispatcher.dead_tokens) == ["dead"]
