"""All or nothing: a call whose write fails leaves memory exactly as it was and pushes nothing.

Every service call changes its in-memory rows, makes them durable (`Store.write`) and only then
pushes. `Undo` records, before each change, how to put it back; `StoreGuard.commit` writes the
ops and, when the store fails, replays that record (newest change first) and answers 503
`storage_unavailable`, naming the cause (disk full, read-only, I/O error) with a `Retry-After`.
So the identical retry after the disk is freed does the whole call again instead of answering
`noop` for a state that was never stored or shown.

`StoreGuard` also remembers the last write's failure for `/healthz`. A failed write sets it; only
the store's probe (`Store.probe`: a write that needs new space) clears it, because a write that
merely rewrites rows in place can succeed on a full disk while every new stream still fails.
`heal_forever` probes every `retry_after` seconds while writes fail, and at once after any write
succeeded, so a server a load balancer took out of rotation (no calls, no writes) comes back by
itself.

**Pipelining.** Once `StoreGuard.run` runs (the service starts it), every write goes through one
queue: `enqueue` takes a call's ops and its `Undo` at once, without waiting, and `settle` waits
for the outcome. The guard writes what is queued as ONE store write (one transaction) whenever
the previous one is done, in queue order, so a call may apply its change in memory, enqueue it and
let the next call to the same stream build on it before either is durable; many calls then share
one commit. When a write fails, the guard rolls back, newest first, every call that is not yet
durable (the failed write's and everything queued behind it: a later call may have built on an
earlier one's state), synchronously, before any other task runs: memory is again exactly what
the store holds, and each of those calls answers 503. `Undo.on_commit` hooks run, in queue
order, when a call's write is durable (the service tracks there what may be pushed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TypeVar

import msgspec
import trio

from engine.server.contract import errors
from engine.server.store.base import FENCED, Store, StoreError
from engine.server.store.records import Op

log = logging.getLogger("lockstep.service")

K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S", bound=msgspec.Struct)


class Undo:
    """How to put back the in-memory changes of one call, recorded as they are made."""

    __slots__ = ("_after", "_steps")

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []

    def step(self, restore: Callable[[], None]) -> None:
        """Record a step of its own, run on rollback like the others (newest first)."""
        self._steps.append(restore)

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Run `hook` once the call's write is durable (before the call is woken)."""
        self._after.append(hook)

    def committed(self) -> None:
        """The write is durable: run the `on_commit` hooks in order; the record is then empty."""
        hooks, self._after, self._steps = self._after, [], []
        for hook in hooks:
            hook()

    def fields(self, obj: Any, *names: str) -> None:
        """Record the current values of `obj`'s attributes `names`."""
        saved = [(name, getattr(obj, name)) for name in names]

        def restore() -> None:
            for name, value in saved:
                setattr(obj, name, value)

        self._steps.append(restore)

    def row(self, row: S) -> S:
        """Record every field of a row (a msgspec struct: its lists and dicts are replaced by
        the service, never mutated in place, so the values themselves need no copy); returns
        the copy it keeps, which callers may share but must not change."""
        saved = msgspec.structs.replace(row)  # one copy in C, not a getattr per field
        names: tuple[str, ...] = row.__struct_fields__

        def restore() -> None:
            for name in names:
                setattr(row, name, getattr(saved, name))

        self._steps.append(restore)
        return saved

    def entry(self, mapping: MutableMapping[K, V], key: K) -> None:
        """Record `mapping[key]`, or that it is absent."""
        if key in mapping:
            value = mapping[key]

            def put_back() -> None:
                mapping[key] = value

            self._steps.append(put_back)
        else:

            def take_out() -> None:
                mapping.pop(key, None)

            self._steps.append(take_out)

    def rollback(self) -> None:
        """Put every recorded value back, the newest change first; the record is then empty."""
        steps, self._steps, self._after = self._steps, [], []
        for step in reversed(steps):
            step()


class Ticket:
    """One queued write: its ops, the call's `Undo` (None for a plain write) and its outcome."""

    __slots__ = ("done", "error", "ops", "queued", "undo")

    def __init__(self, ops: Sequence[Op], undo: Undo | None) -> None:
        self.ops = ops
        self.undo = undo
        # In the guard's queue; False: its caller writes it alone (no `run`, or `run` stopped
        # before taking it).
        self.queued = False
        self.done = trio.Event()  # the outcome is known, or the caller must write it alone
        self.error: StoreError | None = None


def _each_row_once(ops: list[Op]) -> list[Op]:
    """`ops` with a row object put several times put once, at its last place.

    The store turns every op of a write into SQL at once, so each put of one row object stores
    the same values: the last one alone leaves the same rows behind (whatever deletes came
    between). A burst of calls to one stream then upserts its activity once per commit."""
    last: dict[int, int] = {}
    for i, op in enumerate(ops):
        row = getattr(op, "row", None)
        if row is not None:
            last[id(row)] = i
    if len(last) == len(ops):
        return ops
    return [op for i, op in enumerate(ops) if last.get(id(getattr(op, "row", None)), i) == i]


