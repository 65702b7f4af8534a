"""Crash-stop under load: `lockstep serve` (simulate mode) killed with SIGKILL while streams are
updated, restarted on the same state directory, three times; then no new call: what the phones
show, against what the API accepted.

`python -m bench.kill9 --streams 3 --kills 3 --run 4 --settle 60` starts `lockstep serve` in a
child process (ports picked free on 127.0.0.1, a fresh state directory), updates `--streams`
streams in turn from this process (each value one more than the last), and `--run` seconds into
each run kills the server with SIGKILL mid-load and starts it again on the same state directory.
After the last restart it stops calling and waits up to `--settle` seconds for the phones. One
JSON line on stdout: per kill the calls accepted and cut off, then the **lost final states** (a
phone showing less than the last value the API accepted for a stream, or not showing the stream),
**order violations** (the phones' own count), and the machine. A value above the last accepted
one is not lost: the kill cut that call's answer off after it was stored. Loopback only; bounded
by `--kills × --run + --settle` plus start-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness.core import machine_info
from bench.slowclients import free_port, wait_up

API_KEY = "lsk_bench_send_key_0123456789abcdef"
DEVICE_KEY = "lsd_bench_device_key_0123456789abcdef"
HOST = "127.0.0.1"
PHONES = 3


def call(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """One API call with the bench key: (status, decoded JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {API_KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, None


class Load:
    """Stream updates in turn, until stopped; remembers what was accepted and what was sent."""

    def __init__(self, api: str, streams: int) -> None:
        self.api, self.keys = api, [f"job-{n}" for n in range(streams)]
        self.value = 0
        self.accepted: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.calls = self.cut = 0
        self.statuses: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        """Bounded: at most a million calls, whatever happens."""
        for _ in range(1_000_000):
            if self.stop.is_set():
                return
            self.value += 1
            for key in self.keys:
                self.sent[key] = self.value
                state = {"title": key, "type": "value", "value": self.value}
                try:
                    status, _ = call(
                        "PUT", f"{self.api}/live-activity/stream/{key}", {"content_state": state}
                    )
                except (urllib.error.URLError, OSError):
                    self.cut += 1
                    time.sleep(0.05)  # the server is down: keep trying until the restart
                    continue
                self.calls += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200:
                    self.accepted[key] = self.value


def start_server(
    folder: Path, port: int, control: int, state: Path | None = None
) -> subprocess.Popen[bytes]:
    """`lockstep serve` in simulate mode on `port`, its state in `state` (default
    `folder/state`), its output in `folder/server.log`."""
    config = folder / "lockstep.toml"
    config.write_text(
        f'[server]\napi_keys = ["{API_KEY}"]\ndevice_keys = ["{DEVICE_KEY}"]\n'
        f"[simulate]\ndevices = {PHONES}\ncontrol_port = {control}\n"
    )
    cmd = [sys.executable, "-m", "engine.cli.main", "serve", "--config", str(config)]
    cmd += ["--port", str(port), "--state-dir", str(state or folder / "state")]
    log = (folder / "server.log").open("ab")  # a file, not a pipe nobody drains
    return subprocess.Popen(cmd, stdout=log, stderr=log)


def verdict(control: int, load: Load) -> tuple[int, int, dict[str, Any]]:
    """(lost final states, order violations, what each phone shows per stream: the value, or
    None when the phone does not show it)."""
    with urllib.request.urlopen(f"http://{HOST}:{control}/devices", timeout=5.0) as answer:
        devices = json.loads(answer.read())["devices"]
    shown: dict[str, Any] = {}
    lost = violations = 0
    for device in devices:
        live = {
            a["content_state"].get("title"): a
            for a in device["activities"]
            if a["state"] in ("active", "stale")
        }
        for key in load.keys:
            act = live.get(key)
            value = None if act is None else act["content_state"].get("value")
            shown[f"{device['name']}/{key}"] = value
            if value is None or value < load.accepted.get(key, 0):
                lost += 1
            violations += 0 if act is None else act["order_violations"]
    return lost, violations, shown


def settle(control: int, load: Load, seconds: float) -> tuple[int, int, dict[str, Any]]:
    """`verdict` once nothing is lost, or as it stands after `seconds` (the phones catching up
    with what the API accepted)."""
    deadline = time.monotonic() + seconds
    while True:
        lost, violations, shown = verdict(control, load)
        if lost == 0 or time.monotonic() > deadline:
            return lost, violations, shown
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; print its JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.kill9", description=__doc__)
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--run", type=float, default=4.0, help="seconds of load before each kill")
    p.add_argument("--settle", type=float, default=60.0, help="seconds to wait for the phones")
    args = p.parse_args(argv)
    port, control = free_port(), free_port()
    kills: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc = start_server(folder, port, control)
        load = Load(f"http://{HOST}:{port}/api", args.streams)
        thread = threading.Thread(target=load.run, daemon=True)
        try:
            wait_up(port, proc)
            thread.start()
            for _ in range(args.kills):
                time.sleep(args.run)
                before = (load.calls, load.cut)
                os.kill(proc.pid, signal.SIGKILL)  # mid-load: no drain, no last save
                proc.wait(30)
                proc = start_server(folder, port, control)
                wait_up(port, proc)
                kills.append(
                    {"calls_before": before[0], "refused_while_down": load.cut - before[1]}
                )
            time.sleep(args.run)
            load.stop.set()
            thread.join(30)
            lost, violations, shown = settle(control, load, args.settle)
        finally:
            load.stop.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        json.dumps(
            {
                "bench": "kill9",
                "streams": args.streams,
                "phones": PHONES,
                "kills": kills,
                "calls": load.calls,
                "accepted": load.accepted,
                "lost_final_states": lost,
                "order_violations": violations,
                "shown": shown,
                "machine": machine_info(),
            }
        )
    )
    return 0 if lost == 0 and violations == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
