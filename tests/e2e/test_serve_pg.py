"""`lockstep serve` on PostgreSQL (`[store] url`): calls over HTTP land in the database, not in a
SQLite file, and a restarted server carries on from it (PostgreSQL on 127.0.0.1:5432,
tests/helpers/pgkit.py: skipped with a loud reason when no server answers, failed under CI)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import pgkit
from tests.helpers.serverkit import API_KEY, LiveServer, http_json, simulate_settings, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pgkit.schemas() as made:
        yield made.new()


def _call(server: LiveServer, route: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = http_json(
        "POST", f"{server.api_base}/live-activity/{route}", body, key=API_KEY
    )
    assert status == 200, (status, answer)
    result: dict[str, Any] = answer
    return result


def _showing(server: LiveServer, activity_id: str, value: object) -> dict[str, Any]:
    return wait_until(
        lambda: server.shown(activity_id),
        lambda shown: (
            len(shown) == 2
            and all(a["content_state"].get("value") == value for a in shown.values())
        ),
    )


def test_a_server_on_postgresql_keeps_its_calls_there(tmp_path: Path, pg_url: str) -> None:
    settings = replace(simulate_settings(tmp_path, devices=2, seed=78), store_url=pg_url)
    state = {"title": "Queue depth", "type": "value", "value": 1}
    first = LiveServer.start(settings)
    try:
        activity_id = _call(first, "start", {"content_state": state})["activity_id"]
        _showing(first, activity_id, 1)
        wait_until(  # both update tokens stored before the restart (see test_sim_restart.py)
            lambda: http_json("GET", first.control_url + "/info")[1]["token_reports"],
            lambda reports: reports["delivered"] == 2,
        )
        time.sleep(1.1)
    finally:
        first.stop()
    assert not (tmp_path / "lockstep.db").exists()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (2,)
        rows = conn.execute("SELECT activity_id, version FROM activities").fetchall()
    assert [r[0] for r in rows] == [activity_id]

    second = LiveServer.start(settings)
    try:
        _call(
            second, "update", {"activity_id": activity_id, "content_state": {**state, "value": 2}}
        )
        after = _showing(second, activity_id, 2)
        assert all(a["order_violations"] == 0 for a in after.values())
    finally:
        second.stop()
