"""The webhook delivery log's table: rows round-trip, deletes remove one row, and a database from
before the table existed is migrated with its rows kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from engine.server.store.records import DeleteDelivery, DeliveryRow, PutDelivery, Snapshot
from engine.server.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore

TIMEOUT = 30.0


def delivery(delivery_id: str, webhook: str = "gh", **changes: object) -> DeliveryRow:
    values: dict[str, object] = {
        "webhook": webhook,
        "delivery_id": delivery_id,
        "seq": 1,
        "received_at": 1700000000.5,
        "event": "workflow_job",
        "status": 200,
        "outcome": "applied",
        "message": "workflow_job: 'build' shown on stream gh-1-job-2",
        "streams": ["gh-1-job-2"],
        "body": '{"action": "queued", "é": "ü"}',
        "replays": 0,
        **changes,
    }
    return DeliveryRow(**values)  # type: ignore[arg-type]


async def test_deliveries_round_trip_replace_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "lockstep.db"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            store = SqliteStore(path)
            await nursery.start(store.run)
            rows = [delivery("a"), delivery("b", streams=[]), delivery("a", webhook="other")]
            await store.write([PutDelivery(r) for r in rows])
            replayed = delivery("a", replays=2, status=400, outcome="rejected")
            await store.write([PutDelivery(replayed), DeleteDelivery("gh", "b")])
            store.close()
        reopened = SqliteStore(path)
        loaded = await reopened.load()
        reopened.close()
    assert loaded == Snapshot(deliveries=[replayed, delivery("a", webhook="other")])


async def test_a_version_2_database_gets_the_table_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO streams VALUES ('s1', NULL)")
    conn.close()
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path)
        loaded = await store.load()
        store.close()
    assert [s.stream_key for s in loaded.streams] == ["s1"] and loaded.deliveries == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
