"""Which partition a call, an activity or a store write belongs to.

Live Activities are split by key into a fixed number of partitions (`[cluster] partitions`, 64 by
default); each partition is delivered by exactly one node at a time (`leases`). The partition of
an activity is that of its stream key when it has one (every call to a stream lands on the same
node, so the stream's versions keep their order), else that of its id.

Activity ids carry their partition: a node starting an activity draws its id inside the partition
it is meant for (`new_activity_id`), so a later call naming only the id (`POST
/api/live-activity/update`, a token report) routes without a lookup. The id stays 32 random hex
digits after `la_`; the first four choose the partition, the other 28 (112 bits) keep it unique.

Partition 0 also carries what belongs to no activity: devices, notifications, the badge, widget
metrics, webhooks and the listings. Its owner is the one writer of those rows; every other node
keeps its copy of the devices fresh from the database (`cluster.node`).

Every partition function is a remainder of a *slot* (`key_slot`, `activity_slot`): a number
that does not depend on the partition count, so the store can keep it with each row and select a
partition's rows by it whatever `[cluster] partitions` is (`Store.load_partitions`).

Pure functions, no I/O: the router, the service and the store's fencing all agree through them.
"""

from __future__ import annotations

import re
import secrets
import zlib
from typing import Final

__all__ = [
    "DEFAULT_PARTITIONS",
    "GLOBAL",
    "MAX_PARTITIONS",
    "SLOT_MODULUS",
    "activity_partition",
    "activity_slot",
    "id_partition",
    "key_partition",
    "key_slot",
    "new_activity_id",
]

DEFAULT_PARTITIONS: Final = 64
"""Enough to spread over dozens of nodes; few enough that a node's lease round stays one query."""

GLOBAL: Final = 0
"""The partition whose owner also writes devices, notifications, metrics and webhooks."""

MAX_PARTITIONS: Final = 4096
"""The most partitions a cluster may have (`[cluster] partitions`)."""

SLOT_MODULUS: Final = MAX_PARTITIONS
"""Every partition count dividing it (64 among them) finds a partition's slots by `slot %
SLOT_MODULUS` alone, which the store indexes."""

_ID_PREFIX: Final = "la_"
_ID_HEX: Final = 32
_HEX4: Final = re.compile(r"[0-9a-fA-F]{4}")


def key_slot(key: str) -> int:
    """The slot of a stream key (CRC-32: stable across processes, unlike `hash`)."""
    return zlib.crc32(key.encode())


def _id_slot(activity_id: str) -> int:
    """The slot an activity id names (its first four hex digits), or, for an id of another
    shape, the slot of the id as a key."""
    digits = activity_id[len(_ID_PREFIX) : len(_ID_PREFIX) + 4]
    # Four hex digits exactly: `int` would also take a sign, `_` or spaces, and a negative slot
    # has no partition in SQL's `%`.
    if activity_id.startswith(_ID_PREFIX) and _HEX4.fullmatch(digits):
        return int(digits, 16)
    return key_slot(activity_id)


def activity_slot(activity_id: str, stream_key: str | None) -> int:
    """The slot of an activity: its stream's, else its id's (`activity_partition` is its
    remainder by the partition count)."""
    return key_slot(stream_key) if stream_key is not None else _id_slot(activity_id)


def key_partition(key: str, partitions: int) -> int:
    """The partition of a stream key."""
    return key_slot(key) % partitions


def id_partition(activity_id: str, partitions: int) -> int:
    """The partition an activity id names (its first four hex digits), or, for an id of
    another shape, the partition of the id as a key."""
    return _id_slot(activity_id) % partitions


def activity_partition(activity_id: str, stream_key: str | None, partitions: int) -> int:
    """The partition an activity lives in: its stream's, else its id's."""
    return activity_slot(activity_id, stream_key) % partitions


def new_activity_id(partition: int, partitions: int) -> str:
    """A fresh `la_` id whose `id_partition` is `partition` (112 random bits besides)."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is not in 0..{partitions - 1}")
    # Any 16-bit prefix congruent to `partition` works; drawing it keeps ids spread evenly.
    span = 0x10000 // partitions
    prefix = partition + partitions * secrets.randbelow(span)
    rest = secrets.token_hex((_ID_HEX - 4) // 2)
    return f"{_ID_PREFIX}{prefix:04x}{rest}"
