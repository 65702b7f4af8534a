"""`lockstep serve` in simulate mode restarted: the same phones, showing what they showed, and
their update tokens still good, so the next call reaches them (simulator/state.py)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.serverkit import API_KEY, LiveServer, http_json, simulate_settings, wait_until

pytestmark = pytest.mark.e2e


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


def test_a_restarted_server_finds_its_phones_as_they_were(tmp_path: Path) -> None:
    settings = simulate_settings(tmp_path, devices=2, seed=77)
    state = {"title": "Queue depth", "type": "value", "value": 1}
    first = LiveServer.start(settings)
    try:
        activity_id = _call(first, "start", {"content_state": state})["activity_id"]
        before = _showing(first, activity_id, 1)
        tokens = {d["name"]: d["push_to_start_token"] for d in first.devices()}
        # Stop only once the server has both update tokens: a restart within the same second as
        # the start would otherwise meet the server's one-second timestamps (the next update
        # can carry the start's timestamp, which a phone ignores: a truthful-delivery finding).
        wait_until(
            lambda: http_json("GET", first.control_url + "/info")[1]["token_reports"],
            lambda reports: reports["delivered"] == 2,
        )
        time.sleep(1.1)
    finally:
        first.stop()
    assert (tmp_path / "simulator" / "devices.json").stat().st_mode & 0o777 == 0o600

    second = LiveServer.start(settings)
    try:
        again = second.shown(activity_id)
        assert {d["name"]: d["push_to_start_token"] for d in second.devices()} == tokens
        assert {n: (a["token"], a["content_state"]) for n, a in again.items()} == {
            n: (a["token"], a["content_state"]) for n, a in before.items()
        }
        _call(
            second, "update", {"activity_id": activity_id, "content_state": {**state, "value": 2}}
        )
        after = _showing(second, activity_id, 2)
        assert all(a["order_violations"] == 0 for a in after.values())
    finally:
        second.stop()

    fresh = LiveServer.start(replace(settings, simulate=replace(settings.simulate, fresh=True)))
    try:
        assert fresh.shown(activity_id) == {}  # new phones: nothing on their lock screens
    finally:
        fresh.stop()
