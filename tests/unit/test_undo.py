"""`Undo` puts changes back newest first; `StoreGuard` rolls a call back on a failed write, answers
503 `storage_unavailable` with its cause, and remembers the failure until a write or probe works."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from engine.server.contract import errors
from engine.server.service.undo import StoreGuard, Undo
from engine.server.store.base import DISK_FULL, READ_ONLY, StoreError
from engine.server.store.records import DeleteDevice, Op, StreamRow

TIMEOUT = 10.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class FlakyStore:
    """Fails every write and probe with `failure` while it is set."""

    def __init__(self) -> None:
        self.failure: StoreError | None = None
        self.written: list[Op] = []

    async def write(self, ops: Sequence[Op]) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        self.written.extend(ops)

    async def probe(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure


def test_undo_restores_fields_rows_and_entries_newest_first() -> None:
    row = StreamRow(stream_key="k", activity_id="a1")
    table: dict[str, StreamRow | int] = {"kept": 1, "changed": 2}
    undo = Undo()
    undo.row(row)
    row.activity_id = "a2"
    undo.fields(row, "activity_id")
    row.activity_id = "a3"
    undo.entry(table, "changed")
    table["changed"] = 20
    undo.entry(table, "added")
    table["added"] = 3
    undo.entry(table, "kept")
    del table["kept"]
    undo.rollback()
    assert row.activity_id == "a1"  # the oldest record wins: it is replayed last
    assert table == {"kept": 1, "changed": 2}
    undo.rollback()  # an empty record does nothing
    assert table == {"kept": 1, "changed": 2}


def test_undo_of_an_entry_removed_again_is_harmless() -> None:
    table: dict[str, int] = {}
    undo = Undo()
    undo.entry(table, "x")
    undo.rollback()
    assert table == {}


async def test_commit_rolls_back_and_answers_503_with_the_cause() -> None:
    store = FlakyStore()
    guard = StoreGuard(store, retry_after=7.0)  # type: ignore[arg-type]
    table = {"a": 1}
    undo = Undo()
    undo.entry(table, "a")
    table["a"] = 2
    store.failure = StoreError(
        "store transaction failed: database or disk is full", cause=DISK_FULL
    )
    with trio.fail_after(TIMEOUT), pytest.raises(errors.StorageUnavailable) as caught:
        await guard.commit([DeleteDevice("d")], undo)
    exc = caught.value
    assert table == {"a": 1}
    assert (exc.status, exc.code, exc.retry_after) == (503, "storage_unavailable", 7.0)
    assert exc.body()["cause"] == DISK_FULL and "disk full" in exc.message
    assert guard.health() == "disk full: store transaction failed: database or disk is full"
    assert guard.failed_writes == 1


async def test_a_write_in_place_does_not_clear_health_but_wakes_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FlakyStore()
    guard = StoreGuard(store, retry_after=60.0)  # type: ignore[arg-type]
    store.failure = StoreError("readonly", cause=READ_ONLY)
    with trio.fail_after(600):  # MockClock seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.heal_forever)
            with pytest.raises(StoreError):
                await guard.write([DeleteDevice("d")])
            await trio.sleep(61)
            assert guard.health() == "read-only: readonly"  # probed, still failing
            store.failure = None
            await guard.write([])  # nothing written: no news
            await trio.sleep(1)
            assert guard.health() == "read-only: readonly"
            await guard.commit([DeleteDevice("d")], Undo())
            assert guard.health() == "read-only: readonly"  # the probe decides, not this write
            await trio.sleep(1)  # far less than retry_after: the write woke the probe
            assert guard.health() is None
            await trio.sleep(120)  # healthy: probing does nothing
            assert guard.health() is None
            nursery.cancel_scope.cancel()
    assert store.written == [DeleteDevice("d")]


async def test_probe_tracks_the_store_while_writes_fail() -> None:
    store = FlakyStore()
    guard = StoreGuard(store, retry_after=1.0)  # type: ignore[arg-type]
    with trio.fail_after(TIMEOUT):
        assert await guard.probe()  # healthy: nothing to try
        store.failure = StoreError("full", cause=DISK_FULL)
        with pytest.raises(StoreError):
            await guard.write([DeleteDevice("d")])
        store.failure = StoreError("still full", cause=DISK_FULL)
        assert not await guard.probe()
        assert guard.health() == "disk full: still full"
        store.failure = None
        assert await guard.probe()
    assert guard.health() is None


async def test_the_guard_groups_queued_calls_and_rolls_back_all_behind_a_failure() -> None:
    store = FlakyStore()
    guard = StoreGuard(store, retry_after=1.0)  # type: ignore[arg-type]
    table = {"k": 0}
    outcomes: dict[int, object] = {}
    committed: list[int] = []

    def change(value: int, nursery: trio.Nursery) -> None:
        undo = Undo()
        undo.entry(table, "k")
        table["k"] = value  # each call builds on the one before it
        undo.on_commit(lambda: committed.append(value))
        ticket = guard.enqueue([DeleteDevice(f"d{value}")], undo)

        async def wait() -> None:
            try:
                await guard.settle(ticket)
                outcomes[value] = "ok"
            except errors.StorageUnavailable as exc:
                outcomes[value] = exc.code

        nursery.start_soon(wait)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(guard.run)
            for value in (1, 2, 3):  # queued together: one store write
                change(value, nursery)
            await trio.testing.wait_all_tasks_blocked()
            assert outcomes == {1: "ok", 2: "ok", 3: "ok"} and committed == [1, 2, 3]
            assert guard.groups == 1 and store.written == [DeleteDevice(f"d{v}") for v in (1, 2, 3)]
            store.failure = StoreError("full", cause=DISK_FULL)
            for value in (4, 5, 6):
                change(value, nursery)
            await trio.testing.wait_all_tasks_blocked()
            # All three built on each other: all rolled back, newest first, to what is stored.
            assert table == {"k": 3} and committed == [1, 2, 3]
            assert outcomes[4] == outcomes[5] == outcomes[6] == "storage_unavailable"
            assert guard.health() == "disk full: full"
            nursery.cancel_scope.cancel()
