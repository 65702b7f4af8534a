"""The HTTP API as a plain ASGI application (no framework).

Routes: the table is `http.routes.ENDPOINTS` (the contract is the hosted ActivitySmith API, see
`engine.server.contract.models`). Each route's `Access` says who may call it: send keys (`SEND`:
Live Activities, notifications, badge, metrics, status reads, devices list, webhook logs, the
dashboard), device keys (`DEVICE`: what an iOS app calls), a webhook's own signature or secret
(`WEBHOOK`, checked by the service), or nobody in particular (`PUBLIC`: the OpenAPI document,
`/healthz`, `/metrics` and the lock screens page's static files).

A request goes: route match (404, 405 with `Allow`) -> bearer auth (401 without a bearer token,
403 for an unknown key or a key of the other kind) -> body (413 over `max_body`, judged from
`content-length` before reading and again while reading; 415 for a body that says it is not JSON)
-> decode and validate (`contract.models.decode`, 400) -> the service. Every error body is
`{"error": <code>, "message": <sentence>, ...}`; an unexpected exception is logged and answered
with a bare 500, never a stack trace. API keys are compared in constant time and never logged.
Every answer carries `X-Request-Id` (the client's, when sane); while the `lockstep.access`
logger is enabled each request is logged once (`engine.server.logs`: route template, status,
duration, request id; never the path, a header or a body).

Send keys are a `keys.KeyRing`: the default keys (scope `all`) and the named keys of
`lockstep.toml` and of the key file, each with its scope. The key's scope is handed to the
route's handler as `Context.key` (http.endpoint explains how handlers use it).

In a cluster, a `seam.Router` says where each call runs: after authentication and the body
checks (401, 403, 413 and 415 are answered by the node that got the call), `http.placement`
serves it here, forwards it to the node that owns its partition and relays the answer, or
answers 503 `partition_unavailable` when no node can take it. Public routes (`/healthz`,
`/metrics`...) speak of the node that got them: they always run here.

The route table is `http.routes.ENDPOINTS` (its vocabulary: `http.endpoint`); the service is
anything that satisfies `http.seam.ApiService`. Neither imports this module.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import msgspec

from engine.server.cluster.forward import Forwarder
from engine.server.contract.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.http.endpoint import JSON, Access, Context, Endpoint, Reply
from engine.server.http.placement import Placer
from engine.server.http.prom import PromMetrics
from engine.server.http.routes import ENDPOINTS
from engine.server.http.seam import ApiService, PhonesView, Router
from engine.server.keys import KeyRing, hash_key
from engine.server.logs import ACCESS, access, request_id

__all__ = [
    "UNMATCHED",
    "ApiApp",
    "MethodNotAllowed",
    "Record",
    "RecordReply",
    "UnsupportedMediaType",
    "create_app",
]

log = logging.getLogger("lockstep.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Record = Callable[[str, str, bytes], None]
"""`record(method, path, body)`: told about every accepted Live Activity call with a body."""
RecordReply = Callable[[str, str, bytes, bytes], None]
"""`record_reply(method, path, body, reply_body)`: the same calls, with the answer's body too."""

# `curl -d` labels a body application/x-www-form-urlencoded unless told otherwise.
_LENIENT_MEDIA: Final = frozenset({JSON, b"application/x-www-form-urlencoded"})
# What `record` hears about: the Live Activity calls that change something (`lockstep replay`
# maps their activity ids; notifications, badges and metrics are not replayed).
_RECORDED: Final = "/api/live-activity"
UNMATCHED: Final = "unmatched"  # the metrics route label of a request that matched no route


class MethodNotAllowed(ApiError):
    """405: the route exists, the method does not; `allow` goes in the `Allow` header."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: Sequence[str]) -> None:
        super().__init__(message)
        self.allow = tuple(allow)


class UnsupportedMediaType(ApiError):
    """415: the body says it is something other than JSON."""

    status = 415
    code = "unsupported_media_type"


class _Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


# -- routing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    template: str
    segments: tuple[str, ...]
    methods: dict[str, Endpoint]

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, parts, strict=True):
            if want.startswith("{"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


def _query(scope: Scope, endpoint: Endpoint) -> dict[str, str]:
    """The endpoint's declared query parameters that the request gave (first value of each)."""
    raw = scope.get("query_string", b"").decode("latin-1")
    given = urllib.parse.parse_qs(raw, keep_blank_values=True, max_num_fields=100)
    names = {q.name for q in endpoint.query}
    return {name: values[0] for name, values in given.items() if name in names}


def _routes(endpoints: Sequence[Endpoint]) -> tuple[_Route, ...]:
    by_template: dict[str, dict[str, Endpoint]] = {}
    for ep in endpoints:
        by_template.setdefault(ep.template, {})[ep.method] = ep
    return tuple(_Route(t, tuple(t.split("/")[1:]), methods) for t, methods in by_template.items())


# -- the application --------------------------------------------------------------------------


