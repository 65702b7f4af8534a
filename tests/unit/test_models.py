"""The HTTP contract's models: decoding, validation errors, SDK compatibility, push state."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import msgspec
import pytest
from activitysmith_openapi import models as sdk
from activitysmith_openapi.models.activity_metric_value import ActivityMetricValue
from activitysmith_openapi.models.live_activity_value import LiveActivityValue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.server.contract import errors, models
from engine.server.contract.errors import BadRequest
from engine.server.contract.models import (
    Action,
    ContentState,
    Metric,
    StartRequest,
    StreamDeleteRequest,
    StreamRequest,
    check_channels,
    check_content,
    check_metadata,
    check_stream_key,
    check_tags,
    decode,
    iso,
    push_state,
    validate,
)

REQUEST_TYPES: list[type[Any]] = [
    models.StreamRequest,
    models.StreamDeleteRequest,
    models.StartRequest,
    models.UpdateRequest,
    models.EndRequest,
    models.DeviceRegistration,
    models.ActivityTokenReport,
]

TOKEN = "ab" * 32


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def state(**fields: Any) -> dict[str, Any]:
    return {"title": "Deploy", **fields}


SEG = state(type="segmented_progress", number_of_steps=3, current_step=1)
PROG = state(type="progress", percentage=40)


# (request type, body, field the error must name)
INVALID: list[tuple[type[Any], bytes, str]] = [
    # segmented_progress
    (StartRequest, body(content_state={**SEG, "current_step": 4}), "content_state.current_step"),
    (StreamRequest, body(content_state={**SEG, "current_step": 4}), "content_state.current_step"),
    (
        StreamRequest,  # no type: the type-independent rule still applies
        body(content_state=state(number_of_steps=2, current_step=3)),
        "content_state.current_step",
    ),
    (StartRequest, body(content_state={**SEG, "current_step": -1}), "content_state.current_step"),
    (
        StartRequest,
        body(content_state={**SEG, "number_of_steps": 0}),
        "content_state.number_of_steps",
    ),
    (
        StartRequest,
        body(content_state=state(type="segmented_progress", current_step=1)),
        "content_state.number_of_steps",
    ),
    (
        StartRequest,
        body(content_state={**SEG, "step_colors": ["red", "red", "red", "red"]}),
        "content_state.step_colors",
    ),
    (
        StartRequest,
        body(content_state={**SEG, "step_colors": ["red", "pink"]}),
        "content_state.step_colors[1]",
    ),
    # colors and enums
    (StartRequest, body(content_state={**SEG, "color": "pink"}), "content_state.color"),
    (StreamRequest, body(content_state=state(step_color="Red")), "content_state.step_color"),
    (StartRequest, body(content_state=state(type="bar")), "content_state.type"),
    (StartRequest, body(content_state=state()), "content_state.type"),
    # metrics / stats
    (
        StartRequest,
        body(
            content_state=state(
                type="metrics", metrics=[{"label": f"m{i}", "value": i} for i in range(9)]
            )
        ),
        "content_state.metrics",
    ),
    (StartRequest, body(content_state=state(type="stats", metrics=[])), "content_state.metrics"),
    (StartRequest, body(content_state=state(type="stats")), "content_state.metrics"),
    (
        StartRequest,
        body(content_state=state(type="metrics", metrics=[{"label": "x", "value": -1}])),
        "content_state.metrics[0].value",
    ),
    (
        StartRequest,
        body(content_state=state(type="metrics", metrics=[{"label": "x", "value": "y" * 65}])),
        "content_state.metrics[0].value",
    ),
    (
        StartRequest,
        body(
            content_state=state(
                type="metrics", metrics=[{"label": "x", "value": 1, "color": "pink"}]
            )
        ),
        "content_state.metrics[0].color",
    ),
    (
        StartRequest,
        body(content_state=state(type="metrics", metrics=[{"value": 1}])),
        "content_state.metrics[0].label",
    ),
    # title and wrong types
    (StartRequest, body(content_state={"type": "alert", "message": "m"}), "content_state.title"),
    (StartRequest, body(content_state={**SEG, "title": ""}), "content_state.title"),
    (StartRequest, body(content_state={**SEG, "title": ""}), "content_state.title"),
    (StartRequest, body(content_state={**SEG, "title": 5}), "content_state.title"),
    (StartRequest, body(), "content_state"),
    (StartRequest, body(content_state="x"), "content_state"),
    (
        StartRequest,
        body(content_state={**SEG, "number_of_steps": "3"}),
        "content_state.number_of_steps",
    ),
    (StartRequest, body(content_state={**SEG, "current_step": 1.5}), "content_state.current_step"),
    (StartRequest, body(content_state={**SEG, "current_step": True}), "content_state.current_step"),
    (StreamRequest, body(content_state=state(counts_down="yes")), "content_state.counts_down"),
    (StreamRequest, body(content_state=state(icon={"color": "red"})), "content_state.icon.symbol"),
    (StreamRequest, body(content_state=state(badge={"title": ""})), "content_state.badge.title"),
    # progress
    (StartRequest, body(content_state={**PROG, "percentage": 101}), "content_state.percentage"),
    (StartRequest, body(content_state={**PROG, "percentage": -0.5}), "content_state.percentage"),
    (StartRequest, body(content_state=state(type="progress")), "content_state.percentage"),
    (StartRequest, body(content_state=state(type="progress", value=3)), "content_state.percentage"),
    (
        StartRequest,
        body(content_state=state(type="progress", value=11, upper_limit=10)),
        "content_state.value",
    ),
    (
        StartRequest,
        body(content_state=state(type="progress", value="3", upper_limit=10)),
        "content_state.value",
    ),
    (
        StartRequest,
        body(content_state=state(type="progress", value=0, upper_limit=0)),
        "content_state.upper_limit",
    ),
    (
        models.UpdateRequest,  # partial, but a present value must still fit
        body(activity_id="a", content_state=state(type="progress", value=11, upper_limit=10)),
        "content_state.value",
    ),
    # value, alert, timer
    (StartRequest, body(content_state=state(type="value")), "content_state.value"),
    (StartRequest, body(content_state=state(type="value", value=[1])), "content_state.value"),
    (StartRequest, body(content_state=state(type="value", value=2**63)), "content_state.value"),
    (
        StartRequest,
        body(content_state=state(type="stats", metrics=[{"label": "x", "value": 2**63}])),
        "content_state.metrics[0].value",
    ),
    (StartRequest, body(content_state=state(type="value", value=[1])), "content_state.value"),
    (StartRequest, body(content_state=state(type="alert", message="")), "content_state.message"),
    (StreamRequest, body(content_state=state(type="alert", message="")), "content_state.message"),
    (StartRequest, body(content_state=state(type="alert")), "content_state.message"),
    (StartRequest, body(content_state=state(type="timer")), "content_state.duration_seconds"),
    (
        StartRequest,
        body(content_state=state(type="timer", duration_seconds=-1)),
        "content_state.duration_seconds",
    ),
    (
        models.EndRequest,
        body(activity_id="a", content_state=state(auto_dismiss_minutes=-1)),
        "content_state.auto_dismiss_minutes",
    ),
    (
        StreamDeleteRequest,
        body(content_state=state(auto_dismiss_seconds=1.5)),
        "content_state.auto_dismiss_seconds",
    ),
    (StreamDeleteRequest, body(content_state={"type": "alert"}), "content_state.title"),
    # actions and alert
    (
        StreamRequest,
        body(content_state=state(), action={"title": "Go", "type": "call", "url": "https://x"}),
        "action.type",
    ),
    (
        StreamRequest,
        body(content_state=state(), action={"title": "Go", "type": "open_url"}),
        "action.url",
    ),
    (
        StreamRequest,
        body(content_state=state(), action={"title": "Go", "type": "open_url", "url": "nowhere"}),
        "action.url",
    ),
    (
        StartRequest,
        body(content_state=PROG, action={"title": "Go", "type": "webhook", "url": "ftp://h/x"}),
        "action.url",
    ),
    (
        StartRequest,
        body(
            content_state=PROG,
            secondary_action={
                "title": "Go",
                "type": "webhook",
                "url": "https://h",
                "method": "PUT",
            },
        ),
        "secondary_action.method",
    ),
    (StartRequest, body(content_state=PROG, alert={"title": 1}), "alert.title"),
    # channels and targets
    (StreamRequest, body(content_state=state(), channels=["Ops"]), "channels[0]"),
    (StreamRequest, body(content_state=state(), channels=["ops\n"]), "channels[0]"),
    (StreamRequest, body(content_state=state(), channels=[]), "channels"),
    (StreamRequest, body(content_state=state(), target={"channels": []}), "target.channels"),
    (
        StreamRequest,
        body(content_state=state(), channels=["a"], target={"channels": ["b"]}),
        "target.channels",
    ),
    (StartRequest, body(content_state=PROG, target={"channels": ["-x"]}), "target.channels[0]"),
    # metadata and tags
    (
        StartRequest,
        body(content_state=PROG, metadata={f"k{i}": i for i in range(51)}),
        "metadata",
    ),
    (
        StartRequest,
        body(content_state=PROG, metadata={f"k{i}": "x" * 4000 for i in range(5)}),
        "metadata",
    ),
    (StartRequest, body(content_state=PROG, metadata={"k": "x" * 4001}), "metadata[...]"),
    (StartRequest, body(content_state=PROG, metadata={"k": {"nested": 1}}), "metadata[...]"),
    (StartRequest, body(content_state=PROG, metadata={"k": None}), "metadata[...]"),
    (StartRequest, body(content_state=PROG, metadata={"": 1}), "metadata"),
    (StartRequest, body(content_state=PROG, metadata={"k": -(2**63) - 1}), "metadata[...]"),
    (StartRequest, body(content_state=PROG, metadata=[1]), "metadata"),
    (StartRequest, body(content_state=PROG, tags=["t" * 65]), "tags[0]"),
    (StartRequest, body(content_state=PROG, tags=[""]), "tags[0]"),
    (StartRequest, body(content_state=PROG, tags=[f"t{i}" for i in range(21)]), "tags"),
    (StartRequest, body(content_state=PROG, tags="t"), "tags"),
    # update / end ids
    (models.UpdateRequest, body(content_state=state()), "activity_id"),
    (models.EndRequest, body(activity_id="", content_state=state()), "activity_id"),
    (models.UpdateRequest, body(activity_id="a"), "content_state"),
    # whole body
    (StartRequest, b"{", "body"),
    (StartRequest, b'{"content_state": {"title": "t",}}', "body"),
    (StartRequest, b"\xff\xfe", "body"),
    (StartRequest, b'{"content_state": {"title": "\xed\xa0\x80"}}', "body"),  # not UTF-8
    (StartRequest, b"", "body"),
    (StartRequest, b"   ", "body"),
    (StartRequest, b"[]", "body"),
    (StartRequest, b"null", "body"),
    (StartRequest, b'{"content_state": {"title": "\\ud800"}}', "body"),
    (
        StartRequest,
        b'{"action": {"title": "a", "type": "webhook", "url": "https://h", "body": {"x": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}}}",
        "body",
    ),
    # device API
    (models.DeviceRegistration, body(push_to_start_token="xyz" * 10), "push_to_start_token"),
    (models.DeviceRegistration, body(push_to_start_token="ab"), "push_to_start_token"),
    (models.DeviceRegistration, body(push_to_start_token="ab" * 101), "push_to_start_token"),
    (models.DeviceRegistration, body(push_to_start_token=TOKEN + "\n"), "push_to_start_token"),
    (models.DeviceRegistration, body(push_to_start_token=TOKEN, channels=["A"]), "channels[0]"),
    (models.DeviceRegistration, body(name="phone"), "push_to_start_token"),
    (models.ActivityTokenReport, body(activity_id="a", activity_token=TOKEN), "device_id"),
    (
        models.ActivityTokenReport,
        body(device_id="d", activity_id="a", activity_token="not-hex-not-hex-not-hex"),
        "activity_token",
    ),
]


@pytest.mark.parametrize(("type_", "raw", "field"), INVALID)
def test_invalid_body_names_the_field(type_: type[Any], raw: bytes, field: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode(type_, raw)
    exc = info.value
    assert exc.field == field, exc.message
    assert exc.message.startswith(f"{field}: ")
    assert exc.status == 400
    assert exc.body() == {"error": "bad_request", "message": exc.message}


VALID: list[tuple[type[Any], bytes]] = [
    (StartRequest, body(content_state=SEG)),
    (StartRequest, body(content_state=state(type="progress", value=3, upper_limit=10))),
    (StartRequest, body(content_state=state(type="progress", value=10, upper_limit=10))),
    (StartRequest, body(content_state=state(type="value", value=""))),
    (StartRequest, body(content_state=state(type="value", value=-3.5))),
    (StartRequest, body(content_state=state(type="timer", counts_down=False))),
    (
        StartRequest,
        body(
            content_state=state(type="alert", message="m"),
            channels=["ops"],
            target={"channels": ["ops"]},
        ),
    ),
    # partial requests: what is missing is kept from the activity
    (StreamRequest, body(content_state=state(type="segmented_progress", current_step=9))),
    (StreamRequest, body(content_state=state(type="timer", is_running=False))),
    (models.UpdateRequest, body(activity_id="a", content_state=state(type="progress", value=4))),
    (models.EndRequest, body(activity_id="a", content_state=state(auto_dismiss_minutes=0))),
    (StreamDeleteRequest, b""),
    (StreamDeleteRequest, b"{}"),
    # newer SDKs may send fields this server does not know yet
    (StreamRequest, body(content_state=state(sparkle=True), future={"x": 1})),
    (models.DeviceRegistration, body(push_to_start_token=TOKEN.upper())),
]


@pytest.mark.parametrize(("type_", "raw"), VALID)
def test_valid_bodies_decode(type_: type[Any], raw: bytes) -> None:
    assert isinstance(decode(type_, raw), type_)


def test_empty_delete_body_is_an_empty_request() -> None:
    assert decode(StreamDeleteRequest, b" \n") == StreamDeleteRequest()


# --- the official SDK's bodies decode ---------------------------------------------------------

WEBHOOK = sdk.LiveActivityAction(
    title="Retry",
    type="webhook",
    url="https://ci.example/retry",
    method="POST",
    body={"job": 17, "nested": {"a": [1, 2]}},
)
OPEN = sdk.LiveActivityAction(title="Open", type="open_url", url="shortcuts://run-shortcut?name=x")

SDK_STATES: dict[str, dict[str, Any]] = {
    "segmented_progress": dict(
        number_of_steps=4,
        current_step=2,
        step_color="blue",
        step_colors=["green", "green"],
        color="lime",
    ),
    "progress": dict(value=LiveActivityValue(3), upper_limit=10, color="cyan"),
    "metrics": dict(
        metrics=[
            sdk.ActivityMetric(label="CPU", value=ActivityMetricValue(12.5), unit="%", color="red"),
            sdk.ActivityMetric(label="State", value=ActivityMetricValue("ok")),
        ]
    ),
    "stats": dict(
        metrics=[sdk.ActivityMetric(label=f"s{i}", value=ActivityMetricValue(i)) for i in range(8)]
    ),
    "value": dict(
        value=LiveActivityValue("$1,200"),
        badge=sdk.LiveActivityAlertBadge(title="LIVE", color="red"),
    ),
    "alert": dict(
        message="Deploy failed",
        icon=sdk.LiveActivityAlertIcon(symbol="exclamationmark.triangle", color="orange"),
    ),
    "timer": dict(duration_seconds=300, counts_down=True, is_running=False),
}


@pytest.mark.parametrize("kind", sorted(SDK_STATES))
def test_sdk_bodies_round_trip(kind: str) -> None:
    fields = SDK_STATES[kind]
    extras: dict[str, Any] = dict(
        action=WEBHOOK,
        secondary_action=OPEN,
        metadata={"build": sdk.MetadataValue(17), "ok": sdk.MetadataValue(True)},
        tags=["ci", "deploy"],
    )
    requests: list[tuple[type[Any], Any]] = [
        (
            StreamRequest,
            sdk.LiveActivityStreamRequest(
                content_state=sdk.StreamContentState(
                    title="Build", subtitle="main", type=kind, **fields
                ),
                channels=["ops"],
                alert=sdk.AlertPayload(title="t", body="b"),
                **extras,
            ),
        ),
        (
            StartRequest,
            sdk.LiveActivityStartRequest(
                content_state=sdk.ContentStateStart(title="Build", type=kind, **fields),
                target=sdk.ChannelTarget(channels=["ops", "dev"]),
                **extras,
            ),
        ),
        (
            models.UpdateRequest,
            sdk.LiveActivityUpdateRequest(
                activity_id="act-1",
                content_state=sdk.ContentStateUpdate(title="Build", **fields),
                **extras,
            ),
        ),
        (
            models.EndRequest,
            sdk.LiveActivityEndRequest(
                activity_id="act-1",
                content_state=sdk.ContentStateEnd(title="Build", type=kind, **fields),
                **extras,
            ),
        ),
        (
            StreamDeleteRequest,
            sdk.LiveActivityStreamDeleteRequest(
                content_state=sdk.StreamContentState(
                    title="Build", type=kind, auto_dismiss_seconds=5, **fields
                ),
                **extras,
            ),
        ),
    ]
    for type_, request in requests:
        sent = request.to_json().encode()
        decoded = decode(type_, sent)
        # Nothing lost, nothing invented: re-encoding gives back exactly what the SDK sent.
        assert msgspec.to_builtins(decoded) == json.loads(sent), type_
        if decoded.content_state.type is not None:
            check_content(decoded.content_state, decoded.content_state.type)


def test_sdk_empty_delete_request() -> None:
    sent = sdk.LiveActivityStreamDeleteRequest().to_json().encode()
    assert decode(StreamDeleteRequest, sent) == StreamDeleteRequest()


def test_requested_channels() -> None:
    assert decode(
        StreamRequest, body(content_state=state(), channels=["a"])
    ).requested_channels() == ["a"]
    start = decode(StartRequest, body(content_state=PROG, target={"channels": ["b"]}))
    assert start.requested_channels() == ["b"]
    assert decode(StartRequest, body(content_state=PROG)).requested_channels() is None


# --- check_content: full vs partial -----------------------------------------------------------

PARTIAL_OK = [
    ("segmented_progress", ContentState(title="t", current_step=3)),
    ("progress", ContentState(title="t", value=3)),
    ("metrics", ContentState(title="t")),
    ("value", ContentState(title="t")),
    ("alert", ContentState(title="t")),
    ("timer", ContentState(title="t", is_running=False)),
]


@pytest.mark.parametrize(("kind", "content"), PARTIAL_OK)
def test_partial_allows_missing_fields_full_does_not(kind: Any, content: ContentState) -> None:
    check_content(content, kind, partial=True)
    with pytest.raises(BadRequest):
        check_content(content, kind)


def test_check_content_custom_field_and_unknown_type() -> None:
    with pytest.raises(BadRequest) as info:
        check_content(ContentState(title="t"), "alert", field="state")
    assert info.value.field == "state.message"
    with pytest.raises(BadRequest) as info:
        check_content(ContentState(title="t"), "bar")  # type: ignore[arg-type]
    assert info.value.field == "content_state.type"


def test_as_content_type() -> None:
    assert models.as_content_type("timer") == "timer"
    with pytest.raises(BadRequest) as info:
        models.as_content_type("clock", "type")
    assert info.value.field == "type"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_python_built_states_must_be_finite(bad: float) -> None:
    with pytest.raises(BadRequest) as info:
        check_content(ContentState(title="t", percentage=bad), "progress")
    assert info.value.field == "content_state.percentage"
    metric = Metric(label="x", value=bad)
    with pytest.raises(BadRequest) as info:
        check_content(ContentState(title="t", metrics=[metric]), "metrics")
    assert info.value.field == "content_state.metrics[0].value"


def test_validate_rechecks_python_built_objects() -> None:
    good = StartRequest(content_state=ContentState(title="t", type="value", value=1))
    assert validate(good) == good
    with pytest.raises(BadRequest) as info:
        validate(
            StartRequest(
                content_state=ContentState(
                    title="t",
                    type="value",
                    value=1,
                    color="pink",  # type: ignore[arg-type]
                )
            )
        )
    assert info.value.field == "content_state.color"
    with pytest.raises(BadRequest) as info:
        validate(StartRequest(content_state=ContentState(title="t", type="value")))
    assert info.value.field == "content_state.value"


# --- the standalone checks --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "A-b_9", "x" * 255, "build-42"])
def test_stream_key_ok(key: str) -> None:
    assert check_stream_key(key) == key


@pytest.mark.parametrize("key", ["", "a b", "a/b", "x" * 256, "ключ", "a\n", "a.b", "%2e"])
def test_stream_key_bad(key: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_stream_key(key)
    assert info.value.field == "stream_key"


@pytest.mark.parametrize(
    ("channels", "min_items", "field"),
    [
        (["Ops"], 0, "ch[0]"),
        (["ok", "_x"], 0, "ch[1]"),
        (["a" * 65], 0, "ch[0]"),
        ([], 1, "ch"),
        ([f"c{i}" for i in range(101)], 0, "ch"),
    ],
)
def test_check_channels_bad(channels: list[str], min_items: int, field: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_channels(channels, "ch", min_items=min_items)
    assert info.value.field == field


def test_check_channels_ok() -> None:
    check_channels([], "channels")
    check_channels(["ops", "a" * 64, "0-team_b"], "channels", min_items=1)


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"k": math.nan}, "metadata.k"),
        ({"k": {"x": 1}}, "metadata.k"),
        ({"k": None}, "metadata.k"),
        ({"k": 2**64}, "metadata.k"),
        ({"k": "x" * 4001}, "metadata.k"),
        ({"": 1}, "metadata"),
        ({f"k{i}": 1 for i in range(51)}, "metadata"),
        ({f"k{i}": "é" * 2000 for i in range(5)}, "metadata"),  # 20 KB of UTF-8
    ],
)
def test_check_metadata_bad(metadata: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_metadata(metadata)
    assert info.value.field == field


def test_check_metadata_and_tags_ok() -> None:
    check_metadata({"a": 1, "b": 1.5, "c": True, "d": "x" * 4000})
    check_metadata({})
    check_tags([])
    check_tags(["t" * 64] * 20)


@pytest.mark.parametrize(
    ("tags", "field"), [([""], "tags[0]"), (["a", "b" * 65], "tags[1]"), (["t"] * 21, "tags")]
)
def test_check_tags_bad(tags: list[str], field: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_tags(tags)
    assert info.value.field == field


# --- push_state -------------------------------------------------------------------------------


def test_push_state_drops_server_only_data() -> None:
    raw = body(
        content_state=state(
            type="alert",
            message="m",
            auto_dismiss_minutes=5,
            auto_dismiss_seconds=9,
            counts_down=True,
            is_running=True,
        ),
        action={
            "title": "Retry",
            "type": "webhook",
            "url": "https://h/r",
            "method": "POST",
            "body": {"secret": "s3"},
        },
        secondary_action={
            "title": "Open",
            "type": "open_url",
            "url": "https://h",
            "method": "POST",
        },
        metadata={"owner": "ops"},
        tags=["t"],
    )
    req = decode(StreamDeleteRequest, raw)
    assert req.content_state is not None
    pushed = push_state(req.content_state, "alert", req.action, req.secondary_action)
    assert pushed == {
        "type": "alert",
        "title": "Deploy",
        "message": "m",
        "action": {"title": "Retry", "type": "webhook", "url": "https://h/r"},
        "secondary_action": {"title": "Open", "type": "open_url", "url": "https://h"},
    }
    assert next(iter(pushed)) == "type"
    encoded = msgspec.json.encode(pushed)
    for secret in (b"s3", b"owner", b"POST", b"auto_dismiss", b"counts_down"):
        assert secret not in encoded


def test_push_state_fills_type_and_timer_defaults() -> None:
    timer = ContentState(title="t", type="progress", duration_seconds=60)
    assert push_state(timer, "timer") == {
        "type": "timer",
        "title": "t",
        "duration_seconds": 60,
        "counts_down": True,
        "is_running": True,
    }
    paused = ContentState(title="t", is_running=False, counts_down=False)
    assert push_state(paused, "timer")["is_running"] is False
    assert push_state(paused, "timer")["counts_down"] is False
    metrics = ContentState(title="t", metrics=[Metric(label="a", value="1", unit=None)])
    assert push_state(metrics, "stats") == {
        "type": "stats",
        "title": "t",
        "metrics": [{"label": "a", "value": "1"}],
    }


def test_action_push_form() -> None:
    action = Action(title="a", type="webhook", url="https://h", method="GET", body={"x": 1})
    assert action.push() == {"title": "a", "type": "webhook", "url": "https://h"}


# --- responses and errors as the SDK reads them -----------------------------------------------

RESPONSES: list[tuple[Any, Any]] = [
    (
        models.StreamPutResponse(
            success=True,
            operation="rotated",
            stream_key="k",
            activity_id="b",
            previous_activity_id="a",
            devices_notified=2,
            timestamp=iso(0),
        ),
        sdk.LiveActivityStreamPutResponse,
    ),
    (
        models.StreamDeleteResponse(
            success=True, operation="ended", stream_key="k", ignored=True, timestamp=iso(0)
        ),
        sdk.LiveActivityStreamDeleteResponse,
    ),
    (
        models.StartResponse(
            success=True,
            activity_id="a",
            devices_notified=0,
            timestamp=iso(0),
            errors=["d1: BadDeviceToken"],
        ),
        sdk.LiveActivityStartResponse,
    ),
    (
        models.UpdateResponse(success=True, activity_id="a", devices_queued=3, timestamp=iso(0)),
        sdk.LiveActivityUpdateResponse,
    ),
    (
        models.EndResponse(success=True, activity_id="a", ignored=False, timestamp=iso(0)),
        sdk.LiveActivityEndResponse,
    ),
]


@pytest.mark.parametrize(("response", "sdk_model"), RESPONSES)
def test_responses_parse_with_the_sdk(response: Any, sdk_model: Any) -> None:
    encoded = msgspec.json.encode(response)
    assert b"null" not in encoded  # None fields are left out
    parsed = sdk_model.from_json(encoded.decode())
    assert parsed.success is True
    assert parsed.timestamp.isoformat() == "1970-01-01T00:00:00+00:00"
    sent = {k for k, v in parsed.to_dict().items() if v is not None}
    assert sent == json.loads(encoded).keys()


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_700_000_000.25, "2023-11-14T22:13:20.250Z"),
        (1_700_000_000.9999, "2023-11-14T22:13:20.999Z"),
    ],
)
def test_iso(ts: float, text: str) -> None:
    assert iso(ts) == text


ERRORS: list[tuple[errors.ApiError, int, dict[str, Any]]] = [
    (errors.BadRequest("x: bad", field="x"), 400, {"error": "bad_request", "message": "x: bad"}),
    (errors.Unauthorized("no key"), 401, {"error": "unauthorized", "message": "no key"}),
    (errors.Forbidden("nope"), 403, {"error": "forbidden", "message": "nope"}),
    (errors.NotFound("gone"), 404, {"error": "not_found", "message": "gone"}),
    (
        errors.NoRecipients("none", effective_channel_slugs=("ops",)),
        422,
        {"error": "no_recipients", "message": "none", "effective_channel_slugs": ["ops"]},
    ),
    (
        errors.TooLarge("big", size=5000, limit=4096),
        413,
        {"error": "payload_too_large", "message": "big", "size": 5000, "limit": 4096},
    ),
    (
        errors.RateLimited("slow", retry_after=2),
        429,
        {"error": "rate_limited", "message": "slow", "code": "rate_limited"},
    ),
    (
        errors.ActivityLimit("full", limit=5, active=5, targeted_devices=3),
        429,
        {
            "error": "live_activity_limit",
            "message": "full",
            "limit": 5,
            "active": 5,
            "targeted_devices": 3,
        },
    ),
    (errors.Unavailable("busy"), 503, {"error": "unavailable", "message": "busy"}),
    (
        errors.ApiError(409, "activity_ended", "ended", activity_id="a"),
        409,
        {"error": "activity_ended", "message": "ended", "activity_id": "a"},
    ),
]


@pytest.mark.parametrize(("exc", "status", "reply"), ERRORS)
def test_error_bodies(exc: errors.ApiError, status: int, reply: dict[str, Any]) -> None:
    assert exc.status == status
    assert exc.body() == reply
    assert str(exc) == exc.message


def test_error_bodies_parse_with_the_sdk() -> None:
    assert sdk.RateLimitError.from_dict(errors.RateLimited("s").body()).code == "rate_limited"
    no = sdk.NoRecipientsError.from_dict(
        errors.NoRecipients("n", effective_channel_slugs=[]).body()
    )
    assert no.effective_channel_slugs == []
    limit = sdk.LiveActivityLimitError.from_dict(
        errors.ActivityLimit("l", limit=1, active=2).body()
    )
    assert (limit.limit, limit.active) == (1, 2)


def test_api_error_rejects_a_mixed_signature() -> None:
    with pytest.raises(TypeError):
        errors.ApiError(400, "only two")  # type: ignore[call-overload]


# --- decode never fails with anything but BadRequest ------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=20), inner, max_size=10)
    ),
    max_leaves=40,
)

BASES: dict[type[Any], dict[str, Any]] = {
    StreamRequest: {
        "content_state": {**SEG, "metrics": [{"label": "a", "value": 1}]},
        "channels": ["ops"],
        "target": {"channels": ["ops"]},
        "action": {"title": "a", "type": "webhook", "url": "https://h"},
        "metadata": {"k": 1},
        "tags": ["t"],
    },
    StreamDeleteRequest: {"content_state": {**PROG, "auto_dismiss_seconds": 1}},
    StartRequest: {
        "content_state": {**PROG, "icon": {"symbol": "x"}},
        "alert": {"title": "a"},
        "secondary_action": {"title": "b", "type": "open_url", "url": "https://h"},
    },
    models.UpdateRequest: {
        "activity_id": "a",
        "content_state": state(type="timer", duration_seconds=5),
    },
    models.EndRequest: {"activity_id": "a", "content_state": state(auto_dismiss_minutes=1)},
    models.DeviceRegistration: {"push_to_start_token": TOKEN, "channels": ["a"], "name": "n"},
    models.ActivityTokenReport: {"device_id": "d", "activity_id": "a", "activity_token": TOKEN},
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(value)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return out


def _decodes_or_bad_request(type_: type[Any], raw: bytes) -> None:
    try:
        decoded = decode(type_, raw)
    except BadRequest as exc:
        assert exc.field
        assert exc.message.startswith(f"{exc.field}: ")
        return
    assert isinstance(decoded, type_)
    # Whatever is accepted can be pushed: its push state encodes as JSON.
    content = getattr(decoded, "content_state", None)
    if content is not None:
        pushed = push_state(
            content, content.type or "value", decoded.action, decoded.secondary_action
        )
        assert json.loads(msgspec.json.encode(pushed)) == pushed


FUZZ = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(type_=st.sampled_from(REQUEST_TYPES), raw=st.binary(max_size=200))
def test_decode_arbitrary_bytes(type_: type[Any], raw: bytes) -> None:
    _decodes_or_bad_request(type_, raw)


@FUZZ
@given(type_=st.sampled_from(REQUEST_TYPES), value=JSON)
def test_decode_arbitrary_json(type_: type[Any], value: Any) -> None:
    _decodes_or_bad_request(type_, json.dumps(value).encode())


@FUZZ
@given(data=st.data(), type_=st.sampled_from(REQUEST_TYPES), new=JSON)
def test_decode_mutated_valid_bodies(data: st.DataObject, type_: type[Any], new: Any) -> None:
    base = BASES[type_]
    decode(type_, json.dumps(base).encode())  # the unmutated base is valid
    path = data.draw(st.sampled_from(_paths(base)))
    _decodes_or_bad_request(type_, json.dumps(_replace(base, path, new)).encode())


def test_schema_components_describe_the_contract() -> None:
    types = [
        *REQUEST_TYPES,
        *(type(r) for r, _ in RESPONSES),
        models.DeviceInfo,
        models.ActivityTokenAccepted,
        models.ErrorBody,
    ]
    _, components = msgspec.json.schema_components(types, ref_template="#/components/{name}")
    content = components["ContentState"]
    assert content["required"] == ["title"]
    assert "description" in content["properties"]["current_step"]
    assert content["properties"]["color"]["anyOf"][0]["enum"] == sorted(models.COLORS)
    assert "StreamPutResponse" in components and "ErrorBody" in components


# -- only the SDK models' limits ---------------------------------------------------------------


def test_text_has_no_length_rule_the_sdk_does_not_have() -> None:
    long_url = "https://example.com/" + "p" * 3000
    raw = body(
        content_state=state(
            type="alert",
            title="T" * 5000,
            subtitle="S" * 5000,
            message="m" * 5000,
            icon={"symbol": "s" * 500},
            badge={"title": "b" * 500},
        ),
        action={"title": "a" * 500, "type": "open_url", "url": long_url},
        alert={"title": "t" * 5000, "body": "b" * 5000},
    )
    req = models.decode(StartRequest, raw)
    assert req.content_state.message == "m" * 5000  # the APNs size check decides (413)
    metrics = [{"label": "L" * 500, "value": 1, "unit": "u" * 500}]
    models.decode(StartRequest, body(content_state=state(type="metrics", metrics=metrics)))


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            body(content_state=state(type="metrics", metrics=[{"label": "x", "value": "v" * 65}])),
            "metrics[0].value",
        ),
        (body(content_state=SEG, tags=["t" * 65]), "tags[0]"),
        (body(content_state=SEG, tags=["t"] * 21), "tags"),
        (body(content_state=SEG, metadata={"k": "v" * 4001}), "metadata"),
    ],
)
def test_the_sdk_models_limits_stay(raw: bytes, field: str) -> None:
    with pytest.raises(BadRequest, match=field.replace("[", r"\[").replace("]", r"\]")):
        models.decode(StartRequest, raw)


def test_an_unknown_activity_id_of_any_length_decodes() -> None:
    raw = msgspec.json.encode({"activity_id": "x" * 1000, "content_state": {"title": "t"}})
    assert models.decode(models.UpdateRequest, raw).activity_id == "x" * 1000  # then 404


def test_a_nul_in_any_string_is_a_400_naming_it() -> None:
    state = {"title": "a\x00b", "type": "value", "value": 1}
    with pytest.raises(errors.BadRequest, match="U\\+0000"):
        models.decode(models.StreamRequest, json.dumps({"content_state": state}).encode())
    key = {"content_state": {"title": "t", "type": "value", "value": 1}, "metadata": {"k\x00": 1}}
    with pytest.raises(errors.BadRequest, match="U\\+0000"):
        models.decode(models.StreamRequest, json.dumps(key).encode())
    # The six characters \u0000 written as text are no NUL.
    literal = {"title": "see \\u0000", "type": "value", "value": 1}
    req = models.decode(models.StreamRequest, json.dumps({"content_state": literal}).encode())
    assert req.content_state.title == "see \\u0000"
