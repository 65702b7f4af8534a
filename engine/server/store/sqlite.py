"""The SQLite store: one file in WAL mode, written by group commit.

    store = SqliteStore(Path("lockstep-data/lockstep.db"))
    snapshot = await store.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.write([PutDevice(row)])   # durable when this returns

**Group commit.** `write(ops)` turns its ops into SQL parameters at once (so later in-place edits
of the rows never leak into this write), puts them in a bounded channel (it waits while the channel
is full: backpressure) and waits for its batch. The writer task `run()` takes the first queued
write, everything else already queued, then whatever arrives within `commit_interval`, up to
`max_batch` writes, and applies them all, in queue order, in ONE transaction in a worker thread.
One fsync then covers the whole batch, which is what makes per-request durability affordable. When
the transaction fails, every write of that batch raises `StoreError` (nothing of it is applied) and
the writer goes on with the next batch.

**Durability.** WAL with `synchronous=FULL`: each commit syncs the WAL, so a write that returned
survives a power cut, not only a crash of the process. `NORMAL` would skip that sync and could lose
the last acknowledged writes on power loss, while the service has already replied 200 (and pushed).
Group commit pays the sync once per batch, so FULL costs latency, not throughput.

**Threads.** One connection (`check_same_thread=False`) is used by whichever worker thread runs
the SQL; a lock serialises it, so `load()` never sees the writer's uncommitted transaction.
`":memory:"` gives a private in-memory database (for tests): no WAL there, same code otherwise.

**Schema.** `PRAGMA user_version` holds how many `MIGRATIONS` were applied. Opening a database
applies the missing ones in order, each in its own transaction with its version bump; a database
from a newer release raises `StoreError` instead of being touched. The file is meant to be owned by
one process. Lists and dicts are stored as JSON text (msgspec), booleans as 0/1.

**Privacy.** The file holds device tokens and webhook bodies: it is created 0600 before SQLite
opens it (SQLite gives the `-wal` and `-shm` files the database's mode), and an existing one
readable by others is tightened with its `-wal` and `-shm`, with a warning, once SQLite has
found it to be a database and before anything is written (engine/server/files.py).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar

import msgspec
import trio

from engine.server.cluster.partitions import (
    GLOBAL,
    SLOT_MODULUS,
    activity_partition,
    activity_slot,
    key_partition,
    key_slot,
)
from engine.server.files import create_private, tighten_all
from engine.server.store.base import BUSY, DISK_FULL, FAILED, IO_ERROR, READ_ONLY, StoreError
from engine.server.store.records import (
    ActivityRow,
    DeleteActivity,
    DeleteDelivery,
    DeleteDevice,
    DeleteNotification,
    DeliveryRow,
    DeviceRow,
    Fence,
    MetricRow,
    NotificationRow,
    Op,
    PutActivity,
    PutDelivery,
    PutDevice,
    PutMetric,
    PutNotification,
    PutRecipient,
    PutStream,
    RecipientRow,
    Snapshot,
    StreamRow,
)

_T = TypeVar("_T")
log = logging.getLogger("lockstep.store")

SLOT_FUNCTION: Final = "lockstep_slot"
"""`partitions.activity_slot` as an SQL function of each connection (migration 6 fills with it)."""

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the four tables. Recipients and streams are small rows keyed by text: WITHOUT ROWID.
    """
    CREATE TABLE devices (
        device_id TEXT NOT NULL PRIMARY KEY,
        name TEXT,
        push_to_start_token TEXT NOT NULL,
        channels TEXT NOT NULL,
        registered_at REAL NOT NULL
    );
    CREATE TABLE activities (
        activity_id TEXT NOT NULL PRIMARY KEY,
        stream_key TEXT,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        alert TEXT,
        version INTEGER NOT NULL,
        ended INTEGER NOT NULL,
        started_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        ended_at REAL,
        dismissal_date INTEGER,
        update_count INTEGER NOT NULL,
        channels TEXT NOT NULL,
        metadata TEXT,
        tags TEXT
    );
    CREATE TABLE recipients (
        activity_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        start_token TEXT NOT NULL,
        update_token TEXT,
        started INTEGER NOT NULL,
        sent_version INTEGER NOT NULL,
        dead INTEGER NOT NULL,
        PRIMARY KEY (activity_id, device_id)
    ) WITHOUT ROWID;
    CREATE TABLE streams (
        stream_key TEXT NOT NULL PRIMARY KEY,
        activity_id TEXT
    ) WITHOUT ROWID;
    """,
    # 2: find a stream's activities (ended ones included) without scanning the table.
    """
    CREATE INDEX activities_by_stream ON activities (stream_key);
    """,
    # 3: widget metrics, and each device's widget push token (iOS 26 `widgets` pushes).
    """
    ALTER TABLE devices ADD COLUMN widget_token TEXT;
    CREATE TABLE metrics (
        key TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL,
        timestamp REAL NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: inbound webhooks' delivery logs (redeliveries are checked against them, replays read them).
    """
    CREATE TABLE deliveries (
        webhook TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        received_at REAL NOT NULL,
        event TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL,
        streams TEXT NOT NULL,
        body TEXT NOT NULL,
        replays INTEGER NOT NULL,
        PRIMARY KEY (webhook, delivery_id)
    );
    """,
    # 5: push notifications (replaceable across restarts) and each device's app token for them.
    """
    ALTER TABLE devices ADD COLUMN app_token TEXT;
    CREATE TABLE notifications (
        notification_id TEXT NOT NULL PRIMARY KEY,
        content TEXT NOT NULL,
        channels TEXT NOT NULL,
        devices TEXT NOT NULL,
        metadata TEXT,
        tags TEXT,
        version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        settled TEXT NOT NULL
    );
    """,
    # 6: each activity's and stream's partition slot (`cluster.partitions`), so a cluster node
    # loads only the partitions it takes (`Store.load_partitions`); filled for existing rows.
    f"""
    ALTER TABLE activities ADD COLUMN slot INTEGER;
    ALTER TABLE streams ADD COLUMN slot INTEGER;
    UPDATE activities SET slot = {SLOT_FUNCTION}(activity_id, stream_key);
    UPDATE streams SET slot = {SLOT_FUNCTION}(NULL, stream_key);
    CREATE INDEX activities_by_slot ON activities ((slot % {SLOT_MODULUS}));
    CREATE INDEX streams_by_slot ON streams ((slot % {SLOT_MODULUS}));
    CREATE INDEX activities_slot_unset ON activities (activity_id) WHERE slot IS NULL;
    CREATE INDEX streams_slot_unset ON streams (stream_key) WHERE slot IS NULL;
    """,
)
"""Schema migrations in order; migration N (1-based) brings `user_version` from N-1 to N."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this code reads and writes."""

