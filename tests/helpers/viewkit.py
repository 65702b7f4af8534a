"""The simulated lock screens the terminal-view tests draw: one content state per type, a real
registry to start them on, and a recording console."""

from __future__ import annotations

import random
from typing import Any

from rich.console import Console

from simulator.devices import ActivityOutcome, DeviceRegistry

__all__ = ["ATTRIBUTES", "STATES", "T0", "deliver", "draw", "simulated", "start_aps"]

T0 = 1_700_000_000.0  # 22:13:20Z
ATTRIBUTES = "LockstepAttributes"

# One content state per contract type, as the engine pushes them (http-api.md, content state).
STATES: dict[str, dict[str, Any]] = {
    "segmented_progress": {
        "title": "Deploy",
        "type": "segmented_progress",
        "number_of_steps": 5,
        "current_step": 3,
        "color": "blue",
        "subtitle": "build 42",
    },
    "progress": {"title": "Backup", "type": "progress", "percentage": 42, "color": "green"},
    "metrics": {
        "title": "web-1",
        "type": "metrics",
        "color": "cyan",
        "metrics": [
            {"label": "CPU", "value": 9, "unit": "%"},
            {"label": "MEM", "value": 45.5, "unit": "%", "color": "red"},
        ],
    },
    "stats": {
        "title": "Sales",
        "type": "stats",
        "metrics": [{"label": "orders", "value": 128}, {"label": "revenue", "value": "$4.2k"}],
    },
    "value": {"title": "Queue depth", "type": "value", "value": "1,024", "color": "orange"},
    "alert": {
        "title": "Disk",
        "type": "alert",
        "message": "disk almost full",
        "color": "red",
        "icon": {"symbol": "externaldrive", "color": "yellow"},
        "badge": {"title": "P1"},
    },
    "timer": {"title": "Pizza", "type": "timer", "duration_seconds": 600, "color": "purple"},
}


def start_aps(state: dict[str, Any], ts: float, activity_id: str) -> dict[str, Any]:
    return {
        "event": "start",
        "timestamp": ts,
        "attributes-type": ATTRIBUTES,
        "attributes": {"activity_id": activity_id},
        "content-state": state,
        "alert": {"title": state["title"], "body": "started"},
    }


def deliver(reg: DeviceRegistry, token: str, aps: dict[str, Any], now: float) -> Any:
    return reg.deliver(token, {"aps": aps}, now=now, priority=10, apns_id="a")


def simulated(types: list[str], *, now: float = T0 + 75) -> dict[str, Any]:
    """`GET /devices` JSON from a real registry: one device per type, started at T0."""
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(3), max_active=8)
    for i, type_ in enumerate(types):
        device = reg.add_device(f"phone-{i}", now=T0)
        result = deliver(reg, device.push_to_start_token, start_aps(STATES[type_], T0, f"a{i}"), T0)
        assert result.outcome is ActivityOutcome.STARTED
    return {"devices": reg.snapshot(now)}


def draw(renderable: Any, width: int = 100) -> str:
    console = Console(record=True, width=width, color_system="truecolor", force_terminal=True)
    console.print(renderable)
    return console.export_text()
