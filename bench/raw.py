"""Scenario 1, raw push throughput: `bench.throughput` as a `lockstep bench` scenario.

The measurement is `bench.throughput.run` unchanged: the engine (`open_engine`: payload build and
size check, coalescer, dispatcher, HTTP/2 pool, TLS) pushing to the simulator's accept-all sink,
in two pinned processes on 127.0.0.1, at each connection count; then each installed peer (aioapns)
with the same pushes against the same sink, and the Lockstep/peer ratios. A peer that fails does
not sink the run: Lockstep's own figures are measured again alone and the failure is noted.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from bench.harness.core import RunEnv, record

SCENARIO = "raw"
MEASURED = (
    "pushes/s from one client process to the accept-all APNs sink (TLS, ALPN h2, 127.0.0.1), "
    "each push awaited; CPU time per push on each side (process CPU / pushes)"
)


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """One record per (client, connections), one per Lockstep/peer ratio."""
    from bench import throughput

    pushes = int(cfg["pushes"])
    connections = [int(c) for c in cfg["connections"]]
    peers = [p for p in cfg.get("peers", ["aioapns"]) if importlib.util.find_spec(p)]
    notes: list[str] = [
        (
            f"pinned by bench.throughput: sink core {throughput.SINK_CORE}, client core "
            f"{throughput.CLIENT_CORE} (see each row's 'pinned')"
        )
    ]
    missing = sorted(set(cfg.get("peers", ["aioapns"])) - set(peers))
    if missing:
        notes.append(f"peers not installed (pip install '.[bench]'): {', '.join(missing)}")
    env.progress(f"raw: {pushes:,} pushes x {connections} connections, peers {peers or 'none'}")
    try:
        rows = throughput.run(pushes, connections, ["lockstep", *peers], True)
    except SystemExit as exc:  # bench.throughput reports a failed client this way
        if not peers:
            raise RuntimeError(f"raw throughput failed: {exc}") from None
        notes.append(f"peer run failed, Lockstep measured alone: {exc}")
        rows = throughput.run(pushes, connections, ["lockstep"], True)
    for line in throughput.summary(rows):
        env.progress(f"raw: {line}")
    settings = {**cfg, "peers": peers, "transport": "tls"}
    records = [
        record(
            SCENARIO,
            f"{row['client']} x{row['connections']}",
            settings=settings,
            figures=row,
            machine=env.machine,
            cores=env.cores,
            measured=MEASURED,
            notes=notes,
        )
        for row in rows
    ]
    records += [
        record(
            SCENARIO,
            f"lockstep/{c['peer']} x{c['connections']}",
            settings=settings,
            figures=c,
            machine=env.machine,
            cores=env.cores,
            measured="ratio of the two runs above (same sink, same pushes)",
            notes=notes,
        )
        for c in throughput.comparisons(rows)
    ]
    return records
