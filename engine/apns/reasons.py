"""One table of APNs rejection reasons, and the one vocabulary for what became of a push attempt.

A rejection from APNs is a value, not an exception: each reason string maps to the HTTP status APNs
sends with it (apns.md §3, §2 and §7) and straight to the `Outcome` that says what a sender should
do about it. The simulator answers with these reasons; the engine reads them back through the same
table, so the two can never disagree about a spelling or a status.

`Outcome` names every way an attempt can end, so the engine speaks of one thing with one word:
`ACCEPTED` (a 200), the five outcomes the table hands out for a rejection, and the two ways an
attempt gets no answer at all (`UNPROCESSED`, `TRANSPORT`), which the connection reports as values
(`engine.apns.connection.Unprocessed`, `NoAnswer`). `outcome_for` classifies an answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What became of one push attempt, and so what a sender does next.

    The reason table maps every rejection to RETRY, NEW_CONNECTION, REFRESH_AUTH, DROP_TOKEN or
    FIX_REQUEST; ACCEPTED is a 200; UNPROCESSED and TRANSPORT are attempts APNs never answered.
    The values double as metric labels, so they never change.
    """

    ACCEPTED = "accepted"  # 200 from APNs (apns.md §3)
    RETRY = "retry"  # transient: back off and send again (429, 5xx; apns.md §3, retry guidance)
    REFRESH_AUTH = "refresh_auth"  # Expired/MissingProviderToken: mint a new token, retry (§2)
    NEW_CONNECTION = "new_connection"  # retry on a fresh connection (Shutdown, apns.md §2, §4)
    UNPROCESSED = "unprocessed"  # REFUSED_STREAM, above GOAWAY's last stream id (apns.md §4)
    TRANSPORT = "transport"  # no answer: connection lost mid-stream, stream reset, timeout
    DROP_TOKEN = "drop_token"  # the device token is dead (410, BadDeviceToken): stop sending to it
    FIX_REQUEST = "fix_request"  # the request itself is wrong: never retried as is (apns.md §3)


class Reason(enum.StrEnum):
    """Every reason string APNs documents (apns.md §2, §3, §7), spelled exactly as on the wire."""

    # 400 (device pushes)
    BAD_COLLAPSE_ID = "BadCollapseId"
    BAD_DEVICE_TOKEN = "BadDeviceToken"
    BAD_EXPIRATION_DATE = "BadExpirationDate"
    BAD_MESSAGE_ID = "BadMessageId"
    BAD_PRIORITY = "BadPriority"
    BAD_TOPIC = "BadTopic"
    DEVICE_TOKEN_NOT_FOR_TOPIC = "DeviceTokenNotForTopic"
    DUPLICATE_HEADERS = "DuplicateHeaders"
    IDLE_TIMEOUT = "IdleTimeout"
    INVALID_PUSH_TYPE = "InvalidPushType"
    MISSING_DEVICE_TOKEN = "MissingDeviceToken"
    MISSING_TOPIC = "MissingTopic"
    PAYLOAD_EMPTY = "PayloadEmpty"
    TOPIC_DISALLOWED = "TopicDisallowed"
    # 400 (broadcast and channel management, apns.md §7)
    FEATURE_NOT_ENABLED = "FeatureNotEnabled"
    MISSING_CHANNEL_ID = "MissingChannelId"
    BAD_CHANNEL_ID = "BadChannelId"
    CHANNEL_NOT_REGISTERED = "ChannelNotRegistered"
    BAD_REQUEST_PARAMS = "BadRequestParams"
    BAD_REQUEST_PAYLOAD = "BadRequestPayload"
    MISSING_PUSH_TYPE = "MissingPushType"
    CANNOT_CREATE_CHANNEL_CONFIG = "CannotCreateChannelConfig"
    # 403
    BAD_CERTIFICATE = "BadCertificate"
    BAD_CERTIFICATE_ENVIRONMENT = "BadCertificateEnvironment"
    EXPIRED_PROVIDER_TOKEN = "ExpiredProviderToken"
    FORBIDDEN = "Forbidden"
    INVALID_PROVIDER_TOKEN = "InvalidProviderToken"
    MISSING_PROVIDER_TOKEN = "MissingProviderToken"
    UNRELATED_KEY_ID_IN_TOKEN = "UnrelatedKeyIdInToken"
    BAD_ENVIRONMENT_KEY_ID_IN_TOKEN = "BadEnvironmentKeyIdInToken"
    BAD_ENVIRONMENT_KEY_IN_TOKEN = "BadEnvironmentKeyInToken"
    TOPIC_MISMATCH = "TopicMismatch"
    # 404 / 405
    BAD_PATH = "BadPath"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    # 410
    EXPIRED_TOKEN = "ExpiredToken"
    UNREGISTERED = "Unregistered"
    # 413
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    # 429
    TOO_MANY_PROVIDER_TOKEN_UPDATES = "TooManyProviderTokenUpdates"
    TOO_MANY_REQUESTS = "TooManyRequests"
    # 500 / 503
    INTERNAL_SERVER_ERROR = "InternalServerError"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    SHUTDOWN = "Shutdown"


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    """A row of the table: the status APNs sends with a reason and the outcome it calls for."""

    reason: Reason
    status: int
    outcome: Outcome
    device: bool  # documented for /3/device (False: broadcast/channel routes only)


