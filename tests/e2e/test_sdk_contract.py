"""Calls the SDK's contract allows, through the official Python SDK, against a live server.

Each was once refused: a timer paused or ended without `duration_seconds`, a segmented_progress
stream ended with only `title` and `current_step`, a timer updated and ended by id with only some
fields, a 255-character stream key, and text longer than a field rule Lockstep had but the SDK
models do not (the contract's answer for a push that does not fit APNs is 413 with its size).
Every accepted call must leave the simulated iPhones showing a complete content state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from activitysmith import ActivitySmith
from activitysmith_openapi.exceptions import ApiException

from tests.helpers.serverkit import API_KEY, LiveServer, http_json, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=4141)

DEVICES = 2
DELIVERY_TIMEOUT = 10.0
TIMER = {"title": "Pizza", "type": "timer", "duration_seconds": 600}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> ActivitySmith:
    """The official client, pointed at the test server (its one shared API client)."""
    sdk = ActivitySmith(api_key=API_KEY)
    sdk.live_activities._api.api_client.configuration.host = server.api_base
    return sdk


def shown_on_all(
    server: LiveServer, activity_id: str, expected: dict[str, Any], *, state: str
) -> None:
    """Wait until every device shows `activity_id` in `state` with exactly `expected`."""

    def done(shown: dict[str, dict[str, Any]]) -> bool:
        return len(shown) == DEVICES and all(
            a["state"] == state and a["content_state"] == expected for a in shown.values()
        )

    wait_until(
        lambda: server.shown(activity_id),
        done,
        timeout=DELIVERY_TIMEOUT,
        what=f"{activity_id} {state} with {expected!r}",
    )


def timer_shown(title: str, *, running: bool, duration: float = 600.0) -> dict[str, Any]:
    return {
        "type": "timer",
        "title": title,
        "duration_seconds": duration,
        "counts_down": True,
        "is_running": running,
    }


def test_a_timer_stream_pauses_and_ends_without_duration_seconds(
    server: LiveServer, client: ActivitySmith
) -> None:
    live = client.live_activities
    started = live.stream("contract-timer", content_state=TIMER)
    paused = live.stream(
        "contract-timer", content_state={"title": "Pizza", "type": "timer", "is_running": False}
    )
    assert (paused.operation, paused.activity_id) == ("updated", started.activity_id)
    shown_on_all(server, started.activity_id, timer_shown("Pizza", running=False), state="active")
    ended = live.end_stream("contract-timer", content_state={"title": "Pizza ready"})
    assert ended.operation == "ended" and not ended.ignored
    shown_on_all(
        server, started.activity_id, timer_shown("Pizza ready", running=False), state="ended"
    )


def test_a_timer_by_id_updates_and_ends_with_only_some_fields(
    server: LiveServer, client: ActivitySmith
) -> None:
    live = client.live_activities
    start = live.start(content_state={**TIMER, "title": "Tea", "duration_seconds": 180})
    activity_id = start.activity_id
    live.update(
        activity_id=activity_id,
        content_state={"title": "Tea", "type": "timer", "is_running": False},
    )
    live.update(activity_id=activity_id, content_state={"title": "Tea (resumed)"})
    shown_on_all(
        server,
        activity_id,
        timer_shown("Tea (resumed)", running=True, duration=180.0),
        state="active",
    )
    end = live.end(activity_id=activity_id, content_state={"title": "Tea", "type": "timer"})
    assert not end.ignored
    shown_on_all(
        server, activity_id, timer_shown("Tea", running=False, duration=180.0), state="ended"
    )


def test_a_segmented_stream_ends_with_only_title_and_current_step(
    server: LiveServer, client: ActivitySmith
) -> None:
    live = client.live_activities
    state = {"title": "Deploy", "type": "segmented_progress", "number_of_steps": 5}
    started = live.stream("contract-steps", content_state={**state, "current_step": 2})
    live.end_stream("contract-steps", content_state={"title": "Deployed", "current_step": 5})
    expected = {
        "type": "segmented_progress",
        "title": "Deployed",
        "number_of_steps": 5,
        "current_step": 5,
    }
    shown_on_all(server, started.activity_id, expected, state="ended")


def test_stream_keys_up_to_255_characters(server: LiveServer, client: ActivitySmith) -> None:
    live = client.live_activities
    key = "k" * 255
    state = {"title": "Long key", "type": "value", "value": 1}
    reply = live.stream(key, content_state=state)
    assert reply.operation == "started" and reply.stream_key == key
    assert live.end_stream(key).operation == "ended"
    # The SDK itself refuses a longer key; the server says why to any other client.
    url = f"{server.api_base}/live-activity/stream/{key}k"
    status, body = http_json("PUT", url, {"content_state": state}, key=API_KEY)
    assert status == 400 and "stream_key" in body["message"] and "255" in body["message"]


def test_long_text_is_refused_only_when_the_push_does_not_fit(
    server: LiveServer, client: ActivitySmith
) -> None:
    live = client.live_activities
    # Longer than the per-field caps Lockstep once had (256 for titles, 1024 for messages),
    # well within APNs's 4 KB: accepted and shown whole.
    fits = {"title": "T" * 300, "type": "alert", "message": "m" * 2000}
    reply = live.start(content_state=fits)
    shown_on_all(server, reply.activity_id, {**fits, "type": "alert"}, state="active")
    live.end(activity_id=reply.activity_id, content_state={"title": "done"})
    # A 5,000-character message cannot fit: 413 naming the encoded size and the limit.
    huge = {"title": "Disk", "type": "alert", "message": "m" * 5000}
    calls: tuple[Callable[[], object], ...] = (
        lambda: live.start(content_state=huge),
        lambda: live.stream("contract-huge", content_state=huge),
    )
    for call in calls:
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 413
        body = json.loads(err.value.body)
        assert body["error"] == "payload_too_large"
        assert body["size"] > 5000 and body["limit"] == 4096
        assert f"{body['size']} bytes" in body["message"]
