"""The HTTP API's responses as msgspec Structs, with the field names of the official SDK models.

Fields that are None are left out of the JSON (`omit_defaults`), so every field the SDK requires
has no default here and is always written. Timestamps are ISO-8601 strings in UTC with a `Z`
(`iso`), which the SDK parses into datetimes. Two fields are additions the SDK does not model
(`StartResponse.devices_queued`, `UpdateResponse.warning`); its generated models ignore fields they
do not know, so they are safe to send.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from msgspec import Meta

__all__ = [
    "RECIPIENT_STATES",
    "ActivityStatus",
    "ActivityStatusList",
    "ActivityTokenAccepted",
    "DeviceInfo",
    "EndResponse",
    "ErrorBody",
    "HeldReason",
    "RecipientStatus",
    "StartResponse",
    "StreamDeleteResponse",
    "StreamPutResponse",
    "UpdateResponse",
    "iso",
]

_Timestamp = Annotated[str, Meta(description="ISO-8601 time in UTC, e.g. 2025-01-01T12:00:00.000Z")]
# Shared field types with their descriptions for the OpenAPI document.
_Notified = Annotated[int | None, Meta(description="Pushes APNs accepted.")]
_Queued = Annotated[
    int | None,
    Meta(
        description="Pushes accepted but not yet confirmed by APNs (coalesced or waiting for "
        "the device's update token)."
    ),
]
_Errors = Annotated[list[str] | None, Meta(description="Per-device delivery errors.")]
_Warning = Annotated[
    str | None,
    Meta(
        description="Set when a targeted device's priority-10 budget is low (routine updates go "
        "at priority 5) or spent (iOS may throttle further alerts)."
    ),
]
_Channels = Annotated[list[str] | None, Meta(description="The channels the recipients came from.")]


def iso(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds and a `Z`: `2025-01-01T12:00:00.000Z`."""
    # Every reply carries one: calls in the same millisecond share the text. Only a moment
    # clear of a millisecond's edges is matched by its millisecond (rounding to microseconds,
    # as `fromtimestamp` does, cannot move it to the next one).
    scaled = ts * 1000.0
    ms = int(scaled)
    clear = ts >= 0 and 0.001 < scaled - ms < 0.998
    if clear and ms == _last_iso[0]:
        return str(_last_iso[1])
    moment = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    text = moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
    if clear:
        _last_iso[:] = [ms, text]
    return text


_last_iso: list[Any] = [None, ""]  # the last millisecond `iso` spelled out, and its text


