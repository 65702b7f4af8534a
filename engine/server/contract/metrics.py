"""Widget metrics in the HTTP contract: `POST /metrics/{key}/value` and the device-side read.

The request follows the SDK's generated models (`MetricValueUpdateRequest`): `value` is a number
or a string of 1-64 characters, `timestamp` an optional ISO-8601 date-time of when the value was
measured (the server's receive time when left out; a time without a zone is read as UTC). The
key (path parameter) is 1-64 lowercase letters, digits, `.`, `_` and `-`
(`update_metric_value`'s `key` parameter). The answer is `MetricValueUpdateResponse`
(`{success}`) plus Lockstep's own fields saying what was kept; errors are `MetricError`-shaped
(`{error, message}`, 400 for a bad key or body).

The hosted service wants a metric created in its web app before the first value; a self-hosted
server has no web app, so the first value for a key creates the metric.

`DeviceMetrics` is what `GET /api/devices/{device_id}/metrics` answers (a device key): every
metric's current value, for the app's widget extension to render after a `widgets` push.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from engine.server.contract.content import Int64, Model
from engine.server.contract.errors import BadRequest
from engine.server.contract.responses import iso

__all__ = [
    "FUTURE_SLACK",
    "METRIC_KEY_PATTERN",
    "DeviceMetrics",
    "MetricInfo",
    "MetricValueRequest",
    "MetricValueResponse",
    "check_metric_key",
    "check_metric_request",
    "measured_at",
]

METRIC_KEY_PATTERN: Final = "^[a-z0-9._-]{1,64}$"
VALUE_MAX: Final = 64
FUTURE_SLACK: Final = 300.0
"""A measurement time may run at most this far (seconds) ahead of the server's clock: a value
stamped further ahead would hold off every later value until then (an older timestamp never
overwrites a newer one), so it is refused as a mistake (a wrong zone, milliseconds as seconds)."""

_KEY = re.compile(METRIC_KEY_PATTERN[1:-1])

MetricValue = Int64 | float | Annotated[str, Meta(min_length=1, max_length=VALUE_MAX)]
"""A metric's value: a number, or a string of 1-64 characters (kept exactly as sent)."""


class MetricValueRequest(Model, kw_only=True, frozen=True):
    """POST /metrics/{key}/value: the latest value of a widget metric."""

    value: Annotated[MetricValue, Meta(description="A number, or a string of 1-64 characters.")]
    timestamp: Annotated[
        _dt.datetime | None,
        Meta(description="When the value was measured (ISO-8601); default: when it arrives."),
    ] = None


class MetricValueResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Reply to a metric value: `success` (the SDK's field), then what the server now holds."""

    success: bool
    key: str
    value: MetricValue
    timestamp: Annotated[str, Meta(description="When the kept value was measured (ISO-8601).")]
    stored: Annotated[
        bool,
        Meta(description="False when a newer value (a later timestamp) was kept instead."),
    ]
    devices_targeted: Annotated[
        int, Meta(description="Devices with a widget token that will be told to reload.")
    ] = 0
    message: str | None = None


class MetricInfo(msgspec.Struct, kw_only=True):
    """One metric as a widget reads it."""

    key: str
    value: MetricValue
    timestamp: Annotated[str, Meta(description="When the value was measured (ISO-8601).")]
    updated_at: Annotated[str, Meta(description="When the server stored it (ISO-8601).")]


class DeviceMetrics(msgspec.Struct, kw_only=True):
    """GET /devices/{device_id}/metrics: every metric's current value, by key."""

    device_id: str
    metrics: list[MetricInfo]


def check_metric_key(key: str) -> str:
    """Return `key` if it is 1-64 of `a-z 0-9 . _ -`; else raise BadRequest (`key`)."""
    if _KEY.fullmatch(key) is None:  # `$` alone would let "key\n" through
        raise BadRequest(
            f"key: must be 1-64 lowercase letters, digits, '.', '_' or '-', got {key[:80]!r}",
            field="key",
        )
    return key


def check_metric_request(req: MetricValueRequest) -> None:
    """The body rules msgspec cannot declare: a finite number, a non-blank string."""
    value = req.value
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest("value: must be a finite number", field="value")
    if isinstance(value, str) and not value.strip():
        raise BadRequest("value: must not be blank", field="value")


def measured_at(req: MetricValueRequest, now: float) -> float:
    """The request's measurement time in unix seconds (`now` without one); BadRequest when it is
    more than `FUTURE_SLACK` seconds ahead of `now`."""
    if req.timestamp is None:
        return now
    moment = req.timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    try:
        at = moment.timestamp()
    except (OverflowError, ValueError):  # a zone offset pushing year 1 or 9999 out of range
        raise BadRequest("timestamp: is out of range", field="timestamp") from None
    if at > now + FUTURE_SLACK:
        raise BadRequest(
            f"timestamp: {iso(at)} is {at - now:.0f} s ahead of the server's clock "
            f"({iso(now)}); at most {FUTURE_SLACK:.0f} s is accepted",
            field="timestamp",
        )
    return at
