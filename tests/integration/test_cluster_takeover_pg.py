"""A node taking partitions over on the real PostgreSQL reads only the rows of the partitions it
takes: the store is asked for those partitions alone, and returns nothing of the others.

PostgreSQL on 127.0.0.1:5432 (tests/helpers/pgkit.py)."""

from __future__ import annotations

from collections.abc import Collection

import trio

from engine.server.cluster.leases import LeaseBook
from engine.server.cluster.node import ClusterNode, open_node
from engine.server.cluster.partitions import activity_partition, key_partition, new_activity_id
from engine.server.cluster.pgleases import LeaseTable
from engine.server.store.pg import PgStore
from engine.server.store.records import (
    ActivityRow,
    Op,
    PutActivity,
    PutStream,
    Snapshot,
    StreamRow,
)
from tests.helpers import pgkit
from tests.helpers.clusterkit import FakeService, activity_row

PARTITIONS = 8
TIMEOUT = 30.0


class RecordingStore:
    """The PostgreSQL store, recording each partition load and what it returned."""

    def __init__(self, inner: PgStore) -> None:
        self.inner = inner
        self.loads: list[tuple[list[int], Snapshot]] = []

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        got = await self.inner.load_partitions(partitions, count)
        self.loads.append((sorted(partitions), got))
        return got


class AttachingService(FakeService):
    """Records the partitions' rows handed to it."""

    def __init__(self, store: RecordingStore) -> None:
        super().__init__()
        self.store = store  # type: ignore[assignment]
        self.parts: list[Snapshot] = []

    async def attach(self, part: Snapshot) -> int:
        self.parts.append(part)
        return await super().attach(part)


def rows() -> list[ActivityRow]:
    """Two plain activities per partition and one of a stream per stream key."""
    plain = [
        activity_row(new_activity_id(p, PARTITIONS), None) for p in range(PARTITIONS) for _ in "ab"
    ]
    return plain + [activity_row(f"s-act-{n}", f"stream-{n}") for n in range(4 * PARTITIONS)]


async def write(url: str, acts: list[ActivityRow]) -> None:
    store = PgStore(url)
    ops: list[Op] = [PutActivity(a) for a in acts]
    ops += [
        PutStream(StreamRow(stream_key=a.stream_key, activity_id=a.activity_id))
        for a in acts
        if a.stream_key is not None
    ]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write(ops)
            nursery.cancel_scope.cancel()
    finally:
        store.close()


def lease_table(url: str, node: str, ttl: float) -> LeaseTable:
    return LeaseTable(url, node_id=node, address=f"{node}:1", partitions=PARTITIONS, ttl=ttl)


async def test_a_takeover_of_a_few_partitions_reads_none_of_the_others() -> None:
    with pgkit.schemas() as made:
        url = made.new()
        acts = rows()
        with trio.fail_after(TIMEOUT):
            await write(url, acts)
            # Another live node holds partitions 0-5: this node's share leaves it 6 and 7.
            other = lease_table(url, "b", ttl=60.0)
            other.setup()
            other.round({})
            assert sorted(other.acquire(range(6))) == list(range(6))
            taken = [6, 7]
            store = RecordingStore(PgStore(url))
            service = AttachingService(store)
            book = LeaseBook("a", PARTITIONS, ttl=5.0, margin=1.0)
            node = ClusterNode(
                lease_table(url, "a", ttl=5.0), book, interval=1.0, follow_devices=False
            )
            try:
                async with open_node(service, node):  # type: ignore[arg-type]
                    assert sorted(book.held()) == taken
            finally:
                store.inner.close()
                other.close()
        mine = [
            a for a in acts if activity_partition(a.activity_id, a.stream_key, PARTITIONS) in taken
        ]
        assert 0 < len(mine) < len(acts) // 2
        assert [p for p, _ in store.loads] == [taken]  # one load, of these partitions only
        loaded = store.loads[0][1]
        assert sorted(a.activity_id for a in loaded.activities) == sorted(
            a.activity_id for a in mine
        )
        assert all(key_partition(s.stream_key, PARTITIONS) in taken for s in loaded.streams)
        assert len(loaded.streams) == sum(1 for a in mine if a.stream_key is not None)
        assert loaded.devices == [] and loaded.metrics == []  # partition 0 is not among them
        assert service.parts == [loaded]
