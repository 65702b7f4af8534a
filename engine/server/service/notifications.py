"""Push notifications: the use cases behind `/push-notification` (the badge is `badge`).

They go to each targeted device's *app token* (the one its app registers with the device API,
`DeviceRegistration.app_token`) as `alert` pushes through the same engine as Live Activities
(`engine.notification`, `apppush`). Every notification gets its own lane per device,
`(notification_id, device_id)`, so two notifications are never merged; a replacement is offered
on the same lanes and supersedes the original if that is still pending (latest wins), and it
carries the same `apns-collapse-id` (the notification id), so a phone that already shows the
original shows the replacement in its place (apns.md §1).

- `send(req)`: select the devices (`channels` / `target.channels`, else every device), keep those
  with an app token, build the push and check its size (413 before anything is stored), store
  the notification (`PutNotification`, durable before the reply: a replacement works after a
  restart), then push. 422 `no_recipients` when no device matches or none has an app token.
- `replace(notification_id, req)`: the visible fields are replaced whole, `metadata` and `tags`
  kept when left out; the replacement is silent (no sound) and goes to the devices the original
  went to that still have an app token. 404 for an unknown id, 409 when none of its devices can
  be reached any more.
- `sweep(cutoff)`: forget the notifications last changed before `cutoff` (the service's
  sweeper, after `ServiceConfig.notification_retention`); a replace of one then answers 404.

Delivery progress is durable: each notification row keeps, per device, the newest version whose
push settled for good (`settled`: APNs accepted it, or refused it so that no retry helps), written
behind in small batches by `run()`. After a restart, `recover()` pushes again what a device still
lacks (the newest text, with the same collapse id) for the notifications of the last
`RECOVER_WINDOW` (24 h: the contract keeps an alert eligible for delivery that long), so a
notification the server acknowledged is not lost to a crash before APNs took it.

Replies wait up to `notify_wait` for APNs answers, like the Live Activity calls: `devices_notified`
counts the accepted pushes, `devices_queued` those not answered yet. An app token APNs reports
dead (410, BadDeviceToken) is dropped from its device (`devices_deactivated`) until the app
registers again. A call whose write fails changes nothing and pushes nothing (503
`storage_unavailable`, `undo`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Final

import msgspec
import trio

from engine.apns.reasons import Outcome
from engine.delivery.dispatch import PushHandle
from engine.notification import Notification, prepare_notification
from engine.payload import PreparedPayload
from engine.results import DeliveryResult, DeliveryStatus
from engine.server.contract import errors, models, push
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.service.apppush import (
    AppPushes,
    Handles,
    checked,
    no_recipients,
    with_app_token,
)
from engine.server.service.state import Registry
from engine.server.service.undo import StoreGuard, Undo
from engine.server.store.base import StoreError
from engine.server.store.records import (
    DeleteNotification,
    DeviceRow,
    NotificationRow,
    PutNotification,
)

log = logging.getLogger("lockstep.service")

RECOVER_WINDOW: Final = 86_400.0
"""After a restart, notifications last changed longer ago than this (s) are not pushed again."""

ACTIONS_CATEGORY: Final = "lockstep.actions"
"""The `aps.category` of a notification with buttons: the app registers it to show them."""

# Outcomes after which no retry of the same push helps: it is settled for good (apns.md §3).
_FINAL: Final = frozenset({Outcome.DROP_TOKEN, Outcome.FIX_REQUEST})

# The request fields a notification shows (and a replacement replaces whole).
_VISIBLE: Final = (
    "title",
    "message",
    "subtitle",
    "icon",
    "media",
    "redirection",
    "actions",
    "payload",
    "badge",
)


class Notifications:
    """send / replace / badge (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        store: StoreGuard,
        pushes: AppPushes,
        *,
        wall_clock: Callable[[], float],
        new_id: Callable[[], str] | None = None,
        flush_interval: float = 0.05,
        retry_interval: float = 5.0,
    ) -> None:
        self._reg = registry
        self._store = store
        self._pushes = pushes
        self._wall = wall_clock
        self._new_id = new_id or (lambda: "pn_" + uuid.uuid4().hex)
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._dirty: dict[str, NotificationRow] = {}
        self._wake = trio.Event()

    def forget_progress(self) -> None:
        """Drop the unwritten delivery progress (a cluster node gave partition 0 up: its next
        owner resends what it cannot see as settled)."""
        self._dirty.clear()

    @property
    def dirty(self) -> int:
        """Notification rows whose delivery progress waits to be written."""
        return len(self._dirty)

    async def send(self, req: push.PushRequest, key: KeyScope = FULL_ACCESS) -> push.PushResponse:
        """Store and push a new notification (see the module docstring); a restricted `key`
        reaches only its channels (`KeyScope.targets`)."""
        channels = key.targets(push.requested_channels(req))
        selected = self._reg.select_devices(channels)
        devices = self._reachable(channels, selected)
        skipped = len(selected) - len(devices)
        now = self._wall()
        content = _visible(req)
        content["interruption_level"] = req.interruption_level
        content["sound"] = req.sound
        row = NotificationRow(
            notification_id=self._new_id(),
            content=content,
            channels=channels,
            devices=[d.device_id for d in devices],
            metadata=dict(req.metadata) if req.metadata else None,
            tags=list(req.tags) if req.tags else None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        prepared = _prepare(row)
        undo = Undo()
        undo.entry(self._reg.notifications, row.notification_id)
        self._reg.notifications[row.notification_id] = row
        await self._store.commit([PutNotification(row)], undo)
        handles = await self._submit(devices, prepared, row)
        out = await self._pushes.settle(handles)
        return push.PushResponse(
            success=out.notified > 0 or out.queued > 0,
            notification_id=row.notification_id,
            devices_notified=out.notified,
            users_notified=1 if out.notified else 0,
            effective_channel_slugs=channels or None,
            tags=row.tags,
            timestamp=models.iso(now),
            devices_targeted=len(devices),
            devices_deactivated=out.deactivated,
            devices_unregistered=out.unregistered,
            devices_queued=out.queued,
            errors=out.errors or None,
            message=(
                f"{skipped} targeted device(s) have no app token registered and were skipped"
                if skipped
                else None
            ),
        )

    async def replace(
        self, notification_id: str, req: push.PushReplaceRequest, key: KeyScope = FULL_ACCESS
    ) -> push.PushReplaceResponse:
        """Replace a sent notification in place on the devices it went to (a restricted `key`
        only one it could have sent itself)."""
        async with self._lock(notification_id):
            row = self._reg.notifications.get(notification_id)
            if row is None:
                raise errors.NotFound(f"no notification with id {notification_id!r}")
            key.check_reach(row.channels, f"notification {notification_id!r}")
            devices = self._still_reachable(row)
            if not devices:
                raise errors.ApiError(
                    409,
                    "not_replaceable",
                    f"notification {notification_id!r} can no longer be replaced: none of the "
                    "devices it went to is registered with an app token; send a new one",
                )
            now = self._wall()
            content = _visible(req)
            # A replacement is silent (the SDK's "silently replace"): no sound, same urgency.
            content["interruption_level"] = row.content.get("interruption_level")
            content["sound"] = None
            # A new row, never the stored one changed in place: a progress flush may be
            # writing the old one meanwhile, and must not carry an unconfirmed replacement.
            row = msgspec.structs.replace(
                row,
                content=content,
                version=row.version + 1,
                updated_at=now,
                metadata=row.metadata if req.metadata is None else dict(req.metadata) or None,
                tags=row.tags if req.tags is None else list(req.tags) or None,
            )
            prepared = _prepare(row)  # 413 before anything changed
            undo = Undo()
            undo.entry(self._reg.notifications, notification_id)
            self._reg.notifications[notification_id] = row
            await self._store.commit([PutNotification(row)], undo)
            handles = await self._submit(devices, prepared, row)
        out = await self._pushes.settle(handles)
        return push.PushReplaceResponse(
            success=out.notified > 0 or out.queued > 0,
            notification_id=notification_id,
            devices_notified=out.notified,
            users_notified=1 if out.notified else 0,
            effective_channel_slugs=row.channels or None,
            tags=row.tags,
            timestamp=models.iso(now),
            devices_targeted=len(devices),
            devices_queued=out.queued,
            errors=out.errors or None,
        )

    async def sweep(self, cutoff: float) -> int:
        """Forget the notifications last sent or replaced at or before `cutoff` (a replace of
        one then answers 404); returns how many. Raises `StoreError` when the delete fails."""
        old = [
            n.notification_id for n in self._reg.notifications.values() if n.updated_at <= cutoff
        ]
        if not old:
            return 0
        async with AsyncExitStack() as locks:
            # A replace in flight finishes first (it makes its notification new again); one
            # waiting behind the sweep finds it gone (404).
            for notification_id in old:
                await locks.enter_async_context(self._lock(notification_id))
            gone = [
                i
                for i in old
                if (row := self._reg.notifications.get(i)) is not None and row.updated_at <= cutoff
            ]
            if gone:
                await self._store.write([DeleteNotification(i) for i in gone])
            for notification_id in gone:
                self._reg.notifications.pop(notification_id, None)
        return len(gone)

    def _lock(self, notification_id: str) -> AbstractAsyncContextManager[None]:
        """The lock a notification's replace (and the sweep) holds."""
        return self._reg.locks.hold("notification:" + notification_id)

    # -- helpers ---------------------------------------------------------------------------------
    def _reachable(self, channels: list[str], selected: Sequence[DeviceRow]) -> list[DeviceRow]:
        """The selected devices with an app token; 422 `no_recipients` when there are none."""
        devices = with_app_token(selected)
        if not devices:
            known = self._reg.all_channels()
            if selected:
                raise errors.NoRecipients(
                    f"none of the {len(selected)} targeted device(s) registered an app token for "
                    "notifications (PUT /devices/{id} with app_token)",
                    effective_channel_slugs=channels or known,
                )
            raise no_recipients(channels, known)
        return devices

    def _still_reachable(self, row: NotificationRow) -> list[DeviceRow]:
        """The devices `row` went to that are still registered with an app token."""
        devices = (self._reg.devices.get(device_id) for device_id in row.devices)
        return with_app_token([d for d in devices if d is not None])

    async def _submit(
        self, devices: Sequence[DeviceRow], prepared: PreparedPayload, row: NotificationRow
    ) -> Handles:
        """Queue the notification for each device and record on `row` what each push settles
        at (its delivery progress)."""
        handles = await self._pushes.submit(row.notification_id, devices, prepared)
        for device, handle in handles:
            self._follow(handle, row, device.device_id, row.version)
        return handles

    # -- delivery progress ----------------------------------------------------------------------
    def _follow(
        self, handle: PushHandle, row: NotificationRow, device_id: str, version: int
    ) -> None:
        def done(result: DeliveryResult) -> None:
            final = result.status is DeliveryStatus.ACCEPTED or result.outcome in _FINAL
            if not final or row.settled.get(device_id, 0) >= version:
                return  # superseded (the newer push carries on), or failed for now
            # Replaced, never mutated: an `Undo` of a concurrent call holds the old dict.
            row.settled = {**row.settled, device_id: version}
            self._dirty[row.notification_id] = row
            self._wake.set()

        handle.add_done_callback(done)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write delivery progress in batches until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self._flush_interval)
            if not await self.flush():
                await trio.sleep(self._retry_interval)
                self._wake.set()

    async def flush(self) -> bool:
        """Write every dirty row now; False when the store refused them (they stay dirty)."""
        if not self._dirty:
            return True
        batch, self._dirty = self._dirty, {}
        # A notification swept meanwhile stays deleted.
        ops = [
            PutNotification(row)
            for key, row in batch.items()
            if self._reg.notifications.get(key) is row
        ]
        try:
            await self._store.write(ops)
        except StoreError as exc:
            log.warning("notification progress not written (%d rows), retrying: %s", len(ops), exc)
            self._dirty = {**batch, **self._dirty}
            return False
        return True

    async def recover(self) -> int:
        """After a restart: push each notification of the last `RECOVER_WINDOW` again to the
        devices whose newest version never settled; returns the pushes queued."""
        cutoff = self._wall() - RECOVER_WINDOW
        queued = 0
        for row in list(self._reg.notifications.values()):
            if row.updated_at < cutoff:
                continue
            devices = [
                d
                for d in self._still_reachable(row)
                if row.settled.get(d.device_id, 0) < row.version
            ]
            if not devices:
                continue
            try:
                prepared = _prepare(row)
            except errors.ApiError as exc:  # cannot happen for a row this code stored
                log.warning("notification %s not re-sent: %s", row.notification_id, exc)
                continue
            queued += len(await self._submit(devices, prepared, row))
        return queued


