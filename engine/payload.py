"""Live Activity push bodies: exact bytes, built once, size-checked before anything is queued.

A `LiveActivityContent` describes one ActivityKit push (apns.md §6). `prepare` validates it, encodes
it once with one module-level `msgspec.json.Encoder`, and checks the size of the *exact* bytes that
will be sent against the APNs limit (apns.md §5). The `aps.timestamp` is decided later by the
delivery scheduler, so the encoded body is kept as `prefix` + `suffix` around the timestamp and
`PreparedPayload.render(timestamp)` splices the integer in with one bytes concatenation.

Unix-second timestamps have exactly 10 digits from 2001-09-09 until the year 2286. The size check
counts a 10-digit timestamp and `render` refuses any other width, so the checked size is the sent
size, byte for byte.

Body layout (compact JSON, no whitespace). `aps` always comes first and its keys always appear in
this order; absent optional keys are left out, never sent as `null`::

    {"aps":{"timestamp":T,"event":E,"content-state":{...},
            "attributes-type":S,"attributes":{...},"input-push-token":1,"input-push-channel":S,
            "stale-date":N,"relevance-score":N,"dismissal-date":N,
            "alert":{"title":A,"body":A,"sound":S}},
     ...extra}

Content-state, attributes and `extra` keep the caller's key order. `title` and `body` are either a
string or `{"loc-key":S,"loc-args":[S,...]}` (`loc-args` left out when empty).

Start (push-to-start; `alert`, `attributes-type` and `attributes` are required)::

    {"aps":{"timestamp":1700000000,"event":"start","content-state":{"score":0},
    "attributes-type":"MatchAttributes","attributes":{"home":"A","away":"B"},"input-push-token":1,
    "alert":{"title":"Kick-off","body":"A vs B","sound":"default"}}}

Update (alert optional; without one the push is silent and defaults to priority 5)::

    {"aps":{"timestamp":1700000060,"event":"update","content-state":{"score":1},
    "stale-date":1700003600,"relevance-score":50.0},"matchId":"m-1"}

End (`dismissal-date` only here; the final content state is always included)::

    {"aps":{"timestamp":1700005400,"event":"end","content-state":{"score":3},
    "dismissal-date":1700009000}}

(The examples are wrapped for reading; each body is a single line.)

Content-state values must be JSON-native (str, int, float, bool, None, list/tuple, dict with str
keys) because ActivityKit decodes them with the default `JSONDecoder` strategies (apns.md §6): there
is no sensible automatic encoding for dates, and NaN or infinity are not JSON at all. Anything else
is refused with an `InvalidContent` naming the path of the offending value.

Everything here is pure: no I/O, no clock reads. The content's dicts are read when `prepare` runs;
mutating them afterwards does not change an already prepared payload.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from engine.apns.wire import LIVE_ACTIVITY_PUSH_TYPE, MAX_BROADCAST_PAYLOAD, MAX_DEVICE_PAYLOAD

__all__ = [
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "TIMESTAMP_DIGITS",
    "Alert",
    "EventKind",
    "InvalidContent",
    "LiveActivityContent",
    "LocalizedText",
    "PayloadError",
    "PayloadTooLarge",
    "PreparedPayload",
    "TimestampWidthError",
    "content_state_sizes",
    "default_priority",
    "measure",
    "prepare",
    "remaining_bytes",
]

TIMESTAMP_DIGITS: Final = 10
"""Width of every `aps.timestamp` the engine sends: unix seconds from 2001-09-09 to 2286-11-20."""

MIN_TIMESTAMP: Final = 10 ** (TIMESTAMP_DIGITS - 1)
MAX_TIMESTAMP: Final = 10**TIMESTAMP_DIGITS - 1

_ENCODER: Final = msgspec.json.Encoder()
"""The one encoder; reused because building an encoder per push costs more than encoding."""

_PREFIX: Final = b'{"aps":{"timestamp":'
_PLACEHOLDER: Final = 0  # encodes as the single byte b"0", replaced by the real timestamp
_HEAD: Final = _PREFIX + b"0"

# Swift decodes JSON integers into Int64/UInt64; anything wider cannot be a Codable integer field.
_INT_MIN: Final = -(2**63)
_PLAIN_LEAVES: Final = frozenset({str, bool, type(None)})  # JSON leaves accepted as they are
_INT_MAX: Final = 2**64 - 1
_MAX_DEPTH: Final = 32  # deeper nesting is certainly a mistake, and keeps recursion bounded


class EventKind(enum.StrEnum):
    """The `aps.event` of a Live Activity push (apns.md §6), or `ALERT`: a notification for the
    app's own device token (`engine.notification`), which has no `aps.event`."""

    START = "start"
    UPDATE = "update"
    END = "end"
    ALERT = "alert"


