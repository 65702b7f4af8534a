"""What a fault plan does to one request (`FaultAction`), and the count of what took effect.

`ConnectionFaults` (in `simulator.faults.plan`) decides a `FaultAction` per request and counts it
into a `FaultStats` with `count`; the server reads the action, the control API the counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Final

import msgspec

from engine.apns.reasons import Reason


class FaultAction(msgspec.Struct, frozen=True):
    """What the server does to one request. `FaultAction.NONE` (the same object) means nothing.

    `latency` (seconds) is waited before whatever else happens. At most one of `drop_connection`,
    `reset` and `reject` is set (precedence drop > reset > reject). `goaway` is sent after this
    stream's answer; `set_max_streams` is announced in a SETTINGS frame; `unregister_token` marks
    the request's token `Unregistered` after answering it normally.
    """

    NONE: ClassVar[FaultAction]

    latency: float = 0.0
    reject: Reason | None = None
    reset: bool = False
    drop_connection: bool = False
    goaway: Reason | None = None
    set_max_streams: int | None = None
    unregister_token: bool = False


FaultAction.NONE = FaultAction()
NO_FAULT: Final = FaultAction.NONE
"""Module-level alias of `FaultAction.NONE`."""


# --- counters ----------------------------------------------------------------------------------


class FaultStats(msgspec.Struct):
    """How many of each fault took effect (after precedence); add them up across connections.

    Each counter is declared once, here: `__add__` and `to_dict` go through the fields generically,
    and `ConnectionFaults` counts into a private instance and hands out copies.
    """

    requests: int = 0
    delayed: int = 0
    latency_total_s: float = 0.0
    bursts: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = msgspec.field(default_factory=dict)
    resets: int = 0
    drops: int = 0
    goaways: int = 0
    limit_swings: int = 0
    unregistered: int = 0

    def __add__(self, other: FaultStats) -> FaultStats:
        """Field by field: counts add up, and per-reason counts add up reason by reason."""
        names = self.__struct_fields__
        return FaultStats(**{n: _plus(getattr(self, n), getattr(other, n)) for n in names})

    @classmethod
    def total(cls, stats: Iterable[FaultStats]) -> FaultStats:
        """The sum of `stats` (all zero for none)."""
        result = cls()
        for item in stats:
            result = result + item
        return result

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the control API (reasons sorted, fields in declaration order)."""
        result: dict[str, Any] = msgspec.to_builtins(self, order="deterministic")
        return result


def _plus(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        merged = dict(a)
        for key, count in b.items():
            merged[key] = merged.get(key, 0) + count
        return merged
    return a + b


def count(stats: FaultStats, action: FaultAction) -> None:
    """Add the faults `action` carries to `stats` (after precedence: what the client sees)."""
    if action.latency > 0:
        stats.delayed += 1
        stats.latency_total_s += action.latency
    if action.reject is not None:
        stats.rejected += 1
        by_reason = stats.rejected_by_reason
        by_reason[action.reject.value] = by_reason.get(action.reject.value, 0) + 1
    stats.resets += action.reset
    stats.drops += action.drop_connection
    stats.goaways += action.goaway is not None
    stats.limit_swings += action.set_max_streams is not None
    stats.unregistered += action.unregister_token
