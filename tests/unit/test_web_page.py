"""The lock screens page on the API port: its files (public, static) and `GET /api/dashboard`."""

from __future__ import annotations

from typing import Any

from engine.server.http.app import create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from engine.server.http.routes import DASHBOARD_ACTIVITIES
from tests.helpers.asgikit import assert_error, must
from tests.helpers.fakeservice import DEVICE_KEY, SEND_KEY, FakeService
from webui import ASSET_NAMES, CONTENT_SECURITY_POLICY, PATHS, asset


class FakePhones:
    """A simulate-mode phone source: one iPhone and one push."""

    def __init__(self) -> None:
        self.calls = 0

    def page_state(self) -> dict[str, Any]:
        self.calls += 1
        return {
            "now": 1_700_000_000.5,
            "devices": [{"name": "iphone-1", "activities": []}],
            "pushes": [{"seq": 1, "device": "iphone-1", "status": 200}],
        }


def _app(phones: FakePhones | None = None) -> Any:
    return create_app(
        FakeService(),
        api_keys=[SEND_KEY],
        device_keys=[DEVICE_KEY],
        metrics=PromMetrics(),
        openapi=build_openapi(),
        phones=phones,
    )


async def test_the_page_is_served_at_the_root_without_a_key() -> None:
    reply = await must(_app(), "GET", "/")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY.decode()
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert b'<script src="ui/app.js"' in reply.body
    assert SEND_KEY.encode() not in reply.body  # the page never carries a key


async def test_every_file_of_the_page_is_served_with_its_media_type() -> None:
    types = {"index.html": "text/html", "app.css": "text/css", "app.js": "text/javascript"}
    assert set(PATHS.values()) == set(ASSET_NAMES)
    for path, name in PATHS.items():
        reply = await must(_app(), "GET", path)
        assert reply.status == 200, name
        assert reply.headers["content-type"].startswith(types[name])
        assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY.decode()
        found = asset(name)
        assert found is not None and reply.body == found.body


async def test_the_page_loads_nothing_from_another_origin() -> None:
    for name in ASSET_NAMES:
        found = asset(name)
        assert found is not None
        assert b"http://" not in found.body and b"https://" not in found.body, name
        assert b"@import" not in found.body and b"url(" not in found.body, name


async def test_an_unknown_file_is_404_naming_it() -> None:
    for path in ("/ui/secrets.txt", "/ui/index.html", "/ui/"):
        body = assert_error(await must(_app(), "GET", path), 404, "not_found")
        assert path in body["message"]


async def test_the_dashboard_needs_a_send_key() -> None:
    assert_error(await must(_app(), "GET", "/api/dashboard"), 401, "unauthorized")
    reply = await must(_app(), "GET", "/api/dashboard", key=DEVICE_KEY)
    assert_error(reply, 403, "forbidden")


async def test_the_dashboard_has_the_phones_the_pushes_and_the_recent_statuses() -> None:
    phones = FakePhones()
    app = _app(phones)
    reply = await must(app, "GET", "/api/dashboard", key=SEND_KEY)
    assert reply.status == 200
    body = reply.json()
    assert body["source"] == "server"
    assert body["now"] == 1_700_000_000.5
    assert [d["name"] for d in body["devices"]] == ["iphone-1"]
    assert body["pushes"] == [{"seq": 1, "device": "iphone-1", "status": 200}]
    assert [a["activity_id"] for a in body["activities"]] == ["act-1"]
    assert body["activities"][0]["devices"][0]["state"] == "live"
    assert phones.calls == 1
    assert app.context.service.calls[-1] == ("status_recent", DASHBOARD_ACTIVITIES)


async def test_without_simulated_phones_the_dashboard_has_the_statuses_alone() -> None:
    body = (await must(_app(None), "GET", "/api/dashboard", key=SEND_KEY)).json()
    assert body["devices"] == [] and body["pushes"] == []
    assert isinstance(body["now"], float)
    assert len(body["activities"]) == 1
