"""One-off app pushes (`Engine.send_app_push`) against the fake APNs in memory, on MockClock:
the `widgets` push on its topic reloads a phone's widgets, APNs' refusals come back as outcomes,
and a token APNs killed is refused afterwards without a request."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.apns.reasons import Outcome, Reason
from engine.engine import open_engine
from engine.server.service.widgets import WIDGETS_BODY
from tests.helpers.simkit import engine_config, make_kit, memory_connector


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_app_pushes_and_their_outcomes(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit(devices=1)
    widget_token = kit.device("iphone-1")["tokens"]["widgets"]
    with trio.fail_after(600):
        async with (
            trio.open_nursery() as nursery,
            open_engine(
                engine_config(kit),
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
            ) as engine,
        ):
            ok = await engine.send_app_push(
                widget_token, WIDGETS_BODY, push_type="widgets", priority=5
            )
            assert ok.accepted and ok.http_status == 200
            assert kit.device("iphone-1")["widget_reloads"] == 1
            # A widget token takes only widgets pushes (apns.md §1: type and topic must match).
            wrong = await engine.send_app_push(
                widget_token, b'{"aps":{"alert":"x"}}', push_type="alert"
            )
            assert wrong.outcome is Outcome.FIX_REQUEST and wrong.http_status == 400
            unknown = "ab" * 32
            dead = await engine.send_app_push(unknown, WIDGETS_BODY, push_type="widgets")
            assert dead.outcome is Outcome.DROP_TOKEN and dead.reason is Reason.BAD_DEVICE_TOKEN
            requests = kit.apns.counters.requests
            again = await engine.send_app_push(unknown, WIDGETS_BODY, push_type="widgets")
            assert again.outcome is Outcome.DROP_TOKEN and again.http_status is None
            assert kit.apns.counters.requests == requests  # refused without a request
            assert kit.device("iphone-1")["widget_reloads"] == 1
