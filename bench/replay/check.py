"""What a replayed traffic file must leave on the simulated iPhones, and the check that it did.

`expectations(calls)` folds the recorded calls into the final state of every stream and every
activity started by id, following the contract's rules (http-api.md):
- a stream PUT carries the whole state: it replaces the content (`type` kept when left out); the
  first PUT, a PUT after the stream ended, or a type change starts a new activity for the
  channels that PUT names;
- a stream DELETE ends it, with its `content_state` (if any) as the final content;
- `update` / `end` by id keep the fields they leave out, unless they change the type;
- what reaches the device is the pushed content state: `type` filled in, `auto_dismiss_*`
  dropped, `counts_down` / `is_running` kept (default true) for timers only.

The result is keyed by lane (`bench.traffic.format.lane_of`). Activity ids differ from run to
run, so `check_final` takes `resolved`, the id each lane's activity has in this run (from the
replayed answers), and the control API's `GET /devices` answer. For each lane, every device the
activity was meant for (subscribed to one of its channels, or every device) must show it (the
activity whose `attributes.activity_id` is the resolved id) with each expected content-state field
equal and ended exactly when the last call ended it. Every difference is a `Mismatch`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bench.traffic.format import Call, Route, lane_of

__all__ = [
    "Expectation",
    "LatencySummary",
    "Mismatch",
    "check_final",
    "expectations",
    "pushed_fields",
    "recipients",
    "resolve_ids",
    "summarize",
]

_NOT_CONTENT: Final = ("type", "auto_dismiss_minutes", "auto_dismiss_seconds")
_TIMER_ONLY: Final = ("counts_down", "is_running")
_LIVE_STATES: Final = frozenset({"active", "stale"})
_ENDED_STATES: Final = frozenset({"ended", "dismissed"})


@dataclass(frozen=True, slots=True)
class Expectation:
    """The final state one stream or one activity must show."""

    lane: str
    label: str  # for people: "stream web-1", "activity la_... (started at t=12.0s)"
    type: str
    content: Mapping[str, Any]  # the pushed content-state fields
    ended: bool
    channels: tuple[str, ...] = ()  # empty: every device
    last_call: int = 0  # index of the last call that shaped it


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One way a device's final state differs from the expectation."""

    label: str
    device: str
    detail: str

    def __str__(self) -> str:
        return f"{self.label} on {self.device}: {self.detail}"


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def pushed_fields(state: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """The content state a device receives for request `state` shown as `type_`."""
    fields = {k: v for k, v in _drop_none(dict(state)).items() if k not in _NOT_CONTENT}
    if type_ == "timer":
        fields.setdefault("counts_down", True)
        fields.setdefault("is_running", True)
    else:
        for name in _TIMER_ONLY:
            fields.pop(name, None)
    return {"type": type_, **fields}


def _channels(body: Mapping[str, Any]) -> tuple[str, ...]:
    channels = body.get("channels")
    target = body.get("target")
    if channels is None and isinstance(target, dict):
        channels = target.get("channels")
    return tuple(str(c) for c in channels) if isinstance(channels, list) else ()


@dataclass(slots=True)
class _Lane:
    label: str
    type: str
    content: dict[str, Any]
    ended: bool
    channels: tuple[str, ...]
    last_call: int


@dataclass(slots=True)
class _Book:
    lanes: dict[str, _Lane] = field(default_factory=dict)

    def stream_put(self, call: Call, lane: str, body: Mapping[str, Any]) -> None:
        state = body.get("content_state")
        if not isinstance(state, dict):
            return
        current = self.lanes.get(lane)
        type_ = state.get("type") or (current.type if current else None)
        if not isinstance(type_, str):
            return  # the server refused it (400): it cannot be in a recording
        starts = current is None or current.ended or type_ != current.type
        channels = _channels(body) if starts or current is None else current.channels
        self.lanes[lane] = _Lane(
            f"stream {call.stream_key}",
            type_,
            pushed_fields(state, type_),
            False,
            channels,
            call.index,
        )

    def stream_end(self, call: Call, lane: str, body: Mapping[str, Any] | None) -> None:
        current = self.lanes.get(lane)
        if current is None or current.ended:
            return  # unknown (404) or already ended (ignored)
        state = body.get("content_state") if body else None
        if isinstance(state, dict):
            current.type = state.get("type") or current.type
            current.content = pushed_fields(state, current.type)
        current.ended, current.last_call = True, call.index

    def start(self, call: Call, lane: str, body: Mapping[str, Any]) -> None:
        state = body.get("content_state")
        if not isinstance(state, dict) or not isinstance(state.get("type"), str):
            return
        type_ = state["type"]
        label = f"activity {call.activity_id or '#' + str(call.index)} (started at t={call.t:g}s)"
        self.lanes[lane] = _Lane(
            label, type_, pushed_fields(state, type_), False, _channels(body), call.index
        )

    def update(self, call: Call, lane: str, body: Mapping[str, Any], *, end: bool) -> None:
        current = self.lanes.get(lane)
        state = body.get("content_state")
        if current is None or current.ended or not isinstance(state, dict):
            return  # started outside the file (cannot be checked) or ignored
        type_ = state.get("type") or current.type
        new = pushed_fields(state, type_)
        current.content = {**current.content, **new} if type_ == current.type else new
        current.type, current.last_call = type_, call.index
        current.ended = end


def expectations(calls: Iterable[Call]) -> dict[str, Expectation]:
    """The final state of every stream and activity the calls shape (see the module docstring)."""
    book = _Book()
    for call in calls:
        lane = lane_of(call)
        body = call.body if isinstance(call.body, dict) else {}
        if call.route is Route.STREAM_PUT:
            book.stream_put(call, lane, body)
        elif call.route is Route.STREAM_END:
            book.stream_end(call, lane, call.body if isinstance(call.body, dict) else None)
        elif call.route is Route.START:
            book.start(call, lane, body)
        else:
            book.update(call, lane, body, end=call.route is Route.END)
    return {
        lane: Expectation(lane, s.label, s.type, dict(s.content), s.ended, s.channels, s.last_call)
        for lane, s in book.lanes.items()
    }


def recipients(channels: Sequence[str], devices: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the devices an activity for `channels` goes to (every device for none)."""
    wanted = set(channels)
    return [
        str(d.get("name"))
        for d in devices
        if not wanted or wanted.intersection(d.get("channels") or ())
    ]


def _same(expected: Any, shown: Any) -> bool:
    """JSON equality, with 1 == 1.0 but never True == 1."""
    if isinstance(expected, bool) or isinstance(shown, bool):
        return type(expected) is type(shown) and expected == shown
    if isinstance(expected, int | float) and isinstance(shown, int | float):
        return math.isclose(expected, shown, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(expected, dict) and isinstance(shown, dict):
        shown = _drop_none(shown)
        return expected.keys() == shown.keys() and all(
            _same(v, shown[k]) for k, v in expected.items()
        )
    if isinstance(expected, list) and isinstance(shown, list):
        return len(expected) == len(shown) and all(map(_same, expected, shown))
    return bool(expected == shown)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _compare(exp: Expectation, device: str, shown: Mapping[str, Any]) -> list[Mismatch]:
    out: list[Mismatch] = []
    state = str(shown.get("state"))
    if exp.ended and state not in _ENDED_STATES:
        out.append(Mismatch(exp.label, device, f"should have ended, is {state}"))
    elif not exp.ended and state not in _LIVE_STATES:
        out.append(Mismatch(exp.label, device, f"should be live, is {state}"))
    content = shown.get("content_state")
    content = content if isinstance(content, dict) else {}
    for key, want in exp.content.items():
        if key not in content:
            out.append(
                Mismatch(
                    exp.label, device, f"content_state.{key}: missing, expected {_short(want)}"
                )
            )
        elif not _same(want, content[key]):
            out.append(
                Mismatch(
                    exp.label,
                    device,
                    f"content_state.{key}: expected {_short(want)}, shown {_short(content[key])}",
                )
            )
    return out


def check_final(
    expected: Mapping[str, Expectation],
    resolved: Mapping[str, str],
    devices: Sequence[Mapping[str, Any]],
) -> list[Mismatch]:
    """Every difference between the expectations and the devices' final state."""
    by_name = {str(d.get("name")): d for d in devices}
    out: list[Mismatch] = []
    for lane, exp in expected.items():
        activity_id = resolved.get(lane)
        if activity_id is None:
            out.append(Mismatch(exp.label, "-", "its activity was never started in this run"))
            continue
        names = recipients(exp.channels, devices)
        if not names:
            out.append(Mismatch(exp.label, "-", f"no device subscribes to {list(exp.channels)}"))
        for name in names:
            shown = [
                a
                for a in by_name[name].get("activities") or ()
                if isinstance(a, dict)
                and (a.get("attributes") or {}).get("activity_id") == activity_id
            ]
            if not shown:
                out.append(Mismatch(exp.label, name, f"activity {activity_id} is not shown"))
                continue
            out.extend(_compare(exp, name, shown[-1]))
    return out


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles in seconds (nearest rank)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float


def summarize(latencies: Iterable[float]) -> LatencySummary:
    """p50 / p90 / p99 / max of `latencies` (all zero when there are none)."""
    values = sorted(latencies)
    if not values:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0)

    def rank(p: float) -> float:
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)]

    return LatencySummary(len(values), rank(50), rank(90), rank(99), values[-1])


def resolve_ids(answered: Iterable[tuple[Call, str | None]]) -> dict[str, str]:
    """Each lane's activity id in this run, from the successful calls' answers, in call order.

    A stream's id is the one its last answered call named (a rotation or a restart after an end
    moves it on); an activity started by id keeps the id its start was given.
    """
    out: dict[str, str] = {}
    for call, activity_id in answered:
        if activity_id is None:
            continue
        if call.stream_key is not None or call.route is Route.START:
            out[lane_of(call)] = activity_id
    return out
