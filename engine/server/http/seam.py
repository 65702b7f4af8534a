"""The seam between the HTTP front and the service: what the routes may call, typed.

The HTTP layer never imports the service (`engine.server.service`): it depends on these
protocols, and `engine.server.serve` hands it the real `Service`, which satisfies them
structurally (mypy checks that where `create_app` is called). Tests hand it a fake
(`tests/helpers/fakeservice.py`) that satisfies them too.

Every argument and answer is a contract model (`engine.server.contract.models`, and
`contract.push` for notifications and the badge): requests are
decoded and validated before a route calls the service, and answers are encoded as they are.
Parameters are positional-only because the routes pass them positionally: an implementation
may name them as it likes. Every call of a send route (what sends, and the reads of delivery
status and devices) takes the calling key's `KeyScope` last (`Context.key`, see
`http.endpoint`); it defaults to scope `all` for in-process callers.

In a cluster, a `Router` says where each call runs (`place`): here, on the node that owns its
partition (the app forwards it there), or nowhere yet (the app waits a little, then answers 503).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

from engine.server.contract import metrics, models, push
from engine.server.contract import webhooks as hooks
from engine.server.contract.scope import FULL_ACCESS, KeyScope

__all__ = [
    "LOCAL",
    "ApiService",
    "BadgeApi",
    "DeviceApi",
    "Forward",
    "Gather",
    "LiveApi",
    "Local",
    "MetricsApi",
    "NotificationApi",
    "PhonesView",
    "Placement",
    "RouteInfo",
    "Router",
    "StatusApi",
    "Unavailable",
    "WebhookApi",
]


class LiveApi(Protocol):
    """The Live Activities calls of the send routes (`/api/live-activity/...`)."""

    async def stream(
        self, stream_key: str, req: models.StreamRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.StreamPutResponse:
        """`PUT /api/live-activity/stream/{stream_key}`: start, update, skip or rotate."""
        ...

    async def end_stream(
        self,
        stream_key: str,
        req: models.StreamDeleteRequest | None,
        scope: KeyScope = FULL_ACCESS,
        /,
    ) -> models.StreamDeleteResponse:
        """`DELETE /api/live-activity/stream/{stream_key}`; `req` is None without a body."""
        ...

    async def start(
        self, req: models.StartRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.StartResponse:
        """`POST /api/live-activity/start`."""
        ...

    async def update(
        self, req: models.UpdateRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.UpdateResponse:
        """`POST /api/live-activity/update`."""
        ...

    async def end(
        self, req: models.EndRequest, scope: KeyScope = FULL_ACCESS, /
    ) -> models.EndResponse:
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

    def list(self, scope: KeyScope = FULL_ACCESS, /) -> Sequence[models.DeviceInfo]:
        """`GET /api/devices` (a send key): every registered device the key reaches."""
        ...


class MetricsApi(Protocol):
    """Widget metrics: a send key writes values, a device key reads them."""

    async def set_value(
        self, key: str, req: metrics.MetricValueRequest, /
    ) -> metrics.MetricValueResponse:
        """`POST /api/metrics/{key}/value` (a send key)."""
        ...

    def for_device(self, device_id: str, /) -> metrics.DeviceMetrics:
        """`GET /api/devices/{device_id}/metrics` (a device key): every current value."""
        ...


class StatusApi(Protocol):
    """The delivery-status reads (`GET /api/live-activity/...`, a send key)."""

    def activity(self, activity_id: str, scope: KeyScope = FULL_ACCESS, /) -> models.ActivityStatus:
        """`GET /api/live-activity/{activity_id}`."""
        ...

    def stream(self, stream_key: str, scope: KeyScope = FULL_ACCESS, /) -> models.ActivityStatus:
        """`GET /api/live-activity/stream/{stream_key}`."""
        ...

    def page(
        self, state: str | None, limit: int, after: str | None, scope: KeyScope = FULL_ACCESS, /
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


class WebhookApi(Protocol):
    """The inbound webhook routes' calls (`/api/webhooks/...`)."""

    async def receive(
        self, name: str, headers: Mapping[str, str], body: bytes, /
    ) -> hooks.WebhookReply:
        """`POST /api/webhooks/{name}` (authenticated by the webhook's secret, which the
        implementation checks): `headers` by lower-case name, `body` as received."""
        ...

    def deliveries(self, name: str, /) -> hooks.WebhookDeliveryList:
        """`GET /api/webhooks/{name}/deliveries` (a send key): the delivery log."""
        ...

    async def replay(self, name: str, delivery_id: str, /) -> hooks.WebhookReply:
        """`POST /api/webhooks/{name}/deliveries/{delivery_id}/replay` (a send key)."""
        ...


