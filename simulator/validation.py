"""The fake APNs's request validator: one complete request in, one APNs answer out (apns.md §1–§3).

`validate` decides what APNs would answer to a `/3/device/<token>` request. It is pure: the caller
(the HTTP/2 server) passes the request, the connection's `ConnectionAuth`, its environment
(`sandbox` or `production`, one per listener) and the TLS client certificate it presented if any,
the configuration, the simulated device registry and the current wall-clock time.

Checks run in ONE fixed order; the first failing step decides the answer:

 1. method other than POST → 405 `MethodNotAllowed`.
 2. path: not `/3/device/<token>` (other prefix, extra segments, a query) → 404 `BadPath`;
    empty token → 400 `MissingDeviceToken`; token not hex → 400 `BadDeviceToken`. No token length is
    assumed (apns.md §1). Broadcast paths (`/4/broadcasts/apps/<bundle>`) answer 404 `BadPath`
    until broadcast validation exists (see `_check_path`).
 3. a header name sent twice → 400 `DuplicateHeaders`.
 4. provider token (`ConnectionAuth.check`, apns.md §2) → its 403/429 reason. Past this step the
    request is known to carry a valid token (`Verdict.auth_ok`).
 5. `apns-topic`: missing → 400 `MissingTopic`; empty, whitespace, control or non-ASCII characters
    → 400 `BadTopic`; a bundle (topic minus a known push-type suffix) the key may not push to →
    400 `TopicDisallowed`.
 6. `apns-push-type`: unknown value → 400 `InvalidPushType`; a topic suffix belonging to another
    push type → 400 `InvalidPushType`; missing while the topic is a Live Activity topic → 400
    `InvalidPushType` ("effectively required for Live Activities", apns.md §1).
 7. `apns-priority`: not exactly `1`, `5` or `10` → 400 `BadPriority`; `1` on a Live Activity push
    or an explicit `10` on a `background` push → 400 `BadPriority`. Absent means 10, except on a
    `background` push, where it means 5: the only priority APNs takes for one (apns.md §1).
 8. `apns-expiration`: not a non-negative decimal integer that fits in 64 bits → 400
    `BadExpirationDate`.
 9. `apns-id`: not a UUID in 8-4-4-4-12 hex groups → 400 `BadMessageId`. Upper-case hex is
    accepted: APNs itself hands out upper-case ids (apns.md §1) and common clients send them that
    way (Swift's `UUID().uuidString`), so the canonical lower-case form cannot be all APNs accepts.
10. `apns-collapse-id`: longer than 64 bytes (UTF-8) → 400 `BadCollapseId`.
11. body: larger than the limit (4096 bytes; 5120 for VoIP, apns.md §5) → 413 `PayloadTooLarge`;
    empty, blank or `{}` → 400 `PayloadEmpty`; not JSON, not an object, or without an `aps` object
    → 400 `BadRequestPayload`. APNs documents no reason for these on `/3/device`; the broadcast
    route's `BadRequestPayload` (apns.md §7) is the closest documented one, and `PayloadEmpty` would
    mislead a client whose body is not empty.
12. device token: unknown, or issued by the other environment → 400 `BadDeviceToken` ("invalid,
    or does not match the environment", apns.md §1); registered to another bundle, or addressed
    with a topic and push type its kind does not take (`_TOKEN_TOPICS`: activity and push-to-start
    tokens only `liveactivity` on `<bundle>.push-type.liveactivity`, forum 712499; the app's device
    token only `alert` or `background` on the bare bundle; the VoIP token only `voip` on
    `<bundle>.voip`; the widget token only `widgets` on `<bundle>.push-type.widgets`) → 400
    `DeviceTokenNotForTopic`; expired at or before `now` → 410 `ExpiredToken` with the time it
    expired; no longer registered → 410 `Unregistered` with the time it stopped being valid.
    `ExpiredToken` is checked first: an expired token is dead for every topic, while `Unregistered`
    concerns the token's topic (apns.md §3).

Headers are looked up through one dict built once per request (step 3 builds it).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

import msgspec

from engine.apns import wire
from engine.apns.reasons import Reason, status_of
from simulator.auth import ConnectionAuth

_MAX_EXPIRATION: Final = 2**63 - 1  # APNs stores the expiration as a 64-bit epoch; beyond is bad
_HEX_RE: Final = re.compile(r"[0-9A-Fa-f]+")
_UUID_RE: Final = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)
_PRIORITIES: Final = {"1": 1, "5": 5, "10": 10}  # exact spellings only: " 10" or "010" are bad
_DEFAULT_PRIORITY: Final = 10
_BACKGROUND_PRIORITY: Final = 5  # what an absent apns-priority means on a background push
_DEFAULT_PUSH_TYPE: Final = "alert"  # what APNs assumes for a bare-bundle topic without a type
_LIVE: Final = wire.LIVE_ACTIVITY_PUSH_TYPE
_TOKEN_AUTH_ONLY: Final = frozenset({_LIVE, "location"})  # apns.md §9: not over certificates


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """One complete HTTP/2 request as the server received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    """Every non-pseudo header in arrival order, lower-case names, duplicates kept."""
    body: bytes
    """The body as buffered: at most `wire.MAX_PAYLOAD` + 1 bytes, enough to judge every type."""
    body_size: int | None = None
    """The body's true size, when more than `body` arrived (None: `len(body)`)."""


