"""The lease table on PostgreSQL: nodes, leases with a fencing epoch, and device change signals.

Tables (created on first use, next to the store's tables in the same schema):

    lockstep_cluster(partitions)                    how many partitions the cluster was made with
    lockstep_nodes(node_id, address, heartbeat_at)  who is alive and where it takes forwarded calls
    lockstep_leases(partition, owner, epoch, expires_at)

Why a lease table and not advisory locks: an advisory lock lives as long as its session, so a
node whose connection hangs (not closed: a cut network, a frozen process) keeps its partitions
until the server notices, minutes later by TCP keepalive; and a lock carries no number a write can
be checked against. A lease row expires by the database's own clock whatever the holder's state,
and its `epoch` grows by one on every change of hands: `lockstep_fence(partition, owner, epoch)`
(called first in every batch a node writes, `records.Fence`) takes a key-share lock on the row
and raises SQLSTATE LSF01 unless it is still held under that epoch and not expired, so a write
from a node that lost the partition is refused; taking a partition over locks the row for update
first, so a hand-over waits for a write in progress to commit, while a renewal (which does not
conflict with a key-share lock) never waits for the partition's writes.

A trigger on `devices` sends a notification on `lockstep_devices_<schema>` after every change, so
every node refreshes its copy of the devices within milliseconds (`cluster.node`).

Blocking psycopg calls, one connection, run on a worker thread by `cluster.node`; each method is
one short transaction with a statement timeout, so a round never outlives a lease.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import psycopg

from engine.server.cluster.leases import LeaseView
from engine.server.store.base import StoreError
from engine.server.store.pg import FENCE_STATE, cause_of, connect, describe, where

__all__ = ["LeaseTable", "Round", "devices_channel"]

Connection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

_SETUP_LOCK: Final = "lockstep_cluster"

_SETUP: Final = (
    """
    CREATE TABLE IF NOT EXISTS lockstep_cluster (partitions INTEGER NOT NULL)
    """,
    """
    CREATE TABLE IF NOT EXISTS lockstep_nodes (
        node_id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS lockstep_leases (
        partition INTEGER PRIMARY KEY,
        owner TEXT,
        epoch BIGINT NOT NULL DEFAULT 0,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
    )
    """,
    f"""
    CREATE OR REPLACE FUNCTION lockstep_fence(p INTEGER, who TEXT, e BIGINT) RETURNS VOID AS $$
    BEGIN
        PERFORM 1 FROM lockstep_leases
            WHERE partition = p AND owner = who AND epoch = e AND expires_at > now()
            FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'partition % is held by another node now', p
                USING ERRCODE = '{FENCE_STATE}';
        END IF;
    END $$ LANGUAGE plpgsql
    """,
    """
    CREATE OR REPLACE FUNCTION lockstep_devices_changed() RETURNS TRIGGER AS $$
    BEGIN
        PERFORM pg_notify('lockstep_devices_' || current_schema(), '');
        RETURN NULL;
    END $$ LANGUAGE plpgsql
    """,
    "DROP TRIGGER IF EXISTS lockstep_devices_changed ON devices",
    """
    CREATE TRIGGER lockstep_devices_changed AFTER INSERT OR UPDATE OR DELETE ON devices
        FOR EACH STATEMENT EXECUTE FUNCTION lockstep_devices_changed()
    """,
)

_HEARTBEAT: Final = """
    INSERT INTO lockstep_nodes (node_id, address, heartbeat_at) VALUES (%s, %s, now())
    ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, heartbeat_at = now()
"""
_RENEW: Final = """
    UPDATE lockstep_leases SET expires_at = now() + make_interval(secs => %s)
    FROM unnest(%s::integer[], %s::bigint[]) AS held(p, e)
    WHERE partition = held.p AND epoch = held.e AND owner = %s AND expires_at > now()
    RETURNING partition, epoch
"""
_LEASES: Final = """
    SELECT partition, owner, epoch, EXTRACT(EPOCH FROM expires_at - now())::float8
    FROM lockstep_leases ORDER BY partition
"""
_LIVE: Final = """
    SELECT node_id, address FROM lockstep_nodes
    WHERE heartbeat_at > now() - make_interval(secs => %s)
"""
# Taking or giving a partition up locks its row FOR UPDATE first, which waits for every batch in
# flight that passed the fence (FOR KEY SHARE): the next owner loads the partition only after
# they committed. A take skips rows locked that way (the next round tries them again), so one
# batch hung in flight never holds up the others. A renewal is a plain UPDATE (FOR NO KEY
# UPDATE), which does not conflict with the fence: a busy partition's writes never hold it up.
_ACQUIRE: Final = """
    WITH free AS (
        SELECT partition FROM lockstep_leases
        WHERE partition = ANY(%s) AND (owner IS NULL OR expires_at <= now())
        ORDER BY partition
        FOR UPDATE SKIP LOCKED
    )
    UPDATE lockstep_leases AS l
    SET owner = %s, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => %s)
    FROM free WHERE l.partition = free.partition
    RETURNING l.partition, l.epoch
