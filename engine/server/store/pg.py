"""The PostgreSQL store: the same tables and group commit as SQLite, on a database server.

    store = PgStore("postgresql://lockstep@db.example/lockstep")
    snapshot = await store.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.write([PutDevice(row)])   # committed on the server when this returns

Chosen by `[store] url = "postgresql://..."` in lockstep.toml (engine/server/settings.py).

**Same writer.** `PgStore` is `SqliteStore`'s group-commit writer (the queue, batching,
backpressure, failing every write of a failed batch, closing) with the connection side replaced:
one psycopg connection, used by one worker thread at a time, each batch in ONE transaction
(`executemany` per run of like statements) committed before any of its writers is answered. A
failed batch is rolled back, so a failed write changes nothing. The server's `synchronous_commit`
(on by default) makes the commit durable.

**Same rows.** The statements are the SQLite store's (`compile_ops`: standard `INSERT ... ON
CONFLICT DO UPDATE` upserts) with `%s` placeholders; rows load through the same table mappings
(`sqlite.TABLES`). The column types are PostgreSQL's own: `DOUBLE PRECISION` for times (SQLite's
REAL is a double too; PostgreSQL's `REAL` would be a single), `BIGINT` for counts, `BOOLEAN` for
flags, `TEXT` for JSON.

**Schema.** The table `lockstep_schema` holds how many `MIGRATIONS` were applied (SQLite keeps
that number in `PRAGMA user_version`). Connecting applies the missing ones in order, each in its
own transaction with its version bump, under a lock on that table, so two processes starting at
once never apply one twice; a database from a newer release raises `StoreError`. Migration N here
is migration N of `sqlite.MIGRATIONS` in PostgreSQL's dialect: the two lists grow together.

**Connection.** Connect and every statement run in a worker thread (or inline with
`threads=False`, for tests on trio's MockClock). A refused or lost connection fails the write
with cause `UNREACHABLE`; the next write, load or probe connects again, so the service's probe
notices when the server is back. A commit whose answer was lost with the connection may still
have been applied (as with a cancelled write, `base.Store`).

**Privacy.** Error messages name the SQLSTATE and, for server-side conditions (connection,
resources, read-only), the server's message: never a row value, and never the URL's password.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter
from typing import Any, Final, TypeAlias

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict

from engine.server.cluster.partitions import SLOT_MODULUS, activity_slot, key_slot
from engine.server.store.base import (
    BUSY,
    DISK_FULL,
    FAILED,
    FENCED,
    IO_ERROR,
    READ_ONLY,
    UNREACHABLE,
    StoreError,
)
from engine.server.store.records import Snapshot
from engine.server.store.sqlite import (
    TABLES,
    SqliteStore,
    Statement,
    _Table,
    keep_partitions,
    partition_queries,
)

Connection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the four tables.
    """
    CREATE TABLE devices (
        device_id TEXT NOT NULL PRIMARY KEY,
        name TEXT,
        push_to_start_token TEXT NOT NULL,
        channels TEXT NOT NULL,
        registered_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE activities (
        activity_id TEXT NOT NULL PRIMARY KEY,
        stream_key TEXT,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        alert TEXT,
        version BIGINT NOT NULL,
        ended BOOLEAN NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        dismissal_date BIGINT,
        update_count BIGINT NOT NULL,
        channels TEXT NOT NULL,
        metadata TEXT,
        tags TEXT
    );
    CREATE TABLE recipients (
        activity_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        start_token TEXT NOT NULL,
        update_token TEXT,
        started BOOLEAN NOT NULL,
        sent_version BIGINT NOT NULL,
        dead BOOLEAN NOT NULL,
        PRIMARY KEY (activity_id, device_id)
    );
    CREATE TABLE streams (
        stream_key TEXT NOT NULL PRIMARY KEY,
        activity_id TEXT
    );
    """,
    # 2: find a stream's activities (ended ones included) without scanning the table.
    """
    CREATE INDEX activities_by_stream ON activities (stream_key);
    """,
    # 3: widget metrics, and each device's widget push token.
    """
    ALTER TABLE devices ADD COLUMN widget_token TEXT;
    CREATE TABLE metrics (
        key TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 4: inbound webhooks' delivery logs.
    """
    CREATE TABLE deliveries (
        webhook TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        event TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL,
        streams TEXT NOT NULL,
        body TEXT NOT NULL,
        replays BIGINT NOT NULL,
        PRIMARY KEY (webhook, delivery_id)
    );
    """,
    # 5: push notifications and each device's app token for them.
    """
    ALTER TABLE devices ADD COLUMN app_token TEXT;
    CREATE TABLE notifications (
        notification_id TEXT NOT NULL PRIMARY KEY,
        content TEXT NOT NULL,
        channels TEXT NOT NULL,
        devices TEXT NOT NULL,
        metadata TEXT,
        tags TEXT,
        version BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        settled TEXT NOT NULL
    );
    """,
    # 6: each activity's and stream's partition slot, filled for existing rows (`_fill_slots`).
    """
    ALTER TABLE activities ADD COLUMN slot BIGINT;
    ALTER TABLE streams ADD COLUMN slot BIGINT;
    """,
)
"""Schema migrations in order, each `sqlite.MIGRATIONS` entry of the same number for PostgreSQL."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this code reads and writes."""

_FILL_CHUNK: Final = 10_000


def _fill_slots(conn: Connection) -> None:
    """Migration 6's second half: the slot of every existing activity and stream, computed
    here (PostgreSQL has no CRC-32), in the migration's transaction."""
    acts = conn.execute("SELECT activity_id, stream_key FROM activities").fetchall()
    _set_slots(conn, "activities", "activity_id", [(a, activity_slot(a, k)) for a, k in acts])
    keys = conn.execute("SELECT stream_key FROM streams").fetchall()
    _set_slots(conn, "streams", "stream_key", [(k, key_slot(k)) for (k,) in keys])
    # Indexed after the fill: updating an indexed column would rewrite every index entry too.
    conn.execute(
        f"""
        CREATE INDEX activities_by_slot ON activities ((slot % {SLOT_MODULUS}));
        CREATE INDEX streams_by_slot ON streams ((slot % {SLOT_MODULUS}));
        CREATE INDEX activities_slot_unset ON activities (activity_id) WHERE slot IS NULL;
        CREATE INDEX streams_slot_unset ON streams (stream_key) WHERE slot IS NULL;
        """
    )


def _set_slots(conn: Connection, table: str, key: str, slots: list[tuple[str, int]]) -> None:
    for i in range(0, len(slots), _FILL_CHUNK):
        chunk = slots[i : i + _FILL_CHUNK]
        conn.execute(
            f"UPDATE {table} AS t SET slot = v.slot "
            "FROM unnest(%s::text[], %s::bigint[]) AS v(k, slot) "
            f"WHERE t.{key} = v.k",
            ([k for k, _ in chunk], [v for _, v in chunk]),
        )


_FILLS: Final[dict[int, Callable[[Connection], None]]] = {6: _fill_slots}
"""Python steps of a migration, run after its SQL in the same transaction."""

_VERSION_TABLE: Final = "lockstep_schema"
_PROBE_KEY: Final = "\x01probe"  # no stream key has a control character (PostgreSQL text: no NUL)


def migrate(conn: Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply the migrations the database lacks, each atomically with its version (see the module
    docstring); returns the version. `conn` is in autocommit mode."""
    # Created only when missing: a read-only server (a standby) refuses even CREATE ... IF NOT
    # EXISTS, and an up-to-date schema on it must still load (its writes then fail READ_ONLY).
    exists = conn.execute("SELECT to_regclass(%s)", (_VERSION_TABLE,)).fetchone()
    if exists is None or exists[0] is None:
        # IF NOT EXISTS alone races (two processes creating it at once: one fails on the catalog);
        # a lock per schema, held to the end of the transaction, makes the second wait and skip.
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (_VERSION_TABLE,)
            )
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} (version INTEGER NOT NULL)")
    row = conn.execute(f"SELECT max(version) FROM {_VERSION_TABLE}").fetchone()
    if row and row[0] == len(migrations):  # the usual case: nothing to do, no lock taken
        return len(migrations)
    for number in range(1, len(migrations) + 1):
        with conn.transaction():
            # The lock makes a second process wait here, then see the version already bumped.
            conn.execute(f"LOCK TABLE {_VERSION_TABLE} IN EXCLUSIVE MODE")
            row = conn.execute(f"SELECT max(version) FROM {_VERSION_TABLE}").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > len(migrations):
                raise StoreError(
                    f"database schema version {version} is newer than this release supports "
                    f"({len(migrations)}); upgrade Lockstep or use another database"
                )
            if version >= number:
                continue
            try:
                conn.execute(migrations[number - 1])
                if number in _FILLS:
                    _FILLS[number](conn)
            except psycopg.Error as exc:
                raise StoreError(
                    f"schema migration {number} failed: {describe(exc)}", cause=cause_of(exc)
                ) from exc
            conn.execute(f"DELETE FROM {_VERSION_TABLE}")
            conn.execute(f"INSERT INTO {_VERSION_TABLE} (version) VALUES (%s)", (number,))
    return len(migrations)


FENCE_STATE: Final = "LSF01"
"""The SQLSTATE `lockstep_fence` raises: the batch's partition is held by another node now."""

# SQLSTATE classes and codes (PostgreSQL manual, appendix A) -> what an operator has to fix.
_CODES: Final = {
    "53100": DISK_FULL,  # disk_full
    "25006": READ_ONLY,  # read_only_sql_transaction (a standby, or default_transaction_read_only)
    "58030": IO_ERROR,  # io_error
    "40001": BUSY,  # serialization_failure
    "40P01": BUSY,  # deadlock_detected
    "55P03": BUSY,  # lock_not_available
    "57014": BUSY,  # query_canceled (statement_timeout)
    "57P01": UNREACHABLE,  # admin_shutdown
    "57P02": UNREACHABLE,  # crash_shutdown
    "57P03": UNREACHABLE,  # cannot_connect_now (starting up, shutting down)
    FENCE_STATE: FENCED,  # raised by lockstep_fence (engine/server/cluster/pgleases.py)
}
_CLASSES: Final = {"08": UNREACHABLE, "53": BUSY, "58": IO_ERROR}
# Classes whose server messages describe the server, never a row value.
_SAFE_CLASSES: Final = frozenset({"08", "25", "53", "57", "58", FENCE_STATE[:2]})


def cause_of(exc: BaseException) -> str:
    """What an operator has to fix for a failed operation (`StoreError.cause`)."""
    if isinstance(exc, StoreError):
        return exc.cause
    if not isinstance(exc, psycopg.Error):
        return FAILED
    state = exc.sqlstate or ""
    if state:
        return _CODES.get(state) or _CLASSES.get(state[:2], FAILED)
    # No SQLSTATE: the client side failed (refused, lost or closed connection).
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return UNREACHABLE
    return FAILED


def describe(exc: BaseException) -> str:
    """A failure message naming the cause, never a bound value."""
    if isinstance(exc, StoreError):
        return str(exc)
    if not isinstance(exc, psycopg.Error):
        return f"store transaction failed: {type(exc).__name__}"
    state = exc.sqlstate
    if state is None:  # a client-side failure: about the connection, no values in it
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if state[:2] in _SAFE_CLASSES:
        return f"{type(exc).__name__} (SQLSTATE {state}): {exc.diag.message_primary or ''}"
    return f"{type(exc).__name__} (SQLSTATE {state})"


def where(url: str) -> str:
    """`host:port/dbname` of a connection URL, for messages (never its user or password)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "(unparsable database URL)"
    host, port, db = info.get("host") or "localhost", info.get("port") or 5432, info.get("dbname")
    return f"{host}:{port}/{db or ''}"


def connect(url: str, timeout: int, what: str) -> Connection:
    """An autocommit connection to `url` that notices a vanished peer within seconds;
    `StoreError` naming `what` and where (never the URL's password) when it cannot."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=timeout,
            # Notice a peer that vanished without closing (a dead server, a cut network)
            # within seconds instead of the kernel's two hours.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        # A transaction is a batch of statements sent back to back: one idle for 10 s belongs
        # to a frozen process, whose locks (a cluster's lease fence) must not outlive it.
        conn.execute("SET idle_in_transaction_session_timeout = 10000")
        return conn
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot connect to {what} {where(url)}: {describe(exc)}", cause=cause_of(exc)
        ) from exc


class PgStore(SqliteStore):
    """`Store` on a PostgreSQL database; see the module docstring.

    `url`: a libpq connection URL or string (`postgresql://user@host:5432/db`); `connect_timeout`:
    seconds to wait for the server when connecting; the rest as for `SqliteStore`.
    """

    def __init__(
        self,
        url: str,
        *,
        commit_interval: float = 0.002,
        max_batch: int = 1000,
        queue: int = 10_000,
        threads: bool = True,
        connect_timeout: int = 5,
    ) -> None:
        # The SQLite side is never opened: every method that would touch it is overridden here.
        super().__init__(
            ":memory:",
            commit_interval=commit_interval,
            max_batch=max_batch,
            queue=queue,
            threads=threads,
        )
        self.url = url
        self.where = where(url)
        self._connect_timeout = connect_timeout
        self._pg: Connection | None = None
        self._sql: dict[str, str] = {}  # SQLite placeholders -> psycopg's

    # -- the Store interface -------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Every stored row, each table in key order; works before `run()` starts."""
        await self._ensure_open()
        return await self._off_loop(self._load_sync)

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        """The stored rows of `partitions` (of `count`): one query per table restricted by the
        rows' slot on the server (see `base.Store.load_partitions`); works before `run()`."""
        queries = partition_queries(partitions, count)
        await self._ensure_open()
        snapshot = await self._off_loop(self._load_partitions_sync, queries)
        return keep_partitions(snapshot, partitions, count)

    async def probe(self) -> None:
        """Whether a write can be committed now; `StoreError` (with its cause) if not.

        One transaction inserts a row, deletes it and commits, so the server must write and
        flush its WAL: a full disk, a read-only server or a lost connection fails it, and
        nothing remains.
        """
        await self._ensure_open()
        await self._off_loop(self._probe_sync)

    def close(self) -> None:
        """Stop the writer, fail queued writes, close the connection. Idempotent."""
        super().close()
        with self._conn_lock:  # waits for a transaction in flight to finish
            if self._pg is not None:
                self._pg.close()
                self._pg = None

    # -- worker-thread side -------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        async with self._open_lock:
            if self._pg is not None:
                return
            await self._off_loop(self._locked, self._connected)

    def _locked(self, fn: Callable[[], Any]) -> Any:
        with self._conn_lock:
            return fn()

    def _connected(self) -> Connection:
        """The connection, (re)connected and migrated if there is none or it broke."""
        if self._closed:
            raise StoreError("store is closed")
        if self._pg is not None and not self._pg.closed:
            return self._pg
        self._pg = None
        conn = connect(self.url, self._connect_timeout, "the store database")
        try:
            migrate(conn)
        except (psycopg.Error, StoreError) as exc:
            conn.close()
            raise StoreError(
                f"cannot open store {self.where}: {describe(exc)}", cause=cause_of(exc)
            ) from exc
        self._pg = conn
        return conn

    def _load_sync(self) -> Snapshot:
        with self._conn_lock:
            conn = self._connected()
            try:
                tables = {
                    field: [table.decode(r) for r in conn.execute(table.select_sql)]
                    for field, table in TABLES.items()
                }
            except (psycopg.Error, msgspec.DecodeError) as exc:
                self._drop_if_broken()
                raise StoreError(
                    f"cannot load store {self.where}: {describe(exc)}", cause=cause_of(exc)
                ) from exc
            return Snapshot(**tables)

    def _load_partitions_sync(self, queries: dict[str, tuple[_Table, str]]) -> Snapshot:
        # A connection of its own (the schema is migrated: `_ensure_open` came first): a cluster
        # node's writes for the partitions it holds go on while a takeover reads others.
        conn = connect(self.url, self._connect_timeout, "the store database")
        try:
            # One snapshot of the database for every table (a write committing meanwhile is in
            # all of them or none); REPEATABLE READ reads only, it never conflicts.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                rows = {
                    f: [t.decode(r) for r in conn.execute(sql)] for f, (t, sql) in queries.items()
                }
        except (psycopg.Error, msgspec.DecodeError) as exc:
            raise StoreError(
                f"cannot load store {self.where}: {describe(exc)}", cause=cause_of(exc)
            ) from exc
        finally:
            conn.close()
        return Snapshot(**rows)

    def _probe_sync(self) -> None:
        self._commit_sync(
            [
                ("INSERT INTO streams (stream_key, activity_id) VALUES (?, NULL)", (_PROBE_KEY,)),
                ("DELETE FROM streams WHERE stream_key = ?", (_PROBE_KEY,)),
            ]
        )

    def _commit_sync(self, statements: list[Statement]) -> None:
        """One transaction for the batch; `StoreError` with the cause when it is rolled back."""
        with self._conn_lock:
            conn = self._connected()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    for sql, group in itertools.groupby(statements, key=itemgetter(0)):
                        rows = [params for _, params in group]
                        if len(rows) == 1:
                            cur.execute(self._placeholders(sql), rows[0])
                        else:
                            cur.executemany(self._placeholders(sql), rows)
            except psycopg.Error as exc:
                self._drop_if_broken()
                raise StoreError(
                    f"store transaction failed: {describe(exc)}", cause=cause_of(exc)
                ) from exc

    def _placeholders(self, sql: str) -> str:
        """`sql` with psycopg's `%s` for SQLite's `?` (the statements hold no other `?` or `%`)."""
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.replace("?", "%s")
        return out

    def _drop_if_broken(self) -> None:
        """Forget a connection that broke, so the next operation connects again."""
        if self._pg is not None and (self._pg.broken or self._pg.closed):
            with contextlib.suppress(psycopg.Error):
                self._pg.close()
            self._pg = None


__all__ = [
    "FENCE_STATE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PgStore",
    "cause_of",
    "connect",
    "describe",
    "migrate",
    "where",
]
