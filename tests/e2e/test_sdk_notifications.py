"""Push notifications and the app badge through the official Python SDK, unmodified, against a
real Lockstep server in simulate mode.

The simulated iPhones register their app token through the device API at start-up; what their
app side shows (the control API's `notifications` and `badge`) is what a user would see: the
notification, the replaced notification (one entry, the new text) and the badge. The `lockstep
push` and `lockstep badge` commands are driven against the same server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from activitysmith import ActivitySmith
from activitysmith_openapi.exceptions import ApiException, NotFoundException

from engine.cli.main import main as lockstep
from tests.helpers.serverkit import API_KEY, LiveServer, http_json, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=4103)

DEVICES = 2
DELIVERY_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def client(server: LiveServer) -> ActivitySmith:
    """The official client; its resources share one ApiClient, pointed at the test server."""
    sdk = ActivitySmith(api_key=API_KEY)
    sdk.live_activities._api.api_client.configuration.host = server.api_base
    return sdk


def entries(server: LiveServer, notification_id: str) -> dict[str, list[dict[str, Any]]]:
    """Per device, its notification entries for `notification_id` (the collapse id)."""
    return {
        device["name"]: [n for n in device["notifications"] if n["collapse_id"] == notification_id]
        for device in server.devices()
    }


def wait_shown(server: LiveServer, notification_id: str, **expected: Any) -> None:
    """Until every device shows exactly one entry for the notification, with `expected`."""

    def done(seen: dict[str, list[dict[str, Any]]]) -> bool:
        return len(seen) == DEVICES and all(
            len(found) == 1 and all(found[0][k] == v for k, v in expected.items())
            for found in seen.values()
        )

    wait_until(
        lambda: entries(server, notification_id),
        done,
        timeout=DELIVERY_TIMEOUT,
        what=f"{notification_id} shown with {expected!r} on {DEVICES} devices",
    )


def test_devices_registered_their_app_token(server: LiveServer) -> None:
    status, body = http_json("GET", server.api_base + "/devices", key=API_KEY)
    assert status == 200, body
    tokens = {d["name"]: d["tokens"]["device"] for d in server.devices()}
    for device in body["devices"]:
        assert device["app_token_suffix"] == tokens[device["device_id"]][-8:]


def test_send_then_replace_shows_one_notification_with_the_new_text(
    server: LiveServer, client: ActivitySmith
) -> None:
    sent = client.notifications.send(
        title="Deploy",
        message="v2 is rolling out",
        subtitle="prod",
        interruption_level="time-sensitive",
        redirection="https://ci.example.com/deploys/2",
        actions=[{"title": "Open", "type": "open_url", "url": "https://ci.example.com"}],
        tags=["deploy"],
        metadata={"build": 42},
    )
    assert sent.success is True and sent.notification_id
    assert sent.devices_targeted == DEVICES and sent.tags == ["deploy"]
    assert sent.timestamp is not None
    notification_id = sent.notification_id
    wait_shown(
        server,
        notification_id,
        title="Deploy",
        subtitle="prod",
        body="v2 is rolling out",
        interruption_level="time-sensitive",
        replaced=0,
    )
    replaced = client.notifications.replace(notification_id, title="Deployed", message="v2 is live")
    assert replaced.success is True and replaced.notification_id == notification_id
    assert replaced.tags == ["deploy"]  # left out: kept
    wait_shown(
        server, notification_id, title="Deployed", subtitle=None, body="v2 is live", replaced=1
    )
    again = client.notifications.replace_push_notification(
        notification_id, {"title": "Deployed", "message": "v2 is live (verified)"}
    )
    assert again.notification_id == notification_id
    wait_shown(server, notification_id, body="v2 is live (verified)", replaced=2)


def test_two_notifications_are_two_entries(server: LiveServer, client: ActivitySmith) -> None:
    first = client.notifications.send(title="Build", message="passed")
    second = client.notifications.send_push_notification({"title": "Build", "message": "queued"})
    assert first.notification_id != second.notification_id
    wait_shown(server, str(first.notification_id), body="passed")
    wait_shown(server, str(second.notification_id), body="queued")


def test_badge_count_sets_and_clears_the_badge(server: LiveServer, client: ActivitySmith) -> None:
    def badges() -> list[int]:
        return [int(d["badge"]) for d in server.devices()]

    reply = client.badge_count(5)
    assert reply.success is True and reply.badge == 5
    assert reply.devices_targeted == DEVICES and 0 <= reply.devices_updated <= DEVICES
    assert reply.timestamp is not None and reply.effective_channel_slugs == []
    wait_until(badges, lambda b: b == [5] * DEVICES, what="badge 5 on every device")
    client.badge_count(0)
    wait_until(badges, lambda b: b == [0] * DEVICES, what="the badge cleared")


def test_error_answers_reach_the_sdk(server: LiveServer, client: ActivitySmith) -> None:
    with pytest.raises(NotFoundException) as missing:
        client.notifications.replace("pn_" + "0" * 32, title="x")
    assert json.loads(missing.value.body or "{}")["error"] == "not_found"
    with pytest.raises(ApiException) as nobody:
        client.badge_count(1, channels=["nobody-here"])
    assert nobody.value.status == 422
    assert json.loads(nobody.value.body or "{}")["error"] == "no_recipients"
    with pytest.raises(ApiException) as nobody_push:
        client.notifications.send(title="x", channels=["nobody-here"])
    assert nobody_push.value.status == 422
    bad_icon = {"title": "x", "icon": "http://e.com/i"}  # the SDK itself refuses to send it
    status, body = http_json("POST", server.api_base + "/push-notification", bad_icon, key=API_KEY)
    assert status == 400 and body["message"].startswith("icon:")


def test_the_cli_sends_replaces_and_sets_the_badge(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = ["--url", server.api_base, "--key", API_KEY, "--timeout", "10"]
    assert lockstep(["push", *conn, "--json", "--title", "Backup", "-m", "running"]) == 0
    sent = json.loads(capsys.readouterr().out)
    notification_id = sent["notification_id"]
    wait_shown(server, notification_id, title="Backup", body="running")
    assert (
        lockstep(["push", *conn, "--replace", notification_id, "-t", "Backup", "-m", "done"]) == 0
    )
    assert capsys.readouterr().out.startswith(f"Replaced notification {notification_id}")
    wait_shown(server, notification_id, body="done", replaced=1)
    assert lockstep(["badge", "3", *conn]) == 0
    assert "Badge set to 3" in capsys.readouterr().out
    wait_until(
        lambda: [d["badge"] for d in server.devices()],
        lambda b: b == [3] * DEVICES,
        what="badge 3 from the CLI",
    )
    assert lockstep(["push", *conn, "--title", "x", "--channels", "nobody-here"]) == 1
    assert "(HTTP 422, no_recipients)" in capsys.readouterr().err