_R = Reason
_O = Outcome

# (reason, status, outcome, valid on /3/device). Outcomes follow apns.md §3 "Retry guidance":
# never retry BadDeviceToken / ExpiredToken / Unregistered / PayloadTooLarge /
# DeviceTokenNotForTopic.
_ROWS: tuple[tuple[Reason, int, Outcome, bool], ...] = (
    (_R.BAD_COLLAPSE_ID, 400, _O.FIX_REQUEST, True),
    (_R.BAD_DEVICE_TOKEN, 400, _O.DROP_TOKEN, True),
    (_R.BAD_EXPIRATION_DATE, 400, _O.FIX_REQUEST, True),
    (_R.BAD_MESSAGE_ID, 400, _O.FIX_REQUEST, True),
    (_R.BAD_PRIORITY, 400, _O.FIX_REQUEST, True),
    (_R.BAD_TOPIC, 400, _O.FIX_REQUEST, True),
    # Usually a wrong topic (app vs Live Activity), not a dead token (apns.md §3, forum 807380).
    (_R.DEVICE_TOKEN_NOT_FOR_TOPIC, 400, _O.FIX_REQUEST, True),
    (_R.DUPLICATE_HEADERS, 400, _O.FIX_REQUEST, True),
    (_R.IDLE_TIMEOUT, 400, _O.NEW_CONNECTION, True),
    (_R.INVALID_PUSH_TYPE, 400, _O.FIX_REQUEST, True),
    (_R.MISSING_DEVICE_TOKEN, 400, _O.FIX_REQUEST, True),
    (_R.MISSING_TOPIC, 400, _O.FIX_REQUEST, True),
    (_R.PAYLOAD_EMPTY, 400, _O.FIX_REQUEST, True),
    (_R.TOPIC_DISALLOWED, 400, _O.FIX_REQUEST, True),
    (_R.FEATURE_NOT_ENABLED, 400, _O.FIX_REQUEST, False),
    (_R.MISSING_CHANNEL_ID, 400, _O.FIX_REQUEST, False),
    (_R.BAD_CHANNEL_ID, 400, _O.FIX_REQUEST, False),
    (_R.CHANNEL_NOT_REGISTERED, 400, _O.FIX_REQUEST, False),
    (_R.BAD_REQUEST_PARAMS, 400, _O.FIX_REQUEST, False),
    (_R.BAD_REQUEST_PAYLOAD, 400, _O.FIX_REQUEST, False),
    (_R.MISSING_PUSH_TYPE, 400, _O.FIX_REQUEST, False),
    (_R.CANNOT_CREATE_CHANNEL_CONFIG, 400, _O.FIX_REQUEST, False),
    (_R.BAD_CERTIFICATE, 403, _O.FIX_REQUEST, True),
    (_R.BAD_CERTIFICATE_ENVIRONMENT, 403, _O.FIX_REQUEST, True),
    (_R.EXPIRED_PROVIDER_TOKEN, 403, _O.REFRESH_AUTH, True),
    (_R.FORBIDDEN, 403, _O.FIX_REQUEST, True),
    (_R.INVALID_PROVIDER_TOKEN, 403, _O.FIX_REQUEST, True),
    (_R.MISSING_PROVIDER_TOKEN, 403, _O.REFRESH_AUTH, True),
    # "Open a new connection" (apns.md §2, signing key).
    (_R.UNRELATED_KEY_ID_IN_TOKEN, 403, _O.NEW_CONNECTION, True),
    (_R.BAD_ENVIRONMENT_KEY_ID_IN_TOKEN, 403, _O.FIX_REQUEST, True),
    (_R.BAD_ENVIRONMENT_KEY_IN_TOKEN, 403, _O.FIX_REQUEST, True),
    (_R.TOPIC_MISMATCH, 403, _O.FIX_REQUEST, False),
    (_R.BAD_PATH, 404, _O.FIX_REQUEST, True),
    (_R.METHOD_NOT_ALLOWED, 405, _O.FIX_REQUEST, True),
    (_R.EXPIRED_TOKEN, 410, _O.DROP_TOKEN, True),
    (_R.UNREGISTERED, 410, _O.DROP_TOKEN, True),
    (_R.PAYLOAD_TOO_LARGE, 413, _O.FIX_REQUEST, True),
    (_R.TOO_MANY_PROVIDER_TOKEN_UPDATES, 429, _O.RETRY, True),
    (_R.TOO_MANY_REQUESTS, 429, _O.RETRY, True),
    (_R.INTERNAL_SERVER_ERROR, 500, _O.RETRY, True),
    (_R.SERVICE_UNAVAILABLE, 503, _O.RETRY, True),
    (_R.SHUTDOWN, 503, _O.NEW_CONNECTION, True),
)