class NotificationApi(Protocol):
    """The push notification calls (`/api/push-notification`)."""

    async def send(
        self, req: push.PushRequest, key: KeyScope = FULL_ACCESS, /
    ) -> push.PushResponse:
        """`POST /api/push-notification`; `key` is the calling key's scope."""
        ...

    async def replace(
        self, notification_id: str, req: push.PushReplaceRequest, key: KeyScope = FULL_ACCESS, /
    ) -> push.PushReplaceResponse:
        """`PUT /api/push-notification/{notification_id}`; `key` is the calling key's scope."""
        ...


class BadgeApi(Protocol):
    """The app icon badge call (`/api/badge`)."""

    async def update(
        self, req: push.BadgeRequest, key: KeyScope = FULL_ACCESS, /
    ) -> push.BadgeResponse:
        """`POST /api/badge`; `key` is the calling key's scope."""
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
    def metrics(self) -> MetricsApi:
        """The widget metrics calls."""
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

    @property
    def webhooks(self) -> WebhookApi:
        """The inbound webhooks."""
        ...

    def health(self) -> Mapping[str, object]:
        """`GET /healthz`'s body; an explicit `"ok": False` makes the answer a 503."""
        ...

    def stats(self) -> Mapping[str, float]:
        """Gauges for `GET /metrics`."""
        ...


# -- where a call runs (a cluster of nodes) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Local:
    """Run the call on this node (use the `LOCAL` instance)."""


LOCAL: Final = Local()
"""The call runs here: this node owns its partition, or it has none."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Another node owns the call's partition: send the call to its internal `address`
    (`"host:port"`, `"[v6]:port"`)."""

    address: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No node can take the call now (its partition has no owner, or is changing hands): try
    again in `retry_after` seconds. `reason` is a short sentence for the answer's message."""

    retry_after: float
    reason: str


@dataclass(frozen=True, slots=True)
class Gather:
    """Every node answers for its own partitions (a listing): this node for those in `here`,
    the node at each address of `parts` for the partitions listed with it, and the answers are
    merged (`Endpoint.merge`). A node asked for partitions it does not hold refuses (503), so a
    partition changing hands meanwhile is never missing from the answer."""

    parts: tuple[tuple[str, tuple[int, ...]], ...]  # (address, the partitions it answers for)
    here: tuple[int, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """The other nodes asked."""
        return tuple(address for address, _ in self.parts)


Placement: TypeAlias = Local | Forward | Unavailable | Gather
"""What `Router.place` decides."""


class RouteInfo(Protocol):
    """What a router may know of the called route (`http.endpoint.Endpoint` is one; a router
    types its parameter with this protocol, as `http.endpoint` imports this module)."""

    @property
    def method(self) -> str:
        """`PUT`, `POST`, ..."""
        ...

    @property
    def template(self) -> str:
        """The route template, e.g. `/api/live-activity/stream/{stream_key}`."""
        ...

    @property
    def operation_id(self) -> str:
        """The OpenAPI operation id, e.g. `reconcileLiveActivityStream`."""
        ...


class Router(Protocol):
    """Decides which node runs each call (a cluster; a single node has no router)."""

    @property
    def node_id(self) -> str:
        """This node's id: forwarded requests carry it (`x-lockstep-forwarded`)."""
        ...

    def place(self, endpoint: RouteInfo, params: Mapping[str, str], body: bytes, /) -> Placement:
        """Where the call runs: `LOCAL`, `Forward(address)`, `Gather(addresses)` or
        `Unavailable(...)`. `params` are
        the path parameters, the declared query parameters and headers that were given;
        `body` is the request's body, read and size-checked but not decoded. Called after
        authentication, on the request's trio task: it must not block."""
        ...
