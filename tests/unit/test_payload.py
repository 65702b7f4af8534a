"""Live Activity payload bytes, size enforcement and validation (engine.payload, apns.md §5, §6)."""

from __future__ import annotations

import datetime
import enum
import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import payload
from engine.apns.wire import MAX_BROADCAST_PAYLOAD, MAX_DEVICE_PAYLOAD
from engine.payload import (
    Alert,
    EventKind,
    InvalidContent,
    LiveActivityContent,
    LocalizedText,
    PayloadTooLarge,
    TimestampWidthError,
    content_state_sizes,
    default_priority,
    measure,
    prepare,
    remaining_bytes,
)

TS = 1_700_000_000

START = LiveActivityContent(
    EventKind.START,
    {"score": 0},
    alert=Alert("Kick-off", "A vs B", "default"),
    attributes_type="MatchAttributes",
    attributes={"home": "A", "away": "B"},
    input_push_token=True,
)
UPDATE = LiveActivityContent(
    EventKind.UPDATE,
    {"score": 1},
    stale_date=1_700_003_600,
    relevance_score=50.0,
    extra={"matchId": "m-1"},
)
END = LiveActivityContent(EventKind.END, {"score": 3}, dismissal_date=1_700_009_000)

EXACT = [
    (
        START,
        TS,
        (
            b'{"aps":{"timestamp":1700000000,"event":"start","content-state":{"score":0},'
            b'"attributes-type":"MatchAttributes","attributes":{"home":"A","away":"B"},'
            b'"input-push-token":1,"alert":{"title":"Kick-off","body":"A vs B","sound":"default"}}}'
        ),
    ),
    (
        UPDATE,
        TS + 60,
        (
            b'{"aps":{"timestamp":1700000060,"event":"update","content-state":{"score":1},'
            b'"stale-date":1700003600,"relevance-score":50.0},"matchId":"m-1"}'
        ),
    ),
    (
        END,
        TS + 5400,
        (
            b'{"aps":{"timestamp":1700005400,"event":"end","content-state":{"score":3},'
            b'"dismissal-date":1700009000}}'
        ),
    ),
    (
        LiveActivityContent(
            EventKind.UPDATE,
            {},
            alert=Alert(LocalizedText("GOAL", ("A", "1")), LocalizedText("SCORE")),
        ),
        TS,
        (
            b'{"aps":{"timestamp":1700000000,"event":"update","content-state":{},'
            b'"alert":{"title":{"loc-key":"GOAL","loc-args":["A","1"]},'
            b'"body":{"loc-key":"SCORE"}}}}'
        ),
    ),
]


def update(state: dict[str, Any], **kwargs: Any) -> LiveActivityContent:
    return LiveActivityContent(EventKind.UPDATE, state, **kwargs)


def start(state: dict[str, Any], **kwargs: Any) -> LiveActivityContent:
    kwargs.setdefault("alert", Alert("t", "b"))
    kwargs.setdefault("attributes_type", "Attrs")
    kwargs.setdefault("attributes", {"id": 1})
    return LiveActivityContent(EventKind.START, state, **kwargs)


# ------------------------------------------------------------------------------------------------
# Exact bytes and key order


@pytest.mark.parametrize(("content", "ts", "expected"), EXACT)
def test_exact_bytes(content: LiveActivityContent, ts: int, expected: bytes) -> None:
    prepared = prepare(content)
    body = prepared.render(ts)
    assert body == expected
    assert prepared.size == len(expected)
    assert measure(content) == len(expected)


@pytest.mark.parametrize(("content", "ts", "expected"), EXACT[:3])
def test_module_docstring_examples_are_the_real_bytes(
    content: LiveActivityContent, ts: int, expected: bytes
) -> None:
    # The docstring wraps each example across lines; joining the lines must give the real body.
    doc = re.sub(r"\n\s*", "", payload.__doc__ or "")
    assert expected.decode() in doc