Statement: TypeAlias = tuple[str, tuple[Any, ...]]
Row: TypeAlias = (
    DeviceRow | ActivityRow | RecipientRow | StreamRow | MetricRow | DeliveryRow | NotificationRow
)

_json = msgspec.json.Encoder()


class _Table:
    """One table mapped to one row type: upsert parameters out, rows back in."""

    def __init__(
        self,
        name: str,
        row_type: type[Row],
        key: tuple[str, ...],
        *,
        json: frozenset[str] = frozenset(),
        raw: frozenset[str] = frozenset(),
        flags: frozenset[str] = frozenset(),
        slot: Callable[[Any], int] | None = None,
    ) -> None:
        self.name = name
        self.row_type = row_type
        self.columns: tuple[str, ...] = row_type.__struct_fields__
        self._json = frozenset(i for i, c in enumerate(self.columns) if c in json)
        self._flags = frozenset(i for i, c in enumerate(self.columns) if c in flags)
        # JSON columns kept encoded in memory (msgspec.Raw): stored as they are, loaded undecoded.
        self._raw = frozenset(i for i, c in enumerate(self.columns) if c in raw)
        self._encoded = self._json | self._raw
        # The partition slot is stored with the row (`load_partitions` selects by it), never
        # loaded back: it follows from the row's own columns.
        self._slot = slot
        stored = (*self.columns, "slot") if slot is not None else self.columns
        cols = ", ".join(self.columns)
        marks = ", ".join("?" * len(stored))
        sets = ", ".join(f"{c} = excluded.{c}" for c in stored if c not in key)
        # Standard upsert syntax (SQLite >= 3.24, also PostgreSQL).
        self.upsert_sql = (
            f"INSERT INTO {name} ({', '.join(stored)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
        )
        self.select_sql = f"SELECT {cols} FROM {name} ORDER BY {', '.join(key)}"
        self.select_where_sql = f"SELECT {cols} FROM {name} WHERE {{}} ORDER BY {', '.join(key)}"

    def upsert(self, row: Row) -> Statement:
        """The statement that stores `row`; `StoreError` when it cannot be encoded."""
        if type(row) is not self.row_type:
            raise StoreError(
                f"{self.name}: expected {self.row_type.__name__}, got {type(row).__name__}"
            )
        values = list(msgspec.structs.astuple(row))
        try:
            for i in self._encoded:
                if values[i] is not None:
                    values[i] = _json.encode(values[i]).decode()
        except (msgspec.EncodeError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.name}: cannot encode row: {exc}") from None
        if self._slot is not None:
            values.append(self._slot(row))
        return self.upsert_sql, tuple(values)

    def load(self, conn: sqlite3.Connection) -> list[Any]:
        """Every row of the table, in key order."""
        return [self.decode(record) for record in conn.execute(self.select_sql)]

    def decode(self, record: Sequence[Any]) -> Any:
        """The row of one `select_sql` record (JSON columns decoded, flags as booleans)."""
        values = list(record)
        for i in self._json:
            if values[i] is not None:
                values[i] = msgspec.json.decode(values[i])
        for i in self._raw:
            if values[i] is not None:
                values[i] = msgspec.Raw(values[i].encode())
        for i in self._flags:
            values[i] = bool(values[i])
        return self.row_type(**dict(zip(self.columns, values, strict=True)))


