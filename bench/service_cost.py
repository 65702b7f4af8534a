"""The service's own cost per call: the whole server minus the HTTP front, in CPU µs per call.

    python -m bench.service_cost [--calls 20000] [--streams 64] [--rounds 3] [--profile PATH]
                                 [--out PATH]

One process runs what `lockstep serve` runs in simulate mode (`open_server`: the SQLite store
with group commit in WAL mode, synchronous=FULL, the engine, the in-process simulator and its
iPhones) and drives the API application (`http.app.ApiApp`, the same routes, auth, decoding and
encoding) directly through ASGI, without sockets: what is left is everything a call costs except
the HTTP front's own work (`bench.front` measures that). `--streams` callers run concurrently,
each on its own stream (a metrics Live Activity on one iPhone), and each sends its next PUT as soon
as the previous one is answered. Two kinds of call are measured, one after the other:

- `noop`: the same state again (validated, compared with the stored one, answered `noop`);
- `update`: a new state each time: validated, payload built and size-checked, stored (durable
  before the answer), handed to the engine (which coalesces per the pacing rules).

The figure is this process's CPU time (user + system, every thread: the store's commits
included) over the calls, per call; the median round is reported. `--profile PATH` runs
cProfile over the timed part of each kind and dumps it to `PATH.<kind>` (profiled figures are
slower and not comparable). One JSON line on stdout (appended to `--out` when given), machine
and commit included.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench.harness.core import append_results, cpu_seconds, machine_info, pin, usable_cores

API_KEY: Final = "lsk_bench_service_key_0123456789abcdef"
DEVICE_KEY: Final = "lsd_bench_service_dev_0123456789abcdef"
KINDS: Final = ("noop", "update")
WARMUP: Final = 0.1  # of the calls, before each timed part
PACING: Final = 60.0  # s between two pushes of one stream


def body(key: str, value: int, channel: str | None = None) -> bytes:
    """A stream PUT body: a metrics state (~150 bytes of content-state), as the scenarios send."""
    state = {
        "title": key,
        "subtitle": "service cost",
        "type": "metrics",
        "metrics": [
            {"label": "CPU", "value": value, "unit": "%"},
            {"label": "MEM", "value": 45, "unit": "%"},
        ],
    }
    call: dict[str, Any] = {"content_state": state}
    if channel is not None:
        call["channels"] = [channel]
    return json.dumps(call).encode()


class Caller:
    """Calls the ASGI app directly: one PUT at a time, the answer's status checked."""

    def __init__(self, app: Any, key: str) -> None:
        self._app = app
        self.key = key
        self._path = f"/api/live-activity/stream/{key}"
        self._headers = [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {API_KEY}".encode()),
            (b"content-type", b"application/json"),
        ]

    async def put(self, data: bytes) -> int:
        """One PUT of `data`; the HTTP status answered."""
        scope = {
            "type": "http",
            "method": "PUT",
            "path": self._path,
            "headers": [*self._headers, (b"content-length", str(len(data)).encode())],
            "query_string": b"",
            "client": ("127.0.0.1", 1),
        }
        message = {"type": "http.request", "body": data, "more_body": False}
        status = 0

        async def receive() -> dict[str, Any]:
            return message

        async def send(event: dict[str, Any]) -> None:
            nonlocal status
            if event["type"] == "http.response.start":
                status = int(event["status"])

        await self._app(scope, receive, send)
        return status


