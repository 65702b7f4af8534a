"""The widget metric contract: the key, the body (the SDK's `MetricValueUpdateRequest`), time."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from activitysmith_openapi import ApiClient
from activitysmith_openapi.models.metric_value_update_request import MetricValueUpdateRequest

from engine.server.contract import errors, models
from engine.server.contract.metrics import (
    FUTURE_SLACK,
    MetricValueRequest,
    check_metric_key,
    check_metric_request,
    measured_at,
)

NOW = 1_800_000_000.0


def decode(body: object) -> MetricValueRequest:
    req = models.decode(MetricValueRequest, msgspec.json.encode(body))
    check_metric_request(req)
    return req


@pytest.mark.parametrize("key", ["revenue", "a", "app.daily-users_2", "x" * 64, "0.9"])
def test_keys_the_sdk_allows(key: str) -> None:
    assert check_metric_key(key) == key


@pytest.mark.parametrize("key", ["", "Revenue", "a b", "x" * 65, "key\n", "é", "a/b"])
def test_other_keys_are_a_400_naming_the_key(key: str) -> None:
    with pytest.raises(errors.BadRequest, match=r"^key: must be 1-64 lowercase") as bad:
        check_metric_key(key)
    assert bad.value.field == "key"


@pytest.mark.parametrize(
    ("value", "kind"), [(12, int), (-3.5, float), (0, int), ("3 of 5", str), ("x" * 64, str)]
)
def test_values_keep_their_type(value: object, kind: type) -> None:
    req = decode({"value": value})
    assert req.value == value and type(req.value) is kind


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "value"),
        ({"value": None}, "value"),
        ({"value": ""}, "value"),
        ({"value": "   "}, "value"),
        ({"value": "x" * 65}, "value"),
        ({"value": True}, "value"),
        ({"value": [1]}, "value"),
        ({"value": 1, "timestamp": "yesterday"}, "timestamp"),
        ({"value": 1, "timestamp": 1700000000}, "timestamp"),
    ],
)
def test_bad_bodies_are_a_400_naming_the_field(body: object, field: str) -> None:
    with pytest.raises(errors.BadRequest) as bad:
        decode(body)
    assert str(bad.value).startswith(field), str(bad.value)


def test_what_the_sdk_sends_decodes() -> None:
    at = dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC)
    for value in (42, 4.25, "green"):
        model = MetricValueUpdateRequest.from_dict({"value": value, "timestamp": at})
        req = decode(ApiClient().sanitize_for_serialization(model))  # the body the SDK sends
        assert req.value == value
        assert measured_at(req, NOW) == at.timestamp()


def test_the_time_defaults_to_now_and_a_naive_one_is_utc() -> None:
    assert measured_at(decode({"value": 1}), NOW) == NOW
    naive = decode({"value": 1, "timestamp": "2027-01-15T08:00:00"})
    offset = decode({"value": 1, "timestamp": "2027-01-15T10:00:00+02:00"})
    assert measured_at(naive, NOW) == measured_at(offset, NOW) == NOW


def test_a_time_far_ahead_of_the_server_is_refused() -> None:
    ahead = dt.datetime.fromtimestamp(NOW + FUTURE_SLACK, dt.UTC)
    assert measured_at(decode({"value": 1, "timestamp": ahead.isoformat()}), NOW) > NOW
    too_far = dt.datetime.fromtimestamp(NOW + FUTURE_SLACK + 1, dt.UTC)
    with pytest.raises(errors.BadRequest, match=r"^timestamp: .* ahead of the server's clock"):
        measured_at(decode({"value": 1, "timestamp": too_far.isoformat()}), NOW)
