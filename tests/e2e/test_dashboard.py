"""`GET /api/dashboard` on a live server (simulate mode), without a browser: what the page reads.

The browser tests (tests/browser) check what the page draws from it; this checks the data alone,
so it runs where no Chromium is installed too.
"""

from __future__ import annotations

import urllib.request

import pytest

from tests.helpers.serverkit import (
    API_KEY,
    DEVICE_KEY,
    LiveServer,
    http_json,
    server_fixture,
    wait_until,
)

pytestmark = pytest.mark.e2e

server = server_fixture(seed=1616, devices=2)
TIMEOUT = 10.0


def dashboard(server: LiveServer) -> dict[str, object]:
    status, body = http_json("GET", server.api_base + "/dashboard", key=API_KEY)
    assert status == 200, body
    return dict(body)


def test_the_dashboard_follows_a_stream_to_the_phones(server: LiveServer) -> None:
    content = {"title": "Deploy", "type": "segmented_progress", "number_of_steps": 4}
    status, answer = http_json(
        "PUT",
        server.api_base + "/live-activity/stream/dash-deploy",
        {"content_state": {**content, "current_step": 1}},
        key=API_KEY,
    )
    assert status == 200, answer
    activity_id = answer["activity_id"]

    def shown(body: dict[str, object]) -> list[object]:
        devices = body["devices"]
        assert isinstance(devices, list)
        return [
            a["content_state"]["current_step"]
            for d in devices
            for a in d["activities"]
            if a["attributes"].get("activity_id") == activity_id
        ]

    body = wait_until(lambda: dashboard(server), lambda b: shown(b) == [1, 1], timeout=TIMEOUT)
    assert body["source"] == "server" and isinstance(body["now"], float)
    activities = body["activities"]
    assert isinstance(activities, list)
    (status_of,) = [a for a in activities if a["activity_id"] == activity_id]
    assert status_of["stream_key"] == "dash-deploy"
    assert {d["device_id"] for d in status_of["devices"]} == {"iphone-1", "iphone-2"}
    pushes = body["pushes"]
    assert isinstance(pushes, list)
    assert {p["device"] for p in pushes if p["event"] == "start"} >= {"iphone-1", "iphone-2"}
    devices = body["devices"]
    assert isinstance(devices, list) and "events" not in devices[0]


def test_the_dashboard_needs_the_send_key_and_the_page_does_not(server: LiveServer) -> None:
    assert http_json("GET", server.api_base + "/dashboard")[0] == 401
    assert http_json("GET", server.api_base + "/dashboard", key=DEVICE_KEY)[0] == 403
    with urllib.request.urlopen(server.origin + "/", timeout=TIMEOUT) as page:
        html = page.read()
        assert page.headers["content-type"].startswith("text/html")
    assert b"ui/app.js" in html and API_KEY.encode() not in html
