"""`Store.load_partitions` on both stores: exactly the rows of the partitions asked for (and, with
partition 0, the rows that belong to no activity), rows written before the slot column existed
included, and on PostgreSQL a query the slot index serves.

PostgreSQL on 127.0.0.1:5432 (tests/helpers/pgkit.py)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from engine.server.cluster.partitions import (
    activity_partition,
    activity_slot,
    key_partition,
    key_slot,
    new_activity_id,
)
from engine.server.store.pg import MIGRATIONS as PG_MIGRATIONS
from engine.server.store.pg import PgStore
from engine.server.store.pg import migrate as pg_migrate
from engine.server.store.records import (
    DeviceRow,
    MetricRow,
    Op,
    PutActivity,
    PutDevice,
    PutMetric,
    PutRecipient,
    PutStream,
    RecipientRow,
    Snapshot,
    StreamRow,
)
from engine.server.store.sqlite import MIGRATIONS as LITE_MIGRATIONS
from engine.server.store.sqlite import TABLES, SqliteStore, partition_queries
from engine.server.store.sqlite import migrate as lite_migrate
from tests.helpers import pgkit
from tests.helpers.clusterkit import activity_row

TIMEOUT = 20.0
BEFORE_SLOTS = 5  # the schema version before migration 6 added the slot column


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pgkit.Stores]:
    with pgkit.stores(request.param, tmp_path) as made:
        yield made


def device(device_id: str) -> DeviceRow:
    return DeviceRow(
        device_id=device_id,
        name=None,
        push_to_start_token="ab" * 32,
        channels=[],
        registered_at=0.0,
    )


def recipient(activity_id: str, device_id: str) -> RecipientRow:
    return RecipientRow(
        activity_id=activity_id,
        device_id=device_id,
        start_token="c0ffee" * 10,
        update_token=None,
        started=True,
        sent_version=1,
        dead=False,
    )


def rows(count: int, seed: int) -> Snapshot:
    """Activities in every partition of `count`: plain ones (ids drawn in a partition), stream
    ones, one with an id of another shape; each with two recipients; a device and a metric."""
    rng = random.Random(seed)
    acts = [activity_row(new_activity_id(p, count), None) for p in range(count)]
    acts += [
        activity_row(f"act-{n}-{rng.randrange(10**9)}", f"stream-{n}") for n in range(3 * count)
    ]
    acts.append(activity_row("legacy-id-without-partition", None))
    return Snapshot(
        devices=[
            device("d1"),
            device("d2"),
        ],
        activities=sorted(acts, key=lambda a: a.activity_id),
        recipients=sorted(
            (recipient(a.activity_id, d) for a in acts for d in ("d1", "d2")),
            key=lambda r: (r.activity_id, r.device_id),
        ),
        streams=sorted(
            (
                StreamRow(stream_key=a.stream_key, activity_id=a.activity_id)
                for a in acts
                if a.stream_key is not None
            ),
            key=lambda s: s.stream_key,
        ),
        metrics=[MetricRow(key="queue", value=3, timestamp=1.0, updated_at=1.0)],
    )


def ops_of(snap: Snapshot) -> list[Op]:
    return [
        *(PutDevice(d) for d in snap.devices),
        *(PutActivity(a) for a in snap.activities),
        *(PutRecipient(r) for r in snap.recipients),
        *(PutStream(s) for s in snap.streams),
        *(PutMetric(m) for m in snap.metrics),
    ]


def expected(snap: Snapshot, wanted: set[int], count: int) -> Snapshot:
    """What loading `wanted` of `count` must return, computed from the rows themselves."""
    acts = [
        a
        for a in snap.activities
        if activity_partition(a.activity_id, a.stream_key, count) in wanted
    ]
    ids = {a.activity_id for a in acts}
    whole = 0 in wanted
    return Snapshot(
        devices=snap.devices if whole else [],
        activities=acts,
        recipients=[r for r in snap.recipients if r.activity_id in ids],
        streams=[s for s in snap.streams if key_partition(s.stream_key, count) in wanted],
        metrics=snap.metrics if whole else [],
    )


# 64 divides the slot modulus (the indexed form), 10 does not (the server filters without it).
@pytest.mark.parametrize("count", [64, 10])
async def test_a_partition_set_loads_exactly_its_rows(stores: pgkit.Stores, count: int) -> None:
    stored = rows(count, seed=count)
    store = stores.fresh()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write(ops_of(stored))
            assert await store.load_partitions([], count) == Snapshot()
            for wanted in ({3}, {1, 5, count - 1}, {0, 7}, set(range(count))):
                got = await store.load_partitions(sorted(wanted), count)
                assert got == expected(stored, wanted, count), wanted
                assert got.activities, wanted  # every partition has rows: none may be missed
            # An activity that moves to another stream moves to that stream's partition.
            first = stored.activities[0]
            moved = activity_row(first.activity_id, "another-stream")
            await store.write([PutActivity(moved)])
            home = key_partition("another-stream", count)
            was = activity_partition(first.activity_id, first.stream_key, count)
            assert moved in (await store.load_partitions([home], count)).activities
            if was != home:
                left = await store.load_partitions([was], count)
                assert first.activity_id not in {a.activity_id for a in left.activities}
            nursery.cancel_scope.cancel()


def old_inserts(snap: Snapshot) -> list[tuple[str, tuple[Any, ...]]]:
    """INSERTs of `snap`'s rows as a release before the slot column wrote them."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    for field, table in TABLES.items():
        for row in getattr(snap, field):
            _, params = table.upsert(row)
            cols = table.columns
            marks = ", ".join("?" * len(cols))
            out.append(
                (
                    f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({marks})",
                    params[: len(cols)],
                )
            )
    return out


