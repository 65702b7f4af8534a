"""The HTTP contract as msgspec Structs, and `decode`, the one way a request body becomes one.

Field names and types follow the official SDK's generated models (`activitysmith_openapi.models`):
what the SDK sends decodes here (it leaves None fields out, always sends `counts_down`,
`is_running` and an action's `method`, and sends numbers or strings for `value`). Requests ignore
unknown fields so that newer SDKs keep working; responses leave None fields out.

`decode(type_, body)` runs, in order, and turns every failure into `errors.BadRequest` whose
message starts with the dotted path of the field (`content_state.current_step: ...`):

1. JSON syntax, UTF-8, nesting depth, and the field constraints declared on the Structs
   (types, required fields, lengths, ranges, colors, patterns);
2. the checks that need only the body (`_CHECKS` below): actions' URLs, channel slugs (and
   `channels` agreeing with `target.channels`), metadata and tags limits, device tokens, and the
   content rules of `content.check_content`:
   - `StartRequest`: `content_state.type` is required and the content is checked in full;
   - stream PUT/DELETE, update, end: when `content_state.type` is given, the content is checked
     with `partial=True` (only what is present), otherwise only the type-independent rules.

What needs the stored activity stays with the service: it calls `check_content(state, type_,
partial=...)` with the effective type (the activity's when the request has none), in full when it
starts or rotates an activity, and `check_stream_key` on the path parameter.

`validate(obj)` applies the same two steps to a Struct built in Python (the embedding API).
The responses live in `contract.responses` and the content state in `contract.content`; both
are re-exported here, so `engine.server.contract.models` is the one import for the whole
contract.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta

from engine.server.contract.content import (
    COLORS,
    CONTENT_TYPES,
    INT_MAX,
    INT_MIN,
    MAX_DISMISS_SECONDS,
    MAX_METRICS,
    MAX_STEPS,
    Action,
    Badge,
    Color,
    ContentState,
    ContentType,
    Icon,
    Int64,
    Metric,
    Model,
    as_content_type,
    check_action,
    check_content,
    join,
    push_state,
)
from engine.server.contract.errors import BadRequest
from engine.server.contract.responses import (
    RECIPIENT_STATES,
    ActivityStatus,
    ActivityStatusList,
    ActivityTokenAccepted,
    DeviceInfo,
    EndResponse,
    ErrorBody,
    RecipientStatus,
    StartResponse,
    StreamDeleteResponse,
    StreamPutResponse,
    UpdateResponse,
    iso,
)

__all__ = [
    "COLORS",
    "CONTENT_TYPES",
    "MAX_DISMISS_SECONDS",
    "MAX_METRICS",
    "MAX_STEPS",
    "RECIPIENT_STATES",
    "Action",
    "ActivityStatus",
    "ActivityStatusList",
    "ActivityTokenAccepted",
    "ActivityTokenReport",
    "AlertPayload",
    "Badge",
    "ChannelTarget",
    "Color",
    "ContentState",
    "ContentType",
    "DeviceInfo",
    "DeviceRegistration",
    "EndRequest",
    "EndResponse",
    "ErrorBody",
    "Icon",
    "Metric",
    "RecipientStatus",
    "StartRequest",
    "StartResponse",
    "StreamDeleteRequest",
    "StreamDeleteResponse",
    "StreamPutResponse",
    "StreamRequest",
    "UpdateRequest",
    "UpdateResponse",
    "as_content_type",
    "check_channels",
    "check_content",
    "check_metadata",
    "check_stream_key",
    "check_tags",
    "decode",
    "iso",
    "push_state",
    "register_check",
    "validate",
]

T = TypeVar("T")

STREAM_KEY_PATTERN: Final = "^[A-Za-z0-9_-]{1,255}$"
"""The SDK's `stream_key`: letters, digits, `_` and `-`, at most 255 characters."""
DEVICE_ID_PATTERN: Final = "^[A-Za-z0-9_.:-]{1,128}$"
CHANNEL_PATTERN: Final = "^[a-z0-9][a-z0-9_-]{0,63}$"
HEX_PATTERN: Final = "^[0-9A-Fa-f]+$"
MAX_CHANNELS: Final = 100
MAX_TAGS: Final = 20
TAG_MAX: Final = 64
MAX_METADATA: Final = 50
METADATA_BYTES: Final = 16 * 1024
METADATA_TEXT_MAX: Final = 4000
ID_MAX: Final = 128
TOKEN_MIN, TOKEN_MAX = 16, 200

