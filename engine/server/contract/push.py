"""The push notification and app badge part of the HTTP contract, as msgspec Structs.

Field names, types and caps follow the official SDK's generated models
(`activitysmith_openapi.models.push_notification_*`, `app_icon_badge_count_update_*`,
`push_notification_action`): only the caps the contract has are enforced here (at most 4
actions, a `redirection` of at most 2048 characters, tags and metadata as for Live Activities);
a notification too big for APNs is refused 413 by the service, naming its encoded size.

- `PushRequest` (`POST /push-notification`): `title` required; `icon` and `media` are https URLs
  without credentials; `redirection` is a URL with a scheme, but not an internal or executable
  one (`javascript:`, `file:`, `data:` ...); `media` and `actions` exclude each other;
  `channels` or `target.channels` pick the devices (both must agree when both are sent).
- `PushReplaceRequest` (`PUT /push-notification/{id}`): the visible fields replace the original
  ones whole; `metadata` and `tags` left out keep the stored values (`{}` / `[]` clear them).
- `BadgeRequest` (`POST /badge`): `badge` 0 to 2^31-1 (0 clears the badge).

`engine.server.contract.models.decode` runs the checks below after msgspec's (they are
registered in its check table), so every failure is a 400 naming the field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from engine.server.contract import models
from engine.server.contract.content import Model
from engine.server.contract.errors import ApiError, BadRequest

__all__ = [
    "BADGE_MAX",
    "MAX_ACTIONS",
    "REDIRECTION_MAX",
    "RESERVED_KEYS",
    "BadgeRequest",
    "BadgeResponse",
    "BadgeUpdateError",
    "PushAction",
    "PushReplaceRequest",
    "PushReplaceResponse",
    "PushRequest",
    "PushResponse",
    "requested_channels",
]

BADGE_MAX: Final = 2**31 - 1
MAX_ACTIONS: Final = 4
REDIRECTION_MAX: Final = 2048
RESERVED_KEYS: Final = ("aps", "lockstep")
"""Top-level push keys a `payload` may not use: APNs's, and the one Lockstep fills."""

_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # RFC 3986 §3.1
# Schemes that run code or read local data when opened: never a tap target.
_BLOCKED_SCHEMES: Final = frozenset({"javascript", "vbscript", "data", "file", "about", "blob"})

_Badge = Annotated[int, Meta(ge=0, le=BADGE_MAX)]


class PushAction(Model, kw_only=True, frozen=True):
    """A button shown when the notification is expanded. Only `title`, `type` and `url` reach
    the device; a webhook's `method` and `body` stay on the server."""

    title: Annotated[str, Meta(description="Button title.")]
    type: Literal["open_url", "webhook"]
    url: Annotated[
        str,
        Meta(
            description="open_url: the URL the device opens (http, https, shortcuts or an "
            "installed app's scheme). webhook: the https URL called when the button is tapped."
        ),
    ]
    method: Annotated[
        Literal["GET", "POST"] | None, Meta(description="Webhook HTTP method (default POST).")
    ] = None
    body: Annotated[
        dict[str, Any] | None, Meta(description="Webhook JSON body. Server-side only.")
    ] = None

    def push(self) -> dict[str, str]:
        """The button as the device sees it."""
        return {"title": self.title, "type": self.type, "url": self.url}


_HttpsUrl = Annotated[str, Meta(pattern="^https://")]
_Redirection = Annotated[str, Meta(max_length=REDIRECTION_MAX)]
_Actions = Annotated[list[PushAction], Meta(max_length=MAX_ACTIONS)]


