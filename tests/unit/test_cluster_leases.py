"""Partition leases as pure logic: deadlines, expiry and the balance plan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.server.cluster.leases import LeaseBook, LeaseView, Plan
from engine.server.cluster.partitions import (
    activity_partition,
    id_partition,
    key_partition,
    new_activity_id,
)


def book(node: str = "a", partitions: int = 8, ttl: float = 5.0, margin: float = 1.0) -> LeaseBook:
    return LeaseBook(node, partitions, ttl=ttl, margin=margin)


def rows(
    owners: dict[int, str | None], partitions: int = 8, remaining: float = 3.0
) -> list[LeaseView]:
    return [
        LeaseView(p, owners.get(p), 1, remaining if owners.get(p) else -1.0)
        for p in range(partitions)
    ]


def test_a_lease_is_usable_until_ttl_minus_margin_from_when_it_was_asked() -> None:
    b = book()
    b.granted(3, 7, asked_at=100.0)
    assert b.epoch(3, 100.0) == 7
    assert b.epoch(3, 103.999) == 7
    assert b.epoch(3, 104.0) is None  # 100 + 5 - 1: before the database lets anyone else take it
    assert b.deadline(3) == 104.0
    assert b.expire(103.0) == []
    assert b.expire(104.0) == [3]
    assert b.held() == {}


def test_renewal_moves_the_deadline_and_a_drop_forgets() -> None:
    b = book()
    b.granted(1, 2, asked_at=0.0)
    b.granted(1, 2, asked_at=3.0)
    assert b.epoch(1, 6.5) == 2
    b.dropped(1)
    assert b.epoch(1, 0.0) is None
    b.dropped(1)  # idempotent


def test_margin_must_fit_inside_the_ttl() -> None:
    with pytest.raises(ValueError, match="margin"):
        LeaseBook("a", 4, ttl=1.0, margin=1.0)


def test_a_lone_node_takes_every_free_partition() -> None:
    plan = book().plan(rows({}), live=["a"])
    assert sorted(plan.acquire) == list(range(8)) and plan.release == ()


def test_two_nodes_aim_at_half_each_and_take_only_free_ones() -> None:
    b = book("b")
    plan = b.plan(rows({0: "a", 1: "a", 2: "a"}), live=["a", "b"])
    assert len(plan.acquire) == 4 and not set(plan.acquire) & {0, 1, 2}


def test_expired_leases_of_a_dead_node_are_free() -> None:
    b = book("b")
    for p in range(4):
        b.granted(p, 1, asked_at=0.0)
    table = [LeaseView(p, "b", 1, 3.0) for p in range(4)] + [
        LeaseView(p, "dead", 5, -0.5) for p in range(4, 8)
    ]
    plan = b.plan(table, live=["b"])  # the dead node's heartbeat is stale: not live
    assert sorted(plan.acquire) == [4, 5, 6, 7]


def test_a_node_above_its_share_gives_up_a_few_per_round_while_another_is_below() -> None:
    b = LeaseBook("a", 16, ttl=5.0, margin=1.0, max_releases=3)
    for p in range(16):
        b.granted(p, 1, asked_at=0.0)
    table = [LeaseView(p, "a", 1, 3.0) for p in range(16)]
    plan = b.plan(table, live=["a", "b"])
    assert len(plan.release) == 3 and plan.acquire == ()
    # Nobody below its share: nothing moves.
    assert b.plan(table, live=["a"]) == Plan()


def test_nodes_prefer_different_partitions() -> None:
    a, c = book("node-a", 64), book("node-c", 64)
    free = rows({}, 64)
    pa = set(a.plan(free, live=["node-a", "node-c"]).acquire)
    pc = set(c.plan(free, live=["node-a", "node-c"]).acquire)
    assert len(pa) == len(pc) == 32
    assert len(pa & pc) < 24  # rendezvous ranks differ per node: far from a full collision


@given(st.integers(1, 4096), st.data())
def test_a_new_id_lands_in_its_partition(partitions: int, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, partitions - 1))
    activity_id = new_activity_id(p, partitions)
    assert id_partition(activity_id, partitions) == p
    assert activity_id.startswith("la_") and len(activity_id) == 35
    int(activity_id[3:], 16)


def test_partition_of_stream_activities_follows_the_stream() -> None:
    key = "prod-web-1"
    p = key_partition(key, 64)
    assert activity_partition("la_" + "0" * 32, key, 64) == p
    assert activity_partition("la_0005" + "0" * 28, None, 64) == 5
    assert 0 <= id_partition("not-an-la-id", 64) < 64
    assert 0 <= id_partition("la_zzzz", 64) < 64
    with pytest.raises(ValueError, match="partition"):
        new_activity_id(64, 64)
