"""The service's in-memory view of devices, activities, streams, recipients, widget metrics and
notifications.

The store (engine/server/store) is the durable copy; this is the working copy every request reads,
so a request never waits on a database read. Both hold the same rows
(`engine.server.store.records`): the service mutates a row here, then hands the same row to
`Store.write` inside an op, and replies only once that write is durable.

`KeyedLocks` serializes the calls that touch one activity (by stream key or activity id): two
concurrent PUTs for one stream are applied and queued for the store one after the other, and
handed to the engine in that order once durable, so the engine always receives them in the order
the API accepted them. A stream PUT holds its lock only while it applies its change and queues its
write (no await in between): it waits for durability without it, so the next call to the stream
builds on it at once and both share one commit (`undo.StoreGuard`). Until then the activity's
memory is ahead of the store: `Activity.durable` keeps the newest durable row, the one pushes may
carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from engine.server.store.records import (
    ActivityRow,
    DeviceRow,
    MetricRow,
    NotificationRow,
    RecipientRow,
    Snapshot,
    StreamRow,
)

if TYPE_CHECKING:
    from engine.payload import PreparedPayload


@dataclass(slots=True)
class Recipient:
    """One device's copy of one activity: the durable row plus what is queued right now."""

    row: RecipientRow
    queued_version: int = 0  # the newest version handed to the engine for this device
    # The last answer about a push to this device (in memory only: unknown after a restart).
    last_status: int | None = None  # APNs's HTTP status; None: no answer (a local refusal)
    last_reason: str | None = None  # APNs's reason, or what ended the push without one
    last_at: float | None = None
    # The device was at its Live Activity limit when this start was made (older activities were
    # ended to make room, apns.md §6); in memory only, like the last answer.
    crowded: bool = False
    overdue_reported: bool = False  # the missing update token was reported once (the sweeper)


@dataclass(slots=True)
class Activity:
    """An activity row plus its recipients (by device id)."""

    row: ActivityRow
    recipients: dict[str, Recipient] = field(default_factory=dict)
    # While a change of `row` is not durable yet: the newest durable row (a copy) and, when the
    # call that made it durable had it, its encoded push. None: `row` itself is durable.
    durable: ActivityRow | None = None
    durable_prepared: PreparedPayload | None = None
    # Taken over from another node (a cluster): its pushes start above this timestamp, past
    # anything the previous owner may have sent (apns.md §6: an equal timestamp is ignored).
    floor: int = 0

    @property
    def durable_version(self) -> int:
        """The newest version the store holds: the newest that may be pushed."""
        return self.row.version if self.durable is None else self.durable.version

    def delivered(self) -> bool:
        """Every live recipient has the newest version (or cannot get it: a dead token)."""
        return all(
            r.row.dead or r.row.sent_version >= self.row.version for r in self.recipients.values()
        )


