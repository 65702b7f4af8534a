"""The vocabulary of the route table: who may call a route, what a handler gets and answers.

Three modules share it and none of them imports another for it: `http.routes` builds the table
(`ENDPOINTS`), `http.app` serves it, `http.openapi` documents it. A handler is handed a `Context`
(the service behind the seam, the metrics, the OpenAPI document), never the app itself, so the
dependencies run one way: app -> routes -> endpoint -> seam.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from engine.server.http.prom import PromMetrics
from engine.server.http.seam import ApiService, PhonesView

__all__ = ["JSON", "Access", "Context", "Endpoint", "Handler", "Reply"]

JSON: Final = b"application/json"
"""The media type of every body the API reads and of every answer but `/metrics`."""


class Access(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"
    SEND = "send"  # API keys: the backends that send Live Activities
    DEVICE = "device"  # device keys: the iOS app (or a simulated iPhone)


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler may use besides the request: fixed for the life of the app."""

    service: ApiService
    metrics: PromMetrics
    openapi_body: bytes  # the OpenAPI document, encoded once
    phones: PhonesView | None = None  # simulated iPhones for the page (simulate mode only)


Handler = Callable[[Context, Mapping[str, str], bytes], Awaitable[Reply]]
"""`handler(context, params, body)`: the path parameters and the declared query parameters that
were given (first value of each); the body is read and size-checked, not decoded."""


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One optional query-string parameter: handed to the handler with the path parameters."""

    name: str
    description: str
    schema: Mapping[str, Any]


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
    response: type | None = None  # the 200 body's type (None: not JSON, described by `media`)
    media: str = "application/json"
    errors: tuple[int, ...] = ()  # error statuses beyond the ones every route of its kind has
    query: tuple[QueryParam, ...] = ()  # the query parameters it reads (others are ignored)
