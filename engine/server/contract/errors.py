"""The errors of the HTTP API, as exceptions that carry their status and JSON body.

Every non-2xx reply has the body `{"error": <code>, "message": <sentence>, **extra}`, the shape the
official SDKs deserialize (`BadRequestError`, `NoRecipientsError`, `RateLimitError`,
`LiveActivityLimitError`). The service raises these; the HTTP layer turns any `ApiError` into its
status and `body()`. Messages are written for API users: they name the offending field and never
contain key material or tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

__all__ = [
    "ActivityLimit",
    "ApiError",
    "BadRequest",
    "Forbidden",
    "NoRecipients",
    "NotFound",
    "PartitionUnavailable",
    "RateLimited",
    "StorageUnavailable",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]


class ApiError(Exception):
    """An API failure with an HTTP `status`, a short `code`, a human `message` and `extra` body
    fields. Two forms: a subclass fixes status and code and takes `(message, **extra)`; a plain
    `ApiError(status, code, message, **extra)` is a one-off error (e.g. 409 "activity_ended")."""

    status: int = 500
    code: str = "internal"

    @overload
    def __init__(self, message: str, /, **extra: Any) -> None: ...

    @overload
    def __init__(self, status: int, code: str, message: str, /, **extra: Any) -> None: ...

    def __init__(self, first: Any, /, *rest: Any, **extra: Any) -> None:
        if isinstance(first, int) and not isinstance(first, bool) and len(rest) == 2:
            self.status, self.code, message = first, str(rest[0]), str(rest[1])
        elif isinstance(first, str) and not rest:
            message = first
        else:
            raise TypeError("use ApiError(message, **extra) or ApiError(status, code, message)")
        super().__init__(message)
        self.message: str = message
        self.extra: dict[str, Any] = extra

    def body(self) -> dict[str, Any]:
        """The JSON reply body: `{"error": code, "message": message, **extra}`."""
        return {"error": self.code, "message": self.message, **self.extra}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class BadRequest(ApiError):
    """400: the request is malformed or breaks a rule. `field` is the dotted path of the offending
    field (`content_state.current_step`), also named at the start of the message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(ApiError):
    """401: no API key was sent."""

    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """403: the key is unknown, or not allowed on this route."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """404: no such activity, stream, device or route."""

    status = 404
    code = "not_found"


class NoRecipients(ApiError):
    """No registered device matches the request's channels (or the key's scope).

    The official SDK maps `NoRecipientsError` to status 422 on start and stream PUT, so that is
    the status used here; the body lists the channels that were looked at.
    """

    status = 422
    code = "no_recipients"

    def __init__(
        self, message: str, *, effective_channel_slugs: Sequence[str] | None = None
    ) -> None:
        if effective_channel_slugs is None:
            super().__init__(message)
        else:
            super().__init__(message, effective_channel_slugs=list(effective_channel_slugs))


class TooLarge(ApiError):
    """413: a request body, or the push it would produce, is over a size limit (bytes)."""

    status = 413
    code = "payload_too_large"

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message, size=size, limit=limit)


class RateLimited(ApiError):
    """429: too many requests. The body carries `code: "rate_limited"` as the SDK's
    `RateLimitError` expects; `retry_after` (seconds) is for a `Retry-After` header."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, code="rate_limited")
        self.retry_after = retry_after


class ActivityLimit(ApiError):
    """429: the targeted devices already show as many Live Activities as iOS allows (the SDK's
    `LiveActivityLimitError`). `active` is the highest count among the targeted devices."""

    status = 429
    code = "live_activity_limit"

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        active: int,
        blocked_devices: int | None = None,
        targeted_devices: int | None = None,
    ) -> None:
        extra: dict[str, Any] = {"limit": limit, "active": active}
        if blocked_devices is not None:
            extra["blocked_devices"] = blocked_devices
        if targeted_devices is not None:
            extra["targeted_devices"] = targeted_devices
        super().__init__(message, **extra)


class Unavailable(ApiError):
    """503: the engine cannot accept work right now (overloaded, shutting down, store failing).
    `retry_after` (seconds) is for a `Retry-After` header."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(Unavailable):
    """503 `storage_unavailable`: the database refused a write (`cause`: disk full, read-only,
    I/O error, ...); nothing of the call was changed or sent, so the same call may be retried
    after `retry_after` seconds."""

    code = "storage_unavailable"

    def __init__(self, message: str, *, cause: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.extra["cause"] = cause


class PartitionUnavailable(Unavailable):
    """503 `partition_unavailable`: in a cluster, the node that owns the call's partition could
    not take it (none owns it right now, or the owner did not answer). The message says whether
    the call may have been carried out; either way the caller may send it again after
    `retry_after` seconds (a stream PUT is idempotent by content)."""

    code = "partition_unavailable"