class _Visible(Model, kw_only=True, frozen=True):
    """The fields a replacement replaces whole (and `badge`)."""

    title: Annotated[str, Meta(description="The notification's title.")]
    message: Annotated[str | None, Meta(description="The body text.")] = None
    subtitle: str | None = None
    icon: Annotated[
        _HttpsUrl | None,
        Meta(description="An https image URL without credentials: the notification's icon."),
    ] = None
    media: Annotated[
        _HttpsUrl | None,
        Meta(description="An https URL of an image, audio or video; not with `actions`."),
    ] = None
    redirection: Annotated[
        _Redirection | None,
        Meta(description="The URL opened when the notification is tapped (at most 2048)."),
    ] = None
    actions: Annotated[
        _Actions | None, Meta(description="At most 4 buttons; not with `media`.")
    ] = None
    payload: Annotated[
        dict[str, Any] | None, Meta(description="Custom data for the app, sent with the push.")
    ] = None
    badge: Annotated[
        _Badge | None, Meta(description="The app badge count to set with it (0 clears it).")
    ] = None
    metadata: Annotated[
        models.MetadataField | None, Meta(description="Server-side only, never pushed.")
    ] = None
    tags: Annotated[models.TagsField | None, Meta(description="Server-side only.")] = None


class PushRequest(_Visible, kw_only=True, frozen=True):
    """POST /push-notification: send a notification to the targeted devices' apps."""

    interruption_level: Annotated[
        Literal["passive", "active", "time-sensitive"] | None,
        Meta(description="How urgently iOS presents it (default active)."),
    ] = None
    sound: Annotated[str | None, Meta(description="A sound name, e.g. default.")] = None
    target: Annotated[
        models.ChannelTarget | None, Meta(description="Recipients; default: every device.")
    ] = None
    channels: Annotated[
        models.ChannelsField | None, Meta(description="Same as target.channels; both must match.")
    ] = None


class PushReplaceRequest(_Visible, kw_only=True, frozen=True):
    """PUT /push-notification/{notification_id}: replace a sent notification in place."""


class BadgeRequest(Model, kw_only=True, frozen=True):
    """POST /badge: set the app badge count on the targeted devices (0 clears it)."""

    badge: Annotated[_Badge, Meta(description="The count to show; 0 clears it.")]
    target: Annotated[
        models.ChannelTarget | None, Meta(description="Recipients; default: every device.")
    ] = None
    channels: Annotated[
        models.ChannelsField | None, Meta(description="Same as target.channels; both must match.")
    ] = None


def requested_channels(req: PushRequest | BadgeRequest) -> list[str]:
    """The channels a send targets (`channels`, else `target.channels`); empty: every device."""
    channels = req.channels or (req.target.channels if req.target is not None else None)
    return list(channels or [])


# -- responses -----------------------------------------------------------------------------------


