"""Widget metrics: keep each metric's latest value durably and tell the devices' widgets.

- `set_value(key, request)` (`POST /api/metrics/{key}/value`): the value is stored with the time
  it was measured (the request's `timestamp`, else now). A value measured before the one kept is
  not stored (an older timestamp never overwrites a newer value: a delayed retry or a slow
  sender cannot bring an old number back); with an equal timestamp the later call wins. Once the
  new value is durable, every device with a widget token owes a widget reload
  (`widgets.WidgetPusher`: budgeted, at most one pending push per device). A value equal to the
  one kept, with the same timestamp (a retried call), changes nothing and pushes nothing.
- `for_device(device_id)` (`GET /api/devices/{device_id}/metrics`, a device key): every metric's
  current value, which is what the app's widget extension reads when the push reloads it.

Calls for one key are serialized (the registry's keyed locks), so two concurrent values are
compared and stored one after the other. A call whose write fails changes nothing in memory
(`undo`), pushes nothing and answers 503 `storage_unavailable`.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.server.contract import errors
from engine.server.contract.metrics import (
    DeviceMetrics,
    MetricInfo,
    MetricValueRequest,
    MetricValueResponse,
    check_metric_key,
    check_metric_request,
    measured_at,
)
from engine.server.contract.responses import iso
from engine.server.service.state import Registry
from engine.server.service.undo import StoreGuard, Undo
from engine.server.service.widgets import WidgetPusher
from engine.server.store.records import MetricRow, PutMetric

__all__ = ["Metrics", "metric_info"]


def metric_info(row: MetricRow) -> MetricInfo:
    """The public view of a metric."""
    return MetricInfo(
        key=row.key, value=row.value, timestamp=iso(row.timestamp), updated_at=iso(row.updated_at)
    )


def _same(row: MetricRow, value: object, at: float) -> bool:
    """The row already holds exactly this value at this time (`1 == 1.0 == True` in Python)."""
    return row.timestamp == at and type(row.value) is type(value) and row.value == value


class Metrics:
    """set_value / for_device (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        store: StoreGuard,
        widgets: WidgetPusher,
        *,
        wall_clock: Callable[[], float],
    ) -> None:
        self._reg = registry
        self._store = store
        self._widgets = widgets
        self._wall = wall_clock

    async def set_value(self, key: str, req: MetricValueRequest) -> MetricValueResponse:
        """Store the metric's value unless a newer one is kept; then reload the widgets."""
        check_metric_key(key)
        check_metric_request(req)
        now = self._wall()
        at = measured_at(req, now)
        async with self._reg.locks.hold("metric:" + key):
            old = self._reg.metrics.get(key)
            if old is not None and (at < old.timestamp or _same(old, req.value, at)):
                return self._kept(old, at)
            row = MetricRow(key=key, value=req.value, timestamp=at, updated_at=now)
            undo = Undo()
            undo.entry(self._reg.metrics, key)
            self._reg.metrics[key] = row
            await self._store.commit([PutMetric(row)], undo)
        targeted = self._widgets.notify(self._reg.devices.values())
        return MetricValueResponse(
            success=True,
            key=key,
            value=row.value,
            timestamp=iso(row.timestamp),
            stored=True,
            devices_targeted=targeted,
        )

    def _kept(self, old: MetricRow, at: float) -> MetricValueResponse:
        if old.timestamp == at:
            message = "the same value with the same timestamp is already stored"
        else:
            message = (
                f"a newer value (measured {iso(old.timestamp)}) is kept; this one was measured "
                f"{iso(at)}"
            )
        return MetricValueResponse(
            success=True,
            key=old.key,
            value=old.value,
            timestamp=iso(old.timestamp),
            stored=old.timestamp == at,
            message=message,
        )

    def for_device(self, device_id: str) -> DeviceMetrics:
        """Every metric's current value, by key, for a registered device's widgets."""
        if device_id not in self._reg.devices:
            raise errors.NotFound(f"no device with id {device_id!r}")
        rows = sorted(self._reg.metrics.values(), key=lambda r: r.key)
        return DeviceMetrics(device_id=device_id, metrics=[metric_info(r) for r in rows])
