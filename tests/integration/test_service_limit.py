"""The per-device limit of Live Activities, as the service applies it (store + engine + fake APNs
in memory, on MockClock): a start on a device that already shows five either ends the device's
least recently updated activity (`end_oldest`, the default) or is refused whole (`refuse`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.config import ConfigError
from engine.server.contract import errors, models
from engine.server.service.live import LiveConfig
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def start_req(title: str) -> models.StartRequest:
    body = {"content_state": {"title": title, "type": "value", "value": 1}}
    return models.decode(models.StartRequest, msgspec.json.encode(body))


def stream_req(title: str, type_: str = "value") -> models.StreamRequest:
    state: dict[str, Any] = {"title": title, "type": type_, "value": 1}
    if type_ == "progress":
        state = {"title": title, "type": type_, "percentage": 5}
    return models.decode(models.StreamRequest, msgspec.json.encode({"content_state": state}))


def phone_live(h: Harness, name: str) -> list[str]:
    """The server activity ids the phone shows as active or stale."""
    return [
        a["attributes"]["activity_id"]
        for a in h.device(name)["activities"]
        if a["state"] in ("active", "stale")
    ]


def limit_refusals(h: Harness, name: str) -> int:
    return sum(e["detail"] == "limit-reached" for e in h.device(name)["events"])


async def test_a_start_past_the_limit_ends_the_least_recently_updated_one(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(3600):
        async with open_harness(kit, tmp_path / "db") as h:
            ids = []
            for n in range(5):
                ids.append((await h.service.live.start(start_req(f"job {n}"))).activity_id)
                await trio.sleep(2)
            touch = models.UpdateRequest(
                activity_id=ids[0],
                content_state=models.decode(models.ContentState, b'{"title": "job 0", "value": 2}'),
            )
            await h.service.live.update(touch)  # now ids[1] is the least recently updated
            await trio.sleep(10)
            sixth = await h.service.live.start(start_req("job 5"))
            assert sixth.ended_activity_id == ids[1]
            await trio.sleep(30)
            for name in ("iphone-1", "iphone-2"):
                assert sorted(phone_live(h, name)) == sorted(
                    [*ids[:1], *ids[2:], sixth.activity_id]
                )
                assert limit_refusals(h, name) == 0  # every start was shown
            status = h.service.status.activity(ids[1])
            assert status.ended and {d.state for d in status.devices} == {"dismissed"}  # at once


async def test_refuse_answers_429_and_changes_nothing(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=2)
    config = LiveConfig(notify_wait=0.5, limit_policy="refuse", device_limit=2)
    with trio.fail_after(3600):
        async with open_harness(kit, tmp_path / "db", live=config) as h:
            for n in range(2):
                await h.service.live.start(start_req(f"job {n}"))
            before = set(h.service.live._reg.activities)
            with pytest.raises(errors.ActivityLimit) as caught:
                await h.service.live.start(start_req("one too many"))
            body = caught.value.body()
            assert caught.value.status == 429 and body["error"] == "live_activity_limit"
            assert (body["limit"], body["active"]) == (2, 2)
            assert (body["blocked_devices"], body["targeted_devices"]) == (2, 2)
            assert set(h.service.live._reg.activities) == before


async def test_a_rotating_stream_does_not_count_the_activity_it_replaces(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    config = LiveConfig(notify_wait=0.5, limit_policy="refuse", device_limit=1)
    with trio.fail_after(3600):
        async with open_harness(kit, tmp_path / "db", live=config) as h:
            first = await h.service.live.stream("deploy", stream_req("build"))
            await trio.sleep(5)
            rotated = await h.service.live.stream("deploy", stream_req("build", "progress"))
            assert rotated.operation == "rotated" and rotated.ended_activity_id is None
            assert rotated.previous_activity_id == first.activity_id
            await trio.sleep(30)
            assert phone_live(h, "iphone-1") == [rotated.activity_id]


@pytest.mark.parametrize(
    ("knobs", "message"),
    [({"device_limit": 0}, "device_limit"), ({"limit_policy": "maybe"}, "limit_policy")],
)
def test_a_bad_limit_setting_is_a_config_error_naming_it(
    knobs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LiveConfig(**knobs)
