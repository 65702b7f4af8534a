"""The stores: round trips, upserts, cascades, durability, migrations, group commit.

The contract tests (taking `stores`) run on SQLite and on PostgreSQL (tests/helpers/pgkit.py:
skipped with a loud reason when no server answers on 127.0.0.1:5432, failed under CI); the
schema tests are SQLite's (PostgreSQL's: tests/integration/test_store_pg.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.server.store import (
    SCHEMA_VERSION,
    ActivityRow,
    DeleteActivity,
    DeleteDevice,
    DeviceRow,
    Op,
    PutActivity,
    PutDevice,
    PutRecipient,
    PutStream,
    RecipientRow,
    Snapshot,
    SqliteStore,
    StoreError,
    StreamRow,
)
from engine.server.store.records import pack_state
from engine.server.store.sqlite import MIGRATIONS, migrate
from tests.helpers import pgkit

TIMEOUT = 20.0
TOKEN = "c0ffee" * 10


def device(device_id: str = "d1", **kw: Any) -> DeviceRow:
    fields: dict[str, Any] = dict(
        device_id=device_id,
        name="iPhone",
        push_to_start_token=TOKEN,
        channels=["ops", "deploys"],
        registered_at=1_700_000_000.25,
    )
    return DeviceRow(**(fields | kw))


def activity(activity_id: str = "a1", **kw: Any) -> ActivityRow:
    fields: dict[str, Any] = dict(
        activity_id=activity_id,
        stream_key="deploy",
        type="progress",
        state=pack_state(
            {"title": "Deploy", "percentage": 40, "metrics": [{"label": "x", "value": 1.5}]}
        ),
        alert={"title": "Deploy", "body": "started"},
        version=3,
        ended=False,
        started_at=1_700_000_000.5,
        updated_at=1_700_000_010.75,
        ended_at=None,
        dismissal_date=None,
        update_count=2,
        channels=["ops"],
        metadata={"sha": "abc", "n": 7},
        tags=["prod"],
    )
    return ActivityRow(**(fields | kw))


def recipient(activity_id: str = "a1", device_id: str = "d1", **kw: Any) -> RecipientRow:
    fields: dict[str, Any] = dict(
        activity_id=activity_id,
        device_id=device_id,
        start_token=TOKEN,
        update_token=None,
        started=True,
        sent_version=2,
        dead=False,
    )
    return RecipientRow(**(fields | kw))


@asynccontextmanager
async def running(store: SqliteStore) -> AsyncIterator[trio.Nursery]:
    """The store with its writer running; closed (which stops the writer) on exit."""
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield nursery
        finally:
            store.close()


async def queue_in_order(
    nursery: trio.Nursery, store: SqliteStore, writes: Sequence[Sequence[Op]], results: list[Any]
) -> None:
    """Start one writer per entry, each queued before the next starts (so queue order is fixed).

    `results[i]` becomes None on success or the StoreError raised.
    """
    results.extend([...] * len(writes))

    async def one(i: int, ops: Sequence[Op]) -> None:
        try:
            await store.write(ops)
            results[i] = None
        except StoreError as exc:
            results[i] = exc

    for i, ops in enumerate(writes):
        nursery.start_soon(one, i, ops)
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pgkit.Stores]:
    with pgkit.stores(request.param, tmp_path) as made:
        yield made


# -- rows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", [False, True], ids=["memory", "file"])
async def test_round_trip_every_row_type(stores: pgkit.Stores, file: bool) -> None:
    rows = Snapshot(
        devices=[device("d1"), device("d2", name=None, channels=[])],
        activities=[
            activity("a1"),
            activity(
                "a2",
                stream_key=None,
                alert=None,
                ended=True,
                ended_at=1_700_000_020.0,
                dismissal_date=1_700_003_600,
                metadata=None,
                tags=None,
            ),
        ],
        recipients=[
            recipient("a1", "d1"),
            recipient("a1", "d2", update_token="beef", started=False, sent_version=0, dead=True),
        ],
        streams=[
            StreamRow(stream_key="deploy", activity_id="a1"),
            StreamRow(stream_key="idle", activity_id=None),
        ],
    )
    with trio.fail_after(TIMEOUT):
        store = stores.fresh(file=file)
        async with running(store):
            await store.write(
                [
                    *(PutDevice(r) for r in rows.devices),
                    *(PutActivity(r) for r in rows.activities),
                    *(PutRecipient(r) for r in rows.recipients),
                    *(PutStream(r) for r in rows.streams),
                ]
            )
            loaded = await store.load()
    assert loaded == rows
    assert isinstance(loaded.activities[1].ended, bool) and loaded.activities[1].ended is True
    assert loaded.recipients[1].dead is True and loaded.recipients[1].started is False
    assert isinstance(loaded.devices[0].registered_at, float)


async def test_upsert_overwrites(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        async with running(store):
            await store.write(
                [
                    PutDevice(device()),
                    PutActivity(activity()),
                    PutRecipient(recipient()),
                    PutStream(StreamRow(stream_key="deploy", activity_id="a1")),
                ]
            )
            new_device = device(name="Work phone", channels=["ops"])
            new_activity = activity(
                version=4, ended=True, state=pack_state({"title": "Done"}), tags=None
            )
            new_recipient = recipient(update_token="abcd", sent_version=4)
            new_stream = StreamRow(stream_key="deploy", activity_id=None)
            await store.write(
                [
                    PutDevice(new_device),
                    PutActivity(new_activity),
                    PutRecipient(new_recipient),
                    PutStream(new_stream),
                ]
            )
            loaded = await store.load()
    assert loaded == Snapshot(
        devices=[new_device],
        activities=[new_activity],
        recipients=[new_recipient],
        streams=[new_stream],
    )


async def test_delete_activity_removes_its_recipients_only(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        async with running(store):
            await store.write(
                [
                    PutDevice(device("d1")),
                    PutDevice(device("d2")),
                    PutActivity(activity("a1")),
                    PutActivity(activity("a2")),
                    PutRecipient(recipient("a1", "d1")),
                    PutRecipient(recipient("a1", "d2")),
                    PutRecipient(recipient("a2", "d1")),
                ]
            )
            await store.write([DeleteActivity("a1"), DeleteDevice("d2")])
            loaded = await store.load()
            assert store.stats()["ops"] == 9  # ops, not SQL statements
    assert [a.activity_id for a in loaded.activities] == ["a2"]
    assert [(r.activity_id, r.device_id) for r in loaded.recipients] == [("a2", "d1")]
    # A device delete leaves recipients alone: the service decides what they become.
    assert [d.device_id for d in loaded.devices] == ["d1"]


async def test_ops_of_one_write_apply_in_order(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        async with running(store):
            await store.write(
                [
                    PutActivity(activity("a1")),
                    PutRecipient(recipient("a1")),
                    DeleteActivity("a1"),
                    PutActivity(activity("a1", version=9)),
                ]
            )
            loaded = await store.load()
    assert [a.version for a in loaded.activities] == [9]
    assert loaded.recipients == []


async def test_write_copies_the_row_values_when_called(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        row = device(name="before")
        async with trio.open_nursery() as outer:
            results: list[Any] = []
            async with trio.open_nursery() as writers:
                await queue_in_order(writers, store, [[PutDevice(row)]], results)
                row.name = "after"  # the service edits rows in place after writing them
                row.channels.append("late")
                await outer.start(store.run)
            loaded = await store.load()
            store.close()
    assert results == [None]
    assert loaded.devices == [device(name="before")]


async def test_bad_op_fails_its_own_writer_before_queueing(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        async with running(store):
            with pytest.raises(StoreError, match="cannot encode"):
                await store.write([PutActivity(activity(metadata={"not json": object()}))])
            with pytest.raises(StoreError, match="not a store op"):
                await store.write(["DROP TABLE devices"])  # type: ignore[list-item]
            with pytest.raises(StoreError, match="expected DeviceRow"):
                await store.write([PutDevice(activity())])  # type: ignore[arg-type]
            assert store.stats()["queued"] == 0
            await store.write([PutDevice(device())])
            assert (await store.load()).devices == [device()]


# -- durability and schema -------------------------------------------------------------------------


async def test_reopened_file_loads_everything(tmp_path: Path) -> None:
    path = tmp_path / "lockstep.db"
    with trio.fail_after(TIMEOUT):
        first = SqliteStore(path)
        async with running(first):
            await first.write(
                [
                    PutDevice(device()),
                    PutActivity(activity()),
                    PutRecipient(recipient()),
                    PutStream(StreamRow(stream_key="deploy", activity_id="a1")),
                ]
            )
            before = await first.load()
        second = SqliteStore(path)
        after = await second.load()  # before run(): load reads directly
        second.close()
    assert after == before and len(after.devices) == 1 and len(after.streams) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_empty_version_0_file_gets_the_whole_schema(tmp_path: Path) -> None:
    path = tmp_path / "v0.db"
    sqlite3.connect(path).close()
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path)
        assert await store.load() == Snapshot()
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    conn.close()


async def test_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO devices VALUES ('d1', 'iPhone', ?, '[\"ops\",\"deploys\"]', 1700000000.25)",
        (TOKEN,),
    )
    conn.close()
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path)
        loaded = await store.load()
        store.close()
    assert loaded.devices == [device()]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "activities_by_stream" in indexes
    conn.close()


async def test_newer_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path)
        with pytest.raises(StoreError, match=r"schema version \d+ is newer"):
            await store.load()
        with pytest.raises(StoreError, match="newer"):
            await store.run()
        with pytest.raises(StoreError):
            await store.write([PutDevice(device())])
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()


async def test_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an sqlite file" * 100)
    with trio.fail_after(TIMEOUT):
        store = SqliteStore(path)
        with pytest.raises(StoreError, match="cannot open store"):
            await store.load()
        store.close()


def test_migrations_are_each_atomic_with_their_version() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    steps = ("CREATE TABLE a (x);", "CREATE TABLE b (x); CREATE TABLE b (y);")
    with pytest.raises(StoreError, match="schema migration 2 failed"):
        migrate(conn, steps)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"a"}  # migration 2 rolled back whole
    assert migrate(conn, (*steps[:1], "CREATE TABLE b (x);", "CREATE TABLE c (x)")) == 3
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()


# -- group commit ----------------------------------------------------------------------------------


async def test_concurrent_writers_share_transactions_and_are_durable(
    stores: pgkit.Stores,
) -> None:
    writers = 200
    with trio.fail_after(TIMEOUT):
        store = stores.fresh(file=True)
        async with running(store):
            async with trio.open_nursery() as nursery:
                for i in range(writers):
                    nursery.start_soon(store.write, [PutDevice(device(f"d{i:03}"))])
            stats = store.stats()
        reopened = stores.again(store)
        loaded = await reopened.load()
        reopened.close()
    assert stats["writes"] == stats["ops"] == writers
    assert stats["batches"] <= writers // 10, stats
    assert stats["mean_batch"] == writers / stats["batches"]
    assert [d.device_id for d in loaded.devices] == [f"d{i:03}" for i in range(writers)]


async def test_max_batch_caps_a_transaction(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh(max_batch=3)
        results: list[Any] = []
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as writers:
                await queue_in_order(
                    writers, store, [[PutDevice(device(f"d{i}"))] for i in range(7)], results
                )
                await outer.start(store.run)
            stats = store.stats()
            store.close()
    assert results == [None] * 7
    assert stats["batches"] == 3 and stats["writes"] == 7


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(PutActivity(activity("bad", version=2**70)), id="integer-overflow"),
        pytest.param(PutDevice(device("bad", push_to_start_token=None)), id="not-null"),
    ],
)
async def test_failed_batch_fails_all_its_writers_and_the_next_succeeds(
    stores: pgkit.Stores, bad: Op
) -> None:
    good: list[list[Op]] = [
        [PutDevice(device("g1"))],
        [PutDevice(device("g2")), PutRecipient(recipient())],
    ]
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        results: list[Any] = []
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as writers:
                await queue_in_order(writers, store, [good[0], [bad], good[1]], results)
                await outer.start(store.run)  # takes all three queued writes as one batch
            assert (await store.load()) == Snapshot()  # nothing of the batch applied
            await store.write([PutDevice(device("after"))])
            loaded = await store.load()
            stats = store.stats()
            store.close()
    assert all(isinstance(r, StoreError) for r in results), results
    assert all("store transaction failed" in str(r) and TOKEN not in str(r) for r in results)
    assert [d.device_id for d in loaded.devices] == ["after"]
    assert stats["failed_batches"] == 1 and stats["batches"] == 1 and stats["writes"] == 1


async def test_write_waits_while_the_queue_is_full(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh(queue=1)
        results: list[Any] = []
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as writers:
                await queue_in_order(
                    writers, store, [[PutDevice(device("d1"))], [PutDevice(device("d2"))]], results
                )
                stats = store.stats()
                assert (stats["queued"], stats["blocked_writers"]) == (1, 1)
                assert results == [..., ...]  # neither returned
                await outer.start(store.run)
            loaded = await store.load()
            store.close()
    assert results == [None, None]
    assert [d.device_id for d in loaded.devices] == ["d1", "d2"]


async def test_close_fails_queued_and_blocked_writes_and_later_ones(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh(queue=1)
        results: list[Any] = []
        async with trio.open_nursery() as writers:
            await queue_in_order(
                writers, store, [[PutDevice(device("d1"))], [PutDevice(device("d2"))]], results
            )
            store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.write([PutDevice(device("d3"))])
        with pytest.raises(StoreError, match="closed"):
            await store.load()
    assert [str(r) for r in results] == ["store is closed", "store is closed"]


async def test_close_under_load_answers_every_writer_and_keeps_what_succeeded(
    stores: pgkit.Stores,
) -> None:
    writers = 300
    results: dict[str, BaseException | None] = {}

    async def one(device_id: str) -> None:
        try:
            await store.write([PutDevice(device(device_id))])
            results[device_id] = None
            # The first writer to return closes the store: by then the writer has usually
            # started its next transaction, and many writes are still queued.
            store.close()
        except StoreError as exc:
            results[device_id] = exc

    with trio.fail_after(TIMEOUT):
        store = stores.fresh(file=True, max_batch=7)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            for i in range(writers):
                nursery.start_soon(one, f"d{i:03}")
        reopened = stores.again(store)
        loaded = await reopened.load()
        reopened.close()
    assert len(results) == writers
    succeeded = sorted(k for k, v in results.items() if v is None)
    assert 1 <= len(succeeded) <= 14  # the first batch, and the one in flight at close()
    assert [d.device_id for d in loaded.devices] == succeeded
    assert all("store" in str(v) for v in results.values() if v is not None)


async def test_stopped_writer_fails_later_writes(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write([PutDevice(device())])
            nursery.cancel_scope.cancel()
        with pytest.raises(StoreError, match="closed"):
            await store.write([PutDevice(device("d2"))])
        assert (await store.load()).devices == [device()]  # reads still work until close()
        store.close()


async def test_empty_write_returns_at_once(stores: pgkit.Stores) -> None:
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        await store.write([])  # no writer running: would hang if it queued anything
        assert store.stats()["queued"] == 0
        store.close()


# -- the store against a dict model ---------------------------------------------------------------

_ids = st.sampled_from(["a", "b", "c"])
# No NUL: PostgreSQL text cannot hold one (tests/integration/test_store_pg.py: such a write
# fails whole and changes nothing).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_ints = st.integers(-(2**63), 2**63 - 1)
_json = st.recursive(
    st.none() | st.booleans() | _ints | _floats | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_objects = st.dictionaries(_text, _json, max_size=3)
_devices = st.builds(
    DeviceRow,
    device_id=_ids,
    name=st.none() | _text,
    push_to_start_token=_text,
    channels=st.lists(_text, max_size=2),
    registered_at=_floats,
)
_activities = st.builds(
    ActivityRow,
    activity_id=_ids,
    stream_key=st.none() | _ids,
    type=_text,
    state=_objects.map(pack_state),
    alert=st.none() | _objects,
    version=_ints,
    ended=st.booleans(),
    started_at=_floats,
    updated_at=_floats,
    ended_at=st.none() | _floats,
    dismissal_date=st.none() | _ints,
    update_count=_ints,
    channels=st.lists(_text, max_size=2),
    metadata=st.none() | _objects,
    tags=st.none() | st.lists(_text, max_size=2),
)
_recipients = st.builds(
    RecipientRow,
    activity_id=_ids,
    device_id=_ids,
    start_token=_text,
    update_token=st.none() | _text,
    started=st.booleans(),
    sent_version=_ints,
    dead=st.booleans(),
)
_streams = st.builds(StreamRow, stream_key=_ids, activity_id=st.none() | _ids)
_ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(PutDevice, _devices),
    st.builds(DeleteDevice, _ids),
    st.builds(PutActivity, _activities),
    st.builds(DeleteActivity, _ids),
    st.builds(PutRecipient, _recipients),
    st.builds(PutStream, _streams),
)


class Model:
    """What the store should hold: one dict per table."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceRow] = {}
        self.activities: dict[str, ActivityRow] = {}
        self.recipients: dict[tuple[str, str], RecipientRow] = {}
        self.streams: dict[str, StreamRow] = {}

    def apply(self, op: Op) -> None:
        match op:
            case PutDevice(row=row):
                self.devices[row.device_id] = row
            case DeleteDevice(device_id=device_id):
                self.devices.pop(device_id, None)
            case PutActivity(row=row):
                self.activities[row.activity_id] = row
            case DeleteActivity(activity_id=activity_id):
                self.activities.pop(activity_id, None)
                for key in [k for k in self.recipients if k[0] == activity_id]:
                    del self.recipients[key]
            case PutRecipient(row=row):
                self.recipients[(row.activity_id, row.device_id)] = row
            case PutStream(row=row):
                self.streams[row.stream_key] = row

    def snapshot(self) -> Snapshot:
        return Snapshot(
            devices=[self.devices[k] for k in sorted(self.devices)],
            activities=[self.activities[k] for k in sorted(self.activities)],
            recipients=[self.recipients[k] for k in sorted(self.recipients)],
            streams=[self.streams[k] for k in sorted(self.streams)],
        )


# Each example takes a fresh store from the fixture (`stores.fresh()`), so sharing it is safe.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(st.lists(_ops, min_size=1, max_size=4), max_size=8), data=st.data())
async def test_store_matches_a_dict_model(
    stores: pgkit.Stores, writes: list[list[Op]], data: st.DataObject
) -> None:
    # The first `grouped` writes are queued before the writer starts, so they commit as one
    # batch in queue order; the rest are written one after another.
    grouped = data.draw(st.integers(0, len(writes)), label="grouped")
    model = Model()
    for ops in writes:
        for op in ops:
            model.apply(op)
    with trio.fail_after(TIMEOUT):
        store = stores.fresh()
        results: list[Any] = []
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as writers:
                await queue_in_order(writers, store, writes[:grouped], results)
                await outer.start(store.run)
            for ops in writes[grouped:]:
                await store.write(ops)
            loaded = await store.load()
            stats = store.stats()
            store.close()
    assert results == [None] * grouped
    assert stats["writes"] == len(writes)
    assert loaded == model.snapshot()