_DEVICES: Final = _Table("devices", DeviceRow, ("device_id",), json=frozenset({"channels"}))
_ACTIVITIES: Final = _Table(
    "activities",
    ActivityRow,
    ("activity_id",),
    json=frozenset({"alert", "channels", "metadata", "tags"}),
    raw=frozenset({"state"}),
    flags=frozenset({"ended"}),
    slot=lambda row: activity_slot(row.activity_id, row.stream_key),
)
_RECIPIENTS: Final = _Table(
    "recipients", RecipientRow, ("activity_id", "device_id"), flags=frozenset({"started", "dead"})
)
_STREAMS: Final = _Table(
    "streams", StreamRow, ("stream_key",), slot=lambda row: key_slot(row.stream_key)
)
# A metric's value is a number or a string: stored as JSON text, so it loads as the same type.
_METRICS: Final = _Table("metrics", MetricRow, ("key",), json=frozenset({"value"}))

_DELIVERIES: Final = _Table(
    "deliveries", DeliveryRow, ("webhook", "delivery_id"), json=frozenset({"streams"})
)
_DELETE_DELIVERY: Final = "DELETE FROM deliveries WHERE webhook = ? AND delivery_id = ?"

_NOTIFICATIONS: Final = _Table(
    "notifications",
    NotificationRow,
    ("notification_id",),
    json=frozenset({"content", "channels", "devices", "metadata", "tags", "settled"}),
)

TABLES: Final[dict[str, _Table]] = {
    "devices": _DEVICES,
    "activities": _ACTIVITIES,
    "recipients": _RECIPIENTS,
    "streams": _STREAMS,
    "metrics": _METRICS,
    "deliveries": _DELIVERIES,
    "notifications": _NOTIFICATIONS,
}
"""Each `Snapshot` field's table (the PostgreSQL store loads through these too)."""

_GLOBAL_FIELDS: Final = ("devices", "metrics", "deliveries", "notifications")
"""The `Snapshot` fields of rows that belong to no activity: partition 0's (`load_partitions`)."""


