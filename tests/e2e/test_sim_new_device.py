"""A phone added to the running simulator (`POST /devices` on its control port) is registered
with the server, as the app on a new phone would register itself, and then receives what is sent.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.serverkit import API_KEY, LiveServer, http_json, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=4177)


def _registered(server: LiveServer) -> list[str]:
    status, body = http_json("GET", server.api_base + "/devices", key=API_KEY)
    assert status == 200, body
    return sorted(d["device_id"] for d in body["devices"])


def test_a_phone_added_on_the_control_port_is_registered_and_shown_the_next_start(
    server: LiveServer,
) -> None:
    before = _registered(server)
    status, created = http_json(
        "POST", server.control_url + "/devices", {"name": "ipad-new", "channels": ["ops"]}
    )
    assert status == 201, created
    devices = wait_until(
        lambda: _registered(server),
        lambda ids: "ipad-new" in ids,
        timeout=10.0,
        what="the new phone registered with the server",
    )
    assert sorted(devices) == sorted([*before, "ipad-new"])
    status, body = http_json("GET", server.api_base + "/devices", key=API_KEY)
    new = next(d for d in body["devices"] if d["device_id"] == "ipad-new")
    assert new["channels"] == ["ops"]
    assert new["push_to_start_token_suffix"] == created["push_to_start_token"][-8:]

    status, reply = http_json(
        "POST",
        server.api_base + "/live-activity/start",
        {
            "content_state": {"title": "Ops", "type": "alert", "message": "on call"},
            "target": {"channels": ["ops"]},
        },
        key=API_KEY,
    )
    assert status == 200 and reply["devices_notified"] + reply.get("devices_queued", 0) >= 1

    def shown(_: Any = None) -> dict[str, Any] | None:
        status, device = http_json("GET", server.control_url + "/devices/ipad-new")
        assert status == 200, device
        return next(
            (
                a
                for a in device["activities"]
                if a["attributes"].get("activity_id") == reply["activity_id"]
            ),
            None,
        )

    wait_until(shown, lambda act: act is not None, timeout=10.0, what="the start on ipad-new")
