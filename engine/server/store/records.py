"""The rows the store keeps, the write operations on them, and a snapshot of all of them.

Five tables, one row type each:

- `DeviceRow`: a registered device, its push-to-start token, its app (notification) token and its
  widget push token.
- `ActivityRow`: a Live Activity and its latest pushed content-state (apns.md §6).
- `RecipientRow`: one activity on one device, keyed `(activity_id, device_id)`: the start token
  used, the update token the device reported, and how far delivery got.
- `StreamRow`: a stream key and the activity currently shown for it (`None` once ended).
- `MetricRow`: a widget metric's latest value and the time it was measured.
- `DeliveryRow`: one delivery to an inbound webhook, keyed `(webhook, delivery_id)`: the log
  `GET /api/webhooks/{name}/deliveries` shows, what a redelivery is checked against, and the body
  a replay runs again.
- `NotificationRow`: a push notification as last sent (or replaced), and the devices it went to.

Rows are mutable: the service keeps them in memory and edits them in place; a write copies the
row's values when it is called, so later edits never leak into an earlier write.
Rows hold only plain data (str, numbers, lists, dicts), never references back to other objects, so
they cannot form reference cycles and are created with `gc=False` (cheaper to allocate, invisible to
the cycle collector).

Writes are expressed as ops: `PutDevice`, `PutActivity`, `PutRecipient`, `PutStream`, `PutMetric`,
`PutNotification` insert or replace a whole row; `DeleteDevice` removes a device;
`DeleteActivity` removes an activity and all its recipients; `DeleteNotification` a
notification; `PutDelivery` and `DeleteDelivery` keep a webhook's delivery log. There is no
delete for a stream: an idle stream is `StreamRow(key, None)`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec


class DeviceRow(msgspec.Struct, kw_only=True, gc=False):
    """A registered device (table `devices`, key `device_id`)."""

    device_id: str
    name: str | None
    push_to_start_token: str
    channels: list[str]
    registered_at: float
    # The app's widget token (iOS 26 `widgets` pushes); None until the app registers one.
    widget_token: str | None = None
    app_token: str | None = None  # the app's device token, for notifications and the badge


class ActivityRow(msgspec.Struct, kw_only=True, gc=False):
    """A Live Activity (table `activities`, key `activity_id`, indexed by `stream_key`).

    `state` is the APNs content-state as pushed, kept encoded (`msgspec.Raw` JSON: a few hundred
    bytes where the decoded dict costs about a kilobyte; `pack_state` / `unpack_state`);
    `alert` the `{title, body}` of the latest alert;
    `version` grows by one on every change, so a recipient's `sent_version` tells what it has.
    `dismissal_date` is unix seconds (apns.md §6).
    """

    activity_id: str
    stream_key: str | None
    type: str
    state: msgspec.Raw
    alert: dict[str, Any] | None
    version: int
    ended: bool
    started_at: float
    updated_at: float
    ended_at: float | None
    dismissal_date: int | None
    update_count: int
    channels: list[str]
    metadata: dict[str, Any] | None
    tags: list[str] | None


_state_encoder = msgspec.json.Encoder()


def pack_state(state: dict[str, Any]) -> msgspec.Raw:
    """A content-state dict as the encoded JSON an `ActivityRow` keeps."""
    return msgspec.Raw(_state_encoder.encode(state))


def unpack_state(raw: msgspec.Raw) -> dict[str, Any]:
    """The content-state dict of an `ActivityRow`."""
    value = msgspec.json.decode(raw)
    if not isinstance(value, dict):
        raise ValueError("an activity's state must be a JSON object")
    return value


class RecipientRow(msgspec.Struct, kw_only=True, gc=False):
    """One activity on one device (table `recipients`, key `(activity_id, device_id)`).

    `started` means APNs accepted the push-to-start; `sent_version` is the highest activity
    version APNs accepted for this device; `dead` means nothing more is sent to it.
    """

    activity_id: str
    device_id: str
    start_token: str
    update_token: str | None
    started: bool
    sent_version: int
    dead: bool


class StreamRow(msgspec.Struct, kw_only=True, gc=False):
    """A stream key and its current activity, `None` when none is live (table `streams`)."""

    stream_key: str
    activity_id: str | None


class MetricRow(msgspec.Struct, kw_only=True, gc=False):
    """A widget metric (table `metrics`, key `key`): its latest value, as the sender gave it (a
    number or a string), `timestamp` when it was measured and `updated_at` when it was stored
    (unix seconds)."""

    key: str
    value: int | float | str
    timestamp: float
    updated_at: float


class DeliveryRow(msgspec.Struct, kw_only=True, gc=False):
    """One delivery to an inbound webhook (table `deliveries`, key `(webhook, delivery_id)`).

    `delivery_id` is GitHub's `X-GitHub-Delivery` (or a generic sender's `X-Delivery-Id`, else one
    made up); `status` and `outcome` are the latest answer (`applied`, `ignored`, `rejected`);
    `streams` the stream keys it changed; `body` the raw body as received (UTF-8 text), so a replay
    runs exactly what came in; `replays` how often it was replayed; `seq` orders a webhook's log
    (it grows with each new delivery; a replay keeps its place).
    """

    webhook: str
    delivery_id: str
    seq: int
    received_at: float
    event: str
    status: int
    outcome: str
    message: str
    streams: list[str]
    body: str
    replays: int


class NotificationRow(msgspec.Struct, kw_only=True, gc=False):
    """A push notification (table `notifications`, key `notification_id`).

    `content` holds the request's visible fields as last sent (title, message, subtitle, icon,
    media, redirection, actions, payload, badge, sound, interruption_level); `devices` the ids of
    the devices it was sent to, which a replacement goes to again; `version` grows by one on every
    replacement; `settled` maps a device id to the newest version whose push to it settled for
    good (APNs accepted it, or refused it in a way no retry changes): what is behind is pushed
    again after a restart. `metadata` and `tags` are server-side only.
    """

    notification_id: str
    content: dict[str, Any]
    channels: list[str]
    devices: list[str]
    metadata: dict[str, Any] | None
    tags: list[str] | None
    version: int
    created_at: float
    updated_at: float
    settled: dict[str, int] = msgspec.field(default_factory=dict)


class PutDevice(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace a device row."""

    row: DeviceRow


