"""Named API keys through the official ActivitySmith Python SDK against a live server.

The server runs in simulate mode with three simulated iPhones, re-registered through the device
API into channels as an app would: one in `ops`, one in `billing`, one in none. Keys:
- the default key (`API_KEY`, scope `all`);
- `ops-bot`, a `[keys.ops-bot]` table of the config (only its hash), restricted to `ops`;
- `billing-bot`, created with `lockstep keys create` while the server runs, then revoked.

Each SDK call must get the contract's answer: 403 `ForbiddenError` for a target outside the
key's channels, and a call without a target reaches only the key's channels, which the
simulated lock screens and the delivery status both show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from activitysmith import ActivitySmith
from activitysmith_openapi.exceptions import ForbiddenException
from activitysmith_openapi.models.forbidden_error import ForbiddenError

from engine.cli.main import main
from engine.server.contract.scope import KeyScope
from engine.server.keys import NamedKey, hash_key
from tests.helpers.serverkit import (
    API_KEY,
    DEVICE_KEY,
    LiveServer,
    http_json,
    simulate_settings,
    wait_until,
)

pytestmark = pytest.mark.e2e

OPS_KEY = "lsk_e2e_ops_bot_key_0123456789abcdef"
CHANNELS: tuple[list[str], ...] = (["ops"], ["billing"], [])
DELIVERY_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A simulate-mode server with the `ops-bot` key in its config; phones put into channels."""
    state_dir = tmp_path_factory.mktemp("lockstep-keys")
    ops = NamedKey(
        "ops-bot", hash_key(OPS_KEY), KeyScope.restricted_to("ops-bot", ["ops"]), "config"
    )
    settings = replace(simulate_settings(state_dir, devices=3, seed=4141), named_keys=(ops,))
    live = LiveServer.start(settings)
    try:
        for phone, channels in zip(live.devices(), CHANNELS, strict=True):
            body = {
                "push_to_start_token": phone["push_to_start_token"],
                "name": phone["name"],
                "channels": channels,
            }
            url = f"{live.api_base}/devices/{phone['name']}"
            status, reply = http_json("PUT", url, body, key=DEVICE_KEY)
            assert status == 200 and reply["channels"] == channels, (status, reply)
        yield live
    finally:
        live.stop()


def phones(server: LiveServer) -> dict[str, str]:
    """Channel (or "none") -> the simulated phone in it."""
    names = [p["name"] for p in server.devices()]
    return {(c[0] if c else "none"): name for c, name in zip(CHANNELS, names, strict=True)}


def sdk(server: LiveServer, key: str) -> ActivitySmith:
    """The official client with `key`, pointed at the test server."""
    client = ActivitySmith(api_key=key)
    client.live_activities._api.api_client.configuration.host = server.api_base
    return client


def forbidden(exc: ForbiddenException) -> str:
    """The 403's message; the body must be the contract's `ForbiddenError`."""
    assert exc.status == 403 and exc.body
    body = json.loads(exc.body)
    parsed = ForbiddenError.from_dict(body)
    assert parsed is not None and parsed.error == "forbidden", body
    return str(parsed.message)


def recipients(server: LiveServer, activity_id: str) -> set[str]:
    """The devices the server targeted with `activity_id` (its delivery status)."""
    status, body = http_json("GET", f"{server.api_base}/live-activity/{activity_id}", key=API_KEY)
    assert status == 200, (status, body)
    return {d["device_id"] for d in body["devices"]}


def shown_on(server: LiveServer, activity_id: str, phone: str) -> dict[str, Any]:
    """Wait until `phone`'s lock screen shows `activity_id`; then every phone's view of it."""
    return wait_until(
        lambda: server.shown(activity_id),
        lambda shown: phone in shown,
        timeout=DELIVERY_TIMEOUT,
        what=f"{activity_id} on {phone}",
    )


def test_a_target_outside_the_keys_channels_is_403(server: LiveServer) -> None:
    live = sdk(server, OPS_KEY).live_activities
    state = {"title": "Invoices", "type": "progress", "percentage": 5}
    with pytest.raises(ForbiddenException) as caught:
        live.start(content_state=state, channels=["billing"])
    message = forbidden(caught.value)
    assert message == "API key 'ops-bot' may only send to channels ops; not to billing"
    assert OPS_KEY not in message
    with pytest.raises(ForbiddenException) as caught:
        live.stream("keys-billing", content_state=state, channels=["ops", "billing"])
    forbidden(caught.value)
    status, _ = http_json(
        "GET", f"{server.api_base}/live-activity/stream/keys-billing", key=API_KEY
    )
    assert status == 404  # nothing was started


def test_an_untargeted_call_reaches_only_the_keys_channels(server: LiveServer) -> None:
    by_channel = phones(server)
    live = sdk(server, OPS_KEY).live_activities
    started = live.start(content_state={"title": "Deploy", "type": "progress", "percentage": 10})
    assert started.effective_channel_slugs == ["ops"]
    streamed = live.stream(
        "keys-ops", content_state={"title": "web-1", "type": "value", "value": "ok"}
    )
    assert streamed.operation == "started" and streamed.effective_channel_slugs == ["ops"]
    everyone = sdk(server, API_KEY).live_activities.start(
        content_state={"title": "All hands", "type": "progress", "percentage": 1}
    )
    for activity_id in (started.activity_id, streamed.activity_id):
        assert activity_id is not None
        assert recipients(server, activity_id) == {by_channel["ops"]}
        shown = shown_on(server, activity_id, by_channel["ops"])
        assert set(shown) == {by_channel["ops"]}
    # The default key (scope all) reaches every phone, as before.
    assert everyone.activity_id is not None
    assert recipients(server, everyone.activity_id) == set(by_channel.values())
    # The restricted key's own activity is its to change; the default key's is not.
    later = {"title": "Deploy", "percentage": 60}
    assert live.update(activity_id=started.activity_id, content_state=later).success
    with pytest.raises(ForbiddenException) as caught:
        live.update(activity_id=everyone.activity_id, content_state=later)
    assert "was sent to every device" in forbidden(caught.value)
    with pytest.raises(ForbiddenException):
        live.end(activity_id=everyone.activity_id, content_state={"title": "Over"})
    # Reads show it only what it reaches.
    url = f"{server.api_base}/live-activity/{everyone.activity_id}"
    assert http_json("GET", url, key=OPS_KEY)[0] == 403
    status, body = http_json("GET", f"{server.api_base}/devices", key=OPS_KEY)
    assert status == 200 and [d["device_id"] for d in body["devices"]] == [by_channel["ops"]]
    assert live.end_stream("keys-ops").operation == "ended"


def test_a_key_created_while_serving_works_until_revoked(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    by_channel = phones(server)
    state_dir = str(server.settings.state_dir)
    assert (
        main(["keys", "create", "billing-bot", "--channels", "billing", "--state-dir", state_dir])
        == 0
    )
    key = capsys.readouterr().out.strip()
    live = sdk(server, key).live_activities
    started = live.start(
        content_state={"title": "Invoice run", "type": "progress", "percentage": 3}
    )
    assert started.effective_channel_slugs == ["billing"]
    assert started.activity_id is not None
    assert set(shown_on(server, started.activity_id, by_channel["billing"])) == {
        by_channel["billing"]
    }
    assert main(["keys", "revoke", "billing-bot", "--state-dir", state_dir]) == 0
    capsys.readouterr()
    with pytest.raises(ForbiddenException) as caught:
        live.end(activity_id=started.activity_id, content_state={"title": "Done"})
    assert forbidden(caught.value) == "unknown API key"
