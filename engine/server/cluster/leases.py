"""Partition leases, sans-IO: what this node holds, until when, and what to take or give up.

Each partition is delivered by the one node holding its lease, a row of the database's lease
table (`cluster.pgleases`): `(partition, owner, epoch, expires_at)`. Leases are kept by renewing
them every `interval` seconds for `ttl` seconds; a node that stops renewing (killed, cut off from
the database) loses them when they expire, and any live node may then take them, each taking
bumping `epoch`: the fencing token every write of the partition carries, so a node that lost a
partition can no longer write it (`Fence` in the store).

Two clocks, never compared with each other: expiry in the table is judged by the database's
clock alone (`now()` in SQL), so node clocks need not agree; what this node believes it holds is
judged by its own monotonic clock. A renewal asked at local time `t` makes the database set
`expires_at = now() + ttl` at some instant after `t`, so `t + ttl - margin` is before the moment
another node can take the partition: this node stops delivering at that local deadline, and two
nodes never deliver one partition at once (the margin covers a push already on its way to APNs
and clock-rate differences).

Balance: with `n` live nodes each aims at `ceil(partitions / n)` partitions. Free and expired
partitions are taken at once, up to that share (takeover must be quick); a node above its share
gives partitions up only while some live node is below it, a few per round, so partitions move
gradually. Preferences come from rendezvous hashing of `(node, partition)`: nodes rarely contend
for the same free partition, and a node gives up the partitions it likes least.

No I/O and no clock reads: the shell passes `now` (monotonic seconds) and the rows it read.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["LeaseBook", "LeaseView", "Plan"]


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One row of the lease table as read in a round.

    `remaining` is how long until it expires by the database's clock (seconds; <= 0 expired).
    """

    partition: int
    owner: str | None
    epoch: int
    remaining: float

    def free(self) -> bool:
        """Nobody holds it: never taken, released, or expired."""
        return self.owner is None or self.remaining <= 0


@dataclass(frozen=True, slots=True)
class Plan:
    """What a round should do: partitions to try to take, partitions to give up."""

    acquire: tuple[int, ...] = ()
    release: tuple[int, ...] = ()


class LeaseBook:
    """The leases this node holds: partition -> (epoch, local deadline)."""

    def __init__(
        self,
        node_id: str,
        partitions: int,
        *,
        ttl: float,
        margin: float,
        max_releases: int = 16,
    ) -> None:
        if not 0 < margin < ttl:
            raise ValueError(f"lease margin {margin} must be between 0 and the ttl {ttl}")
        self.node_id = node_id
        self.partitions = partitions
        self.ttl = ttl
        self.margin = margin
        self.max_releases = max_releases
        self._held: dict[int, tuple[int, float]] = {}

    # -- what is held ---------------------------------------------------------------------------
    def epoch(self, partition: int, now: float) -> int | None:
        """The epoch this node holds `partition` under, or None if it does not (or no longer may
        act on it: its local deadline passed)."""
        held = self._held.get(partition)
        if held is None or now >= held[1]:
            return None
        return held[0]

    def held(self) -> dict[int, int]:
        """Every partition this node believes it holds, with its epoch (deadline not judged)."""
        return {p: epoch for p, (epoch, _) in self._held.items()}

    def deadline(self, partition: int) -> float | None:
        """The local time until which `partition` may be delivered, if held."""
        held = self._held.get(partition)
        return None if held is None else held[1]

    # -- what the database said -----------------------------------------------------------------
    def granted(self, partition: int, epoch: int, asked_at: float) -> None:
        """The database renewed or granted `partition` under `epoch`, asked at `asked_at`."""
        self._held[partition] = (epoch, asked_at + self.ttl - self.margin)

    def dropped(self, partition: int) -> None:
        """This node gave `partition` up (or learnt it lost it)."""
        self._held.pop(partition, None)

    def expire(self, now: float) -> list[int]:
        """Forget the partitions whose local deadline passed; return them (sorted)."""
        gone = sorted(p for p, (_, deadline) in self._held.items() if now >= deadline)
        for p in gone:
            del self._held[p]
        return gone

    # -- balance ---------------------------------------------------------------------------------
    def share(self, live_nodes: int) -> int:
        """How many partitions each of `live_nodes` nodes aims at."""
        return math.ceil(self.partitions / max(live_nodes, 1))

    def plan(self, rows: Sequence[LeaseView], live: Iterable[str]) -> Plan:
        """What to take and give up, given the table's rows and the live nodes' ids."""
        nodes = set(live) | {self.node_id}
        share = self.share(len(nodes))
        mine = list(self._held)
        if len(mine) < share:
            free = [r.partition for r in rows if r.free() and r.partition not in self._held]
            free.sort(key=self._rank, reverse=True)
            return Plan(acquire=tuple(free[: share - len(mine)]))
        if len(mine) > share:
            counts = Counter(r.owner for r in rows if not r.free())
            if any(counts.get(node, 0) < share for node in nodes - {self.node_id}):
                mine.sort(key=self._rank)
                surplus = min(len(mine) - share, self.max_releases)
                return Plan(release=tuple(sorted(mine[:surplus])))
        return Plan()

    def _rank(self, partition: int) -> int:
        return zlib.crc32(f"{self.node_id}/{partition}".encode())