class TokenKind(enum.Enum):
    """What a device token addresses (apns.md §6, "Tokens")."""

    ACTIVITY = "activity"  # per-activity update token (`Activity.pushToken`)
    PUSH_TO_START = "push-to-start"  # `pushToStartToken`, one per attributes type
    DEVICE = "device"  # the app's token for `alert` and `background` pushes
    VOIP = "voip"  # PushKit's VoIP token (`voip` pushes only)
    WIDGETS = "widgets"  # the app's widget token (iOS 26 `widgets` pushes only)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the simulated device registry knows about a token."""

    bundle_id: str
    kind: TokenKind
    unregistered_at_ms: int | None = None
    """Set once the token stopped being valid: pushes get 410 `Unregistered` with this time."""
    environment: str = "sandbox"
    """The APNs environment that issued the token (`sandbox` or `production`, apns.md §1)."""
    expired_at_ms: int | None = None
    """From this instant (unix ms) on, pushes get 410 `ExpiredToken` with it (apns.md §3)."""


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """What a TLS client certificate from the simulator's CA says about its holder (apns.md §9)."""

    bundle_id: str | None
    """The subject UID: the app the certificate was issued for (None: it names none)."""
    environments: frozenset[str]
    """The APNs environments its Apple extensions allow (`sandbox`, `production`; both for a
    universal certificate, none for a certificate that is no APNs certificate)."""
    topics: frozenset[str]
    """Every topic it covers: the bundle id and those of its topics extension."""


class TokenDirectory(Protocol):
    """The simulated device registry, as the validator sees it."""

    def lookup(self, token: str) -> TokenInfo | None:
        """The token's registration (lower-case hex), or None for a token APNs never issued."""
        ...


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """What the simulated APNs account allows."""

    bundle_ids: frozenset[str]
    """Bundle ids the configured key may push to (each with any push-type suffix)."""
    max_payload: int = wire.MAX_DEVICE_PAYLOAD
    max_voip_payload: int = wire.MAX_VOIP_PAYLOAD


@dataclass(frozen=True, slots=True)
class DevicePush:
    """An accepted `/3/device` request, parsed."""

    token: str
    """Device token, lower-case hex."""
    push_type: str
    """`apns-push-type`, or the type implied by the topic when the header is absent."""
    topic: str
    bundle_id: str
    priority: int
    expiration: int | None
    apns_id: str | None
    """`apns-id` lower-cased, or None if the request carried none."""
    collapse_id: str | None
    payload: dict[str, Any]
    body: bytes
    token_info: TokenInfo