def test_aps_key_order_is_stable_and_documented() -> None:
    full_start = start(
        {"b": 1, "a": 2},
        input_push_token=True,
        stale_date=1,
        relevance_score=2.5,
        alert=Alert("t", "b", "s"),
    )
    channel_start = start({}, input_push_channel="Y2hhbm5lbA==")
    full_end = LiveActivityContent(
        EventKind.END, {}, alert=Alert("t", "b"), stale_date=1, relevance_score=1, dismissal_date=2
    )
    keys = [list(json.loads(prepare(c).render(TS))["aps"]) for c in (full_start, full_end)]
    assert keys[0] == [
        "timestamp",
        "event",
        "content-state",
        "attributes-type",
        "attributes",
        "input-push-token",
        "stale-date",
        "relevance-score",
        "alert",
    ]
    assert keys[1] == [
        "timestamp",
        "event",
        "content-state",
        "stale-date",
        "relevance-score",
        "dismissal-date",
        "alert",
    ]
    channel = json.loads(prepare(channel_start).render(TS))["aps"]
    assert list(channel)[5] == "input-push-channel"
    assert channel["input-push-channel"] == "Y2hhbm5lbA=="
    # The caller's content-state key order is kept, not sorted.
    assert b'"content-state":{"b":1,"a":2}' in prepare(full_start).render(TS)


def test_input_push_token_only_when_asked() -> None:
    assert b'"input-push-token":1' in prepare(start({}, input_push_token=True)).render(TS)
    assert b"input-push-token" not in prepare(start({})).render(TS)


def test_custom_keys_go_next_to_aps_in_caller_order() -> None:
    body = prepare(update({"s": 1}, extra={"z": [1, 2], "a": {"n": None}})).render(TS)
    decoded = json.loads(body)
    assert list(decoded) == ["aps", "z", "a"]
    assert "z" not in decoded["aps"]
    assert body.endswith(b'},"z":[1,2],"a":{"n":null}}')


def test_empty_extra_adds_nothing() -> None:
    assert prepare(update({}, extra={})).render(TS) == prepare(update({})).render(TS)


def test_non_ascii_is_counted_in_bytes() -> None:
    prepared = prepare(update({"city": "Zürich ⚽", "q": '"\\'}))
    body = prepared.render(TS)
    assert json.loads(body)["aps"]["content-state"] == {"city": "Zürich ⚽", "q": '"\\'}
    assert prepared.size == len(body)
    assert len(body) > len(body.decode("utf-8"))


def test_prepared_payload_is_detached_from_the_content_dicts() -> None:
    state = {"score": 1}
    prepared = prepare(update(state))
    state["score"] = 2
    assert b'"score":1' in prepared.render(TS)


def test_aps_smuggled_into_extra_after_construction_is_caught_before_splicing() -> None:
    # Validation runs at construction but `prepare` reads the dicts again, so an `aps` key added
    # to `extra` since would replace the real `aps` and move the timestamp the splice relies on.
    content = update({}, extra={"k": 1})
    assert content.extra is not None
    content.extra["aps"] = {"event": "update"}
    with pytest.raises(AssertionError, match="timestamp placeholder"):
        prepare(content)


def test_repr_hides_the_bytes() -> None:
    text = repr(prepare(update({"secret": "pii"})))
    assert "pii" not in text
    assert "size=" in text


# ------------------------------------------------------------------------------------------------
# Size enforcement


def padded(kind: EventKind, total: int) -> LiveActivityContent:
    """A content of `kind` whose encoded body is exactly `total` bytes."""

    def build(pad: int) -> LiveActivityContent:
        state = {"pad": "x" * pad}
        if kind is EventKind.START:
            return start(state)
        return LiveActivityContent(kind, state)

    base = measure(build(0))
    content = build(total - base)
    assert measure(content) == total
    return content


@pytest.mark.parametrize("kind", list(EventKind))
def test_exactly_4096_bytes_is_accepted(kind: EventKind) -> None:
    prepared = prepare(padded(kind, MAX_DEVICE_PAYLOAD))
    assert prepared.size == MAX_DEVICE_PAYLOAD
    assert len(prepared.render(TS)) == MAX_DEVICE_PAYLOAD
    assert remaining_bytes(padded(kind, MAX_DEVICE_PAYLOAD)) == 0