def slot_condition(column: str, partitions: Collection[int], count: int) -> str:
    """SQL true for a row whose slot `column` is in one of `partitions` of `count`, or unset.

    Only integers we make go into the text. With a count dividing `SLOT_MODULUS` (64 does) it
    is `slot % SLOT_MODULUS IN (...)`, the expression the slot indexes hold; with any other
    count the server still filters, without the index.
    """
    if not 1 <= count <= SLOT_MODULUS:
        raise ValueError(f"a partition count must be 1..{SLOT_MODULUS}, got {count}")
    wanted = {int(p) for p in partitions if 0 <= p < count}
    if not wanted:
        return "FALSE"
    if SLOT_MODULUS % count == 0:
        modulus, values = SLOT_MODULUS, [r for r in range(SLOT_MODULUS) if r % count in wanted]
    else:
        modulus, values = count, sorted(wanted)
    # A row without a slot (written by a node of the release before migration 6 while the
    # cluster upgraded) may be in any partition: it is read too (`*_slot_unset` indexes), and
    # the caller keeps those of its partitions.
    return f"({column} % {modulus} IN ({', '.join(map(str, values))}) OR {column} IS NULL)"


def partition_queries(partitions: Collection[int], count: int) -> dict[str, tuple[_Table, str]]:
    """Each `Snapshot` field's table and the SELECT of its rows in `partitions` of `count`:
    their activities, those activities' recipients, their streams and, with partition 0, every
    row that belongs to no activity."""
    cols = ", ".join(f"r.{c}" for c in _RECIPIENTS.columns)
    recipients = (
        f"SELECT {cols} FROM recipients r JOIN activities a ON a.activity_id = r.activity_id "
        f"WHERE {slot_condition('a.slot', partitions, count)} ORDER BY r.activity_id, r.device_id"
    )
    out = {
        "activities": (
            _ACTIVITIES,
            _ACTIVITIES.select_where_sql.format(slot_condition("slot", partitions, count)),
        ),
        "recipients": (_RECIPIENTS, recipients),
        "streams": (
            _STREAMS,
            _STREAMS.select_where_sql.format(slot_condition("slot", partitions, count)),
        ),
    }
    if GLOBAL in partitions:
        out.update({f: (TABLES[f], TABLES[f].select_sql) for f in _GLOBAL_FIELDS})
    return out


def keep_partitions(snapshot: Snapshot, partitions: Collection[int], count: int) -> Snapshot:
    """`snapshot` (read by `partition_queries`) without the rows of other partitions that came
    with it: those without a slot are read whatever their partition."""
    wanted = set(partitions)
    acts = [
        a
        for a in snapshot.activities
        if activity_partition(a.activity_id, a.stream_key, count) in wanted
    ]
    if len(acts) == len(snapshot.activities):
        streams = [s for s in snapshot.streams if key_partition(s.stream_key, count) in wanted]
        if len(streams) == len(snapshot.streams):
            return snapshot  # the usual case: every row has its slot
    ids = {a.activity_id for a in acts}
    return msgspec.structs.replace(
        snapshot,
        activities=acts,
        recipients=[r for r in snapshot.recipients if r.activity_id in ids],
        streams=[s for s in snapshot.streams if key_partition(s.stream_key, count) in wanted],
    )


_DELETE_DEVICE: Final = "DELETE FROM devices WHERE device_id = ?"
_DELETE_RECIPIENTS_OF: Final = "DELETE FROM recipients WHERE activity_id = ?"
_DELETE_ACTIVITY: Final = "DELETE FROM activities WHERE activity_id = ?"
_DELETE_NOTIFICATION: Final = "DELETE FROM notifications WHERE notification_id = ?"
FENCE_SQL: Final = "SELECT lockstep_fence(?, ?, ?)"
"""A `Fence` op: the PostgreSQL function the cluster creates (engine/server/cluster/pgleases.py)
raises unless the lease is still held; SQLite has no such function and refuses the batch."""


