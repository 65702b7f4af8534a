"""The Live Activities service wired to the real engine and the fake APNs in memory.

`open_harness` runs: a SQLite store (a file under tmp_path, so a second harness on the same path
is a restart; or the store `make_store` returns, e.g. PostgreSQL), the engine over memory streams
to the simulator kit, and the service, with the simulated devices registered through
`service.devices` (push-to-start and widget tokens) and their token reports forwarded to
`service.devices.report_token` as an app would (or captured, when `forward_reports` is False).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.engine import open_engine
from engine.server.contract import models
from engine.server.service import LiveConfig, Service, ServiceConfig, open_service
from engine.server.service.widgets import WidgetConfig
from engine.server.store.sqlite import SqliteStore
from engine.server.webhooks.config import WebhookConfig
from simulator.devices import TokenReport
from tests.helpers.simkit import Kit, engine_config, memory_connector


@dataclass
class Harness:
    """A running service over a kit; `reports` holds captured token reports."""

    kit: Kit
    service: Service
    store: SqliteStore
    reports: list[TokenReport] = field(default_factory=list)

    def device(self, name: str) -> dict[str, Any]:
        """The simulated device's snapshot."""
        return self.kit.device(name)

    def shown(self, name: str, activity_id: str | None) -> dict[str, Any] | None:
        """The device's Live Activity for the engine's `activity_id`, if it has one."""
        for act in self.device(name)["activities"]:
            if act["attributes"].get("activity_id") == activity_id:
                return act  # type: ignore[no-any-return]
        return None

    async def forward(self, report: TokenReport) -> None:
        """Report an update token as the app would."""
        await self.service.devices.report_token(
            models.ActivityTokenReport(
                device_id=report.device,
                activity_id=str(report.attributes.get("activity_id", report.activity_id)),
                activity_token=report.activity_token,
            )
        )


async def register_devices(kit: Kit, service: Service) -> None:
    """Register every simulated device through the device API's use case, with its app token
    (for notifications and the badge), as the simulated apps do."""
    for device in kit.apns.registry.snapshot(kit.now()):
        await service.devices.register(
            device["name"],
            models.DeviceRegistration(
                push_to_start_token=device["push_to_start_token"],
                app_token=device["tokens"]["device"],
                name=device["name"],
                channels=list(device.get("channels") or []),
                widget_token=device["tokens"]["widgets"],
            ),
        )


@asynccontextmanager
async def open_harness(
    kit: Kit,
    db: Path,
    *,
    forward_reports: bool = True,
    live: LiveConfig | None = None,
    connector: Callable[[Kit, trio.Nursery], Any] = memory_connector,
    register: bool = True,
    drain_timeout: float = 10.0,
    widgets: WidgetConfig | None = None,
    webhooks: tuple[WebhookConfig, ...] = (),
    make_store: Callable[[], SqliteStore] | None = None,
) -> AsyncIterator[Harness]:
    """Run store + engine + service over `kit` for the block (see the module docstring)."""
    async with trio.open_nursery() as nursery:
        store = SqliteStore(db, threads=False) if make_store is None else make_store()
        await nursery.start(store.run)
        async with (
            open_engine(
                engine_config(kit),
                connector=connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
                drain_timeout=drain_timeout,
            ) as engine,
            open_service(
                engine,
                store,
                wall_clock=kit.now,
                config=ServiceConfig(
                    live=live or LiveConfig(notify_wait=0.5),
                    widgets=widgets or WidgetConfig(),
                    webhooks=webhooks,
                ),
            ) as service,
        ):
            harness = Harness(kit, service, store)
            send, receive = trio.open_memory_channel[TokenReport](1000)

            async def pump() -> None:
                async for report in receive:
                    harness.reports.append(report)
                    if forward_reports:
                        await harness.forward(report)

            sink = send.send_nowait
            kit.apns.token_sinks.append(sink)
            nursery.start_soon(pump)
            if register:
                await register_devices(kit, service)
            try:
                yield harness
            finally:
                kit.apns.token_sinks.remove(sink)
        store.close()
        nursery.cancel_scope.cancel()
