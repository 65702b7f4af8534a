"""Carry a Live Activity's last accepted values into a call that leaves them out.

The SDK lets a later call omit what the activity already has (its models' descriptions):
- a timer's `duration_seconds` on a stream PUT, a stream DELETE, an update and an end ("omit it to
  preserve the existing timer window"), so `{"type": "timer", "is_running": false}` pauses;
- a segmented_progress's `number_of_steps` on an end ("optional on end");
- whatever an update or end by activity id leaves out.

The device, though, needs a complete content state: iOS decodes every push's `content-state` into
the app's `ContentState` whole and drops a push that does not decode (apns.md §6), and a simulated
iPhone replaces its content with each push's. So the server completes a partial call from the
activity's last accepted state before checking it against the type and pushing it.

Two depths:
- `carry_needed` (stream PUT and DELETE, which otherwise carry the stream's whole state): only the
  fields the type needs and the call left out, so a stream can still drop an optional field such as
  a badge by leaving it out;
- `carry_all` (update and end by id): every field the call leaves out keeps its value.

Pure: dicts in, dicts out; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["carry_all", "carry_needed", "may_carry"]

# What each type needs to be shown (content.check_content's rules, http-api.md content state).
_NEEDED: Final[dict[str, tuple[str, ...]]] = {
    "segmented_progress": ("number_of_steps", "current_step"),
    "metrics": ("metrics",),
    "stats": ("metrics",),
    "value": ("value",),
    "alert": ("message",),
}
_PROGRESS: Final = ("percentage", "value", "upper_limit")


def carry_needed(
    state: Mapping[str, Any], previous: Mapping[str, Any], type_: str
) -> dict[str, Any]:
    """`state` with the fields `type_` needs, that it lacks, taken from `previous`.

    `previous` is the activity's last pushed state; it is used only when it has the same type
    (a type change starts afresh and must be complete). A progress state that has neither
    `percentage` nor `value` keeps the previous bar (`percentage`, or `value` and `upper_limit`);
    one with a `value` but no `upper_limit` keeps the previous limit. A timer that counts down
    keeps its previous `duration_seconds`; an elapsed timer (`counts_down` false) may be
    open-ended, so it gets none it did not ask for.
    """
    out = dict(state)
    if previous.get("type") != type_:
        return out
    if type_ == "progress":
        if out.get("percentage") is None and out.get("value") is None:
            for name in _PROGRESS:
                _take(out, previous, name)
        elif out.get("percentage") is None:
            _take(out, previous, "upper_limit")
    elif type_ == "timer" and out.get("counts_down") is not False:
        _take(out, previous, "duration_seconds")
    for name in _NEEDED.get(type_, ()):
        _take(out, previous, name)
    return out


def may_carry(present: Callable[[str], bool], type_: str) -> bool:
    """Whether `carry_needed` could add anything to a state of `type_` whose fields `present`
    tells apart (True: given, not None); False means the state is complete as it is, so a
    caller may skip building the dicts `carry_needed` compares."""
    if type_ == "progress":
        return not present("percentage") and not (present("value") and present("upper_limit"))
    if type_ == "timer":
        return not present("duration_seconds")
    return not all(present(name) for name in _NEEDED.get(type_, ()))


def carry_all(state: Mapping[str, Any], previous: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """`previous` with `state` over it: every field `state` leaves out keeps its value.

    As `carry_needed`, only when `previous` has the same type; otherwise `state` alone.
    """
    if previous.get("type") != type_:
        return dict(state)
    return {**previous, **state}


def _take(out: dict[str, Any], previous: Mapping[str, Any], name: str) -> None:
    if out.get(name) is None and previous.get(name) is not None:
        out[name] = previous[name]
