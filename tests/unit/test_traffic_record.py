"""Recording API traffic (engine.server.record) and pushes (simulator.record), read back."""

from __future__ import annotations

import argparse
import itertools
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from bench.replay.cli import register
from bench.traffic.format import (
    Route,
    TrafficError,
    lane_of,
    parse_traffic,
    route_of,
)
from bench.traffic.generate import build_all
from engine.server.record import TrafficRecorder, traffic_line
from simulator.devices import TokenReport
from simulator.record import PushRecorder
from simulator.replay import PushReplay, parse_pushes
from simulator.validation import DevicePush, TokenInfo, TokenKind

BUNDLE = "com.example.lockstep"
TOPIC = BUNDLE + ".push-type.liveactivity"
STREAM = "/api/live-activity/stream/web-1"
TRAFFIC_DIR = Path(__file__).resolve().parents[2] / "bench" / "traffic"


# -- engine.server.record --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "reply", "expected"),
    [
        (
            "PUT",
            STREAM,
            b'{"content_state":{"title":"a"}}',
            b'{"activity_id":"la_1"}',
            {"body": {"content_state": {"title": "a"}}, "activity_id": "la_1"},
        ),
        (
            "POST",
            "/api/live-activity/start",
            b'{"content_state":{"title":"a"}}',
            b'{"activity_id":"la_2","success":true}',
            {"body": {"content_state": {"title": "a"}}, "activity_id": "la_2"},
        ),
        # update / end name their id in the body: the answer's is not needed
        (
            "POST",
            "/api/live-activity/update",
            b'{"activity_id":"la_2"}',
            b'{"activity_id":"la_2"}',
            {"body": {"activity_id": "la_2"}},
        ),
        ("DELETE", STREAM, b"", b'{"activity_id":"la_1"}', {"body": None}),
        ("PUT", STREAM, b"{}", b"not json", {"body": {}}),
    ],
)
def test_traffic_line_shapes(
    method: str, path: str, body: bytes, reply: bytes, expected: dict[str, Any]
) -> None:
    line = traffic_line(1.25, method, path, body, reply)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"t": 1.25, "method": method, "path": path, **expected}


def test_recorder_writes_lines_relative_to_the_first_call(tmp_path: Path) -> None:
    ticks = itertools.count(100.0, 0.5)
    path = tmp_path / "sub" / "traffic.jsonl"
    with TrafficRecorder(path, clock=lambda: next(ticks)) as recorder:
        recorder.record("PUT", STREAM, b'{"content_state":{"title":"a"}}', b'{"activity_id":"x"}')
        recorder.record("DELETE", STREAM, b"")
    recorder.record("PUT", STREAM, b"{}")  # after close: counted, never written
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["t"], x["method"]) for x in lines] == [(0.0, "PUT"), (0.5, "DELETE")]
    assert recorder.written == 2 and recorder.dropped == 1
    traffic = parse_traffic(path.read_text().splitlines())
    assert [c.route for c in traffic.calls] == [Route.STREAM_PUT, Route.STREAM_END]
    assert traffic.calls[0].activity_id == "x"


def test_a_full_buffer_drops_instead_of_blocking(tmp_path: Path) -> None:
    recorder = TrafficRecorder(tmp_path / "t.jsonl", capacity=2)  # writer not started yet
    for _ in range(5):
        recorder.record("PUT", STREAM, b"{}")
    assert recorder.dropped == 3
    recorder.start()
    recorder.close()
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 2


# -- bench.traffic.format -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PUT", STREAM, (Route.STREAM_PUT, "web-1")),
        ("DELETE", "/prefix/api/live-activity/stream/k", (Route.STREAM_END, "k")),
        ("POST", "/api/live-activity/start", (Route.START, None)),
        ("POST", "/api/live-activity/update", (Route.UPDATE, None)),
        ("POST", "/api/live-activity/end", (Route.END, None)),
        ("GET", STREAM, None),
        ("PUT", "/api/devices/x", None),
        ("PUT", "/api/live-activity/stream/", None),
        ("POST", "/api/live-activity/stream/a/b", None),
    ],
)
def test_route_of(method: str, path: str, expected: object) -> None:
    assert route_of(method, path) == expected


def test_parse_header_order_and_lanes() -> None:
    lines = [
        json.dumps({"traffic": "demo", "devices": [{"name": "p", "channels": ["ops"]}]}),
        "",
        json.dumps(
            {
                "t": 2,
                "method": "POST",
                "path": "/api/live-activity/update",
                "body": {"activity_id": "la_a"},
            }
        ),
        json.dumps(
            {
                "t": 1,
                "method": "POST",
                "path": "/api/live-activity/start",
                "body": {},
                "activity_id": "la_a",
            }
        ),
        json.dumps({"t": 3, "method": "PUT", "path": STREAM, "body": {}}),
    ]
    traffic = parse_traffic(lines)
    assert traffic.name == "demo" and traffic.devices[0].channels == ("ops",)
    assert [c.index for c in traffic.calls] == [0, 1, 2]
    assert [c.route for c in traffic.calls] == [Route.START, Route.UPDATE, Route.STREAM_PUT]
    assert [lane_of(c) for c in traffic.calls] == ["activity:la_a", "activity:la_a", "stream:web-1"]
    assert traffic.duration == 3.0


