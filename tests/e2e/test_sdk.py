"""The official ActivitySmith Python SDK, unmodified, against a real Lockstep server.

The server runs in simulate mode (two simulated iPhones that register through the device API and
report their update tokens); the SDK only has its base URL changed. Every Live Activity endpoint
is driven for each of the seven content types, by stream key (PUT, PUT, DELETE) and by id
(start, update, end), and the simulated lock screens must end up showing the last state sent,
ended. Pushes are paced at one per second per activity, so intermediate states may be coalesced
away: only the final state is asserted. Error answers must reach the SDK as the exceptions it
documents, with bodies it can parse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from activitysmith import ActivitySmith
from activitysmith_openapi import ApiClient, Configuration, LiveActivitiesApi
from activitysmith_openapi.exceptions import (
    ApiException,
    BadRequestException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)
from activitysmith_openapi.models.bad_request_error import BadRequestError
from activitysmith_openapi.models.no_recipients_error import NoRecipientsError

from tests.helpers.serverkit import (
    API_KEY,
    DEVICE_KEY,
    LiveServer,
    http_json,
    server_fixture,
    wait_until,
)

pytestmark = pytest.mark.e2e

# These tests start about twenty activities on each phone within a minute, twice what an iPhone
# accepts in an hour (the push-to-start budget, apns.md §6). The server still answers "started"
# for the ones a real phone would drop: that is the truthful-delivery work's finding
# (test_findings.py); the contract checked here is served on phones with room for every start.
server = server_fixture(seed=4101, profile={"push_to_start_budget": 200})

DEVICES = 2
Call = Callable[[], object]
DELIVERY_TIMEOUT = 10.0
# Fields that never reach the lock screen: they become the push's dismissal date.
_NOT_SHOWN = ("type", "auto_dismiss_minutes", "auto_dismiss_seconds")
_TIMER_FLAGS = ("counts_down", "is_running")

OPEN_URL = {"title": "Open", "type": "open_url", "url": "https://example.com/status"}
WEBHOOK = {
    "title": "Ack",
    "type": "webhook",
    "url": "https://hooks.example.com/ack",
    "method": "POST",
    "body": {"secret": "server-side only"},
}


# One row per content type: the start state, then what an update and the end change.
# The by-id flow sends the changes (the server keeps what they leave out); the stream flow sends
# whole states (a stream PUT replaces the content), built by applying the changes in order.
CASES: dict[str, dict[str, Any]] = {
    "segmented_progress": {
        "start": {
            "title": "Deploy",
            "number_of_steps": 4,
            "current_step": 1,
            "color": "green",
            "step_color": "blue",
            "icon": {"symbol": "hammer", "color": "blue"},
            "badge": {"title": "prod", "color": "purple"},
        },
        "update": {"title": "Deploy", "current_step": 3, "step_colors": ["green", "green", "lime"]},
        "end": {"title": "Deployed", "current_step": 5, "number_of_steps": 5},
        "action": OPEN_URL,
    },
    "progress": {
        "start": {"title": "Upload", "percentage": 10, "subtitle": "backup.tar"},
        "update": {"title": "Upload", "percentage": 55.5},
        "end": {"title": "Uploaded", "percentage": 100, "color": "green"},
        "action": WEBHOOK,
    },
    "metrics": {
        "start": {
            "title": "web-1",
            "metrics": [
                {"label": "CPU", "value": 9, "unit": "%"},
                {"label": "Memory", "value": "1.2 GB"},
            ],
        },
        "update": {
            "title": "web-1",
            "metrics": [{"label": "CPU", "value": 73.5, "unit": "%", "color": "red"}],
        },
        "end": {"title": "web-1 (drained)", "metrics": [{"label": "CPU", "value": 0, "unit": "%"}]},
        "action": None,
    },
    "stats": {
        "start": {
            "title": "Match",
            "metrics": [{"label": "Home", "value": 0}, {"label": "Away", "value": 0}],
        },
        "update": {
            "title": "Match",
            "metrics": [{"label": "Home", "value": 1}, {"label": "Away", "value": 0}],
        },
        "end": {
            "title": "Full time",
            "metrics": [{"label": "Home", "value": 2}, {"label": "Away", "value": 1}],
            "icon": {"symbol": "sportscourt"},
        },
        "action": None,
    },
    "value": {
        "start": {
            "title": "Revenue",
            "value": "$1,200",
            "badge": {"title": "LIVE", "color": "red"},
        },
        "update": {"title": "Revenue", "value": 1350},
        "end": {"title": "Revenue (final)", "value": "$1,500.00", "color": "yellow"},
        "action": OPEN_URL,
    },
    "alert": {
        "start": {"title": "Incident", "message": "Database unreachable", "color": "red"},
        "update": {"title": "Incident", "message": "Failover in progress"},
        "end": {"title": "Resolved", "message": "All systems normal", "color": "green"},
        "action": WEBHOOK,
    },
    "timer": {
        "start": {"title": "Pizza", "duration_seconds": 600, "icon": {"symbol": "timer"}},
        "update": {"title": "Pizza", "is_running": False},
        "end": {"title": "Pizza ready", "duration_seconds": 0, "counts_down": False},
        "action": None,
    },
}


# -- what the lock screen should show ---------------------------------------------------------


def shown_state(type_: str, sent: dict[str, Any], action: dict[str, Any] | None) -> dict[str, Any]:
    """The content-state a device shows for one request's `sent` content state (as the SDK sends
    it: timer flags default to true), with `type` filled in and a button as title/type/url."""
    out = {k: v for k, v in sent.items() if k not in _NOT_SHOWN and k not in _TIMER_FLAGS}
    out["type"] = type_
    if type_ == "timer":
        for flag in _TIMER_FLAGS:
            out[flag] = sent.get(flag, True)
    if action is not None:
        out["action"] = {k: action[k] for k in ("title", "type", "url")}
    return out


def stream_states(type_: str) -> list[dict[str, Any]]:
    """The whole states a stream PUTs (start, update) and DELETEs (end)."""
    case = CASES[type_]
    first = {**case["start"], "type": type_}
    second = {k: v for k, v in {**first, **case["update"]}.items() if k != "type"}
    last = {**second, **case["end"]}
    return [first, second, last]


def expected_by_id(type_: str) -> dict[str, Any]:
    """start, then update and end merged over it (omitted fields keep their values)."""
    case = CASES[type_]
    action = case["action"]
    state = shown_state(type_, case["start"], action)
    for step in ("update", "end"):
        state = {**state, **shown_state(type_, case[step], None)}
    return state


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: LiveServer) -> ActivitySmith:
    """The official client, pointed at the test server."""
    sdk = ActivitySmith(api_key=API_KEY)
    sdk.live_activities._api.api_client.configuration.host = server.api_base
    return sdk


def raw_api(server: LiveServer, key: str | None) -> LiveActivitiesApi:
    """The SDK's generated API class with any key (or none at all)."""
    return LiveActivitiesApi(ApiClient(Configuration(host=server.api_base, access_token=key)))


