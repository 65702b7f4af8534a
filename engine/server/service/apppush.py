"""Pushes to the apps' own tokens: what notifications and the badge share.

Each device's app registers an *app token* (`DeviceRegistration.app_token`, the device token of
`registerForRemoteNotifications`); notifications and badge counts are `alert` pushes to it
(`engine.notification`), through the same engine as Live Activities, one lane per device:
`(lane, device_id)`, where `lane` is a notification id or `"badge"`.

`AppPushes.submit` queues a prepared push for each device; `AppPushes.settle` waits up to
`notify_wait` for the answers, like the Live Activity calls, and counts them (`Sent`): accepted,
still queued, refused (per-device `errors`). An app token APNs reports dead (410, BadDeviceToken,
or the engine's refusal of a token it knows is dead: `Outcome.DROP_TOKEN`, apns.md §3) is dropped
from its device, durably, so nothing more is sent to it until the app registers again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import trio

from engine.apns.reasons import Outcome, Reason
from engine.delivery.dispatch import PushHandle
from engine.engine import Engine
from engine.payload import InvalidContent, PayloadTooLarge, PreparedPayload
from engine.results import DeliveryStatus
from engine.server.contract import errors
from engine.server.service.state import Registry
from engine.server.service.undo import StoreGuard
from engine.server.store.base import StoreError
from engine.server.store.records import DeviceRow, PutDevice

__all__ = ["AppPushes", "Handles", "Sent", "checked", "no_recipients", "with_app_token"]

log = logging.getLogger("lockstep.service")

Handles = list[tuple[DeviceRow, PushHandle]]
"""The pushes of one call: each device with the handle of its push."""


@dataclass(slots=True)
class Sent:
    """What the pushes of one call came to after `notify_wait`."""

    notified: int = 0
    queued: int = 0
    deactivated: int = 0  # app tokens dropped because APNs declared them dead
    unregistered: int = 0  # of those, the ones APNs reported unregistered (410)
    errors: list[str] = field(default_factory=list)


class AppPushes:
    """Submit pushes to app tokens and count their answers (see the module docstring)."""

    def __init__(
        self, registry: Registry, store: StoreGuard, engine: Engine, *, notify_wait: float
    ) -> None:
        self._reg = registry
        self._store = store
        self._engine = engine
        self._wait = notify_wait

    async def submit(
        self, lane: str, devices: Sequence[DeviceRow], prepared: PreparedPayload
    ) -> Handles:
        """Queue `prepared` for each device's app token on the lane `(lane, device_id)`."""
        handles: Handles = []
        for device in devices:
            token = device.app_token or ""  # callers pass devices with an app token only
            handle = await self._engine.submit(lane, token, prepared, lane=device.device_id)
            handles.append((device, handle))
        return handles

    async def settle(self, handles: Handles) -> Sent:
        """Count the answers that came within `notify_wait`; drop dead app tokens. A push the
        engine holds (paced, behind its lane's push in flight, backing off) cannot be answered
        within the window: it is not waited for and counts as queued."""
        with trio.move_on_after(self._wait):
            for _, handle in handles:
                await handle.answered_unless_held()
        out = Sent()
        for device, handle in handles:
            result = handle.result_nowait()
            if result is None or result.status is DeliveryStatus.SUPERSEDED:
                out.queued += 1
            elif result.status is DeliveryStatus.ACCEPTED:
                out.notified += 1
            else:
                out.errors.append(
                    f"{device.device_id}: {result.reason or result.status.value}"
                    + (f" ({result.detail})" if result.detail else "")
                )
                if result.outcome is Outcome.DROP_TOKEN:
                    out.deactivated += 1
                    if result.http_status == 410 or result.reason is Reason.UNREGISTERED:
                        out.unregistered += 1
                    await self._drop_app_token(device.device_id, handle.device_token)
        return out

    async def _drop_app_token(self, device_id: str, token: str) -> None:
        """Forget a dead app token (nothing more is sent to it until the app registers again)."""
        row = self._reg.devices.get(device_id)
        if row is None or row.app_token != token:
            return  # unregistered, or re-registered with a fresh token meanwhile
        new = msgspec.structs.replace(row, app_token=None)
        try:
            await self._store.write([PutDevice(new)])
        except StoreError as exc:  # kept: the engine refuses the dead token anyway
            log.warning("dead app token of %s not forgotten: %s", device_id, exc)
            return
        if self._reg.devices.get(device_id) is row:
            self._reg.devices[device_id] = new
        log.info("%s: APNs says its app token is dead; dropped until it registers again", device_id)


def with_app_token(devices: Sequence[DeviceRow]) -> list[DeviceRow]:
    """The devices whose app registered an app token."""
    return [d for d in devices if d.app_token is not None]


def no_recipients(channels: list[str], known: list[str]) -> errors.NoRecipients:
    """422 `no_recipients`: no registered device matches `channels` (or none is registered)."""
    return errors.NoRecipients(
        "no registered device matches the target"
        + (f" (channels: {', '.join(channels)})" if channels else ""),
        effective_channel_slugs=channels or known,
    )


def checked(build: Callable[[], PreparedPayload]) -> PreparedPayload:
    """`build()`, with 413 for a push over the APNs limit and 400 for one that cannot be sent."""
    try:
        return build()
    except PayloadTooLarge as exc:
        raise errors.TooLarge(str(exc), size=exc.size, limit=exc.limit) from None
    except InvalidContent as exc:
        raise errors.BadRequest(f"{exc.field}: {exc}", field=exc.field) from None