# msgspec's `pattern` is a `re.search`, whose `$` also matches before a final newline; the checks
# below repeat each pattern with `fullmatch` so that "key\n" is refused.
_STREAM_KEY = re.compile(STREAM_KEY_PATTERN[1:-1])
_CHANNEL = re.compile(CHANNEL_PATTERN[1:-1])
_HEX = re.compile(HEX_PATTERN[1:-1])

_Slug = Annotated[str, Meta(pattern=CHANNEL_PATTERN)]
_Channels = Annotated[list[_Slug], Meta(min_length=1, max_length=MAX_CHANNELS)]
_MetaValue = bool | Int64 | float | Annotated[str, Meta(max_length=METADATA_TEXT_MAX)]
_Metadata = Annotated[
    dict[Annotated[str, Meta(min_length=1, max_length=ID_MAX)], _MetaValue],
    Meta(max_length=MAX_METADATA),
]
_Tags = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=TAG_MAX)]], Meta(max_length=MAX_TAGS)
]
_Id = Annotated[str, Meta(min_length=1, max_length=ID_MAX)]
# The SDK caps no activity id: one that is not ours is simply unknown (404).
_ActivityId = Annotated[str, Meta(min_length=1)]
_Token = Annotated[str, Meta(min_length=TOKEN_MIN, max_length=TOKEN_MAX, pattern=HEX_PATTERN)]
# The shared field types under public names, for the contract's other request modules.
MetadataField = _Metadata
TagsField = _Tags
ChannelsField = _Channels


class AlertPayload(Model, kw_only=True, frozen=True):
    """A visible alert delivered with the push (lights the screen)."""

    title: str | None = None
    body: str | None = None


class ChannelTarget(Model, kw_only=True, frozen=True):
    """Recipients by channel."""

    channels: Annotated[_Channels, Meta(description="Channel slugs (lower-case).")]


class _Extras(Model, kw_only=True, frozen=True):
    """Request fields shared by every Live Activity call."""

    action: Annotated[Action | None, Meta(description="Primary button.")] = None
    secondary_action: Annotated[Action | None, Meta(description="Secondary button.")] = None
    alert: Annotated[
        AlertPayload | None, Meta(description="A visible alert delivered with the push.")
    ] = None
    metadata: Annotated[
        _Metadata | None,
        Meta(
            description="Server-side only, never pushed: at most 50 entries and 16 KB of JSON; "
            "values are strings, numbers or booleans."
        ),
    ] = None
    tags: Annotated[
        _Tags | None, Meta(description="Server-side only: at most 20 tags of 1-64 characters.")
    ] = None


class StreamRequest(_Extras, kw_only=True, frozen=True):
    """PUT /live-activity/stream/{stream_key}: the latest state of a stream. The first PUT starts
    an activity (content_state.type required then), later ones update or rotate it."""

    content_state: ContentState
    channels: Annotated[
        _Channels | None, Meta(description="Recipients by channel; default: the key's scope.")
    ] = None
    target: Annotated[
        ChannelTarget | None,
        Meta(description="Same as channels; both must match when both are sent."),
    ] = None

    def requested_channels(self) -> list[str] | None:
        """The channels asked for (`channels` or `target.channels`), or None for the key's scope."""
        return _requested(self.channels, self.target)


class StreamDeleteRequest(_Extras, kw_only=True, frozen=True):
    """DELETE /live-activity/stream/{stream_key} (body optional): end the stream's activity,
    optionally with a final content state."""

    content_state: Annotated[
        ContentState | None, Meta(description="Final state; default: the latest one.")
    ] = None


class StartRequest(_Extras, kw_only=True, frozen=True):
    """POST /live-activity/start: start a Live Activity; content_state.type is required."""

    content_state: ContentState
    target: Annotated[
        ChannelTarget | None, Meta(description="Recipients; default: the key's scope.")
    ] = None
    channels: Annotated[
        _Channels | None, Meta(description="Same as target.channels; both must match.")
    ] = None

    def requested_channels(self) -> list[str] | None:
        """The channels asked for (`target.channels` or `channels`), or None for the key's scope."""
        return _requested(self.channels, self.target)


class _ActivityRequest(_Extras, kw_only=True, frozen=True):
    activity_id: Annotated[_ActivityId, Meta(description="The id returned by start.")]
    content_state: ContentState


class UpdateRequest(_ActivityRequest, kw_only=True, frozen=True):
    """POST /live-activity/update: new content for an activity; omitted type keeps its type."""


class EndRequest(_ActivityRequest, kw_only=True, frozen=True):
    """POST /live-activity/end: final content; auto_dismiss_minutes sets when it disappears."""


