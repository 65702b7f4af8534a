"""The OpenAPI 3.1 document of the HTTP API, built from the route table and the msgspec models.

Schemas come from `msgspec.json.schema_components`, so the document cannot drift from what the
server decodes and encodes. Paths are relative to the server url `/api` (as the official SDKs
expect: their host ends in `/api`); `/healthz` and `/metrics` live at the root and say so with a
path-level `servers` entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any, Final

import msgspec

from engine.server.contract.metrics import METRIC_KEY_PATTERN
from engine.server.contract.models import DEVICE_ID_PATTERN, STREAM_KEY_PATTERN
from engine.server.http.endpoint import Access, Endpoint
from engine.server.http.routes import ENDPOINTS

__all__ = ["API_PREFIX", "PATH_PARAMETERS", "SCHEMES", "build_openapi"]

API_PREFIX: Final = "/api"
"""The base path of the API (the document's server url)."""

SCHEMES: Final[dict[Access, str]] = {Access.SEND: "apiKey", Access.DEVICE: "deviceKey"}
"""The security scheme of each kind of key (both are `Authorization: Bearer <key>`)."""

_REF: Final = "#/components/schemas/{name}"

# Path parameters: the same rules the server enforces (contract.models / service.devices).
PATH_PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "stream_key": {
        "description": "Names one ongoing thing (a server, a job): letters, digits, _ and -.",
        "schema": {"type": "string", "pattern": STREAM_KEY_PATTERN},
    },
    "device_id": {
        "description": "The device's id, chosen by the app: letters, digits, _ . : and -.",
        "schema": {"type": "string", "pattern": DEVICE_ID_PATTERN},
    },
    "activity_id": {
        "description": "The activity_id a start or stream call answered with.",
        "schema": {"type": "string", "minLength": 1},
    },
    "key": {
        "description": "The metric's key: lowercase letters, digits, . _ and -.",
        "schema": {"type": "string", "pattern": METRIC_KEY_PATTERN},
    },
    "name": {
        "description": "An inbound webhook's name (`[[webhooks]]` in lockstep.toml).",
        "schema": {"type": "string", "minLength": 1},
    },
    "delivery_id": {
        "description": "A delivery's id, as the delivery log lists it.",
        "schema": {"type": "string", "minLength": 1},
    },
    "notification_id": {
        "description": "The notification_id POST /push-notification answered with.",
        "schema": {"type": "string", "minLength": 1},
    },
}

_ERROR_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Error": {
        "title": "Error",
        "description": "Every error answer: a short code, a sentence, sometimes more fields.",
        "type": "object",
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        "required": ["error", "message"],
        "additionalProperties": True,
    },
    "PayloadTooLargeError": {
        "title": "PayloadTooLargeError",
        "type": "object",
        "properties": {
            "error": {"type": "string", "const": "payload_too_large"},
            "message": {"type": "string"},
            "size": {"type": "integer"},
            "limit": {"type": "integer"},
        },
        "required": ["error", "message"],
        "additionalProperties": True,
    },
    "NoRecipientsError": {
        "title": "NoRecipientsError",
        "type": "object",
        "properties": {
            "error": {"type": "string", "const": "no_recipients"},
            "message": {"type": "string"},
            "effective_channel_slugs": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["error", "message"],
        "additionalProperties": True,
    },
    "AppIconBadgeCountUpdateError": {
        "title": "AppIconBadgeCountUpdateError",
        "description": "The badge reached no device: 422 badge_device_disconnected (no app "
        "token registered), 502 badge_update_failed (APNs refused every push).",
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "code": {
                "type": "string",
                "enum": ["badge_device_disconnected", "badge_update_failed"],
            },
            "message": {"type": "string"},
            "badge": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "devices_targeted": {"type": "integer"},
            "devices_updated": {"type": "integer"},
            "users_updated": {"type": "integer"},
            "devices_notified": {"type": "integer"},
            "effective_channel_slugs": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["error", "code", "message", "badge", "devices_updated"],
        "additionalProperties": True,
    },
    "RateLimitError": {
        "title": "RateLimitError",
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "code": {"type": "string", "const": "rate_limited"},
        },
        "required": ["error", "message"],
        "additionalProperties": True,
    },
}

