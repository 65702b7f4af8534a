"""`python -m bench.front` at a smoke size: both fronts measured, a well-formed result.

The fronts run for real in their own processes on 127.0.0.1 (pinned when the machine has two
cores). Only the shape of the result is checked, never a speed: that is a measurement.
"""

from __future__ import annotations

import json

import pytest

from bench import front
from bench.harness.core import usable_cores

pytestmark = pytest.mark.e2e


def test_both_fronts_are_measured_side_by_side() -> None:
    cores = usable_cores()
    result = front.run(requests=300, connections=2, rounds=2)
    assert usable_cores() == cores  # this process is unpinned again
    assert [r["front"] for r in result["rounds"]] == ["h11", "httptools", "h11", "httptools"]
    for row in result["rounds"]:
        assert row["requests"] == 300 and row["us_per_request"] > 0 and row["requests_per_s"] > 0
    assert set(result["us_per_request"]) == {"h11", "httptools"}
    ratio = result["us_per_request"]["h11"] / result["us_per_request"]["httptools"]
    assert result["ratio_h11_over_httptools"] == round(ratio, 2)
    machine = result["machine"]
    assert machine["versions"]["httptools"] and machine["versions"]["h11"]
    assert json.loads(json.dumps(result))["scenario"] == "front"


def test_the_command_line_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert front.main(["--requests", "200", "--connections", "1", "--rounds", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert json.loads(line)["settings"] == {"requests": 200, "connections": 1, "rounds": 1}
