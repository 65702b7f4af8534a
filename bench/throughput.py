"""Raw push throughput: the engine against the simulator's accept-all sink, peers side by side.

    python -m bench.throughput [--pushes 30000] [--connections 1 4] [--h2c] [--peers aioapns]

Two processes on 127.0.0.1: the accept-all sink (`simulator.fastserve`) pinned to core 0, and the
client under test pinned to core 1 (when the machine has two cores). For each client and
connection count, the sink's counters are reset, the client sends `--pushes` Live-Activity-sized
pushes (one per activity lane, so pacing never holds one back), and both sides report what they
measured: pushes/s over the client's wall time, and CPU µs per push on each side (process CPU time
divided by pushes). Nothing is estimated; every figure comes from this run.

Clients:
- `lockstep`: the real engine (`open_engine`: payload build + size check, coalescer, dispatcher,
  pool of HTTP/2 connections, TLS) — each push is a `submit` whose result is awaited.
- `aioapns`: the aioapns client (asyncio + h2), sending the same bodies with the same concurrency
  bound (1000 in flight per connection), pointed at 127.0.0.1 through its protocol class.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import ssl
import sys
import tempfile
import time
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.sink_probe import sink_main

BUNDLE = "com.example.lockstep"
TOPIC = BUNDLE + ".push-type.liveactivity"


def _pin(core: int) -> bool:
    if hasattr(os, "sched_setaffinity") and core in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {core})
        return True
    return False


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
    port: int, ca: str | None, key_dir: Path, pushes: int, connections: int
) -> dict[str, Any]:
    import trio

    from engine.apns.auth import SigningKey
    from engine.config import ApnsEndpoint, Credentials, DeliveryConfig, EngineConfig
    from engine.engine import open_engine
    from engine.payload import EventKind, LiveActivityContent

    key = SigningKey.generate("BENCHKEY01", "BENCHTEAM1")
    config = EngineConfig(
        credentials=Credentials("BENCHTEAM1", "BENCHKEY01", key_dir / "unused.p8", BUNDLE),
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
        async with open_engine(config, signing_key=key) as engine:
            # Warm up: connections open and leave the one-stream start (apns.md §4).
            warm = [
                engine.submit_nowait(
                    f"warm-{i}", _token(10**9 + i), LiveActivityContent(EventKind.UPDATE, _state(i))
                )
                for i in range(200 * connections)
            ]
            for h in warm:
                await h.result()
            cpu0, t0 = time.process_time(), time.perf_counter()
            handles = []
            for i in range(pushes):
                content = LiveActivityContent(EventKind.UPDATE, _state(i))
                handles.append(await engine.submit(f"a{i}", _token(i), content))
            accepted = 0
            for h in handles:
                accepted += (await h.result()).status.value == "accepted"
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return {"accepted": accepted, "wall_s": wall, "cpu_s": cpu}

    return trio.run(main)


# -- aioapns ---------------------------------------------------------------------------------


def run_aioapns(
    port: int, ca: str | None, key_dir: Path, pushes: int, connections: int
) -> dict[str, Any]:
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsDevelopmentClientProtocol

    from engine.apns.auth import SigningKey

    if ca is None:
        raise SystemExit("aioapns speaks TLS only; run without --h2c to compare it")
    key = SigningKey.generate("BENCHKEY01", "BENCHTEAM1")

    class Local(APNsDevelopmentClientProtocol):  # type: ignore[misc]
        APNS_SERVER = "localhost"
        APNS_PORT = port

    async def main() -> dict[str, Any]:
        client = APNs(
            key=key.to_p8().decode(),
            key_id=key.key_id,
            team_id=key.team_id,
            topic=TOPIC,
            use_sandbox=True,
            max_connections=connections,
            ssl_context=ssl.create_default_context(cafile=ca),
        )
        client.pool.protocol_class = Local
        limit = asyncio.Semaphore(1000 * connections)

        async def one(i: int) -> bool:
            async with limit:
                body = {
                    "aps": {
                        "timestamp": int(time.time()),
                        "event": "update",
                        "content-state": _state(i),
                    }
                }
                r = await client.send_notification(
                    NotificationRequest(
                        device_token=_token(i),
                        message=body,
                        push_type=PushType.LIVEACTIVITY,
                        priority=5,
                    )
                )
                return bool(r.is_successful)

        await asyncio.gather(*(one(10**9 + i) for i in range(200 * connections)))
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(pushes)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return {"accepted": sum(results), "wall_s": wall, "cpu_s": cpu}

    return asyncio.run(main())


CLIENTS = {"lockstep": run_lockstep, "aioapns": run_aioapns}


def _client_proc(
    conn: Connection,
    name: str,
    port: int,
    ca: str | None,
    key_dir: str,
    pushes: int,
    connections: int,
    core: int,
) -> None:
    pinned = _pin(core)
    result = CLIENTS[name](port, ca, Path(key_dir), pushes, connections)
    conn.send({**result, "pinned": pinned})


def run(pushes: int, connections: list[int], clients: list[str], tls: bool) -> list[dict[str, Any]]:
    """Every (client, connections) pair against one sink process; a list of result rows."""
    from simulator.certs import ensure_certificates

    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        certs = ensure_certificates(tmp) if tls else None
        parent, child = ctx.Pipe()
        sink = ctx.Process(
            target=sink_main,
            args=(child, str(certs.cert) if certs else None, str(certs.key) if certs else None, 0),
            daemon=True,
        )
        sink.start()
        port = parent.recv()
        try:
            for name in clients:
                for conns in connections:
                    parent.send("restart")
                    here, there = ctx.Pipe()
                    proc = ctx.Process(
                        target=_client_proc,
                        args=(
                            there,
                            name,
                            port,
                            str(certs.ca) if certs else None,
                            tmp,
                            pushes,
                            conns,
                            1,
                        ),
                    )
                    proc.start()
                    if not here.poll(600):
                        proc.terminate()
                        raise SystemExit(f"{name} did not finish within 600 s")
                    client = here.recv()
                    proc.join(30)
                    parent.send("report")
                    server = parent.recv()
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
        "pushes_per_s": round(done / client["wall_s"], 1),
        "client_cpu_us_per_push": round(client["cpu_s"] / max(done, 1) * 1e6, 1),
        "client_cpu_load": round(client["cpu_s"] / client["wall_s"], 2),
        "sink_cpu_us_per_push": round(server["cpu_s"] / max(server["requests"], 1) * 1e6, 2),
        "sink_cpu_load": round(server["cpu_load"], 2),
        "pinned": bool(client.get("pinned") and server.get("pinned")),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    deps = {}
    for dist in ("trio", "h2", "aioapns"):
        try:
            deps[dist] = version(dist)
        except Exception:
            deps[dist] = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        **deps,
    }


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    if not 1 <= args.pushes <= 1_000_000:
        parser.error("--pushes must be between 1 and 1000000")
    clients = ["lockstep", *([] if args.h2c else args.peers)]
    rows = run(args.pushes, args.connections, clients, not args.h2c)
    info = machine()
    for row in rows:
        print(json.dumps({**row, "machine": info}))
    if not args.json:
        ours = {r["connections"]: r["pushes_per_s"] for r in rows if r["client"] == "lockstep"}
        print(f"\nmachine: {info}", file=sys.stderr)
        for r in rows:
            ratio = ours.get(r["connections"], 0) / r["pushes_per_s"] if r["pushes_per_s"] else 0
            print(
                f"{r['client']:>9} x{r['connections']} {r['transport']}: "
                f"{r['pushes_per_s']:>9.0f} pushes/s  client {r['client_cpu_us_per_push']:>6.1f}"
                f" µs/push  sink {r['sink_cpu_us_per_push']:>5.2f} µs/push  "
                f"lockstep/this {ratio:.2f}",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
