"""Scenario scale-out at its smoke size: `lockstep serve --workers 1` and `--workers 2` on the local
PostgreSQL (a fresh schema each), driven through HTTP by the benchmark load generator, then the
storm over HTTP with two processes (bench/scaleout.py).

Checked: every result line well-formed (what it measured, the machine, the commit), every call
answered, no final state lost and none out of order on the simulated phones, the final state of
every storm stream timed, and the figures present. Never a speed: that is a measurement.
PostgreSQL on 127.0.0.1:5432 (tests/helpers/pgkit.py: skipped with a loud reason when no server
answers, failed under CI)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.cli import run_scenarios
from bench.harness.core import REQUIRED_KEYS, load_scenario
from bench.harness.report import headline, invariant_failures
from tests.helpers import pgkit

pytestmark = pytest.mark.e2e


def _summary(s: dict[str, Any]) -> None:
    assert s["count"] > 0
    assert s["p50"] <= s["p99"] <= s["max"]


def test_scale_out_smoke_loses_nothing_and_reports_its_figures() -> None:
    pgkit.require_server()
    cfg = load_scenario("scale-out", "smoke")
    records = run_scenarios(["scale-out"], "smoke")
    for rec in records:
        for key in REQUIRED_KEYS:
            assert key in rec, f"result line without {key!r}"
        assert rec["scenario"] == "scale-out" and rec["settings"]["size"] == "smoke"
        assert rec["machine"]["commit"] and rec["machine"]["cores"]
        assert headline(rec)
    assert invariant_failures(records) == []
    by = {rec["measurement"]: rec["figures"] for rec in records}
    for n in cfg["workers"]:
        f = by[f"throughput, --workers {n}"]
        assert f["workers"] == n and f["streams"] == cfg["streams"]
        assert f["calls_ok"] > 0 and f["calls_failed_http"] == 0 and not f["errors"]
        assert f["calls_per_s"] > 0
        assert f["last_round_failed"] == 0
        assert f["lost_final_states"] == 0 == f["order_violations"]
        _summary(f["reply_ms"])
        assert set(f["cpu_s"]) == {"supervisor", "workers", "postgres", "machine", "generator"}
        assert f["lease_epochs_bumped"] >= 0 and f["starts_sent_again"] >= 0
        assert f["lease_least_left_s"] is not None
    top, first = max(cfg["workers"]), min(cfg["workers"])
    ratio = by[f"ratio --workers {top} / {first}"]
    assert ratio["ratio"] is not None and ratio["ratio"] > 0
    for n in cfg["storm_workers"]:
        f = by[f"storm over HTTP, --workers {n}"]
        assert f["updates"] > 0 and f["updates_failed"] == 0
        assert f["lost_final_states"] == 0 == f["order_violations"]
        assert f["finals_timed"] == f["streams"] == cfg["storm_streams"]
        assert 0 < f["pushes"] <= f["updates"]
        _summary(f["last_update_to_device_ms"])
