"""The API's route table: one `Endpoint` per (method, route), with its handler.

`http.app` routes requests with it and `http.openapi` documents it, so the served routes and the
OpenAPI document cannot drift apart. Handlers decode the body with `contract.models.decode`
(400 on any violation) and call the service through the typed seam (`http.seam.ApiService`,
reached as `ctx.service`); errors are `ApiError`s that the app turns into JSON answers. Every
send route (what sends, and the status and device reads) hands the service `ctx.key`, the
calling key's scope (see `http.endpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from engine.server.contract import errors, metrics, models, push
from engine.server.contract import webhooks as hooks
from engine.server.http.endpoint import (
    Access,
    Context,
    Endpoint,
    Handler,
    HeaderParam,
    QueryParam,
    Reply,
)
from engine.server.http.prom import CONTENT_TYPE as PROM_CONTENT_TYPE
from webui import asset_at, page_headers

__all__ = ["DASHBOARD_ACTIVITIES", "ENDPOINTS", "Dashboard", "DeviceList"]

DASHBOARD_ACTIVITIES: Final = 50
"""How many of the most recently updated activities `GET /api/dashboard` carries."""


class DeviceList(msgspec.Struct):
    """`GET /api/devices`: every registered device."""

    devices: list[models.DeviceInfo]


class Dashboard(msgspec.Struct):
    """`GET /api/dashboard`: what the lock screens page draws (a Lockstep addition)."""

    now: float  # the server's wall time (unix seconds): the page's timers count from it
    source: str  # "server" here; "simulator" on the simulator's control port
    devices: list[dict[str, Any]]  # the simulated iPhones (simulate mode; else empty)
    pushes: list[dict[str, Any]]  # the simulator's newest pushes, oldest first
    activities: list[models.ActivityStatus] | None  # newest first; null on the simulator


# -- handlers ---------------------------------------------------------------------------------


def _json(value: object, status: int = 200) -> Reply:
    return Reply(status, msgspec.json.encode(value))


async def _stream_put(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    key = params["stream_key"]
    models.check_stream_key(key)
    req = models.decode(models.StreamRequest, body)
    return _json(await ctx.service.live.stream(key, req, ctx.key))


async def _stream_delete(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    key = params["stream_key"]
    models.check_stream_key(key)
    req = models.decode(models.StreamDeleteRequest, body) if body.strip() else None
    return _json(await ctx.service.live.end_stream(key, req, ctx.key))


async def _start(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    req = models.decode(models.StartRequest, body)
    return _json(await ctx.service.live.start(req, ctx.key))


async def _update(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    req = models.decode(models.UpdateRequest, body)
    return _json(await ctx.service.live.update(req, ctx.key))


async def _end(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    req = models.decode(models.EndRequest, body)
    return _json(await ctx.service.live.end(req, ctx.key))


async def _status(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(ctx.service.status.activity(params["activity_id"], ctx.key))


async def _stream_status(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    key = params["stream_key"]
    models.check_stream_key(key)
    return _json(ctx.service.status.stream(key, ctx.key))


async def _status_page(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise errors.BadRequest("limit must be an integer", field="limit") from None
    page = ctx.service.status.page(params.get("state"), limit, params.get("after"), ctx.key)
    return _json(page)


def _newest(statuses: Iterable[models.ActivityStatus]) -> dict[str, models.ActivityStatus]:
    """Each activity once, at its highest version: one listed by two nodes (its partition
    moved between their reads) is shown as the newer knows it."""
    out: dict[str, models.ActivityStatus] = {}
    for status in statuses:
        seen = out.get(status.activity_id)
        if seen is None or status.version > seen.version:
            out[status.activity_id] = status
    return out


def _merge_status_pages(bodies: Sequence[bytes], params: Mapping[str, str]) -> bytes:
    """One page from every node's page of the same listing: each holds its node's first
    `limit` matches after `after`, so the first `limit` of them all, by id, are the page."""
    pages = [msgspec.json.decode(b, type=models.ActivityStatusList) for b in bodies]
    limit = int(params.get("limit", "100"))  # the local part already refused a bad one
    unique = _newest(a for p in pages for a in p.activities)
    every = [unique[i] for i in sorted(unique)]
    more = len(every) > limit or any(p.next is not None for p in pages)
    page = every[:limit]
    last = page[-1].activity_id if more and page else None
    return msgspec.json.encode(models.ActivityStatusList(activities=page, next=last))


def _merge_dashboards(bodies: Sequence[bytes], params: Mapping[str, str]) -> bytes:
    """This node's dashboard (the first body) with the newest activities of every node's: the
    phones and pushes are the same simulator's everywhere, the activities each node's own."""
    boards = [msgspec.json.decode(b, type=Dashboard) for b in bodies]
    every = list(_newest(a for b in boards for a in (b.activities or ())).values())
    # `updated_at` is ISO-8601 UTC with milliseconds: its text sorts as its time does.
    every.sort(key=lambda a: a.activity_id)
    every.sort(key=lambda a: a.updated_at, reverse=True)
    board = boards[0]
    board.activities = every[:DASHBOARD_ACTIVITIES]
    return msgspec.json.encode(board)


async def _devices_list(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(DeviceList(devices=list(ctx.service.devices.list(ctx.key))))


async def _device_put(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    reg = models.decode(models.DeviceRegistration, body)
    return _json(await ctx.service.devices.register(params["device_id"], reg))


async def _device_delete(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(await ctx.service.devices.unregister(params["device_id"]))


async def _token_report(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    report = models.decode(models.ActivityTokenReport, body)
    return _json(await ctx.service.devices.report_token(report))


def _scope_all(ctx: Context, what: str) -> None:
    """403 for a channel-restricted key: `what` is not confined to channels."""
    if ctx.key.restricted:
        raise errors.Forbidden(
            f"{what} needs an API key of scope all; API key {ctx.key.name!r} may only reach "
            f"channels {ctx.key.describe()}"
        )


async def _metric_value(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    _scope_all(ctx, "a widget metric reaches every device's widgets: it")
    key = metrics.check_metric_key(params["key"])
    req = models.decode(metrics.MetricValueRequest, body)
    return _json(await ctx.service.metrics.set_value(key, req))


async def _device_metrics(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(ctx.service.metrics.for_device(params["device_id"]))


async def _webhook(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    headers = {h.name: params[h.name] for h in _WEBHOOK_HEADERS if h.name in params}
    return _json(await ctx.service.webhooks.receive(params["name"], headers, body))


async def _webhook_deliveries(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    _scope_all(ctx, "a webhook's delivery log")
    return _json(ctx.service.webhooks.deliveries(params["name"]))


async def _webhook_replay(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    _scope_all(ctx, "a webhook replay")
    return _json(await ctx.service.webhooks.replay(params["name"], params["delivery_id"]))


async def _push_send(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    req = models.decode(push.PushRequest, body)
    return _json(await ctx.service.notifications.send(req, ctx.key))


async def _push_replace(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    req = models.decode(push.PushReplaceRequest, body)
    notification_id = params["notification_id"]
    return _json(await ctx.service.notifications.replace(notification_id, req, ctx.key))


async def _badge(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    req = models.decode(push.BadgeRequest, body)
    return _json(await ctx.service.badge.update(req, ctx.key))


async def _dashboard(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    _scope_all(ctx, "the lock screens page (every phone, every activity)")
    phones = dict(ctx.phones.page_state()) if ctx.phones is not None else {}
    return _json(
        Dashboard(
            now=float(phones.get("now", time.time())),
            source="server",
            devices=list(phones.get("devices", ())),
            pushes=list(phones.get("pushes", ())),
            activities=ctx.service.status.recent(DASHBOARD_ACTIVITIES),
        )
    )


def _page_file(path: str) -> Handler:
    """The handler that serves the lock screens page's file at `path` (`webui.PATHS`)."""
    found = asset_at(path)
    assert found is not None, path  # the route table names only files the page has

    async def handler(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
        return Reply(200, found.body, found.content_type, page_headers())

    return handler


async def _openapi(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    return Reply(200, ctx.openapi_body)


async def _healthz(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    health = dict(ctx.service.health())  # the seam promises a Mapping; msgspec encodes dicts
    if ctx.node_id is not None:  # which worker or node answered (several share one port)
        health["node"] = ctx.node_id
    # A load balancer reads the status, not the body: an explicit `ok: false` is a 503.
    return _json(health, 503 if health.get("ok") is False else 200)


async def _metrics(ctx: Context, params: Mapping[str, str], body: bytes) -> Reply:
    text = ctx.metrics.render(ctx.service.stats())
    return Reply(200, text, PROM_CONTENT_TYPE.encode())


_WEBHOOK_HEADERS: Final = (
    HeaderParam("x-hub-signature-256", "GitHub: `sha256=` and the body's HMAC-SHA256 (hex)."),
    HeaderParam("x-github-event", "GitHub: the event, e.g. `workflow_job`."),
    HeaderParam("x-github-delivery", "GitHub: the delivery's id (a redelivery repeats it)."),
    HeaderParam("x-webhook-secret", "Generic: the webhook's secret."),
    HeaderParam("x-delivery-id", "Generic, optional: an id that makes a resend a no-op."),
)

_STREAM = "/api/live-activity/stream/{stream_key}"
_DEVICE = "/api/devices/{device_id}"

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint(
        method="PUT",
        template=_STREAM,
        access=Access.SEND,
        handler=_stream_put,
        operation_id="reconcileLiveActivityStream",
        summary="Start, update or rotate the stream's Live Activity",
        request=models.StreamRequest,
        response=models.StreamPutResponse,
        errors=(404, 422, 429, 503),
    ),
    Endpoint(
        method="DELETE",
        template=_STREAM,
        access=Access.SEND,
        handler=_stream_delete,
        operation_id="endLiveActivityStream",
        summary="End the stream's Live Activity",
        request=models.StreamDeleteRequest,
        body_required=False,
        response=models.StreamDeleteResponse,
        errors=(404, 429, 503),
    ),
    Endpoint(
        method="POST",
        template="/api/live-activity/start",
        access=Access.SEND,
        handler=_start,
        operation_id="startLiveActivity",
        summary="Start a Live Activity",
        request=models.StartRequest,
        response=models.StartResponse,
        errors=(422, 429, 503),
    ),
    Endpoint(
        method="POST",
        template="/api/live-activity/update",
        access=Access.SEND,
        handler=_update,
        operation_id="updateLiveActivity",
        summary="Update a Live Activity",
        request=models.UpdateRequest,
        response=models.UpdateResponse,
        errors=(404, 409, 429, 503),
    ),
    Endpoint(
        method="POST",
        template="/api/live-activity/end",
        access=Access.SEND,
        handler=_end,
        operation_id="endLiveActivity",
        summary="End a Live Activity",
        request=models.EndRequest,
        response=models.EndResponse,
        errors=(404, 429, 503),
    ),
    Endpoint(
        method="GET",
        template=_STREAM,
        access=Access.SEND,
        handler=_stream_status,
        operation_id="getLiveActivityStreamStatus",
        summary="Where each targeted device stands with the stream's current activity",
        response=models.ActivityStatus,
        errors=(400, 404),
    ),
    Endpoint(
        method="GET",
        template="/api/live-activity/{activity_id}",
        access=Access.SEND,
        handler=_status,
        operation_id="getLiveActivityStatus",
        summary="Where each targeted device stands with a Live Activity",
        response=models.ActivityStatus,
        errors=(404,),
    ),
    Endpoint(
        method="GET",
        template="/api/live-activities",
        access=Access.SEND,
        handler=_status_page,
        merge=_merge_status_pages,
        operation_id="listLiveActivityStatuses",
        summary="Delivery status of the activities, a page at a time, optionally by device state",
        response=models.ActivityStatusList,
        errors=(400,),
        query=(
            QueryParam(
                "state",
                "Only activities with a device in this state.",
                {"type": "string", "enum": list(models.RECIPIENT_STATES)},
            ),
            QueryParam(
                "limit",
                "Page size (default 100).",
                {"type": "integer", "minimum": 1, "maximum": 500},
            ),
            QueryParam("after", "The `next` of the previous page.", {"type": "string"}),
        ),
    ),
    Endpoint(
        method="POST",
        template="/api/push-notification",
        access=Access.SEND,
        handler=_push_send,
        operation_id="sendPushNotification",
        summary="Send a push notification to the targeted devices' apps",
        request=push.PushRequest,
        response=push.PushResponse,
        errors=(422, 503),
    ),
    Endpoint(
        method="PUT",
        template="/api/push-notification/{notification_id}",
        access=Access.SEND,
        handler=_push_replace,
        operation_id="replacePushNotification",
        summary="Replace a sent push notification in place (same apns-collapse-id)",
        request=push.PushReplaceRequest,
        response=push.PushReplaceResponse,
        errors=(404, 409, 503),
    ),
    Endpoint(
        method="POST",
        template="/api/badge",
        access=Access.SEND,
        handler=_badge,
        operation_id="updateAppIconBadgeCount",
        summary="Set the app icon badge count on the targeted devices (0 clears it)",
        request=push.BadgeRequest,
        response=push.BadgeResponse,
        errors=(422, 502),
        error_schemas=((422, "NoRecipientsError|AppIconBadgeCountUpdateError"),),
    ),
    Endpoint(
        method="GET",
        template="/api/devices",
        access=Access.SEND,
        handler=_devices_list,
        operation_id="listDevices",
        summary="List registered devices",
        response=DeviceList,
    ),
    Endpoint(
        method="PUT",
        template=_DEVICE,
        access=Access.DEVICE,
        handler=_device_put,
        operation_id="registerDevice",
        summary="Register or update a device (its push-to-start token and channels)",
        request=models.DeviceRegistration,
        response=models.DeviceInfo,
        errors=(503,),
    ),
    Endpoint(
        method="DELETE",
        template=_DEVICE,
        access=Access.DEVICE,
        handler=_device_delete,
        operation_id="unregisterDevice",
        summary="Unregister a device",
        response=models.DeviceInfo,
        errors=(400, 404, 503),
    ),
    Endpoint(
        method="POST",
        template="/api/activity-tokens",
        access=Access.DEVICE,
        handler=_token_report,
        operation_id="reportActivityToken",
        summary="Report a Live Activity's update token",
        request=models.ActivityTokenReport,
        response=models.ActivityTokenAccepted,
        errors=(404, 503),
    ),
    Endpoint(
        method="POST",
        template="/api/metrics/{key}/value",
        access=Access.SEND,
        handler=_metric_value,
        operation_id="updateMetricValue",
        summary="Set a widget metric's latest value; the devices' widgets are told to reload",
        request=metrics.MetricValueRequest,
        response=metrics.MetricValueResponse,
        errors=(503,),
    ),
    Endpoint(
        method="GET",
        template=_DEVICE + "/metrics",
        access=Access.DEVICE,
        handler=_device_metrics,
        operation_id="getDeviceMetrics",
        summary="Every widget metric's current value, for the device's widgets",
        response=metrics.DeviceMetrics,
        errors=(404,),
    ),
    Endpoint(
        method="POST",
        template="/api/webhooks/{name}",
        access=Access.WEBHOOK,
        handler=_webhook,
        operation_id="receiveWebhook",
        summary="A delivery to an inbound webhook (GitHub or generic), authenticated by its "
        "signature or secret",
        request=dict,
        response=hooks.WebhookReply,
        errors=(401, 404, 422, 429, 503),
        headers=_WEBHOOK_HEADERS,
    ),
    Endpoint(
        method="GET",
        template="/api/webhooks/{name}/deliveries",
        access=Access.SEND,
        handler=_webhook_deliveries,
        operation_id="listWebhookDeliveries",
        summary="An inbound webhook's delivery log, newest first",
        response=hooks.WebhookDeliveryList,
        errors=(404,),
    ),
    Endpoint(
        method="POST",
        template="/api/webhooks/{name}/deliveries/{delivery_id}/replay",
        access=Access.SEND,
        handler=_webhook_replay,
        operation_id="replayWebhookDelivery",
        summary="Run a logged delivery again",
        response=hooks.WebhookReply,
        errors=(400, 404, 422, 429, 503),
    ),
    Endpoint(
        method="GET",
        template="/api/dashboard",
        access=Access.SEND,
        handler=_dashboard,
        merge=_merge_dashboards,
        operation_id="getDashboard",
        summary="What the lock screens page draws: simulated iPhones, pushes, delivery status",
        response=Dashboard,
    ),
    Endpoint(
        method="GET",
        template="/",
        access=Access.PUBLIC,
        handler=_page_file("/"),
        operation_id="getLockScreensPage",
        summary="The lock screens page (HTML; what it draws comes from /api/dashboard)",
        media="text/html",
    ),
    Endpoint(
        method="GET",
        template="/ui/app.css",
        access=Access.PUBLIC,
        handler=_page_file("/ui/app.css"),
        operation_id="getLockScreensStyle",
        summary="The lock screens page's stylesheet",
        media="text/css",
    ),
    Endpoint(
        method="GET",
        template="/ui/app.js",
        access=Access.PUBLIC,
        handler=_page_file("/ui/app.js"),
        operation_id="getLockScreensScript",
        summary="The lock screens page's script",
        media="text/javascript",
    ),
    Endpoint(
        method="GET",
        template="/api/openapi.json",
        access=Access.PUBLIC,
        handler=_openapi,
        operation_id="getOpenApi",
        summary="This OpenAPI document",
        response=dict,
    ),
    Endpoint(
        method="GET",
        template="/healthz",
        access=Access.PUBLIC,
        handler=_healthz,
        operation_id="getHealth",
        summary="Liveness and a few counts",
        response=dict,
        errors=(503,),
    ),
    Endpoint(
        method="GET",
        template="/metrics",
        access=Access.PUBLIC,
        handler=_metrics,
        operation_id="getMetrics",
        summary="Prometheus metrics (text format 0.0.4)",
        media="text/plain",
    ),
)
"""Every route of the API, in documentation order (the OpenAPI document is built from it)."""
