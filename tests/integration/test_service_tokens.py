"""Token lifecycle through the real engine and the fake APNs: dead tokens stay dead (whoever said
so: a 410, a BadDeviceToken, or the engine's own refusal), also after a restart on the same
database, and a rotated update token gets the newest state at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import models
from engine.server.service.live import DEAD_TOKEN_ERROR
from simulator.devices import TokenReport
from simulator.faults.plan import FaultPlan
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import Kit, make_kit

DEAD = [f"iphone-1: {DEAD_TOKEN_ERROR}"]


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def start_req(step: int) -> models.StartRequest:
    state = {"title": "Deploy", "type": "segmented_progress", "number_of_steps": 9}
    body = {"content_state": {**state, "current_step": step}}
    return models.decode(models.StartRequest, msgspec.json.encode(body))


def update_req(activity_id: str, step: int) -> models.UpdateRequest:
    state = {"title": "Deploy", "number_of_steps": 9, "current_step": step}
    body = {"activity_id": activity_id, "content_state": state}
    return models.decode(models.UpdateRequest, msgspec.json.encode(body))


def stream_req(cpu: int) -> models.StreamRequest:
    state = {"title": "Health", "type": "metrics", "metrics": [{"label": "CPU", "value": cpu}]}
    return models.decode(models.StreamRequest, msgspec.json.encode({"content_state": state}))


def pushes_to(kit: Kit, token: str) -> list[int]:
    """The statuses APNs answered to every push that reached it for `token`."""
    return [r.status for r in kit.apns.log if r.token == token]


def report_of(h: Harness, device: str) -> TokenReport:
    (report,) = [r for r in h.reports if r.device == device]  # one activity each here
    return report


def step_shown(h: Harness, device: str, activity_id: str) -> int:
    shown = h.shown(device, activity_id)
    assert shown is not None
    return int(shown["content_state"]["current_step"])


async def test_a_dismissed_activity_is_marked_dead_once_and_never_pushed_again(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            act = str((await h.service.live.start(start_req(1))).activity_id)
            await trio.sleep(5)
            dead = report_of(h, "iphone-1")
            before = pushes_to(kit, dead.activity_token)
            assert 410 not in before
            kit.apns.registry.dismiss("iphone-1", dead.activity_id, now=kit.now())
            for step in (2, 3, 4):
                await h.service.live.update(update_req(act, step))
                await trio.sleep(5)
            assert pushes_to(kit, dead.activity_token) == [*before, 410]
            assert h.service.outbox.marked_dead == 1
            assert h.service.stats()["recipients_dead"] == 1
            by_device = {d.device_id: d for d in h.service.status.activity(act).devices}
            gone, fine = by_device["iphone-1"], by_device["iphone-2"]
            assert (gone.state, gone.last_status, gone.last_reason) == ("dead", 410, "Unregistered")
            assert (fine.state, fine.last_status, fine.last_reason) == ("live", 200, None)
            assert gone.last_at is not None and gone.last_at.endswith("Z")
            assert step_shown(h, "iphone-2", act) == 4
        # Restarted on the same database: nothing is re-queued for the dead recipient.
        async with open_harness(kit, tmp_path / "db") as h2:
            assert h2.service.recovered == 0
            # A restart waits out the previous run's timestamps (at most one pacing interval
            # ahead) before its first update, so that update is shown, never equal to the last.
            await trio.sleep(1.0)
            resp = await h2.service.live.update(update_req(act, 5))
            assert resp.devices_queued == 0 and resp.errors == DEAD
            await trio.sleep(5)
            assert pushes_to(kit, dead.activity_token) == [*before, 410]
            assert h2.service.outbox.marked_dead == 0  # it was dead already: not marked again
            assert step_shown(h2, "iphone-2", act) == 5


async def test_a_start_the_engine_refuses_as_dead_marks_the_recipient_dead(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The engine remembers a push-to-start token APNs killed and refuses later starts to it
    without a request; the service marks those recipients dead too instead of holding their
    updates for a token report that never comes, and a restart does not retry them."""
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            pts = kit.push_to_start_token("iphone-1")
            kit.apns.registry.unregister(pts, int(kit.now() * 1000) - 1000)
            first = await h.service.live.start(start_req(1))
            await trio.sleep(5)
            second = await h.service.live.start(start_req(1))  # refused by the engine itself
            assert second.errors and "iphone-1" in second.errors[0]
            await trio.sleep(5)
            assert pushes_to(kit, pts) == [410]  # one request; the second start never left
            assert h.service.outbox.marked_dead == 2
            later = await h.service.live.update(update_req(str(second.activity_id), 2))
            assert later.devices_queued == 0  # nothing held for iphone-1: it is reported
            assert later.errors == DEAD
            await trio.sleep(5)
        async with open_harness(kit, tmp_path / "db") as h2:
            await trio.sleep(5)
            for act in (first.activity_id, second.activity_id):
                resp = await h2.service.live.update(update_req(str(act), 3))
                assert resp.devices_queued == 0 and resp.errors == DEAD
            await trio.sleep(5)
            assert pushes_to(kit, pts) == [410]
            assert h2.service.outbox.marked_dead == 0
            assert step_shown(h2, "iphone-2", str(second.activity_id)) == 3