class PayloadError(ValueError):
    """Base class for every payload problem; a `ValueError`, so HTTP layers can map it to 4xx."""


class InvalidContent(PayloadError):
    """A `LiveActivityContent` field (or a value inside one) is not valid; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(PayloadError):
    """The encoded body is over the APNs limit; nothing is ever truncated."""

    def __init__(self, size: int, limit: int, event: EventKind) -> None:
        self.size = size
        self.limit = limit
        self.event = event
        if limit == MAX_DEVICE_PAYLOAD:
            scope = " per device push"
        elif limit == MAX_BROADCAST_PAYLOAD:
            scope = " per broadcast push"
        else:
            scope = ""
        super().__init__(
            f"{event.value} payload is {size} bytes encoded ({size - limit} over); "
            f"APNs accepts at most {limit} bytes{scope}"
        )


class TimestampWidthError(PayloadError):
    """`render` was given a timestamp that is not a 10-digit integer, so sizes would not match."""


class LocalizedText(msgspec.Struct, frozen=True, omit_defaults=True, rename="kebab"):
    """An alert string the device localizes: `{"loc-key":..,"loc-args":[..]}`."""

    loc_key: str
    loc_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.loc_key, str) or not self.loc_key:
            raise InvalidContent("alert.loc-key", "loc-key must be a non-empty string")
        if not isinstance(self.loc_args, tuple | list) or not all(
            isinstance(arg, str) for arg in self.loc_args
        ):
            raise InvalidContent("alert.loc-args", "loc-args must be a list of strings")


class Alert(msgspec.Struct, frozen=True, omit_defaults=True):
    """The `aps.alert` of a Live Activity push: lights the screen or shows a banner."""

    title: str | LocalizedText
    body: str | LocalizedText
    sound: str | None = None

    def __post_init__(self) -> None:
        for name in ("title", "body"):
            if not isinstance(getattr(self, name), str | LocalizedText):
                raise InvalidContent(
                    f"alert.{name}", f"alert.{name} must be a string or a LocalizedText"
                )
        if self.sound is not None and (not isinstance(self.sound, str) or not self.sound):
            raise InvalidContent("alert.sound", "alert.sound must be a non-empty string or None")


class LiveActivityContent(msgspec.Struct, frozen=True):
    """One Live Activity push to send, minus its timestamp.

    Validated on construction (and when decoded with msgspec). `extra` holds custom keys placed
    next to `aps`, never inside it. `input_push_token` / `input_push_channel` choose how a remotely
    started activity receives later pushes: its own update token, or a broadcast channel; they
    select different ActivityKit push types for the new activity, so at most one may be set.
    """

    event: EventKind
    content_state: dict[str, Any]
    alert: Alert | None = None
    stale_date: int | None = None
    relevance_score: float | None = None
    dismissal_date: int | None = None
    attributes_type: str | None = None
    attributes: dict[str, Any] | None = None
    input_push_token: bool = False
    input_push_channel: str | None = None
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True, slots=True)
class PreparedPayload:
    """An encoded, size-checked body waiting for its timestamp.

    `size` is the exact length `render` returns. The bytes are left out of the repr because a
    content state may carry user data. `push_type` and `collapse_id` are the push's
    `apns-push-type` and `apns-collapse-id` (apns.md §1). A notification (`stamped` False) has no
    `aps.timestamp`: its whole body is `prefix` and `render` only checks the timestamp's width.
    """

    event: EventKind
    size: int
    priority: int
    prefix: bytes = field(repr=False)
    suffix: bytes = field(repr=False)
    push_type: str = LIVE_ACTIVITY_PUSH_TYPE
    collapse_id: str | None = None
    stamped: bool = True

    def render(self, timestamp: int) -> bytes:
        """The body with `aps.timestamp` set; `timestamp` must be a 10-digit unix-second integer."""
        if (
            not isinstance(timestamp, int)
            or isinstance(timestamp, bool)
            or not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP
        ):
            raise TimestampWidthError(
                f"timestamp must be an integer of {TIMESTAMP_DIGITS} digits "
                f"({MIN_TIMESTAMP}..{MAX_TIMESTAMP}), got {timestamp!r}; the payload size was "
                f"checked for that width"
            )
        if not self.stamped:
            return self.prefix
        return self.prefix + b"%d" % timestamp + self.suffix


# --------------------------------------------------------------------------------------------------
# Public functions


def prepare(content: LiveActivityContent, *, limit: int = MAX_DEVICE_PAYLOAD) -> PreparedPayload:
    """Encode `content` once and check its exact size; raises `PayloadTooLarge` over `limit`."""
    suffix = _encode_suffix(content)
    size = _size_of(suffix)
    if size > limit:
        raise PayloadTooLarge(size, limit, content.event)
    return PreparedPayload(content.event, size, default_priority(content), _PREFIX, suffix)


def measure(content: LiveActivityContent) -> int:
    """The exact byte length `content` would be sent with, without any limit check."""
    return _size_of(_encode_suffix(content))


def remaining_bytes(content: LiveActivityContent, *, limit: int = MAX_DEVICE_PAYLOAD) -> int:
    """How many bytes the body could still grow before hitting `limit` (negative when over)."""
    return limit - measure(content)


def content_state_sizes(
    content_state: dict[str, Any],
    *,
    alert: Alert | None = None,
    attributes_type: str | None = None,
    attributes: dict[str, Any] | None = None,
    stale_date: int | None = None,
    relevance_score: float | None = None,
    dismissal_date: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[EventKind, int]:
    """The full body size of `content_state` sent as each event kind.

    START is included only when `alert`, `attributes_type` and `attributes` are all given, since a
    start without them is invalid. The alert (if any) is counted on every kind; `dismissal_date`
    only on END. Raises `InvalidContent` for values that cannot be sent at all.
    """
    common: dict[str, Any] = {
        "alert": alert,
        "stale_date": stale_date,
        "relevance_score": relevance_score,
        "extra": extra,
    }
    sizes: dict[EventKind, int] = {}
    if alert is not None and attributes_type is not None and attributes is not None:
        start = LiveActivityContent(
            EventKind.START,
            content_state,
            attributes_type=attributes_type,
            attributes=attributes,
            **common,
        )
        sizes[EventKind.START] = measure(start)
    sizes[EventKind.UPDATE] = measure(
        LiveActivityContent(EventKind.UPDATE, content_state, **common)
    )
    end = LiveActivityContent(EventKind.END, content_state, dismissal_date=dismissal_date, **common)
    sizes[EventKind.END] = measure(end)
    return sizes


def default_priority(content: LiveActivityContent) -> int:
    """10 for starts, ends and alerting updates; 5 for silent updates (apns.md §1 budget rules).

    Priority-5 pushes do not count against the hourly ActivityKit budget, so routine updates use
    it; a start, an end or an alert is what the user should see now.
    """
    if content.event is EventKind.UPDATE and content.alert is None:
        return 5
    return 10


# --------------------------------------------------------------------------------------------------
# Encoding


def _encode_suffix(content: LiveActivityContent) -> bytes:
    """Encode the whole body with a placeholder timestamp and return what follows the timestamp."""
    aps: dict[str, Any] = {
        "timestamp": _PLACEHOLDER,
        "event": content.event,
        "content-state": content.content_state,
    }
    if content.attributes_type is not None:
        aps["attributes-type"] = content.attributes_type
    if content.attributes is not None:
        aps["attributes"] = content.attributes
    if content.input_push_token:
        aps["input-push-token"] = 1
    if content.input_push_channel is not None:
        aps["input-push-channel"] = content.input_push_channel
    if content.stale_date is not None:
        aps["stale-date"] = content.stale_date
    if content.relevance_score is not None:
        aps["relevance-score"] = content.relevance_score
    if content.dismissal_date is not None:
        aps["dismissal-date"] = content.dismissal_date
    if content.alert is not None:
        aps["alert"] = content.alert
    body = _ENCODER.encode({"aps": aps, **content.extra} if content.extra else {"aps": aps})
    # `aps` is the first key and `timestamp` its first key, so the placeholder sits right after
    # the fixed prefix; checked rather than assumed because the splice depends on it.
    if not body.startswith(_HEAD):
        raise AssertionError("encoded body does not start with the timestamp placeholder")
    return body[len(_HEAD) :]


def _size_of(suffix: bytes) -> int:
    return len(_PREFIX) + TIMESTAMP_DIGITS + len(suffix)


# --------------------------------------------------------------------------------------------------
# Validation


def _validate(content: LiveActivityContent) -> None:
    """Every rule of apns.md §6 that can be checked without a device; raises `InvalidContent`."""
    if not isinstance(content.event, EventKind):
        raise InvalidContent("event", f"event must be an EventKind, got {content.event!r}")
    _validate_alert(content)
    _validate_start_only(content)
    _validate_numbers(content)
    if not isinstance(content.content_state, dict):
        raise InvalidContent("content_state", "content_state must be a dict (a JSON object)")
    _check_json(content.content_state, "content_state")
    if content.attributes is not None:
        _check_json(content.attributes, "attributes")
    if content.extra is not None:
        _validate_extra(content.extra)


def _validate_alert(content: LiveActivityContent) -> None:
    if content.alert is None:
        if content.event is EventKind.START:
            raise InvalidContent("alert", "alert is required on start")
    elif not isinstance(content.alert, Alert):
        raise InvalidContent("alert", "alert must be an Alert or None")


def _validate_start_only(content: LiveActivityContent) -> None:
    if not isinstance(content.input_push_token, bool):
        raise InvalidContent("input_push_token", "input_push_token must be a bool")
    if content.event is EventKind.START:
        if not isinstance(content.attributes_type, str) or not content.attributes_type:
            raise InvalidContent("attributes_type", "attributes_type is required on start")
        if not isinstance(content.attributes, dict):
            raise InvalidContent("attributes", "attributes (a dict) is required on start")
    else:
        for name in ("attributes_type", "attributes", "input_push_channel"):
            if getattr(content, name) is not None:
                raise InvalidContent(name, f"{name} is only valid on start")
        if content.input_push_token:
            raise InvalidContent("input_push_token", "input_push_token is only valid on start")
    channel = content.input_push_channel
    if channel is not None:
        if not isinstance(channel, str) or not channel:
            raise InvalidContent("input_push_channel", "input_push_channel must be a channel id")
        if content.input_push_token:
            raise InvalidContent(
                "input_push_channel",
                "input_push_token and input_push_channel are exclusive: a started activity "
                "receives pushes either through its own token or through one channel",
            )
    if content.dismissal_date is not None and content.event is not EventKind.END:
        raise InvalidContent("dismissal_date", "dismissal_date is only valid on end")


def _validate_numbers(content: LiveActivityContent) -> None:
    for name in ("stale_date", "dismissal_date"):
        value = getattr(content, name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT_MAX
        ):
            raise InvalidContent(name, f"{name} must be a non-negative integer of unix seconds")
    score = content.relevance_score
    if score is not None and (
        not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score)
    ):
        raise InvalidContent("relevance_score", "relevance_score must be a finite number")


def _validate_extra(extra: dict[str, Any]) -> None:
    if not isinstance(extra, dict):
        raise InvalidContent("extra", "extra must be a dict of custom top-level keys")
    if "aps" in extra:
        raise InvalidContent("extra", "extra must not contain 'aps': custom keys go next to it")
    _check_json(extra, "extra")


class _BadValue(Exception):
    """Internal: carries the path of a bad value up the recursion (built only on failure)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str] = []


