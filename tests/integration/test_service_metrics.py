"""Widget metrics end to end in memory: store, engine, fake APNs and simulated iPhones, MockClock.

A metric value is stored durably (and survives a restart), an older timestamp never overwrites a
newer value, a failed write changes nothing and pushes nothing, and each change reloads every
registered widget with a `widgets` push that the simulated phone accepts (exact body, widget
token, `<bundle>.push-type.widgets` topic): coalesced to at most one pending push per phone, and
never past the phone's daily reload budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import errors, models
from engine.server.contract.metrics import MetricValueRequest
from engine.server.service.widgets import WidgetConfig
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

TIMEOUT = 600_000.0  # MockClock seconds; autojump makes them instant
DEVICES = ("iphone-1", "iphone-2")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def value(v: Any, timestamp: str | None = None) -> MetricValueRequest:
    body: dict[str, Any] = {"value": v}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return models.decode(MetricValueRequest, msgspec.json.encode(body))


def reloads(h: Harness) -> dict[str, int]:
    return {name: int(h.device(name)["widget_reloads"]) for name in DEVICES}


def dropped(h: Harness) -> list[dict[str, Any]]:
    """Widget pushes a phone ignored or dropped (wrong body, over its budget)."""
    return [e for name in DEVICES for e in h.device(name)["app_events"] if "widget" in e["detail"]]


def shown(h: Harness, device: str = "iphone-1") -> dict[str, Any]:
    return {m.key: m.value for m in h.service.metrics.for_device(device).metrics}


async def test_a_value_is_stored_and_reloads_every_widget(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=2), tmp_path / "db") as h:
            answer = await h.service.metrics.set_value("revenue", value(1234.5))
            assert answer.stored and answer.devices_targeted == 2 and answer.value == 1234.5
            await trio.sleep(5)
            assert reloads(h) == {"iphone-1": 1, "iphone-2": 1}
            assert dropped(h) == []
            assert shown(h) == {"revenue": 1234.5}
            await h.service.metrics.set_value("status", value("3 of 5"))
            await h.service.metrics.set_value("count", value(7))
            stored = {m.key: m.value for m in (await h.store.load()).metrics}
            assert stored == {"revenue": 1234.5, "status": "3 of 5", "count": 7}
            assert isinstance(stored["count"], int)  # a number keeps its JSON type
        # A restart reads them back, and reloads every widget once (whether the last change's
        # reloads went out before it is not stored).
        async with open_harness(make_kit(devices=2), tmp_path / "db") as h:
            assert shown(h, "iphone-2") == {"count": 7, "revenue": 1234.5, "status": "3 of 5"}
            await trio.sleep(5)
            assert reloads(h) == {"iphone-1": 1, "iphone-2": 1}


async def test_an_older_timestamp_never_overwrites_a_newer_value(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=2), tmp_path / "db") as h:
            metrics = h.service.metrics
            # The kit's clock is in 2027: these are ten minutes apart, years in the past.
            newer = await metrics.set_value("q", value(5, "2023-11-14T22:20:00Z"))
            assert newer.stored
            await trio.sleep(120)
            before = reloads(h)
            older = await metrics.set_value("q", value(6, "2023-11-14T22:10:00+00:00"))
            assert not older.stored and older.value == 5
            assert older.message is not None and "newer value" in older.message
            same = await metrics.set_value("q", value(5, "2023-11-14T22:20:00"))  # naive = UTC
            assert same.stored and same.devices_targeted == 0  # a retry: nothing new
            await trio.sleep(120)
            assert reloads(h) == before  # neither call reloaded a widget
            assert shown(h) == {"q": 5}
            assert [m.value for m in (await h.store.load()).metrics] == [5]
            tie = await metrics.set_value("q", value(8, "2023-11-14T22:20:00Z"))
            assert tie.stored and shown(h) == {"q": 8}  # an equal timestamp: the later call wins


async def test_a_burst_of_changes_is_coalesced(autojump_clock: Any, tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=2), tmp_path / "db") as h:
            for n in range(20):
                await h.service.metrics.set_value("burst", value(n))
            await trio.sleep(1)
            assert reloads(h) == {"iphone-1": 1, "iphone-2": 1}  # the first change, at once
            assert h.service.widgets.plan.pending == 2  # the other 19: one owed per phone
            await trio.sleep(WidgetConfig().min_interval + 5)
            assert reloads(h) == {"iphone-1": 2, "iphone-2": 2}
            stats = h.service.stats()
            assert stats["widget_changes_coalesced"] == 2 * 18
            assert stats["widget_pushes_accepted"] == 4 and stats["widget_pending"] == 0
            assert shown(h) == {"burst": 19}


async def test_pushes_stay_within_the_phones_daily_budget(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The engine's budget is the phone's (40 a day, the simulator's default): a change every
    10 s for two hours never gets a widget push dropped, and uses the whole budget."""
    config = WidgetConfig(daily_budget=40, min_interval=1)
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=2), tmp_path / "db", widgets=config) as h:
            for n in range(720):
                await h.service.metrics.set_value("tick", value(n))
                await trio.sleep(10)
            counts = reloads(h)
            assert dropped(h) == []
            # 40 at once, then one each 2160 s as the bucket refills: 40 + 7200 // 2160.
            assert counts == {"iphone-1": 43, "iphone-2": 43}
            assert h.service.stats()["widget_budget_waits"] > 0


async def test_a_failed_write_changes_nothing_and_pushes_nothing(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=2), tmp_path / "db") as h:
            await h.service.metrics.set_value("m", value(1))
            await trio.sleep(120)
            before = reloads(h)
            conn = h.store._conn
            assert conn is not None
            conn.execute("PRAGMA query_only = ON")  # read-only: every write fails
            with pytest.raises(errors.StorageUnavailable):
                await h.service.metrics.set_value("m", value(2))
            with pytest.raises(errors.StorageUnavailable):
                await h.service.metrics.set_value("new", value(3))
            await trio.sleep(120)
            assert shown(h) == {"m": 1} and reloads(h) == before
            conn.execute("PRAGMA query_only = OFF")
            again = await h.service.metrics.set_value("m", value(2))
            assert again.stored and shown(h) == {"m": 2}


async def test_only_devices_with_a_widget_token_are_told(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=2), tmp_path / "db") as h:
            token = h.device("iphone-2")["push_to_start_token"]
            info = await h.service.devices.register(
                "iphone-2", models.DeviceRegistration(push_to_start_token=token)
            )
            assert info.widget_token_suffix is None
            assert h.service.devices.list()[0].widget_token_suffix is not None
            answer = await h.service.metrics.set_value("m", value(1))
            assert answer.devices_targeted == 1
            await trio.sleep(5)
            assert reloads(h) == {"iphone-1": 1, "iphone-2": 0}
            await h.service.devices.unregister("iphone-1")
            assert (await h.service.metrics.set_value("m", value(2))).devices_targeted == 0
            with pytest.raises(errors.NotFound):
                h.service.metrics.for_device("iphone-1")