@dataclass(frozen=True, slots=True)
class Rejection:
    """An APNs error answer: reason, status and, for 410 only, when the token stopped working."""

    reason: Reason
    status: int
    timestamp_ms: int | None = None

    @classmethod
    def of(cls, reason: Reason, timestamp_ms: int | None = None) -> Rejection:
        """The rejection for `reason`, with the status the reason table gives it."""
        if timestamp_ms is None:
            return _REJECTIONS[reason]
        return cls(reason, status_of(reason), timestamp_ms)

    def body(self) -> bytes:
        """The exact APNs JSON error body, compact (apns.md §3)."""
        if self.timestamp_ms is None:
            return b'{"reason":"%s"}' % self.reason.value.encode("ascii")
        return b'{"reason":"%s","timestamp":%d}' % (
            self.reason.value.encode("ascii"),
            self.timestamp_ms,
        )


_REJECTIONS: Final = {r: Rejection(r, status_of(r)) for r in Reason}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one request: exactly one of `push` and `rejection` is set."""

    push: DevicePush | None
    rejection: Rejection | None
    auth_ok: bool
    """The request carried a valid provider token (for the stream-limit warm-up, apns.md §4)."""


# --- routes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRoute:
    """`/3/device/<token>`; the token is as sent (possibly empty, not yet checked)."""

    token: str


@dataclass(frozen=True, slots=True)
class BroadcastRoute:
    """`/4/broadcasts/apps/<bundle>` (iOS 18 channels, apns.md §7)."""

    bundle_id: str


Route: TypeAlias = DeviceRoute | BroadcastRoute | None
"""Where a request goes; None when no APNs route matches."""


def route(method: str, path: str) -> Route:
    """The route `path` names. `method` is for routes that differ by method (channel management)."""
    del method  # both current routes are POST-only; the method check is its own step
    if "?" in path or "#" in path:
        return None
    if path.startswith(wire.DEVICE_PATH_PREFIX):
        token = path[len(wire.DEVICE_PATH_PREFIX) :]
        return None if "/" in token else DeviceRoute(token)
    if path.startswith(wire.BROADCAST_PATH_PREFIX):
        bundle = path[len(wire.BROADCAST_PATH_PREFIX) :]
        return BroadcastRoute(bundle) if bundle and "/" not in bundle else None
    return None


# --- the steps -------------------------------------------------------------------------------


class _Ctx:
    """Per-request scratch space: the inputs, and what each step has parsed so far."""

    __slots__ = (
        "apns_id",
        "auth",
        "auth_ok",
        "bundle_id",
        "certificate",
        "collapse_id",
        "config",
        "directory",
        "environment",
        "expiration",
        "headers",
        "now",
        "payload",
        "priority",
        "push_type",
        "request",
        "token",
        "token_info",
        "topic",
        "topic_type",
    )

    def __init__(
        self,
        request: IncomingRequest,
        auth: ConnectionAuth,
        config: ValidationConfig,
        directory: TokenDirectory,
        now: float,
        environment: str,
        certificate: ClientCertificate | None,
    ) -> None:
        self.request = request
        self.auth = auth
        self.config = config
        self.directory = directory
        self.now = now
        self.environment = environment
        self.certificate = certificate
        self.headers: dict[str, str] = {}
        self.auth_ok = False
        self.token = ""
        self.topic = ""
        self.bundle_id = ""
        self.topic_type: str | None = None  # push type implied by the topic's suffix
        self.push_type = _DEFAULT_PUSH_TYPE
        self.priority = _DEFAULT_PRIORITY
        self.expiration: int | None = None
        self.apns_id: str | None = None
        self.collapse_id: str | None = None
        self.payload: dict[str, Any] = {}
        self.token_info: TokenInfo | None = None


_Step: TypeAlias = Callable[[_Ctx], Rejection | None]


def _reject(reason: Reason) -> Rejection:
    return _REJECTIONS[reason]


def _check_method(ctx: _Ctx) -> Rejection | None:
    """Step 1."""
    return None if ctx.request.method == "POST" else _reject(Reason.METHOD_NOT_ALLOWED)


def _check_path(ctx: _Ctx) -> Rejection | None:
    """Step 2."""
    target = route(ctx.request.method, ctx.request.path)
    if not isinstance(target, DeviceRoute):
        # Seam for iOS 18 broadcast (apns.md §7): a BroadcastRoute will select its own step tuple
        # in `validate`; until then it is answered like any unknown path.
        return _reject(Reason.BAD_PATH)
    if not target.token:
        return _reject(Reason.MISSING_DEVICE_TOKEN)
    if _HEX_RE.fullmatch(target.token) is None:
        return _reject(Reason.BAD_DEVICE_TOKEN)
    ctx.token = target.token.lower()
    return None


def _check_duplicates(ctx: _Ctx) -> Rejection | None:
    """Step 3; builds the header dict every later step reads."""
    headers = ctx.request.headers
    ctx.headers = dict(headers)
    return None if len(ctx.headers) == len(headers) else _reject(Reason.DUPLICATE_HEADERS)


def _token_rejection(ctx: _Ctx) -> Rejection | None:
    """The provider-token rules (apns.md §2) applied to the request's `authorization` header."""
    value = ctx.headers.get(wire.H_AUTHORIZATION)
    raw = None if value is None else value.encode("utf-8", "surrogatepass")
    reason = ctx.auth.check(raw, ctx.now)
    return None if reason is None else _reject(reason)