def _visible(req: push.PushRequest | push.PushReplaceRequest) -> dict[str, Any]:
    """The request's visible fields as stored (None for the ones left out)."""
    fields: dict[str, Any] = msgspec.to_builtins(req)
    return {name: fields.get(name) for name in _VISIBLE}


def _prepare(row: NotificationRow) -> PreparedPayload:
    """The notification's push as APNs gets it: 413 when too big, 400 when it cannot be sent."""
    c = row.content
    actions = [{k: a[k] for k in ("title", "type", "url")} for a in c.get("actions") or ()]
    ours = {
        "notification_id": row.notification_id,
        "redirection": c.get("redirection"),
        "media": c.get("media"),
        "icon": c.get("icon"),
        "actions": actions or None,
    }
    extra: dict[str, Any] = dict(c.get("payload") or {})
    extra["lockstep"] = {k: v for k, v in ours.items() if v is not None}
    return checked(
        lambda: prepare_notification(
            Notification(
                title=c.get("title"),
                subtitle=c.get("subtitle"),
                body=c.get("message"),
                badge=c.get("badge"),
                sound=c.get("sound"),
                interruption_level=c.get("interruption_level"),
                category=ACTIONS_CATEGORY if actions else None,
                # The app's notification service extension fetches the icon or media.
                mutable_content=bool(c.get("icon") or c.get("media")),
                extra=extra,
                collapse_id=row.notification_id,
            )
        )
    )


__all__ = ["ACTIONS_CATEGORY", "RECOVER_WINDOW", "Notifications"]
