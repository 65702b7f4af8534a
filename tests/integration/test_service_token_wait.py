"""A start whose update token never comes, as the service reports it (store + engine + fake APNs in
memory, on MockClock): past `[live] token_timeout` the status calls the wait overdue, the server
logs it once, and a start made on a full device reads `refused_limit` (iOS ignored it,
apns.md §6)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.config import ConfigError
from engine.server.contract import models
from engine.server.service.live import LiveConfig
from simulator.profile import AllowPrompt, DeviceProfile
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import EPOCH, make_kit


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def start_req(title: str) -> models.StartRequest:
    body = {"content_state": {"title": title, "type": "value", "value": 1}}
    return models.decode(models.StartRequest, msgspec.json.encode(body))


def manual_kit(max_active: int = 5) -> Any:
    """One phone whose user never answers the Allow prompt: no update token ever comes."""
    kit = make_kit(devices=0, max_active_activities=max_active)
    profile = DeviceProfile(allow_prompt=AllowPrompt.MANUAL)
    kit.apns.registry.add_device("iphone-1", now=EPOCH, profile=profile)
    return kit


def state_of(h: Harness, activity_id: str) -> tuple[str, bool]:
    (device,) = h.service.status.activity(activity_id).devices
    return device.state, device.overdue


async def test_a_token_that_never_comes_is_overdue_and_reported_once(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = LiveConfig(notify_wait=0.5, token_timeout=60.0)
    caplog.set_level(logging.WARNING, logger="lockstep.service")
    with trio.fail_after(3600):
        async with open_harness(manual_kit(), tmp_path / "db", live=config) as h:
            started = await h.service.live.start(start_req("deploy"))
            await trio.sleep(5)
            assert state_of(h, started.activity_id) == ("awaiting_token", False)
            await trio.sleep(120)  # past the timeout, and past the reporter's next round
            assert state_of(h, started.activity_id) == ("awaiting_token", True)
            assert h.service.tokens_overdue == 1
            assert h.service.stats()["update_tokens_overdue"] == 1
            await trio.sleep(600)
            assert h.service.report_overdue() == 0  # once per device and activity
    lines = [r.getMessage() for r in caplog.records if "no update token" in r.getMessage()]
    assert len(lines) == 1 and started.activity_id in lines[0] and "iphone-1" in lines[0]
    assert "Allow" in lines[0]


async def test_a_start_made_on_a_full_device_reads_refused_limit_when_ignored(
    autojump_clock: Any, tmp_path: Path
) -> None:
    # The two older activities have no update token, so their ends cannot reach the phone:
    # it still shows both when the third start arrives, and ignores it.
    config = LiveConfig(notify_wait=0.5, token_timeout=60.0, device_limit=2)
    with trio.fail_after(3600):
        async with open_harness(manual_kit(2), tmp_path / "db", live=config) as h:
            ids = []
            for n in range(3):
                ids.append((await h.service.live.start(start_req(f"job {n}"))).activity_id)
                await trio.sleep(2)
            events = h.device("iphone-1")["events"]
            assert sum(e["detail"] == "limit-reached" for e in events) == 1
            assert state_of(h, ids[2]) == ("awaiting_token", False)
            assert state_of(h, ids[1]) == ("awaiting_token", False)
            await trio.sleep(61)
            assert state_of(h, ids[2]) == ("refused_limit", True)
            assert state_of(h, ids[1]) == ("awaiting_token", True)  # never met a full device
            page = h.service.status.page("refused_limit", 10, None)
            assert [a.activity_id for a in page.activities] == [ids[2]]


@pytest.mark.parametrize("value", [0, -1.0, float("inf")])
def test_a_bad_token_timeout_is_a_config_error_naming_it(value: float) -> None:
    with pytest.raises(ConfigError, match="token_timeout"):
        LiveConfig(token_timeout=value)
