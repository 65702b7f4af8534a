"""The seam between the HTTP front and the service: what the routes may call, typed.

The HTTP layer never imports the service (`engine.server.service`): it depends on these
protocols, and `engine.server.serve` hands it the real `Service`, which satisfies them
structurally (mypy checks that where `create_app` is called). Tests hand it a fake
(`tests/helpers/fakeservice.py`) that satisfies them too.

Every argument and answer is a contract model (`engine.server.contract.models`): requests are
decoded and validated before a route calls the service, and answers are encoded as they are.
Parameters are positional-only because the routes pass them positionally: an implementation
may name them as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from engine.server.contract import models

__all__ = ["ApiService", "DeviceApi", "LiveApi", "PhonesView", "StatusApi"]


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

    def recent(self, limit: int, /) -> list[models.ActivityStatus]:
        """The `limit` most recently updated activities, newest first (`GET /api/dashboard`)."""
        ...


class PhonesView(Protocol):
    """Simulated iPhones to draw on the lock screens page (simulate mode's embedded simulator)."""

    def page_state(self) -> Mapping[str, Any]:
        """`{"now", "devices", "pushes"}`: the phones and the push log (simulator/webview.py)."""
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
    def status(self) -> StatusApi:
        """The delivery-status reads."""
        ...

    def health(self) -> Mapping[str, object]:
        """`GET /healthz`'s body; an explicit `"ok": False` makes the answer a 503."""
        ...

    def stats(self) -> Mapping[str, float]:
        """Gauges for `GET /metrics`."""
        ...
