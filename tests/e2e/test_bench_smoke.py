"""Every benchmark scenario at its smoke size: well-formed results, invariants held.

Each scenario runs for real (its processes on 127.0.0.1, pinned when the machine has two cores),
at the `[smoke]` size of its `bench/scenarios/<name>.toml`: a few seconds each. The tests check
the shape of every result line and the invariants that must hold at any size — zero lost final
states and zero order violations on the simulated devices, every call answered — and never a
speed: CI machines differ, and a speed is a measurement, not a correctness property.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.cli import SCENARIOS, run_scenarios
from bench.harness.core import REQUIRED_KEYS, load_scenario, summarize
from bench.harness.report import headline, invariant_failures
from engine.cli import main as lockstep_main

pytestmark = pytest.mark.e2e

MACHINE_KEYS = ("cores", "cpu_model", "python", "versions", "commit")


def _well_formed(rec: dict[str, Any], scenario: str) -> None:
    for key in REQUIRED_KEYS:
        assert key in rec, f"{scenario}: result line without {key!r}"
    assert rec["scenario"] == scenario
    assert rec["settings"]["size"] == "smoke"
    assert rec["measured"], "every result says what it measured"
    for key in MACHINE_KEYS:
        assert key in rec["machine"]
    assert rec["machine"]["versions"]["trio"] is not None
    assert json.loads(json.dumps(rec, default=str))["scenario"] == scenario
    assert headline(rec), "the table has something to show"


def _percentiles(summary: dict[str, Any]) -> None:
    assert summary["count"] > 0
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]


def _raw(records: list[dict[str, Any]]) -> None:
    rows = [r["figures"] for r in records if "client" in r["figures"]]
    ours = [f for f in rows if f["client"] == "lockstep"]
    assert sorted(f["connections"] for f in ours) == [1, 4]
    for f in rows:
        assert f["accepted"] == f["pushes"] and f["failures"] == 0
        assert f["pushes_per_s"] > 0


def _latency(records: list[dict[str, Any]]) -> None:
    assert len(records) == len(load_scenario("latency", "smoke")["rates"])
    for rec in records:
        f = rec["figures"]
        assert f["calls_failed"] == 0 and f["calls_ok"] == f["calls"]
        assert f["pushes_matched"] == f["calls_ok"]  # one push per update: nothing held back
        _percentiles(f["latency_ms"])


def _sequential(records: list[dict[str, Any]]) -> None:
    (rec,) = records
    f = rec["figures"]
    assert f["calls_ok"] == f["calls"] == load_scenario("sequential", "smoke")["calls"]
    assert f["final_delivered"] and f["lost_final_states"] == 0 == f["order_violations"]
    assert 1 <= f["pushes"] <= f["calls"]  # latest wins: at most one push per call
    _percentiles(f["reply_ms"])


def _burst(records: list[dict[str, Any]]) -> None:
    assert [r["settings"]["keys"] for r in records] == load_scenario("burst", "smoke")["keys"]
    for rec in records:
        f = rec["figures"]
        assert f["calls_ok"] > 0 and f["calls_failed"] == 0
        assert f["final_delivered"] and f["lost_final_states"] == 0 == f["order_violations"]
        assert f["store_commits"] > 0
        _percentiles(f["reply_ms"])


def _storm(records: list[dict[str, Any]]) -> None:
    (rec,) = records
    f = rec["figures"]
    assert f["updates"] > 0 and f["updates_failed"] == 0
    assert f["devices"]["expected"] == f["streams"]
    assert f["finals_missing_in_arrivals"] == 0
    assert f["pushes"] <= f["updates"] + f["streams"]
    assert f["rss_mb"]["series"]


def _scale(records: list[dict[str, Any]]) -> None:
    rest, recovery = (r["figures"] for r in records)
    n = load_scenario("scale", "smoke")["activities"]
    assert rest["activities"] == recovery["activities"] == n
    assert rest["recovered_pushes"] == 0
    assert recovery["recovered_pushes"] == recovery["accepted"] == n
    assert recovery["failed"] == recovery["rejected"] == 0


def _soak(records: list[dict[str, Any]]) -> None:
    (rec,) = records
    f = rec["figures"]
    assert f["finals_expected"] == f["streams"] and f["ends_failed"] == 0
    assert f["lost_final_states"] == 0
    # The smoke plan never unregisters a token, so every final must be delivered, none excused.
    assert f["finals_unregistered"] == 0 and f["finals_delivered"] == f["finals_expected"]
    assert f["order_violations"] == 0
    assert sum(f["faults_injected"].values()) > 0, "the smoke fault plan injected nothing"


CHECKS: dict[str, Callable[[list[dict[str, Any]]], None]] = {
    "raw": _raw,
    "latency": _latency,
    "sequential": _sequential,
    "burst": _burst,
    "storm": _storm,
    "scale": _scale,
    "soak": _soak,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_smoke(scenario: str) -> None:
    records = run_scenarios([scenario], "smoke")
    assert records
    for rec in records:
        _well_formed(rec, scenario)
    assert invariant_failures(records) == []
    CHECKS[scenario](records)


def test_cli_appends_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text('{"earlier": "line"}\n')
    assert lockstep_main(["bench", "scale", "--size", "smoke", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == '{"earlier": "line"}'  # appended, never overwritten
    new = [json.loads(line) for line in lines[1:]]
    assert [r["scenario"] for r in new] == ["scale", "scale"]
    assert "scale (smoke)" in capsys.readouterr().out


def test_cli_refuses_a_missing_scenario_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert (
        lockstep_main(
            [
                "bench",
                "storm",
                "--size",
                "smoke",
                "--scenario-file",
                str(missing),
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "r.jsonl").exists()


def test_summarize_nearest_rank() -> None:
    s = summarize([float(i) for i in range(1, 101)], scale=2.0)
    assert (s["p50"], s["p90"], s["p99"], s["max"]) == (100.0, 180.0, 198.0, 200.0)
    assert summarize([])["count"] == 0