async def drive(callers: list[Caller], calls: int, bodies: Callable[[int, int], bytes]) -> None:
    """`calls` PUTs spread over the callers, each caller one at a time; any non-200 raises."""
    import trio

    per = max(1, calls // len(callers))

    async def one(index: int, caller: Caller) -> None:
        for n in range(per):
            status = await caller.put(bodies(index, n))
            if status != 200:
                raise RuntimeError(f"a PUT answered {status}")

    async with trio.open_nursery() as nursery:
        for index, caller in enumerate(callers):
            nursery.start_soon(one, index, caller)


async def measure(
    streams: int, calls: int, rounds: int, profile: Path | None, folder: Path
) -> dict[str, Any]:
    """Start the server in simulate mode, start the streams, time each kind `rounds` times."""
    from engine.config import DeliveryConfig
    from engine.server.http.app import create_app
    from engine.server.http.openapi import build_openapi
    from engine.server.http.prom import PromMetrics
    from engine.server.serve import open_server
    from engine.server.service import LiveConfig
    from engine.server.settings import Settings, SimulateSettings

    devices = max(1, -(-streams // 5))  # five streams per iPhone: its Live Activity limit
    settings = Settings(
        port=0,
        state_dir=folder,
        api_keys=(API_KEY,),
        device_keys=(DEVICE_KEY,),
        live=LiveConfig(device_limit=5),
        # One push per stream a minute: the engine's pushes (TLS, HTTP/2, the simulator's side)
        # stay out of the figure, what is left is the call's own work and its hand-off.
        delivery=DeliveryConfig(pacing_interval=PACING),
        simulate=SimulateSettings(devices=0, control_port=None, fresh=True),
        access_log=False,
    )
    async with open_server(settings) as running:
        app = create_app(
            running.service,
            api_keys=settings.api_keys,
            device_keys=settings.device_keys,
            metrics=PromMetrics(),
            openapi=build_openapi(),
        )
        await _add_iphones(running, devices)
        keys = [f"cost{i:04d}" for i in range(streams)]
        callers = [Caller(app, key) for key in keys]
        for i, caller in enumerate(callers):  # five streams per iPhone, through its channel
            if await caller.put(body(caller.key, 0, f"ch{i // 5}")) != 200:
                raise RuntimeError("a stream did not start")
        await _wait_tokens(running.service)
        rows: list[dict[str, Any]] = []
        # Built beforehand, so the timed part holds no JSON encoding of the driver's own: each
        # stream's call n carries value 1000 + n % 1000 (never the `noop` state's 7).
        table = [[body(key, 1000 + n) for n in range(1000)] for key in keys]

        def fresh(index: int, n: int) -> bytes:
            return table[index][n % 1000]

        same = {i: body(key, 7) for i, key in enumerate(keys)}
        await drive(callers, streams, lambda i, n: same[i])  # every stream at the `noop` state
        for _ in range(rounds):
            for kind in KINDS:
                make = (lambda i, n: same[i]) if kind == "noop" else fresh
                await drive(callers, int(calls * WARMUP), make)
                if kind == "noop":
                    await drive(callers, streams, lambda i, n: same[i])
                prof = cProfile.Profile() if profile is not None else None
                cpu0, t0 = cpu_seconds(), time.perf_counter()
                if prof is not None:
                    prof.enable()
                await drive(callers, calls, make)
                if prof is not None:
                    prof.disable()
                    prof.dump_stats(f"{profile}.{kind}")
                cpu1, t1 = cpu_seconds(), time.perf_counter()
                done = (calls // streams) * streams
                rows.append(
                    {
                        "kind": kind,
                        "calls": done,
                        "us_per_call": round((cpu1 - cpu0) / done * 1e6, 1),
                        "calls_per_s": round(done / (t1 - t0)),
                    }
                )
        stats = running.service.store.stats()
    median = {k: statistics.median(r["us_per_call"] for r in rows if r["kind"] == k) for k in KINDS}
    return {
        "us_per_call": median,
        "rounds": rows,
        "store_mean_batch": round(stats["mean_batch"], 1),
    }


async def _add_iphones(running: Any, devices: int) -> None:
    """Simulated iPhones `iphone-<i>` on channel `ch<i>` each, registered as their app would."""
    from engine.server.contract import models

    apns = running.simulator.simulator.apns
    for i in range(devices):
        device = apns.registry.add_device(f"iphone-{i}", channels=[f"ch{i}"], now=apns.wall_clock())
        await running.service.devices.register(
            device.name,
            models.DeviceRegistration(
                push_to_start_token=device.push_to_start_token,
                name=device.name,
                channels=[f"ch{i}"],
            ),
        )


async def _wait_tokens(service: Any) -> None:
    """Until every recipient has its update token (so updates are pushed, not held)."""
    import trio

    def held() -> bool:
        return any(
            rec.row.update_token is None
            for act in service.registry.activities.values()
            for rec in act.recipients.values()
        )

    with trio.fail_after(30):
        for _ in range(600):  # polled: the reports come from the simulator's own tasks
            if not held():
                return
            await trio.sleep(0.05)


def run(streams: int, calls: int, rounds: int, profile: Path | None) -> dict[str, Any]:
    """Every round of both kinds (pinned to one core when there are two), and the medians."""
    import trio

    machine = machine_info()
    cores = usable_cores()
    pinned = pin(cores[0]) if len(cores) > 1 else False
    try:
        with tempfile.TemporaryDirectory(prefix="lockstep-service-cost-") as tmp:
            figures = trio.run(measure, streams, calls, rounds, profile, Path(tmp))
    finally:
        if pinned:
            os.sched_setaffinity(0, set(cores))
    return {
        "scenario": "service_cost",
        "measured": (
            "CPU (user + system, all threads) per stream PUT through the API app driven over ASGI "
            "without sockets (routes, auth, decode, service, SQLite WAL synchronous=FULL group "
            "commit, engine hand-off, encode): the server minus the HTTP front; median of rounds"
        ),
        "settings": {"streams": streams, "calls": calls, "rounds": rounds},
        "pinned_core": cores[0] if pinned else None,
        **figures,
        "machine": machine,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.service_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    result = run(args.streams, args.calls, args.rounds, args.profile)
    print(json.dumps(result))
    if args.out is not None:
        append_results(args.out, [result])
    for kind in KINDS:
        print(f"{kind}: {result['us_per_call'][kind]} µs per call", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
