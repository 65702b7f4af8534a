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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, TypeVar

import trio

from engine.server.contract import errors
from engine.server.store.base import FENCED, Store, StoreError
from engine.server.store.records import Op

log = logging.getLogger("lockstep.service")

K = TypeVar("K")
V = TypeVar("V")


class Undo:
    """How to put back the in-memory changes of one call, recorded as they are made."""

    __slots__ = ("_steps",)

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] = []

    def fields(self, obj: Any, *names: str) -> None:
        """Record the current values of `obj`'s attributes `names`."""
        saved = [(name, getattr(obj, name)) for name in names]

        def restore() -> None:
            for name, value in saved:
                setattr(obj, name, value)

        self._steps.append(restore)

    def row(self, row: Any) -> None:
        """Record every field of a row (a msgspec struct: its lists and dicts are replaced by
        the service, never mutated in place, so the values themselves need no copy)."""
        self.fields(row, *row.__struct_fields__)

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
        steps, self._steps = self._steps, []
        for step in reversed(steps):
            step()


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

    async def write(self, ops: Sequence[Op]) -> None:
        """`Store.write`, remembering its outcome; raises `StoreError` as the store does."""
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
        try:
            await self.write(ops)
        except StoreError as exc:
            undo.rollback()
            raise errors.StorageUnavailable(
                f"storage unavailable ({exc.cause}): {exc}; nothing was changed or sent, "
                "retry the same call later",
                cause=exc.cause,
                retry_after=self.retry_after,
            ) from None

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


__all__ = ["StoreGuard", "Undo"]