class StoreGuard:
    """The store as the service writes to it: failures become 503s and are kept for `/healthz`.

    `retry_after` (seconds) is the `Retry-After` of a `storage_unavailable` answer: Apple-free
    territory, a knob (`ServiceConfig.storage_retry_after`).
    """

    def __init__(self, store: Store, *, retry_after: float) -> None:
        self._store = store
        self.retry_after = retry_after
        self.failure: StoreError | None = None
        self.failed_writes = 0
        self._nudge = trio.Event()  # a write succeeded while failing: probe now
        self._queue: list[Ticket] = []  # enqueued, not yet handed to the store (`run`)
        self._wake = trio.Event()
        self._pumping = False
        self.groups = 0  # store writes `run` made (each one transaction)

    def enqueue(self, ops: Sequence[Op], undo: Undo | None) -> Ticket:
        """Queue a call's write now, in order (no checkpoint); `settle` waits for its outcome.

        Without `run`, the write is made by `settle` itself (the store's own order then holds
        only between writes whose callers wait one after the other).
        """
        ticket = Ticket(ops, undo)
        if self._pumping:
            ticket.queued = True
            self._queue.append(ticket)
            self._wake.set()
        return ticket

    async def settle(self, ticket: Ticket) -> None:
        """Wait until `ticket` is durable; 503 `storage_unavailable` when it was rolled back.

        A caller cancelled while waiting keeps its changes: the guard still writes them (or
        rolls them back with the rest when a write fails).
        """
        error = await self._outcome(ticket)
        if error is not None:
            raise self._unavailable(error)

    async def _outcome(self, ticket: Ticket) -> StoreError | None:
        """Wait for the guard's verdict, or write the ticket alone when it was not queued."""
        if ticket.queued:
            await ticket.done.wait()
        if not ticket.queued:  # never queued, or left over when `run` stopped
            ticket.queued = True  # once
            try:
                await self.write(ticket.ops)
            except StoreError as exc:
                if ticket.undo is not None:
                    ticket.undo.rollback()
                ticket.error = exc
            else:
                if ticket.undo is not None:
                    ticket.undo.committed()
            ticket.done.set()
        return ticket.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what is queued, one store write at a time, until cancelled (module docstring)."""
        self._pumping = True
        task_status.started()
        group: list[Ticket] = []
        try:
            while True:
                if not self._queue:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                group, self._queue = self._queue, []
                await self._write_group(group)
                group = []
        finally:
            self._pumping = False
            # The group in flight may still be committed by the store: it is not rolled back.
            stopped = StoreError("store writer stopped before the write was committed")
            for ticket in group:
                ticket.error = stopped
                ticket.done.set()
            # Queued ones were never handed to the store: their callers write them alone.
            queued, self._queue = self._queue, []
            for ticket in queued:
                ticket.queued = False
                ticket.done.set()

    async def _write_group(self, group: list[Ticket]) -> None:
        ops = _each_row_once([op for ticket in group for op in ticket.ops])
        try:
            # Shielded: once handed to the store, the outcome is awaited and reported to every
            # caller even while the service shuts down (the store may commit it anyway).
            with trio.CancelScope(shield=True):
                await self._store.write(ops)
        except StoreError as exc:
            # Everything behind the failed write may have built on it: rolled back with it.
            queued, self._queue = self._queue, []
            if exc.cause != FENCED:  # a partition that moved on says nothing of the database
                self.failure = exc
            self.failed_writes += 1
            self._fail(group + queued, exc)
            return
        self.groups += 1
        for ticket in group:
            if ticket.undo is not None:
                ticket.undo.committed()
            ticket.done.set()
        if ops and self.failure is not None:
            self._nudge.set()

    @staticmethod
    def _fail(tickets: list[Ticket], exc: StoreError) -> None:
        """Roll back every ticket's changes, the newest first, then wake their callers."""
        for ticket in reversed(tickets):
            if ticket.undo is not None:
                ticket.undo.rollback()
        for ticket in tickets:
            ticket.error = exc
            ticket.done.set()

    async def write(self, ops: Sequence[Op]) -> None:
        """`Store.write`, remembering its outcome; raises `StoreError` as the store does.

        Queued behind every call already enqueued when `run` runs (a plain write has nothing
        to roll back; its caller handles the failure)."""
        if self._pumping and ops:
            error = await self._outcome(self.enqueue(ops, None))
            if error is not None:
                raise error
            return
        try:
            await self._store.write(ops)
        except StoreError as exc:
            if exc.cause != FENCED:  # a partition that moved on says nothing of the database
                self.failure = exc
            self.failed_writes += 1
            raise
        if ops and self.failure is not None:
            self._nudge.set()

    async def commit(self, ops: Sequence[Op], undo: Undo) -> None:
        """Write `ops`; when that fails, roll `undo` back and raise 503 `storage_unavailable`.

        A caller cancelled while waiting keeps its changes: the store may still commit them
        (its contract), and memory ahead of the store only means a state is pushed again.
        """
        if self._pumping:
            await self.settle(self.enqueue(ops, undo))
            return
        try:
            await self.write(ops)
        except StoreError as exc:
            undo.rollback()
            raise self._unavailable(exc) from None
        undo.committed()

    def _unavailable(self, exc: StoreError) -> errors.StorageUnavailable:
        return errors.StorageUnavailable(
            f"storage unavailable ({exc.cause}): {exc}; nothing was changed or sent, "
            "retry the same call later",
            cause=exc.cause,
            retry_after=self.retry_after,
        )

    async def probe(self) -> bool:
        """While writes fail, try the store's probe; True once writes succeed again."""
        if self.failure is None:
            return True
        try:
            await self._store.probe()
        except StoreError as exc:
            self.failure = exc
            return False
        self.failure = None
        return True

    async def heal_forever(self) -> None:
        """While writes fail, probe every `retry_after` s, or at once after a write succeeded."""
        while True:
            with trio.move_on_after(self.retry_after):
                await self._nudge.wait()
            self._nudge = trio.Event()
            if self.failure is not None and await self.probe():
                log.info("store writes succeed again")

    def health(self) -> str | None:
        """Why writes fail right now (the last write's failure), or None when they succeed."""
        if self.failure is None:
            return None
        return f"{self.failure.cause}: {self.failure}"


__all__ = ["StoreGuard", "Ticket", "Undo"]