def old_sqlite(path: Path, snap: Snapshot, schema: int) -> None:
    """`snap` written as the release before the slot column wrote it, into a database at
    `schema` (before migration 6, or after it: a node of that release still running)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        lite_migrate(conn, LITE_MIGRATIONS[:schema])
        conn.execute("BEGIN")
        for sql, params in old_inserts(snap):
            conn.execute(sql, params)
        conn.execute("COMMIT")
    finally:
        conn.close()


def old_pg(url: str, snap: Snapshot, schema: int) -> None:
    """`old_sqlite` on PostgreSQL."""
    with psycopg.connect(url, autocommit=True) as conn:
        pg_migrate(conn, PG_MIGRATIONS[:schema])
        with conn.transaction():
            for sql, params in old_inserts(snap):
                conn.execute(sql.replace("?", "%s"), params)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("schema", [BEFORE_SLOTS, len(LITE_MIGRATIONS)])
async def test_rows_written_without_a_slot_load_by_partition(
    kind: str, schema: int, tmp_path: Path
) -> None:
    # Written before the slot column (then migrated), or after it by a node of the earlier
    # release still writing on its open connection while a cluster upgrades: neither may be
    # lost to a takeover.
    count = 64
    stored = rows(count, seed=1)
    with pgkit.stores(kind, tmp_path) as made:
        if kind == "sqlite":
            path = tmp_path / "old.db"
            old_sqlite(path, stored, schema)
            store: SqliteStore = SqliteStore(path)
        else:
            assert made._pg is not None
            url = made._pg.new()
            old_pg(url, stored, schema)
            store = PgStore(url)
        made.made.append(store)
        with trio.fail_after(TIMEOUT):
            for wanted in ({2}, {0, 9, 40}):
                got = await store.load_partitions(sorted(wanted), count)
                assert got == expected(stored, wanted, count)
                assert got.activities and got.streams


def test_an_activity_id_names_its_slot_only_with_four_hex_digits() -> None:
    assert activity_slot("la_00ff" + "0" * 28, None) == 0xFF
    for odd in ("la_-0ff" + "0" * 28, "la_+0ff" + "0" * 28, "la_0_ff" + "0" * 28, "la_ 0ff"):
        assert activity_slot(odd, None) == key_slot(odd) >= 0, odd


def test_a_partition_query_is_served_by_the_slot_index() -> None:
    with pgkit.schemas() as made:
        url = made.new()
        store = PgStore(url, threads=False)
        trio.run(store.load)  # the schema
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            # 20,000 activities, streams and recipients, their slots spread over every partition.
            conn.execute(
                "INSERT INTO activities (activity_id, stream_key, type, state, version, ended, "
                "started_at, updated_at, update_count, channels, slot) "
                "SELECT 'a' || i, 's' || i, 'progress', '{}', 1, false, 0, 0, 0, '[]', "
                "(i * 2654435761) % 4294967296 FROM generate_series(1, 20000) AS i"
            )
            conn.execute(
                "INSERT INTO streams (stream_key, activity_id, slot) "
                "SELECT stream_key, activity_id, slot FROM activities"
            )
            conn.execute(
                "INSERT INTO recipients (activity_id, device_id, start_token, started, "
                "sent_version, dead) SELECT activity_id, 'd', 't', true, 1, false FROM activities"
            )
            conn.execute("ANALYZE")
            for field in ("activities", "recipients", "streams"):
                _, sql = partition_queries([3, 17], 64)[field]
                plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}"))
                name = "streams" if field == "streams" else "activities"
                assert f"{name}_by_slot" in plan, plan


async def test_writes_go_on_while_a_partition_load_waits() -> None:
    # A takeover's read must not hold the node's writes for the partitions it already has.
    with pgkit.schemas() as made:
        url = made.new()
        store = PgStore(url)
        try:
            await store.load()  # migrated
            blocker = psycopg.connect(url)  # not autocommit: the lock lasts until rollback
            try:
                blocker.execute("LOCK TABLE streams IN ACCESS EXCLUSIVE MODE")
                loaded: list[Snapshot] = []
                done = trio.Event()
                with trio.fail_after(TIMEOUT):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(store.run)

                        async def load() -> None:
                            loaded.append(await store.load_partitions([3], 64))
                            done.set()

                        nursery.start_soon(load)
                        await trio.sleep(0.3)  # the load is waiting for the streams table
                        assert loaded == []
                        written = activity_row(new_activity_id(3, 64), None)
                        with trio.fail_after(5):  # not behind the load
                            await store.write([PutActivity(written)])
                        assert loaded == []  # still waiting
                        blocker.rollback()  # the load goes on
                        await done.wait()
                        nursery.cancel_scope.cancel()
            finally:
                blocker.close()
            # Its snapshot was taken before the write: one moment for every table.
            assert loaded[0].activities == []
            again = await store.load_partitions([3], 64)
            assert [a.activity_id for a in again.activities] == [written.activity_id]
        finally:
            store.close()
