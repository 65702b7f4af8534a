"""Push notifications and the badge end to end in memory: store + engine + fake APNs, MockClock.

The simulated iPhones register their app tokens (`servicekit.register_devices`); what their app
side shows (`notifications`, `badge`) is the proof that a push arrived as iOS would show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.apns.transport import ConnectError
from engine.server.contract import errors, models, push
from engine.server.store.base import DISK_FULL, StoreError
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import Kit, make_kit

DEVICES = ("iphone-1", "iphone-2")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def push_req(**body: Any) -> push.PushRequest:
    return models.decode(push.PushRequest, msgspec.json.encode(body))


def replace_req(**body: Any) -> push.PushReplaceRequest:
    return models.decode(push.PushReplaceRequest, msgspec.json.encode(body))


def badge_req(**body: Any) -> push.BadgeRequest:
    return models.decode(push.BadgeRequest, msgspec.json.encode(body))


def shown(h: Harness, name: str) -> list[dict[str, Any]]:
    return list(h.device(name)["notifications"])


async def test_send_then_replace_shows_one_entry_with_the_new_text(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            sent = await h.service.notifications.send(
                push_req(
                    title="Deploy",
                    message="v2 is rolling out",
                    subtitle="prod",
                    sound="default",
                    badge=4,
                    interruption_level="time-sensitive",
                    redirection="https://example.com/deploys/2",
                    actions=[{"title": "Open", "type": "open_url", "url": "https://e.com"}],
                    payload={"deploy": 2},
                    metadata={"build": 17},
                    tags=["deploy"],
                )
            )
            assert sent.success and sent.notification_id and sent.notification_id.startswith("pn_")
            assert sent.devices_targeted == 2 and sent.devices_notified == 2
            assert sent.devices_queued == 0 and sent.tags == ["deploy"]
            for name in DEVICES:
                (entry,) = shown(h, name)
                assert (entry["title"], entry["subtitle"], entry["body"]) == (
                    "Deploy",
                    "prod",
                    "v2 is rolling out",
                )
                assert entry["collapse_id"] == sent.notification_id
                assert entry["interruption_level"] == "time-sensitive"
                assert entry["sound"] == "default" and entry["category"] == "lockstep.actions"
                assert h.device(name)["badge"] == 4
            await trio.sleep(2)  # one push per lane per pacing interval
            replaced = await h.service.notifications.replace(
                sent.notification_id, replace_req(title="Deployed", message="v2 is live")
            )
            assert replaced.success and replaced.notification_id == sent.notification_id
            assert replaced.devices_notified == 2 and replaced.tags == ["deploy"]  # kept
            for name in DEVICES:
                (entry,) = shown(h, name)
                assert (entry["title"], entry["body"], entry["subtitle"]) == (
                    "Deployed",
                    "v2 is live",
                    None,
                )
                assert entry["replaced"] == 1 and entry["sound"] is None
            row = h.service.registry.notifications[sent.notification_id]
            assert row.version == 2 and row.metadata == {"build": 17}


async def test_two_notifications_are_two_entries(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            a = await h.service.notifications.send(push_req(title="one"))
            b = await h.service.notifications.send(push_req(title="two"))
            assert a.notification_id != b.notification_id
            await trio.sleep(2)
            assert [n["title"] for n in shown(h, "iphone-1")] == ["one", "two"]


async def test_a_replace_supersedes_the_pending_original(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            sent = await h.service.notifications.send(push_req(title="v1"))
            assert sent.notification_id is not None
            # Within the pacing interval the replacement waits on the lane; a second one
            # replaces it there, so only the newest text is ever sent after the original.
            await h.service.notifications.replace(sent.notification_id, replace_req(title="v2"))
            await h.service.notifications.replace(sent.notification_id, replace_req(title="v3"))
            await trio.sleep(3)
            (entry,) = shown(h, "iphone-1")
            assert entry["title"] == "v3" and entry["replaced"] == 1


async def test_replace_works_after_a_restart(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=2)
    db = tmp_path / "db"
    with trio.fail_after(600):
        async with open_harness(kit, db) as h:
            sent = await h.service.notifications.send(push_req(title="Backup", message="running"))
            assert sent.notification_id is not None
        await trio.sleep(2)
        async with open_harness(kit, db, register=False) as h:
            out = await h.service.notifications.replace(
                sent.notification_id, replace_req(title="Backup", message="done")
            )
            assert out.devices_targeted == 2
            await trio.sleep(2)
            for name in DEVICES:
                (entry,) = shown(h, name)
                assert entry["body"] == "done"


async def test_unknown_and_unreachable_notifications(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            with pytest.raises(errors.NotFound):
                await h.service.notifications.replace("pn_" + "0" * 32, replace_req(title="x"))
            sent = await h.service.notifications.send(push_req(title="x"))
            assert sent.notification_id is not None
            await h.service.devices.unregister("iphone-1")
            with pytest.raises(errors.ApiError) as info:
                await h.service.notifications.replace(sent.notification_id, replace_req(title="y"))
            assert info.value.status == 409
            with pytest.raises(errors.NoRecipients):
                await h.service.notifications.send(push_req(title="nobody"))


async def test_channels_pick_the_devices_and_a_device_without_app_token_is_skipped(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            token = kit.push_to_start_token("iphone-2")
            await h.service.devices.register(
                "iphone-2",
                models.DeviceRegistration(push_to_start_token=token, channels=["ops"]),
            )
            with pytest.raises(errors.NoRecipients) as info:
                await h.service.notifications.send(push_req(title="ops", channels=["ops"]))
            assert "app token" in info.value.message
            with pytest.raises(errors.NoRecipients):
                await h.service.notifications.send(push_req(title="x", target={"channels": ["x"]}))
            everyone = await h.service.notifications.send(push_req(title="all"))
            assert everyone.devices_targeted == 1
            assert everyone.message is not None and everyone.message.startswith("1 targeted")
            await trio.sleep(2)
            assert [n["title"] for n in shown(h, "iphone-1")] == ["all"]
            assert shown(h, "iphone-2") == []


async def test_badge_sets_and_clears(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            out = await h.service.badge.update(badge_req(badge=7))
            assert out.success and out.badge == 7 and out.devices_updated == 2
            assert out.users_updated == 1 and out.devices_notified == 2
            assert [h.device(n)["badge"] for n in DEVICES] == [7, 7]
            assert all(shown(h, n) == [] for n in DEVICES)  # a badge shows no entry
            await trio.sleep(2)
            await h.service.badge.update(badge_req(badge=0))
            assert [h.device(n)["badge"] for n in DEVICES] == [0, 0]


async def test_badge_errors(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            with pytest.raises(errors.NoRecipients):
                await h.service.badge.update(badge_req(badge=1, channels=["nobody"]))
            app_token = h.device("iphone-1")["tokens"]["device"]
            kit.apns.registry.unregister(app_token, int(kit.now() * 1000))
            failed = await _error_of(h.service.badge.update(badge_req(badge=2)))
            assert failed.status == 502 and failed.body()["code"] == "badge_update_failed"
            assert h.service.registry.devices["iphone-1"].app_token is None  # dropped
            disconnected = await _error_of(h.service.badge.update(badge_req(badge=2)))
            assert disconnected.status == 422
            assert disconnected.body()["error"] == "badge_device_disconnected"
            assert disconnected.body()["devices_targeted"] == 1


async def test_a_dead_app_token_is_deactivated(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            app_token = h.device("iphone-2")["tokens"]["device"]
            kit.apns.registry.unregister(app_token, int(kit.now() * 1000))
            out = await h.service.notifications.send(push_req(title="x"))
            assert out.devices_notified == 1 and out.devices_targeted == 2
            assert out.devices_deactivated == 1 and out.devices_unregistered == 1
            assert out.errors and out.errors[0].startswith("iphone-2: ")
            again = await h.service.notifications.send(push_req(title="y"))
            assert again.devices_targeted == 1


async def test_a_failed_write_changes_nothing_and_sends_nothing(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            sent = await h.service.notifications.send(push_req(title="v1"))
            assert sent.notification_id is not None
            await trio.sleep(2)
            real_write = h.store.write

            async def full(ops: Any) -> None:
                raise StoreError("disk is full", cause=DISK_FULL)

            h.store.write = full  # type: ignore[method-assign]
            with pytest.raises(errors.StorageUnavailable):
                await h.service.notifications.send(push_req(title="lost"))
            with pytest.raises(errors.StorageUnavailable):
                await h.service.notifications.replace(sent.notification_id, replace_req(title="v2"))
            h.store.write = real_write  # type: ignore[method-assign]
            assert list(h.service.registry.notifications) == [sent.notification_id]
            row = h.service.registry.notifications[sent.notification_id]
            assert row.version == 1 and row.content["title"] == "v1"
            await trio.sleep(2)
            assert [n["title"] for n in shown(h, "iphone-1")] == ["v1"]


async def test_too_big_is_413_before_anything_is_stored(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            with pytest.raises(errors.TooLarge) as info:
                await h.service.notifications.send(push_req(title="t", message="x" * 5000))
            assert info.value.extra["size"] > 4096 and info.value.extra["limit"] == 4096
            assert h.service.registry.notifications == {}


def _dead_connector(kit: Kit, nursery: trio.Nursery) -> Any:
    async def connect() -> trio.abc.Stream:
        raise ConnectError("APNs unreachable (test)")

    return connect


async def test_a_notification_never_sent_goes_out_after_a_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    db = tmp_path / "db"
    with trio.fail_after(600):
        async with open_harness(kit, db, connector=_dead_connector, drain_timeout=1.0) as h:
            sent = await h.service.notifications.send(push_req(title="Nightly", message="ok"))
            assert sent.devices_queued == 2 and sent.devices_notified == 0
            assert sent.notification_id is not None
        async with open_harness(kit, db, register=False) as h2:
            assert h2.service.recovered == 2
            await trio.sleep(2)
            for name in DEVICES:
                assert [n["body"] for n in shown(h2, name)] == ["ok"]
            await trio.sleep(1)  # the progress is written behind
        async with open_harness(kit, db, register=False) as h3:
            assert h3.service.recovered == 0  # delivered: nothing to send again
            row = h3.service.registry.notifications[sent.notification_id]
            assert row.settled == dict.fromkeys(DEVICES, 1)


async def test_old_notifications_are_swept(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    db = tmp_path / "db"
    with trio.fail_after(8 * 86400):  # mock time: a week passes
        async with open_harness(kit, db) as h:
            sent = await h.service.notifications.send(push_req(title="old"))
            assert sent.notification_id is not None
            await trio.sleep(2)
            autojump_clock.jump(h.service.config.notification_retention)
            await h.service.sweep()
            assert h.service.registry.notifications == {}
            with pytest.raises(errors.NotFound):
                await h.service.notifications.replace(sent.notification_id, replace_req(title="x"))
        async with open_harness(kit, db, register=False) as h2:
            assert h2.service.registry.notifications == {}


async def test_a_replace_waiting_behind_the_sweep_finds_it_gone(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    db = tmp_path / "db"
    with trio.fail_after(8 * 86400):
        async with open_harness(kit, db) as h:
            sent = await h.service.notifications.send(push_req(title="old"))
            assert sent.notification_id is not None
            await trio.sleep(2)
            autojump_clock.jump(h.service.config.notification_retention)
            gate, real_write = trio.Event(), h.store.write

            async def held(ops: Any) -> None:
                await gate.wait()
                await real_write(ops)

            h.store.write = held  # type: ignore[method-assign]
            outcome: list[Any] = []

            async def replace() -> None:
                outcome.append(await _error_of(h.service.notifications.replace(
                    sent.notification_id or "", replace_req(title="new")
                )))  # fmt: skip

            async with trio.open_nursery() as nursery:
                nursery.start_soon(h.service.sweep)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(replace)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
            h.store.write = real_write  # type: ignore[method-assign]
            assert isinstance(outcome[0], errors.NotFound)
            assert h.service.registry.notifications == {}
        async with open_harness(kit, db, register=False) as h2:
            assert h2.service.registry.notifications == {}  # not written back by the replace


async def _error_of(call: Any) -> errors.ApiError:
    try:
        await call
    except errors.ApiError as exc:
        return exc
    raise AssertionError("no error")
