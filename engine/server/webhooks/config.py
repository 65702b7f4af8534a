"""One `[[webhooks]]` entry of `lockstep.toml`, checked when the configuration loads.

    [[webhooks]]
    name = "github"                 # the URL: POST /api/webhooks/github
    kind = "github"                 # or "generic"
    secret = "..."                  # at least 16 characters; never logged
    channels = ["ops"]              # who sees its activities (default: every device)
    auto_dismiss_minutes = 5        # how long a finished run stays (default: [live]'s)
    keep = 100                      # deliveries kept in its log

    [[webhooks]]
    name = "deploys"
    kind = "generic"
    secret = "..."
    stream_key = "/deploy/id"       # JSON pointers (RFC 6901) into the body
    end = "/deploy/state"           # the stream ends when this value is one of end_values
    end_values = ["succeeded", "failed"]
    [webhooks.map]                  # content_state field = pointer
    title = "/deploy/name"
    percentage = "/deploy/progress"
    [webhooks.set]                  # content_state field = constant
    type = "progress"

Every mistake is a `ConfigError` that names the webhook and the key, never the secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from engine.config import ConfigError
from engine.server.contract import models
from engine.server.webhooks import pointer

__all__ = ["GENERIC", "GITHUB", "KINDS", "STATE_FIELDS", "WebhookConfig"]

GITHUB: Final = "github"
GENERIC: Final = "generic"
KINDS: Final = (GITHUB, GENERIC)
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
SECRET_MIN: Final = 16
STATE_FIELDS: Final[tuple[str, ...]] = models.ContentState.__struct_fields__
"""The content_state fields a generic webhook may map or set."""
_GENERIC_ONLY: Final = ("stream_key", "map", "set", "end", "end_values")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One inbound webhook (module docstring); the secret stays out of its repr."""

    name: str
    kind: str
    secret: str = field(repr=False)
    channels: tuple[str, ...] = ()
    auto_dismiss_minutes: int | None = None
    keep: int = 100
    # generic only
    stream_key: str | None = None
    map: Mapping[str, str] = field(default_factory=dict)
    set: Mapping[str, Any] = field(default_factory=dict)
    end: str | None = None
    end_values: tuple[Any, ...] = (True,)

    def __post_init__(self) -> None:
        """Refuse what cannot work, naming the webhook and the key."""
        where = f"[[webhooks]] {self.name!r}"
        if not isinstance(self.name, str) or NAME_PATTERN.fullmatch(self.name) is None:
            raise ConfigError(
                f"[[webhooks]].name: {self.name!r} must be 1-64 letters, digits, '-' or '_'"
            )
        if self.kind not in KINDS:
            raise ConfigError(f"{where}.kind: must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not isinstance(self.secret, str) or len(self.secret) < SECRET_MIN:
            raise ConfigError(f"{where}.secret: required, at least {SECRET_MIN} characters")
        for channel in self.channels:
            if not isinstance(channel, str) or not re.fullmatch(models.CHANNEL_PATTERN, channel):
                raise ConfigError(f"{where}.channels: {channel!r} is not a channel slug")
        minutes = self.auto_dismiss_minutes
        if minutes is not None and (not _is_int(minutes) or minutes < 0):
            raise ConfigError(f"{where}.auto_dismiss_minutes: must be an integer >= 0")
        if not _is_int(self.keep) or self.keep < 1:
            raise ConfigError(f"{where}.keep: must be an integer >= 1")
        if self.kind == GENERIC:
            self._check_generic(where)
        else:
            given = [k for k in _GENERIC_ONLY if getattr(self, k) != _DEFAULTS[k]]
            if given:
                raise ConfigError(f"{where}: {', '.join(given)} only apply to kind 'generic'")

    def _check_generic(self, where: str) -> None:
        if self.stream_key is None:
            raise ConfigError(f"{where}.stream_key: required for kind 'generic' (a JSON pointer)")
        pointers = {"stream_key": self.stream_key, **{f"map.{k}": v for k, v in self.map.items()}}
        if self.end is not None:
            pointers["end"] = self.end
        for key, value in pointers.items():
            try:
                pointer.check(value) if isinstance(value, str) else _not_pointer(value)
            except pointer.PointerError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None
        for section, names in (("map", self.map), ("set", self.set)):
            unknown = sorted(set(names) - set(STATE_FIELDS))
            if unknown:
                raise ConfigError(
                    f"{where}.{section}: unknown content_state field(s) {', '.join(unknown)}; "
                    f"known: {', '.join(STATE_FIELDS)}"
                )
        for needed in ("title", "type"):
            if needed not in self.map and needed not in self.set:
                raise ConfigError(f"{where}: content_state.{needed} needs a map or set entry")
        if self.set:
            try:  # the constants alone must be valid field values
                msgspec.convert({"title": "t", **self.set}, models.ContentState)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"{where}.set: {exc}") from None
        if any(isinstance(v, float) and not math.isfinite(v) for v in self.end_values):
            raise ConfigError(f"{where}.end_values: must be finite")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _not_pointer(value: object) -> None:
    raise pointer.PointerError(f"must be a JSON pointer string, not {type(value).__name__}")


_DEFAULTS: Final[dict[str, Any]] = {
    "stream_key": None,
    "map": {},
    "set": {},
    "end": None,
    "end_values": (True,),
}
