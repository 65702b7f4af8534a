"""Raw push throughput: the engine against the simulator's accept-all sink, peers side by side.

    python -m bench.throughput [--pushes 30000] [--connections 1 4] [--h2c] [--peers aioapns]
                               [--profile PATH]

Two processes on 127.0.0.1: the accept-all sink (`simulator.fastserve`) pinned to core 0, and the
client under test pinned to core 1 (when the machine has two cores and `os.sched_setaffinity`).
The clients run one after another against the same sink, with the same TLS material (the
simulator's CA) and the same token-auth key (the simulator's `.p8`), as `lockstep simulator`
keeps them in its state folder. For each connection count, every client warms up, then sends
`--pushes` Live-Activity-sized pushes (one per activity lane, so pacing never holds one back);
the sink's counters cover exactly that timed part. Reported: pushes/s over the client's wall
time, CPU µs per push on each side (process CPU time divided by pushes), and the ratio
Lockstep/peer. Nothing is estimated; every figure comes from this run.

`--profile PATH` runs cProfile in each Lockstep client process over exactly the timed part and
dumps its stats to `PATH.x<connections>` (read them with `python -m pstats`). The profiler slows
the client down, so figures of a profiled run are not comparable with unprofiled ones.

Clients:
- `lockstep`: the real engine (`open_engine`: payload build + size check, coalescer, dispatcher,
  pool of HTTP/2 connections, TLS) — each push is a `submit` whose result is awaited.
- `aioapns`: the aioapns client (asyncio + h2): the same bodies, `asyncio.gather` of
  `send_notification` bounded by a semaphore of 1000 per connection (`bench.peers_aioapns`).
  It matches answers by `apns-id`, which the sink echoes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness.core import pin
from bench.peers_aioapns import KeyFile
from bench.sink_probe import sink_main

BUNDLE = "com.example.lockstep"
TOPIC = BUNDLE + ".push-type.liveactivity"
SINK_CORE, CLIENT_CORE = 0, 1
CLIENT_TIMEOUT = 600.0
"""Seconds one client run may take, warm-up included."""

Mark = Callable[[str], None]
"""How a client tells the parent where its timed part starts ("measure") and ends ("done")."""


def _state(i: int) -> dict[str, Any]:
    # ~300-byte body, like a metrics Live Activity (apns.md §6).
    return {
        "title": "prod-web-1",
        "subtitle": "Server health",
        "type": "metrics",
        "metrics": [
            {"label": "CPU", "value": f"{i % 100}%"},
            {"label": "MEM", "value": "45%"},
            {"label": "RPS", "value": i},
        ],
        "color": "green",
        "updated": i,
    }


def _token(i: int) -> str:
    return f"{i:064x}"


# -- lockstep --------------------------------------------------------------------------------


def run_lockstep(
    port: int, ca: str | None, key: KeyFile, pushes: int, connections: int, mark: Mark
) -> dict[str, Any]:
    """The engine: `submit` every push (awaiting room, as a producer would), then every result."""
    import trio

    from engine.config import ApnsEndpoint, Credentials, DeliveryConfig, EngineConfig
    from engine.engine import open_engine
    from engine.payload import EventKind, LiveActivityContent

    config = EngineConfig(
        credentials=Credentials(key.team_id, key.key_id, key.path, BUNDLE),
        endpoint=ApnsEndpoint(
            host="127.0.0.1",
            port=port,
            tls=ca is not None,
            ca_file=Path(ca) if ca else None,
            server_hostname="localhost",
        ),
        delivery=DeliveryConfig(connections=connections, max_lanes=pushes + 200 * connections),
    )

    async def main() -> dict[str, Any]:
        async with open_engine(config) as engine:  # the key comes from the .p8 file
            # Warm up: connections open and leave the one-stream start (apns.md §4).
            warm = [
                engine.submit_nowait(
                    f"warm-{i}", _token(10**9 + i), LiveActivityContent(EventKind.UPDATE, _state(i))
                )
                for i in range(200 * connections)
            ]
            for h in warm:
                await h.result()
            mark("measure")
            cpu0, t0 = time.process_time(), time.perf_counter()
            handles = []
            for i in range(pushes):
                content = LiveActivityContent(EventKind.UPDATE, _state(i))
                handles.append(await engine.submit(f"a{i}", _token(i), content))
            failures: list[str] = []
            for h in handles:
                result = await h.result()
                if result.status.value != "accepted":
                    failures.append(f"{result.status.value} {result.http_status}")
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            mark("done")
        return {
            "accepted": pushes - len(failures),
            "wall_s": wall,
            "cpu_s": cpu,
            "failures": len(failures),
            "first_failure": failures[0] if failures else None,
        }

    return trio.run(main)


# -- aioapns ---------------------------------------------------------------------------------


def run_aioapns(
    port: int, ca: str | None, key: KeyFile, pushes: int, connections: int, mark: Mark
) -> dict[str, Any]:
    """aioapns with the same pushes (see `bench.peers_aioapns`)."""
    from bench.peers_aioapns import run_aioapns as run_peer

    if ca is None:
        raise ValueError("aioapns speaks TLS only; run without --h2c to compare it")
    return run_peer(port, ca, key, TOPIC, pushes, connections, _state, _token, mark)


CLIENTS: dict[str, Callable[[int, str | None, KeyFile, int, int, Mark], dict[str, Any]]] = {
    "lockstep": run_lockstep,
    "aioapns": run_aioapns,
}


def _profiled(mark: Mark, path: str) -> Mark:
    """`mark`, plus cProfile running from "measure" to "done"; the stats go to `path`."""
    import cProfile

    profiler = cProfile.Profile()

    def profiled_mark(what: str) -> None:
        if what == "measure":
            mark(what)
            profiler.enable()
        elif what == "done":
            profiler.disable()
            profiler.dump_stats(path)
            mark(what)
        else:
            mark(what)

    return profiled_mark


def _client_proc(
    conn: Connection,
    name: str,
    port: int,
    ca: str | None,
    key: KeyFile,
    pushes: int,
    connections: int,
    core: int,
    profile: str | None = None,
) -> None:
    """Client process: pin, run, and report over `conn` ("measure", "done", then the figures)."""
    pinned = pin(core)
    mark: Mark = conn.send
    if profile is not None and name == "lockstep":
        mark = _profiled(mark, f"{profile}.x{connections}")
    try:
        result = CLIENTS[name](port, ca, key, pushes, connections, mark)
    except Exception as exc:  # noqa: BLE001 - the parent reports any client's failure
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn.send({**result, "pinned": pinned})


def _measure_one(
    ctx: Any,
    sink: Connection,
    name: str,
    port: int,
    ca: str | None,
    key: KeyFile,
    pushes: int,
    conns: int,
    profile: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One client run; the sink's counters cover exactly the client's timed part."""
    here, there = ctx.Pipe()
    proc = ctx.Process(
        target=_client_proc,
        args=(there, name, port, ca, key, pushes, conns, CLIENT_CORE, profile),
    )
    proc.start()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    server: dict[str, Any] = {}
    try:
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not finish within {CLIENT_TIMEOUT} s")
            if not here.poll(0.5):
                if not proc.is_alive() and not here.poll(0):
                    raise SystemExit(f"{name} exited ({proc.exitcode}) without a result")
                continue
            msg = here.recv()
            if msg == "measure":
                sink.send("restart")
            elif msg == "done":
                sink.send("report")
                if not sink.poll(60):
                    raise SystemExit("the accept-all sink did not report within 60 s")
                server = sink.recv()
            elif isinstance(msg, dict):
                if "error" in msg:
                    raise SystemExit(f"{name} x{conns} failed: {msg['error']}")
                return msg, server
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()