def _check_auth(ctx: _Ctx) -> Rejection | None:
    """Step 4."""
    cert = ctx.certificate
    if cert is None:
        rejection = _token_rejection(ctx)
        if rejection is not None:
            return rejection
    elif (
        cert.bundle_id is None
        or cert.bundle_id not in ctx.config.bundle_ids
        or not cert.environments
    ):
        return _reject(Reason.BAD_CERTIFICATE)
    elif ctx.environment not in cert.environments:
        return _reject(Reason.BAD_CERTIFICATE_ENVIRONMENT)
    ctx.auth_ok = True
    return None


@functools.lru_cache(maxsize=16)
def _topic_table(bundle_ids: frozenset[str]) -> dict[str, tuple[str, str | None]]:
    """Every allowed topic → (bundle id, push type its suffix implies, or None). Once per config.

    Exact topics are looked up, never split on a suffix, so a bundle id that itself ends like a
    suffix (`com.example.voip`) is still read as the bare bundle it is.
    """
    table: dict[str, tuple[str, str | None]] = {}
    for bundle in bundle_ids:
        for push_type, suffix in wire.TOPIC_SUFFIXES.items():
            table.setdefault(bundle + suffix, (bundle, push_type))
    for bundle in bundle_ids:
        table[bundle] = (bundle, None)  # a bare bundle wins over a suffixed reading
    return table


def _suffix_type(topic: str) -> str | None:
    """The push type whose suffix `topic` ends with, for topics outside the allowed table."""
    for push_type, suffix in wire.TOPIC_SUFFIXES.items():
        if topic.endswith(suffix):
            return push_type
    return None


def _check_topic(ctx: _Ctx) -> Rejection | None:
    """Step 5."""
    topic = ctx.headers.get(wire.H_TOPIC)
    cert = ctx.certificate
    if topic is None:
        # Over a certificate the topic defaults to the one it covers; with several it is
        # ambiguous (apns.md §9). Step 4 made sure the certificate names a bundle.
        if cert is None or len(cert.topics) != 1:
            return _reject(Reason.MISSING_TOPIC)
        (topic,) = cert.topics
    if not topic or not topic.isascii() or not topic.isprintable() or " " in topic:
        return _reject(Reason.BAD_TOPIC)
    entry = _topic_table(ctx.config.bundle_ids).get(topic)
    if entry is None:
        suffix_type = _suffix_type(topic)
        if suffix_type is not None and topic == wire.TOPIC_SUFFIXES[suffix_type]:
            return _reject(Reason.BAD_TOPIC)  # a suffix with no bundle in front of it
        return _reject(Reason.TOPIC_DISALLOWED)
    if cert is not None and topic not in cert.topics:
        return _reject(Reason.TOPIC_DISALLOWED)
    ctx.topic = topic
    ctx.bundle_id, ctx.topic_type = entry
    return None


