"""The service facade: one object behind the HTTP API and the embedded Python API.

    async with open_service(engine, store) as service:
        await service.live.stream("prod-web-1", request)
        await service.devices.register("iphone-1", registration)
        await service.metrics.set_value("revenue", MetricValueRequest(value=1234))

`open_service` loads the store's snapshot into memory, re-queues what devices are still missing
(restart recovery: also one widget reload per device when metrics are stored), and runs the
background tasks: the outbox's write-behind, the widget reload pushes of metric changes
(`widgets.WidgetPusher`), and a sweeper that forgets ended activities once every device has their
end and `retention` has passed (and notifications after `notification_retention`), so memory and
the database stay bounded by the activities that matter, and, while store writes fail, a probe
that clears `/healthz` once they succeed again (`undo.StoreGuard`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from engine.engine import Engine
from engine.server.cluster.partitions import GLOBAL, MAX_PARTITIONS
from engine.server.service.apppush import AppPushes
from engine.server.service.badge import Badges
from engine.server.service.devices import Devices
from engine.server.service.live import LiveActivities, LiveConfig
from engine.server.service.metrics import Metrics
from engine.server.service.notifications import Notifications
from engine.server.service.outbox import Outbox
from engine.server.service.state import Registry
from engine.server.service.status import DeliveryStatus, overdue
from engine.server.service.undo import StoreGuard
from engine.server.service.webhooks import Webhooks
from engine.server.service.widgets import WidgetConfig, WidgetPusher
from engine.server.store.base import Store, StoreError
from engine.server.store.records import (
    DeleteActivity,
    DeliveryRow,
    DeviceRow,
    Op,
    PutRecipient,
    Snapshot,
)
from engine.server.webhooks.config import WebhookConfig

log = logging.getLogger("lockstep.service")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The service's knobs (the Live Activities ones live in `LiveConfig`)."""

    live: LiveConfig = field(default_factory=LiveConfig)
    retention: float = 3600.0  # keep an ended, fully delivered activity this long (s)
    sweep_interval: float = 60.0
    pacing_interval: float = 1.0  # the engine's, for timestamps after a restart
    storage_retry_after: float = 5.0  # `Retry-After` of a 503 `storage_unavailable` (s)
    widgets: WidgetConfig = field(default_factory=WidgetConfig)  # widget reload pushes
    webhooks: tuple[WebhookConfig, ...] = ()  # the inbound webhooks (`[[webhooks]]`)
    notification_retention: float = 7 * 86400.0  # a notification stays replaceable this long (s)


