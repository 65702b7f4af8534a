"""Scenario 2, end-to-end latency: HTTP stream PUT -> the push on the simulator's wire.

Three processes on 127.0.0.1: the server (`open_server`: HTTP API, service, SQLite store with
group commit, engine; pinned to its own core), the simulator (fake APNs over TLS, pinned to the
other core) and the open-loop generator (`bench.harness.loadgen`, with the simulator unless a
third core exists). First `streams` streams are started (each on its own simulated iPhone's
channel) and every device reports its update token; then, for each offered rate, the generator
issues stream updates on a fixed schedule, cycling through `rate * stream_headroom` streams so
that no stream is updated twice within a second (the engine's pacing would otherwise hold the
second push back, which is scenario 3's subject, not this one's).

Latency is the time from the moment the request's bytes went to the socket to the moment the
simulator accepted the push carrying the call's marker (one machine-wide monotonic clock). Also
reported: the same from the call's due time (includes the generator's own lag, so an overloaded
run cannot hide behind a slow generator), the HTTP reply time, the achieved rate, and CPU per call.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from bench.harness.core import RunEnv, record, summarize
from bench.harness.loadgen import Generator
from bench.harness.stack import API_KEY, Stack, open_stack
from bench.harness.streams import devices_for, round_robin, setup_streams, stream_keys
from engine.server.http.h11server import DEFAULT_PARSER
from engine.server.http.server import SERVER_ENV

SCENARIO = "latency"
MEASURED = (
    "HTTP/1.1 PUT /api/live-activity/stream/{key} (stream update, keep-alive connections) -> "
    "the push accepted by the fake APNs (TLS, 127.0.0.1), through the full server: ASGI app, "
    "service, SQLite (WAL, synchronous=FULL, group commit), coalescer, HTTP/2 pool"
)


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """Every offered rate in `cfg["rates"]`; one record per rate."""
    rates = [float(r) for r in cfg["rates"]]
    headroom = float(cfg.get("stream_headroom", 1.5))
    per_device = int(cfg.get("streams_per_device", 10))
    streams = max(math.ceil(r * headroom) for r in rates)
    keys = stream_keys(streams)
    devices = devices_for(streams, per_device)
    # The server process's HTTP front: `server = "hypercorn"` in the scenario file, or the
    # environment variable the spawned server process reads (engine.server.http.server).
    if "server" in cfg:
        os.environ[SERVER_ENV] = str(cfg["server"])
    server = os.environ.get(SERVER_ENV) or DEFAULT_PARSER
    settings = {**cfg, "streams": streams, "devices": devices, "server": server}
    env.progress(f"latency: {streams} streams on {devices} simulated iPhones, {server} server")
    records = []
    with open_stack(
        cores=env.cores,
        folder=env.folder,
        devices=devices,
        max_active=per_device,
        seed=int(cfg.get("seed", 0)),
    ) as stack:
        gen = Generator.spawn(env.cores.generator, stack.api_base, API_KEY)
        try:
            t0 = time.monotonic()
            setup = setup_streams(
                stack, gen, keys, per_device, connections=int(cfg["connections"]), timeout=60.0
            )
            env.progress(
                f"latency: streams started in {time.monotonic() - t0:.1f} s "
                f"({setup['failed']} failed, {setup['held']} held)"
            )
            for rate in rates:
                figures = measure_rate(stack, gen, keys, rate, cfg)
                figures["setup_failed"], figures["setup_held"] = setup["failed"], setup["held"]
                env.progress(_line(rate, figures))
                records.append(
                    record(
                        SCENARIO,
                        f"{rate:g} calls/s",
                        settings={**settings, "rate": rate},
                        figures=figures,
                        machine=env.machine,
                        cores=env.cores,
                        measured=MEASURED,
                    )
                )
        finally:
            gen.stop()
    return records


def measure_rate(
    stack: Stack, gen: Generator, keys: list[str], rate: float, cfg: dict[str, Any]
) -> dict[str, Any]:
    """One offered rate: run the schedule, wait for stragglers, match pushes to calls."""
    seconds = float(cfg["seconds"])
    used = min(len(keys), max(1, math.ceil(rate * float(cfg.get("stream_headroom", 1.5)))))
    calls, markers = round_robin(keys[:used], rate, seconds, f"r{rate:g}-")
    before_server = stack.server.ask("stats", timeout=30)
    before_sim = stack.sim.ask("counters", timeout=30)
    out = gen.run(
        calls, connections=int(cfg["connections"]), deadline=seconds + float(cfg.get("drain", 10.0))
    )
    time.sleep(float(cfg.get("settle", 1.5)))
    arrivals = stack.sim.ask("arrivals", timeout=60)
    after_server = stack.server.ask("stats", timeout=30)
    after_sim = stack.sim.ask("counters", timeout=30)
    return latency_figures(
        rate,
        seconds,
        used,
        out,
        markers,
        arrivals,
        server_cpu=after_server["cpu_s"] - before_server["cpu_s"],
        sim_cpu=after_sim["cpu_s"] - before_sim["cpu_s"],
    )


def latency_figures(
    rate: float,
    seconds: float,
    streams: int,
    out: dict[str, Any],
    markers: list[str],
    arrivals: list[tuple[Any, Any, Any, float]],
    *,
    server_cpu: float,
    sim_cpu: float,
) -> dict[str, Any]:
    """Match each call to the first push carrying its marker; percentiles in milliseconds."""
    first: dict[str, float] = {}
    for _, marker, _, at in arrivals:
        if marker is not None and marker not in first:
            first[marker] = at
    results = out["results"]
    ok = [r for r in results if r.status == 200]
    wire, from_due, reply, lag = [], [], [], []
    for r, marker in zip(results, markers, strict=True):
        if r.status != 200:
            continue
        reply.append(r.done - r.sent)
        lag.append(r.sent - r.due)
        seen = first.get(marker)
        if seen is not None:
            wire.append(seen - r.sent)
            from_due.append(seen - r.due)
    span = (max(r.done for r in ok) - out["start"]) if ok else 0.0
    return {
        "offered_rate": rate,
        "achieved_rate": round(len(ok) / span, 1) if span > 0 else 0.0,
        "calls": len(results),
        "calls_ok": len(ok),
        "calls_failed": len(results) - len(ok),
        # Of the failed: not answered by the run's deadline (the server fell that far behind),
        # a transport error, or an HTTP status other than 200.
        "calls_unanswered": sum(1 for r in results if r.status == 0),
        "calls_transport_error": sum(1 for r in results if r.status == -1),
        "calls_http_error": sum(1 for r in results if r.status not in (0, -1, 200)),
        "errors": out["errors"],
        "streams_used": streams,
        "pushes_matched": len(wire),
        "calls_without_push": len(ok) - len(wire),
        "latency_ms": summarize(wire, scale=1000),
        "latency_from_due_ms": summarize(from_due, scale=1000),
        "reply_ms": summarize(reply, scale=1000),
        "generator_lag_ms": summarize(lag, scale=1000),
        "server_cpu_us_per_call": round(server_cpu / max(len(ok), 1) * 1e6, 1),
        "server_cpu_load": round(server_cpu / max(span, seconds), 2),
        "simulator_cpu_us_per_push": round(sim_cpu / max(len(arrivals), 1) * 1e6, 1),
        "generator_cpu_s": round(out["cpu_s"], 2),
        "duration_s": seconds,
    }


def _line(rate: float, f: dict[str, Any]) -> str:
    lat = f["latency_ms"]
    return (
        f"latency @ {rate:g}/s: achieved {f['achieved_rate']:g}/s, p50 {lat['p50']} ms, "
        f"p99 {lat['p99']} ms, max {lat['max']} ms, {f['calls_failed']} failed, "
        f"{f['calls_without_push']} without push"
    )