def body_of(exc: ApiException) -> dict[str, Any]:
    """The JSON error body the SDK received."""
    assert exc.body, exc
    parsed: dict[str, Any] = json.loads(exc.body)
    return parsed


def assert_delivered(reply: Any) -> None:
    """Every device either confirmed the push or has it queued; nothing failed.

    The SDK's start reply has no `devices_queued` (a Lockstep addition it drops), so there only
    an upper bound holds: how many APNs confirmed depends on timing; the lock screens tell."""
    assert reply.success is True
    assert not reply.errors, reply.errors
    notified = reply.devices_notified or 0
    if "devices_queued" not in type(reply).model_fields:
        assert 0 <= notified <= DEVICES, notified
        return
    queued = reply.devices_queued or 0
    assert notified + queued == DEVICES, (notified, queued)


_ALIVE = {"starting", "awaiting_token", "live", "throttled"}


def check_status(server: LiveServer, reply: Any, *, after: int, ended: bool) -> int:
    """The delivery status right after a call agrees with the call's answer: one entry per
    phone, a newer version than `after`, every phone counted as notified already has that
    version confirmed, none failed. Returns the version."""
    status, body = http_json(
        "GET", f"{server.api_base}/live-activity/{reply.activity_id}", key=API_KEY
    )
    assert status == 200, body
    assert body["activity_id"] == reply.activity_id and body["ended"] is ended
    assert body["version"] > after, (body["version"], after)
    devices = body["devices"]
    assert len(devices) == DEVICES, devices
    allowed = _ALIVE | {"ended"} if ended else _ALIVE
    assert all(d["state"] in allowed for d in devices), devices
    current = sum(d["current"] and d["confirmed_version"] == body["version"] for d in devices)
    assert current >= (reply.devices_notified or 0), (current, reply.devices_notified, devices)
    version: int = body["version"]
    return version


