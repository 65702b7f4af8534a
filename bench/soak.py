"""Scenario 5, fault soak: scenario 2's load with the simulator's fault plan on; nothing lost.

The same three processes as `bench.latency`, but the simulator runs a seeded fault plan
(`bench/faults/example.toml` by default: answer latency, 429/500/503 bursts, GOAWAY every few
thousand streams, resets, dropped connections, stream-limit swings, the odd unregistered token).
The streams are started, updated over HTTP at `rate` calls/s for `seconds`, then each is ended
(`DELETE` with a final state carrying a marker). Then the simulated devices are read until every
final state is on its device or `settle_timeout` runs out.

The invariants (must be 0): final states lost — an ended activity that does not show its final
state on its device — and order violations — a device receiving an older state after a newer
one. A final that cannot arrive because the fault plan unregistered that activity's token (the
app is gone: 410) is not lost, it is counted apart as `finals_unregistered`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.harness.core import BENCH_DIR, RunEnv, record
from bench.harness.loadgen import Generator
from bench.harness.stack import API_KEY, Stack, open_stack
from bench.harness.streams import (
    device_for,
    devices_for,
    end_call,
    round_robin,
    setup_streams,
    stream_keys,
)
from bench.latency import latency_figures

SCENARIO = "soak"
MEASURED = (
    "HTTP/1.1 stream PUTs then DELETEs through the full server against the fake APNs with its "
    "fault plan on (TLS, 127.0.0.1); final states and order violations read on the simulated "
    "devices"
)


def fault_plan_path(value: str) -> str:
    """A fault plan path from a scenario file: relative paths are from the repository root."""
    path = Path(value)
    return str(path if path.is_absolute() else BENCH_DIR.parent / path)


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """One soak; one record."""
    rate, seconds = float(cfg["rate"]), float(cfg["seconds"])
    per_device = int(cfg.get("streams_per_device", 10))
    streams = max(1, math.ceil(rate * float(cfg.get("stream_headroom", 1.5))))
    keys = stream_keys(streams)
    devices = devices_for(streams, per_device)
    faults = fault_plan_path(str(cfg.get("faults", "bench/faults/example.toml")))
    connections = int(cfg["connections"])
    env.progress(f"soak: {streams} streams at {rate:g} calls/s for {seconds:g} s, faults {faults}")
    # Room for a rotated activity next to one whose end could not be delivered (410).
    with open_stack(
        cores=env.cores,
        folder=env.folder,
        devices=devices,
        max_active=per_device * 2,
        seed=int(cfg.get("seed", 0)),
        faults=faults,
    ) as stack:
        gen = Generator.spawn(env.cores.generator, stack.api_base, API_KEY)
        try:
            setup = setup_streams(
                stack, gen, keys, per_device, connections=connections, timeout=60.0
            )
            calls, markers = round_robin(keys, rate, seconds, "k")
            out = gen.run(
                calls, connections=connections, deadline=seconds + float(cfg.get("drain", 30.0))
            )
            arrivals = stack.sim.ask("arrivals", timeout=60)
            load = latency_figures(
                rate, seconds, streams, out, markers, arrivals, server_cpu=0.0, sim_cpu=0.0
            )
            finals = [end_call(i / rate, key, f"final-{key}", i) for i, key in enumerate(keys)]
            ends = gen.run(
                finals,
                connections=connections,
                deadline=len(keys) / rate + float(cfg.get("drain", 30.0)),
            )
            expected = {}
            for i, (key, result) in enumerate(zip(keys, ends["results"], strict=True)):
                aid = result.activity_id or setup["activity_ids"].get(key)
                if aid is not None:
                    expected[aid] = (f"final-{key}", device_for(i, per_device))
            check, waited = _settle(stack, expected, float(cfg.get("settle_timeout", 120.0)))
            counters = stack.sim.ask("counters", timeout=30)
            server = stack.server.ask("stats", timeout=30)
            explained = stack.server.ask(
                "explain", timeout=30, activity_ids=check["lost_examples"][:3]
            )
        finally:
            gen.stop()
    figures = {
        "streams": streams,
        "updates": {
            k: load[k]
            for k in (
                "offered_rate",
                "achieved_rate",
                "calls_ok",
                "calls_failed",
                "errors",
                "latency_ms",
            )
        },
        "ends_ok": sum(1 for r in ends["results"] if r.status == 200),
        "ends_failed": sum(1 for r in ends["results"] if r.status != 200),
        "setup_failed": setup["failed"],
        "lost_final_states": check["lost"],
        "order_violations": check["order_violations"],
        "finals_delivered": check["delivered"],
        "finals_expected": check["expected"],
        "finals_unregistered": check["finals_unregistered"],
        "lost_examples": check["lost_examples"],
        "lost_on_devices": check["lost_on_devices"],
        "lost_on_server": explained,
        "settle_s": round(waited, 2),
        "faults_injected": counters["faults"],
        "apns_rejected": counters["rejected"],
        "apns_requests": counters["requests"],
        "apns_connections": counters["connections"],
        "server_pushes_failed": server["failed"],
        "server_tokens_dead": server["rejected"],
    }
    env.progress(
        f"soak: {figures['finals_delivered']}/{figures['finals_expected']} finals "
        f"delivered, lost {figures['lost_final_states']}, order violations "
        f"{figures['order_violations']}, faults {figures['faults_injected']}"
    )
    settings = {**cfg, "faults": faults, "streams": streams, "devices": devices}
    return [
        record(
            SCENARIO,
            f"{rate:g} calls/s for {seconds:g} s with faults",
            settings=settings,
            figures=figures,
            machine=env.machine,
            cores=env.cores,
            measured=MEASURED,
        )
    ]


def _settle(
    stack: Stack, expected: dict[str, tuple[str, str]], timeout: float
) -> tuple[dict[str, Any], float]:
    """Read the devices until every final is there (or unreachable) or `timeout` runs out."""
    t0 = time.monotonic()
    while True:
        check: dict[str, Any] = stack.sim.ask("check", timeout=120, expected=expected)
        if check["lost"] == 0 or time.monotonic() - t0 > timeout:
            return check, time.monotonic() - t0
        time.sleep(0.5)
