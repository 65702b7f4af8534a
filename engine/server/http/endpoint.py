"""The vocabulary of the route table: who may call a route, what a handler gets and answers.

Three modules share it and none of them imports another for it: `http.routes` builds the table
(`ENDPOINTS`), `http.app` serves it, `http.openapi` documents it. A handler is handed a `Context`
(the service behind the seam, the metrics, the OpenAPI document), never the app itself, so the
dependencies run one way: app -> routes -> endpoint -> seam.

The calling key's scope reaches a handler in one way only: `Context.key`. For every send route
(`Access.SEND`) the app authenticates the bearer key and hands the handler a copy of its context
whose `key` is that key's `KeyScope` (engine/server/contract/scope.py): scope `all`, or a list of
channels. A handler that sends anything passes `ctx.key` to the service, which resolves the
recipients with it (`KeyScope.targets`: 403 for a channel outside a restricted key's list, the
key's channels when the call names none) and checks changes to what was already sent
(`KeyScope.check_reach`); a read shows only what the key reaches. Public and device routes
see `FULL_ACCESS`, which they never use.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.http.prom import PromMetrics
from engine.server.http.seam import ApiService, PhonesView

__all__ = ["JSON", "Access", "Context", "Endpoint", "Handler", "HeaderParam", "QueryParam", "Reply"]

JSON: Final = b"application/json"
"""The media type of every body the API reads and of every answer but `/metrics`."""


class Access(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"
    SEND = "send"  # API keys: the backends that send Live Activities
    DEVICE = "device"  # device keys: the iOS app (or a simulated iPhone)
    WEBHOOK = "webhook"  # no key: the service checks the webhook's own signature or secret


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer.

    `relayed`: another node's answer, passed on as it came: `headers` are all of its headers
    (the app adds only `content-length`) and `content_type` is not used.
    """

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    relayed: bool = False


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler may use besides the request: fixed for the life of the app, but for `key`,
    the calling key's scope on a send route (see the module docstring)."""

    service: ApiService
    metrics: PromMetrics
    openapi_body: bytes  # the OpenAPI document, encoded once
    key: KeyScope = FULL_ACCESS  # the send key's scope: pass it to the service on every send
    phones: PhonesView | None = None  # simulated iPhones for the page (simulate mode only)
    node_id: str | None = None  # this process's node (`Settings.node_id`), named by /healthz


Handler = Callable[[Context, Mapping[str, str], bytes], Awaitable[Reply]]
"""`handler(context, params, body)`: the path parameters, the declared query parameters that
were given (first value of each) and the declared headers that were given (by lower-case name,
first value, decoded as Latin-1); the body is read and size-checked, not decoded."""

Merge = Callable[[Sequence[bytes], Mapping[str, str]], bytes]
"""`merge(bodies, params)`: one answer from the parts of a listing (`Endpoint.merge`)."""


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One optional query-string parameter: handed to the handler with the path parameters."""

    name: str
    description: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HeaderParam:
    """One request header handed to the handler with the path parameters (lower-case name)."""

    name: str
    description: str


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
    # (status, schema name) where this route's error body differs from the usual one;
    # "A|B" documents a body that is either.
    error_schemas: tuple[tuple[int, str], ...] = ()
    query: tuple[QueryParam, ...] = ()  # the query parameters it reads (others are ignored)
    headers: tuple[HeaderParam, ...] = ()  # the request headers it reads
    # A listing every node of a cluster answers a part of: the 200 bodies of all the parts
    # (this node's first) and the call's parameters -> the merged body.
    merge: Merge | None = None