def wait_ended(server: LiveServer, activity_id: str, expected: dict[str, Any]) -> None:
    """Poll the control API until every device shows `activity_id` ended with `expected`."""

    def done(shown: dict[str, dict[str, Any]]) -> bool:
        return len(shown) == DEVICES and all(
            act["state"] == "ended" and act["content_state"] == expected for act in shown.values()
        )

    wait_until(
        lambda: server.shown(activity_id),
        done,
        timeout=DELIVERY_TIMEOUT,
        what=f"{activity_id} ended with {expected!r} on {DEVICES} devices",
    )


@pytest.fixture(scope="module")
def registered(server: LiveServer) -> list[dict[str, Any]]:
    """The simulated iPhones registered through the device API at start-up."""
    status, body = http_json("GET", server.api_base + "/devices", key=API_KEY)
    assert status == 200, body
    return list(body["devices"])


def test_simulated_devices_registered_through_the_device_api(
    server: LiveServer, registered: list[dict[str, Any]]
) -> None:
    names = sorted(d["name"] for d in server.devices())
    assert sorted(d["device_id"] for d in registered) == names
    assert len(names) == DEVICES
    for device in registered:
        assert len(device["push_to_start_token_suffix"]) == 8  # never the whole token


# -- every endpoint, every content type -------------------------------------------------------


@pytest.mark.parametrize("type_", list(CASES))
def test_stream_and_id_lifecycles_reach_the_lock_screens(
    server: LiveServer, client: ActivitySmith, type_: str
) -> None:
    case = CASES[type_]
    live = client.live_activities
    action = case["action"]

    # By stream key: PUT (starts), PUT without type (updates), DELETE with a final state.
    key = f"e2e-{type_}"
    first, second, last = stream_states(type_)
    started = live.stream(
        key, content_state=first, action=action, tags=["e2e"], metadata={"run": "e2e", "attempt": 1}
    )
    assert started.operation == "started" and started.stream_key == key
    assert started.activity_id and started.tags == ["e2e"]
    assert_delivered(started)
    stream_id = started.activity_id
    version = check_status(server, started, after=0, ended=False)
    updated = live.stream(key, content_state=second)
    assert (updated.operation, updated.activity_id) == ("updated", stream_id)
    assert_delivered(updated)
    version = check_status(server, updated, after=version, ended=False)
    ended = live.end_stream(key, content_state=last)
    assert (ended.operation, ended.activity_id, ended.stream_key) == ("ended", stream_id, key)
    assert not ended.ignored
    assert_delivered(ended)
    check_status(server, ended, after=version, ended=True)

    # By id: start, update with only what changes, end with only what changes.
    start = live.start(content_state={**case["start"], "type": type_}, action=action)
    assert_delivered(start)
    activity_id = start.activity_id
    assert activity_id and activity_id != stream_id
    version = check_status(server, start, after=0, ended=False)
    update = live.update(activity_id=activity_id, content_state=case["update"])
    assert update.activity_id == activity_id
    assert_delivered(update)
    version = check_status(server, update, after=version, ended=False)
    end = live.end(activity_id=activity_id, content_state=case["end"])
    assert end.activity_id == activity_id and not end.ignored
    assert_delivered(end)
    check_status(server, end, after=version, ended=True)

    wait_ended(server, stream_id, shown_state(type_, last, None))
    wait_ended(server, activity_id, expected_by_id(type_))
    for shown_id in (stream_id, activity_id):
        status, body = http_json("GET", f"{server.api_base}/live-activity/{shown_id}", key=API_KEY)
        assert status == 200, body
        assert [(d["state"], d["current"]) for d in body["devices"]] == [("ended", True)] * DEVICES


