"""The simulator's side of the lock screens page: `page_state`, and the page on the control API."""

from __future__ import annotations

import json
from typing import Any

from simulator.apns import PushRecord
from simulator.control import ControlApp
from simulator.webview import page_state
from tests.helpers.asgikit import assert_error, must
from tests.helpers.simkit import make_kit, start_aps
from webui import CONTENT_SECURITY_POLICY

EPOCH_NOW = 1_700_000_100.0


def started_kit() -> Any:
    kit = make_kit(devices=2)
    token = kit.push_to_start_token("iphone-1")
    now = kit.apns.wall_clock()
    aps = start_aps("Deploy", ts=int(now))
    kit.apns.registry.deliver(token, {"aps": aps}, now=now, priority=10, apns_id="A1")
    for seq in range(5):
        kit.apns.log.append(_record(seq, device="iphone-1" if seq % 2 else None))
    return kit


def _record(seq: int, *, device: str | None) -> PushRecord:
    return PushRecord(
        seq=seq,
        at=EPOCH_NOW + seq,
        connection=1,
        stream_id=2 * seq + 1,
        token="ab" * 32,
        status=200 if device else 400,
        reason=None if device else "BadDeviceToken",
        apns_id=f"ID{seq}",
        event="update",
        device=device,
        outcome="applied" if device else None,
        detail=None,
    )


async def test_page_state_has_the_phones_without_their_logs_and_the_newest_pushes() -> None:
    kit = started_kit()
    now = kit.apns.wall_clock()
    state = page_state(kit.apns, now, pushes=3)
    assert state["now"] == now
    phone = state["devices"][0]
    assert [d["name"] for d in state["devices"]] == ["iphone-1", "iphone-2"]
    assert "events" not in phone and phone["events_count"] >= 1
    (activity,) = phone["activities"]
    assert activity["content_state"]["title"] == "Deploy"
    assert "events" not in activity and activity["events_count"] == 1
    assert [p["seq"] for p in state["pushes"]] == [2, 3, 4]  # the newest, oldest first
    assert state["pushes"][0]["reason"] == "BadDeviceToken"
    tokens = {kit.push_to_start_token(name) for name in ("iphone-1", "iphone-2")}
    tokens |= {
        "ab" * 32,
        *(t for d in kit.apns.registry.snapshot(now) for t in d["tokens"].values()),
    }
    tokens |= {a["token"] for a in kit.device("iphone-1")["activities"] if a["token"]}
    assert len(tokens) >= 9
    assert not any(token in json.dumps(state) for token in tokens)  # the page gets no token


async def test_the_control_api_serves_the_page_and_its_dashboard() -> None:
    kit = started_kit()
    app = ControlApp(kit.apns)
    page = await must(app, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY.decode()
    script = await must(app, "GET", "/ui/app.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    dashboard = await must(app, "GET", "/api/dashboard")
    body = dashboard.json()
    assert dashboard.status == 200 and body["source"] == "simulator"
    assert body["activities"] is None
    assert body["devices"][0]["activities"][0]["content_state"]["title"] == "Deploy"
    assert len(body["pushes"]) == 5


async def test_the_control_api_refuses_what_the_page_does_not_have() -> None:
    app = ControlApp(make_kit().apns)
    for path in ("/ui/", "/ui/secrets.txt", "/ui/index.html", "/api/nope"):
        reply = await must(app, "GET", path)
        assert reply.status in (404, 405), path
    body = assert_error(await must(app, "GET", "/ui/secrets.txt"), 404, "not_found")
    assert "/ui/secrets.txt" in body["message"]
    assert_error(await must(app, "POST", "/api/dashboard", {}), 405, "method_not_allowed")
    assert_error(await must(app, "POST", "/", {}), 404, "not_found")