@pytest.mark.parametrize(
    "line",
    [
        "nope",
        "[1]",
        '{"t": -1, "method": "PUT", "path": "/api/live-activity/stream/a", "body": null}',
        '{"t": 1, "method": "GET", "path": "/api/devices", "body": null}',
        '{"t": 1, "method": "PUT", "path": "/api/live-activity/stream/a", "body": [1]}',
    ],
)
def test_bad_lines_are_refused_with_their_line_number(line: str) -> None:
    with pytest.raises(TrafficError, match="t:2"):
        parse_traffic(
            ['{"t": 0, "method": "DELETE", "path": "/api/live-activity/stream/a"}', line], name="t"
        )


# -- simulator.record and simulator.replay ------------------------------------------------------


def push(token: str, aps: dict[str, Any]) -> DevicePush:
    payload = {"aps": aps}
    return DevicePush(
        token=token,
        push_type="liveactivity",
        topic=TOPIC,
        bundle_id=BUNDLE,
        priority=10,
        expiration=None,
        apns_id=None,
        collapse_id=None,
        payload=payload,
        body=json.dumps(payload).encode(),
        token_info=TokenInfo(BUNDLE, TokenKind.ACTIVITY),
    )


START = {
    "event": "start",
    "timestamp": 1_800_000_000,
    "content-state": {"title": "a"},
    "attributes-type": "LockstepActivityAttributes",
    "attributes": {"activity_id": "la_1"},
    "alert": {"title": "a", "body": ""},
}


def test_push_recorder_lines_and_activity_token(tmp_path: Path) -> None:
    clock = iter([1_800_000_000.0, 1_800_000_001.5])
    recorder = PushRecorder(tmp_path / "p.jsonl", wall_clock=lambda: next(clock))
    recorder.on_accepted(push("aa" * 8, START), "iphone-1")
    report = TokenReport("iphone-1", "aa" * 8, "iphone-1-1", "bb" * 8, "X", {}, 0.0)
    recorder.on_token(report)
    update = {"event": "update", "timestamp": 1_800_000_001, "content-state": {"title": "b"}}
    recorder.on_accepted(push("bb" * 8, update), "iphone-1")
    recorder.close()
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["t"] for x in lines] == [0.0, 1.5]
    assert lines[0]["activity_token"] == "bb" * 8 and "activity_token" not in lines[1]
    assert lines[1] | {"payload": None} == {
        "t": 1.5,
        "at": 1_800_000_001.5,
        "token": "bb" * 8,
        "device": "iphone-1",
        "push_type": "liveactivity",
        "topic": TOPIC,
        "priority": 10,
        "expiration": None,
        "apns_id": None,
        "payload": None,
        "status": 200,
        "reason": None,
    }


PUSH_LINES: list[dict[str, Any]] = [
    {
        "t": 0,
        "at": 1_800_000_000.0,
        "token": "aa" * 8,
        "device": "iphone-1",
        "topic": TOPIC,
        "priority": 10,
        "payload": {"aps": START},
        "activity_token": "bb" * 8,
    },
    {
        "t": 1,
        "at": 1_800_000_001.0,
        "token": "bb" * 8,
        "device": "iphone-1",
        "topic": TOPIC,
        "priority": 10,
        "payload": {
            "aps": {
                "event": "end",
                "timestamp": 1_800_000_001,
                "content-state": {"title": "done"},
                "dismissal-date": 1_800_009_000,
            }
        },
    },
    {
        "t": 2,
        "at": 1_800_000_002.0,
        "token": "cc" * 8,
        "device": "iphone-1",
        "topic": TOPIC,
        "priority": 10,
        "payload": {"aps": {"event": "update", "timestamp": 1_800_000_002}},
    },
]


def test_push_replay_maps_update_tokens(tmp_path: Path) -> None:
    replay = PushReplay(apns_dir=tmp_path / "apns")
    for p in parse_pushes(json.dumps(x) for x in PUSH_LINES):
        replay.feed(p)
    result = replay.finish()
    assert result.delivered == 2 and result.unmapped == 1 and result.files_written == 2
    (device,) = result.devices
    (activity,) = device["activities"]
    assert device["push_to_start_token"] == "aa" * 8
    assert activity["content_state"] == {"title": "done"} and activity["state"] == "ended"
    assert sorted(p.name for p in (tmp_path / "apns" / "iphone-1").iterdir()) == [
        "000001-start.apns",
        "000002-end.apns",
    ]


def test_cli_replays_a_pushes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pushes = tmp_path / "pushes.jsonl"
    pushes.write_text("".join(json.dumps(x) + "\n" for x in PUSH_LINES))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["replay", "--pushes", str(pushes), "--apns-dir", str(tmp_path)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "iphone-1" in out and "done" in out
    assert "2 pushes delivered" in out and "1 to tokens this replay cannot map" in out
    args = parser.parse_args(["replay", "--pushes", str(pushes), str(pushes)])
    assert args.handler(args) == 2  # a traffic file and --pushes: one or the other


def test_shipped_traffic_files_are_what_the_generator_writes() -> None:
    for name, text in build_all().items():
        assert (TRAFFIC_DIR / name).read_text(encoding="utf-8") == text, name


def test_the_push_record_file_is_its_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "pushes.jsonl"
    path.write_text("old\n")
    path.chmod(0o644)
    recorder = PushRecorder(path, wall_clock=lambda: 1.0)
    recorder.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == ""
