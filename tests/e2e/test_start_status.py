"""What the realistic simulator shows about the server: a phone that drops a start APNs accepted
(the push-to-start budget, apns.md §6), and the delivery status that tells a caller so."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.serverkit import API_KEY, LiveServer, http_json, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=4202, devices=1)  # the default, realistic iPhone profile


def _phone(server: LiveServer) -> dict[str, Any]:
    _, phones = http_json("GET", server.control_url + "/devices")
    phone: dict[str, Any] = phones["devices"][0]
    return phone


def _start_events(phone: dict[str, Any]) -> list[str]:
    """What each push-to-start did on the phone: "start", or the reason it was ignored."""
    return [
        "start" if e["event"] == "start" else e["detail"]
        for e in phone["events"]
        if e["event"] in ("start", "ignored")
    ]


@pytest.fixture(scope="module")
def eleven_starts(server: LiveServer) -> list[str]:
    """Eleven starts to the one phone, each answered 200, each ended before the next."""
    ids = []
    for n in range(11):  # apns.md §6: about 10 push-to-starts in a row exhaust the budget
        status, body = http_json(
            "POST",
            server.api_base + "/live-activity/start",
            {"content_state": {"title": f"job {n}", "type": "alert", "message": "running"}},
            key=API_KEY,
        )
        assert status == 200 and body["success"], body
        ids.append(body["activity_id"])
        wait_until(lambda: _start_events(_phone(server)), lambda seen: len(seen) == len(ids))
        if _start_events(_phone(server))[-1] != "start":
            break
        status, body = http_json(
            "POST",
            server.api_base + "/live-activity/end",
            {"activity_id": ids[-1], "content_state": {"title": "done", "type": "alert"}},
            key=API_KEY,
        )
        assert status == 200, body
        wait_until(
            lambda: _phone(server)["activities"],
            lambda acts: all(a["state"] != "active" for a in acts),
        )
    return ids


def test_the_phone_drops_the_eleventh_start_while_the_api_said_success(
    server: LiveServer, eleven_starts: list[str]
) -> None:
    assert len(eleven_starts) == 11
    assert _start_events(_phone(server)) == ["start"] * 10 + ["push-to-start-budget"]


def test_the_status_says_the_phone_never_took_up_the_eleventh_start(
    server: LiveServer, eleven_starts: list[str]
) -> None:
    """The start's answer cannot know (APNs accepted it), but the status does: the update token
    never came, so that device is `awaiting_token`, while the ten before it ended as asked."""
    status, report = http_json(
        "GET", f"{server.api_base}/live-activity/{eleven_starts[-1]}", key=API_KEY
    )
    assert status == 200, (status, report)
    assert [d["state"] for d in report["devices"]] == ["awaiting_token"]
    status, first = http_json(
        "GET", f"{server.api_base}/live-activity/{eleven_starts[0]}", key=API_KEY
    )
    assert status == 200 and [d["state"] for d in first["devices"]] == ["ended"]