_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("The request is invalid; the message names the field.", "Error"),
    401: ("No bearer token.", "Error"),
    403: ("Unknown key, a key of the other kind, or outside the key's channels.", "Error"),
    404: ("Not found (activity, stream, device, notification).", "Error"),
    409: ("The activity has ended, or the notification can no longer be replaced.", "Error"),
    413: ("The body is over the limit.", "PayloadTooLargeError"),
    415: ("The body is not JSON.", "Error"),
    422: ("No registered device matches the request's channels.", "NoRecipientsError"),
    429: ("Too many requests, or too many Live Activities on the devices.", "RateLimitError"),
    500: ("Internal error.", "Error"),
    502: ("APNs refused every push.", "AppIconBadgeCountUpdateError"),
    503: (
        "Not available right now (shutting down, store unavailable, no node of a cluster free).",
        "Error",
    ),
}

_TAGS: Final[dict[str, str]] = {
    "/api/live-activity": "Live Activities",
    "/api/devices": "Devices",
    "/api/activity-tokens": "Devices",
    "/api/metrics": "Widget metrics",
    "/api/webhooks": "Webhooks",
    "/api/push-notification": "Notifications",
    "/api/badge": "Notifications",
}


def build_openapi(
    *,
    endpoints: Sequence[Endpoint] = ENDPOINTS,
    title: str = "Lockstep API",
    version: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `endpoints` (JSON-ready: plain dicts and lists)."""
    types = _body_types(endpoints)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        path, servers = _split(ep.template)
        item = paths.setdefault(path, {})
        if servers is not None:
            item["servers"] = servers
        item[ep.method.lower()] = _operation(ep, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version or _version(),
            "description": "Live Activities for iOS from any backend: the ActivitySmith "
            "contract, self-hosted, plus the device API an iOS app calls.",
        },
        "servers": [{"url": API_PREFIX}],
        "tags": [
            {"name": n}
            for n in (
                "Live Activities",
                "Notifications",
                "Widget metrics",
                "Devices",
                "Webhooks",
                "Operations",
            )
        ],
        "paths": paths,
        "components": {
            "schemas": {**components, **_ERROR_SCHEMAS},
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: sends Live Activities.",
                },
                "deviceKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A device key: what the iOS app uses to register itself.",
                },
            },
        },
    }


def _body_types(endpoints: Sequence[Endpoint]) -> list[type]:
    seen: list[type] = []
    for ep in endpoints:
        for t in (ep.request, ep.response):
            if t is not None and t not in seen:
                seen.append(t)
    return seen


def _split(template: str) -> tuple[str, list[dict[str, str]] | None]:
    """The path relative to the document's server, and a path-level server when not under it."""
    if template.startswith(API_PREFIX + "/"):
        return template[len(API_PREFIX) :], None
    return template, [{"url": "/"}]


def _operation(ep: Endpoint, schema_of: dict[type, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.operation_id,
        "summary": ep.summary,
        "tags": [_tag(ep.template)],
        "security": [{SCHEMES[ep.access]: []}] if ep.access in SCHEMES else [],
    }
    params = [
        {"name": seg[1:-1], "in": "path", "required": True, **PATH_PARAMETERS[seg[1:-1]]}
        for seg in ep.template.split("/")
        if seg.startswith("{")
    ]
    params += [
        {"name": q.name, "in": "query", "required": False, "description": q.description,
         "schema": dict(q.schema)}
        for q in ep.query
    ]  # fmt: skip
    params += [
        {"name": h.name, "in": "header", "required": False, "description": h.description,
         "schema": {"type": "string"}}
        for h in ep.headers
    ]  # fmt: skip
    if params:
        op["parameters"] = params
    if ep.request is not None:
        op["requestBody"] = {
            "required": ep.body_required,
            "content": {"application/json": {"schema": schema_of[ep.request]}},
        }
    ok_schema = schema_of[ep.response] if ep.response is not None else {"type": "string"}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {ep.media: {"schema": ok_schema}}}
    }
    overrides = dict(ep.error_schemas)
    for status in _error_statuses(ep):
        description, name = _ERRORS[status]
        refs = [{"$ref": _REF.format(name=n)} for n in overrides.get(status, name).split("|")]
        schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    op["responses"] = responses
    return op


def _error_statuses(ep: Endpoint) -> list[int]:
    statuses = set(ep.errors)
    if ep.access in SCHEMES:
        statuses |= {401, 403, 500}
    elif ep.access is Access.WEBHOOK:  # its own signature or secret: no key, so no 403
        statuses |= {401, 500}
    if ep.request is not None:
        statuses |= {400, 413, 415}
    return sorted(statuses)


def _tag(template: str) -> str:
    for prefix, tag in _TAGS.items():
        if template.startswith(prefix):
            return tag
    return "Operations"


def _version() -> str:
    try:
        return metadata.version("lockstep")
    except metadata.PackageNotFoundError:
        return "0.0.0"
