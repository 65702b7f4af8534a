"""The official Python SDK (activitysmith 1.14) meets the per-device limit, under both policies,
and the delivery status after every step: `end_oldest` names the activity it ended in the start's
`ended_activity_id`; `refuse` raises the SDK's 429 with the `LiveActivityLimitError` fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from activitysmith import ActivitySmith
from activitysmith_openapi.exceptions import ApiException
from activitysmith_openapi.models.live_activity_limit_error import LiveActivityLimitError

from engine.server.service import LiveConfig
from tests.helpers.serverkit import API_KEY, LiveServer, http_json, simulate_settings, wait_until

pytestmark = pytest.mark.e2e

LIMIT = 2  # a small device limit keeps the scenario short; the phones allow 5


def _server(tmp_path: Path, policy: str) -> Iterator[LiveServer]:
    settings = simulate_settings(tmp_path, devices=2, seed=5150)
    live = LiveConfig(device_limit=LIMIT, limit_policy=policy)
    server = LiveServer.start(replace(settings, live=live))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def end_oldest(tmp_path: Path) -> Iterator[LiveServer]:
    yield from _server(tmp_path, "end_oldest")


@pytest.fixture
def refuse(tmp_path: Path) -> Iterator[LiveServer]:
    yield from _server(tmp_path, "refuse")


def _client(server: LiveServer) -> Any:
    sdk = ActivitySmith(api_key=API_KEY)
    sdk.live_activities._api.api_client.configuration.host = server.api_base
    return sdk.live_activities


def _states(server: LiveServer, activity_id: str) -> list[str]:
    status, body = http_json("GET", f"{server.api_base}/live-activity/{activity_id}", key=API_KEY)
    assert status == 200, body
    return [d["state"] for d in body["devices"]]


def _start(server: LiveServer, n: int) -> Any:
    reply = _client(server).start(
        content_state={"title": f"job {n}", "type": "alert", "message": "running"}
    )
    activity_id = reply.activity_id
    wait_until(lambda: _states(server, activity_id), lambda states: states == ["live", "live"])
    return reply


def test_end_oldest_names_the_ended_activity_and_every_phone_shows_the_new_one(
    end_oldest: LiveServer,
) -> None:
    first, second = _start(end_oldest, 1), _start(end_oldest, 2)
    assert first.ended_activity_id is None and second.ended_activity_id is None
    third = _start(end_oldest, 3)
    assert third.ended_activity_id == first.activity_id
    wait_until(
        lambda: _states(end_oldest, first.activity_id),
        lambda states: states == ["dismissed", "dismissed"],  # ended to make room: gone at once
    )
    for phone in end_oldest.devices():
        shown = {a["attributes"]["activity_id"]: a["state"] for a in phone["activities"]}
        assert shown[third.activity_id] == "active" and shown[first.activity_id] != "active"
        assert not any(e["detail"] == "limit-reached" for e in phone["events"])


def test_refuse_raises_the_sdks_limit_error_and_starts_nothing(refuse: LiveServer) -> None:
    started = [_start(refuse, n).activity_id for n in range(LIMIT)]
    with pytest.raises(ApiException) as caught:
        _client(refuse).start(content_state={"title": "too many", "type": "alert", "message": "x"})
    assert caught.value.status == 429
    error = LiveActivityLimitError.from_dict(json.loads(caught.value.body))
    assert error is not None
    assert (error.limit, error.active) == (LIMIT, LIMIT)
    assert (error.blocked_devices, error.targeted_devices) == (2, 2)
    status, page = http_json("GET", f"{refuse.api_base}/live-activities", key=API_KEY)
    assert status == 200 and [a["activity_id"] for a in page["activities"]] == sorted(started)