class Registry:
    """Devices, activities and streams by id, rebuilt from a `Snapshot` at start-up."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceRow] = {}
        self.activities: dict[str, Activity] = {}
        self.streams: dict[str, StreamRow] = {}
        self.metrics: dict[str, MetricRow] = {}  # widget metrics by key
        self.notifications: dict[str, NotificationRow] = {}
        self.locks = KeyedLocks()
        # device id -> ids of activities it was sent, not known to be over (see `live_on`)
        self._by_device: dict[str, dict[str, None]] = {}

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> Registry:
        """Index a loaded snapshot; recipients of unknown activities are ignored."""
        reg = cls()
        reg.devices = {d.device_id: d for d in snapshot.devices}
        reg.metrics = {m.key: m for m in snapshot.metrics}
        reg.notifications = {n.notification_id: n for n in snapshot.notifications}
        types: dict[str, str] = {}
        channel_lists: dict[tuple[str, ...], list[str]] = {}
        for a in snapshot.activities:
            # Rows loaded from the database each carry their own copy of every string; sharing
            # the repeated ones keeps a tracked activity well under 2 KB (bench scenario 4).
            # Channel lists are shared too: the service replaces them, never mutates them.
            a.type = types.setdefault(a.type, a.type)
            a.channels = channel_lists.setdefault(tuple(a.channels), a.channels)
            reg.activities[a.activity_id] = Activity(a)
        for r in snapshot.recipients:
            act = reg.activities.get(r.activity_id)
            if act is None:
                continue
            r.activity_id = act.row.activity_id
            device = reg.devices.get(r.device_id)
            if device is not None:
                r.device_id = device.device_id
                if r.start_token == device.push_to_start_token:
                    r.start_token = device.push_to_start_token
            act.recipients[r.device_id] = Recipient(r, queued_version=0)
        for st in snapshot.streams:
            act = reg.activities.get(st.activity_id or "")
            if act is not None and act.row.stream_key == st.stream_key:
                st.stream_key = act.row.stream_key
                st.activity_id = act.row.activity_id
            reg.streams[st.stream_key] = st
        for act in reg.activities.values():
            if not act.row.ended:
                reg.track(act)
        return reg

    def adopt(self, snapshot: Snapshot) -> list[Activity]:
        """Add the activities, recipients and streams of `snapshot` (a cluster partition taken
        over; its devices are this registry's own); returns the activities added."""
        part = Registry.from_snapshot(
            Snapshot(
                devices=list(self.devices.values()),
                activities=snapshot.activities,
                recipients=snapshot.recipients,
                streams=snapshot.streams,
            )
        )
        self.activities.update(part.activities)
        self.streams.update(part.streams)
        for device_id, ids in part._by_device.items():
            self._by_device.setdefault(device_id, {}).update(ids)
        return list(part.activities.values())

    def drop(self, activity_ids: Iterable[str], stream_keys: Iterable[str]) -> None:
        """Forget activities and streams (a cluster partition given up); the per-device index
        prunes itself as it is read (`live_on`)."""
        for activity_id in activity_ids:
            self.activities.pop(activity_id, None)
        for key in stream_keys:
            self.streams.pop(key, None)

    def current_of_stream(self, stream_key: str) -> Activity | None:
        """The stream's activity if it is still running (not ended)."""
        stream = self.streams.get(stream_key)
        if stream is None or stream.activity_id is None:
            return None
        act = self.activities.get(stream.activity_id)
        return act if act is not None and not act.row.ended else None

    def select_devices(self, channels: Sequence[str] | None) -> list[DeviceRow]:
        """Devices subscribed to any of `channels`; every device when no channel is named."""
        if not channels:
            return sorted(self.devices.values(), key=lambda d: d.device_id)
        wanted = set(channels)
        return sorted(
            (d for d in self.devices.values() if wanted.intersection(d.channels)),
            key=lambda d: d.device_id,
        )

    def all_channels(self) -> list[str]:
        """Every channel some device is subscribed to (sorted)."""
        return sorted({c for d in self.devices.values() for c in d.channels})

    @staticmethod
    def lock_key(act: Activity) -> str:
        """The lock an activity's calls take: its stream's key, or its id."""
        key = act.row.stream_key
        return "stream:" + key if key is not None else "id:" + act.row.activity_id

    def track(self, act: Activity) -> None:
        """Index a new activity under each device it targets (for `live_on`)."""
        for device_id in act.recipients:
            self._by_device.setdefault(device_id, {})[act.row.activity_id] = None

    def live_on(self, device_id: str) -> list[Activity]:
        """The activities `device_id` may still show, oldest start first: not ended, its token
        not dead (the per-device limit, apns.md §6). The index is pruned as it is read."""
        ids = self._by_device.get(device_id)
        if not ids:
            return []
        live = []
        for activity_id in list(ids):
            act = self.activities.get(activity_id)
            rec = None if act is None else act.recipients.get(device_id)
            if act is None or rec is None or act.row.ended or rec.row.dead:
                del ids[activity_id]  # it never comes back: an end or a dead token is final
                continue
            live.append(act)
        return live

    def pending(self) -> Iterable[tuple[Activity, Recipient]]:
        """Recipients that do not have their activity's newest version yet."""
        for act in self.activities.values():
            for rec in act.recipients.values():
                if not rec.row.dead and rec.row.sent_version < act.row.version:
                    yield act, rec


class KeyedLocks:
    """One `trio.Lock` per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def free(self, key: str) -> bool:
        """Whether nobody holds or waits for the lock of `key` (a caller whose work has no
        await may then do it without taking the lock)."""
        return key not in self._locks

    def hold(self, key: str) -> _Held:
        """Hold the lock of `key` for the block (`async with locks.hold(key):`).

        A free lock is taken without a checkpoint: the hot path of a call to an idle stream
        costs a dict lookup, not a trip through the scheduler.
        """
        return _Held(self, key)

    def _enter(self, key: str) -> tuple[trio.Lock, list[int]]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (trio.Lock(), [0])
        entry[1][0] += 1
        return entry

    def _leave(self, key: str, users: list[int]) -> None:
        users[0] -= 1
        if users[0] == 0:
            del self._locks[key]


class _Held:
    """`KeyedLocks.hold`'s context manager."""

    __slots__ = ("_key", "_lock", "_locks", "_users")

    def __init__(self, locks: KeyedLocks, key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        lock, users = self._locks._enter(self._key)
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            try:
                await lock.acquire()
            except BaseException:
                self._locks._leave(self._key, users)
                raise
        self._lock, self._users = lock, users

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()
        self._locks._leave(self._key, self._users)