def test_server_side_fields_never_reach_the_device(
    server: LiveServer, client: ActivitySmith
) -> None:
    live = client.live_activities
    reply = live.start(
        content_state={"title": "Hook", "type": "value", "value": 1},
        action=WEBHOOK,
        secondary_action=OPEN_URL,
        metadata={"customer": "acme"},
        tags=["billing"],
    )
    live.end(activity_id=reply.activity_id, content_state={"title": "Hook", "value": 2})
    shown = wait_until(
        lambda: server.shown(reply.activity_id),
        lambda s: len(s) == DEVICES and all(a["state"] == "ended" for a in s.values()),
        timeout=DELIVERY_TIMEOUT,
        what="the webhook activity ended",
    )
    for act in shown.values():
        text = json.dumps(act["content_state"])
        assert "server-side only" not in text and "acme" not in text and "billing" not in text
        assert act["content_state"]["action"] == {
            "title": "Ack",
            "type": "webhook",
            "url": "https://hooks.example.com/ack",
        }
        assert act["content_state"]["secondary_action"] == {
            k: OPEN_URL[k] for k in ("title", "type", "url")
        }


def test_same_put_twice_is_a_noop(client: ActivitySmith) -> None:
    live = client.live_activities
    state = {"title": "Build #7", "type": "progress", "percentage": 40}
    first = live.stream("e2e-noop", content_state=state)
    again = live.stream("e2e-noop", content_state=state)
    assert first.operation == "started"
    assert (again.operation, again.ignored, again.activity_id) == ("noop", True, first.activity_id)
    assert again.devices_notified == 0
    ended = live.end_stream("e2e-noop")
    assert ended.operation == "ended" and not ended.ignored
    twice = live.end_stream("e2e-noop")
    assert twice.ignored is True and twice.activity_id == first.activity_id


def test_end_twice_is_ignored_and_update_after_end_is_refused(client: ActivitySmith) -> None:
    live = client.live_activities
    start = live.start(content_state={"title": "Once", "type": "alert", "message": "hi"})
    first = live.end(activity_id=start.activity_id, content_state={"title": "Once"})
    assert not first.ignored
    second = live.end(activity_id=start.activity_id, content_state={"title": "Once"})
    assert second.ignored is True
    with pytest.raises(ApiException) as err:
        live.update(activity_id=start.activity_id, content_state={"title": "Again"})
    assert err.value.status == 409
    assert body_of(err.value)["error"] == "activity_ended"


# -- errors -----------------------------------------------------------------------------------

_START = {"content_state": {"title": "Auth", "type": "alert", "message": "denied"}}


