"""The app icon badge: the use case behind `POST /badge`.

`update(req)` sends a badge-only `alert` push (`{"aps": {"badge": N}}`: nothing is shown, 0 clears
the badge) to each targeted device's app token (`apppush`), on the lane `("badge", device_id)`,
so a newer count supersedes one still waiting for a device (latest wins). Nothing is stored: the
badge is the newest count, nothing else.

Errors are the contract's: 422 `no_recipients` when no device matches the channels, 422
`badge_device_disconnected` when none of the targeted devices registered an app token, 502
`badge_update_failed` when APNs refused the push for every device (the SDK's
`AppIconBadgeCountUpdateError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from engine.notification import Notification, prepare_notification
from engine.server.contract import models, push
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.service.apppush import AppPushes, checked, no_recipients, with_app_token
from engine.server.service.state import Registry

__all__ = ["BADGE_LANE", "Badges"]

BADGE_LANE: Final = "badge"
"""The first half of a badge push's lane key (notification ids start with `pn_`)."""


class Badges:
    """`update` (see the module docstring)."""

    def __init__(
        self, registry: Registry, pushes: AppPushes, *, wall_clock: Callable[[], float]
    ) -> None:
        self._reg = registry
        self._pushes = pushes
        self._wall = wall_clock

    async def update(
        self, req: push.BadgeRequest, key: KeyScope = FULL_ACCESS
    ) -> push.BadgeResponse:
        """Set the app badge on the targeted devices (0 clears it); a restricted `key` reaches
        only its channels."""
        channels = key.targets(push.requested_channels(req))
        selected = self._reg.select_devices(channels)
        if not selected:
            raise no_recipients(channels, self._reg.all_channels())
        slugs = channels or self._reg.all_channels()
        devices = with_app_token(selected)
        if not devices:
            raise push.BadgeUpdateError(
                "badge_device_disconnected",
                f"none of the {len(selected)} targeted device(s) registered an app token, so "
                "the badge cannot reach them; the app registers one with PUT /devices/{id}",
                badge=req.badge,
                devices_targeted=len(selected),
                devices_updated=0,
                effective_channel_slugs=slugs,
            )
        prepared = checked(lambda: prepare_notification(Notification(badge=req.badge)))
        out = await self._pushes.settle(await self._pushes.submit(BADGE_LANE, devices, prepared))
        if out.notified == 0 and out.queued == 0:
            raise push.BadgeUpdateError(
                "badge_update_failed",
                "APNs refused the badge for every targeted device: " + "; ".join(out.errors),
                badge=req.badge,
                devices_targeted=len(devices),
                devices_updated=0,
                effective_channel_slugs=slugs,
            )
        users = 1 if out.notified else 0  # a Lockstep server is one account
        return push.BadgeResponse(
            success=True,
            badge=req.badge,
            devices_updated=out.notified,
            users_updated=users,
            devices_notified=out.notified,
            users_notified=users,
            effective_channel_slugs=slugs,
            timestamp=models.iso(self._wall()),
            devices_targeted=len(devices),
            devices_deactivated=out.deactivated,
            devices_unregistered=out.unregistered,
            devices_queued=out.queued,
            errors=out.errors or None,
        )
