"""Scenario scale-out: one against two server processes on PostgreSQL, through the HTTP API.

For each process count in `workers` (default 1 then 2) the scenario makes a fresh schema in the
local PostgreSQL database, starts `lockstep serve --workers N` on it (one supervisor running the
simulator, N worker processes sharing the API port, each a cluster node owning a share of the
partitions; bench.harness.cluster) and waits until the nodes hold equal shares of the
partitions, so none moves while measuring (`--workers 1` is a single process: API, engine and
simulator together). Phones are created through the simulator's control API,
`streams_per_phone` streams (at most the 5 a phone shows) each on its own channel, and the
streams are started (bench.harness.streams' layout).

1. **Throughput**: the load generator (bench.harness.loadgen, its own process, `connections`
   keep-alive HTTP/1.1 connections, closed loop) updates the streams in turn for `seconds`
   (PUT /api/live-activity/stream/{key}: validated, stored in PostgreSQL, pushed); every run
   the same generator, the same streams and the same duration. Reported: calls/s, the reply
   time (p50/p99), and the CPU seconds used meanwhile by the workers, by the supervisor and its
   simulator, by PostgreSQL, by the generator and by the whole machine: on a two-core machine
   the generator and PostgreSQL take CPU the workers would otherwise have. A last round then
   updates every stream once more, and the phones must show that value: the **lost final
   states** and the phones' own **order violations** are reported. The last record gives the
   ratio of calls/s of the largest process count to the first.
2. **Storm over HTTP** (for each count in `storm_workers`): `storm_streams` streams, each
   updated `storm_rate` times a second for `storm_seconds` on a fixed schedule (open loop).
   bench/storm.py drives its load from inside the one server process; with several processes
   the load has to come through the shared HTTP port, which takes far fewer calls per second than
   the embedded path, so the sizes are smaller. Reported: updates offered and made, pushes,
   the time from each stream's last update (its bytes sent) to that state applied on its phone
   (p50/p99/max; the phones' wall clock and the generator's monotonic clock are related by
   one reading of both), lost final states and order violations.

Lost final states and order violations: bench.harness.finals (a stream not shown, or shown with
a value that cannot be its last).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.cluster import Cluster, LeaseProbe, fresh_schema
from bench.harness.core import DEFAULT_OUT, Cores, RunEnv, record, summarize
from bench.harness.finals import Ledger, verdict
from bench.harness.loadgen import Call, CallResult, Generator
from bench.harness.streams import channel_for, devices_for, put_call, stream_keys
from bench.kill9 import API_KEY

SCENARIO = "scale-out"
NO_PINNING = Cores(None, None, None)
RESULTS_DIR = DEFAULT_OUT.parent  # bench/results/ (not in git)
NOTE = (
    "no process pinned: the workers, the supervisor (simulator), PostgreSQL and the load "
    "generator share the machine's cores; cpu_s says who used what"
)
MEASURED_THROUGHPUT = (
    "HTTP/1.1 PUT /api/live-activity/stream/{key} (stream updates, keep-alive connections, closed "
    "loop) answered by `lockstep serve --workers N` on PostgreSQL (127.0.0.1): validation, the "
    "store's commit, the engine's push to the simulated APNs; calls/s and reply time"
)
MEASURED_STORM = (
    "streams updated on a fixed schedule through HTTP/1.1 PUT /api/live-activity/stream/{key} to "
    "`lockstep serve --workers N` on PostgreSQL -> the final state applied on each simulated "
    "phone; not the embedded path of scenario storm (one process only): fewer updates/s"
)


def _calls(
    ledger: Ledger, keys: Sequence[str], offsets: Sequence[float]
) -> tuple[list[Call], list[tuple[str, int]]]:
    """Updates of `keys[i]` due at `offsets[i]`, each with a new value; and (key, value) each."""
    calls, tags = [], []
    for key, at in zip(keys, offsets, strict=True):
        value = ledger.next_value()
        calls.append(put_call(at, key, str(value), value))
        tags.append((key, value))
    return calls, tags


def _record_results(ledger: Ledger, tags: list[tuple[str, int]], out: dict[str, Any]) -> None:
    for (key, value), result in zip(tags, out["results"], strict=True):
        ledger.add(key, value, result)


START_ATTEMPTS = 3  # a start answered 503 (partition_unavailable) is sent again, as advised


def setup(
    cluster: Cluster, gen: Generator, keys: list[str], per_phone: int, cfg: dict[str, Any]
) -> int:
    """Phones, then every stream started on its phone's channel; wait until all are shown.
    Returns how many starts were sent again after a 503."""
    cluster.add_phones(devices_for(len(keys), per_phone))
    starts = [
        put_call(0.0, key, "0", 0, channel=channel_for(i, per_phone)) for i, key in enumerate(keys)
    ]
    retried = 0
    for _ in range(START_ATTEMPTS):
        out = gen.run(starts, connections=int(cfg["connections"]), deadline=60.0)
        failed = [c for c, r in zip(starts, out["results"], strict=True) if r.status != 200]
        if not failed:
            break
        seen = statuses(out["results"])
        retried += len(failed)
        starts = failed
        time.sleep(1.0)
    else:
        raise RuntimeError(f"{len(failed)} of {len(keys)} stream starts failed: {seen}")
    deadline = time.monotonic() + 60.0
    while shown(cluster) < len(keys):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {shown(cluster)} of {len(keys)} streams shown on the phones")
        time.sleep(0.2)
    time.sleep(float(cfg.get("token_wait", 1.0)))  # the phones report their update tokens
    return retried


def shown(cluster: Cluster) -> int:
    """Live Activities active on the phones."""
    return sum(
        1 for d in cluster.devices() for a in d["activities"] if a["state"] in ("active", "stale")
    )


def statuses(results: Sequence[CallResult]) -> dict[str, int]:
    """How many calls got each status other than 200 (0: sent, then cut off at the deadline;
    -1: a transport failure); calls never sent are not counted."""
    out: dict[str, int] = {}
    for r in results:
        if r.status != 200 and (r.status != 0 or r.sent > 0):  # not: never sent (budget left)
            out[str(r.status)] = out.get(str(r.status), 0) + 1
    return out


def cpu_delta(
    before: dict[str, float], after: dict[str, float], gen_cpu: float
) -> dict[str, float]:
    """CPU seconds used between two readings, per party."""
    out = {k: round(after[k] - before[k], 2) for k in before}
    out["generator"] = round(gen_cpu, 2)
    return out


def throughput(
    cluster: Cluster, gen: Generator, keys: list[str], cfg: dict[str, Any]
) -> dict[str, Any]:
    """Phase 1 (module docstring) on a running cluster with its streams started."""
    seconds = float(cfg["seconds"])
    budget = int(seconds * float(cfg["call_budget_per_s"]))
    ledger = Ledger()
    calls, tags = _calls(ledger, [keys[i % len(keys)] for i in range(budget)], [0.0] * budget)
    load = os.getloadavg()[0]
    before, t0 = cluster.cpu(), time.monotonic()
    out = gen.run(calls, connections=int(cfg["connections"]), deadline=seconds)
    cpu = cpu_delta(before, cluster.cpu(), out["cpu_s"])
    wall = time.monotonic() - t0
    _record_results(ledger, tags, out)
    results: list[CallResult] = out["results"]
    ok = [r for r in results if r.status == 200]
    span = max((r.done for r in ok), default=out["start"]) - out["start"]
    time.sleep(1.0)  # calls cut off at the deadline finish before the last round
    last, last_tags = _calls(ledger, keys, [0.0] * len(keys))
    final = gen.run(last, connections=min(len(keys), int(cfg["connections"])), deadline=30.0)
    _record_results(ledger, last_tags, final)
    v = verdict(cluster, ledger, keys, float(cfg["settle"]))
    return {
        "workers": cluster.workers,
        "streams": len(keys),
        "connections": int(cfg["connections"]),
        "duration_s": seconds,
        "calls_ok": len(ok),
        "calls_failed_http": sum(1 for r in results if r.status not in (0, 200)),
        "statuses_not_200": statuses(results),
        "calls_cut_at_deadline": sum(1 for r in results if r.status == 0 and r.sent > 0),
        "budget_exhausted": all(r.sent > 0 for r in results),
        "calls_per_s": round(len(ok) / span, 1) if span > 0 else 0.0,
        "reply_ms": summarize([r.done - r.sent for r in ok], scale=1000),
        "errors": out["errors"],
        "cpu_s": cpu,
        # `--workers 1` is one process (API, engine and simulator); with N > 1 the supervisor
        # runs the simulator and the N workers serve.
        "server_processes": 1 if cluster.workers == 1 else 1 + cluster.workers,
        "cpu_cores_busy": {k: round(s / wall, 2) for k, s in cpu.items()},
        "server_cpu_ms_per_call": round(
            (cpu["supervisor"] + cpu["workers"]) / max(len(ok), 1) * 1000, 2
        ),
        # Runnable processes on the machine just before (1 min average): what else was running.
        "load_average_before": round(load, 2),
        "last_round_failed": sum(1 for r in final["results"] if r.status != 200),
        "lost_final_states": v["lost"],
        "lost_detail": v["detail"],
        "order_violation_detail": v["disorder"],
        "order_violations": v["violations"],
    }


def storm(cluster: Cluster, gen: Generator, keys: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    """Phase 2 (module docstring) on a running cluster with its streams started."""
    rate, seconds = float(cfg["storm_rate"]), float(cfg["storm_seconds"])
    rounds = max(1, int(rate * seconds))
    ledger = Ledger()
    order = sorted(
        (k / rate + j / (len(keys) * rate), key)
        for k in range(rounds)
        for j, key in enumerate(keys)
    )
    calls, tags = _calls(ledger, [key for _, key in order], [at for at, _ in order])
    pushes0, load = cluster.pushes_accepted(), os.getloadavg()[0]
    out = gen.run(
        calls,
        connections=int(cfg["storm_connections"]),
        deadline=seconds + float(cfg["storm_drain"]),
    )
    _record_results(ledger, tags, out)
    results: list[CallResult] = out["results"]
    ok = [r for r in results if r.status == 200]
    span = max((r.done for r in ok), default=out["start"]) - out["start"]
    v = verdict(cluster, ledger, keys, float(cfg["settle"]))
    offset = time.time() - time.monotonic()  # one reading relates the two clocks
    delays = []
    for key, (value, at) in v["applied"].items():
        sent = ledger.finals(key).get(value)
        if at is not None and sent is not None:
            delays.append(at - (sent + offset))
    pushes = cluster.pushes_accepted() - pushes0
    return {
        "workers": cluster.workers,
        "streams": len(keys),
        "rate_per_stream": rate,
        "duration_s": seconds,
        "updates_offered_per_s": round(len(keys) * rate, 1),
        "updates": len(ok),
        "updates_per_s": round(len(ok) / span, 1) if span > 0 else 0.0,
        "updates_failed": len(results) - len(ok),
        "updates_cut_at_deadline": sum(1 for r in results if r.status == 0),
        "statuses_not_200": statuses(results),
        "pushes": pushes,
        "coalescing_ratio": round(len(ok) / pushes, 2) if pushes else None,
        "reply_ms": summarize([r.done - r.sent for r in ok], scale=1000),
        "generator_lag_ms": summarize([r.sent - r.due for r in ok], scale=1000),
        "last_update_to_device_ms": summarize(delays, scale=1000),
        "finals_timed": len(delays),
        "load_average_before": round(load, 2),
        "lost_final_states": v["lost"],
        "lost_detail": v["detail"],
        "order_violation_detail": v["disorder"],
        "order_violations": v["violations"],
    }


def _with_cluster(
    env: RunEnv, workers: int, streams: int, cfg: dict[str, Any], phase: Any
) -> dict[str, Any]:
    """A fresh schema and server with `workers` processes, its streams set up; `phase` run."""
    per_phone = int(cfg["streams_per_phone"])
    keys = stream_keys(streams)
    with fresh_schema() as url:
        cluster = Cluster.start(env.folder / f"w{workers}-{phase.__name__}", url, workers)
        gen = None
        try:
            gen = Generator.spawn(None, cluster.api, API_KEY)
            retried = setup(cluster, gen, keys, per_phone, cfg)
            epochs = cluster.epochs()
            with LeaseProbe(url) as probe:
                figures: dict[str, Any] = phase(cluster, gen, keys, cfg)
            after = cluster.epochs()
        finally:
            if gen is not None:
                gen.stop()
            cluster.stop()
    figures["starts_sent_again"] = retried
    # Partitions whose lease epoch grew during the phase: the lease lapsed (not renewed in time)
    # and was taken again, by the same node or another; the latter moves its streams under load.
    figures["lease_epochs_bumped"] = sum(1 for p, e in after.items() if e != epochs.get(p, e))
    # The least time a lease had left (lease_ttl when renewed on time; near 0: a round stalled).
    figures["lease_least_left_s"] = None if probe.least is None else round(probe.least, 2)
    if figures["lost_final_states"] or figures["order_violations"]:
        figures["server_log"] = str(keep_log(cluster, f"w{workers}-{phase.__name__}"))
    return figures


def keep_log(cluster: Cluster, name: str) -> Path:
    """Copy the server's log next to the results (mode 0600) when an invariant broke."""
    kept = RESULTS_DIR / f"scale-out-{name}-{time.strftime('%Y%m%dT%H%M%S')}-server.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.touch(mode=0o600)
    kept.write_bytes((cluster.folder / "server.log").read_bytes())
    return kept


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """Throughput for each count in `workers`, the ratio, then the storm for `storm_workers`."""
    settings = {**cfg, "pinned": False}
    records, rates = [], {}
    for n in cfg.get("workers", [1, 2]):
        env.progress(f"scale-out: {cfg['streams']} streams, --workers {n}, {cfg['seconds']} s")
        f = _with_cluster(env, int(n), int(cfg["streams"]), cfg, throughput)
        rates[int(n)] = f["calls_per_s"]
        env.progress(
            f"scale-out --workers {n}: {f['calls_per_s']} calls/s, reply p50 "
            f"{f['reply_ms']['p50']} ms p99 {f['reply_ms']['p99']} ms, cores busy "
            f"{f['cpu_cores_busy']}, {f['lost_final_states']} lost, {f['order_violations']} "
            "out of order"
        )
        records.append(_rec(f"throughput, --workers {n}", settings, f, env, MEASURED_THROUGHPUT))
    if len(rates) > 1:
        first, top = min(rates), max(rates)
        ratio = round(rates[top] / rates[first], 2) if rates[first] else None
        figures = {"calls_per_s": rates, "ratio": ratio, "of": [top, first]}
        env.progress(f"scale-out: {top} processes / {first}: x{ratio}")
        records.append(
            _rec(f"ratio --workers {top} / {first}", settings, figures, env, MEASURED_THROUGHPUT)
        )
    for n in cfg.get("storm_workers", [2]):
        env.progress(
            f"scale-out storm: {cfg['storm_streams']} streams x {cfg['storm_rate']}/s, "
            f"--workers {n}"
        )
        f = _with_cluster(env, int(n), int(cfg["storm_streams"]), cfg, storm)
        d = f["last_update_to_device_ms"]
        env.progress(
            f"scale-out storm --workers {n}: {f['updates_per_s']} updates/s, last update -> "
            f"phone p99 {d['p99']} ms max {d['max']} ms, {f['lost_final_states']} lost, "
            f"{f['order_violations']} out of order"
        )
        records.append(_rec(f"storm over HTTP, --workers {n}", settings, f, env, MEASURED_STORM))
    return records


def _rec(
    measurement: str, settings: dict[str, Any], figures: dict[str, Any], env: RunEnv, measured: str
) -> dict[str, Any]:
    return record(
        SCENARIO,
        measurement,
        settings=settings,
        figures=figures,
        machine=env.machine,
        cores=NO_PINNING,
        measured=measured,
        notes=[NOTE],
    )
