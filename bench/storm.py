"""Scenario 3, coalescing storm: many streams, each updated many times a second, for a while.

The load comes from inside the server process, through the embedded API, because the HTTP front
cannot take 100k calls/s in Python (scenario 2 measures what it takes). `api` chooses the door:

- `engine`: `Engine.update(activity_id, update_token, state, lane=device_id)`, the embedded
  engine of the README — coalescing, pacing and delivery, no durability. The lanes are the very
  ones the service opened (same activity and device), so timestamps keep increasing.
- `service`: `service.live.stream(key, StreamRequest)` — validation, the SQLite group commit and
  the outbox on every call (the HTTP API's path without HTTP).

First the streams are started through the service (each on its own simulated iPhone's channel)
and every device reports its update token over the device API. Then `workers` tasks each own a
slice of the streams and, `rate` times a second for `seconds`, update every stream of their
slice with a new marker; a worker that falls behind catches up without sleeping and stops at the
deadline, so an overloaded run shows fewer updates, never a longer run. Then the engine drains.

Reported: updates made (offered and achieved per second), pushes the simulator accepted, the
coalescing ratio (updates / pushes), pushes per second per activity (the pacing bound is 1),
the time from each stream's last update to the push carrying it on the simulated device (p99,
max; one machine-wide monotonic clock), final states missing on the devices, order violations,
and the server's RSS sampled over the run.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from typing import Any

from bench.harness.core import RunEnv, cpu_seconds, record, rss_bytes, summarize
from bench.harness.stack import held_recipients, open_stack
from bench.harness.streams import channel_for, device_for, devices_for, state, stream_keys

SCENARIO = "storm"
SETUP_BATCH = 400
_STREAMS: dict[str, tuple[str, str, str]] = {}  # server process: key -> (activity, token, device)


def _measured(api: str) -> str:
    door = (
        "Engine.update (embedded engine: coalescer, pacing, HTTP/2 pool, TLS)"
        if api == "engine"
        else "service.live.stream (embedded service: validation, SQLite group "
        "commit, outbox, engine)"
    )
    return (
        f"updates through {door} in the server process -> pushes accepted by the fake APNs "
        "(TLS, 127.0.0.1); the HTTP front cannot take this call rate in Python, so it is "
        "not in this path (scenario latency measures it)"
    )


# -- in the server process -------------------------------------------------------------------------


def _request(key: str, marker: str, value: int, channel: str | None = None) -> Any:
    from engine.server.contract import models

    s = state(key, marker, value)
    content = models.ContentState(
        title=s["title"],
        subtitle=s["subtitle"],
        type=s["type"],
        metrics=[models.Metric(**m) for m in s["metrics"]],
    )
    return models.validate(
        models.StreamRequest(content_state=content, channels=[channel] if channel else None)
    )


async def setup(
    running: Any,
    streams: int,
    per_device: int,
    timeout: float,  # noqa: ASYNC109 - a bound per batch of starts, not on the whole call
) -> dict[str, Any]:
    """Start `streams` streams through the service; wait for every device's token report.

    `timeout` bounds the wait for token reports after each batch of starts, not the whole call:
    recipients still held then are counted (`held`) rather than failing the setup.
    """
    import trio

    service = running.service
    keys = stream_keys(streams)
    failed = 0

    async def start(index: int, key: str) -> None:
        nonlocal failed
        try:
            await service.live.stream(
                key, _request(key, "start", 0, channel_for(index, per_device))
            )
        except Exception:  # noqa: BLE001 - a failed start is counted, not fatal
            failed += 1

    t0 = time.monotonic()
    for first in range(0, streams, SETUP_BATCH):
        async with trio.open_nursery() as nursery:
            for j, key in enumerate(keys[first : first + SETUP_BATCH]):
                nursery.start_soon(start, first + j, key)
        with trio.move_on_after(timeout):
            while held_recipients(service) > 0:  # noqa: ASYNC110 - token reports come with no event
                await trio.sleep(0.05)
    _STREAMS.clear()
    ids = {}
    for key in keys:
        act = service.registry.current_of_stream(key)
        if act is None:
            continue
        for device_id, rec in act.recipients.items():
            if rec.row.update_token is not None:
                _STREAMS[key] = (act.row.activity_id, rec.row.update_token, device_id)
                ids[key] = act.row.activity_id
    return {
        "failed": failed,
        "ready": len(_STREAMS),
        "held": held_recipients(service),
        "setup_s": time.monotonic() - t0,
        "activity_ids": ids,
    }


async def storm(
    running: Any,
    api: str,
    rate: float,
    seconds: float,
    workers: int,
    drain_timeout: float,
    sample_interval: float = 0.5,
) -> dict[str, Any]:
    """Drive the storm (see the module docstring); per-stream last updates and RSS samples."""
    import trio

    service = running.service
    engine = running.engine
    keys = sorted(_STREAMS)
    last: dict[str, tuple[str, float]] = {}
    counts = {"made": 0, "failed": 0, "skipped_ticks": 0}
    samples: list[tuple[float, int]] = []
    ticks = max(1, int(rate * seconds))
    cpu0, t0 = cpu_seconds(), time.monotonic() + 0.1
    stop_at = t0 + seconds

    async def call(key: str, marker: str, value: int) -> None:
        if api == "engine":
            activity_id, token, device_id = _STREAMS[key]
            await engine.update(activity_id, token, state(key, marker, value), lane=device_id)
        else:
            await service.live.stream(key, _request(key, marker, value))

    async def worker(index: int, mine: list[str]) -> None:
        phase = index / max(workers, 1)  # spread the workers over each tick
        for k in range(ticks):
            due = t0 + (k + phase) / rate
            if max(due, time.monotonic()) >= stop_at:  # late ticks are dropped, not run over
                counts["skipped_ticks"] += ticks - k
                return
            await trio.sleep(max(0.0, due - time.monotonic()))
            for n, key in enumerate(mine):
                marker = f"u{k}"
                at = time.monotonic()
                try:
                    await call(key, marker, k)
                except Exception:  # noqa: BLE001 - a failed update is counted, not fatal
                    counts["failed"] += 1
                    continue
                last[key] = (marker, at)
                counts["made"] += 1
                if n % 64 == 63:
                    await trio.lowlevel.checkpoint()

    async def sample(done: trio.Event) -> None:
        while not done.is_set():
            samples.append((time.monotonic() - t0, rss_bytes()))
            with trio.move_on_after(sample_interval):
                await done.wait()
        samples.append((time.monotonic() - t0, rss_bytes()))

    done = trio.Event()
    async with trio.open_nursery() as outer:
        outer.start_soon(sample, done)
        async with trio.open_nursery() as nursery:
            for i in range(workers):
                nursery.start_soon(worker, i, keys[i::workers])
        t_end = time.monotonic()
        with trio.move_on_after(drain_timeout):
            await engine.drain()
        t_drained = time.monotonic()
        done.set()
    return {
        "t0": t0,
        "t_end": t_end,
        "t_drained": t_drained,
        "last": last,
        "rss": samples,
        "cpu_s": cpu_seconds() - cpu0,
        "engine": engine.stats(),
        **counts,
    }


# -- in the parent ---------------------------------------------------------------------------------


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """One storm; one record."""
    streams, per_device = int(cfg["streams"]), int(cfg.get("streams_per_device", 10))
    rate, seconds, api = float(cfg["rate"]), float(cfg["seconds"]), str(cfg.get("api", "engine"))
    if api not in ("engine", "service"):
        raise ValueError(f"storm api must be 'engine' or 'service', got {api!r}")
    devices = devices_for(streams, per_device)
    settings = {**cfg, "devices": devices}
    env.progress(
        f"storm: {streams} streams x {rate:g}/s for {seconds:g} s via {api}, "
        f"{devices} simulated iPhones"
    )
    with open_stack(
        cores=env.cores,
        folder=env.folder,
        devices=devices,
        max_active=per_device,
        seed=int(cfg.get("seed", 0)),
        live={"notify_wait": 0.0},
    ) as stack:
        ready = stack.server.ask(
            "job",
            timeout=600,
            target="bench.storm:setup",
            args={"streams": streams, "per_device": per_device, "timeout": 60.0},
        )
        env.progress(
            f"storm: {ready['ready']} streams ready in {ready['setup_s']:.1f} s "
            f"({ready['failed']} failed, {ready['held']} held)"
        )
        stack.sim.ask("arrivals", timeout=60)
        sim0 = stack.sim.ask("counters", timeout=30)
        out = stack.server.ask(
            "job",
            timeout=seconds + 300,
            target="bench.storm:storm",
            args={
                "api": api,
                "rate": rate,
                "seconds": seconds,
                "workers": int(cfg.get("workers", 100)),
                "drain_timeout": float(cfg.get("drain_timeout", 30.0)),
            },
        )
        time.sleep(float(cfg.get("settle", 1.0)))
        arrivals = stack.sim.ask("arrivals", timeout=120)
        sim1 = stack.sim.ask("counters", timeout=30)
        ids = ready["activity_ids"]
        index = {key: i for i, key in enumerate(stream_keys(streams))}
        check = stack.sim.ask(
            "check",
            timeout=120,
            ended=False,
            expected={
                ids[k]: (marker, device_for(index[k], per_device))
                for k, (marker, _) in out["last"].items()
                if k in ids
            },
        )
    figures = storm_figures(streams, rate, seconds, out, arrivals, check)
    figures["setup"] = {k: v for k, v in ready.items() if k != "activity_ids"}
    figures["simulator_cpu_us_per_push"] = round(
        (sim1["cpu_s"] - sim0["cpu_s"]) / max(len(arrivals), 1) * 1e6, 1
    )
    env.progress(_line(figures))
    notes = [
        (
            f"offered {streams * rate:,.0f} updates/s, achieved "
            f"{figures['achieved_updates_per_s']:,.0f}/s on one core (embedded {api} API)"
        )
    ]
    return [
        record(
            SCENARIO,
            f"{streams} streams x {rate:g}/s, {api} API",
            settings=settings,
            figures=figures,
            machine=env.machine,
            cores=env.cores,
            measured=_measured(api),
            notes=notes,
        )
    ]


def storm_figures(
    streams: int,
    rate: float,
    seconds: float,
    out: dict[str, Any],
    arrivals: list[tuple[Any, Any, Any, float]],
    check: dict[str, Any],
) -> dict[str, Any]:
    """Coalescing, per-activity push rate, last-update-to-device delays, RSS."""
    by_key: dict[str, list[tuple[str | None, float]]] = defaultdict(list)
    for title, subtitle, _, at in arrivals:
        if title is not None:
            by_key[title].append((subtitle, at))
    delays, lost = [], 0
    for key, (marker, at) in out["last"].items():
        hit = next((t for s, t in by_key.get(key, ()) if s == marker), None)
        if hit is None:
            lost += 1
        else:
            delays.append(hit - at)
    gaps = [b[1] - a[1] for pushes in by_key.values() for a, b in itertools.pairwise(pushes)]
    # One push per second per activity allows n <= window + 1 pushes in a window of that many
    # seconds (the storm and the drain, on the engine's side): (n - 1) / window <= 1. Arrival
    # times are not used for this: the simulator's own queue shifts them by up to its backlog.
    window = max(out["t_drained"] - out["t0"], 1e-9)
    most = max((len(p) for p in by_key.values()), default=0)
    pushes = sum(len(p) for p in by_key.values())
    storm_s = max(out["t_end"] - out["t0"], 1e-9)
    rss = out["rss"]
    return {
        "streams": streams,
        "offered_updates_per_s": streams * rate,
        "updates": out["made"],
        "updates_failed": out["failed"],
        "skipped_ticks": out["skipped_ticks"],
        "achieved_updates_per_s": round(out["made"] / max(storm_s, seconds), 1),
        "storm_s": round(storm_s, 2),
        "drain_s": round(out["t_drained"] - out["t_end"], 2),
        "pushes": pushes,
        "coalescing_ratio": round(out["made"] / pushes, 2) if pushes else None,
        "max_pushes_per_activity": most,
        "window_s": round(window, 2),
        "max_pushes_per_s_per_activity": round(max(most - 1, 0) / window, 3),
        "min_gap_between_arrivals_s": round(min(gaps), 3) if gaps else None,
        "last_update_to_device_s": summarize(delays, digits=3),
        "finals_missing_in_arrivals": lost,
        "devices": {
            k: check[k]
            for k in ("expected", "delivered", "lost", "order_violations", "lost_examples")
        },
        "server_cpu_s": round(out["cpu_s"], 2),
        "server_cpu_us_per_update": round(out["cpu_s"] / max(out["made"], 1) * 1e6, 1),
        "rss_mb": {
            "start": round(rss[0][1] / 2**20, 1) if rss else None,
            "max": round(max(r for _, r in rss) / 2**20, 1) if rss else None,
            "end": round(rss[-1][1] / 2**20, 1) if rss else None,
            "series": _downsample([(round(t, 1), round(r / 2**20, 1)) for t, r in rss], 40),
        },
        "engine": out["engine"],
    }


def _downsample(points: list[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    if len(points) <= n:
        return points
    step = math.ceil(len(points) / n)
    return [*points[::step], points[-1]]


def _line(f: dict[str, Any]) -> str:
    d = f["last_update_to_device_s"]
    return (
        f"storm: {f['updates']:,} updates ({f['achieved_updates_per_s']:,.0f}/s), "
        f"{f['pushes']:,} pushes, coalescing x{f['coalescing_ratio']}, "
        f"max {f['max_pushes_per_s_per_activity']} push/s/activity, last update -> device "
        f"p99 {d['p99']} s max {d['max']} s, lost {f['devices']['lost']}, "
        f"order violations {f['devices']['order_violations']}"
    )
