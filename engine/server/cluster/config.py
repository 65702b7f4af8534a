"""`[cluster]`: how a node on a PostgreSQL store takes part in the cluster.

    [cluster]
    node_id = "api-1"          # default: <hostname>-<pid>; unique per node (read by the server's
                               # settings: LOCKSTEP_NODE_ID overrides, workers get -w<i>)
    partitions = 64            # the same on every node of one database (checked at start)
    lease_ttl = 5.0            # seconds a lease lasts without renewal: a dead node's partitions
                               # are taken over after at most lease_ttl + lease_interval
    lease_interval = 1.0       # seconds between lease rounds
    lease_margin = 1.0         # a node stops delivering this long before others may take over
    listen = "127.0.0.1:0"     # where this node takes calls forwarded by the others
    advertise = ""             # the address the others use for it (default: listen's, with
                               # the port it got)
    forward_wait = 5.0         # seconds a call waits for a partition that has no owner yet

Plain data, checked on construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.server.cluster.partitions import DEFAULT_PARTITIONS

__all__ = ["ClusterSettings", "split_address"]


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); `ValueError` naming what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The `[cluster]` table (see the module docstring)."""

    node_id: str = ""  # `Settings.node_id` is the one in use (see above)
    partitions: int = DEFAULT_PARTITIONS
    lease_ttl: float = 5.0
    lease_interval: float = 1.0
    lease_margin: float = 1.0
    listen: str = "127.0.0.1:0"
    advertise: str = ""
    forward_wait: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 4096:
            raise ValueError(f"partitions must be 1..4096, got {self.partitions}")
        if not 0 < self.lease_interval < self.lease_ttl:
            raise ValueError(
                f"lease_interval ({self.lease_interval}) must be above 0 and below lease_ttl "
                f"({self.lease_ttl}): a lease must be renewed before it runs out"
            )
        if not 0 < self.lease_margin < self.lease_ttl - self.lease_interval:
            raise ValueError(
                f"lease_margin ({self.lease_margin}) must be above 0 and below lease_ttl - "
                f"lease_interval ({self.lease_ttl - self.lease_interval})"
            )
        if self.forward_wait < 0:
            raise ValueError(f"forward_wait must be >= 0, got {self.forward_wait}")
        split_address(self.listen)
        if self.advertise:
            split_address(self.advertise)
