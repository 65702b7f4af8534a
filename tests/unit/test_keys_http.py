"""The ASGI app with named keys: each send route's handler gets the calling key's scope.

Driven directly (no sockets) over the fake service, which records the `KeyScope` of every Live
Activities call; the scope rules themselves are the real service's (tests/integration).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.http.app import ApiApp, create_app
from engine.server.http.endpoint import Access
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from engine.server.http.routes import ENDPOINTS
from engine.server.keys import KeyFile, KeyRing, NamedKey, hash_key
from tests.helpers.asgicall import call
from tests.helpers.fakeservice import (
    ACTIVITY_BODY,
    DEVICE_BODY,
    DEVICE_KEY,
    SEND_KEY,
    START_BODY,
    STREAM_BODY,
    FakeService,
)

OPS_KEY = "lsk_ops_key_0123456789abcdef"
OPS = KeyScope.restricted_to("ops-bot", ["ops"])

# Every send route that chooses or changes recipients, with a body it accepts: each hands the
# service the calling key's scope.
SENDS = [
    ("PUT", "/api/live-activity/stream/web-1", STREAM_BODY),
    ("DELETE", "/api/live-activity/stream/web-1", None),
    ("POST", "/api/live-activity/start", START_BODY),
    ("POST", "/api/live-activity/update", ACTIVITY_BODY),
    ("POST", "/api/live-activity/end", ACTIVITY_BODY),
    ("POST", "/api/push-notification", {"title": "Deploy"}),
    ("PUT", "/api/push-notification/pn_1", {"title": "Deployed"}),
    ("POST", "/api/badge", {"badge": 3}),
]
# Send routes whose effect is not confined to channels: a restricted key gets 403.
SCOPE_ALL = [
    ("POST", "/api/metrics/revenue/value", {"value": 1}),
    ("GET", "/api/webhooks/gh/deliveries", None),
    ("POST", "/api/webhooks/gh/deliveries/d-1/replay", None),
]


def make(tmp_path: Path) -> tuple[ApiApp, FakeService, KeyFile]:
    service = FakeService()
    file = KeyFile(tmp_path / "api-keys.json")
    ring = KeyRing(named=[NamedKey("ops-bot", hash_key(OPS_KEY), OPS, "config")], file=file)
    app = create_app(
        service,
        api_keys=[SEND_KEY],
        device_keys=[DEVICE_KEY],
        named_keys=ring,
        metrics=PromMetrics(),
        openapi=build_openapi(),
    )
    return app, service, file


def test_every_send_route_that_changes_something_is_checked_here() -> None:
    changing = {
        (e.method, e.template)
        for e in ENDPOINTS
        if e.access is Access.SEND and (e.request or e.method in ("POST", "PUT", "DELETE"))
    }
    checked = [m for m, _, _ in SENDS + SCOPE_ALL if m != "GET"]
    # A new one must be added to SENDS (and take the scope) or to SCOPE_ALL (and refuse it).
    assert len(changing) == len(checked), sorted(changing)


@pytest.mark.parametrize(("method", "path", "body"), SCOPE_ALL)
async def test_routes_beyond_channels_need_a_key_of_scope_all(
    tmp_path: Path, method: str, path: str, body: object
) -> None:
    app, service, _ = make(tmp_path)
    reply = await call(app, method, path, body, key=OPS_KEY)
    assert reply is not None and reply.status == 403, reply
    assert "scope all" in reply.json()["message"] and OPS_KEY not in reply.json()["message"]
    assert service.calls == []
    reply = await call(app, method, path, body, key=SEND_KEY)
    assert reply is not None and reply.status == 200, reply


@pytest.mark.parametrize(("method", "path", "body"), SENDS)
async def test_send_routes_get_the_calling_keys_scope(
    tmp_path: Path, method: str, path: str, body: object
) -> None:
    app, service, _ = make(tmp_path)
    reply = await call(app, method, path, body, key=OPS_KEY)
    assert reply is not None and reply.status == 200, reply
    reply = await call(app, method, path, body, key=SEND_KEY)
    assert reply is not None and reply.status == 200, reply
    assert service.scopes == [OPS, FULL_ACCESS]


@pytest.mark.parametrize(
    "path",
    [
        "/api/live-activity/act-1",
        "/api/live-activity/stream/s1",
        "/api/live-activities?limit=5",
        "/api/devices",
    ],
)
async def test_reads_get_the_calling_keys_scope(tmp_path: Path, path: str) -> None:
    app, service, _ = make(tmp_path)
    for key in (OPS_KEY, SEND_KEY):
        reply = await call(app, "GET", path, key=key)
        assert reply is not None and reply.status == 200, reply
    assert service.scopes == [OPS, FULL_ACCESS]


async def test_created_and_revoked_keys_apply_from_the_next_request(tmp_path: Path) -> None:
    app, service, file = make(tmp_path)
    key = file.create("ci", KeyScope.restricted_to("ci", ["deploys"]))
    reply = await call(app, "POST", "/api/live-activity/start", START_BODY, key=key)
    assert reply is not None and reply.status == 200
    assert service.scopes == [KeyScope("ci", frozenset({"deploys"}))]
    file.revoke("ci")
    reply = await call(app, "POST", "/api/live-activity/start", START_BODY, key=key)
    assert reply is not None and reply.status == 403
    assert reply.json() == {"error": "forbidden", "message": "unknown API key"}
    assert len(service.calls) == 1


async def test_a_named_key_is_a_send_key_only(tmp_path: Path) -> None:
    app, service, _ = make(tmp_path)
    reply = await call(app, "PUT", "/api/devices/iphone-1", DEVICE_BODY, key=OPS_KEY)
    assert reply is not None and reply.status == 403
    assert reply.json()["message"] == "this route needs a device key"
    reply = await call(app, "PUT", "/api/devices/iphone-1", DEVICE_BODY, key=DEVICE_KEY)
    assert reply is not None and reply.status == 200
    assert service.scopes == []  # device routes carry no send scope


def test_keys_stay_out_of_the_apps_repr(tmp_path: Path) -> None:
    app, _, _ = make(tmp_path)
    text = repr(app)
    assert SEND_KEY not in text and OPS_KEY not in text and hash_key(OPS_KEY) not in text


async def test_keys_never_reach_the_log_or_an_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, _, file = make(tmp_path)
    created = file.create("ci", KeyScope.restricted_to("ci", ["deploys"]))
    answers = []
    with caplog.at_level(logging.DEBUG):
        for key in (OPS_KEY, created, SEND_KEY, "lsk_wrong_key_0123456789", DEVICE_KEY):
            for method, path, body in SENDS:
                reply = await call(app, method, path, body, key=key)
                assert reply is not None
                answers.append(reply.body.decode())
        file.path.write_text("{broken")  # a key file gone bad is logged, by its path only
        await call(app, "POST", "/api/live-activity/start", START_BODY, key=created)
    assert "not valid JSON" in caplog.text
    seen = caplog.text + "".join(answers)
    for secret in (OPS_KEY, created, SEND_KEY, DEVICE_KEY, hash_key(OPS_KEY), hash_key(created)):
        assert secret not in seen
