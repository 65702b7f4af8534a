"""Calls to one stream are pipelined: many share a commit, order is kept, failures roll back all
that built on them (store + engine + fake APNs in memory, on MockClock).

The store here is the SQLite store behind a gate: while the gate is shut, the write in flight
waits (a slow disk), so the calls that arrive meanwhile queue up behind it in a known order; a
write can be made to fail as the store would (disk full).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import errors, models
from engine.server.service import Service
from engine.server.store.base import DISK_FULL, StoreError
from engine.server.store.records import Op
from engine.server.store.sqlite import SqliteStore
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

TIMEOUT = 600.0  # MockClock seconds; autojump makes them instant


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class GatedStore(SqliteStore):
    """SQLite whose writes wait while `gate` is shut and fail while `failure` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, threads=False)
        self.gate: trio.Event | None = None
        self.failure: StoreError | None = None
        self.writes: list[int] = []  # ops per write that reached the store, in order

    async def write(self, ops: Sequence[Op]) -> None:
        """Wait for the gate, fail when told to, else write."""
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None and ops:
            raise self.failure
        if ops:
            self.writes.append(len(ops))
        await super().write(ops)


def req(value: int) -> models.StreamRequest:
    state = {"title": "Queue", "type": "value", "value": value}
    return models.decode(models.StreamRequest, msgspec.json.encode({"content_state": state}))


def stored_value(h: Harness, key: str) -> Any:
    act = h.service.registry.current_of_stream(key)
    assert act is not None
    return msgspec.json.decode(act.row.state)["value"]


def plain(row: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(row))


async def same_as_stored(service: Service) -> None:
    """Memory holds exactly the activities and streams the store holds."""
    snap = await service.store.load()
    reg = service.registry
    assert {a.activity_id: plain(a) for a in snap.activities} == {
        k: plain(a.row) for k, a in reg.activities.items()
    }
    assert {s.stream_key: plain(s) for s in snap.streams} == {
        k: plain(v) for k, v in reg.streams.items()
    }


class Burst:
    """Calls to one stream started one after the other; each is queued before the next starts."""

    def __init__(self, h: Harness, nursery: trio.Nursery, key: str) -> None:
        self._h, self._nursery, self._key = h, nursery, key
        self.outcomes: dict[int, Any] = {}

    async def call(self, value: int) -> None:
        async def one() -> None:
            try:
                self.outcomes[value] = await self._h.service.live.stream(self._key, req(value))
            except errors.StorageUnavailable as exc:
                self.outcomes[value] = exc

        self._nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()  # applied and queued: waiting for the store


async def started(h: Harness, store: GatedStore, key: str) -> str:
    first = await h.service.live.stream(key, req(0))
    await trio.sleep(5)  # the device reports its update token
    assert first.activity_id is not None
    return first.activity_id