def _check_push_type(ctx: _Ctx) -> Rejection | None:
    """Step 6."""
    value = ctx.headers.get(wire.H_PUSH_TYPE)
    if value is None:
        if ctx.topic_type == _LIVE:
            return _reject(Reason.INVALID_PUSH_TYPE)
        ctx.push_type = ctx.topic_type or _DEFAULT_PUSH_TYPE
        return None
    if value not in wire.PUSH_TYPES:
        return _reject(Reason.INVALID_PUSH_TYPE)
    if ctx.topic_type is not None and ctx.topic_type != value:
        return _reject(Reason.INVALID_PUSH_TYPE)
    ctx.push_type = value
    if ctx.certificate is not None and value in _TOKEN_AUTH_ONLY:
        # Assumption (apns.md §9, "Could not confirm" 9): APNs wants token auth for these, so a
        # certificate alone is answered as a request without a provider token.
        return _token_rejection(ctx)
    return None


def _check_priority(ctx: _Ctx) -> Rejection | None:
    """Step 7. Only an explicit 10 is refused for `background`: the default is not the sender's."""
    value = ctx.headers.get(wire.H_PRIORITY)
    if value is None:
        if ctx.push_type == "background":
            ctx.priority = _BACKGROUND_PRIORITY  # the sender asked for nothing APNs refuses
        return None
    priority = _PRIORITIES.get(value)
    if priority is None:
        return _reject(Reason.BAD_PRIORITY)
    if ctx.push_type == _LIVE and priority not in wire.LIVE_ACTIVITY_PRIORITIES:
        return _reject(Reason.BAD_PRIORITY)
    if ctx.push_type == "background" and priority == 10:
        return _reject(Reason.BAD_PRIORITY)
    ctx.priority = priority
    return None


def _check_expiration(ctx: _Ctx) -> Rejection | None:
    """Step 8."""
    value = ctx.headers.get(wire.H_EXPIRATION)
    if value is None:
        return None
    digits = value.lstrip("0") or "0"
    # isdigit() alone admits non-ASCII digits; the length cap keeps int() far from its limits.
    if not (value.isascii() and value.isdigit()) or len(digits) > 19:
        return _reject(Reason.BAD_EXPIRATION_DATE)
    expiration = int(digits)
    if expiration > _MAX_EXPIRATION:
        return _reject(Reason.BAD_EXPIRATION_DATE)
    ctx.expiration = expiration
    return None


def _check_apns_id(ctx: _Ctx) -> Rejection | None:
    """Step 9."""
    value = ctx.headers.get(wire.H_ID)
    if value is None:
        return None
    if _UUID_RE.fullmatch(value) is None:
        return _reject(Reason.BAD_MESSAGE_ID)
    ctx.apns_id = value.lower()
    return None


def _check_collapse_id(ctx: _Ctx) -> Rejection | None:
    """Step 10."""
    value = ctx.headers.get(wire.H_COLLAPSE_ID)
    if value is None:
        return None
    if len(value.encode("utf-8", "surrogatepass")) > wire.MAX_COLLAPSE_ID:
        return _reject(Reason.BAD_COLLAPSE_ID)
    ctx.collapse_id = value
    return None


