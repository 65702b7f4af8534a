"""The SQLite store's widget metrics and device widget tokens: round trips and the migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from engine.server.store import (
    SCHEMA_VERSION,
    DeviceRow,
    MetricRow,
    PutDevice,
    PutMetric,
    SqliteStore,
)
from engine.server.store.sqlite import MIGRATIONS

TIMEOUT = 20.0
TOKEN = "c0ffee" * 10


def metric(key: str, value: int | float | str, timestamp: float = 1_700_000_000.5) -> MetricRow:
    return MetricRow(key=key, value=value, timestamp=timestamp, updated_at=timestamp + 1)


async def test_metrics_keep_their_value_type_and_upsert(tmp_path: Path) -> None:
    rows = [metric("a.count", 7), metric("b-ratio", 0.25), metric("c_text", "3 of 5 ✓")]
    newer = metric("b-ratio", 1, 1_700_000_100.0)
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(tmp_path / "db")
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write([PutMetric(r) for r in rows])
            await store.write([PutMetric(newer)])
            nursery.cancel_scope.cancel()
        store.close()
        reopened = SqliteStore(tmp_path / "db")
        loaded = (await reopened.load()).metrics
        reopened.close()
    assert loaded == [rows[0], newer, rows[2]]
    assert [type(m.value) for m in loaded] == [int, int, str]  # a number keeps its JSON type


async def test_a_device_keeps_its_widget_token(tmp_path: Path) -> None:
    row = DeviceRow(
        device_id="d1",
        name=None,
        push_to_start_token=TOKEN,
        channels=[],
        registered_at=1.0,
        widget_token="ab" * 16,
    )
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(":memory:")
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write([PutDevice(row)])
            assert (await store.load()).devices == [row]
            nursery.cancel_scope.cancel()
        store.close()


async def test_a_version_2_file_gains_metrics_and_widget_tokens(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.executescript(MIGRATIONS[1])
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO devices VALUES ('d1', 'iPhone', ?, '[]', 1.5)", (TOKEN,))
    conn.close()
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path)
        loaded = await store.load()
        store.close()
    assert [d.widget_token for d in loaded.devices] == [None]
    assert loaded.metrics == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