REASONS: dict[Reason, ReasonInfo] = {r: ReasonInfo(r, s, o, dev) for r, s, o, dev in _ROWS}
"""The table itself: every `Reason` has exactly one row."""

DEVICE_REASONS: frozenset[Reason] = frozenset(r for r, info in REASONS.items() if info.device)
"""Reasons documented for `/3/device` (apns.md §3)."""

_BY_VALUE: dict[str, Reason] = {r.value: r for r in Reason}

# Status → outcome for answers whose reason string is missing or unknown (new reasons appear).
_FALLBACK: dict[int, Outcome] = {
    410: Outcome.DROP_TOKEN,
    429: Outcome.RETRY,
    500: Outcome.RETRY,
    502: Outcome.RETRY,
    503: Outcome.RETRY,
    504: Outcome.RETRY,
}


def info(reason: Reason) -> ReasonInfo:
    """The table row for `reason`."""
    return REASONS[reason]


def status_of(reason: Reason) -> int:
    """The HTTP status APNs sends with `reason`."""
    return REASONS[reason].status


def parse_reason(text: str) -> Reason | None:
    """The `Reason` spelled `text`, or None for a reason this table does not know."""
    return _BY_VALUE.get(text)


def outcome_for(status: int, reason: Reason | None) -> Outcome:
    """The outcome of an APNs answer: 200 is ACCEPTED, anything else follows the reason table,
    falling back on the status when the reason is missing or unknown."""
    if status == 200:
        return Outcome.ACCEPTED
    if reason is not None:
        return REASONS[reason].outcome
    if status in _FALLBACK:
        return _FALLBACK[status]
    return Outcome.RETRY if status >= 500 else Outcome.FIX_REQUEST
