"""Device events from the seeded plan, and APNs's per-token limit, through the fake APNs's brain.

Requests go straight to `FakeApns.handle` (no sockets, inside trio for the kit's clock, which the
tests move by hand).
"""

from __future__ import annotations

from typing import Any

import pytest

from simulator.faults import FaultPlan, FaultPlanError
from simulator.faults.devices import NOTHING, DeviceEvent, DeviceEvents
from simulator.protocol import Request
from tests.helpers.simkit import TOPIC, Kit, make_kit, start_body, update_body


def push(kit: Kit, conn: Any, token: str, body: bytes, jwt: str) -> Any:
    headers = (
        ("authorization", f"bearer {jwt}"),
        ("apns-topic", TOPIC),
        ("apns-push-type", "liveactivity"),
    )
    request = Request(1, "POST", f"/3/device/{token}", headers, body, len(body))
    return kit.apns.handle(conn, request)


def test_device_event_flags_and_their_errors() -> None:
    plan = FaultPlan.from_flags("seed=3,rotate=0.1,dismiss=0.2,offline=0.3:1500")
    assert (plan.rotate_probability, plan.dismiss_probability) == (0.1, 0.2)
    assert (plan.offline_probability, plan.offline_ms) == (0.3, 1500.0)
    assert plan.has_device_events and plan.is_empty  # answers untouched, phones moved
    assert FaultPlan.from_flags("offline=0.5").offline_ms == 30_000.0
    assert FaultPlan.from_dict({"dismiss_probability": 0.5}).has_device_events
    with pytest.raises(FaultPlanError, match="rotate"):
        FaultPlan.from_flags("rotate=1.5")
    with pytest.raises(FaultPlanError, match="offline"):
        FaultPlan.from_flags("offline=0.1:-5")


def test_device_events_are_seeded_and_draw_the_same_on_every_push() -> None:
    plan = FaultPlan.from_flags("seed=11,rotate=0.3,dismiss=0.3,offline=0.3:2000")
    first = [DeviceEvents(plan).next() for _ in range(1)]
    a, b = DeviceEvents(plan), DeviceEvents(plan)
    seq_a, seq_b = [a.next() for _ in range(200)], [b.next() for _ in range(200)]
    assert seq_a == seq_b and seq_a[:1] == first
    assert {e.rotate for e in seq_a} == {True, False}
    assert {e.offline_for for e in seq_a} == {None, 2.0}
    # Changing one probability leaves the other events' draws where they were.
    only_rotate = DeviceEvents(FaultPlan.from_flags("seed=11,rotate=0.3"))
    assert [only_rotate.next().rotate for _ in range(200)] == [e.rotate for e in seq_a]
    assert DeviceEvents(FaultPlan()).next() is NOTHING and not NOTHING.any
    assert DeviceEvent(dismiss=True).any


async def test_an_outage_from_the_plan_keeps_pushes_and_ends_by_itself() -> None:
    kit = make_kit(plan=FaultPlan.from_flags("seed=1,offline=1:5000"))
    conn, jwt = kit.apns.open_connection(), kit.jwt()
    answer = push(kit, conn, kit.push_to_start_token(), start_body(ts=int(kit.now())), jwt)
    assert answer.status == 200
    device = kit.device()
    assert not device["online"] and kit.apns.counters.faults == {"offline": 1}
    token = device["activities"][0]["token"]
    assert push(kit, conn, token, update_body({"v": 1}, int(kit.now()) + 1), jwt).status == 200
    assert len(kit.device()["stored"]) == 1
    came_back = kit.now() + 5.0  # the outage began with the first push, just now
    kit.offset += 5.1
    kit.apns.tick(kit.now())
    back = kit.device()
    assert back["online"] and back["stored"] == []
    [online] = [e for e in back["events"] if e["event"] == "online"]
    assert online["at"] == pytest.approx(came_back)  # delivered when the outage ended, not later
    assert back["activities"][0]["content_state"] == {"v": 1}


async def test_a_command_replaces_a_planned_outage() -> None:
    kit = make_kit(plan=FaultPlan.from_flags("seed=1,offline=1:5000"))
    conn, jwt = kit.apns.open_connection(), kit.jwt()
    push(kit, conn, kit.push_to_start_token(), start_body(ts=int(kit.now())), jwt)
    kit.apns.registry.set_online("iphone-1", True, now=kit.now())  # the user is back at once
    kit.apns.registry.set_online("iphone-1", False, now=kit.now())  # and off again, for good
    kit.offset += 60
    kit.apns.tick(kit.now())
    assert not kit.device()["online"]  # the plan's return does not end the later outage


@pytest.mark.parametrize(
    ("flags", "check"),
    [
        ("rotate=1", lambda act, reports: len(reports) == 2 and act["token"] != reports[0]),
        ("dismiss=1", lambda act, reports: act["state"] == "dismissed"),
    ],
)
async def test_rotation_and_dismissal_from_the_plan(flags: str, check: Any) -> None:
    kit = make_kit(plan=FaultPlan.from_flags(f"seed=2,{flags}"))
    reports: list[str] = []
    kit.apns.token_sinks.append(lambda r: reports.append(r.activity_token))
    conn, jwt = kit.apns.open_connection(), kit.jwt()
    push(kit, conn, kit.push_to_start_token(), start_body(ts=int(kit.now())), jwt)
    token = reports[0]
    push(kit, conn, token, update_body({"v": 1}, int(kit.now()) + 1), jwt)
    act = kit.device()["activities"][0]
    assert check(act, reports), (act, reports)
    late = push(kit, conn, token, update_body({"v": 2}, int(kit.now()) + 2), jwt)
    assert late.status == 410  # rotated away or dismissed: the old token is dead either way


async def test_too_many_pushes_to_one_token_get_429_until_the_window_passes() -> None:
    kit = make_kit(token_rate_limit=5, token_rate_window=10.0)
    conn, jwt = kit.apns.open_connection(), kit.jwt()
    pts = kit.push_to_start_token()
    answers = [push(kit, conn, pts, b'{"aps":{"event":"nothing"}}', jwt) for _ in range(7)]
    assert [a.status for a in answers] == [200] * 5 + [429] * 2
    assert answers[-1].body == b'{"reason":"TooManyRequests"}'
    other = kit.push_to_start_token("iphone-2")
    assert push(kit, conn, other, b'{"aps":{"event":"nothing"}}', jwt).status == 200
    kit.offset += 2.0  # one push back every 2 s
    assert push(kit, conn, pts, b'{"aps":{"event":"nothing"}}', jwt).status == 200
    assert push(kit, conn, pts, b'{"aps":{"event":"nothing"}}', jwt).status == 429
    assert kit.apns.counters.rejected == {"TooManyRequests": 3}
