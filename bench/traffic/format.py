"""The traffic file format: JSON lines of API calls, as `lockstep serve --record` writes them.

    {"t": 0.0, "method": "PUT", "path": "/api/live-activity/stream/web-1", "body": {...}}
    {"t": 0.8, "method": "POST", "path": "/api/live-activity/start", "body": {...},
     "activity_id": "la_..."}

One line per accepted call: `t` (seconds since the first call), `method`, `path` (with its `/api`
prefix), `body` (the request JSON, or null), and on start and stream PUT lines the `activity_id`
the server answered with (later update / end lines refer to it). A file may begin with one header
line, which is not a call (it has no `method`):

    {"traffic": "fleet-metrics", "description": "...",
     "devices": [{"name": "oncall-web", "channels": ["web"]}, ...]}

`devices` describes the iPhones the traffic was meant for (channel subscriptions matter for who
receives what); a replay against a fresh in-process server creates exactly those. Recorded files
have no header and are replayed against a few plain simulated devices.

Pure: parsing and building only; `load_traffic` is the one function that reads a file.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "Call",
    "DeviceSpec",
    "Route",
    "Traffic",
    "TrafficError",
    "call_line",
    "dump_lines",
    "header_line",
    "lane_of",
    "load_traffic",
    "parse_traffic",
    "route_of",
]

_LIVE: Final = "/live-activity/"


class TrafficError(ValueError):
    """A traffic file line that cannot be replayed (the message names the line)."""


class Route(enum.Enum):
    """The send routes a traffic file may hold."""

    STREAM_PUT = "stream-put"
    STREAM_END = "stream-end"
    START = "start"
    UPDATE = "update"
    END = "end"


_BY_ID: Final[Mapping[tuple[str, str], Route]] = {
    ("POST", "start"): Route.START,
    ("POST", "update"): Route.UPDATE,
    ("POST", "end"): Route.END,
}


def route_of(method: str, path: str) -> tuple[Route, str | None] | None:
    """(route, stream key or None) of a recorded call; None for any other route."""
    _, sep, rest = path.partition(_LIVE)
    if not sep:
        return None
    if rest.startswith("stream/"):
        key = rest.removeprefix("stream/")
        if not key or "/" in key:
            return None
        if method == "PUT":
            return Route.STREAM_PUT, key
        return (Route.STREAM_END, key) if method == "DELETE" else None
    route = _BY_ID.get((method, rest))
    return (route, None) if route is not None else None


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded API call."""

    index: int  # position in the file's calls (0-based)
    t: float  # seconds since the first call
    method: str
    path: str
    body: Any  # the request JSON, or None
    route: Route
    stream_key: str | None
    activity_id: str | None = None  # start / stream PUT: the id the recorded answer carried

    def body_activity_id(self) -> str | None:
        """The `activity_id` an update or end call names."""
        if isinstance(self.body, dict) and isinstance(self.body.get("activity_id"), str):
            return str(self.body["activity_id"])
        return None


def lane_of(call: Call) -> str:
    """The calls that must stay in order: one stream, or one activity by its recorded id."""
    if call.stream_key is not None:
        return "stream:" + call.stream_key
    if call.route is Route.START:
        return "activity:" + call.activity_id if call.activity_id else f"start:{call.index}"
    return "activity:" + (call.body_activity_id() or f"unknown:{call.index}")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A simulated iPhone a traffic file was meant for."""

    name: str
    channels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Traffic:
    """A whole traffic file."""

    name: str
    calls: tuple[Call, ...]
    description: str = ""
    devices: tuple[DeviceSpec, ...] = ()  # empty: the replay's default devices

    @property
    def duration(self) -> float:
        """Seconds from the first call to the last."""
        return self.calls[-1].t if self.calls else 0.0


def _device(raw: Any, where: str) -> DeviceSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise TrafficError(f'{where}: a device is {{"name": str, "channels": [str]}}')
    channels = raw.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise TrafficError(f"{where}: device {raw['name']!r}: channels must be a list of strings")
    return DeviceSpec(raw["name"], tuple(channels))


def _call(raw: Mapping[str, Any], index: int, where: str) -> Call:
    t, method, path = raw.get("t"), raw.get("method"), raw.get("path")
    if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
        raise TrafficError(f"{where}: 't' must be a number of seconds >= 0")
    if not isinstance(method, str) or not isinstance(path, str):
        raise TrafficError(f"{where}: 'method' and 'path' must be strings")
    found = route_of(method, path)
    if found is None:
        raise TrafficError(f"{where}: {method} {path[:100]} is not a send route")
    body = raw.get("body")
    if body is not None and not isinstance(body, dict):
        raise TrafficError(f"{where}: 'body' must be a JSON object or null")
    activity_id = raw.get("activity_id")
    if activity_id is not None and not isinstance(activity_id, str):
        raise TrafficError(f"{where}: 'activity_id' must be a string")
    return Call(index, float(t), method, path, body, found[0], found[1], activity_id)


def parse_traffic(lines: Iterable[str], *, name: str = "traffic") -> Traffic:
    """Parse a traffic file's lines (blank lines are skipped); raises TrafficError."""
    calls: list[Call] = []
    header: dict[str, Any] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{name}:{number}"
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrafficError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise TrafficError(f"{where}: a line is a JSON object")
        if "method" not in raw:
            if calls or header:
                raise TrafficError(f"{where}: only the first line may be a header (no 'method')")
            header = raw
            continue
        calls.append(_call(raw, len(calls), where))
    raw_devices = header.get("devices", [])
    if not isinstance(raw_devices, list):
        raise TrafficError(f"{name}: header 'devices' must be a list")
    devices = tuple(_device(d, f"{name}:1") for d in raw_devices)
    # Recorded lines are in time order already; a hand-edited file is put back in order.
    ordered = sorted(calls, key=lambda c: c.t)
    if ordered != calls:
        ordered = [
            Call(i, c.t, c.method, c.path, c.body, c.route, c.stream_key, c.activity_id)
            for i, c in enumerate(ordered)
        ]
    return Traffic(
        name=str(header.get("traffic", name)),
        calls=tuple(ordered),
        description=str(header.get("description", "")),
        devices=devices,
    )


def load_traffic(path: Path) -> Traffic:
    """Read and parse a traffic file."""
    with Path(path).open(encoding="utf-8") as handle:
        return parse_traffic(handle, name=Path(path).stem)


def header_line(name: str, description: str, devices: Sequence[DeviceSpec]) -> dict[str, Any]:
    """A header line's object."""
    return {
        "traffic": name,
        "description": description,
        "devices": [{"name": d.name, "channels": list(d.channels)} for d in devices],
    }


def call_line(
    t: float, method: str, path: str, body: Any, activity_id: str | None = None
) -> dict[str, Any]:
    """A call line's object, in the recorder's key order."""
    line: dict[str, Any] = {"t": round(t, 3), "method": method, "path": path, "body": body}
    if activity_id is not None:
        line["activity_id"] = activity_id
    return line


def dump_lines(objects: Iterable[Mapping[str, Any]]) -> str:
    """Compact JSON lines (stable: the same objects give the same text)."""
    return "".join(json.dumps(o, separators=(",", ":"), ensure_ascii=False) + "\n" for o in objects)
