"""The simulated widget extension: when a `widgets` push reloads the widgets, read the values.

A real iOS 26 widget push carries no data (`{"aps":{"content-changed":true}}`): WidgetKit reloads
the app's widgets and their timeline provider fetches what to show from the app's server. The
simulated phones do the same. `WidgetReader` is a `PushListener` of the fake APNs: for every
accepted `widgets` push that reloaded a phone's widgets (the phone's `widget_reloads` grew: a push
over the phone's reload budget reloads nothing), it queues the phone, and `run()` reads
`GET {api_base}/devices/{name}/metrics` with the device key, as the extension would, and hands the
values to the phone's app side (`AppSide.show_widget`; a failed read: `widget_failed`). The
control API's device entry then shows them under `widget`.

At most one read per phone is queued at a time (reloads that arrive while one waits are served by
it: it reads the newest values anyway), and at most `capacity` phones wait; past that a reload is
dropped and counted, so a dead server never grows memory. The URL and credential can be changed
while it runs (`retarget`), like the token reporter's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import trio

from simulator.devices import DeviceRegistry
from simulator.reporting import REQUEST_TIMEOUT, TRANSIENT, check_http_url, get_json
from simulator.validation import DevicePush

__all__ = ["WidgetReader", "WidgetReaderStats"]

log = logging.getLogger("lockstep.simulator.widgets")


@dataclass(slots=True)
class WidgetReaderStats:
    """How the widget reads went, for the control API."""

    read: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None


class WidgetReader:
    """Reads the server's metric values for phones whose widgets reloaded (module docstring)."""

    def __init__(
        self,
        registry: DeviceRegistry,
        api_base: str,
        *,
        bearer: str | None,
        wall_clock: Callable[[], float],
        capacity: int = 1000,
    ) -> None:
        check_http_url(api_base)
        self._registry = registry
        self.api_base = api_base.rstrip("/")
        self._bearer = bearer
        self._wall = wall_clock
        self._send, self._receive = trio.open_memory_channel[str](capacity)
        self._queued: set[str] = set()
        self._seen: dict[str, int] = {}  # phone -> widget reloads already answered with a read
        self.stats = WidgetReaderStats()

    def __repr__(self) -> str:
        return f"WidgetReader(api_base={self.api_base!r})"  # never the bearer credential

    def retarget(self, api_base: str, *, bearer: str | None) -> None:
        """Read from `api_base` with `bearer` from now on."""
        check_http_url(api_base)
        self.api_base = api_base.rstrip("/")
        self._bearer = bearer

    def on_accepted(self, push: DevicePush, device: str | None) -> None:
        """A push APNs accepted: queue a read when it reloaded `device`'s widgets."""
        if push.push_type != "widgets" or device is None:
            return
        phone = self._registry.devices.get(device)
        if phone is None:
            return
        reloads = phone.app.widget_reloads
        if reloads == self._seen.get(device, 0):
            return  # ignored or over the budget: the widgets did not reload
        self._seen[device] = reloads
        if device in self._queued:
            return  # the queued read will show the newest values
        try:
            self._send.send_nowait(device)
        except trio.WouldBlock:
            self.stats.dropped += 1
            return
        self._queued.add(device)

    async def run(self) -> None:
        """Serve queued reads until cancelled."""
        async for device in self._receive:
            self._queued.discard(device)
            await self._read(device)

    async def _read(self, device: str) -> None:
        url = f"{self.api_base}/devices/{quote(device, safe='')}/metrics"
        error: str | None = None
        metrics: dict[str, Any] = {}
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                status, body = await get_json(url, bearer=self._bearer)
        except TRANSIENT as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if status != 200:
                error = f"HTTP {status}"
            else:
                try:
                    answer = msgspec.json.decode(body)
                    metrics = {str(m["key"]): m["value"] for m in answer["metrics"]}
                except (msgspec.DecodeError, KeyError, TypeError) as exc:
                    error = f"unreadable answer: {exc}"
        phone = self._registry.devices.get(device)
        if phone is None:
            return
        if error is None:
            self.stats.read += 1
            phone.app.show_widget(metrics, self._wall())
            return
        self.stats.failed += 1
        self.stats.last_error = error
        phone.app.widget_failed(error, self._wall())
        log.warning("widget read for %s failed: %s", device, error)
