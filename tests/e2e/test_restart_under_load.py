"""Restarts keep their word: `lockstep serve` in simulate mode stopped three times while streams
are being updated; afterwards, with no new call, every phone shows for every stream the last state
the API accepted (or a later one whose answer the restart cut off), in order (the simulator keeps
its phones, simulator/state.py)."""

from __future__ import annotations

import threading
import time
import urllib.error
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.serverkit import API_KEY, LiveServer, http_json, simulate_settings, wait_until

pytestmark = pytest.mark.e2e

STREAMS = ("api", "worker", "db")
PHONES = ("iphone-1", "iphone-2")


class Load:
    """Updates every stream in turn with increasing values until stopped (bounded)."""

    def __init__(self, server: LiveServer, value: int) -> None:
        self.server, self.value = server, value
        self.accepted: dict[str, int] = {}  # the last value answered 200, per stream
        self.sent: dict[str, int] = {}  # the last value sent, answered or not
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(10_000):  # bounded, whatever happens
            if self.stop.is_set():
                return
            self.value += 1
            for key in STREAMS:
                self.sent[key] = self.value
                try:
                    status, _ = http_json(
                        "PUT",
                        f"{self.server.api_base}/live-activity/stream/{key}",
                        {"content_state": {"title": key, "type": "value", "value": self.value}},
                        key=API_KEY,
                    )
                except (urllib.error.URLError, OSError):
                    time.sleep(0.01)  # the server is going down: keep pushing until told
                    continue
                if status == 200:
                    self.accepted[key] = self.value


def _shown(server: LiveServer) -> dict[tuple[str, str], tuple[int, int]]:
    """(phone, stream) -> (value shown, order violations), for the streams' live activities."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for device in server.devices():
        for act in device["activities"]:
            title = act["content_state"].get("title")
            if title in STREAMS and act["state"] in ("active", "stale"):
                out[(device["name"], title)] = (
                    act["content_state"]["value"],
                    act["order_violations"],
                )
    return out


def test_three_restarts_under_load_lose_no_accepted_state(tmp_path: Path) -> None:
    settings = simulate_settings(tmp_path, devices=2, seed=808)
    accepted: dict[str, int] = {}
    sent: dict[str, int] = {}
    value = 0
    for _ in range(3):
        server = LiveServer.start(settings)
        load = Load(server, value)
        load.thread.start()
        wait_until(partial(len, load.accepted), lambda n: n == len(STREAMS), timeout=30)
        time.sleep(1.0)  # a second of calls, then the restart cuts into them
        server.stop()
        load.stop.set()
        load.thread.join(30)
        assert not load.thread.is_alive()
        accepted |= load.accepted
        sent |= load.sent
        value = load.value
    server = LiveServer.start(settings)  # no new call from here on
    try:

        def settled(shown: dict[tuple[str, str], tuple[int, int]]) -> bool:
            return len(shown) == len(PHONES) * len(STREAMS) and all(
                accepted[key] <= shown[(phone, key)][0] <= sent[key] for phone, key in shown
            )

        final = wait_until(lambda: _shown(server), settled, timeout=60)
        assert all(violations == 0 for _, violations in final.values()), final
    finally:
        server.stop()
