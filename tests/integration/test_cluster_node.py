"""Cluster nodes on a mock clock, over an in-memory lease table with the database's semantics:
partitions split between nodes, move twice (to a new node and back when it leaves), a node
cut off from the database stops delivering before any other node may take its partitions, and a
takeover whose load hangs never holds up the renewal of the node's other leases."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from engine.server.cluster.leases import LeaseBook, LeaseView
from engine.server.cluster.node import ClusterNode
from engine.server.cluster.pgleases import Round
from engine.server.http.seam import LOCAL, Forward, Gather, Unavailable
from engine.server.store.base import UNREACHABLE, StoreError
from engine.server.store.records import Snapshot
from tests.helpers.clusterkit import FakeService, Route

PARTITIONS = 8
TTL, INTERVAL, MARGIN = 5.0, 1.0, 1.0


@dataclass
class Db:
    """The lease table's rows and the nodes' heartbeats, judged by one clock (the database's)."""

    clock: trio.testing.MockClock
    rows: dict[int, list[Any]] = field(default_factory=dict)  # p -> [owner, epoch, expires_at]
    beats: dict[str, tuple[float, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = {p: [None, 0, -1.0] for p in range(PARTITIONS)}

    def now(self) -> float:
        return self.clock.current_time()


class FakeTable:
    """`pgleases.LeaseTable` over `Db`; `down` makes every call fail as a lost connection."""

    def __init__(self, db: Db, node_id: str) -> None:
        self.db, self.node_id, self.address, self.down = db, node_id, f"{node_id}:1", False

    def _check(self) -> None:
        if self.down:
            raise StoreError("connection lost", cause=UNREACHABLE)

    def setup(self) -> None:
        self._check()

    def round(self, held: Mapping[int, int]) -> Round:
        self._check()
        now = self.db.now()
        self.db.beats[self.node_id] = (now, self.address)
        renewed = {}
        for p, epoch in held.items():
            row = self.db.rows[p]
            if row[0] == self.node_id and row[1] == epoch and row[2] > now:
                row[2] = now + TTL
                renewed[p] = epoch
        rows = [LeaseView(p, r[0], r[1], r[2] - now) for p, r in sorted(self.db.rows.items())]
        live = {n: a for n, (t, a) in self.db.beats.items() if t > now - TTL}
        return Round(renewed, rows, live)

    def acquire(self, partitions: Any) -> dict[int, int]:
        self._check()
        now, got = self.db.now(), {}
        for p in partitions:
            row = self.db.rows[p]
            if row[0] is None or row[2] <= now:
                row[:] = [self.node_id, row[1] + 1, now + TTL]
                got[p] = row[1]
        return got

    def release(self, partition: int, epoch: int) -> None:
        self._check()
        row = self.db.rows[partition]
        if row[0] == self.node_id and row[1] == epoch:
            row[0], row[2] = None, self.db.now()

    def close(self) -> None:
        pass

    def leave(self, held: Mapping[int, int]) -> None:
        for p, e in held.items():
            self.release(p, e)
        self.db.beats.pop(self.node_id, None)


def make_node(db: Db, name: str) -> tuple[ClusterNode, FakeTable]:
    table = FakeTable(db, name)
    book = LeaseBook(name, PARTITIONS, ttl=TTL, margin=MARGIN)
    node = ClusterNode(
        table,  # type: ignore[arg-type]
        book,
        interval=INTERVAL,
        follow_devices=False,
        threads=False,
    )
    return node, table


async def run_node(node: ClusterNode, *, task_status: trio.TaskStatus[None]) -> None:
    await node.run(FakeService(), task_status=task_status)  # type: ignore[arg-type]


def held(node: ClusterNode) -> set[int]:
    return {
        p for p in range(PARTITIONS) if node.place(Route(), {"stream_key": key_of(p)}, b"") is LOCAL
    }


_KEYS: dict[int, str] = {}


def key_of(partition: int) -> str:
    """A stream key in `partition`."""
    from engine.server.cluster.partitions import key_partition

    if not _KEYS:
        n = 0
        while len(_KEYS) < PARTITIONS:
            _KEYS.setdefault(key_partition(f"s{n}", PARTITIONS), f"s{n}")
            n += 1
    return _KEYS[partition]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def watch_single_owner(
    nodes: list[ClusterNode], clock: trio.testing.MockClock, log: list[str]
) -> None:
    """Every 10 ms: no partition is delivered by two nodes at once."""
    while True:
        seen: dict[int, str] = {}
        for node in nodes:
            for p in held(node):
                if p in seen:
                    log.append(
                        f"{clock.current_time():.2f}: partition {p} on {seen[p]} and {node.node_id}"
                    )
                seen[p] = node.node_id
        await trio.sleep(0.01)


async def test_partitions_split_and_move_twice(clock: trio.testing.MockClock) -> None:
    db = Db(clock)
    a, _ = make_node(db, "a")
    b, _ = make_node(db, "b")
    overlaps: list[str] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_single_owner, [a, b], clock, overlaps)
            await nursery.start(run_node, a)
            assert held(a) == set(range(PARTITIONS))
            epochs = {p: r[1] for p, r in db.rows.items()}
            b_scope = trio.CancelScope()
            nursery.start_soon(run_b, b, b_scope)
            if True:
                await trio.sleep(10 * INTERVAL)
                assert len(held(a)) == len(held(b)) == PARTITIONS // 2
                moved = held(b)
                assert all(db.rows[p][1] == epochs[p] + 1 for p in moved)
                # Calls for b's partitions reaching a go to b.
                p = min(moved)
                assert a.place(Route(), {"stream_key": key_of(p)}, b"") == Forward("b:1")
                # The listing: each node answers for its half and asks the other for the rest.
                assert a.place(LISTING, {}, b"") == Gather(
                    (("b:1", tuple(sorted(held(b)))),), tuple(sorted(held(a)))
                )
                assert b.place(LISTING, {}, b"") == Gather(
                    (("a:1", tuple(sorted(held(a)))),), tuple(sorted(held(b)))
                )
                b_scope.cancel()  # b stops cleanly: it releases, a takes back
            await trio.sleep(3 * INTERVAL)
            assert held(a) == set(range(PARTITIONS))
            everything = tuple(range(PARTITIONS))
            assert a.place(LISTING, {}, b"") == Gather((), everything)  # no one else to ask
            assert all(db.rows[p][1] == epochs[p] + 2 for p in moved)  # moved twice
            assert a.releases == PARTITIONS // 2 and a.losses == 0
            nursery.cancel_scope.cancel()
    assert overlaps == []


LISTING = Route("GET", "/api/live-activities", "listLiveActivityStatuses")


async def test_a_listing_never_asks_an_earlier_instance_of_this_node(
    clock: trio.testing.MockClock,
) -> None:
    db = Db(clock)
    old, _ = make_node(db, "a-1")
    new, table = make_node(db, "a-2")
    table.address = "a-1:1"  # restarted under a new id at the same address
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_b, old, trio.CancelScope())
            await trio.sleep(2 * INTERVAL)
            await nursery.start(run_node, new)
            await trio.sleep(INTERVAL)
            placed = new.place(LISTING, {}, b"")
            assert isinstance(placed, Unavailable), placed  # not a Gather asking itself
            nursery.cancel_scope.cancel()


async def test_a_listing_waits_while_a_partition_has_no_owner(
    clock: trio.testing.MockClock,
) -> None:
    node, _ = make_node(Db(clock), "a")  # before its first round: it holds nothing, no one does
    placed = node.place(LISTING, {}, b"")
    assert isinstance(placed, Unavailable) and "partition 0" in placed.reason


async def run_b(b: ClusterNode, scope: trio.CancelScope) -> None:
    with scope:
        await b.run(FakeService())  # type: ignore[arg-type]


async def test_a_node_cut_off_stops_delivering_before_another_takes_over(
    clock: trio.testing.MockClock,
) -> None:
    db = Db(clock)
    a, a_table = make_node(db, "a")
    b, _ = make_node(db, "b")
    overlaps: list[str] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_single_owner, [a, b], clock, overlaps)
            await nursery.start(run_node, a)
            await trio.sleep(0.5)
            await nursery.start(run_node, b)
            await trio.sleep(10 * INTERVAL)
            mine = held(a)
            assert len(mine) == PARTITIONS // 2
            a_table.down = True
            cut_at = clock.current_time()
            stopped_at = taken_at = None
            while taken_at is None:
                await trio.sleep(0.01)
                if stopped_at is None and not held(a):
                    stopped_at = clock.current_time()
                if mine <= held(b):
                    taken_at = clock.current_time()
            assert stopped_at is not None
            # a stopped on its own deadline, at least the margin before b could take over,
            # and b took over within a lease plus a round of the cut.
            assert taken_at - stopped_at >= MARGIN - 0.02
            assert taken_at - cut_at <= TTL + INTERVAL + 0.1
            assert a.losses == len(mine)
            nursery.cancel_scope.cancel()
    assert overlaps == []


