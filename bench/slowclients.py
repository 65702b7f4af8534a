"""Normal requests under a slow-client attack: how long a new client waits for its answer.

`python -m bench.slowclients --slow 1100 --every 20 --duration 60 [--idle 0]` starts
`lockstep serve` (simulate mode, a fresh state directory, ports picked free on 127.0.0.1) in a
child process, then from this process holds `--slow` connections that each send one byte of a
request head every `--every` seconds (and reconnect at once when the server closes them, as an
attacker would) plus `--idle` connections that send nothing (also reconnecting). Meanwhile, once a
second, a new client opens a connection and sends a normal request (alternately `GET
/api/devices` with the API key and a device's token report `POST /api/activity-tokens`); the
time from connect to the complete answer is its latency, and a probe unanswered after
`--probe-timeout` seconds counts as failed. One JSON line on stdout: the settings, the machine,
probe latencies (p50, p90, max), failures and the attackers' reconnects.

`--source DIR` runs the server from another checkout (a before/after comparison); `--set
key=value` adds `[server]` keys (`head_timeout=10`, `max_connections=1024`, ...).
Loopback only; bounded by `--duration` plus start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.harness.core import machine_info, percentile

API_KEY = "lsk_bench_send_key_0123456789abcdef"
DEVICE_KEY = "lsd_bench_device_key_0123456789abcdef"
HOST = "127.0.0.1"
REPORT = json.dumps(
    {"device_id": "iphone-1", "activity_id": "la_probe", "activity_token": "ab" * 32}
).encode()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound, then released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _probe_request(i: int) -> bytes:
    """The i-th normal request: a device listing or a token report, alternately."""
    if i % 2 == 0:
        return (
            f"GET /api/devices HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
    return (
        f"POST /api/activity-tokens HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Authorization: Bearer {DEVICE_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(REPORT)}\r\nConnection: close\r\n\r\n"
    ).encode() + REPORT


class Tally:
    """What the attackers and probes saw."""

    def __init__(self) -> None:
        self.reconnects = 0
        self.latencies: list[float] = []
        self.failed = 0
        self.statuses: dict[str, int] = {}


async def _slow(port: int, every: float, tally: Tally, silent: bool) -> None:
    """One attacker: a head that never ends, a byte every `every` s (or nothing); reconnects."""
    while True:
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            await trio.sleep(0.1)
            continue
        try:
            if silent:
                await stream.receive_some(1)
            else:
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nX-Pad: ")
                while True:
                    await trio.sleep(every)
                    await stream.send_all(b"a")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
        tally.reconnects += 1


async def _probe(port: int, i: int, limit: float, tally: Tally) -> None:
    """One normal client: connect, ask, read the answer to its end; its latency."""
    start = time.monotonic()
    reply = b""
    with trio.move_on_after(limit):
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            tally.failed += 1
            return
        try:
            await stream.send_all(_probe_request(i))
            while chunk := await stream.receive_some(65536):
                reply += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
    if not reply.startswith(b"HTTP/1.1 "):
        tally.failed += 1
        return
    status = reply[9:12].decode(errors="replace")
    tally.statuses[status] = tally.statuses.get(status, 0) + 1
    tally.latencies.append(time.monotonic() - start)


async def _attack(args: argparse.Namespace, port: int) -> Tally:
    tally = Tally()
    async with trio.open_nursery() as attackers:
        for _ in range(args.slow):
            attackers.start_soon(_slow, port, args.every, tally, False)
        for _ in range(args.idle):
            attackers.start_soon(_slow, port, args.every, tally, True)
        await trio.sleep(args.warmup)  # every attacker connected (or queued)
        async with trio.open_nursery() as probes:
            for i in range(int(args.duration)):
                probes.start_soon(_probe, port, i, args.probe_timeout, tally)
                await trio.sleep(1.0)
        attackers.cancel_scope.cancel()
    return tally


def _start_server(args: argparse.Namespace, folder: Path, port: int) -> subprocess.Popen[bytes]:
    extra = "".join(f"{k} = {v}\n" for k, v in (s.split("=", 1) for s in args.set))
    config = folder / "lockstep.toml"
    config.write_text(
        f'[server]\napi_keys = ["{API_KEY}"]\ndevice_keys = ["{DEVICE_KEY}"]\n{extra}'
        f"[simulate]\ndevices = 1\nfresh = true\ncontrol_port = {free_port()}\n"
    )
    env = dict(os.environ)
    if args.source is not None:
        env["PYTHONPATH"] = str(Path(args.source).resolve())
    cmd = [sys.executable, "-m", "engine.cli.main", "serve", "--config", str(config)]
    cmd += ["--port", str(port), "--state-dir", str(folder / "state")]
    log = (folder / "server.log").open("wb")  # a file, not a pipe nobody drains
    return subprocess.Popen(cmd, cwd=args.source or None, env=env, stdout=log, stderr=log)


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Return once the server in `proc` accepts connections on `port`; exit if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see its log")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def main(argv: list[str] | None = None) -> int:
    """Run one measurement; print its JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.slowclients", description=__doc__)
    p.add_argument("--slow", type=int, default=1100, help="slow clients (a byte every --every s)")
    p.add_argument("--idle", type=int, default=0, help="silent clients")
    p.add_argument("--every", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of probes (one a second)")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--probe-timeout", type=float, default=60.0)
    p.add_argument("--source", default=None, help="run the server from this checkout")
    p.add_argument("--set", action="append", default=[], help="[server] key=value (TOML value)")
    args = p.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = _start_server(args, Path(tmp), port)
        try:
            wait_up(port, proc)
            tally = trio.run(_attack, args, port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ordered = sorted(tally.latencies)
    figures: dict[str, Any] = {
        "probes": len(ordered) + tally.failed,
        "answered": len(ordered),
        "failed": tally.failed,
        "statuses": tally.statuses,
        "attacker_reconnects": tally.reconnects,
    }
    if ordered:
        figures |= {
            "p50_s": round(percentile(ordered, 50), 4),
            "p90_s": round(percentile(ordered, 90), 4),
            "max_s": round(ordered[-1], 4),
        }
    settings = dict(vars(args))
    print(json.dumps({"settings": settings, "figures": figures, "machine": machine_info()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