class Service:
    """`live` (Live Activities), `devices`, `status`, `notifications` (push notifications),
    `badge` (the app icon badge), `metrics` (widget metrics) and `webhooks`, over one registry,
    store and outbox.

    The HTTP front calls it through its seam, `engine.server.http.seam.ApiService`, which this
    class satisfies structurally: the service never imports the HTTP layer.
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        registry: Registry,
        *,
        config: ServiceConfig,
        wall_clock: Callable[[], float],
        deliveries: Sequence[DeliveryRow] = (),
        new_activity_id: Callable[[str | None], str] | None = None,
    ) -> None:
        self.config = config
        self._engine = engine
        self.store = store
        # Every write goes through the guard: a failure rolls the call back (503) and shows
        # in /healthz until a write succeeds again.
        self.guard = StoreGuard(store, retry_after=config.storage_retry_after)
        self.registry = registry
        self._wall = wall_clock
        self.outbox = Outbox(
            engine,
            self.guard,
            registry,
            attributes_type=config.live.attributes_type,
            wall_clock=wall_clock,
            pacing_interval=config.pacing_interval,
        )
        self.live = LiveActivities(
            registry,
            self.guard,
            self.outbox,
            config=config.live,
            wall_clock=wall_clock,
            new_id=new_activity_id,
        )
        self.widgets = WidgetPusher(engine, config.widgets, wall_clock=wall_clock)
        self.devices = Devices(
            registry, self.guard, self.outbox, wall_clock=wall_clock, widgets=self.widgets
        )
        self.metrics = Metrics(registry, self.guard, self.widgets, wall_clock=wall_clock)
        pushes = AppPushes(registry, self.guard, engine, notify_wait=config.live.notify_wait)
        self.notifications = Notifications(registry, self.guard, pushes, wall_clock=wall_clock)
        self.badge = Badges(registry, pushes, wall_clock=wall_clock)
        self.status = DeliveryStatus(
            registry,
            wall_clock,
            token_timeout=config.live.token_timeout,
            budget=engine.budget,
            holds=engine.hold,
        )
        self.webhooks = Webhooks(
            config.webhooks, self.live, self.guard, deliveries, wall_clock=wall_clock
        )
        # A cluster node's own gauges (engine/server/cluster/node.py), in /metrics and /healthz.
        self.cluster_stats: Callable[[], dict[str, float]] | None = None
        self.recovered = 0
        self.tokens_overdue = 0  # started activities reported without an update token in time
        self.started_at = wall_clock()

    def health(self) -> dict[str, Any]:
        """`/healthz`: alive, with a few counts; `ok: false` (a 503) with the reason while
        writes fail, until one succeeds again."""
        failing = self.guard.health()
        health: dict[str, Any] = {
            "ok": failing is None,
            "devices": len(self.registry.devices),
            "activities": len(self.registry.activities),
            "metrics": len(self.registry.metrics),
        }
        if failing is not None:
            health["storage"] = failing
        if self.cluster_stats is not None:
            health["partitions"] = int(self.cluster_stats()["cluster_partitions_held"])
        return health

    def stats(self) -> dict[str, float]:
        """Gauges for `/metrics`."""
        acts = self.registry.activities.values()
        store = {f"store_{k}": float(v) for k, v in self.store.stats().items()}
        return {
            **store,
            **self._engine.stats(),
            **self.widgets.stats(),
            "widget_metrics": len(self.registry.metrics),
            "devices": len(self.registry.devices),
            "activities": len(self.registry.activities),
            "activities_running": sum(1 for a in acts if not a.row.ended),
            "streams": len(self.registry.streams),
            "notifications": len(self.registry.notifications),
            "recipients_pending": sum(1 for _ in self.registry.pending()),
            "recipients_dead": sum(1 for a in acts for r in a.recipients.values() if r.row.dead),
            "recipients_marked_dead": self.outbox.marked_dead,
            "recipient_writes_pending": self.outbox.dirty,
            "notification_writes_pending": self.notifications.dirty,
            "recovered_pushes": self.recovered,
            "update_tokens_overdue": self.tokens_overdue,
            "store_write_failures": self.guard.failed_writes,
            "store_failing": float(self.guard.failure is not None),  # what /healthz reports
            **(self.cluster_stats() if self.cluster_stats is not None else {}),
        }

    async def sweep(self) -> int:
        """Forget ended activities every device has (or cannot get) after `retention`, and
        notifications older than `notification_retention`; returns the activities forgotten."""
        await self.notifications.sweep(self._wall() - self.config.notification_retention)
        cutoff = self._wall() - self.config.retention
        gone = [
            a
            for a in self.registry.activities.values()
            if a.row.ended and (a.row.ended_at or 0) <= cutoff and a.delivered()
        ]
        if not gone:
            return 0
        ops: list[Op] = [DeleteActivity(a.row.activity_id) for a in gone]
        await self.guard.write(ops)  # forgotten in memory only once the store forgot them
        for act in gone:
            self.registry.activities.pop(act.row.activity_id, None)
        return len(gone)

    # -- a cluster node's partitions (engine/server/cluster/node.py) ------------------------------
    async def attach(self, part: Snapshot) -> int:
        """Take over the activities and streams of `part` (partitions this node now holds, as
        stored): index them and push what each device lacks, above the stored timestamps;
        returns the pushes queued."""
        adopted = self.registry.adopt(part)
        queued = await self.outbox.recover(adopted)
        self.recovered += queued
        return queued

    async def take_global(self, stored: Snapshot) -> None:
        """A cluster node became the writer of what belongs to no activity (partition 0):
        start from the stored devices, metrics and notifications, send the notifications the
        last owner left unsent, and one widget reload per device (whether the last change's
        reloads went out is not stored)."""
        await self.refresh_devices(stored.devices)
        self.registry.metrics = {m.key: m for m in stored.metrics}
        self.registry.notifications = {n.notification_id: n for n in stored.notifications}
        self.recovered += await self.notifications.recover()
        if self.registry.metrics:
            self.widgets.notify(self.registry.devices.values())

    def drop_global(self) -> None:
        """A cluster node is no longer the writer of partition 0: what it had not written of
        the notifications' progress is its next owner's to resend."""
        self.notifications.forget_progress()

    def detach(self, activity_ids: Collection[str], stream_keys: Collection[str]) -> None:
        """Stop delivering activities whose partition this node gave up or lost: nothing queued
        for them is sent any more, and their unwritten progress is dropped (the new owner
        resends what it cannot see as sent)."""
        for activity_id in activity_ids:
            self._engine.abandon(activity_id)
        self.outbox.forget(activity_ids)
        self.registry.drop(activity_ids, stream_keys)

    async def refresh_devices(self, rows: Sequence[DeviceRow]) -> None:
        """Replace the devices with `rows` as stored (another node changed them); a device
        that is gone stops receiving this node's activities, as `Devices.unregister` does."""
        fresh = {row.device_id: row for row in rows}
        gone = set(self.registry.devices) - set(fresh)
        self.registry.devices = fresh
        ops: list[Op] = []
        for act in self.registry.activities.values():
            for device_id in gone.intersection(act.recipients):
                rec = act.recipients[device_id]
                if not rec.row.dead:
                    rec.row.dead = True
                    ops.append(PutRecipient(rec.row))
        if ops:
            try:
                await self.guard.write(ops)
            except StoreError as exc:  # the store keeps them alive; the next restart retries
                log.warning("removed devices not written for %d recipients: %s", len(ops), exc)

    def report_overdue(self) -> int:
        """Log, once each, the started activities whose update token is later than
        `[live] token_timeout` allows (the user never tapped Allow, or iOS ignored the start on
        a full device); return how many were newly reported."""
        now, timeout = self._wall(), self.config.live.token_timeout
        found = 0
        for act in self.registry.activities.values():
            late = [
                rec
                for rec in act.recipients.values()
                if not rec.overdue_reported and overdue(act, rec, now, timeout)
            ]
            for rec in late:
                rec.overdue_reported = True
            if late:
                found += len(late)
                devices = ", ".join(sorted(r.row.device_id for r in late))
                log.warning(
                    "activity %s: no update token from %s %.0f s after APNs accepted the start "
                    "(the user may not have tapped Allow, or the device was at its Live Activity "
                    "limit)",
                    act.row.activity_id,
                    devices,
                    timeout,
                )
        self.tokens_overdue += found
        return found

    async def _report_overdue_forever(self) -> None:
        while True:
            await trio.sleep(min(self.config.live.token_timeout / 2, self.config.sweep_interval))
            self.report_overdue()

    async def _sweep_forever(self) -> None:
        while True:
            await trio.sleep(self.config.sweep_interval)
            try:
                removed = await self.sweep()
            except StoreError as exc:  # kept in memory; the next sweep tries again
                log.warning("sweep not written: %s", exc)
                continue
            if removed:
                log.info("forgot %d ended activities", removed)


