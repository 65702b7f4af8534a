"""Record and replay, end to end: `lockstep serve --record`, `lockstep replay`, pushes files.

Every replay here runs a real in-process server and simulator on 127.0.0.1 (free ports, TLS
between engine and simulator) under an absolute deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.replay.check import check_final
from bench.replay.run import ReplayOptions, ReplayReport, replay_traffic
from bench.traffic.format import Traffic, load_traffic, parse_traffic
from simulator.replay import load_pushes, replay_pushes
from tests.helpers.serverkit import API_KEY, DEVICE_KEY, LiveServer, http_json, simulate_settings

pytestmark = pytest.mark.e2e

TRAFFIC_DIR = Path(__file__).resolve().parents[2] / "bench" / "traffic"
DEADLINE = 120.0
API = "/api/live-activity"


def seg(title: str, step: int, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "type": "segmented_progress",
        "number_of_steps": 4,
        "current_step": step,
        **extra,
    }


def small_traffic() -> Traffic:
    """A few calls of every kind, for two phones."""
    lines: list[Any] = [
        {
            "traffic": "small",
            "devices": [
                {"name": "phone-a", "channels": ["ops"]},
                {"name": "phone-b", "channels": ["ops", "dev"]},
            ],
        },
        {
            "t": 0.0,
            "method": "PUT",
            "path": f"{API}/stream/build-1",
            "body": {"content_state": seg("build", 0), "channels": ["ops"]},
        },
        {
            "t": 0.1,
            "method": "PUT",
            "path": f"{API}/stream/build-1",
            "body": {"content_state": seg("build", 1, subtitle="lint")},
        },
        {
            "t": 0.2,
            "method": "PUT",
            "path": f"{API}/stream/build-1",
            "body": {"content_state": seg("build", 2, subtitle="test")},
        },
        {
            "t": 0.3,
            "method": "POST",
            "path": f"{API}/start",
            "activity_id": "la_rec1",
            "body": {
                "content_state": {"title": "queue", "type": "value", "value": 3},
                "target": {"channels": ["dev"]},
                "alert": {"title": "queue", "body": "up"},
            },
        },
        {
            "t": 0.5,
            "method": "POST",
            "path": f"{API}/update",
            "body": {"activity_id": "la_rec1", "content_state": {"title": "queue", "value": 7}},
        },
        {
            "t": 0.6,
            "method": "PUT",
            "path": f"{API}/stream/metrics-1",
            "body": {
                "content_state": {
                    "title": "web",
                    "type": "metrics",
                    "metrics": [{"label": "CPU", "value": 9, "unit": "%"}],
                }
            },
        },
        {
            "t": 0.8,
            "method": "DELETE",
            "path": f"{API}/stream/build-1",
            "body": {"content_state": seg("build", 4, color="green", auto_dismiss_minutes=0)},
        },
        {
            "t": 0.9,
            "method": "POST",
            "path": f"{API}/end",
            "body": {"activity_id": "la_rec1", "content_state": {"title": "queue", "value": 9}},
        },
        {
            "t": 1.0,
            "method": "PUT",
            "path": f"{API}/stream/metrics-1",
            "body": {"content_state": {"title": "web", "metrics": [{"label": "CPU", "value": 12}]}},
        },
    ]
    return parse_traffic([json.dumps(x) for x in lines])


async def replay(traffic: Traffic, **options: Any) -> ReplayReport:
    with trio.fail_after(DEADLINE):
        return await replay_traffic(traffic, ReplayOptions(**options))


def shown(devices: Any) -> dict[tuple[str, str], tuple[str, Any]]:
    """(device, server activity id) -> (state, content) of every activity on the lock screens."""
    return {
        (d["name"], a["attributes"]["activity_id"]): (a["state"], a["content_state"])
        for d in devices
        for a in d["activities"]
    }


# -- the shipped traffic files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "speed"),
    # Fleet: every stream PUTs each second; the server answers a stream's calls one at a time,
    # about 4/s when its pushes are paced, so a faster replay would only queue them.
    [("ci-pipeline.jsonl", 150.0), ("fleet-metrics.jsonl", 4.0), ("agent-runs.jsonl", 100.0)],
)
async def test_shipped_traffic_ends_with_every_final_state_shown(name: str, speed: float) -> None:
    traffic = load_traffic(TRAFFIC_DIR / name)
    report = await replay(traffic, speed=speed, settle_timeout=30.0)
    assert report.errors == {}, report.error_samples
    assert report.mismatches == (), [str(m) for m in report.mismatches]
    assert report.checked == len(report.expected) > 0
    assert report.pushes is not None and report.wanted is not None
    assert 0 < report.pushes < report.wanted  # coalescing happened
    assert report.latency.count == len(traffic.calls)


# -- recording -----------------------------------------------------------------------------------


def test_serve_records_accepted_calls_and_the_recording_replays(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    settings = replace(simulate_settings(tmp_path / "state", devices=2), record=path)
    server = LiveServer.start(settings, hard_timeout=DEADLINE)
    try:
        api = server.api_base
        state = {"title": "deploy", "type": "progress", "percentage": 10}
        put = f"{api}/live-activity/stream/deploy-7"
        assert http_json("PUT", put, {"content_state": state}, key=API_KEY)[0] == 200
        status, started = http_json(
            "POST",
            f"{api}/live-activity/start",
            {"content_state": {"title": "q", "type": "value", "value": 1}},
            key=API_KEY,
        )
        assert status == 200
        by_id = {"activity_id": started["activity_id"], "content_state": {"title": "q", "value": 2}}
        assert http_json("POST", f"{api}/live-activity/update", by_id, key=API_KEY)[0] == 200
        assert http_json("POST", f"{api}/live-activity/end", by_id, key=API_KEY)[0] == 200
        refused = {"content_state": {"title": "x", "type": "nope"}}
        assert http_json("PUT", put, refused, key=API_KEY)[0] == 400  # not recorded
        assert http_json("GET", f"{api}/devices", key=API_KEY)[0] == 200  # no body: not recorded
        state["percentage"] = 80
        assert http_json("PUT", put, {"content_state": state}, key=API_KEY)[0] == 200
        assert http_json("DELETE", put, key=API_KEY)[0] == 200
    finally:
        server.stop()
    text = path.read_text()
    assert API_KEY not in text and DEVICE_KEY not in text and "activity-tokens" not in text
    lines = [json.loads(x) for x in text.splitlines()]
    assert [(x["method"], x["path"].rsplit("/", 1)[-1]) for x in lines] == [
        ("PUT", "deploy-7"),
        ("POST", "start"),
        ("POST", "update"),
        ("POST", "end"),
        ("PUT", "deploy-7"),
        ("DELETE", "deploy-7"),
    ]
    assert lines[0]["t"] == 0.0 and all(a["t"] <= b["t"] for a, b in pairwise(lines))
    assert lines[1]["activity_id"] == started["activity_id"]
    assert lines[2]["body"] == by_id and lines[5]["body"] is None

    report = trio.run(partial(replay, load_traffic(path), speed=20.0))
    assert report.ok, (report.errors, [str(m) for m in report.mismatches])
    assert report.checked == 2 and report.devices == 3


# -- pushes ----------------------------------------------------------------------------------------


async def test_recorded_pushes_replay_to_the_same_lock_screens(tmp_path: Path) -> None:
    pushes_file = tmp_path / "pushes.jsonl"
    report = await replay(small_traffic(), speed=20.0, record_pushes=pushes_file)
    assert report.ok, [str(m) for m in report.mismatches]
    pushes = load_pushes(pushes_file)
    assert len(pushes) == report.pushes
    assert all(p.activity_token for p in pushes if p.event == "start")
    with trio.fail_after(DEADLINE):
        result = await replay_pushes(pushes, apns_dir=tmp_path / "apns")
    assert result.unmapped == 0 and result.delivered == len(pushes)
    assert shown(result.devices) == shown(report.final_devices)
    assert result.files_written == len(list((tmp_path / "apns").rglob("*.apns"))) == len(pushes)


# -- mismatches ------------------------------------------------------------------------------------


async def test_a_tampered_expectation_is_a_listed_mismatch() -> None:
    report = await replay(small_traffic(), speed=20.0)
    assert report.ok
    lane = "stream:build-1"
    exp = report.expected[lane]
    tampered = {**report.expected, lane: replace(exp, content={**exp.content, "title": "x"})}
    mismatches = check_final(tampered, report.resolved, report.final_devices)
    assert sorted(m.device for m in mismatches) == ["phone-a", "phone-b"]
    assert all(
        m.label == "stream build-1" and "content_state.title: expected 'x'" in m.detail
        for m in mismatches
    )
    ended = {**report.expected, lane: replace(exp, ended=False)}
    assert {m.detail for m in check_final(ended, report.resolved, report.final_devices)} == {
        "should be live, is dismissed"
    }


def test_cli_exits_1_and_lists_what_no_device_could_show(tmp_path: Path) -> None:
    path = tmp_path / "unreachable.jsonl"
    metrics = {"title": "web", "type": "metrics", "metrics": [{"label": "CPU", "value": 1}]}
    path.write_text(
        "".join(
            json.dumps(x) + "\n"
            for x in (
                {
                    "t": 0.0,
                    "method": "PUT",
                    "path": f"{API}/stream/lost-1",
                    "body": {"content_state": metrics, "channels": ["nobody"]},
                },
                {
                    "t": 0.1,
                    "method": "PUT",
                    "path": f"{API}/stream/fine-1",
                    "body": {"content_state": metrics},
                },
            )
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "replay",
            str(path),
            "--speed",
            "10",
            "--json",
            "--settle-timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["errors"] == {"422": 1} and report["checked"] == 2
    assert report["mismatches"] == [
        "stream lost-1 on -: its activity was never started in this run"
    ]


async def test_embedded_simulator_records_pushes_when_asked(tmp_path: Path) -> None:
    from simulator.embed import open_embedded

    path = tmp_path / "pushes.jsonl"
    with trio.fail_after(DEADLINE):
        async with open_embedded(
            state_dir=tmp_path / "sim", devices=1, control_port=None, record_pushes=path
        ) as sim:
            recorder = sim.simulator.push_recorder
            assert recorder is not None and recorder in sim.simulator.apns.listeners
            assert sim.simulator.info()["record_pushes"] == str(path.resolve())
    assert path.exists() and path.read_text() == ""  # created at once, closed on the way out
    assert recorder.closed