def run(
    pushes: int,
    connections: list[int],
    clients: list[str],
    tls: bool,
    profile: str | None = None,
) -> list[dict[str, Any]]:
    """Every (connections, client) pair against one sink process; a list of result rows.

    `profile`: dump cProfile stats of each Lockstep run's timed part to `profile.x<connections>`.
    """
    from simulator.apns import SimulatorConfig
    from simulator.certs import ensure_certificates
    from simulator.runner import load_or_create_key

    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # What `lockstep simulator` keeps in its state folder: CA + certificate and the .p8 key.
        certs = ensure_certificates(tmp) if tls else None
        sim = SimulatorConfig()
        _, key_path = load_or_create_key(Path(tmp), sim)
        key = KeyFile(key_path, sim.key_id, sim.team_id)
        ca = str(certs.ca) if certs else None
        parent, child = ctx.Pipe()
        sink = ctx.Process(
            target=sink_main,
            args=(
                child,
                str(certs.cert) if certs else None,
                str(certs.key) if certs else None,
                SINK_CORE,
            ),
            daemon=True,
        )
        sink.start()
        if not parent.poll(60):  # a sink that died at start-up must not hang the run
            raise SystemExit("the accept-all sink did not start within 60 s")
        port = parent.recv()
        try:
            for conns in connections:
                for name in clients:
                    client, server = _measure_one(
                        ctx, parent, name, port, ca, key, pushes, conns, profile
                    )
                    rows.append(_row(name, conns, tls, pushes, client, server))
        finally:
            parent.send("stop")
            sink.join(10)
            if sink.is_alive():
                sink.terminate()
    return rows


