"""Widget metrics through the official ActivitySmith Python SDK, unmodified, against a real server.

The server runs in simulate mode: two simulated iPhones register their push-to-start and widget
tokens through the device API. `client.metrics.update(key, value, timestamp=...)` must store the
value, the phones' widgets must get a `widgets` push (the simulator counts a reload only for the
exact `{"aps":{"content-changed":true}}` body on the widget token and topic), the device route
the widget reads must return the current values, and each phone's simulated widget extension,
which reads that route after a reload, must show them. An older timestamp never replaces a newer
value, a burst of changes costs each phone at most two reloads (one now, one coalesced), bad input
reaches the SDK as the `MetricError` it documents, and `lockstep metrics set` works the same.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from activitysmith import ActivitySmith
from activitysmith_openapi.exceptions import BadRequestException, ForbiddenException
from activitysmith_openapi.models.metric_error import MetricError

from engine.cli.main import main as lockstep
from engine.server.service.widgets import WidgetConfig
from tests.helpers.serverkit import (
    API_KEY,
    DEVICE_KEY,
    HTTP_TIMEOUT,
    LiveServer,
    http_json,
    simulate_settings,
    wait_until,
)

pytestmark = pytest.mark.e2e

DEVICES = 2
PUSH_TIMEOUT = 10.0
MIN_INTERVAL = 1.0  # seconds between two widget pushes to one phone (the default is 60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A simulate-mode server whose widget pushes are paced at one per second per phone."""
    settings = simulate_settings(tmp_path_factory.mktemp("lockstep"), devices=DEVICES, seed=4103)
    live = LiveServer.start(replace(settings, widgets=WidgetConfig(min_interval=MIN_INTERVAL)))
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> ActivitySmith:
    """The high-level SDK client pointed at the server (it has no host argument)."""
    sdk = ActivitySmith(api_key=API_KEY)
    sdk.metrics._api.api_client.configuration.host = server.api_base
    return sdk


def reloads(server: LiveServer) -> dict[str, int]:
    """Widget reloads per simulated phone."""
    return {d["name"]: int(d["widget_reloads"]) for d in server.devices()}


def device_values(server: LiveServer, device: str) -> dict[str, Any]:
    """What the phone's widget reads: key -> value, through the device route."""
    status, body = http_json("GET", f"{server.api_base}/devices/{device}/metrics", key=DEVICE_KEY)
    assert status == 200, body
    assert body["device_id"] == device
    return {m["key"]: m["value"] for m in body["metrics"]}


def widget_gauges(server: LiveServer) -> dict[str, float]:
    """The server's `lockstep_widget_*` gauges from `/metrics`."""
    with urllib.request.urlopen(server.origin + "/metrics", timeout=HTTP_TIMEOUT) as resp:
        text = resp.read().decode()
    gauges = {}
    for line in text.splitlines():
        if line.startswith("lockstep_widget_"):
            name, value = line.split()
            gauges[name.removeprefix("lockstep_")] = float(value)
    return gauges


def settle(server: LiveServer) -> dict[str, int]:
    """The reload counts once the server owes no widget push (none pending, none in flight)
    and every push APNs accepted has been counted by its phone."""

    def observe() -> tuple[dict[str, float], dict[str, int]]:
        return widget_gauges(server), reloads(server)

    def idle(seen: tuple[dict[str, float], dict[str, int]]) -> bool:
        gauges, counts = seen
        return (
            gauges["widget_pending"] == 0
            and gauges["widget_in_flight"] == 0
            and sum(counts.values()) == gauges["widget_pushes_accepted"]
        )

    return wait_until(observe, idle, timeout=PUSH_TIMEOUT, what="the widget pushes to settle")[1]


def test_the_phones_register_a_widget_token(server: LiveServer) -> None:
    status, body = http_json("GET", server.api_base + "/devices", key=API_KEY)
    assert status == 200, body
    assert len(body["devices"]) == DEVICES
    tokens = {d["name"]: d["tokens"]["widgets"] for d in server.devices()}
    for device in body["devices"]:
        assert device["widget_token_suffix"] == tokens[device["device_id"]][-8:]


def test_a_value_reaches_the_widgets(server: LiveServer, client: ActivitySmith) -> None:
    before = reloads(server)
    answer = client.metrics.update("revenue.today", 1234.5)
    assert answer.success is True
    after = wait_until(
        lambda: reloads(server),
        lambda now: all(now[d] > before[d] for d in before),
        timeout=PUSH_TIMEOUT,
        what="a widget reload on every phone",
    )
    assert set(after) == set(before)
    for device in server.devices():
        assert device["widget_reloaded_at"] is not None
        dropped = [e for e in device["app_events"] if "widget" in e["detail"]]
        assert dropped == [], dropped  # no push the phone refused or dropped
        assert device_values(server, device["name"])["revenue.today"] == 1234.5
    # Each phone's widget extension read the values after the reload, and shows them.
    shown = wait_until(
        lambda: {d["name"]: d["widget"] for d in server.devices()},
        lambda widgets: all(w["metrics"].get("revenue.today") == 1234.5 for w in widgets.values()),
        timeout=PUSH_TIMEOUT,
        what="the widgets showing the value",
    )
    assert all(w["error"] is None and w["shown_at"] is not None for w in shown.values())


