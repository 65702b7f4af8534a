"""Scenario 4, scale: many tracked activities — memory per activity, start-up and recovery time.

1. A SQLite database is written with `activities` running stream activities (a metrics state of
   ~150 bytes, one recipient each with its update token, spread over `devices` devices), the way
   the service stores them. Two copies: one where every device has the newest state ("at rest")
   and one where every device misses it (`sent_version` one behind: the server stopped before
   APNs answered the last update).
2. For each copy, a fresh process pinned to the engine's core opens the store, an engine and the
   service (`open_service`: load every row, index them, re-queue what devices lack) — exactly what
   `lockstep serve` does at start-up — against the accept-all APNs sink pinned to the other core.

Reported: memory per activity = (RSS after start-up - RSS before opening the store) / count, in a
process that has imported everything but loaded nothing; start-up time (store open to service
ready); for the recovery copy, the time until every re-queued push was accepted, and memory per
activity once each has an open engine lane as well.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness.core import LOOPBACK, RunEnv, cpu_seconds, pin, record, rss_bytes
from bench.harness.procs import Child, report_failure, serve_commands
from bench.harness.stack import channel_of, device_name
from bench.harness.streams import state

SCENARIO = "scale"
BUNDLE = "com.example.lockstep"
BATCH = 2000
MEASURED = (
    "a fresh server process: open the SQLite store, the engine and the service (load every "
    "row, index it, re-queue what devices lack), as `lockstep serve` starts; pushes go to the "
    "accept-all APNs sink (TLS, 127.0.0.1)"
)


def build_db(path: Path, activities: int, devices: int, *, pending: bool) -> float:
    """Write the database (see the module docstring); returns the seconds it took."""
    import trio

    from engine.server.store.records import (
        ActivityRow,
        DeviceRow,
        PutActivity,
        PutDevice,
        PutRecipient,
        PutStream,
        RecipientRow,
        StreamRow,
        pack_state,
    )
    from engine.server.store.sqlite import SqliteStore

    now = time.time()

    async def main() -> None:
        store = SqliteStore(path, threads=False, max_batch=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write(
                [
                    PutDevice(
                        DeviceRow(
                            device_id=device_name(d),
                            name=device_name(d),
                            push_to_start_token=f"{d:064x}",
                            channels=[channel_of(d)],
                            registered_at=now,
                        )
                    )
                    for d in range(1, devices + 1)
                ]
            )
            for first in range(0, activities, BATCH):
                ops: list[Any] = []
                for i in range(first, min(first + BATCH, activities)):
                    key, aid, d = f"s{i:06d}", f"la_{i:032x}", i % devices + 1
                    ops.append(
                        PutActivity(
                            ActivityRow(
                                activity_id=aid,
                                stream_key=key,
                                type="metrics",
                                state=pack_state(state(key, f"u{i}", i)),
                                alert=None,
                                version=2,
                                ended=False,
                                started_at=now - 60,
                                updated_at=now - 1,
                                ended_at=None,
                                dismissal_date=None,
                                update_count=1,
                                channels=[channel_of(d)],
                                metadata=None,
                                tags=None,
                            )
                        )
                    )
                    ops.append(
                        PutRecipient(
                            RecipientRow(
                                activity_id=aid,
                                device_id=device_name(d),
                                start_token=f"{d:064x}",
                                update_token=f"{i + 10**6:064x}",
                                started=True,
                                sent_version=1 if pending else 2,
                                dead=False,
                            )
                        )
                    )
                    ops.append(PutStream(StreamRow(stream_key=key, activity_id=aid)))
                await store.write(ops)
            store.close()
            nursery.cancel_scope.cancel()

    t0 = time.monotonic()
    trio.run(main)
    return time.monotonic() - t0


def probe_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """The measured process: everything imported first, then one start-up, then its figures."""
    try:
        pinned = pin(core)
        import trio

        from engine.config import ApnsEndpoint, Credentials, DeliveryConfig, EngineConfig
        from engine.engine import open_engine
        from engine.server.service import ServiceConfig, open_service
        from engine.server.store.sqlite import SqliteStore

        config = EngineConfig(
            credentials=Credentials(
                opts["team_id"], opts["key_id"], Path(opts["key_path"]), BUNDLE
            ),
            endpoint=ApnsEndpoint(
                host=LOOPBACK,
                port=opts["port"],
                ca_file=Path(opts["ca"]),
                server_hostname="localhost",
            ),
            delivery=DeliveryConfig(max_lanes=opts["activities"] + 1000),
        )

        async def main() -> dict[str, Any]:
            gc.collect()
            rss0, cpu0, t0 = rss_bytes(), cpu_seconds(), time.monotonic()
            store = SqliteStore(Path(opts["db"]))
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                async with (
                    open_engine(config) as engine,
                    open_service(engine, store, config=ServiceConfig()) as service,
                ):
                    t_ready = time.monotonic()
                    gc.collect()
                    rss_ready = rss_bytes()
                    outbox = service.outbox
                    with trio.move_on_after(opts["timeout"]):
                        while (  # noqa: ASYNC110 - the outbox's counters have no change event
                            outbox.accepted + outbox.rejected + outbox.failed < service.recovered
                        ):
                            await trio.sleep(0.01)
                    t_done = time.monotonic()
                    gc.collect()
                    out = {
                        "activities": len(service.registry.activities),
                        "recovered": service.recovered,
                        "accepted": outbox.accepted,
                        "rejected": outbox.rejected,
                        "failed": outbox.failed,
                        "startup_s": t_ready - t0,
                        "recovery_s": t_done - t0,
                        "rss_before": rss0,
                        "rss_ready": rss_ready,
                        "rss_after": rss_bytes(),
                        "cpu_s": cpu_seconds() - cpu0,
                        "pinned": pinned,
                        "lanes": engine.stats().get("delivery_lanes"),
                    }
                store.close()
                nursery.cancel_scope.cancel()
            return out

        result = trio.run(main)

        async def idle() -> None:
            await serve_commands(conn, {}, result)

        trio.run(idle)
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


def _sink(ctx: Any, folder: Path, core: int | None) -> tuple[Any, Connection, dict[str, Any]]:
    """The accept-all sink (bench.sink_probe) with the simulator's certificate and key."""
    from bench.sink_probe import sink_main
    from simulator.apns import SimulatorConfig
    from simulator.certs import ensure_certificates
    from simulator.runner import load_or_create_key

    certs = ensure_certificates(folder)
    sim = SimulatorConfig()
    _, key_path = load_or_create_key(folder, sim)
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=sink_main, args=(child, str(certs.cert), str(certs.key), core), daemon=True
    )
    process.start()
    if not parent.poll(30):
        raise RuntimeError("the APNs sink did not start")
    info = {
        "port": parent.recv(),
        "ca": str(certs.ca),
        "key_path": str(key_path),
        "key_id": sim.key_id,
        "team_id": sim.team_id,
    }
    return process, parent, info


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """Build both databases, start a fresh process on each; two records."""
    n, devices = int(cfg["activities"]), int(cfg.get("devices", 1000))
    timeout = float(cfg.get("timeout", 300.0))
    records = []
    ctx = mp.get_context("spawn")
    sink, sink_conn, info = _sink(ctx, env.folder / "sink", env.cores.simulator)
    try:
        for pending in (False, True):
            db = env.folder / f"scale-{'recover' if pending else 'rest'}.db"
            built = build_db(db, n, devices, pending=pending)
            env.progress(
                f"scale: {n:,} activities written to SQLite in {built:.1f} s "
                f"({'every device missing its newest state' if pending else 'at rest'})"
            )
            child = Child.spawn(
                "scale-probe",
                probe_main,
                env.cores.engine,
                {**info, "db": str(db), "activities": n, "timeout": timeout},
            )
            try:
                out = child.ready(timeout + 120)
            finally:
                child.stop()
            figures = scale_figures(n, out, pending, db)
            env.progress(_line(figures))
            records.append(
                record(
                    SCENARIO,
                    f"{n:,} activities, {'recovery' if pending else 'at rest'}",
                    settings={**cfg, "pending": pending},
                    figures=figures,
                    machine=env.machine,
                    cores=env.cores,
                    measured=MEASURED,
                )
            )
    finally:
        sink_conn.send("stop")
        sink.join(10)
        if sink.is_alive():
            sink.terminate()
    return records