def _row(
    name: str, conns: int, tls: bool, pushes: int, client: dict[str, Any], server: dict[str, Any]
) -> dict[str, Any]:
    done = client["accepted"]
    return {
        "scenario": "raw-throughput",
        "client": name,
        "connections": conns,
        "transport": "tls" if tls else "h2c",
        "pushes": pushes,
        "accepted": done,
        "failures": client.get("failures", 0),
        "first_failure": client.get("first_failure"),
        "wall_s": round(client["wall_s"], 3),
        "pushes_per_s": round(done / client["wall_s"], 1),
        "client_cpu_us_per_push": round(client["cpu_s"] / max(done, 1) * 1e6, 1),
        "client_cpu_load": round(client["cpu_s"] / client["wall_s"], 2),
        "sink_requests": server.get("requests", 0),
        "sink_cpu_us_per_push": round(server.get("cpu_us_per_request", 0.0), 2),
        "sink_cpu_load": round(server.get("cpu_load", 0.0), 2),
        "pinned": bool(client.get("pinned") and server.get("pinned")),
    }


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lockstep against each peer at each connection count: throughput and CPU ratios."""
    ours = {r["connections"]: r for r in rows if r["client"] == "lockstep"}
    out = []
    for r in rows:
        mine = ours.get(r["connections"])
        if r["client"] == "lockstep" or mine is None or not r["pushes_per_s"]:
            continue
        out.append(
            {
                "scenario": "raw-throughput-ratio",
                "peer": r["client"],
                "connections": r["connections"],
                "pushes_per_s_ratio": round(mine["pushes_per_s"] / r["pushes_per_s"], 2),
                "client_cpu_per_push_ratio": round(
                    mine["client_cpu_us_per_push"] / r["client_cpu_us_per_push"], 3
                ),
            }
        )
    return out


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    deps: dict[str, str | None] = {}
    for dist in ("trio", "h2", "hpack", "aioapns"):
        try:
            deps[dist] = version(dist)
        except PackageNotFoundError:
            deps[dist] = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        **deps,
    }


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Human-readable lines: one per run, then one per Lockstep/peer comparison."""
    lines = []
    for r in rows:
        failed = f"  {r['failures']} failed ({r['first_failure']})" if r["failures"] else ""
        lines.append(
            f"{r['client']:>9} x{r['connections']} {r['transport']}: "
            f"{r['pushes_per_s']:>8.0f} pushes/s  client {r['client_cpu_us_per_push']:>6.1f} "
            f"µs/push (load {r['client_cpu_load']:.2f})  sink {r['sink_cpu_us_per_push']:>5.2f} "
            f"µs/push (load {r['sink_cpu_load']:.2f}){failed}"
        )
    lines.extend(
        f"lockstep/{c['peer']} x{c['connections']}: {c['pushes_per_s_ratio']:.2f}x pushes/s, "
        f"{c['client_cpu_per_push_ratio']:.3f}x client CPU per push"
        for c in comparisons(rows)
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: JSON lines on stdout, a summary on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pushes", type=int, default=30_000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--peers", nargs="*", default=[], choices=["aioapns"])
    parser.add_argument("--h2c", action="store_true", help="plaintext HTTP/2 (lockstep only)")
    parser.add_argument("--json", action="store_true", help="JSON lines only")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="dump cProfile stats of each Lockstep run's timed part to PATH.x<connections>",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.pushes <= 1_000_000:
        parser.error("--pushes must be between 1 and 1000000")
    if args.h2c and args.peers:
        parser.error("--peers need TLS (aioapns speaks TLS only); drop --h2c")
    clients = ["lockstep", *args.peers]
    profile = str(Path(args.profile).resolve()) if args.profile else None
    rows = run(args.pushes, args.connections, clients, not args.h2c, profile)
    info = machine()
    for row in [*rows, *comparisons(rows)]:
        print(json.dumps({**row, "machine": info}))
    if not args.json:
        print(f"\nmachine: {info}", file=sys.stderr)
        for line in summary(rows):
            print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
