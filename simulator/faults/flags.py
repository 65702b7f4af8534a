"""The compact command-line form of a fault plan, split into the dict form that `FaultPlan` reads.

::

    spec    := item ("," item)*              blank items and spaces around items are ignored
    seed=INT                                 random seed (default 0)
    latency=fixed:MS                         every answer waits MS milliseconds
    latency=uniform:LOW:HIGH                 uniform between LOW and HIGH milliseconds
    latency=lognormal:MEDIAN:P99             lognormal with that median and 99th percentile
    burst=REASON:PROBABILITY[:LENGTH]        repeatable; LENGTH requests (default 1) answered REASON
    goaway_after=N                           GOAWAY after answering the Nth stream of a connection
    goaway_reason=REASON                     reason in the GOAWAY debug data (default Shutdown)
    drop=P | reset=P | unregister=P          per-request probabilities
    swing=P:V1/V2/...                        with probability P announce one of the listed limits
    rotate=P | dismiss=P                     per accepted push to an activity: the device rotates
                                             its token / the user dismisses it (device events)
    offline=P[:MS]                           per accepted push: its device goes offline for MS ms
                                             (default 30000), then comes back

Example: ``seed=7,latency=uniform:1:20,burst=ServiceUnavailable:0.01:5,goaway_after=500,drop=0.001,
reset=0.001,swing=0.01:1/10/1000,unregister=0.001``.

This module only splits text: ``seed=7,burst=Shutdown:0.1:3`` becomes ``{"seed": "7", "bursts":
[{"reason": "Shutdown", "probability": "0.1", "length": "3"}]}``, which `FaultPlan.from_flags`
converts like any other dict (reading the numbers from their text), so the flags obey exactly the
rules of a TOML plan. The colon-separated shapes follow the field order of `ErrorBurst` and of each
latency distribution. `Flags.origins` remembers which item set each field, so that `Flags.blame`
can restate an error about ``bursts[1].probability`` as one about the item ``burst=Shutdown:9``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from simulator.faults.parts import LATENCY_KINDS, ErrorBurst
from simulator.faults.schema import FaultPlanError


class Flags(msgspec.Struct, frozen=True):
    """A flag spec split up: `data` in the dict form of a plan, and the item behind each field."""

    data: dict[str, object]
    origins: dict[str, str]  # plan field, or "bursts[i]", -> the item that set it

    def blame(self, exc: FaultPlanError) -> FaultPlanError:
        """`exc`, about a field of `data`, restated as an error naming the item that set it."""
        head, _, sub = exc.field.partition(".")
        if head not in self.origins:  # an element of a list field, e.g. limit_swing_values[0]
            head, sub = head.partition("[")[0], exc.field
        item = self.origins.get(head)
        if item is None:
            return exc
        message = f"{sub}: {exc.message}" if sub else exc.message
        return FaultPlanError(item.partition("=")[0], f"{message} (in {item!r})")


def parse(spec: str) -> Flags:
    """Split `spec` into a plan's dict form; a malformed item raises `FaultPlanError` naming it."""
    data: dict[str, object] = {}
    bursts: list[object] = []
    origins: dict[str, str] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise FaultPlanError(item, "expected key=value")
        try:
            fragment = _fragment(key, value)
        except FaultPlanError as exc:
            raise FaultPlanError(key, f"{exc.message} (in {item!r})") from None
        if key == "burst":  # repeatable: each one is an element of the list
            origins[f"bursts[{len(bursts)}]"] = item
            bursts.append(fragment["bursts"])
            continue
        if any(name in data for name in fragment):
            raise FaultPlanError(key, f"given more than once (in {item!r})")
        data.update(fragment)
        origins.update(dict.fromkeys(fragment, item))
    if bursts:
        data["bursts"] = bursts
    return Flags(data, origins)


def _fragment(key: str, value: str) -> dict[str, object]:
    """The plan fields set by one item."""
    shaped = _SHAPED.get(key)
    if shaped is not None:
        return shaped(value)
    field = _SCALARS.get(key)
    if field is None:
        raise FaultPlanError(key, f"unknown fault flag; expected one of {', '.join(FLAG_KEYS)}")
    return {field: value}


def _latency(value: str) -> dict[str, object]:
    kind, _, rest = value.partition(":")
    cls = LATENCY_KINDS.get(kind)
    if cls is None:
        shapes = " or ".join(_shapes(known, tag) for tag, known in LATENCY_KINDS.items())
        raise FaultPlanError("value", f"expected {shapes}, got {value!r}")
    return {"latency_ms": {"kind": kind, **_positional(cls, rest, value, prefix=kind)}}


def _burst(value: str) -> dict[str, object]:
    return {"bursts": _positional(ErrorBurst, value, value)}


def _swing(value: str) -> dict[str, object]:
    parts = value.split(":")
    if len(parts) != 2:
        raise FaultPlanError("value", f"expected PROBABILITY:V1/V2/..., got {value!r}")
    return {"limit_swing_probability": parts[0], "limit_swing_values": parts[1].split("/")}


def _offline(value: str) -> dict[str, object]:
    probability, _, ms = value.partition(":")
    return {"offline_probability": probability, **({"offline_ms": ms} if ms else {})}


def _positional(
    cls: type[msgspec.Struct], text: str, value: str, prefix: str = ""
) -> dict[str, object]:
    """`text` split on ':' into the fields of `cls`, in order; trailing defaults may be left out."""
    fields = msgspec.structs.fields(cls)
    parts = text.split(":") if text else []
    if not sum(f.required for f in fields) <= len(parts) <= len(fields):
        raise FaultPlanError("value", f"expected {_shapes(cls, prefix)}, got {value!r}")
    return {f.name: part for f, part in zip(fields, parts, strict=False)}


def _shapes(cls: type[msgspec.Struct], prefix: str = "") -> str:
    """The shapes `_positional` accepts, e.g. "REASON:PROBABILITY or REASON:PROBABILITY:LENGTH"."""
    fields = msgspec.structs.fields(cls)
    names = [prefix] if prefix else []
    names += [f.name.removesuffix("_ms").upper() for f in fields]
    offset = 1 if prefix else 0
    required = sum(f.required for f in fields)
    counts = range(offset + required, offset + len(fields) + 1)
    return " or ".join(":".join(names[:count]) for count in counts)


_SHAPED: Final[dict[str, Callable[[str], dict[str, object]]]] = {
    "latency": _latency,
    "burst": _burst,
    "swing": _swing,
    "offline": _offline,
}
_SCALARS: Final = {  # items whose value is one field's value, as it is
    "seed": "seed",
    "goaway_after": "goaway_after_streams",
    "goaway_reason": "goaway_reason",
    "drop": "drop_probability",
    "reset": "reset_probability",
    "unregister": "unregister_probability",
    "rotate": "rotate_probability",
    "dismiss": "dismiss_probability",
}
FLAG_KEYS: Final = (
    "seed",
    "latency",
    "burst",
    "goaway_after",
    "goaway_reason",
    "drop",
    "reset",
    "swing",
    "unregister",
    "rotate",
    "dismiss",
    "offline",
)
"""Every item key of the flag form, in the order its docs list them."""
