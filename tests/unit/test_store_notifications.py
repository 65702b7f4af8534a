"""The store's notifications table and the devices' app tokens: round trips, deletes, migration.

A notification is stored before it is acknowledged, so a replacement after a restart finds it;
a database written before notifications existed (schema 2) is migrated and keeps its devices.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import trio

from engine.server.store import (
    SCHEMA_VERSION,
    DeleteNotification,
    DeviceRow,
    NotificationRow,
    PutDevice,
    PutNotification,
    SqliteStore,
)
from engine.server.store.sqlite import MIGRATIONS

TIMEOUT = 20.0
TOKEN = "c0ffee" * 10


def note(notification_id: str = "pn_1", **kw: Any) -> NotificationRow:
    fields: dict[str, Any] = dict(
        notification_id=notification_id,
        content={"title": "Deploy", "message": "done", "actions": [{"title": "Open"}]},
        channels=["ops"],
        devices=["d1", "d2"],
        metadata={"build": 42},
        tags=["deploy"],
        version=1,
        created_at=1_700_000_000.5,
        updated_at=1_700_000_000.5,
        settled={"d1": 1},
    )
    return NotificationRow(**(fields | kw))


async def test_notifications_and_app_tokens_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lockstep.db"
    device = DeviceRow(
        device_id="d1",
        name=None,
        push_to_start_token=TOKEN,
        channels=[],
        registered_at=1.0,
        app_token="ab" * 32,
    )
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path, threads=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write(
                [PutDevice(device), PutNotification(note()), PutNotification(note("pn_2"))]
            )
            await store.write([PutNotification(note(version=2, tags=None, metadata=None))])
            await store.write([DeleteNotification("pn_2")])
            nursery.cancel_scope.cancel()
        store.close()
        reopened = SqliteStore(path, threads=False)
        loaded = await reopened.load()
        reopened.close()
    assert loaded.devices == [device]
    assert loaded.notifications == [note(version=2, tags=None, metadata=None)]


async def test_a_schema_2_file_is_migrated_and_keeps_its_devices(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0] + MIGRATIONS[1])
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO devices VALUES ('d1', 'iPhone', ?, '[]', 5.0)", (TOKEN,))
    conn.close()
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path, threads=False)
        loaded = await store.load()
        store.close()
    assert [(d.device_id, d.app_token) for d in loaded.devices] == [("d1", None)]
    assert loaded.notifications == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
