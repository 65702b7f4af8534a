"""Notification pushes (`apns-push-type: alert`): exact bytes, built once, size-checked.

A `Notification` is one push to an app's own device token: a visible notification (title,
subtitle, body), a badge change, or both. `prepare_notification` encodes it once and checks the
size of the exact bytes against the device-push limit (apns.md §5), like `payload.prepare` does
for Live Activity pushes, and returns a `PreparedPayload` the engine queues like any other:

- `event` is `EventKind.ALERT`, `push_type` is `alert` (sent to the bare bundle id topic,
  apns.md §1), and the body has no `aps.timestamp` (that key is ActivityKit's), so the
  coalescer's timestamp is not spliced in (`stamped` False);
- `collapse_id` becomes `apns-collapse-id`: iOS shows a later push with the same id in place of
  the earlier notification (apns.md §1), which is how a notification is replaced; at most 64 bytes;
- the priority is 10 (shown now), or 5 for a `passive` notification, which iOS shows quietly
  anyway (apns.md §1 priorities).

Body layout (compact JSON; absent keys are left out, never sent as null)::

    {"aps":{"alert":{"title":T,"subtitle":S,"body":B},"badge":N,"sound":S,
            "interruption-level":L,"thread-id":S,"category":S,"mutable-content":1},
     ...extra}

`extra` holds the app's own keys, next to `aps`, never inside it. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from engine.apns.wire import MAX_COLLAPSE_ID, MAX_DEVICE_PAYLOAD
from engine.payload import EventKind, InvalidContent, PayloadTooLarge, PreparedPayload

__all__ = ["BADGE_MAX", "INTERRUPTION_LEVELS", "Notification", "prepare_notification"]

INTERRUPTION_LEVELS: Final = frozenset({"passive", "active", "time-sensitive", "critical"})
"""The values of `aps.interruption-level` iOS knows (iOS 15+)."""

BADGE_MAX: Final = 2**31 - 1
"""The largest app badge count (a signed 32-bit integer, as the contract caps it)."""

_ENCODER: Final = msgspec.json.Encoder()


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One alert push to an app's device token (see the module docstring).

    At least one of `title`, `subtitle`, `body`, `badge` or `sound` must be given: an alert push
    with none of them shows nothing. `badge` 0 clears the app's badge.
    """

    title: str | None = None
    subtitle: str | None = None
    body: str | None = None
    badge: int | None = None
    sound: str | None = None
    interruption_level: str | None = None
    thread_id: str | None = None
    category: str | None = None
    mutable_content: bool = False
    extra: dict[str, Any] | None = None
    collapse_id: str | None = None

    def __post_init__(self) -> None:
        _validate(self)


def prepare_notification(note: Notification, *, limit: int = MAX_DEVICE_PAYLOAD) -> PreparedPayload:
    """Encode `note` once and check its exact size; raises `PayloadTooLarge` over `limit`."""
    body = _encode(note)
    if len(body) > limit:
        raise PayloadTooLarge(len(body), limit, EventKind.ALERT)
    priority = 5 if note.interruption_level == "passive" else 10
    return PreparedPayload(
        EventKind.ALERT,
        len(body),
        priority,
        body,
        b"",
        push_type="alert",
        collapse_id=note.collapse_id,
        stamped=False,
    )


def _encode(note: Notification) -> bytes:
    aps: dict[str, Any] = {}
    alert = {
        key: value
        for key, value in (("title", note.title), ("subtitle", note.subtitle), ("body", note.body))
        if value is not None
    }
    if alert:
        aps["alert"] = alert
    optional = (
        ("badge", note.badge),
        ("sound", note.sound),
        ("interruption-level", note.interruption_level),
        ("thread-id", note.thread_id),
        ("category", note.category),
    )
    aps.update((key, value) for key, value in optional if value is not None)
    if note.mutable_content:
        # The app's notification service extension may change it (an icon or media to fetch).
        aps["mutable-content"] = 1
    extra = note.extra or {}
    try:
        return _ENCODER.encode({"aps": aps, **extra})
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise InvalidContent("extra", f"extra cannot be encoded as JSON: {exc}") from None


def _validate(note: Notification) -> None:
    for name in ("title", "subtitle", "body", "sound", "thread_id", "category"):
        value = getattr(note, name)
        if value is not None and not isinstance(value, str):
            raise InvalidContent(name, f"{name} must be a string or None")
    badge = note.badge
    if badge is not None and (
        not isinstance(badge, int) or isinstance(badge, bool) or not 0 <= badge <= BADGE_MAX
    ):
        raise InvalidContent("badge", f"badge must be an integer from 0 to {BADGE_MAX}")
    if note.interruption_level is not None and note.interruption_level not in INTERRUPTION_LEVELS:
        raise InvalidContent(
            "interruption_level",
            f"interruption_level must be one of {', '.join(sorted(INTERRUPTION_LEVELS))}",
        )
    if note.extra is not None and (not isinstance(note.extra, dict) or "aps" in note.extra):
        raise InvalidContent("extra", "extra must be a dict of custom keys without 'aps'")
    if note.collapse_id is not None and (
        not note.collapse_id or len(note.collapse_id.encode()) > MAX_COLLAPSE_ID
    ):
        raise InvalidContent(
            "collapse_id", f"collapse_id must be 1 to {MAX_COLLAPSE_ID} bytes (apns.md §1)"
        )
    if not any(getattr(note, k) for k in ("title", "subtitle", "body", "sound")) and (
        note.badge is None
    ):
        raise InvalidContent("alert", "needs a title, body, subtitle, sound or badge")