"""
_RELEASE: Final = """
    WITH mine AS (
        SELECT partition FROM lockstep_leases
        WHERE partition = %s AND owner = %s AND epoch = %s
        FOR UPDATE
    )
    UPDATE lockstep_leases AS l SET owner = NULL, expires_at = now()
    FROM mine WHERE l.partition = mine.partition
"""


def devices_channel(conn: Connection) -> str:
    """The notification channel of this connection's schema (schemas do not share one)."""
    row = conn.execute("SELECT 'lockstep_devices_' || current_schema()").fetchone()
    assert row is not None  # a SELECT of one expression always returns a row
    return str(row[0])


@dataclass(frozen=True, slots=True)
class Round:
    """What one lease round read: the leases renewed, every lease row, the live nodes."""

    renewed: dict[int, int]
    rows: list[LeaseView]
    live: dict[str, str]  # node id -> address


class LeaseTable:
    """This node's view of the lease table (blocking; see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        address: str,
        partitions: int,
        ttl: float,
        connect_timeout: int = 5,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.address = address
        self.partitions = partitions
        self.ttl = ttl
        self._connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def connect(self) -> Connection:
        """A new autocommit connection whose statements give up inside a lease's lifetime."""
        timeout_ms = max(100, int(self.ttl * 1000 / 2))
        conn = connect(self.url, self._connect_timeout, "the cluster database")
        try:
            # Set here, not in `options`: that would replace the URL's own (a search_path).
            conn.execute(f"SET statement_timeout = {timeout_ms}")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up {where(self.url)}: {describe(exc)}") from exc
        return conn

    def setup(self) -> None:
        """Create what is missing (tables, functions, trigger, one row per partition), and
        refuse a database made for another partition count."""
        with self._session() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (_SETUP_LOCK,)
            )
            for sql in _SETUP:
                conn.execute(sql)
            row = conn.execute("SELECT partitions FROM lockstep_cluster").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO lockstep_cluster (partitions) VALUES (%s)", (self.partitions,)
                )
            elif int(row[0]) != self.partitions:
                raise StoreError(
                    f"the cluster database {where(self.url)} was set up with {row[0]} partitions, "
                    f"this node with {self.partitions}: set [cluster] partitions = {row[0]} on "
                    "every node"
                )
            conn.execute(
                "INSERT INTO lockstep_leases (partition) SELECT generate_series(0, %s - 1) "
                "ON CONFLICT DO NOTHING",
                (self.partitions,),
            )

    def round(self, held: Mapping[int, int]) -> Round:
        """Heartbeat, renew `held` (partition -> epoch), read every lease and the live nodes."""
        with self._session() as conn, conn.transaction():
            conn.execute(_HEARTBEAT, (self.node_id, self.address))
            renewed: dict[int, int] = {}
            if held:
                parts, epochs = list(held), [held[p] for p in held]
                for partition, epoch in conn.execute(
                    _RENEW, (self.ttl, parts, epochs, self.node_id)
                ):
                    renewed[int(partition)] = int(epoch)
            rows = [
                LeaseView(int(p), owner, int(epoch), float(left))
                for p, owner, epoch, left in conn.execute(_LEASES)
            ]
            live = {str(n): str(a) for n, a in conn.execute(_LIVE, (self.ttl,))}
        return Round(renewed, rows, live)

    def acquire(self, partitions: Iterable[int]) -> dict[int, int]:
        """Take whichever of `partitions` are free; returns those taken with their new epoch."""
        wanted = list(partitions)
        if not wanted:
            return {}
        with self._session() as conn:
            got = conn.execute(_ACQUIRE, (wanted, self.node_id, self.ttl)).fetchall()
        return {int(p): int(e) for p, e in got}

    def release(self, partition: int, epoch: int) -> None:
        """Give `partition` up at once (only if still held under `epoch`)."""
        with self._session() as conn:
            conn.execute(_RELEASE, (partition, self.node_id, epoch))

    def leave(self, held: Mapping[int, int]) -> None:
        """Release every partition in `held` and remove this node's row (a clean stop)."""
        with self._session() as conn, conn.transaction():
            for partition, epoch in held.items():
                conn.execute(_RELEASE, (partition, self.node_id, epoch))
            conn.execute("DELETE FROM lockstep_nodes WHERE node_id = %s", (self.node_id,))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def _session(self) -> Any:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self.connect()
            try:
                yield self._conn
            except psycopg.Error as exc:
                if self._conn.broken or self._conn.closed:
                    self._conn = None
                raise StoreError(
                    f"lease round on {where(self.url)} failed: {describe(exc)}",
                    cause=cause_of(exc),
                ) from exc
