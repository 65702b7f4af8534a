"""The fake APNs's request validator (simulator.validation): every reason, the order, robustness."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.reasons import REASONS, Reason
from simulator.auth import ConnectionAuth, KeyRing
from simulator.validation import (
    BroadcastRoute,
    ClientCertificate,
    DeviceRoute,
    IncomingRequest,
    Rejection,
    TokenInfo,
    TokenKind,
    ValidationConfig,
    Verdict,
    route,
    validate,
)

T0 = 1_700_000_000
KEY = SigningKey.generate("KEYID00001", "TEAM000001")
OTHER_KEY = SigningKey.generate("KEYID00002", "TEAM000001")
RING = KeyRing.from_signing_keys(KEY, OTHER_KEY)
AUTH = ProviderToken.issue(KEY, T0).header_value.decode()

APP = "com.example.app"
OTHER_APP = "com.example.other"
LA_TOPIC = APP + ".push-type.liveactivity"
CONFIG = ValidationConfig(bundle_ids=frozenset({APP, OTHER_APP}))

ACTIVITY = "a1" * 32
PUSH_TO_START = "b2" * 40  # longer than a device token: no length is assumed (apns.md §1)
DEVICE = "c3" * 32
DEAD = "d4" * 32
OTHER_APPS = "e5" * 32
UNKNOWN = "f6" * 32
VOIP = "1e" * 32
WIDGETS = "2f" * 32
VOIP_TOPIC = APP + ".voip"
WIDGETS_TOPIC = APP + ".push-type.widgets"
PRODUCTION_TOKEN = "a7" * 32  # issued by the production environment
PRODUCTION_APP_TOKEN = "a8" * 32  # a production app token: wrong for a Live Activity topic too
EXPIRED = "b8" * 32
EXPIRED_AND_DEAD = "c9" * 32
EXPIRES_LATER = "da" * 32
DEAD_AT_MS = 1_699_999_000_123
EXPIRED_AT_MS = 1_699_998_000_456
TIMESTAMPS = {Reason.UNREGISTERED: DEAD_AT_MS, Reason.EXPIRED_TOKEN: EXPIRED_AT_MS}

# A client certificate for APP in the sandbox, covering the bundle, its VoIP and its Live Activity
# topics (apns.md §9), and a few that are wrong in one way each.
CERT = ClientCertificate(APP, frozenset({"sandbox"}), frozenset({APP, APP + ".voip", LA_TOPIC}))
SINGLE_TOPIC_CERT = ClientCertificate(APP, frozenset({"sandbox"}), frozenset({APP}))
UNIVERSAL_CERT = ClientCertificate(APP, frozenset({"sandbox", "production"}), frozenset({APP}))
PRODUCTION_CERT = ClientCertificate(APP, frozenset({"production"}), frozenset({APP}))
NO_BUNDLE_CERT = ClientCertificate(None, frozenset({"sandbox"}), frozenset())
FOREIGN_CERT = ClientCertificate(
    "com.evil.app", frozenset({"sandbox"}), frozenset({"com.evil.app"})
)
NO_ENVIRONMENT_CERT = ClientCertificate(APP, frozenset(), frozenset({APP}))


class Directory:
    """A tiny in-memory device registry."""

    def __init__(self, tokens: dict[str, TokenInfo]) -> None:
        self.tokens = tokens
        self.lookups: list[str] = []

    def lookup(self, token: str) -> TokenInfo | None:
        self.lookups.append(token)
        return self.tokens.get(token)


def _directory() -> Directory:
    return Directory(
        {
            ACTIVITY: TokenInfo(APP, TokenKind.ACTIVITY),
            PUSH_TO_START: TokenInfo(APP, TokenKind.PUSH_TO_START),
            DEVICE: TokenInfo(APP, TokenKind.DEVICE),
            VOIP: TokenInfo(APP, TokenKind.VOIP),
            WIDGETS: TokenInfo(APP, TokenKind.WIDGETS),
            DEAD: TokenInfo(APP, TokenKind.ACTIVITY, unregistered_at_ms=DEAD_AT_MS),
            OTHER_APPS: TokenInfo(OTHER_APP, TokenKind.ACTIVITY),
            PRODUCTION_TOKEN: TokenInfo(APP, TokenKind.ACTIVITY, environment="production"),
            PRODUCTION_APP_TOKEN: TokenInfo(APP, TokenKind.DEVICE, environment="production"),
            EXPIRED: TokenInfo(APP, TokenKind.ACTIVITY, expired_at_ms=EXPIRED_AT_MS),
            EXPIRED_AND_DEAD: TokenInfo(
                APP, TokenKind.ACTIVITY, unregistered_at_ms=DEAD_AT_MS, expired_at_ms=EXPIRED_AT_MS
            ),
            EXPIRES_LATER: TokenInfo(APP, TokenKind.ACTIVITY, expired_at_ms=T0 * 1000 + 1),
        }
    )


LA_BODY = json.dumps(
    {"aps": {"timestamp": T0, "event": "update", "content-state": {"score": 1}}}
).encode()


@dataclass
class Req:
    """A mutable request under construction; every field starts as a valid Live Activity push."""

    method: str = "POST"
    prefix: str = "/3/device/"
    token: str = ACTIVITY
    headers: dict[str, list[str]] = field(
        default_factory=lambda: {
            "authorization": [AUTH],
            "apns-topic": [LA_TOPIC],
            "apns-push-type": ["liveactivity"],
            "apns-priority": ["10"],
            "apns-expiration": ["0"],
            "apns-id": ["123e4567-e89b-12d3-a456-426614174000"],
            "apns-collapse-id": ["score"],
        }
    )
    body: bytes = LA_BODY
    directory: Directory = field(default_factory=_directory)
    auth: ConnectionAuth = field(default_factory=lambda: ConnectionAuth(RING))
    environment: str = "sandbox"
    certificate: ClientCertificate | None = None

    def put(self, **fields: object) -> Req:
        """Replace request fields (method, prefix, token, body, directory, auth, environment,
        certificate)."""
        for name, value in fields.items():
            setattr(self, name, value)
        return self

    def set(self, name: str, *values: str) -> Req:
        if values:
            self.headers[name] = list(values)
        else:
            self.headers.pop(name, None)
        return self

    def build(self) -> IncomingRequest:
        pairs = tuple((n, v) for n, vs in self.headers.items() for v in vs)
        return IncomingRequest(self.method, self.prefix + self.token, pairs, self.body)

    def run(self) -> Verdict:
        return validate(
            self.build(),
            auth=self.auth,
            config=CONFIG,
            directory=self.directory,
            now=T0,
            environment=self.environment,
            certificate=self.certificate,
        )


Mutation = Callable[[Req], object]


def _bound_to_other_key() -> ConnectionAuth:
    auth = ConnectionAuth(RING)
    assert auth.check(ProviderToken.issue(OTHER_KEY, T0).header_value, T0) is None
    return auth


def _freshly_adopted_other_token() -> ConnectionAuth:
    auth = ConnectionAuth(RING)
    assert auth.check(ProviderToken.issue(KEY, T0).header_value, T0 - 60) is None
    return auth


def _disabled_key() -> ConnectionAuth:
    ring = KeyRing.from_signing_keys(KEY, OTHER_KEY)
    ring.disable(KEY.key_id)
    return ConnectionAuth(ring)


def _over_cert(r: Req, cert: ClientCertificate = CERT) -> Req:
    """An `alert` push to the app token over a certificate connection, with no provider token."""
    return _alert_to_device(r).put(certificate=cert).set("authorization")


def _alert_to_device(r: Req) -> Req:
    return (
        r.put(token=DEVICE)
        .set("apns-topic", APP)
        .set("apns-push-type", "alert")
        .set("apns-priority", "10")
    )


def _to_app_token(token: str, topic: str, push_type: str | None) -> Callable[[Req], Req]:
    """A push of `push_type` (None: no header) on `topic` to one of the app's own tokens."""

    def mutate(r: Req) -> Req:
        r.put(token=token).set("apns-topic", topic).set("apns-priority", "5")
        return r.set("apns-push-type", *([push_type] if push_type else []))

    return mutate


