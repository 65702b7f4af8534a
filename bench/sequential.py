"""Scenario 6, sequential calls: one stream, one caller sending its next call as soon as the last
is answered.

The processes of scenario 2 (`bench.harness.stack`: the server with its SQLite store and engine,
the simulator, the generator). One stream targets one simulated iPhone; it is started and the
phone reports its update token; then `calls` stream updates are due at once on one keep-alive
connection, so each goes out the moment the previous one is answered (a closed loop of one
caller, as a script updating a stream in a loop). The engine sends at most one push per activity
per second, so nearly every call's push is held by pacing or coalesced behind the one in flight:
the figures say whether the calls wait for that — the calls answered per second and the reply
time (p50, p99) — and, `settle` seconds after the last call, whether the stream's last state is
on the phone (the invariant: 0 lost, 0 order violations), with the pushes it took.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness.core import RunEnv, record, summarize
from bench.harness.loadgen import CallResult, Generator
from bench.harness.stack import API_KEY, Stack, open_stack
from bench.harness.streams import device_for, put_call, setup_streams, stream_keys

SCENARIO = "sequential"
MEASURED = (
    "HTTP/1.1 PUT /api/live-activity/stream/{key} on one stream, one keep-alive connection, each "
    "call sent when the previous one is answered: the reply time (request bytes sent -> answer "
    "complete) through the full server (ASGI app, service, SQLite group commit, engine), calls "
    "answered per second, pushes the fake APNs (TLS, 127.0.0.1) accepted, and the last state on "
    "the simulated iPhone"
)


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """One record: `cfg["calls"]` sequential calls on one stream."""
    (key,) = stream_keys(1)
    settings = {**cfg, "streams": 1, "devices": 1, "connections": 1}
    with open_stack(
        cores=env.cores,
        folder=env.folder,
        devices=1,
        max_active=int(cfg.get("max_active", 5)),
        seed=int(cfg.get("seed", 0)),
    ) as stack:
        gen = Generator.spawn(env.cores.generator, stack.api_base, API_KEY)
        try:
            setup = setup_streams(stack, gen, [key], 1, connections=1, timeout=60.0)
            activity_id = setup["activity_ids"].get(key)
            if activity_id is None:
                raise RuntimeError(f"the stream {key!r} did not start ({setup})")
            figures = measure(stack, gen, key, activity_id, cfg)
        finally:
            gen.stop()
    env.progress(_line(figures))
    return [
        record(
            SCENARIO,
            f"{figures['calls']} calls",
            settings=settings,
            figures=figures,
            machine=env.machine,
            cores=env.cores,
            measured=MEASURED,
        )
    ]


def measure(
    stack: Stack, gen: Generator, key: str, activity_id: str, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Run the calls, wait `settle` seconds, check the phone."""
    count = int(cfg["calls"])
    markers = [f"q{i}" for i in range(count)]
    calls = [put_call(0.0, key, marker, i + 1) for i, marker in enumerate(markers)]
    out = gen.run(calls, connections=1, deadline=float(cfg.get("deadline", 120.0)))
    time.sleep(float(cfg.get("settle", 2.5)))
    arrivals = stack.sim.ask("arrivals", timeout=60)
    check = stack.sim.ask(
        "check", timeout=60, expected={activity_id: (markers[-1], device_for(0, 1))}, ended=False
    )
    return sequential_figures(out["results"], len(arrivals), check)


def sequential_figures(
    results: list[CallResult], pushes: int, check: dict[str, Any]
) -> dict[str, Any]:
    """Calls per second over the run, reply percentiles (ms), pushes and the phone's verdict."""
    ok = [r for r in results if r.status == 200]
    span = (max(r.done for r in ok) - min(r.sent for r in ok)) if ok else 0.0
    return {
        "calls": len(results),
        "calls_ok": len(ok),
        "calls_failed": len(results) - len(ok),
        "calls_per_s": round(len(ok) / span, 1) if span > 0 else 0.0,
        "duration_s": round(span, 3),
        "reply_ms": summarize((r.done - r.sent for r in ok), scale=1000),
        "pushes": pushes,
        "final_delivered": check["delivered"] == check["expected"],
        "lost_final_states": check["lost"],
        "order_violations": check["order_violations"],
    }


def _line(f: dict[str, Any]) -> str:
    reply = f["reply_ms"]
    return (
        f"sequential: {f['calls_ok']}/{f['calls']} calls, {f['calls_per_s']:g} calls/s, "
        f"p50 {reply['p50']} ms, p99 {reply['p99']} ms, {f['pushes']} pushes, "
        f"last state {'on the phone' if f['final_delivered'] else 'LOST'}"
    )