class DeviceRegistration(Model, kw_only=True, frozen=True):
    """PUT /devices/{device_id}: register (or re-register) a device, as its app does."""

    push_to_start_token: Annotated[
        _Token, Meta(description="The device's push-to-start token (16-200 hex digits).")
    ]
    app_token: Annotated[
        _Token | None,
        Meta(description="The app's device token, for push notifications and the badge."),
    ] = None
    name: Annotated[str, Meta(max_length=ID_MAX)] | None = None
    channels: Annotated[
        list[_Slug],
        Meta(max_length=MAX_CHANNELS, description="Channels the device subscribes to."),
    ] = msgspec.field(default_factory=list)
    widget_token: Annotated[
        _Token | None,
        Meta(
            description="The app's widget push token (iOS 26 `widgets` pushes, hex); "
            "left out: the device gets no widget pushes."
        ),
    ] = None


class ActivityTokenReport(Model, kw_only=True, frozen=True):
    """POST /activity-tokens: the update token iOS issued for an activity on a device."""

    device_id: _Id
    activity_id: _Id
    activity_token: Annotated[_Token, Meta(description="The activity's update token, hex.")]


def _fail(field: str, detail: str) -> BadRequest:
    return BadRequest(f"{field}: {detail}", field=field)


def _requested(channels: list[str] | None, target: ChannelTarget | None) -> list[str] | None:
    return channels if channels is not None else (target.channels if target else None)


def check_stream_key(key: str) -> str:
    """Return `key` if it is 1-255 of `A-Z a-z 0-9 _ -`; else raise BadRequest (`stream_key`)."""
    if not isinstance(key, str) or _STREAM_KEY.fullmatch(key) is None:
        raise _fail("stream_key", "must be 1 to 255 letters, digits, '_' or '-'")
    return key


def check_channels(channels: Sequence[str], field: str, *, min_items: int = 0) -> None:
    """Check a list of channel slugs (`^[a-z0-9][a-z0-9_-]{0,63}$`), at most 100 of them."""
    if not min_items <= len(channels) <= MAX_CHANNELS:
        raise _fail(field, f"must list {min_items} to {MAX_CHANNELS} channels")
    for i, slug in enumerate(channels):
        if not isinstance(slug, str) or _CHANNEL.fullmatch(slug) is None:
            raise _fail(
                f"{field}[{i}]",
                "a channel is 1-64 of a-z 0-9 '_' '-', starting with a letter or digit",
            )


def check_metadata(metadata: Mapping[str, Any], field: str = "metadata") -> None:
    """Check metadata: at most 50 entries, scalar values, at most 16 KB as JSON."""
    if len(metadata) > MAX_METADATA:
        raise _fail(field, f"has {len(metadata)} entries, more than {MAX_METADATA}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= ID_MAX:
            raise _fail(field, f"keys must be 1 to {ID_MAX} characters")
        if isinstance(value, str):
            if len(value) > METADATA_TEXT_MAX:
                raise _fail(f"{field}.{key}", f"is longer than {METADATA_TEXT_MAX} characters")
        elif not isinstance(value, int | float) or not math.isfinite(value):
            raise _fail(f"{field}.{key}", "must be a string, a finite number or a boolean")
        elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            raise _fail(f"{field}.{key}", "is outside the 64-bit integer range")
    size = len(msgspec.json.encode(metadata))
    if size > METADATA_BYTES:
        raise _fail(field, f"is {size} bytes as JSON, more than {METADATA_BYTES}")


def check_tags(tags: Sequence[str], field: str = "tags") -> None:
    """Check tags: at most 20, each 1 to 64 characters."""
    if len(tags) > MAX_TAGS:
        raise _fail(field, f"has {len(tags)} tags, more than {MAX_TAGS}")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not 1 <= len(tag) <= TAG_MAX:
            raise _fail(f"{field}[{i}]", f"a tag is 1 to {TAG_MAX} characters")


def _check_extras(req: _Extras) -> None:
    if req.action is not None:
        check_action(req.action, "action")
    if req.secondary_action is not None:
        check_action(req.secondary_action, "secondary_action")
    if req.metadata is not None:
        check_metadata(req.metadata)
    if req.tags is not None:
        check_tags(req.tags)


def _check_targets(channels: list[str] | None, target: ChannelTarget | None) -> None:
    if channels is not None:
        check_channels(channels, "channels", min_items=1)
    if target is not None:
        check_channels(target.channels, "target.channels", min_items=1)
        if channels is not None and set(channels) != set(target.channels):
            raise _fail("target.channels", "must match channels when both are given")


def _check_later(state: ContentState | None) -> None:
    # Without a type only the type-independent rules run: the service knows the activity's type.
    if state is not None:
        check_content(state, state.type, partial=True)


def _check_stream(req: StreamRequest) -> None:
    _check_extras(req)
    _check_targets(req.channels, req.target)
    _check_later(req.content_state)


def _check_stream_delete(req: StreamDeleteRequest) -> None:
    _check_extras(req)
    _check_later(req.content_state)


def _check_start(req: StartRequest) -> None:
    _check_extras(req)
    _check_targets(req.channels, req.target)
    if req.content_state.type is None:
        raise _fail("content_state.type", f"is required to start: {', '.join(CONTENT_TYPES)}")
    check_content(req.content_state, req.content_state.type)


def _check_activity(req: _ActivityRequest) -> None:
    _check_extras(req)
    _check_later(req.content_state)


def _check_registration(req: DeviceRegistration) -> None:
    _check_token(req.push_to_start_token, "push_to_start_token")
    if req.widget_token is not None:
        _check_token(req.widget_token, "widget_token")
    if req.app_token is not None:
        _check_token(req.app_token, "app_token")
    check_channels(req.channels, "channels")


def _check_report(req: ActivityTokenReport) -> None:
    _check_token(req.activity_token, "activity_token")


def _check_token(token: str, field: str) -> None:
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX or _HEX.fullmatch(token) is None:
        raise _fail(field, f"must be {TOKEN_MIN} to {TOKEN_MAX} hex digits")


_CHECKS: Final[dict[type[Any], Callable[[Any], None]]] = {
    StreamRequest: _check_stream,
    StreamDeleteRequest: _check_stream_delete,
    StartRequest: _check_start,
    UpdateRequest: _check_activity,
    EndRequest: _check_activity,
    DeviceRegistration: _check_registration,
    ActivityTokenReport: _check_report,
}


def register_check(type_: type[T], check: Callable[[T], None]) -> None:
    """Run `check` after msgspec's own checks whenever `decode` or `validate` makes a `type_`
    (how the contract's other request modules, e.g. `contract.push`, add their rules)."""
    _CHECKS[type_] = check


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}