def scale_figures(n: int, out: dict[str, Any], pending: bool, db: Path) -> dict[str, Any]:
    """Bytes per activity and the start-up / recovery times of one probe."""
    figures: dict[str, Any] = {
        "activities": out["activities"],
        "db_bytes": db.stat().st_size
        + sum(p.stat().st_size for p in db.parent.glob(db.name + "-*") if p.is_file()),
        "startup_s": round(out["startup_s"], 3),
        "rss_before_mb": round(out["rss_before"] / 2**20, 1),
        "rss_ready_mb": round(out["rss_ready"] / 2**20, 1),
        "bytes_per_activity": round((out["rss_ready"] - out["rss_before"]) / max(n, 1)),
        "recovered_pushes": out["recovered"],
        "cpu_s": round(out["cpu_s"], 2),
        "pinned": out["pinned"],
    }
    if pending:
        figures.update(
            recovery_s=round(out["recovery_s"], 3),
            accepted=out["accepted"],
            rejected=out["rejected"],
            failed=out["failed"],
            recovery_pushes_per_s=round(out["accepted"] / max(out["recovery_s"], 1e-9), 1),
            open_lanes=out["lanes"],
            bytes_per_activity_with_lanes=round((out["rss_after"] - out["rss_before"]) / max(n, 1)),
        )
    return figures


def _line(f: dict[str, Any]) -> str:
    line = (
        f"scale: {f['activities']:,} activities, {f['bytes_per_activity']} B/activity, "
        f"start-up {f['startup_s']} s"
    )
    if "recovery_s" in f:
        line += (
            f", {f['accepted']:,}/{f['recovered_pushes']:,} re-queued pushes accepted after "
            f"{f['recovery_s']} s, {f['bytes_per_activity_with_lanes']} B/activity with lanes"
        )
    return line
