"""What one API key may reach: every device (scope `all`) or only the devices of some channels.

The HTTP layer finds the calling key's `KeyScope` when it authenticates a send route and hands
it to the handler as `Context.key` (engine/server/http/endpoint.py); handlers pass it on to the
service, which applies it where the recipients are chosen, under the same lock as the change:

- a call that picks recipients (`target.channels`, a stream's `channels`) asks `targets(...)`:
  with a restricted key, a channel outside the key's list is 403 `forbidden`, and no channel at
  all means the key's own channels (never "every device");
- a call that changes something already sent (update, end, a stream's later PUT or DELETE) asks
  `check_reach(...)` with the channels that activity was sent to: a restricted key may only
  touch what it could have sent itself;
- a read (delivery status, the device list) shows a restricted key only what it reaches:
  `reaches(...)` for an activity, `sees(...)` for a device.

The errors name the key by its name, never by the key itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from engine.server.contract.errors import Forbidden

__all__ = ["FULL_ACCESS", "KeyScope"]


@dataclass(frozen=True, slots=True)
class KeyScope:
    """An API key's reach: `channels` None is scope `all`; else only devices in those channels."""

    name: str = "default"
    channels: frozenset[str] | None = None

    @classmethod
    def restricted_to(cls, name: str, channels: Iterable[str]) -> KeyScope:
        """A key that reaches only devices subscribed to one of `channels` (at least one)."""
        chosen = frozenset(channels)
        if not chosen:
            raise ValueError("a restricted key needs at least one channel")
        return cls(name, chosen)

    @property
    def restricted(self) -> bool:
        """True unless the key's scope is `all`."""
        return self.channels is not None

    def describe(self) -> str:
        """`all`, or the key's channels comma-separated (for lists and messages)."""
        return "all" if self.channels is None else ", ".join(sorted(self.channels))

    def targets(self, requested: Sequence[str]) -> list[str]:
        """The channels a new send reaches when it asked for `requested` ([] = no target).

        Scope `all`: what was asked. Restricted: 403 for a channel outside the key's list; no
        target means the key's channels, so an untargeted call never reaches other devices.
        """
        if self.channels is None:
            return list(requested)
        outside = sorted(set(requested) - self.channels)
        if outside:
            raise Forbidden(
                f"API key {self.name!r} may only send to channels {self.describe()}; "
                f"not to {', '.join(outside)}"
            )
        return list(requested) if requested else sorted(self.channels)

    def reaches(self, sent_to: Sequence[str]) -> bool:
        """Whether this key could have sent something that went to `sent_to` ([] = every
        device, which only a scope-`all` key reaches)."""
        if self.channels is None:
            return True
        return bool(sent_to) and self.channels.issuperset(sent_to)

    def sees(self, device_channels: Sequence[str]) -> bool:
        """Whether a device subscribed to `device_channels` is within this key's reach."""
        return self.channels is None or not self.channels.isdisjoint(device_channels)

    def check_reach(self, sent_to: Sequence[str], what: str) -> None:
        """403 unless this key could have sent `what` itself (`reaches`): `sent_to` are the
        channels it was sent to."""
        if not self.reaches(sent_to):
            reach = "every device" if not sent_to else "channels " + ", ".join(sorted(sent_to))
            raise Forbidden(
                f"{what} was sent to {reach}; API key {self.name!r} may only reach channels "
                f"{self.describe()}"
            )


FULL_ACCESS: Final = KeyScope()
"""Scope `all`: the server's default API key(s), and every call made in-process."""