class ApiApp:
    """The ASGI application; build it with `create_app`."""

    def __init__(
        self,
        service: ApiService,
        *,
        api_keys: Sequence[str],
        device_keys: Sequence[str],
        metrics: PromMetrics,
        max_body: int,
        openapi: Mapping[str, Any],
        record: Record | None,
        record_reply: RecordReply | None = None,
        endpoints: Sequence[Endpoint] = ENDPOINTS,
        clock: Callable[[], float] = time.perf_counter,
        named_keys: KeyRing | None = None,
        phones: PhonesView | None = None,
        router: Router | None = None,
        forwarder: Forwarder | None = None,
        router_wait: float = 5.0,
        node_id: str | None = None,
    ) -> None:
        self._clock = clock  # the access log's durations
        self.placer = (
            None
            if router is None
            else Placer(
                router,
                forwarder or Forwarder(router.node_id),
                metrics,
                wait=router_wait,
                owns_forwarder=forwarder is None,
            )
        )
        self.context = Context(
            service, metrics, msgspec.json.encode(openapi), phones=phones, node_id=node_id
        )
        self.max_body = max_body
        self.record = record
        self.record_reply = record_reply
        # Empty keys would let "Bearer " through: they are configuration mistakes, never keys.
        self._send_keys = KeyRing(plain=api_keys)
        self._named_keys = named_keys or KeyRing()
        self._device_keys = tuple(k.encode() for k in device_keys if k)
        self._routes = _routes(endpoints)

    def __repr__(self) -> str:  # keys stay out of reprs
        return f"ApiApp(send_keys={self._send_keys!r}, device_keys={len(self._device_keys)})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        logged = ACCESS.isEnabledFor(logging.INFO)
        started = self._clock() if logged else 0.0
        rid = request_id(_header(scope, b"x-request-id"))
        label = UNMATCHED
        try:
            endpoint, params = self._route(scope["method"], scope["path"])
            label = endpoint.template
            reply = await self._handle(endpoint, params, scope, receive, rid)
        except _Disconnected:
            if logged:  # 499, as nginx logs a client that left before its answer
                self._access(scope, label, 499, started, rid)
            return
        except ApiError as exc:
            reply = Reply(exc.status, msgspec.json.encode(exc.body()), headers=_error_headers(exc))
        except Exception:
            log.exception("unexpected error on %s %s", scope["method"], label)
            reply = Reply(500, b'{"error":"internal","message":"internal error"}')
        self.context.metrics.api_request(label, reply.status)
        await _respond(send, reply, rid)
        if logged:
            self._access(scope, label, reply.status, started, rid)

    def _access(self, scope: Scope, label: str, status: int, started: float, rid: str) -> None:
        access(scope["method"], label, status, self._clock() - started, rid, _client(scope))

    def _route(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
        parts = path.split("/")[1:]
        for route in self._routes:
            params = route.match(parts)
            if params is None:
                continue
            endpoint = route.methods.get(method)
            if endpoint is None:
                allow = sorted(route.methods)
                raise MethodNotAllowed(
                    f"{method} is not allowed here; use {', '.join(allow)}", allow=allow
                )
            return endpoint, params
        raise NotFound(f"no route for {path[:200]}")  # bounded: the path is the client's

    async def aclose(self) -> None:
        """Close the connections to other nodes (of the forwarder this app made)."""
        if self.placer is not None:
            await self.placer.aclose()

    async def _handle(
        self, endpoint: Endpoint, params: dict[str, str], scope: Scope, receive: Receive, rid: str
    ) -> Reply:
        headers = _headers(scope)
        ctx = self.context
        if endpoint.access not in (Access.PUBLIC, Access.WEBHOOK):
            key = self._authorize(endpoint.access, headers.get(b"authorization"))
            if key is not FULL_ACCESS:
                ctx = dataclasses.replace(ctx, key=key)
        body = b""
        if endpoint.request is not None:
            body = await self._read_body(headers, receive)
            _check_content_type(headers.get(b"content-type"), body)
        if endpoint.query:
            params = {**_query(scope, endpoint), **params}
        for declared in endpoint.headers:
            value = headers.get(declared.name.encode())
            if value is not None:
                params = {**params, declared.name: value.decode("latin-1")}
        # A cluster: the call may be another node's. Public routes (health, metrics, the
        # OpenAPI document, static files) speak of the node that got them: always here.
        if self.placer is not None and endpoint.access is not Access.PUBLIC:
            here = partial(endpoint.handler, ctx, params, body)
            relayed = await self.placer.elsewhere(endpoint, params, scope, body, rid, here)
            if relayed is not None:
                return relayed
        reply = await endpoint.handler(ctx, params, body)
        if (
            endpoint.access is Access.SEND
            and endpoint.request is not None
            and reply.status < 300
            and endpoint.template.startswith(_RECORDED)
        ):
            self._record(scope, body, reply)  # the Live Activity calls, for replays
        return reply

    def _authorize(self, access: Access, header: bytes | None) -> KeyScope:
        """The send key's scope (`FULL_ACCESS` on a device route), or 401 / 403."""
        scheme, _, token = (header or b"").strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer <key>)")
        # Compare with every key, without stopping early, so timing says nothing about them.
        digest = hash_key(token).encode()
        default = self._send_keys.find_digest(digest)
        named = self._named_keys.find_digest(digest)
        send = default or named
        is_send = send is not None
        is_device = _any_equal(token, self._device_keys)
        if not (is_send or is_device):
            raise Forbidden("unknown API key")
        if access is Access.SEND and not is_send:
            raise Forbidden("a device key cannot call this route")
        if access is Access.DEVICE and not is_device:
            raise Forbidden("this route needs a device key")
        return send if access is Access.SEND and send is not None else FULL_ACCESS

    async def _read_body(self, headers: Mapping[bytes, bytes], receive: Receive) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise BadRequest("invalid content-length header") from None
            if size > self.max_body:
                raise self._too_large(size)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int) -> TooLarge:
        return TooLarge(
            f"request body is {size} bytes or more; the limit is {self.max_body}",
            size=size,
            limit=self.max_body,
        )

    def _record(self, scope: Scope, body: bytes, reply: Reply) -> None:
        if self.record is None and self.record_reply is None:
            return
        try:
            if self.record is not None:
                self.record(scope["method"], scope["path"], body)
            if self.record_reply is not None:
                self.record_reply(scope["method"], scope["path"], body, reply.body)
        except Exception:  # the call was accepted: recording must not turn it into an error
            log.exception("recording a request failed")


