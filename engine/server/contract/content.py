"""Live Activity content states: the displayed part of the HTTP contract, its rules, its push form.

`ContentState` is one msgspec Struct for every request that carries a `content_state` (start,
update, end, stream PUT and DELETE), with the field names and types of the official SDK models
(`ContentStateStart`, `ContentStateUpdate`, `ContentStateEnd`, `StreamContentState`). Everything but
`title` is optional, because which fields are required depends on the type and on whether the
activity already exists.

Validation happens in two layers:

1. *Field constraints*, declared with `msgspec.Meta` on the fields (lengths, ranges, colors, enum
   values). They are enforced while decoding (`models.decode`) or when re-checking an already
   built object (`models.validate`), and they also end up in the OpenAPI document.
2. *Rules* that need more than one field or the content type, in `check_content`. With
   `partial=False` (a start, the first PUT of a stream, a rotation) the fields that the type needs
   must be present; with `partial=True` (an update or end that keeps the activity's previous
   values) only what is present is checked.

`push_state` turns a checked state into the APNs `content-state` dict. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, cast, get_args

import msgspec
from msgspec import Meta

from engine.server.contract.errors import BadRequest

__all__ = [
    "COLORS",
    "CONTENT_TYPES",
    "INT_MAX",
    "INT_MIN",
    "MAX_METRICS",
    "MAX_STEPS",
    "Action",
    "Badge",
    "Color",
    "ContentState",
    "ContentType",
    "Icon",
    "Int64",
    "Metric",
    "Model",
    "as_content_type",
    "check_action",
    "check_content",
    "join",
    "push_state",
    "timer_defaults",
]

Color = Literal[
    "lime", "green", "cyan", "blue", "purple", "magenta", "red", "orange", "yellow", "gray"
]
"""The accent colors a Live Activity can use."""

ContentType = Literal[
    "segmented_progress", "progress", "metrics", "stats", "value", "alert", "timer"
]
"""The seven Live Activity layouts."""

COLORS: Final[tuple[str, ...]] = get_args(Color)
CONTENT_TYPES: Final[tuple[str, ...]] = get_args(ContentType)

METRIC_VALUE_MAX: Final = 64
"""A metric value given as a string (the SDK's `ActivityMetricValue` limit)."""
MAX_METRICS: Final = 8
MAX_STEPS: Final = 2**31 - 1
"""`number_of_steps` is an integer >= 1 in the contract; 32 bits is what the device decodes."""
MAX_DISMISS_SECONDS: Final = 366 * 86_400
"""Dismissal delays longer than a year are shortened to a year (iOS removes an ended activity
after 4 hours anyway, apns.md §6); the contract itself has no upper bound."""

# The SDK models cap no string but a metric's string value: a content state too large for APNs is
# refused 413 naming its encoded size (apns.md §5), not by a per-field rule.
_Title = Annotated[str, Meta(min_length=1)]
_Label = Annotated[str, Meta(min_length=1)]
_Steps = Annotated[int, Meta(ge=1, le=MAX_STEPS)]
_Step = Annotated[int, Meta(ge=0, le=MAX_STEPS)]
_Percent = Annotated[float, Meta(ge=0, le=100)]
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
"""Integers outside int64 are refused: the device and the store both read 64-bit integers."""
Int64 = Annotated[int, Meta(ge=INT_MIN, le=INT_MAX)]
_Value = Int64 | float | str
_MetricValue = (
    Annotated[int, Meta(ge=0, le=INT_MAX)]
    | Annotated[float, Meta(ge=0)]
    | Annotated[str, Meta(min_length=1, max_length=METRIC_VALUE_MAX)]
)
_Duration = Annotated[float, Meta(ge=0)]
_Seconds = Annotated[int, Meta(ge=0, le=INT_MAX)]
_Minutes = Annotated[int, Meta(ge=0, le=INT_MAX)]
_Url = Annotated[str, Meta(min_length=1)]


def _doc(text: str) -> Meta:
    """A field description for the OpenAPI document."""
    return Meta(description=text)


class Model(
    msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=False
):
    """Base of the request-side Structs: immutable, None fields left out when encoded, and
    unknown fields ignored so that newer SDKs keep working."""


class Icon(Model, kw_only=True, frozen=True):
    """An SF Symbol shown beside the title (all types)."""

    symbol: Annotated[_Label, _doc("SF Symbol name, e.g. `server.rack`.")]
    color: Color | None = None


class Badge(Model, kw_only=True, frozen=True):
    """A short badge (alert, progress, segmented_progress and value)."""

    title: _Label
    color: Color | None = None


class Metric(Model, kw_only=True, frozen=True):
    """One labelled readout of a `metrics` or `stats` activity."""

    label: _Label
    value: Annotated[_MetricValue, _doc("A number >= 0, or a string shown as is (1-64 chars).")]
    unit: str | None = None
    color: Color | None = None


class Action(Model, kw_only=True, frozen=True):
    """A button on the Live Activity. Only `title`, `type` and `url` reach the device; a webhook's
    `method` and `body` stay on the server."""

    title: Annotated[_Label, _doc("Button title.")]
    type: Literal["open_url", "webhook"]
    url: Annotated[
        _Url,
        _doc(
            "open_url: the URL the device opens (http, https, shortcuts://...). "
            "webhook: the http(s) URL the server calls when the button is tapped."
        ),
    ]
    method: Annotated[
        Literal["GET", "POST"] | None, _doc("Webhook HTTP method (default POST).")
    ] = None
    body: Annotated[
        dict[str, Any] | None, _doc("Webhook JSON body. Server-side only, never pushed.")
    ] = None

    def push(self) -> dict[str, str]:
        """The button as the device sees it: title, type and url only."""
        return {"title": self.title, "type": self.type, "url": self.url}


class ContentState(Model, kw_only=True, frozen=True):
    """What the Live Activity shows. `title` is required; `type` is required on a start and on the
    first PUT of a stream, and kept from the activity when omitted later. Which other fields a type
    needs: segmented_progress: number_of_steps, current_step; progress: percentage, or value with
    upper_limit; metrics and stats: metrics; value: value; alert: message; timer: duration_seconds
    (unless counts_down is false)."""

    title: Annotated[_Title, _doc("Headline of the activity.")]
    subtitle: str | None = None
    type: Annotated[
        ContentType | None,
        _doc("Layout. Required to start; omit on updates to keep the activity's type."),
    ] = None
    number_of_steps: Annotated[_Steps | None, _doc("segmented_progress: number of steps.")] = None
    current_step: Annotated[
        _Step | None, _doc("segmented_progress: completed steps, 0..number_of_steps.")
    ] = None
    percentage: Annotated[
        _Percent | None, _doc("progress: 0-100; wins over value/upper_limit.")
    ] = None
    value: Annotated[
        _Value | None,
        _doc(
            "value: the readout (a string keeps its formatting, or a number). "
            "progress: the numeric progress, with upper_limit."
        ),
    ] = None
    upper_limit: Annotated[
        Annotated[float, Meta(gt=0)] | None, _doc("progress: the value that means complete.")
    ] = None
    duration_seconds: Annotated[
        _Duration | None,
        _doc("timer: length of the timer window in seconds; omit on updates to keep it."),
    ] = None
    counts_down: Annotated[bool | None, _doc("timer: count down (default true) or up (false).")] = (
        None
    )
    is_running: Annotated[bool | None, _doc("timer: false pauses the timer (default true).")] = None
    color: Annotated[Color | None, _doc("Accent color.")] = None
    step_color: Annotated[Color | None, _doc("segmented_progress: color of the current step.")] = (
        None
    )
    step_colors: Annotated[
        list[Color] | None,
        _doc("segmented_progress: colors of the completed steps (at most number_of_steps)."),
    ] = None
    metrics: Annotated[
        Annotated[list[Metric], Meta(min_length=1, max_length=MAX_METRICS)] | None,
        _doc("metrics and stats: 1 to 8 labelled values."),
    ] = None
    message: Annotated[
        Annotated[str, Meta(min_length=1)] | None,
        _doc("alert: the message (required for alert)."),
    ] = None
    icon: Annotated[Icon | None, _doc("Optional SF Symbol icon (all types).")] = None
    badge: Annotated[Badge | None, _doc("Optional badge.")] = None
    auto_dismiss_seconds: Annotated[
        _Seconds | None,
        _doc(
            "End only (stream DELETE): seconds until the ended activity is removed; "
            "wins over auto_dismiss_minutes."
        ),
    ] = None
    auto_dismiss_minutes: Annotated[
        _Minutes | None,
        _doc("End only: minutes until the ended activity is removed (default 3, 0 = now)."),
    ] = None


def join(field: str, name: str) -> str:
    """The dotted path of `name` inside `field` (`field` may be "" for the top level)."""
    return f"{field}.{name}" if field else name


def _fail(field: str, detail: str) -> BadRequest:
    return BadRequest(f"{field}: {detail}", field=field)


def as_content_type(value: str, field: str = "content_state.type") -> ContentType:
    """`value` narrowed to a ContentType (e.g. a type read back from storage); else BadRequest."""
    if value not in CONTENT_TYPES:
        raise _fail(field, f"must be one of {', '.join(CONTENT_TYPES)}")
    return cast(ContentType, value)


def _check_finite(field: str, value: object) -> None:
    # JSON cannot spell NaN or infinity, but objects built in Python can carry them.
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(field, "must be a finite number")


def _check_common(state: ContentState, field: str) -> None:
    """The rules that hold whatever the type is (run for every content state)."""
    if not isinstance(state.title, str) or not state.title:
        raise _fail(join(field, "title"), "must be a non-empty string")
    # The field's path is spelled out only for a failure (this runs on every call).
    for name in ("percentage", "value", "upper_limit", "duration_seconds"):
        value = getattr(state, name)
        if isinstance(value, float):
            _check_finite(join(field, name), value)
    for i, metric in enumerate(state.metrics or ()):
        if isinstance(metric.value, float):
            _check_finite(join(field, f"metrics[{i}].value"), metric.value)
    steps, current = state.number_of_steps, state.current_step
    if steps is not None and current is not None and current > steps:
        raise _fail(
            join(field, "current_step"),
            f"must be at most number_of_steps ({steps}), got {current}",
        )
    if steps is not None and state.step_colors is not None and len(state.step_colors) > steps:
        raise _fail(
            join(field, "step_colors"),
            f"has {len(state.step_colors)} entries, more than number_of_steps ({steps})",
        )


def _need(state: ContentState, field: str, name: str, type_: str) -> None:
    if getattr(state, name) is None:
        raise _fail(join(field, name), f"is required for type {type_}")


def _segmented(state: ContentState, field: str, partial: bool) -> None:
    if not partial:
        _need(state, field, "number_of_steps", "segmented_progress")
        _need(state, field, "current_step", "segmented_progress")


def _progress(state: ContentState, field: str, partial: bool) -> None:
    if state.percentage is not None:
        return  # percentage wins; value/upper_limit are then not used for the bar
    value, upper = state.value, state.upper_limit
    if value is not None:
        # bool is an int subclass, but true/false is never a number in this contract.
        if isinstance(value, str | bool) or value < 0:
            raise _fail(join(field, "value"), "must be a number >= 0 for type progress")
        if upper is not None and value > upper:
            raise _fail(join(field, "value"), f"must be at most upper_limit ({upper}), got {value}")
    if not partial and (value is None or upper is None):
        raise _fail(
            join(field, "percentage"),
            "type progress needs percentage (0-100), or value and upper_limit",
        )


def _metrics(state: ContentState, field: str, partial: bool) -> None:
    if not partial:
        _need(state, field, "metrics", "metrics/stats")


def _value(state: ContentState, field: str, partial: bool) -> None:
    if not partial:
        _need(state, field, "value", "value")


def _alert(state: ContentState, field: str, partial: bool) -> None:
    if not partial:
        _need(state, field, "message", "alert")


def _timer(state: ContentState, field: str, partial: bool) -> None:
    # An elapsed timer (counts_down false) may run open-ended; a countdown needs its length.
    if not partial and state.counts_down is not False and state.duration_seconds is None:
        raise _fail(join(field, "duration_seconds"), "is required for a counting-down timer")


_RULES: Final[dict[str, Callable[[ContentState, str, bool], None]]] = {
    "segmented_progress": _segmented,
    "progress": _progress,
    "metrics": _metrics,
    "stats": _metrics,
    "value": _value,
    "alert": _alert,
    "timer": _timer,
}


def check_content(
    state: ContentState,
    type_: ContentType | None,
    *,
    field: str = "content_state",
    partial: bool = False,
    common: bool = True,
) -> None:
    """Apply the cross-field and per-type rules to `state` shown as `type_`; raise BadRequest.

    `type_` is the effective type (the request's, or the activity's when the request has none);
    None runs only the rules that hold for every type.
    `partial=False` demands every field the type needs; `partial=True` checks only what is
    present (for an update or end whose missing fields keep the activity's previous values).
    Field constraints (lengths, ranges, colors) are not repeated here: `decode` and `validate`
    enforce them; only the title is re-checked because every caller relies on it.
    `common=False` skips the type-independent rules, for a state that passed them already
    (`decode` runs them on every request's state).
    """
    rule = None if type_ is None else _RULES.get(type_)
    if type_ is not None and rule is None:
        raise _fail(join(field, "type"), f"must be one of {', '.join(CONTENT_TYPES)}")
    if common:
        _check_common(state, field)
    if rule is not None:
        rule(state, field, partial)


_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # RFC 3986 §3.1


def check_action(action: Action, field: str) -> None:
    """Check an action's URL: open_url needs a URL with a scheme, webhook an http(s) URL."""
    match = _SCHEME.match(action.url)
    if match is None:
        raise _fail(join(field, "url"), "must be an absolute URL with a scheme")
    if action.type == "webhook" and match[1].lower() not in ("http", "https"):
        raise _fail(join(field, "url"), "a webhook URL must use http or https")


# `type` is put back first; auto_dismiss_* become the push's dismissal-date, not content.
_NOT_CONTENT: Final = ("type", "auto_dismiss_minutes", "auto_dismiss_seconds")
_TIMER_ONLY: Final = ("counts_down", "is_running")


def push_state(
    state: ContentState,
    type_: ContentType,
    action: Action | None = None,
    secondary_action: Action | None = None,
    *,
    defaults: bool = True,
) -> dict[str, Any]:
    """The APNs `content-state` dict for `state` shown as `type_`.

    `type` comes first and is always `type_`; None fields are left out; auto_dismiss_* (which
    become the push's `dismissal-date`) are dropped; counts_down and is_running are kept for
    timers only (the SDK sends them on every request) and default to true there (`timer_defaults`;
    `defaults=False` leaves them out for a caller that completes the state first); actions carry
    title, type and url only. Metadata, tags and webhook method/body never appear.
    """
    fields: dict[str, Any] = msgspec.to_builtins(state)
    for name in _NOT_CONTENT:
        fields.pop(name, None)
    if type_ == "timer":
        if defaults:
            timer_defaults(fields)
    else:
        for name in _TIMER_ONLY:
            fields.pop(name, None)
    out: dict[str, Any] = {"type": type_, **fields}
    if action is not None:
        out["action"] = action.push()
    if secondary_action is not None:
        out["secondary_action"] = secondary_action.push()
    return out


def timer_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    """Give a timer's content-state dict the contract's defaults: counting down, running."""
    fields.setdefault("counts_down", True)
    fields.setdefault("is_running", True)
    return fields
