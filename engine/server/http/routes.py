"""The API's route table: one `Endpoint` per (method, route), with its handler.

`http.app` routes requests with it and `http.openapi` documents it, so the served routes and the
OpenAPI document cannot drift apart. Handlers decode the body with `contract.models.decode`
(400 on any violation) and call the service; errors are `ApiError`s that
the app turns into JSON answers.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from engine.server.contract import models
from engine.server.http.prom import CONTENT_TYPE as PROM_CONTENT_TYPE

if TYPE_CHECKING:
    from engine.server.http.app import ApiApp

JSON: Final = b"application/json"


class Access(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"
    SEND = "send"  # API keys: the backends that send Live Activities
    DEVICE = "device"  # device keys: the iOS app (or a simulated iPhone)


class DeviceList(msgspec.Struct):
    """`GET /api/devices`: every registered device."""

    devices: list[models.DeviceInfo]


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[["ApiApp", Mapping[str, str], bytes], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One (method, route) with what the OpenAPI document says about it."""

    method: str
    template: str  # e.g. "/api/live-activity/stream/{stream_key}"
    access: Access
    handler: Handler
    operation_id: str
    summary: str
    request: type | None = None  # the JSON body's type; None: no body
    body_required: bool = True
    response: Any = None  # the 200 body's type (None: not JSON, described by `media`)
    media: str = "application/json"
    errors: tuple[int, ...] = ()  # error statuses beyond the ones every route of its kind has


# -- handlers ---------------------------------------------------------------------------------


def _json(value: Any, status: int = 200) -> Reply:
    return Reply(status, msgspec.json.encode(value))


async def _stream_put(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    key = params["stream_key"]
    models.check_stream_key(key)
    req = models.decode(models.StreamRequest, body)
    return _json(await app.service.live.stream(key, req))


async def _stream_delete(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    key = params["stream_key"]
    models.check_stream_key(key)
    req = models.decode(models.StreamDeleteRequest, body) if body.strip() else None
    return _json(await app.service.live.end_stream(key, req))


async def _start(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(await app.service.live.start(models.decode(models.StartRequest, body)))


async def _update(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(await app.service.live.update(models.decode(models.UpdateRequest, body)))


async def _end(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(await app.service.live.end(models.decode(models.EndRequest, body)))


async def _devices_list(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(DeviceList(devices=list(app.service.devices.list())))


async def _device_put(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    reg = models.decode(models.DeviceRegistration, body)
    return _json(await app.service.devices.register(params["device_id"], reg))


async def _device_delete(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    return _json(await app.service.devices.unregister(params["device_id"]))


async def _token_report(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    report = models.decode(models.ActivityTokenReport, body)
    return _json(await app.service.devices.report_token(report))


async def _openapi(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    return Reply(200, app.openapi_body)


async def _healthz(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    health = app.service.health()
    # A load balancer reads the status, not the body: an explicit `ok: false` is a 503.
    return _json(health, 503 if health.get("ok") is False else 200)


async def _metrics(app: ApiApp, params: Mapping[str, str], body: bytes) -> Reply:
    text = app.metrics.render(app.service.stats())
    return Reply(200, text, PROM_CONTENT_TYPE.encode())


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