# "<detail> - at `$.a.b[0]`" or, for a dict key, "<detail> - at `key` in `$.metadata`".
_AT = re.compile(r"(?P<detail>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]*)`")


def _from_msgspec(exc: msgspec.ValidationError) -> BadRequest:
    """BadRequest naming the dotted field path that msgspec's message points at."""
    text = str(exc)
    match = _AT.fullmatch(text)
    detail, path = (match["detail"], match["path"]) if match else (text, "")
    path = path.removeprefix(".")
    missing = _MISSING.fullmatch(detail)
    if missing:
        path, detail = join(path, missing["name"]), "is required"
    detail = detail[:1].lower() + detail[1:]
    if match and match["key"]:
        detail = f"a key: {detail}"
    return _fail(path or "body", detail)


def _decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    return decoder


def _has_required(type_: type[Any]) -> bool:
    info = msgspec.inspect.type_info(type_)
    return not isinstance(info, msgspec.inspect.StructType) or any(f.required for f in info.fields)


def decode(type_: type[T], body: bytes) -> T:
    """Decode a JSON request body into `type_` and run the body-only checks (module docstring).

    Raises BadRequest naming the field on any failure. An empty body decodes as `{}` for a type
    whose fields are all optional (a DELETE of a stream without a body).
    """
    if not body.strip():
        if _has_required(type_):
            raise _fail("body", "is empty; expected a JSON object")
        body = b"{}"
    try:
        obj = _decoder(type_).decode(body)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(exc) from None
    except msgspec.DecodeError as exc:
        raise _fail("body", f"is not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise _fail("body", "is not valid UTF-8") from None
    except RecursionError:
        raise _fail("body", "is nested too deeply") from None
    # No field takes U+0000, and a store may not hold it (PostgreSQL text cannot): 400 here,
    # not a failed write later. Checked only when the escape appears, so never on the hot path.
    if b"\\u0000" in body and _holds_nul(msgspec.json.decode(body)):
        raise _fail("body", "a string holds U+0000 (NUL), which no field accepts")
    check = _CHECKS.get(type_)
    if check is not None:
        check(obj)
    return obj


def _holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value has U+0000 in a string or an object key."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def validate(obj: T) -> T:
    """Re-check a Struct built in Python the way `decode` checks a body; return a checked copy."""
    type_ = type(obj)
    try:
        checked: T = msgspec.convert(msgspec.to_builtins(obj), type_)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(exc) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise _fail("body", f"cannot be encoded as JSON ({type(exc).__name__})") from None
    check = _CHECKS.get(type_)
    if check is not None:
        check(checked)
    return checked
