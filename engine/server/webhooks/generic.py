"""Generic JSON webhooks mapped to a stream through JSON pointers. Pure.

The webhook's configuration (`config.WebhookConfig`) says where things are in the body:

- `stream_key`: a pointer to a string or integer; the stream key is `<webhook name>-<value>`
  (so the value must be letters, digits, `-` or `_`);
- `[webhooks.map]`: content_state field = pointer; a pointer naming nothing (or `null`) leaves
  the field out, so one mapping serves both the first and the later deliveries;
- `[webhooks.set]`: content_state field = constant (e.g. `type = "progress"`); a mapped value
  that is present wins over a constant;
- `end` and `end_values`: when the value at `end` is one of `end_values` (default `[true]`), the
  stream ends with the delivery's state.

Every value goes through the same validation as `PUT /api/live-activity/stream/{key}`; a failure
is a 400 naming the content_state field and the pointer it came from.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.server.contract import errors, models
from engine.server.webhooks import pointer
from engine.server.webhooks.config import WebhookConfig
from engine.server.webhooks.plan import Finish, Plan, Put, malformed

__all__ = ["plan"]

EVENT = "delivery"
"""The event name a generic delivery is logged with."""


def plan(payload: Any, cfg: WebhookConfig) -> Plan:
    """The stream call of one generic delivery to `cfg`."""
    if not isinstance(payload, dict):
        raise malformed("", "must be a JSON object")
    key = _key(payload, cfg)
    state: dict[str, Any] = dict(cfg.set)
    for name, where in cfg.map.items():
        value = pointer.resolve(payload, where)
        if value is not pointer.MISSING and value is not None:
            state[name] = value
    body: dict[str, Any] = {"content_state": state}
    if cfg.channels:
        body["channels"] = list(cfg.channels)
    try:  # the very checks of a stream PUT, with its messages
        request = models.decode(models.StreamRequest, msgspec.json.encode(body))
    except errors.BadRequest as exc:
        raise _named(exc, cfg) from None
    final = cfg.end is not None and _is_end(pointer.resolve(payload, cfg.end), cfg.end_values)
    title = request.content_state.title
    summary = f"{title[:80]!r} {'ended' if final else 'shown'} on stream {key}"
    if final:
        return Plan(EVENT, summary, (Finish(key, request, cfg.auto_dismiss_minutes),))
    return Plan(EVENT, summary, (Put(key, request),))


def _key(payload: dict[str, Any], cfg: WebhookConfig) -> str:
    where = cfg.stream_key or ""
    value = pointer.resolve(payload, where)
    if value is pointer.MISSING or value is None:
        raise malformed(where, "is missing (the webhook's stream_key)")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise malformed(where, "must be a string or an integer (the webhook's stream_key)")
    key = f"{cfg.name}-{value}"
    try:
        models.check_stream_key(key)
    except errors.BadRequest:
        raise malformed(
            where, "must be letters, digits, '-' or '_' (it becomes part of the stream key)"
        ) from None
    return key


def _is_end(value: Any, end_values: tuple[Any, ...]) -> bool:
    # `True == 1` in Python: compare types too, so a count of 1 never ends a stream set to `true`.
    return any(type(value) is type(v) and value == v for v in end_values)


def _named(problem: errors.ApiError, cfg: WebhookConfig) -> errors.ApiError:
    """`problem` with the pointer the offending field was mapped from, when it was mapped."""
    # Messages start with the dotted field path: "content_state.color: invalid enum value ...".
    field = str(problem.extra.get("field") or problem.message.split(":", 1)[0])
    name = field.removeprefix("content_state.").split(".", 1)[0].split("[", 1)[0]
    where = cfg.map.get(name)
    if where is None:
        return problem
    return errors.BadRequest(f"{problem.message} (mapped from {where})", field=field)