class DeleteDevice(msgspec.Struct, frozen=True, gc=False):
    """Remove a device row (its recipients stay: the service decides what happens to them)."""

    device_id: str


class PutActivity(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace an activity row."""

    row: ActivityRow


class DeleteActivity(msgspec.Struct, frozen=True, gc=False):
    """Remove an activity row and every recipient row of that activity."""

    activity_id: str


class PutRecipient(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace a recipient row."""

    row: RecipientRow


class PutStream(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace a stream row."""

    row: StreamRow


class PutMetric(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace a metric row."""

    row: MetricRow


class PutDelivery(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace a webhook delivery row."""

    row: DeliveryRow


class DeleteDelivery(msgspec.Struct, frozen=True, gc=False):
    """Remove a webhook delivery row (the log keeps the newest deliveries only)."""

    webhook: str
    delivery_id: str


class PutNotification(msgspec.Struct, frozen=True, gc=False):
    """Insert or replace a notification row."""

    row: NotificationRow


class DeleteNotification(msgspec.Struct, frozen=True, gc=False):
    """Remove a notification row."""

    notification_id: str


class Fence(msgspec.Struct, frozen=True, gc=False):
    """Apply the rest of the batch only while `owner` still holds `partition` under `epoch`.

    Written first in a batch by a cluster node (engine/server/cluster): the database checks the
    lease row inside the same transaction and fails the whole batch when the partition moved on,
    so a node that lost a partition can never overwrite what its new owner wrote. Only the
    PostgreSQL store, where the lease table lives, accepts it.
    """

    partition: int
    epoch: int
    owner: str


Op: TypeAlias = (
    Fence
    | PutDevice
    | DeleteDevice
    | PutActivity
    | DeleteActivity
    | PutRecipient
    | PutStream
    | PutMetric
    | PutDelivery
    | DeleteDelivery
    | PutNotification
    | DeleteNotification
)
"""One write operation; `Store.write` applies a sequence of them atomically."""


class Snapshot(msgspec.Struct, kw_only=True, gc=False):
    """Every row of the store, each list in primary-key order."""

    devices: list[DeviceRow] = msgspec.field(default_factory=list)
    activities: list[ActivityRow] = msgspec.field(default_factory=list)
    recipients: list[RecipientRow] = msgspec.field(default_factory=list)
    streams: list[StreamRow] = msgspec.field(default_factory=list)
    metrics: list[MetricRow] = msgspec.field(default_factory=list)
    deliveries: list[DeliveryRow] = msgspec.field(default_factory=list)
    notifications: list[NotificationRow] = msgspec.field(default_factory=list)


__all__ = [
    "ActivityRow",
    "DeleteActivity",
    "DeleteDelivery",
    "DeleteDevice",
    "DeleteNotification",
    "DeliveryRow",
    "DeviceRow",
    "Fence",
    "MetricRow",
    "NotificationRow",
    "Op",
    "PutActivity",
    "PutDelivery",
    "PutDevice",
    "PutMetric",
    "PutNotification",
    "PutRecipient",
    "PutStream",
    "RecipientRow",
    "Snapshot",
    "StreamRow",
]