class SlowStore:
    """A store whose load of `slow` partitions waits for `go`; records what each load asked."""

    def __init__(self, slow: set[int]) -> None:
        self.slow, self.go, self.asked = slow, trio.Event(), list[set[int]]()

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        self.asked.append(set(partitions))
        if self.slow & set(partitions):
            await self.go.wait()
        await trio.sleep(0.01)
        return Snapshot()


async def test_a_slow_takeover_never_holds_up_the_renewal_of_the_other_leases(
    clock: trio.testing.MockClock,
) -> None:
    db = Db(clock)
    later = set(range(PARTITIONS // 2, PARTITIONS))
    for p in later:  # held by a node that died: free once their leases run out, at 3 s
        db.rows[p] = ["dead", 1, 3.0]
    a, _ = make_node(db, "a")
    service = FakeService()
    store = service.store = SlowStore(later)  # type: ignore[assignment]
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run, service)
            first = set(range(PARTITIONS // 2))
            assert held(a) == first
            # The dead node's partitions are taken at 3-4 s; their load hangs for 3 leases.
            await trio.sleep(4 * INTERVAL)
            assert store.asked[-1] == later and a.book.held().keys() == first | later
            await trio.sleep(3 * TTL)
            assert held(a) == first and a.losses == 0  # renewed on time all along
            now = clock.current_time()
            assert all(db.rows[p][0] == "a" and db.rows[p][2] > now for p in first | later)
            store.go.set()
            await a.settled()
            assert held(a) == set(range(PARTITIONS)) and a.losses == 0
            assert a.takeovers == PARTITIONS and service.attached == 2
            nursery.cancel_scope.cancel()
