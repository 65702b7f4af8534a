"""A real full disk under load (`bench.diskfull`): calls refused while the filesystem is full are
answered 503 and never reach a phone; every accepted final state is shown, before and after a
restart, with no order violation.

The bench mounts a small tmpfs, which needs root on Linux: elsewhere the test skips, saying so,
but never under `CI=true` (CI runs as root on this machine kind).
"""

from __future__ import annotations

import json
import os

import pytest

from bench import diskfull

pytestmark = pytest.mark.e2e


def test_a_full_disk_loses_nothing_accepted_and_shows_nothing_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a small tmpfs needs root")
    code = diskfull.main(["--size", "6m", "--run", "1.5", "--full", "2", "--settle", "30"])
    report = json.loads(capsys.readouterr().out)
    assert report["healthz_full"][0] == 503
    assert "disk full" in report["healthz_full"][1]["storage"]
    assert report["while_full"].get("503", 0) > 0, report["while_full"]
    assert set(report["answers"]) <= {"200", "503"}, report["answers"]
    for part in ("full_disk", "before_restart", "after_restart"):
        verdict = report[part]
        assert verdict["lost_final_states"] == 0, verdict
        assert verdict["shown_but_refused"] == 0, verdict
        assert verdict["order_violations"] == 0, verdict
    assert code == 0