@asynccontextmanager
async def open_service(
    engine: Engine,
    store: Store,
    *,
    config: ServiceConfig | None = None,
    wall_clock: Callable[[], float] = time.time,
    activities: bool = True,
    new_activity_id: Callable[[str | None], str] | None = None,
) -> AsyncIterator[Service]:
    """Load, recover and run a `Service` for the duration of the block (store must be running).

    `activities=False` loads only the rows that belong to no activity: a cluster node takes
    those partition by partition as it gains leases (`Service.attach`). `new_activity_id` draws
    the id of a new activity from its stream key (None for a plain start)."""
    if activities:
        snapshot = await store.load()
    else:
        # The rows that belong to no activity come with partition 0; of the finest split it
        # holds the fewest activities (read, then left to the partitions' takeovers).
        snapshot = await store.load_partitions([GLOBAL], MAX_PARTITIONS)
        snapshot.activities, snapshot.recipients, snapshot.streams = [], [], []
    service = Service(
        engine,
        store,
        Registry.from_snapshot(snapshot),
        config=config or ServiceConfig(),
        wall_clock=wall_clock,
        deliveries=snapshot.deliveries,
        new_activity_id=new_activity_id,
    )
    async with trio.open_nursery() as nursery:
        # First: every write from here on is queued, grouped and ordered by the guard.
        await nursery.start(service.guard.run)
        await nursery.start(service.outbox.run)
        await nursery.start(service.notifications.run)
        service.recovered = await service.outbox.recover()
        if activities:  # a cluster node: only partition 0's owner sends them (`take_global`)
            service.recovered += await service.notifications.recover()
        if service.recovered:
            log.info("re-queued %d pushes after a restart", service.recovered)
        await nursery.start(service.widgets.run)
        if activities and service.registry.metrics:
            # Whether the last change's reloads went out before the restart is not stored: one
            # reload per widget now, so every widget reads the values the store has.
            service.widgets.notify(service.registry.devices.values())
        nursery.start_soon(service._sweep_forever)
        nursery.start_soon(service._report_overdue_forever)
        nursery.start_soon(service.guard.heal_forever)
        try:
            yield service
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await service.outbox.flush()
                await service.notifications.flush()
            nursery.cancel_scope.cancel()
