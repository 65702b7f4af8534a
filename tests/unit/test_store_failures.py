"""The SQLite store's failures name their cause: a full database, a read-only one, I/O errors;
and `probe()` tells when writes that need new space succeed again, leaving nothing behind."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from engine.server.store import DeviceRow, PutDevice, PutStream, SqliteStore, StoreError, StreamRow
from engine.server.store.base import BUSY, DISK_FULL, FAILED, IO_ERROR, READ_ONLY
from engine.server.store.sqlite import cause_of

TIMEOUT = 20.0


def device(device_id: str) -> DeviceRow:
    return DeviceRow(
        device_id=device_id,
        name="iPhone",
        push_to_start_token="c0ffee" * 10,
        channels=[],
        registered_at=1_700_000_000.0,
    )


@asynccontextmanager
async def running(store: SqliteStore) -> AsyncIterator[None]:
    """The store with its writer running; closed (which stops the writer) on exit."""
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield
        finally:
            store.close()


def sqlite_error(name: str | None) -> sqlite3.Error:
    exc = sqlite3.OperationalError("boom")
    if name is not None:
        exc.sqlite_errorname = name
    return exc


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (sqlite_error("SQLITE_FULL"), DISK_FULL),
        (sqlite_error("SQLITE_READONLY"), READ_ONLY),
        (sqlite_error("SQLITE_READONLY_DBMOVED"), READ_ONLY),
        (sqlite_error("SQLITE_IOERR_WRITE"), IO_ERROR),
        (sqlite_error("SQLITE_BUSY"), BUSY),
        (sqlite_error("SQLITE_LOCKED"), BUSY),
        (sqlite_error("SQLITE_CONSTRAINT_NOTNULL"), FAILED),
        (sqlite_error(None), FAILED),
        (OSError(errno.ENOSPC, "No space left on device"), DISK_FULL),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), DISK_FULL),
        (OSError(errno.EROFS, "Read-only file system"), READ_ONLY),
        (OSError(errno.EIO, "Input/output error"), IO_ERROR),
        (OSError("no errno"), IO_ERROR),
        (StoreError("store is closed"), FAILED),
        (StoreError("x", cause=DISK_FULL), DISK_FULL),
        (RuntimeError("x"), FAILED),
    ],
)
def test_cause_of_names_what_to_fix(exc: BaseException, cause: str) -> None:
    assert cause_of(exc) == cause


def fill(store: SqliteStore) -> None:
    """Cap the database at its current size (SQLite's own full-database error, SQLITE_FULL)."""
    conn = store._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free(store: SqliteStore) -> None:
    conn = store._conn
    assert conn is not None
    conn.execute("PRAGMA max_page_count = 1073741823")


def big_streams(start: int, n: int) -> list[PutStream]:
    """Rows needing new pages (a key longer than a page goes to overflow pages)."""
    return [
        PutStream(StreamRow(stream_key=f"s{i}-" + "k" * 5000, activity_id=None))
        for i in range(start, start + n)
    ]


async def test_a_full_database_fails_with_disk_full_and_keeps_nothing(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(tmp_path / "db", threads=False)
        async with running(store):
            await store.write([PutDevice(device("d1"))])
            fill(store)
            with pytest.raises(StoreError) as failed:
                await store.write([PutDevice(device("d2")), *big_streams(0, 4)])
            with pytest.raises(StoreError) as probed:
                await store.probe()
            before = await store.load()
            free(store)
            await store.probe()
            await store.write(big_streams(0, 1))
            after = await store.load()
    assert failed.value.cause == DISK_FULL and "database or disk is full" in str(failed.value)
    assert probed.value.cause == DISK_FULL
    assert [d.device_id for d in before.devices] == ["d1"] and before.streams == []
    assert [s.stream_key[:3] for s in after.streams] == ["s0-"]  # the probe left no row


async def test_a_read_only_database_fails_with_read_only(tmp_path: Path) -> None:
    # Root ignores file modes, so the file is made read-only the way SQLite itself enforces it.
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(tmp_path / "db", threads=False)
        async with running(store):
            conn = store._conn
            await store.write([PutDevice(device("d1"))])
            assert conn is not None
            conn.execute("PRAGMA query_only = ON")
            with pytest.raises(StoreError) as failed:
                await store.write([PutDevice(device("d2"))])
            with pytest.raises(StoreError) as probed:
                await store.probe()
            conn.execute("PRAGMA query_only = OFF")
            await store.probe()
            await store.write([PutDevice(device("d3"))])
            loaded = await store.load()
    assert failed.value.cause == READ_ONLY and "readonly" in str(failed.value)
    assert probed.value.cause == READ_ONLY
    assert [d.device_id for d in loaded.devices] == ["d1", "d3"]


async def test_a_closed_store_fails_its_probe() -> None:
    store = SqliteStore(":memory:", threads=False)
    store.close()
    with trio.fail_after(TIMEOUT), pytest.raises(StoreError, match="closed"):
        await store.probe()