async def test_a_rotated_update_token_replaces_the_old_one_and_gets_the_newest_state(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            live = h.service.live
            act = str((await live.stream("web", stream_req(1))).activity_id)
            await trio.sleep(5)
            await live.stream("web", stream_req(2))
            await trio.sleep(5)
            old = report_of(h, "iphone-1")
            before = pushes_to(kit, old.activity_token)
            assert before and set(before) == {200}  # the newest state, on the old token
            new = kit.apns.registry.rotate("iphone-1", old.activity_id, now=kit.now())
            kit.apns.forward_token_reports()  # the app reports the new token
            await trio.sleep(5)
            # At once, with no new call: the newest state went to the new token.
            assert pushes_to(kit, new) == [200]
            rec = h.service.registry.activities[act].recipients["iphone-1"]
            assert rec.row.update_token == new and rec.row.sent_version == 2
            await live.stream("web", stream_req(3))
            await trio.sleep(5)
            assert pushes_to(kit, new) == [200, 200]
            assert pushes_to(kit, old.activity_token) == before  # never used again
            shown = h.shown("iphone-1", act)
            assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 3


async def test_a_stream_starts_afresh_for_a_device_that_came_back_with_a_new_token(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A device whose tokens all died is reported on every call; once it registers a new
    push-to-start token the stream's next call starts a fresh activity, which reaches it."""
    kit = make_kit(devices=2)
    forwarded = 0

    async def app_reports(h: Harness) -> None:
        # The reinstalled app is simulated by another phone registering as "iphone-1".
        nonlocal forwarded
        await trio.sleep(5)
        for report in h.reports[forwarded:]:
            if report.device == "iphone-1-new":
                report = dataclasses.replace(report, device="iphone-1")
            await h.forward(report)
        forwarded = len(h.reports)

    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", forward_reports=False) as h:
            live = h.service.live
            first = await live.stream("web", stream_req(1))
            await app_reports(h)
            gone = report_of(h, "iphone-1")
            at_ms = int(kit.now() * 1000) - 1000
            kit.apns.registry.unregister(gone.activity_token, at_ms)  # the app is deleted:
            kit.apns.registry.unregister(kit.push_to_start_token("iphone-1"), at_ms)  # all of it
            await live.stream("web", stream_req(2))
            await app_reports(h)
            held = await live.stream("web", stream_req(3))
            assert held.operation == "updated" and held.errors == DEAD
            assert held.devices_notified == 1 and held.devices_queued == 0
            await app_reports(h)
            phone = kit.apns.registry.add_device("iphone-1-new", now=kit.now())
            await h.service.devices.register(
                "iphone-1",
                models.DeviceRegistration(push_to_start_token=phone.push_to_start_token),
            )
            fresh = await live.stream("web", stream_req(4))
            assert fresh.operation == "rotated" and not fresh.errors
            assert fresh.previous_activity_id == first.activity_id
            await app_reports(h)
            for sim_name in ("iphone-1-new", "iphone-2"):
                shown = h.shown(sim_name, str(fresh.activity_id))
                assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 4
            later = await live.stream("web", stream_req(5))
            assert later.operation == "updated" and not later.errors
            assert later.devices_notified == 2


async def test_a_dismissal_alone_is_reported_and_does_not_restart_the_stream(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("web", stream_req(1))
            await trio.sleep(5)
            kit.apns.registry.dismiss(
                "iphone-1", report_of(h, "iphone-1").activity_id, now=kit.now()
            )
            await live.stream("web", stream_req(2))
            await trio.sleep(5)
            again = await live.stream("web", stream_req(3))
            assert again.operation == "updated" and again.activity_id == first.activity_id
            assert again.errors == DEAD


async def test_a_fault_soak_never_pushes_to_a_dead_token_again_even_after_a_restart(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """APNs turns tokens `Unregistered` at random (seeded): a token that answered 410 is never
    asked again in that process (the engine refuses it, the service marks its recipient dead
    once), and a restart on the same database re-queues nothing for a dead recipient."""
    kit = make_kit(devices=3, plan=FaultPlan.from_flags("seed=7,unregister=0.15"))
    streams = [f"s{n}" for n in range(4)]
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            for cpu in range(8):
                for key in streams:
                    await h.service.live.stream(key, stream_req(cpu))
                await trio.sleep(3)
            await trio.sleep(10)
            killed = {r.token for r in kit.apns.log if r.status == 410}
            dead = h.service.stats()["recipients_dead"]
            assert killed and dead
            assert h.service.outbox.marked_dead == dead  # each recipient marked once
            for token in killed:  # nothing reached APNs for a token after its 410
                statuses = pushes_to(kit, token)
                assert statuses[-1] == 410 and statuses.count(410) == 1
        mark = len(kit.apns.log)
        async with open_harness(kit, tmp_path / "db") as h2:
            await trio.sleep(10)  # recovery runs: nothing for the dead
            again = [r for r in list(kit.apns.log)[mark:] if r.token in killed]
            assert again == []
            assert h2.service.stats()["recipients_dead"] == dead
            assert h2.service.outbox.marked_dead == 0
