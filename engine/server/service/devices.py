"""Devices: what the iOS app (or a simulated iPhone) tells the server.

- `register(device_id, registration)`: create or update a device with its push-to-start token,
  app token (for notifications and the badge; left out when the app has none), name, channels
  and, optionally, its widget token (iOS 26 `widgets` pushes: the device's widgets are told to
  reload when a metric changes, `widgets`). A start reaches every registered device its target
  selects.
- `unregister(device_id)`: forget the device; activities it was receiving stop sending to it.
- `list(scope)`: the registered devices a send key reaches (all of them for scope `all`).
- `report_token(report)`: after a push-to-start, iOS hands the app the new activity's update token
  (apns.md §6, "Tokens"); the app reports it here. Updates and the end that were held for that
  device are released at once: the newest state goes out, or the end if the activity has ended.
  A later report with another token (iOS rotates them) replaces the old token, and the newest
  state goes to the new one at once.

A call whose write fails changes nothing in memory (`undo`) and answers 503 `storage_unavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.server.contract import errors, models
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.service.outbox import Outbox
from engine.server.service.state import Registry
from engine.server.service.undo import StoreGuard, Undo
from engine.server.service.widgets import WidgetPusher
from engine.server.store.records import DeleteDevice, DeviceRow, Op, PutDevice, PutRecipient

_DEVICE_ID = re.compile(models.DEVICE_ID_PATTERN[1:-1])


def check_device_id(device_id: str) -> None:
    """Device ids: 1-128 letters, digits, `_ . : -` (they appear in URLs)."""
    if _DEVICE_ID.fullmatch(device_id) is None:  # `$` would let "id\n" through
        raise errors.BadRequest(
            f"device_id must be 1-128 letters, digits, '_', '.', ':' or '-', got {device_id!r}"
        )


def device_info(row: DeviceRow) -> models.DeviceInfo:
    """The public view of a device (never the whole token)."""
    return models.DeviceInfo(
        device_id=row.device_id,
        name=row.name,
        channels=list(row.channels),
        push_to_start_token_suffix=row.push_to_start_token[-8:],
        widget_token_suffix=None if row.widget_token is None else row.widget_token[-8:],
        registered_at=models.iso(row.registered_at),
        app_token_suffix=None if row.app_token is None else row.app_token[-8:],
    )


class Devices:
    """register / unregister / report_token / list (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        store: StoreGuard,
        outbox: Outbox,
        *,
        wall_clock: Callable[[], float],
        widgets: WidgetPusher | None = None,
    ) -> None:
        self._reg = registry
        self._store = store
        self._outbox = outbox
        self._wall = wall_clock
        self._widgets = widgets

    async def register(
        self, device_id: str, registration: models.DeviceRegistration
    ) -> models.DeviceInfo:
        """Create or update a device; durable when this returns."""
        check_device_id(device_id)
        models.check_channels(registration.channels, "channels")
        old = self._reg.devices.get(device_id)
        widget = registration.widget_token
        row = DeviceRow(
            device_id=device_id,
            name=registration.name if registration.name is not None else device_id,
            push_to_start_token=registration.push_to_start_token.lower(),
            channels=sorted(set(registration.channels)),
            registered_at=old.registered_at if old is not None else self._wall(),
            widget_token=None if widget is None else widget.lower(),
            app_token=None if registration.app_token is None else registration.app_token.lower(),
        )
        undo = Undo()
        undo.entry(self._reg.devices, device_id)
        self._reg.devices[device_id] = row
        await self._store.commit([PutDevice(row)], undo)
        if self._widgets is not None:
            if row.widget_token is None:
                self._widgets.forget(device_id)  # no token, no widget pushes
            else:
                self._widgets.retoken(device_id, row.widget_token)
        return device_info(row)

    async def unregister(self, device_id: str) -> models.DeviceInfo:
        """Remove a device; 404 if unknown. Its recipients are marked dead (nothing more sent)."""
        undo = Undo()
        undo.entry(self._reg.devices, device_id)
        row = self._reg.devices.pop(device_id, None)
        if row is None:
            raise errors.NotFound(f"no device with id {device_id!r}")
        ops: list[Op] = [DeleteDevice(device_id)]
        for act in self._reg.activities.values():
            rec = act.recipients.get(device_id)
            if rec is not None and not rec.row.dead:
                undo.fields(rec.row, "dead")
                rec.row.dead = True
                ops.append(PutRecipient(rec.row))
        await self._store.commit(ops, undo)
        if self._widgets is not None:
            self._widgets.forget(device_id)
        return device_info(row)

    async def report_token(
        self, report: models.ActivityTokenReport
    ) -> models.ActivityTokenAccepted:
        """Record an activity's update token and release what was held for it."""
        if report.device_id not in self._reg.devices:
            raise errors.NotFound(f"no device with id {report.device_id!r}")
        act = self._reg.activities.get(report.activity_id)
        if act is None:
            raise errors.NotFound(f"no activity with id {report.activity_id!r}")
        rec = act.recipients.get(report.device_id)
        if rec is None:
            raise errors.NotFound(
                f"device {report.device_id!r} does not receive activity {report.activity_id!r}"
            )
        async with self._reg.locks.hold(self._reg.lock_key(act)):
            token = report.activity_token.lower()
            undo = Undo()
            undo.fields(rec.row, "update_token", "dead", "started", "sent_version")
            undo.fields(rec, "queued_version")
            changed = rec.row.update_token != token or rec.row.dead
            if changed and rec.row.update_token not in (None, token) and not act.row.ended:
                # A rotated token replaces the old one (apns.md §6, "Tokens"): what the old one
                # was sent says nothing about the new one, so the newest state goes to it now,
                # and stays owed across a restart until APNs accepts it.
                rec.row.sent_version = min(rec.row.sent_version, act.row.version - 1)
            rec.row.update_token = token
            rec.row.dead = False  # a fresh token from the app: the device is reachable again
            rec.row.started = True  # iOS only hands out an update token for a started activity
            if changed:
                rec.queued_version = min(rec.queued_version, rec.row.sent_version)
                await self._store.commit([PutRecipient(rec.row)], undo)
            handle = await self._outbox.send_latest(act, rec)
        return models.ActivityTokenAccepted(
            success=True,
            activity_id=report.activity_id,
            device_id=report.device_id,
            released=0 if handle is None else 1,
        )

    def list(self, scope: KeyScope = FULL_ACCESS) -> list[models.DeviceInfo]:
        """Every registered device the key reaches, by id (a restricted key: those subscribed to
        one of its channels)."""
        rows = sorted(self._reg.devices.items())
        return [device_info(row) for _, row in rows if scope.sees(row.channels)]