@pytest.mark.parametrize("kind", list(EventKind))
def test_4097_bytes_is_refused_with_a_clear_error(kind: EventKind) -> None:
    content = padded(kind, MAX_DEVICE_PAYLOAD + 1)
    with pytest.raises(PayloadTooLarge) as info:
        prepare(content)
    err = info.value
    assert (err.size, err.limit, err.event) == (4097, 4096, kind)
    assert str(err) == (
        f"{kind.value} payload is 4097 bytes encoded (1 over); "
        "APNs accepts at most 4096 bytes per device push"
    )
    assert isinstance(err, ValueError)
    assert remaining_bytes(content) == -1


def test_custom_limit() -> None:
    content = padded(EventKind.UPDATE, 5000)
    with pytest.raises(PayloadTooLarge):
        prepare(content)
    assert prepare(content, limit=MAX_BROADCAST_PAYLOAD).size == 5000
    with pytest.raises(PayloadTooLarge, match="at most 5120 bytes per broadcast push"):
        prepare(padded(EventKind.UPDATE, 5121), limit=MAX_BROADCAST_PAYLOAD)
    with pytest.raises(PayloadTooLarge, match=r"at most 100 bytes$"):
        prepare(padded(EventKind.UPDATE, 101), limit=100)


# ------------------------------------------------------------------------------------------------
# Validation

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "start without alert",
        {"event": EventKind.START, "alert": None},
        "alert",
        "required on start",
    ),
    (
        "start without attributes type",
        {"event": EventKind.START, "attributes_type": None},
        "attributes_type",
        "required on start",
    ),
    (
        "start without attributes",
        {"event": EventKind.START, "attributes": None},
        "attributes",
        "required on start",
    ),
    (
        "dismissal on update",
        {"dismissal_date": 5},
        "dismissal_date",
        "dismissal_date is only valid on end",
    ),
    (
        "dismissal on start",
        {"event": EventKind.START, "dismissal_date": 5},
        "dismissal_date",
        "end",
    ),
    ("attributes on update", {"attributes": {}}, "attributes", "only valid on start"),
    (
        "attributes type on end",
        {"event": EventKind.END, "attributes_type": "A"},
        "attributes_type",
        "start",
    ),
    ("input token on update", {"input_push_token": True}, "input_push_token", "only valid"),
    ("input token not a bool", {"input_push_token": 1}, "input_push_token", "must be a bool"),
    (
        "empty input channel",
        {"event": EventKind.START, "input_push_channel": ""},
        "input_push_channel",
        "must be a channel id",
    ),
    (
        "input channel on end",
        {"event": EventKind.END, "input_push_channel": "c"},
        "input_push_channel",
        "start",
    ),
    (
        "token and channel",
        {"event": EventKind.START, "input_push_token": True, "input_push_channel": "c"},
        "input_push_channel",
        "exclusive",
    ),
    ("event as str", {"event": "update"}, "event", "EventKind"),
    ("state not a dict", {"content_state": [1]}, "content_state", "dict"),
    ("alert as dict", {"alert": {"title": "t"}}, "alert", "Alert"),
    ("stale date negative", {"stale_date": -1}, "stale_date", "non-negative"),
    ("stale date float", {"stale_date": 1.5}, "stale_date", "integer"),
    ("dismissal date bool", {"event": EventKind.END, "dismissal_date": True}, "dismissal_date", ""),
    ("relevance nan", {"relevance_score": float("nan")}, "relevance_score", "finite"),
    ("relevance bool", {"relevance_score": True}, "relevance_score", "number"),
    ("extra with aps", {"extra": {"aps": {}}}, "extra", "next to it"),
    ("extra not a dict", {"extra": [("k", 1)]}, "extra", "dict of custom top-level keys"),
    ("extra bad value", {"extra": {"k": {1, 2}}}, "extra.k", "set is not JSON-encodable"),
]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [row[1:] for row in INVALID],
    ids=[row[0] for row in INVALID],
)
def test_invalid_content(changes: dict[str, Any], field: str, fragment: str) -> None:
    kwargs: dict[str, Any] = {
        "event": EventKind.UPDATE,
        "content_state": {"s": 1},
    }
    if changes.get("event") is EventKind.START:
        kwargs.update(alert=Alert("t", "b"), attributes_type="A", attributes={})
    kwargs.update(changes)
    with pytest.raises(InvalidContent) as info:
        LiveActivityContent(**kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_alert_required_message_is_exact() -> None:
    with pytest.raises(InvalidContent, match=r"^alert is required on start$"):
        LiveActivityContent(EventKind.START, {}, attributes_type="A", attributes={})


BAD_VALUES: list[tuple[dict[str, Any], str, str]] = [
    ({"a": [1, {"when": datetime.datetime(2024, 1, 1)}]}, "content_state.a[1].when", "datetime"),
    ({"d": datetime.date(2024, 1, 1)}, "content_state.d", "seconds since 2001"),
    ({"x": float("nan")}, "content_state.x", "NaN"),
    ({"x": [float("-inf")]}, "content_state.x[0]", "infinity"),
    ({"x": {1: "one"}}, "content_state.x", "key 1 (int) is not a string"),
    ({"odd key": {"n": 2**64}}, "content_state['odd key'].n", "64 bits"),
    ({"n": -(2**63) - 1}, "content_state.n", "64 bits"),
    ({"b": b"raw"}, "content_state.b", "bytes is not JSON-encodable"),
]


@pytest.mark.parametrize(("state", "path", "fragment"), BAD_VALUES)
def test_unencodable_values_name_their_path(
    state: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(InvalidContent) as info:
        update(state)
    assert info.value.field == path
    assert str(info.value).startswith(path + ": ")
    assert fragment in str(info.value)


def test_bad_attributes_value_is_named() -> None:
    with pytest.raises(InvalidContent) as info:
        start({}, attributes={"since": datetime.datetime(2024, 1, 1)})
    assert info.value.field == "attributes.since"


def test_too_deep_nesting_is_refused() -> None:
    state: dict[str, Any] = {}
    node = state
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(InvalidContent, match="nested more than"):
        update(state)


def test_edge_integers_and_tuples_are_fine() -> None:
    state = {"lo": -(2**63), "hi": 2**64 - 1, "t": (1, "a"), "flag": True, "none": None}
    body = prepare(update(state)).render(TS)
    assert json.loads(body)["aps"]["content-state"] == {
        "lo": -(2**63),
        "hi": 2**64 - 1,
        "t": [1, "a"],
        "flag": True,
        "none": None,
    }


class Side(enum.StrEnum):
    """A str subclass, as content states built from app models often hold."""

    HOME = "home"


class Period(enum.IntEnum):
    """An int subclass."""

    SECOND = 2


def test_str_and_int_subclasses_are_sent_as_their_json_values() -> None:
    # Only exact leaf types are checked inline; subclasses take the full check, which accepts
    # them because they encode as plain JSON strings and numbers.
    state = {"leader": Side.HOME, "period": Period.SECOND, "log": [Side.HOME, Period.SECOND]}
    body = prepare(update(state)).render(TS)
    assert b'"content-state":{"leader":"home","period":2,"log":["home",2]}' in body


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Alert("", LocalizedText("")), "alert.loc-key"),
        (lambda: LocalizedText("k", (1,)), "alert.loc-args"),  # type: ignore[arg-type]
        (lambda: Alert(1, "b"), "alert.title"),  # type: ignore[arg-type]
        (lambda: Alert("t", "b", ""), "alert.sound"),
    ],
)
def test_invalid_alert(make: Any, field: str) -> None:
    with pytest.raises(InvalidContent) as info:
        make()
    assert info.value.field == field


