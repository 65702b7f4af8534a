"""`contract.carry`: what a partial stream call or update keeps from the last accepted state."""

from __future__ import annotations

from typing import Any

import pytest

from engine.server.contract.carry import carry_all, carry_needed, may_carry

TIMER = {"type": "timer", "title": "Pizza", "duration_seconds": 600.0, "counts_down": True}
SEG = {"type": "segmented_progress", "title": "Deploy", "number_of_steps": 5, "current_step": 2}
BAR = {"type": "progress", "title": "Copy", "value": 30, "upper_limit": 120}


@pytest.mark.parametrize(
    ("state", "previous", "type_", "expected"),
    [
        # A paused countdown keeps its window.
        (
            {"title": "Pizza", "is_running": False},
            TIMER,
            "timer",
            {"title": "Pizza", "is_running": False, "duration_seconds": 600.0},
        ),
        # A new window wins.
        (
            {"title": "P", "duration_seconds": 60},
            TIMER,
            "timer",
            {"title": "P", "duration_seconds": 60},
        ),
        # An elapsed timer may be open-ended: nothing is added.
        (
            {"title": "Up", "counts_down": False},
            TIMER,
            "timer",
            {"title": "Up", "counts_down": False},
        ),
        # An end with only the step keeps the number of steps.
        (
            {"title": "Done", "current_step": 5},
            SEG,
            "segmented_progress",
            {"title": "Done", "current_step": 5, "number_of_steps": 5},
        ),
        # Both missing: both kept.
        (
            {"title": "Done"},
            SEG,
            "segmented_progress",
            {"title": "Done", "number_of_steps": 5, "current_step": 2},
        ),
        # A progress without any bar keeps the previous bar; one with a value keeps the limit.
        ({"title": "Copy"}, BAR, "progress", {"title": "Copy", "value": 30, "upper_limit": 120}),
        (
            {"title": "Copy", "value": 60},
            BAR,
            "progress",
            {"title": "Copy", "value": 60, "upper_limit": 120},
        ),
        ({"title": "Copy", "percentage": 50}, BAR, "progress", {"title": "Copy", "percentage": 50}),
        (
            {"title": "t"},
            {"type": "alert", "title": "x", "message": "m", "badge": {"title": "b"}},
            "alert",
            {"title": "t", "message": "m"},  # optional fields are not carried
        ),
        (
            {"title": "t"},
            {"type": "value", "title": "x", "value": "$1"},
            "value",
            {"title": "t", "value": "$1"},
        ),
        # Another type: nothing is carried (a rotation must be complete).
        ({"title": "t"}, SEG, "timer", {"title": "t"}),
    ],
)
def test_carry_needed(
    state: dict[str, Any], previous: dict[str, Any], type_: str, expected: dict[str, Any]
) -> None:
    assert carry_needed(state, previous, type_) == expected


def test_carry_needed_does_not_touch_its_inputs() -> None:
    state = {"title": "Done"}
    carry_needed(state, SEG, "segmented_progress")
    assert state == {"title": "Done"}


def test_carry_all_keeps_every_omitted_field() -> None:
    previous = {**SEG, "badge": {"title": "prod"}, "color": "blue"}
    assert carry_all({"title": "t", "current_step": 3}, previous, "segmented_progress") == {
        **previous,
        "title": "t",
        "current_step": 3,
    }
    assert carry_all({"title": "t"}, previous, "timer") == {"title": "t"}


_FIELDS = (
    "percentage",
    "value",
    "upper_limit",
    "duration_seconds",
    "counts_down",
    "number_of_steps",
    "current_step",
    "metrics",
    "message",
)
_FULL: dict[str, Any] = {
    "title": "T",
    "percentage": 40,
    "value": 3,
    "upper_limit": 9,
    "duration_seconds": 60.0,
    "counts_down": True,
    "number_of_steps": 5,
    "current_step": 2,
    "metrics": [{"label": "CPU", "value": 1}],
    "message": "m",
}


@pytest.mark.parametrize(
    "type_", ["progress", "timer", "segmented_progress", "metrics", "stats", "value", "alert"]
)
def test_may_carry_is_false_only_for_states_carry_needed_leaves_alone(type_: str) -> None:
    previous = {**_FULL, "type": type_}
    complete = 0
    for mask in range(1 << len(_FIELDS)):
        given = {name for i, name in enumerate(_FIELDS) if mask >> i & 1}
        state = {"title": "T", **{name: _FULL[name] for name in given}}
        if not may_carry(given.__contains__, type_):
            complete += 1
            assert carry_needed(state, previous, type_) == state, (type_, sorted(given))
        elif type_ != "timer":  # a timer may carry nothing only because it does not count down
            assert carry_needed(state, previous, type_) != state, (type_, sorted(given))
    assert complete > 0
