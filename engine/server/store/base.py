"""The store interface: load everything at startup, then write batches of ops durably.

The service keeps every row in memory and reads only from there, so the store needs no queries:
`load()` once at startup and `write(ops)` for each change (a cluster node also loads the
partitions it takes over, `load_partitions`). That narrow surface is deliberate: a
server database implements it with the same tables, `INSERT ... ON CONFLICT DO UPDATE` for puts
and one transaction per batch, without the service changing (`sqlite.SqliteStore`, the default,
and `pg.PgStore` on PostgreSQL).

Contract for every implementation:

- `write(ops)` applies the ops in order, atomically, and returns only once they are durable; it
  raises `StoreError` when they were not applied. Writes from concurrent callers may be grouped
  into one transaction (group commit); a failed transaction fails every write in it.
- A write whose caller is cancelled while waiting may still be committed.
- `run()` is the background writer: start it with `nursery.start(store.run)`; it runs until
  cancelled or `close()`d. `load()` and `load_partitions()` also work before `run()` starts.
- `close()` releases the resources; later calls raise `StoreError`.
- `stats()` returns counters for metrics only; nothing may depend on them.
- `probe()` commits a write that needs new space and leaves no row behind (see `probe`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import trio

from engine.server.store.records import Op, Snapshot

DISK_FULL = "disk full"
READ_ONLY = "read-only"
IO_ERROR = "I/O error"
BUSY = "busy"
UNREACHABLE = "database unreachable"
FENCED = "partition moved"
FAILED = "store error"
"""The causes a `StoreError` names (`StoreError.cause`): what an operator has to fix."""


class StoreError(Exception):
    """A store operation failed; the message names the cause but never row contents.

    `cause` is one of `DISK_FULL`, `READ_ONLY`, `IO_ERROR`, `BUSY`, `UNREACHABLE` (a database
    server refused or lost the connection), `FENCED` (a cluster node wrote a partition another
    node now holds: the write was refused, nothing is wrong with the database) or `FAILED`
    (anything else, e.g. a closed store or a row that cannot be encoded): the service reports it
    in its 503 `storage_unavailable` answers and in `/healthz`.
    """

    def __init__(self, message: str, *, cause: str = FAILED) -> None:
        super().__init__(message)
        self.cause = cause


class Store(Protocol):
    """Durable storage for the service's rows; see the module docstring for the contract."""

    async def load(self) -> Snapshot:
        """Every row currently stored."""
        ...

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        """The stored rows of `partitions`, of `count` partitions (`cluster.partitions`): the
        activities in them, those activities' recipients and the streams in them; with
        partition 0 (`GLOBAL`) among them also every row that belongs to no activity (devices,
        metrics, deliveries, notifications). Each list in primary-key order; no other
        partition's rows are read."""
        ...

    async def write(self, ops: Sequence[Op]) -> None:
        """Apply `ops` atomically; durable when it returns; raises `StoreError` otherwise."""
        ...

    async def probe(self) -> None:
        """Commit a write that needs new space and leaves nothing behind; `StoreError` (with
        its `cause`) when that fails. The service calls it while writes fail, to notice when
        they succeed again."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background writer; calls `task_status.started()` once ready, runs until cancelled."""
        ...

    def close(self) -> None:
        """Stop accepting writes and release the underlying resources."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters for metrics (batches, writes, ops, queue depth, ...)."""
        ...


__all__ = [
    "BUSY",
    "DISK_FULL",
    "FAILED",
    "FENCED",
    "IO_ERROR",
    "READ_ONLY",
    "UNREACHABLE",
    "Store",
    "StoreError",
]
