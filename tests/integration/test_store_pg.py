"""The PostgreSQL store on a real server: the same tables as SQLite, migrations with a version
table, failure causes (refused, lost, read-only), reconnecting, and failed writes changing nothing.

The contract it shares with SQLite is tested in tests/unit/test_store.py (both stores).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import psycopg
import pytest
import trio
from psycopg import errors

from engine.server.store import DeviceRow, PutDevice, PutStream, Snapshot, StoreError, StreamRow
from engine.server.store import sqlite as sqlite_store
from engine.server.store.base import BUSY, DISK_FULL, FAILED, IO_ERROR, READ_ONLY, UNREACHABLE
from engine.server.store.pg import MIGRATIONS, SCHEMA_VERSION, PgStore, cause_of, migrate
from tests.helpers import pgkit

TIMEOUT = 20.0
SECRET = "pw-0123456789abcdef"


@pytest.fixture
def schemas() -> Iterator[pgkit.Schemas]:
    with pgkit.schemas() as made:
        yield made


def device(device_id: str, **kw: object) -> DeviceRow:
    fields: dict[str, object] = dict(
        device_id=device_id,
        name="iPhone",
        push_to_start_token="c0ffee" * 10,
        channels=["ops"],
        registered_at=1_700_000_000.25,
    )
    return DeviceRow(**(fields | kw))  # type: ignore[arg-type]


@asynccontextmanager
async def running(store: PgStore) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield
        finally:
            store.close()


def columns_pg(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def test_the_schema_has_sqlites_tables_and_columns(schemas: pgkit.Schemas) -> None:
    assert len(MIGRATIONS) == len(sqlite_store.MIGRATIONS)  # they grow together
    url = schemas.new()
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT version FROM lockstep_schema").fetchall() == [(SCHEMA_VERSION,)]
    lite = sqlite3.connect(":memory:")
    sqlite_store.migrate(lite)
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    expected = {t: [r[1] for r in lite.execute(f"PRAGMA table_info({t})")] for t in tables}
    lite.close()
    assert columns_pg(url) == expected | {"lockstep_schema": ["version"]}


async def test_an_older_schema_is_migrated_and_keeps_its_rows(schemas: pgkit.Schemas) -> None:
    url = schemas.new()
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn, MIGRATIONS[:1]) == 1
        conn.execute(
            "INSERT INTO devices VALUES ('d1', 'iPhone', %s, '[\"ops\"]', 1700000000.25)",
            ("c0ffee" * 10,),
        )
    with trio.fail_after(TIMEOUT):
        store = PgStore(url)
        loaded = await store.load()
        store.close()
    assert loaded.devices == [device("d1")]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM lockstep_schema").fetchall() == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused_and_left_untouched(schemas: pgkit.Schemas) -> None:
    url = schemas.new()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE lockstep_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO lockstep_schema VALUES (%s)", (SCHEMA_VERSION + 1,))
    with trio.fail_after(TIMEOUT):
        store = PgStore(url)
        with pytest.raises(StoreError, match="newer than this release"):
            await store.load()
        store.close()
    assert columns_pg(url) == {"lockstep_schema": ["version"]}


def test_two_processes_migrating_at_once_apply_each_migration_once(
    schemas: pgkit.Schemas,
) -> None:
    url = schemas.new()  # empty: both race to create the version table, then to migrate
    results: list[object] = []
    start = threading.Barrier(2)

    def one() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            start.wait()
            try:
                results.append(migrate(conn))
            except Exception as exc:  # noqa: BLE001 - the test reports it
                results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert results == [SCHEMA_VERSION, SCHEMA_VERSION]


async def test_a_refused_connection_names_the_server_not_the_password() -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = PgStore(f"postgresql://lockstep:{SECRET}@127.0.0.1:{port}/test", connect_timeout=2)
    with trio.fail_after(TIMEOUT), pytest.raises(StoreError) as caught:
        await store.load()
    store.close()
    assert caught.value.cause == UNREACHABLE
    assert f"127.0.0.1:{port}/test" in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_a_lost_connection_fails_the_write_then_the_store_reconnects(
    schemas: pgkit.Schemas,
) -> None:
    with trio.fail_after(TIMEOUT):
        store = PgStore(schemas.new())
        async with running(store):
            await store.write([PutDevice(device("d1"))])
            assert store._pg is not None
            pid = store._pg.info.backend_pid
            with psycopg.connect(pgkit.PG_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StoreError) as caught:
                await store.write([PutDevice(device("d2"))])
            assert caught.value.cause == UNREACHABLE
            await store.probe()  # connects again
            await store.write([PutDevice(device("d3"))])
            loaded = await store.load()
    assert [d.device_id for d in loaded.devices] == ["d1", "d3"]


async def test_a_read_only_server_fails_writes_and_probes_as_read_only(
    schemas: pgkit.Schemas,
) -> None:
    url = schemas.new()
    with trio.fail_after(TIMEOUT):
        store = PgStore(url)
        async with running(store):
            await store.write([PutDevice(device("d1"))])
        # The same database seen as a read-only standby would be.
        reader = PgStore(url + "%20-cdefault_transaction_read_only%3Don")
        async with running(reader):
            with pytest.raises(StoreError) as caught:
                await reader.write([PutDevice(device("d2"))])
            assert caught.value.cause == READ_ONLY
            with pytest.raises(StoreError) as probed:
                await reader.probe()
            assert probed.value.cause == READ_ONLY
            loaded = await reader.load()
    assert [d.device_id for d in loaded.devices] == ["d1"]


async def test_a_batch_with_an_unstorable_row_changes_nothing(schemas: pgkit.Schemas) -> None:
    with trio.fail_after(TIMEOUT):
        store = PgStore(schemas.new())
        async with running(store):
            with pytest.raises(StoreError, match="store transaction failed") as caught:
                # PostgreSQL text holds no NUL: the whole write fails, its first op included.
                await store.write(
                    [
                        PutDevice(device("d1")),
                        PutStream(StreamRow(stream_key="a\x00b", activity_id=None)),
                    ]
                )
            assert caught.value.cause == FAILED
            await store.write([PutDevice(device("d2"))])
            loaded = await store.load()
    assert loaded == Snapshot(devices=[device("d2")])


async def test_probe_commits_and_leaves_nothing(schemas: pgkit.Schemas) -> None:
    with trio.fail_after(TIMEOUT):
        store = PgStore(schemas.new())
        await store.probe()  # before run(): works like load()
        loaded = await store.load()
        store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.probe()
    assert loaded == Snapshot()


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (errors.lookup("53100")(), DISK_FULL),
        (errors.lookup("53300")(), BUSY),  # too many connections
        (errors.lookup("25006")(), READ_ONLY),
        (errors.lookup("58030")(), IO_ERROR),
        (errors.lookup("40P01")(), BUSY),
        (errors.lookup("55P03")(), BUSY),
        (errors.lookup("57P01")(), UNREACHABLE),
        (errors.lookup("08006")(), UNREACHABLE),
        (errors.lookup("23502")(), FAILED),  # not null
        (psycopg.OperationalError("connection is lost"), UNREACHABLE),
        (psycopg.InterfaceError("the connection is closed"), UNREACHABLE),
        (ValueError("x"), FAILED),
    ],
)
def test_causes_follow_the_sqlstate(exc: BaseException, cause: str) -> None:
    assert cause_of(exc) == cause