def test_decoding_from_builtins_validates_too() -> None:
    wire = {
        "event": "start",
        "content_state": {"s": 1},
        "alert": {"title": {"loc-key": "K", "loc-args": ["x"]}, "body": "b"},
        "attributes_type": "A",
        "attributes": {},
    }
    content = msgspec.convert(wire, LiveActivityContent)
    assert content.event is EventKind.START
    assert content.alert == Alert(LocalizedText("K", ("x",)), "b")
    del wire["alert"]
    with pytest.raises(msgspec.ValidationError, match="alert is required on start"):
        msgspec.convert(wire, LiveActivityContent)


# ------------------------------------------------------------------------------------------------
# Rendering


@pytest.mark.parametrize(
    "bad", [999_999_999, 10_000_000_000, 0, -1_700_000_000, 1.7e9, True, "1700000000", None]
)
def test_render_refuses_other_widths(bad: Any) -> None:
    prepared = prepare(UPDATE)
    with pytest.raises(TimestampWidthError, match="10 digits"):
        prepared.render(bad)


@pytest.mark.parametrize("ts", [payload.MIN_TIMESTAMP, TS, payload.MAX_TIMESTAMP])
def test_render_accepts_every_10_digit_timestamp(ts: int) -> None:
    prepared = prepare(UPDATE)
    body = prepared.render(ts)
    assert len(body) == prepared.size
    assert json.loads(body)["aps"]["timestamp"] == ts


