"""Scripted Live Activity lanes for engine property tests (in memory and over TLS).

A `Scenario` is a set of `LaneScript`s (one per activity and device: a start, updates with pauses,
maybe an end) and a fault plan; `drive_lane` plays one lane through an engine, waiting for the
device's update token as an app would; `check_lanes` asserts what every device ended on: one
start, no order violation, the last submitted state, ended exactly when the script ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from engine.engine import Engine
from engine.payload import Alert
from simulator.devices import TokenReport
from tests.helpers.simkit import Kit


@dataclass
class LaneScript:
    """What one (activity, device) lane does: start, some updates with pauses, maybe an end."""

    activity: str
    device: str
    steps: list[tuple[float, int]]  # (pause before, state value)
    end: bool
    pause_before_start: float


@dataclass
class Scenario:
    """Lanes, a fault plan (inline flags) and its seed; `submitted` fills in as lanes run."""

    lanes: list[LaneScript]
    plan: str
    seed: int
    submitted: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


async def drive_lane(
    engine: Engine,
    kit: Kit,
    script: LaneScript,
    reports: list[TokenReport],
    submitted: list[dict[str, Any]],
) -> None:
    """Play `script` through `engine`, appending every submitted state to `submitted`."""
    await trio.sleep(script.pause_before_start)
    state: dict[str, Any] = {"v": -1, "a": script.activity}
    submitted.append(state)
    started = await engine.start(
        script.activity,
        kit.push_to_start_token(script.device),
        state,
        attributes_type="T",
        attributes={"activity_id": script.activity},
        alert=Alert(script.activity, "go"),
        lane=script.device,
    )
    token = None
    with trio.move_on_after(3600):
        while token is None:  # the device reports its update token, as an app would
            token = next(
                (
                    r.activity_token
                    for r in reports
                    if r.attributes.get("activity_id") == script.activity
                ),
                None,
            )
            await trio.sleep(0.05)
    assert token is not None, f"no update token for {script.activity}: {started.result_nowait()}"
    for pause, value in script.steps:
        await trio.sleep(pause)
        state = {"v": value, "a": script.activity, "pad": "x" * (value % 50)}
        submitted.append(state)
        await engine.update(script.activity, token, state, lane=script.device)
    if script.end:
        state = {"v": "final", "a": script.activity}
        submitted.append(state)
        await engine.end(script.activity, token, state, lane=script.device)


def settle(kit: Kit) -> float:
    """Let the devices' clocks run until no update is held any more; returns the seconds it took.

    Priority-5 updates wait the device's delay and throttled ones wait for budget (simulator
    profile); the engine's promise is about the last state being shown once they have passed.
    """
    now = kit.now()
    waited = kit.apns.registry.settle(now) - now
    kit.offset += waited
    return waited


def check_lanes(kit: Kit, scenario: Scenario) -> None:
    """Assert each lane's device shows its last submitted state, in order, ended as scripted."""
    settle(kit)
    devices = {d["name"]: d for d in kit.apns.registry.snapshot(kit.now())}
    assert all(p.status != 413 for p in kit.apns.log)
    for script in scenario.lanes:
        submitted = scenario.submitted[(script.activity, script.device)]
        activities = [
            a
            for a in devices[script.device]["activities"]
            if a["attributes"].get("activity_id") == script.activity
        ]
        assert len(activities) == 1, f"{script.activity} started {len(activities)} times"
        activity = activities[0]
        assert activity["order_violations"] == 0
        assert activity["content_state"] == submitted[-1]
        if script.end:
            assert activity["state"] in ("ended", "dismissed")
        else:
            assert activity["state"] in ("active", "stale")
