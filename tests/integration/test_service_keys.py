"""Key scopes end to end in memory: the real ASGI app over the real service, store and engine,
with simulated iPhones behind the fake APNs (MockClock).

Three phones: `iphone-1` in channel `ops`, `iphone-2` in `billing`, `iphone-3` in none. The
`ops-bot` key is restricted to `ops`; the default key has scope `all`. What each lock screen
shows is read from the simulated devices themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from engine.server.contract import models
from engine.server.contract.scope import KeyScope
from engine.server.http.app import ApiApp, create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from engine.server.keys import KeyFile, KeyRing, NamedKey, hash_key
from engine.server.service import LiveConfig
from tests.helpers.asgicall import Reply, call
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

ALL_KEY = "lsk_all_key_0123456789abcdef"
OPS_KEY = "lsk_ops_key_0123456789abcdef"
DEVICE_KEY = "lsd_device_key_0123456789abcdef"
CHANNELS = {"iphone-1": ["ops"], "iphone-2": ["billing"], "iphone-3": []}
PHONES = tuple(CHANNELS)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def state(title: str, type_: str | None = "progress") -> dict[str, Any]:
    out: dict[str, Any] = {"title": title, "percentage": 10}
    if type_ is not None:
        out["type"] = type_
    return out


async def register(h: Harness) -> None:
    for name, channels in CHANNELS.items():
        await h.service.devices.register(
            name,
            models.DeviceRegistration(
                push_to_start_token=h.kit.push_to_start_token(name),
                app_token=h.kit.device(name)["tokens"]["device"],
                name=name,
                channels=channels,
            ),
        )


def app_over(h: Harness, file: KeyFile) -> ApiApp:
    ops = NamedKey(
        "ops-bot", hash_key(OPS_KEY), KeyScope.restricted_to("ops-bot", ["ops"]), "config"
    )
    return create_app(
        h.service,
        api_keys=[ALL_KEY],
        device_keys=[DEVICE_KEY],
        named_keys=KeyRing(named=[ops], file=file),
        metrics=PromMetrics(),
        openapi=build_openapi(),
    )


def showing(h: Harness, activity_id: str) -> set[str]:
    """The phones whose lock screen shows `activity_id`."""
    return {name for name in PHONES if h.shown(name, activity_id) is not None}


def ok(reply: Reply | None) -> dict[str, Any]:
    assert reply is not None and reply.status == 200, reply
    body: dict[str, Any] = reply.json()
    return body


def forbidden(reply: Reply | None) -> str:
    assert reply is not None and reply.status == 403, reply
    body = reply.json()
    assert set(body) == {"error", "message"} and body["error"] == "forbidden"  # ForbiddenError
    return str(body["message"])


async def test_a_restricted_key_reaches_only_its_channels(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=3)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", register=False) as h:
            await register(h)
            app = app_over(h, KeyFile(tmp_path / "api-keys.json"))
            start = "/api/live-activity/start"

            # A target outside the key's channels: 403, and nothing reaches any phone.
            body: dict[str, Any] = {
                "content_state": state("Billing"),
                "target": {"channels": ["billing"]},
            }
            message = forbidden(await call(app, "POST", start, body, key=OPS_KEY))
            assert "'ops-bot' may only send to channels ops; not to billing" in message
            body = {"content_state": state("Mixed"), "channels": ["ops", "billing"]}
            forbidden(await call(app, "PUT", "/api/live-activity/stream/s1", body, key=OPS_KEY))
            assert h.service.status.page(None, 100, None).activities == []

            # No target: only the key's channels.
            started = ok(
                await call(app, "POST", start, {"content_state": state("Ops")}, key=OPS_KEY)
            )
            assert started["effective_channel_slugs"] == ["ops"]
            put = {"content_state": state("Ops stream")}
            streamed = ok(await call(app, "PUT", "/api/live-activity/stream/s2", put, key=OPS_KEY))
            assert streamed["effective_channel_slugs"] == ["ops"]
            # The default key (scope all) still reaches every phone.
            everyone = ok(
                await call(app, "POST", start, {"content_state": state("All")}, key=ALL_KEY)
            )
            await trio.sleep(5)
            assert showing(h, started["activity_id"]) == {"iphone-1"}
            assert showing(h, streamed["activity_id"]) == {"iphone-1"}
            assert showing(h, everyone["activity_id"]) == set(PHONES)

            # Changing what it could not have sent: 403; its own: fine.
            update = {"activity_id": everyone["activity_id"], "content_state": state("x", None)}
            message = forbidden(
                await call(app, "POST", "/api/live-activity/update", update, key=OPS_KEY)
            )
            assert "was sent to every device" in message
            forbidden(await call(app, "POST", "/api/live-activity/end", update, key=OPS_KEY))
            mine = {"activity_id": started["activity_id"], "content_state": state("Ops 2", None)}
            assert ok(await call(app, "POST", "/api/live-activity/update", mine, key=OPS_KEY))
            assert ok(await call(app, "POST", "/api/live-activity/end", mine, key=OPS_KEY))


async def test_reads_show_a_restricted_key_only_what_it_reaches(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=3)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", register=False) as h:
            await register(h)
            app = app_over(h, KeyFile(tmp_path / "api-keys.json"))
            start = "/api/live-activity/start"
            mine = ok(await call(app, "POST", start, {"content_state": state("Ops")}, key=OPS_KEY))
            body = {"content_state": state("All")}
            other = ok(await call(app, "POST", start, body, key=ALL_KEY))
            put = {"content_state": state("Fleet")}
            ok(await call(app, "PUT", "/api/live-activity/stream/fleet", put, key=ALL_KEY))

            path = f"/api/live-activity/{mine['activity_id']}"
            assert (
                ok(await call(app, "GET", path, key=OPS_KEY))["activity_id"] == mine["activity_id"]
            )
            path = f"/api/live-activity/{other['activity_id']}"
            forbidden(await call(app, "GET", path, key=OPS_KEY))
            forbidden(await call(app, "GET", "/api/live-activity/stream/fleet", key=OPS_KEY))
            page = ok(await call(app, "GET", "/api/live-activities", key=OPS_KEY))
            assert [a["activity_id"] for a in page["activities"]] == [mine["activity_id"]]
            page = ok(await call(app, "GET", "/api/live-activities", key=ALL_KEY))
            assert len(page["activities"]) == 3
            devices = ok(await call(app, "GET", "/api/devices", key=OPS_KEY))["devices"]
            assert [d["device_id"] for d in devices] == ["iphone-1"]
            devices = ok(await call(app, "GET", "/api/devices", key=ALL_KEY))["devices"]
            assert [d["device_id"] for d in devices] == list(PHONES)


async def test_streams_of_other_keys_are_out_of_reach(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=3)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", register=False) as h:
            await register(h)
            app = app_over(h, KeyFile(tmp_path / "api-keys.json"))
            path = "/api/live-activity/stream/fleet"
            first = ok(await call(app, "PUT", path, {"content_state": state("Fleet")}, key=ALL_KEY))
            put = {"content_state": state("Taken over")}
            assert "stream 'fleet' was sent to every device" in forbidden(
                await call(app, "PUT", path, put, key=OPS_KEY)
            )
            forbidden(await call(app, "DELETE", path, None, key=OPS_KEY))
            # Nothing changed: the stream's activity is still the default key's, running.
            assert h.service.status.stream("fleet").activity_id == first["activity_id"]
            assert not h.service.status.stream("fleet").ended
            ended = ok(await call(app, "DELETE", path, None, key=ALL_KEY))
            assert ended["operation"] == "ended"
            # Even once ended, a restricted key cannot reach it (not even to learn it ended).
            forbidden(await call(app, "DELETE", path, None, key=OPS_KEY))


async def test_created_keys_work_and_revoked_ones_stop_at_once(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=3)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", register=False) as h:
            await register(h)
            file = KeyFile(tmp_path / "api-keys.json")
            app = app_over(h, file)
            key = file.create("billing-bot", KeyScope.restricted_to("billing-bot", ["billing"]))
            start = "/api/live-activity/start"
            body = {"content_state": state("Invoice run")}
            started = ok(await call(app, "POST", start, body, key=key))
            await trio.sleep(5)
            assert showing(h, started["activity_id"]) == {"iphone-2"}
            file.revoke("billing-bot")
            reply = await call(app, "POST", start, body, key=key)
            assert reply is not None and reply.status == 403
            assert reply.json()["message"] == "unknown API key"


async def test_a_restricted_key_never_ends_what_it_cannot_reach_to_make_room(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=3)
    one = LiveConfig(notify_wait=0.5, device_limit=1)  # a phone shows one activity
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", register=False, live=one) as h:
            await register(h)
            app = app_over(h, KeyFile(tmp_path / "api-keys.json"))
            start, end = "/api/live-activity/start", "/api/live-activity/end"
            everyone = ok(
                await call(app, "POST", start, {"content_state": state("All")}, key=ALL_KEY)
            )
            await trio.sleep(5)
            # iphone-1 is full with an activity sent to every device: the ops key may not end it.
            reply = await call(app, "POST", start, {"content_state": state("Ops")}, key=OPS_KEY)
            assert reply is not None and reply.status == 429, reply
            assert reply.json()["error"] == "live_activity_limit"
            await trio.sleep(5)
            assert showing(h, everyone["activity_id"]) == set(PHONES)
            assert not h.service.status.activity(everyone["activity_id"]).ended
            # Room made by the owner; then the ops key may end its own oldest to start another.
            done = {"activity_id": everyone["activity_id"], "content_state": state("x", None)}
            ok(await call(app, "POST", end, done, key=ALL_KEY))
            first = ok(await call(app, "POST", start, {"content_state": state("O1")}, key=OPS_KEY))
            second = ok(await call(app, "POST", start, {"content_state": state("O2")}, key=OPS_KEY))
            assert second["ended_activity_id"] == first["activity_id"]
            await trio.sleep(5)
            assert showing(h, second["activity_id"]) == {"iphone-1"}


async def test_notifications_and_the_badge_keep_to_a_restricted_keys_channels(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=3)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", register=False) as h:
            await register(h)
            app = app_over(h, KeyFile(tmp_path / "api-keys.json"))
            push, badge = "/api/push-notification", "/api/badge"
            billing = {"channels": ["billing"]}
            forbidden(await call(app, "POST", push, {"title": "x", "target": billing}, key=OPS_KEY))
            forbidden(await call(app, "POST", badge, {"badge": 1, "target": billing}, key=OPS_KEY))
            mine = ok(await call(app, "POST", push, {"title": "Ops only"}, key=OPS_KEY))
            assert mine["devices_targeted"] == 1 and mine["effective_channel_slugs"] == ["ops"]
            set_badge = ok(await call(app, "POST", badge, {"badge": 4}, key=OPS_KEY))
            assert set_badge["devices_targeted"] == 1
            everyone = ok(await call(app, "POST", push, {"title": "All"}, key=ALL_KEY))
            await trio.sleep(5)
            notes = {n: [x["title"] for x in h.device(n)["notifications"]] for n in PHONES}
            assert notes == {
                "iphone-1": ["Ops only", "All"],
                "iphone-2": ["All"],
                "iphone-3": ["All"],
            }
            assert {n: h.device(n)["badge"] for n in PHONES}["iphone-1"] == 4
            assert not any(h.device(n)["badge"] for n in ("iphone-2", "iphone-3"))
            # Replacing what it could not have sent: 403, and no phone changes.
            replace = f"{push}/{everyone['notification_id']}"
            forbidden(await call(app, "PUT", replace, {"title": "Hijack"}, key=OPS_KEY))
            await trio.sleep(5)
            assert all(
                [x["title"] for x in h.device(n)["notifications"]][-1] == "All" for n in PHONES
            )