def compile_ops(ops: Sequence[Op]) -> list[Statement]:
    """The SQL statements for `ops`, in order; `StoreError` for a non-op or an unencodable row."""
    out: list[Statement] = []
    for op in ops:
        match op:
            case Fence(partition=partition, epoch=epoch, owner=owner):
                out.append((FENCE_SQL, (partition, owner, epoch)))
            case PutDevice(row=row):
                out.append(_DEVICES.upsert(row))
            case PutActivity(row=row):
                out.append(_ACTIVITIES.upsert(row))
            case PutRecipient(row=row):
                out.append(_RECIPIENTS.upsert(row))
            case PutStream(row=row):
                out.append(_STREAMS.upsert(row))
            case PutMetric(row=row):
                out.append(_METRICS.upsert(row))
            case PutNotification(row=row):
                out.append(_NOTIFICATIONS.upsert(row))
            case DeleteNotification(notification_id=notification_id):
                out.append((_DELETE_NOTIFICATION, (notification_id,)))
            case DeleteDevice(device_id=device_id):
                out.append((_DELETE_DEVICE, (device_id,)))
            case DeleteActivity(activity_id=activity_id):
                out.append((_DELETE_RECIPIENTS_OF, (activity_id,)))
                out.append((_DELETE_ACTIVITY, (activity_id,)))
            case PutDelivery(row=row):
                out.append(_DELIVERIES.upsert(row))
            case DeleteDelivery(webhook=webhook, delivery_id=delivery_id):
                out.append((_DELETE_DELIVERY, (webhook, delivery_id)))
            case _:
                raise StoreError(f"not a store op: {type(op).__name__}")
    return out


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply the migrations `conn` lacks, each atomically with its version; returns the version."""
    # Migration 6 fills the slots with the same function the writes use.
    conn.create_function(SLOT_FUNCTION, 2, activity_slot, deterministic=True)
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise StoreError(
            f"database schema version {version} is newer than this release supports "
            f"({len(migrations)}); upgrade Lockstep or use another database file"
        )
    for number in range(version + 1, len(migrations) + 1):
        script = migrations[number - 1].strip().rstrip(";")
        try:
            # executescript commits anything pending first, so the transaction is in the script.
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script};\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"schema migration {number} failed: {exc}") from exc
    return len(migrations)


def _describe(exc: BaseException) -> str:
    """A failure message naming the cause, never a bound value."""
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, sqlite3.Error):  # SQLite's own messages name columns, not values
        return f"store transaction failed: {type(exc).__name__}: {exc}"
    return f"store transaction failed: {type(exc).__name__}"


# SQLite's primary result codes (extended ones share the prefix: SQLITE_IOERR_WRITE, ...).
_CAUSES: Final = (
    ("SQLITE_FULL", DISK_FULL),
    ("SQLITE_READONLY", READ_ONLY),
    ("SQLITE_IOERR", IO_ERROR),
    ("SQLITE_BUSY", BUSY),
    ("SQLITE_LOCKED", BUSY),
)
_PROBE_KEY: Final = "\x00probe"
# The probe's row spans this many pages: more than one call's write needs (an activity, its
# recipients and the stream, each maybe splitting a b-tree page), so a probe that succeeds means
# such a write fits again.
_PROBE_PAGES: Final = 16
_OS_CAUSES: Final = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EROFS: READ_ONLY}


def cause_of(exc: BaseException) -> str:
    """What an operator has to fix for a failed transaction (`StoreError.cause`)."""
    if isinstance(exc, StoreError):
        return exc.cause
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""
        for prefix, cause in _CAUSES:
            if name.startswith(prefix):
                return cause
        return FAILED
    if isinstance(exc, OSError):
        return _OS_CAUSES.get(exc.errno or 0, IO_ERROR)
    return FAILED


class _Write:
    """One `write()` call waiting in the queue or in a batch."""

    __slots__ = ("cause", "done", "error", "kind", "ops", "statements")

    def __init__(self, ops: Sequence[Op]) -> None:
        self.statements = compile_ops(ops)
        self.ops = len(ops)
        self.done = trio.Event()
        self.error: str | None = None
        self.cause: BaseException | None = None
        self.kind = FAILED

    def fail(self, message: str, cause: BaseException | None = None) -> None:
        self.error, self.cause = message, cause
        self.kind = FAILED if cause is None else cause_of(cause)
        self.done.set()


class SqliteStore:
    """`Store` on one SQLite file (or `":memory:"`); see the module docstring.

    `commit_interval`: seconds the writer waits for more writes after the first one of a batch;
    `max_batch`: most writes per transaction; `queue`: writes that may wait before `write` blocks.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        commit_interval: float = 0.002,
        max_batch: int = 1000,
        queue: int = 10_000,
        threads: bool = True,
    ) -> None:
        if max_batch < 1 or queue < 0 or commit_interval < 0:
            raise ValueError("max_batch must be >= 1, queue and commit_interval >= 0")
        self.path: Path | None = None if path == ":memory:" else Path(path)
        self._interval = commit_interval
        self._max_batch = max_batch
        # SQL runs in a worker thread so the event loop never waits on a disk sync. Tests on
        # trio's MockClock pass threads=False: autojump would otherwise advance the clock while
        # the loop waits for the thread.
        self._threads = threads
        self._send, self._recv = trio.open_memory_channel[_Write](queue)
        self._conn: sqlite3.Connection | None = None
        self._conn_lock = threading.Lock()  # held by whichever thread uses the connection
        self._open_lock = trio.Lock()
        self._batch: list[_Write] = []
        self._scope: trio.CancelScope | None = None
        self._running = False
        self._closed = False
        self._batches = self._failed_batches = self._writes = self._ops = 0

    # -- the Store interface -------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Every stored row, each table in key order; works before `run()` starts."""
        await self._ensure_open()
        return await self._off_loop(self._load_sync)

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        """The stored rows of `partitions` (of `count`), selected by their slot; see
        `base.Store.load_partitions`. Works before `run()` starts."""
        queries = partition_queries(partitions, count)
        await self._ensure_open()
        snapshot = await self._off_loop(self._load_partitions_sync, queries)
        return keep_partitions(snapshot, partitions, count)

    async def write(self, ops: Sequence[Op]) -> None:
        """Apply `ops` atomically; durable when it returns; `StoreError` when not applied."""
        if not ops:
            await trio.lowlevel.checkpoint()
            return
        if self._closed:
            raise StoreError("store is closed")
        pending = _Write(ops)
        try:
            await self._send.send(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreError("store is closed") from None
        await pending.done.wait()
        if pending.error is not None:
            raise StoreError(pending.error, cause=pending.kind) from pending.cause

    async def probe(self) -> None:
        """Whether a write that needs new space can be committed now; `StoreError` if not.

        One transaction inserts a row `_PROBE_PAGES` pages long (so SQLite must find or allocate
        pages, as a growing database does), deletes it and commits (so the WAL is written and
        synced): a full disk or database, a read-only file or an I/O error fails it, and nothing
        remains.
        """
        await self._ensure_open()
        try:
            await self._off_loop(self._probe_sync)
        except sqlite3.Error as exc:
            raise StoreError(_describe(exc), cause=cause_of(exc)) from exc

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: opens the database, reports started, commits batches until cancelled."""
        if self._running:
            raise RuntimeError("the store writer is already running")
        self._running = True
        try:
            await self._ensure_open()
            with trio.CancelScope() as self._scope:
                task_status.started()
                # close() cancels this scope and closes the queue; taking from the closed queue
                # (receive_nowait is no checkpoint) can notice first.
                with contextlib.suppress(trio.EndOfChannel):
                    while True:
                        await self._gather()
                        await self._commit()
        finally:
            self._scope = None
            self._shut(
                "store is closed"
                if self._closed
                else "store writer stopped before the write was committed"
            )

    def close(self) -> None:
        """Stop the writer, fail queued writes, close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()  # the writer fails its own batch in run()'s finally
        self._fail_queued("store is closed")
        self._send.close()
        with self._conn_lock:  # waits for a transaction in flight to finish
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def stats(self) -> dict[str, float]:
        """Batches committed and failed, writes and ops committed, mean writes per batch, queue."""
        channel = self._send.statistics()
        return {
            "batches": self._batches,
            "failed_batches": self._failed_batches,
            "writes": self._writes,
            "ops": self._ops,
            "mean_batch": self._writes / self._batches if self._batches else 0.0,
            "queued": channel.current_buffer_used,
            "blocked_writers": channel.tasks_waiting_send,
        }

    # -- the writer ---------------------------------------------------------------------------

    async def _gather(self) -> None:
        """Fill `self._batch`: one write (waiting for it), the queued ones, then a short wait."""
        self._batch.append(await self._recv.receive())
        self._take_queued()
        if len(self._batch) < self._max_batch and self._interval > 0:
            # A cancelled receive takes nothing, so ending the wait early loses no write.
            with trio.move_on_after(self._interval):
                while len(self._batch) < self._max_batch:
                    self._batch.append(await self._recv.receive())
                    self._take_queued()

    def _take_queued(self) -> None:
        while len(self._batch) < self._max_batch:
            try:
                self._batch.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                return

    async def _commit(self) -> None:
        """Apply the batch in one transaction in a thread, then wake its writers."""
        batch = self._batch
        statements = [s for w in batch for s in w.statements]
        try:
            # Not abandoned on cancel: once started, the outcome is always reported to writers.
            await self._off_loop(self._commit_sync, statements)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the batch's writers
            message = _describe(exc)
            log.warning("store batch of %d writes failed: %s", len(batch), message)
            self._failed_batches += 1
            for w in batch:
                w.fail(message, exc)
        else:
            self._batches += 1
            self._writes += len(batch)
            self._ops += sum(w.ops for w in batch)
            for w in batch:
                w.done.set()
        self._batch = []

    def _shut(self, message: str) -> None:
        """The writer is gone: fail what it held and what is queued, refuse new writes."""
        for w in self._batch:
            w.fail(message)
        self._batch = []
        self._fail_queued(message)
        self._recv.close()  # senders blocked now get BrokenResourceError -> StoreError

    def _fail_queued(self, message: str) -> None:
        while True:
            try:
                self._recv.receive_nowait().fail(message)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return

    async def _off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run blocking SQL in a worker thread (or inline, when `threads=False`)."""
        if self._threads:
            return await trio.to_thread.run_sync(fn, *args)
        await trio.lowlevel.checkpoint()
        return fn(*args)

    # -- worker-thread side -------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        async with self._open_lock:
            if self._conn is not None:
                return
            conn = await self._off_loop(self._open_sync)
            if self._closed:  # closed while opening
                conn.close()
                raise StoreError("store is closed")
            self._conn = conn

    def _open_sync(self) -> sqlite3.Connection:
        where = ":memory:" if self.path is None else str(self.path)
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                create_private(self.path)
            conn = sqlite3.connect(
                where, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open store {where}: {exc}") from exc
        try:
            if self.path is not None:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("store %s: WAL unavailable, using journal mode %s", where, mode)
                tighten_all(self.path, "-wal", "-shm")
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn)
        except (sqlite3.Error, StoreError, OSError) as exc:
            conn.close()
            raise StoreError(f"cannot open store {where}: {exc}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is closed")
        return self._conn

    def _load_sync(self) -> Snapshot:
        with self._conn_lock:
            conn = self._connection()
            try:
                return Snapshot(
                    devices=_DEVICES.load(conn),
                    activities=_ACTIVITIES.load(conn),
                    recipients=_RECIPIENTS.load(conn),
                    streams=_STREAMS.load(conn),
                    metrics=_METRICS.load(conn),
                    deliveries=_DELIVERIES.load(conn),
                    notifications=_NOTIFICATIONS.load(conn),
                )
            except (sqlite3.Error, msgspec.DecodeError) as exc:
                where = ":memory:" if self.path is None else str(self.path)
                raise StoreError(f"cannot load store {where}: {_describe(exc)}") from exc

    def _load_partitions_sync(self, queries: dict[str, tuple[_Table, str]]) -> Snapshot:
        with self._conn_lock:
            conn = self._connection()
            try:
                rows = {
                    f: [t.decode(r) for r in conn.execute(sql)] for f, (t, sql) in queries.items()
                }
            except (sqlite3.Error, msgspec.DecodeError) as exc:
                where = ":memory:" if self.path is None else str(self.path)
                raise StoreError(f"cannot load store {where}: {_describe(exc)}") from exc
            return Snapshot(**rows)

    def _probe_sync(self) -> None:
        page = int(self._connection().execute("PRAGMA page_size").fetchone()[0])
        key = _PROBE_KEY + "." * (page * _PROBE_PAGES)  # no stream key has a NUL
        self._commit_sync(
            [
                ("INSERT INTO streams (stream_key, activity_id) VALUES (?, NULL)", (key,)),
                ("DELETE FROM streams WHERE stream_key = ?", (key,)),
            ]
        )

    def _commit_sync(self, statements: list[Statement]) -> None:
        with self._conn_lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Consecutive statements of one kind go to SQLite in one executemany call.
                for sql, group in itertools.groupby(statements, key=itemgetter(0)):
                    conn.executemany(sql, [params for _, params in group])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "SqliteStore",
    "cause_of",
    "compile_ops",
    "keep_partitions",
    "migrate",
    "partition_queries",
    "slot_condition",
]