def _check_json(value: dict[str, Any], root: str) -> None:
    """Raise `InvalidContent` unless `value` encodes to JSON ActivityKit can decode as written."""
    try:
        _walk(value, 0)
    except _BadValue as bad:
        path = root + "".join(reversed(bad.parts))
        raise InvalidContent(path, f"{path}: {bad.message}") from None


def _walk(value: object, depth: int) -> None:
    # Ordered by frequency in real content states; bool is an int, so it passes the int branch.
    if isinstance(value, str) or value is None:
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _BadValue(f"integer {value} does not fit in 64 bits (Swift Int64/UInt64)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _BadValue(f"{value} is not a JSON number (NaN and infinity are not allowed)")
        return
    if depth >= _MAX_DEPTH:
        raise _BadValue(f"nested more than {_MAX_DEPTH} levels deep")
    # Containers check their plain leaves inline (exact types; a call per leaf costs more than
    # the check). Anything else, subclasses included, goes through `_walk`, which accepts it or
    # names it.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _BadValue(
                    f"key {key!r} ({type(key).__name__}) is not a string; JSON keys are strings"
                )
            kind = type(item)
            if kind in _PLAIN_LEAVES or (kind is int and _INT_MIN <= item <= _INT_MAX):
                continue
            try:
                _walk(item, depth + 1)
            except _BadValue as bad:
                bad.parts.append(f".{key}" if key.isidentifier() else f"[{key!r}]")
                raise
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            kind = type(item)
            if kind in _PLAIN_LEAVES or (kind is int and _INT_MIN <= item <= _INT_MAX):
                continue
            try:
                _walk(item, depth + 1)
            except _BadValue as bad:
                bad.parts.append(f"[{index}]")
                raise
        return
    raise _BadValue(_unsupported(value))


def _unsupported(value: object) -> str:
    kind = type(value).__name__
    if isinstance(value, _dt.date | _dt.time):
        return (
            f"{kind} is not JSON-encodable; ActivityKit decodes dates with the default strategy "
            "(seconds since 2001-01-01 as a number), so send a number"
        )
    return f"{kind} is not JSON-encodable; use str, int, float, bool, None, list or dict"