# ------------------------------------------------------------------------------------------------
# Size helper and priority


def test_content_state_sizes_match_the_real_bodies() -> None:
    state = {"score": 2, "scorer": "Ö. Example"}
    alert = Alert("Goal", "1-1")
    sizes = content_state_sizes(
        state,
        alert=alert,
        attributes_type="MatchAttributes",
        attributes={"home": "A"},
        stale_date=1_700_003_600,
        relevance_score=10.0,
        dismissal_date=1_700_009_000,
    )
    common: dict[str, Any] = {"alert": alert, "stale_date": 1_700_003_600, "relevance_score": 10.0}
    expected = {
        EventKind.START: start(
            state, attributes_type="MatchAttributes", attributes={"home": "A"}, **common
        ),
        EventKind.UPDATE: update(state, **common),
        EventKind.END: LiveActivityContent(
            EventKind.END, state, dismissal_date=1_700_009_000, **common
        ),
    }
    assert sizes == {kind: len(prepare(c).render(TS)) for kind, c in expected.items()}
    assert sizes[EventKind.END] - sizes[EventKind.UPDATE] == len(',"dismissal-date":1700009000') - 3


def test_content_state_sizes_without_start_fields() -> None:
    sizes = content_state_sizes({"s": 1})
    assert set(sizes) == {EventKind.UPDATE, EventKind.END}
    assert sizes[EventKind.UPDATE] == len(prepare(update({"s": 1})).render(TS))
    assert sizes[EventKind.END] == sizes[EventKind.UPDATE] - len("update") + len("end")


def test_content_state_sizes_refuses_unencodable_state() -> None:
    with pytest.raises(InvalidContent, match=r"^content_state\.x: object is not"):
        content_state_sizes({"x": object()})


@pytest.mark.parametrize(
    ("content", "priority"),
    [
        (START, 10),
        (END, 10),
        (UPDATE, 5),
        (update({}, alert=Alert("t", "b")), 10),
        (LiveActivityContent(EventKind.END, {}, alert=Alert("t", "b")), 10),
    ],
)
def test_default_priority(content: LiveActivityContent, priority: int) -> None:
    assert default_priority(content) == priority
    assert prepare(content).priority == priority


# ------------------------------------------------------------------------------------------------
# Properties

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
_STATES = st.dictionaries(st.text(max_size=10), _JSON, max_size=8)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    state=_STATES,
    extra=st.none() | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "aps"), _JSON),
    kind=st.sampled_from(list(EventKind)),
    alert=st.none() | st.builds(Alert, st.text(max_size=10), st.text(max_size=10)),
    ts=st.integers(min_value=payload.MIN_TIMESTAMP, max_value=payload.MAX_TIMESTAMP),
)
def test_render_round_trips_and_size_is_exact(
    state: dict[str, Any],
    extra: dict[str, Any] | None,
    kind: EventKind,
    alert: Alert | None,
    ts: int,
) -> None:
    if kind is EventKind.START:
        content = start(state, alert=alert or Alert("t", "b"), extra=extra)
    else:
        content = LiveActivityContent(kind, state, alert=alert, extra=extra)
    prepared = prepare(content, limit=1 << 30)
    body = prepared.render(ts)
    assert len(body) == prepared.size == measure(content)
    decoded = json.loads(body)
    aps = decoded.pop("aps")
    assert decoded == (extra or {})
    assert aps["timestamp"] == ts
    assert aps["event"] == kind.value
    assert aps["content-state"] == state
    if content.alert is not None:
        assert aps["alert"] == {"title": content.alert.title, "body": content.alert.body}
    else:
        assert "alert" not in aps