def _check_body(ctx: _Ctx) -> Rejection | None:
    """Step 11."""
    body = ctx.request.body
    limit = ctx.config.max_voip_payload if ctx.push_type == "voip" else ctx.config.max_payload
    size = len(body) if ctx.request.body_size is None else ctx.request.body_size
    if size > limit:  # judged on the true size, never on what was buffered (apns.md §5)
        return _reject(Reason.PAYLOAD_TOO_LARGE)
    if not body.strip():
        return _reject(Reason.PAYLOAD_EMPTY)
    try:
        payload = msgspec.json.decode(body)
    # DecodeError and UnicodeDecodeError (bad UTF-8 in a string) are ValueErrors; msgspec signals
    # deep nesting as RecursionError.
    except (ValueError, RecursionError):
        return _reject(Reason.BAD_REQUEST_PAYLOAD)
    if not isinstance(payload, dict):
        return _reject(Reason.BAD_REQUEST_PAYLOAD)
    if not payload:
        return _reject(Reason.PAYLOAD_EMPTY)
    if not isinstance(payload.get("aps"), dict):
        return _reject(Reason.BAD_REQUEST_PAYLOAD)
    ctx.payload = payload
    return None


_TOKEN_TOPICS: Final[dict[TokenKind, frozenset[tuple[str | None, str]]]] = {
    TokenKind.ACTIVITY: frozenset({(_LIVE, _LIVE)}),
    TokenKind.PUSH_TO_START: frozenset({(_LIVE, _LIVE)}),
    TokenKind.DEVICE: frozenset({(None, "alert"), (None, "background")}),
    TokenKind.VOIP: frozenset({("voip", "voip")}),
    TokenKind.WIDGETS: frozenset({("widgets", "widgets")}),
}
"""Each token kind → the (push type its topic's suffix implies, push type) pairs it takes.

A suffixed topic already fixes the push type (step 6), so a pair names a topic and a type at once;
None is the bare bundle id. The pairs are the ones `simulator.notifications` acts on.
"""


def _check_device_token(ctx: _Ctx) -> Rejection | None:
    """Step 12."""
    info = ctx.directory.lookup(ctx.token)
    if info is None or info.environment != ctx.environment:
        return _reject(Reason.BAD_DEVICE_TOKEN)  # the other environment never issued it (§1)
    if info.bundle_id != ctx.bundle_id:
        return _reject(Reason.DEVICE_TOKEN_NOT_FOR_TOPIC)
    if (ctx.topic_type, ctx.push_type) not in _TOKEN_TOPICS[info.kind]:
        return _reject(Reason.DEVICE_TOKEN_NOT_FOR_TOPIC)
    if info.expired_at_ms is not None and info.expired_at_ms <= ctx.now * 1000:
        return Rejection.of(Reason.EXPIRED_TOKEN, info.expired_at_ms)
    if info.unregistered_at_ms is not None:
        return Rejection.of(Reason.UNREGISTERED, info.unregistered_at_ms)
    ctx.token_info = info
    return None


_DEVICE_STEPS: Final[tuple[_Step, ...]] = (
    _check_method,
    _check_path,
    _check_duplicates,
    _check_auth,
    _check_topic,
    _check_push_type,
    _check_priority,
    _check_expiration,
    _check_apns_id,
    _check_collapse_id,
    _check_body,
    _check_device_token,
)
"""The numbered list of the module docstring, in order."""


def validate(
    request: IncomingRequest,
    *,
    auth: ConnectionAuth,
    config: ValidationConfig,
    directory: TokenDirectory,
    now: float,
    environment: str = "sandbox",
    certificate: ClientCertificate | None = None,
) -> Verdict:
    """What APNs answers to `request` at `now` (unix seconds) on a connection to the
    `environment` listener that presented `certificate` (None: token auth). Never raises on bad
    input."""
    ctx = _Ctx(request, auth, config, directory, now, environment, certificate)
    for step in _DEVICE_STEPS:
        rejection = step(ctx)
        if rejection is not None:
            return Verdict(None, rejection, ctx.auth_ok)
    assert ctx.token_info is not None  # the last step sets it or rejects
    push = DevicePush(
        token=ctx.token,
        push_type=ctx.push_type,
        topic=ctx.topic,
        bundle_id=ctx.bundle_id,
        priority=ctx.priority,
        expiration=ctx.expiration,
        apns_id=ctx.apns_id,
        collapse_id=ctx.collapse_id,
        payload=ctx.payload,
        body=request.body,
        token_info=ctx.token_info,
    )
    return Verdict(push, None, True)