class _Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of the responses: None fields are left out of the JSON."""


_Queued = Annotated[
    int | None, Meta(description="Pushes accepted but not yet confirmed by APNs (Lockstep's).")
]
_Errors = Annotated[list[str] | None, Meta(description="Per-device delivery errors.")]


class PushResponse(_Reply, kw_only=True):
    """Reply to POST /push-notification."""

    success: Annotated[bool, Meta(description="APNs accepted it for a device, or it is queued.")]
    notification_id: Annotated[
        str | None, Meta(description="Pass it to PUT /push-notification/{id} to replace it.")
    ] = None
    devices_notified: Annotated[int | None, Meta(description="Pushes APNs accepted.")] = None
    users_notified: int | None = None
    effective_channel_slugs: list[str] | None = None
    tags: list[str] | None = None
    timestamp: str
    devices_targeted: int | None = None
    devices_deactivated: Annotated[
        int | None, Meta(description="App tokens APNs reported unregistered, now dropped.")
    ] = None
    devices_unregistered: int | None = None
    credential_test: bool | None = None
    message: str | None = None
    devices_queued: _Queued = None
    errors: _Errors = None


class PushReplaceResponse(_Reply, kw_only=True):
    """Reply to PUT /push-notification/{notification_id}."""

    success: bool
    notification_id: str
    devices_notified: int | None = None
    users_notified: int | None = None
    effective_channel_slugs: list[str] | None = None
    tags: list[str] | None = None
    timestamp: str
    devices_targeted: int | None = None
    devices_queued: _Queued = None
    errors: _Errors = None


class BadgeResponse(_Reply, kw_only=True):
    """Reply to POST /badge."""

    success: bool
    badge: int
    devices_updated: Annotated[int, Meta(description="Devices whose badge APNs accepted.")]
    users_updated: Annotated[
        int, Meta(description="1 when a device was updated (a Lockstep server is one account).")
    ]
    devices_notified: Annotated[int | None, Meta(description="Alias of devices_updated.")] = None
    users_notified: Annotated[int | None, Meta(description="Alias of users_updated.")] = None
    effective_channel_slugs: list[str]
    timestamp: str
    devices_targeted: int | None = None
    devices_deactivated: int | None = None
    devices_unregistered: int | None = None
    devices_queued: _Queued = None
    errors: _Errors = None


class BadgeUpdateError(ApiError):
    """The SDK's `AppIconBadgeCountUpdateError`: 422 `badge_device_disconnected` (the targeted
    devices have no app token registered) or 502 `badge_update_failed` (APNs refused every
    push). `error` and `code` are the same code."""

    def __init__(
        self,
        code: Literal["badge_device_disconnected", "badge_update_failed"],
        message: str,
        *,
        badge: int,
        devices_targeted: int,
        devices_updated: int,
        effective_channel_slugs: list[str],
    ) -> None:
        status = 422 if code == "badge_device_disconnected" else 502
        super().__init__(
            status,
            code,
            message,
            code=code,
            badge=badge,
            devices_targeted=devices_targeted,
            devices_updated=devices_updated,
            devices_notified=devices_updated,
            users_updated=1 if devices_updated else 0,
            effective_channel_slugs=effective_channel_slugs,
        )


# -- checks --------------------------------------------------------------------------------------


def _fail(field: str, detail: str) -> BadRequest:
    return BadRequest(f"{field}: {detail}", field=field)


def _check_https(url: str, field: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _fail(field, "is not a valid URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise _fail(field, "must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise _fail(field, "must not carry credentials (user:password@)")


def _check_url(url: str, field: str, *, webhook: bool = False) -> None:
    match = _SCHEME.match(url)
    if match is None:
        raise _fail(field, "must be an absolute URL with a scheme")
    scheme = match[1].lower()
    if scheme in _BLOCKED_SCHEMES:
        raise _fail(field, f"the {scheme}: scheme is not allowed")
    if webhook:
        _check_https(url, field)


def _check_visible(req: _Visible) -> None:
    if req.icon is not None:
        _check_https(req.icon, "icon")
    if req.media is not None:
        _check_https(req.media, "media")
    if req.redirection is not None:
        _check_url(req.redirection, "redirection")
    for i, action in enumerate(req.actions or ()):
        _check_url(action.url, f"actions[{i}].url", webhook=action.type == "webhook")
    if req.media and req.actions:
        raise _fail("actions", "cannot be combined with media")
    for key in RESERVED_KEYS:
        if req.payload is not None and key in req.payload:
            raise _fail(f"payload.{key}", "is reserved; put the app's data in other keys")
    if req.metadata is not None:
        models.check_metadata(req.metadata)
    if req.tags is not None:
        models.check_tags(req.tags)


def _check_targets(req: PushRequest | BadgeRequest) -> None:
    if req.channels is not None:
        models.check_channels(req.channels, "channels", min_items=1)
    if req.target is not None:
        models.check_channels(req.target.channels, "target.channels", min_items=1)
        if req.channels is not None and set(req.channels) != set(req.target.channels):
            raise _fail("target.channels", "must match channels when both are given")


def _check_push(req: PushRequest) -> None:
    _check_visible(req)
    _check_targets(req)


models.register_check(PushRequest, _check_push)
models.register_check(PushReplaceRequest, _check_visible)
models.register_check(BadgeRequest, _check_targets)
