"""A fake service behind the HTTP API's seam, and request bodies it answers.

`FakeService` satisfies `engine.server.http.seam.ApiService` (mypy checks it wherever a test
hands one to `create_app`): it records every call as `(name, *arguments)` and answers with fixed
contract models, or raises `fail` when a test sets it. The calling key's scope of each send
route's call (Live Activities, status, device list) goes to `scopes`, in the same order. The
tests of the ASGI app, of the lean HTTP/1.1 server and of hypercorn share it with the keys and
bodies below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.server.contract import errors, metrics, models, push
from engine.server.contract import webhooks as hooks
from engine.server.contract.scope import FULL_ACCESS, KeyScope

__all__ = [
    "ACTIVITY_BODY",
    "DEVICE_BODY",
    "DEVICE_KEY",
    "REPORT_BODY",
    "SEND_KEY",
    "START_BODY",
    "STREAM_BODY",
    "TOKEN",
    "TS",
    "FakeBadge",
    "FakeDevices",
    "FakeLive",
    "FakeMetrics",
    "FakeNotifications",
    "FakeService",
    "FakeWebhooks",
    "device_info",
]

SEND_KEY = "send-key-0123456789"
DEVICE_KEY = "device-key-9876543210"
TS = "2025-01-01T12:00:00.000Z"
"""The timestamp of every answer."""
TOKEN = "ab" * 16

STREAM_BODY = {"content_state": {"title": "Deploy", "type": "progress", "percentage": 40}}
START_BODY = {"content_state": {"title": "Build", "type": "value", "value": "3 of 5"}}
ACTIVITY_BODY = {"activity_id": "act-1", "content_state": {"title": "Build"}}
DEVICE_BODY = {"push_to_start_token": TOKEN, "name": "Phone", "channels": ["ops"]}
REPORT_BODY = {"device_id": "iphone-1", "activity_id": "act-1", "activity_token": TOKEN}


def device_info(device_id: str) -> models.DeviceInfo:
    """What the fake answers about any device."""
    return models.DeviceInfo(
        device_id=device_id,
        name=None,
        channels=[],
        push_to_start_token_suffix=TOKEN[-8:],
        registered_at=TS,
    )


@dataclass
class FakeService:
    """Records every call; raises `fail` (if set) instead of answering."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    scopes: list[KeyScope] = field(default_factory=list)  # the key scope of each send-route call
    fail: BaseException | None = None
    healthy: bool = True
    # Set in `__post_init__`; they point back here, so they stay out of repr and ==.
    live: FakeLive = field(init=False, repr=False, compare=False)
    devices: FakeDevices = field(init=False, repr=False, compare=False)
    status: FakeStatus = field(init=False, repr=False, compare=False)
    metrics: FakeMetrics = field(init=False, repr=False, compare=False)
    webhooks: FakeWebhooks = field(init=False, repr=False, compare=False)
    notifications: FakeNotifications = field(init=False, repr=False, compare=False)
    badge: FakeBadge = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.live = FakeLive(self)
        self.devices = FakeDevices(self)
        self.status = FakeStatus(self)
        self.metrics = FakeMetrics(self)
        self.webhooks = FakeWebhooks(self)
        self.notifications = FakeNotifications(self)
        self.badge = FakeBadge(self)

    def called(self, *call: Any) -> None:
        """Record `call`, then raise `fail` if a test set one."""
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def health(self) -> dict[str, Any]:
        """`ok` is `healthy`."""
        return {"ok": self.healthy, "devices": 2}

    def stats(self) -> dict[str, float]:
        """Two gauges and a value that is not a number (the metrics must skip it)."""
        return {"devices": 2, "recipients_pending": 5, "not-a-number": "x"}  # type: ignore[dict-item]


