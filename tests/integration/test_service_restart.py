"""A quick restart keeps the phones' order: the first push after it is newer than the last one
before it, even within the same second (store + engine + fake APNs in memory, on MockClock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import models
from tests.helpers.servicekit import open_harness
from tests.helpers.simkit import make_kit


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def stream_req(value: int) -> models.StreamRequest:
    state = {"title": "Queue", "type": "value", "value": value}
    return models.decode(models.StreamRequest, msgspec.json.encode({"content_state": state}))


async def test_an_update_right_after_a_restart_is_shown(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    db = tmp_path / "db"
    with trio.fail_after(600):
        async with open_harness(kit, db) as h:
            first = await h.service.live.stream("queue", stream_req(1))
            await trio.sleep(3)
            kit.offset -= kit.now() % 1.0  # at the start of a second
            await h.service.live.stream("queue", stream_req(2))
            await trio.sleep(0.1)  # answered; the restart below takes no time at all
        async with open_harness(kit, db, register=False) as h2:
            await h2.service.live.stream("queue", stream_req(3))
            await trio.sleep(5)
            shown = h2.shown("iphone-1", first.activity_id)
            assert shown is not None
            assert shown["content_state"]["value"] == 3
            assert shown["order_violations"] == 0