def create_app(
    service: ApiService,
    *,
    api_keys: Sequence[str],
    device_keys: Sequence[str],
    metrics: PromMetrics,
    max_body: int = 65536,
    openapi: Mapping[str, Any],
    record: Record | None = None,
    record_reply: RecordReply | None = None,
    named_keys: KeyRing | None = None,
    phones: PhonesView | None = None,
    router: Router | None = None,
    forwarder: Forwarder | None = None,
    router_wait: float = 5.0,
    node_id: str | None = None,
) -> ApiApp:
    """The HTTP API over `service` (`.live`, `.devices`, `.health()`, `.stats()`: see
    `engine.server.http.seam.ApiService`).

    `openapi` is the document served at `/api/openapi.json` (see `engine.server.http.openapi`);
    `record(method, path, body)` hears about every accepted send-route call that carries a
    body (the calls that change something); it never sees the key. `record_reply` hears about
    the same calls with the answer's body as a fourth argument (a traffic recorder keeps the
    `activity_id` a start was given, see `engine.server.record`). `api_keys` have scope `all`;
    `named_keys` holds the keys with a name and a scope (`engine.server.keys`). `phones` are the
    simulated iPhones the lock screens page draws (`GET /api/dashboard`), in simulate mode.

    `router` (a cluster) places each call; the calls of other nodes' partitions go through
    `forwarder` (None: one the app makes for `router.node_id` and closes in `aclose`), and a
    call no node can take waits up to `router_wait` seconds (see the module docstring).
    `node_id` names this process in `/healthz` (`node`): which of several workers or nodes
    answered.
    """
    return ApiApp(
        service,
        api_keys=api_keys,
        device_keys=device_keys,
        metrics=metrics,
        max_body=max_body,
        openapi=openapi,
        record=record,
        record_reply=record_reply,
        named_keys=named_keys,
        phones=phones,
        router=router,
        forwarder=forwarder,
        router_wait=router_wait,
        node_id=node_id,
    )


# -- helpers ----------------------------------------------------------------------------------


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Header names are lower-case in ASGI; the first of repeated headers wins."""
    out: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        out.setdefault(bytes(name), bytes(value))
    return out


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first `name` header of the request (lower-case), without building a dict."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _client(scope: Scope) -> str | None:
    """The peer's address as the server saw it (a reverse proxy's, behind one)."""
    client = scope.get("client")
    return None if not client else str(client[0])


def _error_headers(exc: ApiError) -> tuple[tuple[bytes, bytes], ...]:
    if isinstance(exc, Unauthorized):
        return ((b"www-authenticate", b"Bearer"),)
    if isinstance(exc, MethodNotAllowed):
        return ((b"allow", ", ".join(exc.allow).encode()),)
    if isinstance(exc, (RateLimited, Unavailable)) and exc.retry_after is not None:
        return ((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()),)
    return ()


def _any_equal(token: bytes, keys: Sequence[bytes]) -> bool:
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found


def _check_content_type(header: bytes | None, body: bytes) -> None:
    """Lenient: a body with no content type, or with curl's `-d` default, is read as JSON."""
    if header is None or not body:
        return
    media = header.split(b";", 1)[0].strip().lower()
    if media in _LENIENT_MEDIA or media.endswith(b"+json"):
        return
    raise UnsupportedMediaType(
        f"request bodies are JSON (application/json), not {media.decode('latin-1')!r}",
    )


async def _respond(send: Send, reply: Reply, rid: str) -> None:
    if reply.relayed:
        await _relay(send, reply, rid)
        return
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", rid.encode()),
        *reply.headers,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _relay(send: Send, reply: Reply, rid: str) -> None:
    """Another node's answer, as it came (it echoes the `x-request-id` it was sent)."""
    headers = [(b"content-length", str(len(reply.body)).encode()), *reply.headers]
    if not any(name == b"x-request-id" for name, _ in reply.headers):
        headers.append((b"x-request-id", rid.encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
