"""Stand-ins for a cluster node's service (what `ClusterNode` calls) and for a route."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import trio

from engine.server.store.records import ActivityRow, Snapshot, pack_state


class FakeRegistry:
    """The registry's dicts a node reads."""

    def __init__(self) -> None:
        self.activities: dict[str, Any] = {}
        self.streams: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}


class FakeStore:
    """A store whose load takes a moment and returns nothing."""

    async def load(self) -> Snapshot:
        await trio.sleep(0.01)  # a load takes a moment: calls must wait for it
        return Snapshot()

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        await trio.sleep(0.01)  # a load takes a moment: calls must wait for it
        return Snapshot()


class FakeEngine:
    """Records the budget shares it is given."""

    def __init__(self) -> None:
        self.shares: list[int] = []

    def share_budget(self, parts: int) -> None:
        self.shares.append(parts)


class FakeOutbox:
    """An outbox with nothing to flush."""

    def __init__(self) -> None:
        self.engine = FakeEngine()

    async def flush(self) -> bool:
        return True


class FakeService:
    """What `ClusterNode` calls on its service, counting attaches."""

    def __init__(self) -> None:
        self.registry, self.store, self.outbox = FakeRegistry(), FakeStore(), FakeOutbox()
        self.attached = 0

    async def attach(self, part: Snapshot) -> int:
        self.attached += 1
        return 0

    async def take_global(self, stored: Snapshot) -> None:
        """Partition 0 taken: nothing to reload here."""

    def drop_global(self) -> None:
        """Partition 0 given up: nothing to forget here."""

    def detach(self, activity_ids: Any, stream_keys: Any) -> None:
        pass

    async def refresh_devices(self, rows: Any) -> None:
        pass


@dataclass
class Route:
    """The stream route, as a router sees it."""

    method: str = "PUT"
    template: str = "/api/live-activity/stream/{stream_key}"
    operation_id: str = "reconcileLiveActivityStream"


def activity_row(activity_id: str, stream_key: str | None) -> ActivityRow:
    """A stored activity (a progress state, channel `ops`), of a stream when `stream_key`."""
    return ActivityRow(
        activity_id=activity_id,
        stream_key=stream_key,
        type="progress",
        state=pack_state({"title": "Deploy", "percentage": 40}),
        alert=None,
        version=1,
        ended=False,
        started_at=1_700_000_000.5,
        updated_at=1_700_000_000.5,
        ended_at=None,
        dismissal_date=None,
        update_count=0,
        channels=["ops"],
        metadata=None,
        tags=None,
    )