async def test_a_burst_to_one_stream_shares_commits_and_keeps_its_order(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    store = GatedStore(tmp_path / "db")
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", make_store=lambda: store) as h:
            activity_id = await started(h, store, "q")
            store.writes.clear()
            groups = h.service.guard.groups
            store.gate = trio.Event()
            async with trio.open_nursery() as nursery:
                burst = Burst(h, nursery, "q")
                for value in range(1, 21):
                    await burst.call(value)
                # Every call is applied in memory, in arrival order, none is answered yet.
                assert stored_value(h, "q") == 20 and burst.outcomes == {}
                store.gate.set()
            assert [burst.outcomes[v].operation for v in range(1, 21)] == ["updated"] * 20
            # The first call's write went alone (the gate held it); the 19 behind it in one,
            # which upserts the activity once.
            assert store.writes == [1, 1]
            assert h.service.guard.groups - groups == 2
            await trio.sleep(3)  # pacing: the newest state goes out
            shown = h.shown("iphone-1", activity_id)
            assert shown is not None and shown["content_state"]["value"] == 20
            assert shown["order_violations"] == 0
            await same_as_stored(h.service)
            act = h.service.registry.activities[activity_id]
            assert act.durable is None and act.row.version == 21


async def test_an_older_state_never_follows_a_newer_one(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    store = GatedStore(tmp_path / "db")
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", make_store=lambda: store) as h:
            activity_id = await started(h, store, "q")
            pushed: list[int] = []
            for round_ in range(5):
                store.gate = trio.Event()
                async with trio.open_nursery() as nursery:
                    burst = Burst(h, nursery, "q")
                    for value in range(round_ * 10 + 1, round_ * 10 + 11):
                        await burst.call(value)
                    store.gate.set()
                await trio.sleep(1.5)
                shown = h.shown("iphone-1", activity_id)
                assert shown is not None
                pushed.append(shown["content_state"]["value"])
                assert shown["order_violations"] == 0
            assert pushed == sorted(pushed) and pushed[-1] == 50


async def test_a_failed_write_fails_every_call_built_on_it(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    store = GatedStore(tmp_path / "db")
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", make_store=lambda: store) as h:
            activity_id = await started(h, store, "q")
            offered = h.service.stats()["delivery_offered"]
            store.gate = trio.Event()
            async with trio.open_nursery() as nursery:
                burst = Burst(h, nursery, "q")
                for value in (1, 2, 3):
                    await burst.call(value)  # 1 is in flight; 2 and 3 built on it, queued
                store.failure = StoreError("database or disk is full", cause=DISK_FULL)
                store.gate.set()
            assert all(isinstance(burst.outcomes[v], errors.StorageUnavailable) for v in (1, 2, 3))
            assert stored_value(h, "q") == 0
            await same_as_stored(h.service)
            assert h.service.stats()["delivery_offered"] == offered  # nothing pushed
            act = h.service.registry.activities[activity_id]
            assert act.durable is None and act.row.version == 1


async def test_a_failed_write_keeps_what_was_acknowledged_before_it(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    store = GatedStore(tmp_path / "db")
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", make_store=lambda: store) as h:
            activity_id = await started(h, store, "q")
            store.gate = trio.Event()
            async with trio.open_nursery() as nursery:
                burst = Burst(h, nursery, "q")
                await burst.call(1)  # in flight: it will be written
                gate, store.gate = store.gate, trio.Event()
                gate.set()
                await trio.sleep(1)  # answered (it waits a moment for APNs's answer)
                assert burst.outcomes[1].operation == "updated"
                for value in (2, 3):  # 2 waits at the gate, 3 is queued behind it
                    await burst.call(value)
                store.failure = StoreError("database or disk is full", cause=DISK_FULL)
                store.gate.set()
            assert all(isinstance(burst.outcomes[v], errors.StorageUnavailable) for v in (2, 3))
            assert stored_value(h, "q") == 1  # the acknowledged call's state, nothing after
            await same_as_stored(h.service)
            store.failure = None
            await trio.sleep(3)
            shown = h.shown("iphone-1", activity_id)
            assert shown is not None and shown["content_state"]["value"] == 1
            again = await h.service.live.stream("q", req(3))  # the retry does the whole call
            assert again.operation == "updated"
            await trio.sleep(3)
            shown = h.shown("iphone-1", activity_id)
            assert shown is not None and shown["content_state"]["value"] == 3
        async with open_harness(kit, tmp_path / "db", register=False) as h2:
            assert stored_value(h2, "q") == 3  # nothing acknowledged was lost


async def test_a_rotation_in_a_burst_starts_once_and_updates_the_new_activity(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    store = GatedStore(tmp_path / "db")
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", make_store=lambda: store) as h:
            store.gate = trio.Event()
            async with trio.open_nursery() as nursery:
                burst = Burst(h, nursery, "q")
                for value in range(1, 6):  # a start, then updates built on the unwritten start
                    await burst.call(value)
                store.gate.set()
            ops = [burst.outcomes[v].operation for v in range(1, 6)]
            assert ops == ["started"] + ["updated"] * 4
            activity_id = burst.outcomes[1].activity_id
            await trio.sleep(5)  # the start, the token report, then the newest state
            shown = h.shown("iphone-1", activity_id)
            assert shown is not None and shown["content_state"]["value"] == 5
            assert shown["order_violations"] == 0
            await same_as_stored(h.service)
