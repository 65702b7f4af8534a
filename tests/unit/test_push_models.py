"""The push notification and badge request models: what the SDK sends decodes, the rest is a 400
naming the field; the responses carry every field the SDK's models read."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from activitysmith_openapi.models.app_icon_badge_count_update_error import (
    AppIconBadgeCountUpdateError,
)
from activitysmith_openapi.models.app_icon_badge_count_update_request import (
    AppIconBadgeCountUpdateRequest,
)
from activitysmith_openapi.models.app_icon_badge_count_update_response import (
    AppIconBadgeCountUpdateResponse,
)
from activitysmith_openapi.models.push_notification_replace_request import (
    PushNotificationReplaceRequest,
)
from activitysmith_openapi.models.push_notification_replace_response import (
    PushNotificationReplaceResponse,
)
from activitysmith_openapi.models.push_notification_request import PushNotificationRequest
from activitysmith_openapi.models.push_notification_response import PushNotificationResponse

from engine.server.contract import errors, models, push

TS = "2025-01-01T12:00:00.000Z"

FULL: dict[str, Any] = {
    "title": "Deploy",
    "message": "v2 is live",
    "subtitle": "prod",
    "icon": "https://example.com/icon.png",
    "interruption_level": "time-sensitive",
    "redirection": "spotify:track:123",
    "actions": [
        {"title": "Open", "type": "open_url", "url": "https://example.com"},
        {
            "title": "Ack",
            "type": "webhook",
            "url": "https://hooks.example.com/ack",
            "method": "POST",
            "body": {"k": "v"},
        },
    ],
    "payload": {"deploy": 2},
    "badge": 3,
    "sound": "default",
    "target": {"channels": ["ops"]},
    "metadata": {"build": 17, "ok": True, "note": "x"},
    "tags": ["deploy"],
}


def decode(type_: type[Any], body: dict[str, Any]) -> Any:
    return models.decode(type_, msgspec.json.encode(body))


def test_every_sdk_request_field_decodes() -> None:
    sdk_body = PushNotificationRequest.from_dict(FULL).to_dict()
    req = decode(push.PushRequest, sdk_body)
    for name in PushNotificationRequest.model_fields:
        if name not in ("additional_properties", "media"):  # media excludes actions
            assert getattr(req, name) is not None, name
    with_media = {k: v for k, v in FULL.items() if k != "actions"} | {"media": "https://e.com/a"}
    assert decode(push.PushRequest, with_media).media == "https://e.com/a"
    assert push.requested_channels(req) == ["ops"]
    replace = {k: v for k, v in FULL.items() if k not in ("interruption_level", "sound", "target")}
    sdk_replace = PushNotificationReplaceRequest.from_dict(replace).to_dict()
    assert decode(push.PushReplaceRequest, sdk_replace).title == "Deploy"
    badge = AppIconBadgeCountUpdateRequest.from_dict({"badge": 0, "target": {"channels": ["a"]}})
    assert decode(push.BadgeRequest, badge.to_dict()).badge == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": 3}, "title"),
        ({"title": "t", "icon": "http://example.com/i.png"}, "icon"),
        ({"title": "t", "icon": "https://user:pw@example.com/i.png"}, "icon"),
        ({"title": "t", "media": "ftp://example.com/a.mp4"}, "media"),
        ({"title": "t", "redirection": "no scheme"}, "redirection"),
        ({"title": "t", "redirection": "javascript:alert(1)"}, "redirection"),
        ({"title": "t", "redirection": "https://e.com/" + "x" * 2048}, "redirection"),
        ({"title": "t", "interruption_level": "critical"}, "interruption_level"),
        ({"title": "t", "badge": -1}, "badge"),
        ({"title": "t", "actions": [FULL["actions"][0]] * 5}, "actions"),
        (
            {"title": "t", "actions": [FULL["actions"][0]], "media": "https://e.com/a.png"},
            "actions",
        ),
        (
            {"title": "t", "actions": [{"title": "x", "type": "webhook", "url": "http://e.com"}]},
            "actions[0].url",
        ),
        ({"title": "t", "payload": {"aps": {}}}, "payload.aps"),
        ({"title": "t", "payload": {"lockstep": 1}}, "payload.lockstep"),
        ({"title": "t", "channels": ["Ops"]}, "channels[0]"),
        ({"title": "t", "channels": ["a"], "target": {"channels": ["b"]}}, "target.channels"),
        ({"title": "t", "tags": [""]}, "tags[0]"),
        ({"title": "t", "metadata": {"k": {"nested": 1}}}, "metadata[...]"),
    ],
)
def test_bad_push_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        decode(push.PushRequest, body)
    assert info.value.field == field, info.value.message
    assert info.value.message.startswith(field)


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "badge"), ({"badge": 2**31}, "badge"), ({"badge": 1, "channels": []}, "channels")],
)
def test_bad_badge_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        decode(push.BadgeRequest, body)
    assert info.value.field == field


def test_responses_parse_as_the_sdk_models() -> None:
    sent = push.PushResponse(
        success=True,
        notification_id="pn_1",
        devices_notified=1,
        users_notified=1,
        timestamp=TS,
        devices_targeted=2,
        devices_deactivated=1,
        devices_unregistered=1,
        devices_queued=0,
    )
    parsed = PushNotificationResponse.from_json(msgspec.json.encode(sent).decode())
    assert parsed is not None and parsed.notification_id == "pn_1"
    assert parsed.devices_deactivated == 1
    replaced = push.PushReplaceResponse(success=True, notification_id="pn_1", timestamp=TS)
    back = PushNotificationReplaceResponse.from_json(msgspec.json.encode(replaced).decode())
    assert back is not None and back.notification_id == "pn_1"
    badge = push.BadgeResponse(
        success=True,
        badge=0,
        devices_updated=2,
        users_updated=1,
        effective_channel_slugs=[],
        timestamp=TS,
    )
    got = AppIconBadgeCountUpdateResponse.from_json(msgspec.json.encode(badge).decode())
    assert got is not None and got.devices_updated == 2


@pytest.mark.parametrize(
    ("code", "status"), [("badge_device_disconnected", 422), ("badge_update_failed", 502)]
)
def test_badge_errors_are_the_sdk_error_body(code: Any, status: int) -> None:
    err = push.BadgeUpdateError(
        code,
        "no device",
        badge=3,
        devices_targeted=2,
        devices_updated=0,
        effective_channel_slugs=["ops"],
    )
    assert err.status == status
    parsed = AppIconBadgeCountUpdateError.from_json(msgspec.json.encode(err.body()).decode())
    assert parsed is not None and parsed.code == code and parsed.badge == 3


def test_a_device_registers_its_app_token() -> None:
    token = "ab" * 32
    reg = decode(models.DeviceRegistration, {"push_to_start_token": token, "app_token": token})
    assert reg.app_token == token
    assert decode(models.DeviceRegistration, {"push_to_start_token": token}).app_token is None
    with pytest.raises(errors.BadRequest) as info:
        decode(models.DeviceRegistration, {"push_to_start_token": token, "app_token": "zz"})
    assert info.value.field == "app_token"
