"""Expected final states of replayed traffic, and the check against the simulated devices."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.replay.check import (
    Expectation,
    check_final,
    expectations,
    pushed_fields,
    recipients,
    resolve_ids,
    summarize,
)
from bench.traffic.format import Call, parse_traffic

API = "/api/live-activity"


def calls(*lines: tuple[str, str, Any] | tuple[str, str, Any, str]) -> tuple[Call, ...]:
    raw = []
    for t, line in enumerate(lines):
        method, path, body, *rest = line
        raw.append(
            json.dumps(
                {
                    "t": t,
                    "method": method,
                    "path": API + path,
                    "body": body,
                    **({"activity_id": rest[0]} if rest else {}),
                }
            )
        )
    return parse_traffic(raw).calls


def seg(title: str = "t", step: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "type": "segmented_progress",
        "number_of_steps": 4,
        "current_step": step,
        **extra,
    }


def only(exps: dict[str, Expectation]) -> Expectation:
    (exp,) = exps.values()
    return exp


# -- expectations ------------------------------------------------------------------------------


def test_stream_put_replaces_and_keeps_type() -> None:
    exp = only(
        expectations(
            calls(
                (
                    "PUT",
                    "/stream/s",
                    {"content_state": seg(step=1, subtitle="x"), "channels": ["ops"]},
                ),
                (
                    "PUT",
                    "/stream/s",
                    {"content_state": {"title": "t", "number_of_steps": 4, "current_step": 2}},
                ),
            )
        )
    )
    assert exp.content == {
        "type": "segmented_progress",
        "title": "t",
        "number_of_steps": 4,
        "current_step": 2,
    }
    assert exp.channels == ("ops",) and not exp.ended and exp.label == "stream s"


def test_stream_end_with_and_without_final_state() -> None:
    ended = calls(
        ("PUT", "/stream/s", {"content_state": seg()}),
        ("DELETE", "/stream/s", {"content_state": seg(step=4, auto_dismiss_minutes=0)}),
    )
    assert only(expectations(ended)).content == pushed_fields(seg(step=4), "segmented_progress")
    assert only(expectations(ended)).ended
    bare = calls(
        ("PUT", "/stream/s", {"content_state": seg(step=2)}),
        ("DELETE", "/stream/s", None),
        ("DELETE", "/stream/s", None),
    )
    assert only(expectations(bare)).content["current_step"] == 2
    assert only(expectations(bare)).last_call == 1  # the second DELETE is ignored


def test_stream_restarts_after_an_end_and_rotates_on_a_type_change() -> None:
    exp = only(
        expectations(
            calls(
                ("PUT", "/stream/s", {"content_state": seg(), "channels": ["a"]}),
                ("DELETE", "/stream/s", None),
                (
                    "PUT",
                    "/stream/s",
                    {
                        "content_state": {"title": "v", "type": "value", "value": 3},
                        "channels": ["b"],
                    },
                ),
                (
                    "PUT",
                    "/stream/s",
                    {
                        "content_state": {"title": "v", "type": "alert", "message": "m"},
                        "channels": ["c"],
                    },
                ),
            )
        )
    )
    assert exp.type == "alert" and not exp.ended and exp.channels == ("c",)


def test_by_id_updates_merge_unless_the_type_changes() -> None:
    merged = expectations(
        calls(
            ("POST", "/start", {"content_state": seg(color="blue")}, "la_1"),
            (
                "POST",
                "/update",
                {"activity_id": "la_1", "content_state": {"title": "t", "current_step": 3}},
            ),
            ("POST", "/end", {"activity_id": "la_1", "content_state": {"title": "done"}}),
        )
    )
    assert merged["activity:la_1"].content == {
        **pushed_fields(seg(color="blue"), "segmented_progress"),
        "current_step": 3,
        "title": "done",
    }
    assert merged["activity:la_1"].ended
    switched = only(
        expectations(
            calls(
                ("POST", "/start", {"content_state": seg(color="blue")}, "la_1"),
                (
                    "POST",
                    "/update",
                    {
                        "activity_id": "la_1",
                        "content_state": {"title": "t", "type": "alert", "message": "m"},
                    },
                ),
            )
        )
    )
    assert switched.content == {"type": "alert", "title": "t", "message": "m"}


def test_updates_of_activities_started_elsewhere_are_not_expected() -> None:
    assert (
        expectations(
            calls(
                ("POST", "/update", {"activity_id": "la_x", "content_state": {"title": "t"}}),
            )
        )
        == {}
    )


@pytest.mark.parametrize(
    ("state", "type_", "expected"),
    [
        (
            {"title": "t", "auto_dismiss_minutes": 0, "subtitle": None},
            "value",
            {"type": "value", "title": "t"},
        ),
        (
            {"title": "t", "counts_down": False},
            "timer",
            {"type": "timer", "title": "t", "counts_down": False, "is_running": True},
        ),
        ({"title": "t", "is_running": False}, "metrics", {"type": "metrics", "title": "t"}),
        (
            {"title": "t", "metrics": [{"label": "a", "value": 1, "unit": None}]},
            "metrics",
            {"type": "metrics", "title": "t", "metrics": [{"label": "a", "value": 1}]},
        ),
    ],
)
def test_pushed_fields(state: dict[str, Any], type_: str, expected: dict[str, Any]) -> None:
    assert pushed_fields(state, type_) == expected


# -- check_final ---------------------------------------------------------------------------------


def device(name: str, *activities: dict[str, Any], channels: tuple[str, ...] = ()) -> Any:
    return {"name": name, "channels": list(channels), "activities": list(activities)}


def activity(aid: str, content: dict[str, Any], state: str = "active") -> dict[str, Any]:
    return {"attributes": {"activity_id": aid}, "content_state": content, "state": state}


EXP = Expectation(
    "stream:s",
    "stream s",
    "value",
    {"type": "value", "title": "t", "value": 5},
    ended=False,
    channels=("ops",),
)


def test_a_matching_device_passes_and_others_are_not_asked() -> None:
    devices = [
        device(
            "p",
            activity("la_9", {"type": "value", "title": "t", "value": 5.0, "extra": 1}),
            channels=("ops",),
        ),
        device("q", channels=("other",)),
    ]
    assert check_final({"stream:s": EXP}, {"stream:s": "la_9"}, devices) == []


@pytest.mark.parametrize(
    ("devices", "detail"),
    [
        ([device("p", channels=("ops",))], "activity la_9 is not shown"),
        (
            [
                device(
                    "p",
                    activity("la_9", {"type": "value", "title": "t", "value": 6}),
                    channels=("ops",),
                )
            ],
            "content_state.value: expected 5, shown 6",
        ),
        (
            [device("p", activity("la_9", {"type": "value", "title": "t"}), channels=("ops",))],
            "content_state.value: missing",
        ),
        (
            [
                device(
                    "p",
                    activity("la_9", {"type": "value", "title": "t", "value": True}),
                    channels=("ops",),
                )
            ],
            "content_state.value: expected 5, shown True",
        ),
        (
            [
                device(
                    "p",
                    activity("la_9", {"type": "value", "title": "t", "value": 5}, "ended"),
                    channels=("ops",),
                )
            ],
            "should be live, is ended",
        ),
        ([device("p", channels=("x",))], "no device subscribes to ['ops']"),
    ],
)
def test_every_difference_is_a_mismatch(devices: list[Any], detail: str) -> None:
    (mismatch,) = check_final({"stream:s": EXP}, {"stream:s": "la_9"}, devices)
    assert detail in mismatch.detail and mismatch.label == "stream s"


def test_ended_expectations_accept_dismissed_and_unresolved_lanes_fail() -> None:
    ended = Expectation("a", "activity a", "value", {"title": "t"}, ended=True)
    devices = [device("p", activity("la_1", {"title": "t"}, "dismissed"))]
    assert check_final({"a": ended}, {"a": "la_1"}, devices) == []
    (missing,) = check_final({"a": ended}, {}, devices)
    assert "never started" in missing.detail


def test_resolve_ids_follows_the_last_answer_of_a_stream() -> None:
    cs = calls(
        ("PUT", "/stream/s", {}),
        ("POST", "/start", {}, "la_old"),
        ("PUT", "/stream/s", {}),
        ("POST", "/update", {"activity_id": "la_old"}),
    )
    got = resolve_ids(zip(cs, ["la_1", "la_2", "la_3", "la_2"], strict=True))
    assert got == {"stream:s": "la_3", "activity:la_old": "la_2"}


def test_recipients() -> None:
    devices = [device("a", channels=("x",)), device("b", channels=("y", "x")), device("c")]
    assert recipients(("x",), devices) == ["a", "b"]
    assert recipients((), devices) == ["a", "b", "c"]


# -- summarize -----------------------------------------------------------------------------------


def test_summarize_nearest_rank() -> None:
    s = summarize(float(v) for v in range(1, 101))
    assert (s.count, s.p50, s.p90, s.p99, s.max) == (100, 50.0, 90.0, 99.0, 100.0)
    assert summarize([]).count == 0


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1))
def test_summarize_is_ordered_and_picks_observed_values(values: list[float]) -> None:
    s = summarize(values)
    assert s.p50 <= s.p90 <= s.p99 <= s.max == max(values)
    assert {s.p50, s.p90, s.p99} <= set(values)