@dataclass
class FakeLive:
    """The Live Activities calls: every activity is `act-1`."""

    svc: FakeService

    async def stream(
        self, key: str, req: models.StreamRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.StreamPutResponse:
        """Always `started`."""
        self.svc.scopes.append(scope)
        self.svc.called("stream", key, req)
        return models.StreamPutResponse(
            success=True, operation="started", stream_key=key, activity_id="act-1", timestamp=TS
        )

    async def end_stream(
        self, key: str, req: models.StreamDeleteRequest | None, scope: KeyScope = FULL_ACCESS, /
    ) -> models.StreamDeleteResponse:
        """Always `ended`."""
        self.svc.scopes.append(scope)
        self.svc.called("end_stream", key, req)
        return models.StreamDeleteResponse(
            success=True, operation="ended", stream_key=key, timestamp=TS
        )

    async def start(
        self, req: models.StartRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.StartResponse:
        """Started as `act-1`."""
        self.svc.scopes.append(scope)
        self.svc.called("start", req)
        return models.StartResponse(success=True, activity_id="act-1", timestamp=TS)

    async def update(
        self, req: models.UpdateRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.UpdateResponse:
        """Updated."""
        self.svc.scopes.append(scope)
        self.svc.called("update", req)
        return models.UpdateResponse(success=True, activity_id=req.activity_id, timestamp=TS)

    async def end(
        self, req: models.EndRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.EndResponse:
        """Ended."""
        self.svc.scopes.append(scope)
        self.svc.called("end", req)
        return models.EndResponse(success=True, activity_id=req.activity_id, timestamp=TS)


@dataclass
class FakeDevices:
    """The device calls: one device, `iphone-1`."""

    svc: FakeService

    async def register(self, device_id: str, reg: models.DeviceRegistration) -> models.DeviceInfo:
        """Registered."""
        self.svc.called("register", device_id, reg)
        return device_info(device_id)

    async def unregister(self, device_id: str) -> models.DeviceInfo:
        """Unregistered."""
        self.svc.called("unregister", device_id)
        return device_info(device_id)

    async def report_token(
        self, report: models.ActivityTokenReport
    ) -> models.ActivityTokenAccepted:
        """Accepted, one push released."""
        self.svc.called("report_token", report)
        return models.ActivityTokenAccepted(
            success=True, activity_id=report.activity_id, device_id=report.device_id, released=1
        )

    def list(self, scope: KeyScope = FULL_ACCESS, /) -> list[models.DeviceInfo]:
        """`iphone-1`."""
        self.svc.scopes.append(scope)
        self.svc.called("list")
        return [device_info("iphone-1")]


@dataclass
class FakeMetrics:
    """The widget metrics calls: every value is stored; `iphone-1` is the one device."""

    svc: FakeService

    async def set_value(
        self, key: str, req: metrics.MetricValueRequest
    ) -> metrics.MetricValueResponse:
        """Stored, one device told."""
        self.svc.called("set_metric", key, req)
        return metrics.MetricValueResponse(
            success=True, key=key, value=req.value, timestamp=TS, stored=True, devices_targeted=1
        )

    def for_device(self, device_id: str) -> metrics.DeviceMetrics:
        """Two metrics; 404 for any device but `iphone-1`."""
        self.svc.called("device_metrics", device_id)
        if device_id != "iphone-1":
            raise errors.NotFound(f"no device with id {device_id!r}")
        return metrics.DeviceMetrics(
            device_id=device_id,
            metrics=[
                metrics.MetricInfo(key="revenue", value=12.5, timestamp=TS, updated_at=TS),
                metrics.MetricInfo(key="status", value="green", timestamp=TS, updated_at=TS),
            ],
        )


@dataclass
class FakeNotifications:
    """The notification calls: every notification is `pn_1`, one device is reached."""

    svc: FakeService

    async def send(
        self, req: push.PushRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> push.PushResponse:
        """Sent to one device."""
        self.svc.scopes.append(scope)
        self.svc.called("push", req)
        return push.PushResponse(
            success=True, notification_id="pn_1", devices_notified=1, timestamp=TS
        )

    async def replace(
        self, notification_id: str, req: push.PushReplaceRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> push.PushReplaceResponse:
        """Replaced on one device."""
        self.svc.scopes.append(scope)
        self.svc.called("replace", notification_id, req)
        return push.PushReplaceResponse(
            success=True, notification_id=notification_id, devices_notified=1, timestamp=TS
        )


@dataclass
class FakeBadge:
    """The badge call: set on one device."""

    svc: FakeService

    async def update(
        self, req: push.BadgeRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> push.BadgeResponse:
        """Set on one device."""
        self.svc.scopes.append(scope)
        self.svc.called("badge", req)
        return push.BadgeResponse(
            success=True,
            badge=req.badge,
            devices_updated=1,
            users_updated=1,
            effective_channel_slugs=[],
            timestamp=TS,
        )


@dataclass
class FakeStatus:
    """The status reads: `act-1` (and stream `s1`) exist, with one live device."""

    svc: FakeService

    def activity(self, activity_id: str, scope: KeyScope = FULL_ACCESS, /) -> models.ActivityStatus:
        """`act-1`, or 404."""
        self.svc.scopes.append(scope)
        self.svc.called("status", activity_id)
        if activity_id != "act-1":
            raise errors.NotFound(f"no activity with id {activity_id!r}")
        return sample_status()

    def stream(self, stream_key: str, scope: KeyScope = FULL_ACCESS, /) -> models.ActivityStatus:
        """Stream `s1`, or 404."""
        self.svc.scopes.append(scope)
        self.svc.called("stream_status", stream_key)
        if stream_key != "s1":
            raise errors.NotFound(f"no stream with key {stream_key!r}")
        return sample_status(stream_key)

    def page(
        self, state: str | None, limit: int, after: str | None, scope: KeyScope = FULL_ACCESS, /
    ) -> models.ActivityStatusList:
        """One page holding `act-1`; the arguments are recorded."""
        self.svc.scopes.append(scope)
        self.svc.called("status_page", state, limit, after)
        return models.ActivityStatusList(activities=[sample_status()], next="act-1")

    def recent(self, limit: int) -> list[models.ActivityStatus]:
        """`act-1` alone; the limit is recorded."""
        self.svc.called("status_recent", limit)
        return [sample_status()]


@dataclass
class FakeWebhooks:
    """The inbound webhooks: one, `gh`, whose log holds delivery `d-1`; any delivery applies."""

    svc: FakeService

    async def receive(
        self, name: str, headers: Mapping[str, str], body: bytes
    ) -> hooks.WebhookReply:
        """Applied (the headers and body are recorded as given)."""
        self.svc.called("webhook", name, dict(headers), body)
        return _hook_reply(name, headers.get("x-github-delivery", "d-1"))

    def deliveries(self, name: str) -> hooks.WebhookDeliveryList:
        """`d-1`, or 404 for another webhook."""
        self.svc.called("webhook_deliveries", name)
        if name != "gh":
            raise errors.NotFound(f"no webhook named {name!r} is configured")
        entry = hooks.WebhookDelivery(
            delivery_id="d-1", event="ping", received_at=TS, status=200, outcome="ignored",
            message="pong", streams=[], replays=0,
        )  # fmt: skip
        return hooks.WebhookDeliveryList(webhook=name, deliveries=[entry])

    async def replay(self, name: str, delivery_id: str) -> hooks.WebhookReply:
        """Applied again."""
        self.svc.called("webhook_replay", name, delivery_id)
        return _hook_reply(name, delivery_id)


def _hook_reply(name: str, delivery_id: str) -> hooks.WebhookReply:
    return hooks.WebhookReply(
        success=True, webhook=name, delivery_id=delivery_id, event="ping", outcome="ignored",
        message="pong", streams=[], timestamp=TS,
    )  # fmt: skip


def sample_status(stream_key: str | None = None) -> models.ActivityStatus:
    """The status of `act-1`: version 1, one live device."""
    device = models.RecipientStatus(device_id="d1", state="live", confirmed_version=1, current=True)
    return models.ActivityStatus(
        activity_id="act-1",
        stream_key=stream_key,
        version=1,
        ended=False,
        updated_at=TS,
        devices=[device],
    )
