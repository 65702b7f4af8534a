"""Streams as the benchmarks use them: keys, one target device each, states with a marker.

Every benchmark stream targets one simulated iPhone through that device's own channel
(`ch<i>`), `per_device` streams per device, so a stream update is exactly one push and the
device's limit on live activities (`max_active`) is never what a figure measures. Every state
carries the stream key as `title` and a unique marker as `subtitle`: the simulator's push
listener reads both, which is how a push on the wire is matched to the call that caused it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bench.harness.loadgen import Call, Generator
from bench.harness.stack import Stack, channel_of, device_name

SETUP_BATCH = 400
"""Starts per batch while setting streams up: below the simulator's token-report queue (1000)."""


def stream_keys(n: int, prefix: str = "s") -> list[str]:
    """`n` distinct stream keys."""
    return [f"{prefix}{i:06d}" for i in range(n)]


def devices_for(streams: int, per_device: int) -> int:
    """How many simulated iPhones `streams` streams need at `per_device` each."""
    return max(1, math.ceil(streams / per_device))


def channel_for(index: int, per_device: int) -> str:
    """The channel of the device that stream number `index` targets."""
    return channel_of(index // per_device + 1)


def device_for(index: int, per_device: int) -> str:
    """The simulated iPhone that stream number `index` targets."""
    return device_name(index // per_device + 1)


def state(key: str, marker: str, value: int) -> dict[str, Any]:
    """A metrics Live Activity state (~150 bytes of content-state) carrying its marker."""
    return {
        "title": key,
        "subtitle": marker,
        "type": "metrics",
        "metrics": [
            {"label": "CPU", "value": value % 100, "unit": "%"},
            {"label": "MEM", "value": 45, "unit": "%"},
        ],
    }


def put_call(
    at: float,
    key: str,
    marker: str,
    value: int,
    *,
    channel: str | None = None,
    want_id: bool = False,
) -> Call:
    """`PUT /live-activity/stream/{key}` due at `at` (a start when `channel` is given)."""
    body: dict[str, Any] = {"content_state": state(key, marker, value)}
    if channel is not None:
        body["channels"] = [channel]
    return (at, "PUT", f"/live-activity/stream/{key}", json.dumps(body).encode(), want_id)


def end_call(at: float, key: str, marker: str, value: int) -> Call:
    """`DELETE /live-activity/stream/{key}` with a final state, due at `at`."""
    body = {"content_state": state(key, marker, value)}
    return (at, "DELETE", f"/live-activity/stream/{key}", json.dumps(body).encode(), True)


def round_robin(
    keys: list[str], rate: float, seconds: float, tag: str
) -> tuple[list[Call], list[str]]:
    """Open-loop updates at `rate` calls/s for `seconds`, cycling through `keys`; and markers."""
    count = max(1, int(rate * seconds))
    calls, markers = [], []
    for i in range(count):
        key = keys[i % len(keys)]
        marker = f"{tag}{i}"
        calls.append(put_call(i / rate, key, marker, i))
        markers.append(marker)
    return calls, markers


def setup_streams(
    stack: Stack,
    gen: Generator,
    keys: list[str],
    per_device: int,
    *,
    connections: int,
    timeout: float,
) -> dict[str, Any]:
    """Start every stream (closed loop, batches) and wait until every device reported its token.

    Returns `activity_ids` (key -> id), `failed` (calls not answered 200) and `held` (recipients
    still waiting for a token when `timeout` ran out).
    """
    ids: dict[str, str] = {}
    failed = 0
    for first in range(0, len(keys), SETUP_BATCH):
        batch = keys[first : first + SETUP_BATCH]
        calls = [
            put_call(0.0, key, "start", 0, channel=channel_for(first + j, per_device), want_id=True)
            for j, key in enumerate(batch)
        ]
        out = gen.run(calls, connections=connections, deadline=timeout)
        for key, result in zip(batch, out["results"], strict=True):
            if result.status == 200 and result.activity_id:
                ids[key] = result.activity_id
            else:
                failed += 1
        stack.wait_tokens(timeout)
    held = stack.wait_tokens(timeout)
    stack.sim.ask("arrivals", timeout=60)  # the starts are not part of any measurement
    return {"activity_ids": ids, "failed": failed, "held": held}