class _Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of the responses: None fields are left out of the JSON."""


class StreamPutResponse(_Reply, kw_only=True):
    """Reply to a stream PUT."""

    success: bool
    operation: Annotated[
        Literal["started", "updated", "rotated", "noop", "paused"],
        Meta(description="What the PUT did; rotated: ended the old activity, started a new one."),
    ]
    stream_key: str
    activity_id: str | None = None
    previous_activity_id: Annotated[
        str | None, Meta(description="rotated: the activity that was ended.")
    ] = None
    ended_activity_id: Annotated[
        str | None,
        Meta(description="An activity ended to make room on a device at its limit."),
    ] = None
    devices_notified: _Notified = None
    devices_queued: _Queued = None
    users_notified: int | None = None
    effective_channel_slugs: _Channels = None
    tags: list[str] | None = None
    warning: _Warning = None
    timestamp: _Timestamp
    ignored: Annotated[bool | None, Meta(description="True when nothing was sent (noop).")] = None
    remote_push_sent: bool | None = None
    message: str | None = None
    errors: _Errors = None


class StreamDeleteResponse(_Reply, kw_only=True):
    """Reply to a stream DELETE."""

    success: bool
    operation: Literal["ended"]
    stream_key: str
    activity_id: str | None = None
    devices_queued: _Queued = None
    devices_notified: _Notified = None
    timestamp: _Timestamp
    ignored: Annotated[bool | None, Meta(description="True when the stream had already ended.")] = (
        None
    )
    message: str | None = None
    forced_completion: bool | None = None
    warning: str | None = None
    errors: _Errors = None


class StartResponse(_Reply, kw_only=True):
    """Reply to start: keep activity_id for update and end. `devices_queued` is a Lockstep
    addition."""

    success: bool
    devices_notified: _Notified = None
    devices_queued: _Queued = None
    users_notified: int | None = None
    activity_id: str
    effective_channel_slugs: _Channels = None
    tags: list[str] | None = None
    timestamp: _Timestamp
    ended_activity_id: str | None = None
    message: str | None = None
    errors: _Errors = None


class UpdateResponse(_Reply, kw_only=True):
    """Reply to update. `warning` is a Lockstep addition."""

    success: bool
    activity_id: str
    devices_queued: _Queued = None
    devices_notified: _Notified = None
    timestamp: _Timestamp
    users_notified: int | None = None
    effective_channel_slugs: _Channels = None
    tags: list[str] | None = None
    operation: str | None = None
    stream_key: str | None = None
    previous_activity_id: str | None = None
    warning: _Warning = None
    errors: _Errors = None


class EndResponse(_Reply, kw_only=True):
    """Reply to end."""

    success: bool
    activity_id: str
    devices_queued: _Queued = None
    devices_notified: _Notified = None
    timestamp: _Timestamp
    ignored: Annotated[bool | None, Meta(description="True when it had already ended.")] = None
    message: str | None = None
    end_reason: str | None = None
    forced_completion: bool | None = None
    warning: _Warning = None
    errors: _Errors = None


class DeviceInfo(_Reply, kw_only=True):
    """A registered device. Only the last 8 characters of its token are ever shown."""

    device_id: str
    name: str | None = None
    channels: list[str]
    push_to_start_token_suffix: str
    widget_token_suffix: Annotated[
        str | None, Meta(description="The widget push token's last 8 characters, if any.")
    ] = None
    registered_at: _Timestamp
    app_token_suffix: Annotated[
        str | None, Meta(description="The app token's last 8 digits, when one is registered.")
    ] = None


class ActivityTokenAccepted(_Reply, kw_only=True):
    """Reply to an activity token report; `released` counts the queued pushes it let go."""

    success: bool
    activity_id: str
    device_id: str
    released: int


RecipientState = Literal[
    "starting",
    "awaiting_token",
    "refused_limit",
    "live",
    "throttled",
    "ended",
    "dismissed",
    "dead",
]
RECIPIENT_STATES: Final[tuple[RecipientState, ...]] = get_args(RecipientState)
"""Every recipient state, in the order a device goes through them."""

HeldReason = Literal["paced", "behind", "backoff", "awaiting_token"]
"""Why a device's newest content is not sent yet (the engine's `HoldReason`s, and the service's
own wait for an update token)."""


class RecipientStatus(_Reply, kw_only=True):
    """Where one targeted device stands (a Lockstep addition).

    `starting`: the push-to-start is not confirmed by APNs yet; `awaiting_token`: APNs accepted
    it, but the device never reported the activity's update token (it may not show the activity:
    a spent push-to-start budget, the user not tapping Allow; `overdue` once it waited past
    `[live] token_timeout`); `refused_limit`: overdue, and the device was at its Live Activity
    limit when the start went out (iOS ignores a start past the limit); `live`: the device has an
    update token (`confirmed_version` says which content it last had confirmed); `throttled`:
    live, but the device's priority-10 budget is low or spent, so routine updates go at priority 5
    and iOS shows them late; `ended`: its end was confirmed; `dismissed`: ended and past its
    dismissal time; `dead`: its token no longer works, nothing more is sent.
    """

    device_id: str
    state: Annotated[RecipientState, Meta(description="Where the device stands.")]
    confirmed_version: Annotated[
        int, Meta(description="The newest content version APNs accepted for this device.")
    ]
    current: Annotated[
        bool, Meta(description="True when the device has the newest accepted content.")
    ]
    last_status: Annotated[
        int | None, Meta(description="The HTTP status of APNs's last answer for this device.")
    ] = None
    last_reason: Annotated[
        str | None,
        Meta(description="APNs's reason with that answer, or why a push ended without one."),
    ] = None
    last_at: Annotated[str | None, Meta(description="When that answer came (ISO-8601 UTC).")] = None
    waiting_since: Annotated[
        str | None,
        Meta(description="awaiting_token / refused_limit: since when (ISO-8601 UTC)."),
    ] = None
    overdue: Annotated[
        bool,
        Meta(description="The update token is later than `[live] token_timeout` allows."),
    ] = False
    held: Annotated[
        HeldReason | None,
        Meta(
            description="Why the newest content waits to be sent to this device (a call counts "
            "it in `devices_queued`): `paced` (at most one push per activity and device per "
            "second), `behind` (another push to it goes first), `backoff` (retrying after a "
            "failed attempt), `awaiting_token` (no update token reported yet); null when "
            "nothing waits."
        ),
    ] = None


class ActivityStatus(_Reply, kw_only=True):
    """`GET /api/live-activity/{activity_id}` and `.../stream/{stream_key}`: delivery status per
    targeted device (a Lockstep addition)."""

    activity_id: str
    stream_key: str | None = None
    version: Annotated[int, Meta(description="The newest accepted content version.")]
    ended: bool
    updated_at: _Timestamp
    devices: list[RecipientStatus]
    content_state: Annotated[
        dict[str, Any] | None,
        Meta(
            description="The latest accepted content state as the devices are sent it (`type` "
            "included, buttons as title/type/url); `lockstep end KEY` reuses it."
        ),
    ] = None


class ActivityStatusList(_Reply, kw_only=True):
    """`GET /api/live-activities`: a page of statuses, by activity id (a Lockstep addition)."""

    activities: list[ActivityStatus]
    next: Annotated[
        str | None, Meta(description="Pass as `after` for the next page; absent on the last.")
    ] = None


class ErrorBody(_Reply, kw_only=True):
    """The body of every error reply. Some errors add fields: `effective_channel_slugs`
    (no_recipients), `size` and `limit` (payload_too_large), `code` (rate_limited), `limit` and
    `active` (live_activity_limit)."""

    error: Annotated[str, Meta(description="Short machine-readable code, e.g. bad_request.")]
    message: Annotated[str, Meta(description="What went wrong; names the field when one did.")]
