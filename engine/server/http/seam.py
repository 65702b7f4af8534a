"""The seam between the HTTP front and the service: what the routes may call, typed.

The HTTP layer never imports the service (`engine.server.service`): it depends on these
protocols, and `engine.server.serve` hands it the real `Service`, which satisfies them
structurally (mypy checks that where `create_app` is called). Tests hand it a fake
(`tests/helpers/fakeservice.py`) that satisfies them too.

Every argument and answer is a contract model (`engine.server.contract.models`, and
`contract.push` for notifications and the badge): requests are
decoded and validated before a route calls the service, and answers are encoded as they are.
Parameters are positional-only because the routes pass them positionally: an implementation
may name them as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from engine.server.contract import models, push

__all__ = ["ApiService", "BadgeApi", "DeviceApi", "LiveApi", "NotificationApi", "StatusApi"]


class LiveApi(Protocol):
    """The Live Activities calls of the send routes (`/api/live-activity/...`)."""

    async def stream(
        self, stream_key: str, req: models.StreamRequest, /
    ) -> models.StreamPutResponse:
        """`PUT /api/live-activity/stream/{stream_key}`: start, update, skip or rotate."""
        ...

    async def end_stream(
        self, stream_key: str, req: models.StreamDeleteRequest | None, /
    ) -> models.StreamDeleteResponse:
        """`DELETE /api/live-activity/stream/{stream_key}`; `req` is None without a body."""
        ...

    async def start(self, req: models.StartRequest, /) -> models.StartResponse:
        """`POST /api/live-activity/start`."""
        ...

    async def update(self, req: models.UpdateRequest, /) -> models.UpdateResponse:
        """`POST /api/live-activity/update`."""
        ...

    async def end(self, req: models.EndRequest, /) -> models.EndResponse:
        """`POST /api/live-activity/end`."""
        ...


class DeviceApi(Protocol):
    """The device routes' calls (`/api/devices`, `/api/activity-tokens`)."""

    async def register(
        self, device_id: str, registration: models.DeviceRegistration, /
    ) -> models.DeviceInfo:
        """`PUT /api/devices/{device_id}` (a device key)."""
        ...

    async def unregister(self, device_id: str, /) -> models.DeviceInfo:
        """`DELETE /api/devices/{device_id}` (a device key)."""
        ...

    async def report_token(
        self, report: models.ActivityTokenReport, /
    ) -> models.ActivityTokenAccepted:
        """`POST /api/activity-tokens`: an activity's update token (apns.md §6, "Tokens")."""
        ...

    def list(self) -> Sequence[models.DeviceInfo]:
        """`GET /api/devices` (a send key): every registered device."""
        ...


class StatusApi(Protocol):
    """The delivery-status reads (`GET /api/live-activity/...`, a send key)."""

    def activity(self, activity_id: str, /) -> models.ActivityStatus:
        """`GET /api/live-activity/{activity_id}`."""
        ...

    def stream(self, stream_key: str, /) -> models.ActivityStatus:
        """`GET /api/live-activity/stream/{stream_key}`."""
        ...

    def page(
        self, state: str | None, limit: int, after: str | None, /
    ) -> models.ActivityStatusList:
        """`GET /api/live-activities?state=&limit=&after=`."""
        ...


class NotificationApi(Protocol):
    """The push notification calls (`/api/push-notification`)."""

    async def send(self, req: push.PushRequest, /) -> push.PushResponse:
        """`POST /api/push-notification`."""
        ...

    async def replace(
        self, notification_id: str, req: push.PushReplaceRequest, /
    ) -> push.PushReplaceResponse:
        """`PUT /api/push-notification/{notification_id}`."""
        ...


class BadgeApi(Protocol):
    """The app icon badge call (`/api/badge`)."""

    async def update(self, req: push.BadgeRequest, /) -> push.BadgeResponse:
        """`POST /api/badge`."""
        ...


class ApiService(Protocol):
    """Everything the HTTP API calls on the service.

    `live` and `devices` are read-only here: the routes only call through them, so an
    implementation may hold any subtype (a protocol attribute that could be assigned would have
    to match exactly).
    """

    @property
    def live(self) -> LiveApi:
        """The Live Activities calls."""
        ...

    @property
    def devices(self) -> DeviceApi:
        """The device calls."""
        ...

    @property
    def notifications(self) -> NotificationApi:
        """The push notification calls."""
        ...

    @property
    def badge(self) -> BadgeApi:
        """The app icon badge call."""
        ...

    @property
    def status(self) -> StatusApi:
        """The delivery-status reads."""
        ...

    def health(self) -> Mapping[str, object]:
        """`GET /healthz`'s body; an explicit `"ok": False` makes the answer a 503."""
        ...

    def stats(self) -> Mapping[str, float]:
        """Gauges for `GET /metrics`."""
        ...