def test_an_older_timestamp_never_overwrites(server: LiveServer, client: ActivitySmith) -> None:
    now = dt.datetime.now(dt.UTC)
    assert client.metrics.update("queue.depth", 7, timestamp=now).success is True
    older = now - dt.timedelta(minutes=5)
    assert client.metrics.update("queue.depth", 99, timestamp=older).success is True
    status, body = http_json(
        "POST", server.api_base + "/metrics/queue.depth/value", {"value": 98, "timestamp":
        older.isoformat()}, key=API_KEY,
    )  # fmt: skip
    assert status == 200 and body["stored"] is False and body["value"] == 7, body
    for device in server.devices():
        assert device_values(server, device["name"])["queue.depth"] == 7
    newer = now + dt.timedelta(seconds=1)
    assert client.metrics.update("queue.depth", 8, timestamp=newer).success is True
    for device in server.devices():
        assert device_values(server, device["name"])["queue.depth"] == 8


def test_strings_keep_their_formatting(server: LiveServer, client: ActivitySmith) -> None:
    assert client.metrics.update("build.status", "3 of 5 ✓").success is True
    device = server.devices()[0]["name"]
    assert device_values(server, device)["build.status"] == "3 of 5 ✓"


def test_a_burst_costs_each_phone_at_most_two_reloads(
    server: LiveServer, client: ActivitySmith
) -> None:
    before = settle(server)
    for value in range(10):
        assert client.metrics.update("burst", value).success is True
    after = settle(server)
    for device, count in before.items():
        assert 1 <= after[device] - count <= 2, (before, after)
        assert device_values(server, device)["burst"] == 9
    wait_until(
        lambda: [d["widget"]["metrics"].get("burst") for d in server.devices()],
        lambda shown: shown == [9] * DEVICES,
        timeout=PUSH_TIMEOUT,
        what="the widgets showing the last value of the burst",
    )


def test_bad_input_is_a_metric_error(server: LiveServer, client: ActivitySmith) -> None:
    with pytest.raises(BadRequestException) as bad_key:
        client.metrics.update("Revenue Today", 1)
    assert isinstance(bad_key.value.data, MetricError)
    assert "key" in (bad_key.value.data.message or "")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with pytest.raises(BadRequestException) as ahead:
        client.metrics.update("revenue.today", 1, timestamp=future)
    assert isinstance(ahead.value.data, MetricError)
    assert "timestamp" in (ahead.value.data.message or "")
    status, body = http_json(
        "POST", server.api_base + "/metrics/revenue.today/value", {"value": None}, key=API_KEY
    )
    assert status == 400 and body["error"] == "bad_request", body


def test_keys_are_kept_apart(server: LiveServer, client: ActivitySmith) -> None:
    status, body = http_json(
        "POST", server.api_base + "/metrics/x/value", {"value": 1}, key=DEVICE_KEY
    )
    assert status == 403, body
    status, body = http_json("GET", server.api_base + "/devices/nobody/metrics", key=DEVICE_KEY)
    assert status == 404, body
    device = server.devices()[0]["name"]
    status, body = http_json("GET", f"{server.api_base}/devices/{device}/metrics", key=API_KEY)
    assert status == 403, body
    other = ActivitySmith(api_key="lsk_not_a_key")
    other.metrics._api.api_client.configuration.host = server.api_base
    with pytest.raises(ForbiddenException):
        other.metrics.update("revenue.today", 1)


def test_the_cli_sets_a_value(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--url", server.api_base, "--key", API_KEY, "--json"]
    assert lockstep(["metrics", "set", "cli.value", "3 of 5", *where[:4]]) == 0
    summary = capsys.readouterr().out
    assert summary == f'cli.value = "3 of 5" (stored; {DEVICES} devices\' widgets told to reload)\n'
    assert lockstep(["metrics", "set", "cli.value", "3 of 5", *where]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["stored"] is True and answer["devices_targeted"] == DEVICES
    assert device_values(server, server.devices()[0]["name"])["cli.value"] == "3 of 5"
    old = ["--timestamp", "2020-01-01T00:00:00Z"]
    assert lockstep(["metrics", "set", "cli.value", "1", *old, *where]) == 0
    assert json.loads(capsys.readouterr().out)["stored"] is False
    assert lockstep(["metrics", "set", "cli.value", "1", "--key", "wrong", "--url",
                     server.api_base]) == 1  # fmt: skip
    assert "HTTP 403" in capsys.readouterr().err