@pytest.mark.parametrize(
    ("key", "status", "exc_type"),
    [
        (None, 401, UnauthorizedException),
        ("lsk_not_a_key_of_this_server_00", 403, ForbiddenException),
        (DEVICE_KEY, 403, ForbiddenException),
    ],
    ids=["no-key", "wrong-key", "device-key"],
)
def test_send_routes_refuse_missing_and_wrong_keys(
    server: LiveServer, key: str | None, status: int, exc_type: type[ApiException]
) -> None:
    api = raw_api(server, key)
    calls: list[Call] = [
        lambda: api.start_live_activity(_START),
        lambda: api.reconcile_live_activity_stream("e2e-auth", _START),
        lambda: api.end_live_activity_stream("e2e-auth"),
        lambda: api.update_live_activity({"activity_id": "la_x", "content_state": {"title": "x"}}),
        lambda: api.end_live_activity({"activity_id": "la_x", "content_state": {"title": "x"}}),
    ]
    for call in calls:
        with pytest.raises(exc_type) as err:
            call()
        assert err.value.status == status
        body = body_of(err.value)
        assert body["error"] == ("unauthorized" if status == 401 else "forbidden")
        assert body["message"]
        assert DEVICE_KEY not in err.value.body and API_KEY not in err.value.body


def test_unknown_activity_and_stream_are_404(client: ActivitySmith) -> None:
    live = client.live_activities
    with pytest.raises(NotFoundException) as err:
        live.update(activity_id="la_missing", content_state={"title": "x"})
    assert err.value.status == 404 and body_of(err.value)["error"] == "not_found"
    with pytest.raises(NotFoundException) as err:
        live.end(activity_id="la_missing", content_state={"title": "x"})
    assert err.value.status == 404
    with pytest.raises(NotFoundException) as err:
        live.end_stream("e2e-never-started")
    assert err.value.status == 404 and "e2e-never-started" in body_of(err.value)["message"]


def test_validation_error_names_the_field(client: ActivitySmith) -> None:
    state = {
        "title": "Steps",
        "type": "segmented_progress",
        "number_of_steps": 3,
        "current_step": 4,
    }
    calls: tuple[Call, ...] = (
        lambda: client.live_activities.start(content_state=state),
        lambda: client.live_activities.stream("e2e-invalid", content_state=state),
    )
    for call in calls:
        with pytest.raises(BadRequestException) as err:
            call()
        assert err.value.status == 400
        assert isinstance(err.value.data, BadRequestError)  # the SDK parsed the body
        assert "content_state.current_step" in err.value.data.message


def test_channels_without_devices_is_422_no_recipients(client: ActivitySmith) -> None:
    live = client.live_activities
    state = {"title": "Nobody", "type": "value", "value": "0"}
    calls: tuple[Call, ...] = (
        lambda: live.start(content_state=state, channels=["no-such-channel"]),
        lambda: live.stream("e2e-nobody", content_state=state, channels=["no-such-channel"]),
    )
    for call in calls:
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 422
        assert isinstance(err.value.data, NoRecipientsError)
        assert err.value.data.error == "no_recipients"
        assert err.value.data.effective_channel_slugs == ["no-such-channel"]
    with pytest.raises(NotFoundException):  # nothing was started for the stream
        live.end_stream("e2e-nobody")


def test_payload_over_the_apns_limit_is_413(client: ActivitySmith) -> None:
    long_url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    state = {
        "title": "T" * 256,
        "type": "metrics",
        "metrics": [{"label": f"{i}" + "L" * 127, "value": "V" * 64} for i in range(8)],
    }
    buttons = {
        "action": {"title": "One", "type": "open_url", "url": long_url},
        "secondary_action": {"title": "Two", "type": "open_url", "url": long_url},
    }
    calls: tuple[Call, ...] = (
        lambda: client.live_activities.start(content_state=state, **buttons),
        lambda: client.live_activities.stream("e2e-huge", content_state=state, **buttons),
    )
    for call in calls:
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 413
        body = body_of(err.value)
        assert body["error"] == "payload_too_large"
        assert body["size"] > body["limit"] > 0
    with pytest.raises(NotFoundException):  # refused before anything was stored or queued
        client.live_activities.end_stream("e2e-huge")