# Every token kind against every (topic, push type) pair that validator step 12 judges: the kind
# takes its own pairs and answers DeviceTokenNotForTopic to every other one.
_PAIRS_BY_KIND = {
    ACTIVITY: {(LA_TOPIC, "liveactivity")},
    PUSH_TO_START: {(LA_TOPIC, "liveactivity")},
    DEVICE: {(APP, "alert"), (APP, "background")},
    VOIP: {(VOIP_TOPIC, "voip")},
    WIDGETS: {(WIDGETS_TOPIC, "widgets")},
}
_ALL_PAIRS = sorted(
    {*set().union(*_PAIRS_BY_KIND.values()), (APP, "voip"), (APP, "widgets"),
     (APP, "liveactivity")}
)  # fmt: skip
TOKEN_TOPIC_CASES = [
    (token, topic, push_type, (topic, push_type) in wanted)
    for token, wanted in _PAIRS_BY_KIND.items()
    for topic, push_type in _ALL_PAIRS
]


# (id, mutation, expected reason); the mutation turns the valid base request into a faulty one.
REJECTIONS: list[tuple[str, Mutation, Reason]] = [
    ("GET", lambda r: r.put(method="GET"), Reason.METHOD_NOT_ALLOWED),
    ("other path", lambda r: r.put(prefix="/3/devices/"), Reason.BAD_PATH),
    ("version 2", lambda r: r.put(prefix="/2/device/"), Reason.BAD_PATH),
    ("extra segment", lambda r: r.put(token=ACTIVITY + "/x"), Reason.BAD_PATH),
    ("query", lambda r: r.put(token=ACTIVITY + "?x=1"), Reason.BAD_PATH),
    ("no slash", lambda r: r.put(prefix="/3/device", token=""), Reason.BAD_PATH),
    ("broadcast path", lambda r: r.put(prefix="/4/broadcasts/apps/", token=APP), Reason.BAD_PATH),
    ("empty token", lambda r: r.put(token=""), Reason.MISSING_DEVICE_TOKEN),
    ("token not hex", lambda r: r.put(token="xyz"), Reason.BAD_DEVICE_TOKEN),
    ("token with dash", lambda r: r.put(token="ab-cd"), Reason.BAD_DEVICE_TOKEN),
    ("token non-ascii digit", lambda r: r.put(token="ab١٢"), Reason.BAD_DEVICE_TOKEN),
    (
        "duplicate header",
        lambda r: r.set("apns-topic", LA_TOPIC, LA_TOPIC),
        Reason.DUPLICATE_HEADERS,
    ),
    ("duplicate custom header", lambda r: r.set("x-trace", "1", "2"), Reason.DUPLICATE_HEADERS),
    ("no authorization", lambda r: r.set("authorization"), Reason.MISSING_PROVIDER_TOKEN),
    ("empty authorization", lambda r: r.set("authorization", ""), Reason.MISSING_PROVIDER_TOKEN),
    (
        "garbage authorization",
        lambda r: r.set("authorization", "bearer junk"),
        Reason.INVALID_PROVIDER_TOKEN,
    ),
    (
        "expired token",
        lambda r: r.set("authorization", ProviderToken.issue(KEY, T0 - 3601).header_value.decode()),
        Reason.EXPIRED_PROVIDER_TOKEN,
    ),
    (
        "unrelated key id",
        lambda r: r.put(auth=_bound_to_other_key()),
        Reason.UNRELATED_KEY_ID_IN_TOKEN,
    ),
    (
        "token switch too soon",
        lambda r: r.put(auth=_freshly_adopted_other_token()),
        Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES,
    ),
    ("no topic", lambda r: r.set("apns-topic"), Reason.MISSING_TOPIC),
    ("empty topic", lambda r: r.set("apns-topic", ""), Reason.BAD_TOPIC),
    ("topic with space", lambda r: r.set("apns-topic", "com.example app"), Reason.BAD_TOPIC),
    ("topic with tab", lambda r: r.set("apns-topic", "com.example\tapp"), Reason.BAD_TOPIC),
    ("non-ascii topic", lambda r: r.set("apns-topic", "com.exämple.app"), Reason.BAD_TOPIC),
    (
        "bare suffix topic",
        lambda r: r.set("apns-topic", ".push-type.liveactivity"),
        Reason.BAD_TOPIC,
    ),
    ("foreign bundle", lambda r: r.set("apns-topic", "com.evil.app"), Reason.TOPIC_DISALLOWED),
    (
        "foreign live topic",
        lambda r: r.set("apns-topic", "com.evil.app.push-type.liveactivity"),
        Reason.TOPIC_DISALLOWED,
    ),
    (
        "unknown suffix",
        lambda r: r.set("apns-topic", APP + ".push-type.nope"),
        Reason.TOPIC_DISALLOWED,
    ),
    ("unknown push type", lambda r: r.set("apns-push-type", "bogus"), Reason.INVALID_PUSH_TYPE),
    ("empty push type", lambda r: r.set("apns-push-type", ""), Reason.INVALID_PUSH_TYPE),
    ("push type case", lambda r: r.set("apns-push-type", "LiveActivity"), Reason.INVALID_PUSH_TYPE),
    ("alert on live topic", lambda r: r.set("apns-push-type", "alert"), Reason.INVALID_PUSH_TYPE),
    ("voip on live topic", lambda r: r.set("apns-push-type", "voip"), Reason.INVALID_PUSH_TYPE),
    (
        "liveactivity on voip topic",
        lambda r: r.set("apns-topic", APP + ".voip"),
        Reason.INVALID_PUSH_TYPE,
    ),
    ("live topic without type", lambda r: r.set("apns-push-type"), Reason.INVALID_PUSH_TYPE),
    ("priority 7", lambda r: r.set("apns-priority", "7"), Reason.BAD_PRIORITY),
    ("priority word", lambda r: r.set("apns-priority", "high"), Reason.BAD_PRIORITY),
    ("priority padded", lambda r: r.set("apns-priority", " 10"), Reason.BAD_PRIORITY),
    ("priority leading zero", lambda r: r.set("apns-priority", "010"), Reason.BAD_PRIORITY),
    ("live priority 1", lambda r: r.set("apns-priority", "1"), Reason.BAD_PRIORITY),
    (
        "background priority 10",
        lambda r: _alert_to_device(r).set("apns-push-type", "background"),
        Reason.BAD_PRIORITY,
    ),
    ("expiration negative", lambda r: r.set("apns-expiration", "-1"), Reason.BAD_EXPIRATION_DATE),
    ("expiration word", lambda r: r.set("apns-expiration", "soon"), Reason.BAD_EXPIRATION_DATE),
    ("expiration fraction", lambda r: r.set("apns-expiration", "1.5"), Reason.BAD_EXPIRATION_DATE),
    ("expiration empty", lambda r: r.set("apns-expiration", ""), Reason.BAD_EXPIRATION_DATE),
    (
        "expiration arabic digits",
        lambda r: r.set("apns-expiration", "١٢"),
        Reason.BAD_EXPIRATION_DATE,
    ),
    (
        "expiration beyond 64 bits",
        lambda r: r.set("apns-expiration", str(2**63)),
        Reason.BAD_EXPIRATION_DATE,
    ),
    ("expiration huge", lambda r: r.set("apns-expiration", "9" * 5000), Reason.BAD_EXPIRATION_DATE),
    ("apns-id word", lambda r: r.set("apns-id", "nope"), Reason.BAD_MESSAGE_ID),
    (
        "apns-id without dashes",
        lambda r: r.set("apns-id", "123e4567e89b12d3a456426614174000"),
        Reason.BAD_MESSAGE_ID,
    ),
    (
        "apns-id in braces",
        lambda r: r.set("apns-id", "{123e4567-e89b-12d3-a456-426614174000}"),
        Reason.BAD_MESSAGE_ID,
    ),
    (
        "apns-id short group",
        lambda r: r.set("apns-id", "123e4567-e89b-12d3-a456-42661417400"),
        Reason.BAD_MESSAGE_ID,
    ),
    ("collapse id 65 bytes", lambda r: r.set("apns-collapse-id", "x" * 65), Reason.BAD_COLLAPSE_ID),
    (
        "collapse id 33 two-byte chars",
        lambda r: r.set("apns-collapse-id", "é" * 33),
        Reason.BAD_COLLAPSE_ID,
    ),
    ("body 4097 bytes", lambda r: r.put(body=_padded(4097)), Reason.PAYLOAD_TOO_LARGE),
    (
        "alert body 4097 bytes",
        lambda r: _alert_to_device(r).put(body=_padded(4097)),
        Reason.PAYLOAD_TOO_LARGE,
    ),
    (
        "widgets body 4097 bytes",
        lambda r: _to_app_token(WIDGETS, WIDGETS_TOPIC, "widgets")(r).put(body=_padded(4097)),
        Reason.PAYLOAD_TOO_LARGE,
    ),
    (
        "voip body 5121 bytes",
        lambda r: (
            _alert_to_device(r)
            .set("apns-topic", APP + ".voip")
            .set("apns-push-type", "voip")
            .put(body=_padded(5121))
        ),
        Reason.PAYLOAD_TOO_LARGE,
    ),
    ("empty body", lambda r: r.put(body=b""), Reason.PAYLOAD_EMPTY),
    ("blank body", lambda r: r.put(body=b" \n"), Reason.PAYLOAD_EMPTY),
    ("empty object", lambda r: r.put(body=b"{}"), Reason.PAYLOAD_EMPTY),
    ("not json", lambda r: r.put(body=b"not json"), Reason.BAD_REQUEST_PAYLOAD),
    ("not utf-8", lambda r: r.put(body=b'{"aps":"\xff"}'), Reason.BAD_REQUEST_PAYLOAD),
    ("json array", lambda r: r.put(body=b"[1]"), Reason.BAD_REQUEST_PAYLOAD),
    ("no aps", lambda r: r.put(body=b'{"x":1}'), Reason.BAD_REQUEST_PAYLOAD),
    ("aps not object", lambda r: r.put(body=b'{"aps":1}'), Reason.BAD_REQUEST_PAYLOAD),
    (
        "deep nesting",
        lambda r: r.put(body=b'{"aps":' + b"[" * 2000 + b"]" * 2000 + b"}"),
        Reason.BAD_REQUEST_PAYLOAD,
    ),
    ("unknown token", lambda r: r.put(token=UNKNOWN), Reason.BAD_DEVICE_TOKEN),
    ("token of another app", lambda r: r.put(token=OTHER_APPS), Reason.DEVICE_TOKEN_NOT_FOR_TOPIC),
    (
        "activity token, bare topic",
        lambda r: r.set("apns-topic", APP).set("apns-push-type", "alert"),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    (
        "activity token, bare topic, liveactivity type",
        lambda r: r.set("apns-topic", APP),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    (
        "push-to-start token, bare topic",
        lambda r: r.put(token=PUSH_TO_START).set("apns-topic", APP).set("apns-push-type", "alert"),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    ("live push to app token", lambda r: r.put(token=DEVICE), Reason.DEVICE_TOKEN_NOT_FOR_TOPIC),
    (
        "alert to the VoIP token",
        lambda r: _alert_to_device(r).put(token=VOIP),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    (
        "voip to the device token",
        _to_app_token(DEVICE, VOIP_TOPIC, "voip"),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    (
        "widgets to the VoIP token",
        _to_app_token(VOIP, WIDGETS_TOPIC, None),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    (
        "voip type on the bare bundle to the VoIP token",
        _to_app_token(VOIP, APP, "voip"),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    (
        "liveactivity type, bare topic, app token",
        lambda r: r.put(token=DEVICE).set("apns-topic", APP),
        Reason.DEVICE_TOKEN_NOT_FOR_TOPIC,
    ),
    ("unregistered", lambda r: r.put(token=DEAD), Reason.UNREGISTERED),
    # Environments (apns.md §1): a token works only on the endpoint of the environment that issued
    # it; to the other one it is as unknown as any.
    ("sandbox token, production endpoint", lambda r: r.put(environment="production"),
     Reason.BAD_DEVICE_TOKEN),
    ("production token, sandbox endpoint", lambda r: r.put(token=PRODUCTION_TOKEN),
     Reason.BAD_DEVICE_TOKEN),
    ("other environment before wrong topic", lambda r: r.put(token=PRODUCTION_APP_TOKEN),
     Reason.BAD_DEVICE_TOKEN),
    ("expired token", lambda r: r.put(token=EXPIRED), Reason.EXPIRED_TOKEN),
    ("expired before unregistered", lambda r: r.put(token=EXPIRED_AND_DEAD), Reason.EXPIRED_TOKEN),
    ("disabled signing key", lambda r: r.put(auth=_disabled_key()), Reason.FORBIDDEN),
    # Certificate auth (apns.md §9).
    ("cert naming no bundle", lambda r: _over_cert(r, NO_BUNDLE_CERT), Reason.BAD_CERTIFICATE),
    ("cert of another account", lambda r: _over_cert(r, FOREIGN_CERT), Reason.BAD_CERTIFICATE),
    ("cert of no environment", lambda r: _over_cert(r, NO_ENVIRONMENT_CERT),
     Reason.BAD_CERTIFICATE),
    ("production cert, sandbox endpoint", lambda r: _over_cert(r, PRODUCTION_CERT),
     Reason.BAD_CERTIFICATE_ENVIRONMENT),
    ("sandbox cert, production endpoint", lambda r: _over_cert(r).put(environment="production"),
     Reason.BAD_CERTIFICATE_ENVIRONMENT),
    ("cert, topic it does not cover",
     lambda r: _over_cert(r).set("apns-topic", APP + ".complication").set("apns-push-type"),
     Reason.TOPIC_DISALLOWED),
    ("cert, topic of another app", lambda r: _over_cert(r).set("apns-topic", OTHER_APP),
     Reason.TOPIC_DISALLOWED),
    ("cert of several topics, no topic", lambda r: _over_cert(r).set("apns-topic"),
     Reason.MISSING_TOPIC),
    ("cert, live activity without a token", lambda r: r.put(certificate=CERT).set("authorization"),
     Reason.MISSING_PROVIDER_TOKEN),
    ("cert, live activity with an expired token",
     lambda r: r.put(certificate=CERT).set(
         "authorization", ProviderToken.issue(KEY, T0 - 3601).header_value.decode()
     ),
     Reason.EXPIRED_PROVIDER_TOKEN),
    ("cert, location without a token",
     lambda r: _over_cert(r, replace(CERT, topics=CERT.topics | {APP + ".location-query"}))
     .set("apns-topic", APP + ".location-query").set("apns-push-type", "location"),
     Reason.MISSING_PROVIDER_TOKEN),
]  # fmt: skip


def _padded(size: int) -> bytes:
    """A valid payload of exactly `size` bytes."""
    base = b'{"aps":{"event":"update"},"pad":""}'
    return base[:-2] + b"x" * (size - len(base)) + b'"}'


@pytest.mark.parametrize(
    ("mutate", "reason"), [row[1:] for row in REJECTIONS], ids=[row[0] for row in REJECTIONS]
)
def test_each_reason(mutate: Mutation, reason: Reason) -> None:
    req = Req()
    mutate(req)
    verdict = req.run()
    assert verdict.push is None
    assert verdict.rejection is not None
    assert verdict.rejection.reason is reason
    assert verdict.rejection.status == REASONS[reason].status
    assert json.loads(verdict.rejection.body()) == (
        {"reason": reason.value, "timestamp": TIMESTAMPS[reason]}
        if reason in TIMESTAMPS
        else {"reason": reason.value}
    )


def test_every_reason_the_validator_can_return_is_covered() -> None:
    covered = {row[2] for row in REJECTIONS}
    expected = {
        Reason.METHOD_NOT_ALLOWED, Reason.BAD_PATH, Reason.MISSING_DEVICE_TOKEN,
        Reason.BAD_DEVICE_TOKEN, Reason.DUPLICATE_HEADERS, Reason.MISSING_PROVIDER_TOKEN,
        Reason.INVALID_PROVIDER_TOKEN, Reason.EXPIRED_PROVIDER_TOKEN,
        Reason.UNRELATED_KEY_ID_IN_TOKEN, Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES,
        Reason.MISSING_TOPIC, Reason.BAD_TOPIC, Reason.TOPIC_DISALLOWED, Reason.INVALID_PUSH_TYPE,
        Reason.BAD_PRIORITY, Reason.BAD_EXPIRATION_DATE, Reason.BAD_MESSAGE_ID,
        Reason.BAD_COLLAPSE_ID, Reason.PAYLOAD_TOO_LARGE, Reason.PAYLOAD_EMPTY,
        Reason.BAD_REQUEST_PAYLOAD, Reason.DEVICE_TOKEN_NOT_FOR_TOPIC, Reason.UNREGISTERED,
        Reason.EXPIRED_TOKEN, Reason.FORBIDDEN, Reason.BAD_CERTIFICATE,
        Reason.BAD_CERTIFICATE_ENVIRONMENT,
    }  # fmt: skip
    assert covered == expected


def test_error_bodies_are_exact_bytes() -> None:
    assert Rejection.of(Reason.BAD_TOPIC).body() == b'{"reason":"BadTopic"}'
    gone = Rejection.of(Reason.UNREGISTERED, DEAD_AT_MS)
    assert gone == Rejection(Reason.UNREGISTERED, 410, DEAD_AT_MS)
    assert gone.body() == b'{"reason":"Unregistered","timestamp":1699999000123}'
    req = Req()
    req.token = DEAD
    rejection = req.run().rejection
    assert rejection == gone
    assert rejection is not None and rejection.body() == gone.body()


# --- accepted requests ------------------------------------------------------------------------


def test_accepted_live_activity_update() -> None:
    req = Req()
    verdict = req.run()
    assert verdict.rejection is None
    assert verdict.auth_ok
    push = verdict.push
    assert push is not None
    assert push.token == ACTIVITY
    assert push.push_type == "liveactivity"
    assert push.topic == LA_TOPIC
    assert push.bundle_id == APP
    assert push.priority == 10
    assert push.expiration == 0
    assert push.apns_id == "123e4567-e89b-12d3-a456-426614174000"
    assert push.collapse_id == "score"
    assert push.payload == json.loads(LA_BODY)
    assert push.body == LA_BODY
    assert push.token_info == TokenInfo(APP, TokenKind.ACTIVITY)


def test_accepted_with_optional_headers_absent() -> None:
    req = Req()
    for name in ("apns-priority", "apns-expiration", "apns-id", "apns-collapse-id"):
        req.set(name)
    push = req.run().push
    assert push is not None
    assert push.priority == 10
    assert (push.expiration, push.apns_id, push.collapse_id) == (None, None, None)


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        # Upper-case token: looked up and reported in lower case.
        (lambda r: r.put(token=ACTIVITY.upper()), lambda p: p.token == ACTIVITY),
        # Upper-case apns-id is accepted (APNs itself issues them) and lower-cased.
        (lambda r: r.set("apns-id", "123E4567-E89B-12D3-A456-426614174000"),
         lambda p: p.apns_id == "123e4567-e89b-12d3-a456-426614174000"),
        (lambda r: r.set("apns-priority", "5"), lambda p: p.priority == 5),
        (lambda r: r.set("apns-expiration", "0001700003600"), lambda p: p.expiration == 1700003600),
        (lambda r: r.set("apns-collapse-id", "x" * 64), lambda p: p.collapse_id == "x" * 64),
        (lambda r: r.put(body=_padded(4096)), lambda p: len(p.body) == 4096),
        (lambda r: r.put(body=b'{"aps":{}}'), lambda p: p.payload == {"aps": {}}),
        # Push-to-start goes to the same path, topic and push type (apns.md §6).
        (lambda r: r.put(token=PUSH_TO_START),
         lambda p: p.token_info.kind is TokenKind.PUSH_TO_START),
        # Plain app pushes, with the push type implied by the topic when absent.
        (lambda r: _alert_to_device(r), lambda p: p.push_type == "alert"),
        (lambda r: _alert_to_device(r).set("apns-push-type"), lambda p: p.push_type == "alert"),
        (lambda r: _alert_to_device(r).set("apns-push-type", "background")
         .set("apns-priority", "5"),
         lambda p: p.push_type == "background" and p.priority == 5),
        # Absent, the priority of a background push is 5, the only one APNs takes (step 7).
        (lambda r: _alert_to_device(r).set("apns-push-type", "background")
         .set("apns-priority"),
         lambda p: p.push_type == "background" and p.priority == 5),
        (lambda r: _alert_to_device(r).set("apns-priority", "1"), lambda p: p.priority == 1),
        (lambda r: _alert_to_device(r).set("apns-priority"), lambda p: p.priority == 10),
        (lambda r: _alert_to_device(r).put(body=_padded(4096)), lambda p: len(p.body) == 4096),
        (lambda r: _alert_to_device(r).put(token=VOIP).set("apns-topic", APP + ".voip")
         .set("apns-push-type").put(body=_padded(5120)),
         lambda p: p.push_type == "voip" and len(p.body) == 5120
         and p.token_info.kind is TokenKind.VOIP),
        (_to_app_token(WIDGETS, WIDGETS_TOPIC, None),
         lambda p: p.push_type == "widgets" and p.token_info.kind is TokenKind.WIDGETS),
        (lambda r: r.set("x-custom", "anything"), lambda p: True),
        # A token that expires after `now` still works.
        (lambda r: r.put(token=EXPIRES_LATER), lambda p: p.token == EXPIRES_LATER),
        # Each environment's endpoint takes its own tokens.
        (lambda r: r.put(token=PRODUCTION_TOKEN, environment="production"),
         lambda p: p.token_info.environment == "production"),
        # Certificate auth: no provider token needed, and a stray header is ignored (apns.md §1).
        (lambda r: _over_cert(r), lambda p: p.push_type == "alert" and p.topic == APP),
        (lambda r: _over_cert(r).set("authorization", "bearer junk"), lambda p: p.topic == APP),
        (lambda r: _over_cert(r, SINGLE_TOPIC_CERT).set("apns-topic"), lambda p: p.topic == APP),
        (lambda r: _over_cert(r, UNIVERSAL_CERT)
         .put(environment="production", token=PRODUCTION_APP_TOKEN),
         lambda p: p.token == PRODUCTION_APP_TOKEN),
        (lambda r: _over_cert(r).put(token=VOIP).set("apns-topic", APP + ".voip")
         .set("apns-push-type", "voip"),
         lambda p: p.push_type == "voip"),
        # A Live Activity push over a certificate with a valid provider token as well.
        (lambda r: r.put(certificate=CERT), lambda p: p.push_type == "liveactivity"),
    ],
    ids=[
        "upper-case token", "upper-case apns-id", "priority 5", "expiration leading zeros",
        "collapse id 64", "body 4096", "empty aps", "push-to-start", "alert", "alert implied",
        "background 5", "background implied 5", "alert priority 1", "alert implied 10",
        "alert 4096", "voip 5120 implied", "widgets implied", "unknown header ignored",
        "expires later", "production endpoint", "cert alert", "cert ignores authorization",
        "single-topic cert, topic implied", "universal cert in production", "cert voip",
        "cert live activity with token",
    ],
)  # fmt: skip
def test_accepted_variants(mutate: Mutation, check: Callable[[object], bool]) -> None:
    req = Req()
    mutate(req)
    verdict = req.run()
    assert verdict.rejection is None, verdict.rejection
    assert verdict.push is not None and check(verdict.push)


@pytest.mark.parametrize(
    ("token", "topic", "push_type", "accepted"),
    TOKEN_TOPIC_CASES,
    ids=[
        f"{t[:2]}-{topic.removeprefix(APP) or 'bare'}-{p}" for t, topic, p, _ in TOKEN_TOPIC_CASES
    ],
)
def test_each_token_kind_takes_only_its_own_topics(
    token: str, topic: str, push_type: str, accepted: bool
) -> None:
    req = Req()
    _to_app_token(token, topic, push_type)(req)
    verdict = req.run()
    if accepted:
        assert verdict.push is not None, verdict.rejection
        assert (verdict.push.topic, verdict.push.push_type) == (topic, push_type)
    else:
        assert verdict.rejection == Rejection.of(Reason.DEVICE_TOKEN_NOT_FOR_TOPIC)


def test_directory_is_queried_with_lower_case_token() -> None:
    req = Req()
    req.token = ACTIVITY.upper()
    req.run()
    assert req.directory.lookups == [ACTIVITY]


def test_bundle_id_that_ends_like_a_suffix() -> None:
    config = ValidationConfig(bundle_ids=frozenset({"com.example.voip"}))
    req = Req()
    req.token = DEVICE
    req.set("apns-topic", "com.example.voip").set("apns-push-type", "alert")
    req.directory.tokens[DEVICE] = TokenInfo("com.example.voip", TokenKind.DEVICE)
    verdict = validate(req.build(), auth=req.auth, config=config, directory=req.directory, now=T0)
    assert verdict.push is not None
    assert verdict.push.bundle_id == "com.example.voip"


# --- order ------------------------------------------------------------------------------------

# One fault per step, in step order; the faults touch different parts of the request, so any two
# can be combined.
ORDERED_FAULTS: list[tuple[Mutation, Reason]] = [
    (lambda r: r.put(method="PUT"), Reason.METHOD_NOT_ALLOWED),
    (lambda r: r.put(prefix="/3/devices/"), Reason.BAD_PATH),
    (lambda r: r.set("x-trace", "1", "2"), Reason.DUPLICATE_HEADERS),
    (lambda r: r.set("authorization"), Reason.MISSING_PROVIDER_TOKEN),
    (lambda r: r.set("apns-topic", "com.evil.app"), Reason.TOPIC_DISALLOWED),
    (lambda r: r.set("apns-push-type", "bogus"), Reason.INVALID_PUSH_TYPE),
    (lambda r: r.set("apns-priority", "7"), Reason.BAD_PRIORITY),
    (lambda r: r.set("apns-expiration", "soon"), Reason.BAD_EXPIRATION_DATE),
    (lambda r: r.set("apns-id", "nope"), Reason.BAD_MESSAGE_ID),
    (lambda r: r.set("apns-collapse-id", "x" * 65), Reason.BAD_COLLAPSE_ID),
    (lambda r: r.put(body=b"not json"), Reason.BAD_REQUEST_PAYLOAD),
    (lambda r: r.put(directory=Directory({})), Reason.BAD_DEVICE_TOKEN),
]

_PAIRS = list(itertools.combinations(range(len(ORDERED_FAULTS)), 2))


@pytest.mark.parametrize(("first", "second"), _PAIRS, ids=[f"{a}-{b}" for a, b in _PAIRS])
def test_earlier_step_wins(first: int, second: int) -> None:
    req = Req()
    ORDERED_FAULTS[second][0](req)
    ORDERED_FAULTS[first][0](req)
    verdict = req.run()
    assert verdict.rejection is not None
    assert verdict.rejection.reason is ORDERED_FAULTS[first][1]


def test_auth_ok_tracks_the_auth_step() -> None:
    early = Req()
    early.method = "GET"
    assert not early.run().auth_ok  # rejected before the token was looked at
    denied = Req().set("authorization", "bearer junk")
    assert not denied.run().auth_ok
    late = Req().set("apns-priority", "7")
    verdict = late.run()
    assert verdict.auth_ok and verdict.rejection is not None
    assert late.auth.has_valid_token


def test_auth_ok_over_a_certificate() -> None:
    wrong = _over_cert(Req(), PRODUCTION_CERT)
    assert not wrong.run().auth_ok
    late = _over_cert(Req()).set("apns-priority", "7")
    verdict = late.run()
    assert verdict.auth_ok and verdict.rejection is not None
    assert verdict.rejection.reason is Reason.BAD_PRIORITY
    assert not late.auth.has_valid_token  # the certificate authenticated it, not a token


# --- routes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/3/device/abc", DeviceRoute("abc")),
        ("/3/device/", DeviceRoute("")),
        ("/3/device/a/b", None),
        ("/3/device/abc?x", None),
        ("/3/device", None),
        ("/4/broadcasts/apps/com.example.app", BroadcastRoute("com.example.app")),
        ("/4/broadcasts/apps/", None),
        ("/4/broadcasts/apps/a/b", None),
        ("/", None),
        ("", None),
    ],
)
def test_route(path: str, expected: object) -> None:
    assert route("POST", path) == expected


# --- robustness -------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    ["authorization", "apns-topic", "apns-push-type", "apns-priority", "apns-expiration",
     "apns-id", "apns-collapse-id", "x-other"]
) | st.text(max_size=12)  # fmt: skip
_VALUES = st.sampled_from(
    [AUTH, LA_TOPIC, APP, "liveactivity", "alert", "background", "voip", "1", "5", "10", "0",
     "123e4567-e89b-12d3-a456-426614174000", "", "bearer x.y.z"]
) | st.text(max_size=80)  # fmt: skip
_BODIES = st.sampled_from([LA_BODY, b"{}", b"", b"[]", b'{"aps":1}', _padded(4097)]) | st.binary(
    max_size=300
)
_PATHS = st.sampled_from(
    ["/3/device/", "/3/device/" + ACTIVITY, "/3/device/" + DEVICE, "/3/device/" + DEAD,
     "/3/device/" + EXPIRED, "/3/device/" + PRODUCTION_TOKEN, "/4/broadcasts/apps/" + APP]
) | st.text(max_size=40).map(lambda s: "/3/device/" + s) | st.text(max_size=40)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "post"]) | st.text(max_size=8),
    path=_PATHS,
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=10),
    body=_BODIES,
    now=st.sampled_from([float(T0), T0 + 5000.0, T0 - 5000.0]),
    environment=st.sampled_from(["sandbox", "production"]),
    certificate=st.sampled_from([None, CERT, SINGLE_TOPIC_CERT, PRODUCTION_CERT, NO_BUNDLE_CERT]),
)
def test_garbage_never_raises(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    now: float,
    environment: str,
    certificate: ClientCertificate | None,
) -> None:
    request = IncomingRequest(method, path, tuple(headers), body)
    verdict = validate(
        request,
        auth=ConnectionAuth(RING),
        config=CONFIG,
        directory=_directory(),
        now=now,
        environment=environment,
        certificate=certificate,
    )
    assert (verdict.push is None) != (verdict.rejection is None)
    if verdict.rejection is not None:
        rejection = verdict.rejection
        assert rejection.reason in REASONS
        assert rejection.status == REASONS[rejection.reason].status
        assert (rejection.timestamp_ms is not None) == (rejection.status == 410)
        assert json.loads(rejection.body())["reason"] == rejection.reason.value
    else:
        assert verdict.auth_ok


def test_rejection_of_is_shared_and_consistent() -> None:
    for reason, row in REASONS.items():
        rejection = Rejection.of(reason)
        assert rejection.status == row.status
        assert rejection is Rejection.of(reason)
        assert replace(rejection) == rejection
