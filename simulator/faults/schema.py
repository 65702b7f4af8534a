"""How a fault plan's records are checked: msgspec checks the types, this module names the field.

Every record of a plan (`FaultPlan`, its latency distributions and error bursts) is a frozen
`msgspec.Struct` derived from `Checked`. The rules for a single field live in its type: the bounded
numbers below (`Probability`, `Milliseconds`, `Count`, `StreamLimit`) carry `msgspec.Meta`
constraints, so `msgspec.convert` enforces them when a plan is read from a dict, a TOML file or the
command-line form, and `Checked.__post_init__` enforces the very same types when a record is built
in Python. Rules that relate two fields (a uniform range's order, a burst's status) go in a
record's `check`.

Either way a failure surfaces as one `FaultPlanError` whose `field` is the dotted path of the value
at fault (``bursts[0].probability``, read from the ``$.bursts[0].probability`` that msgspec's
message ends with) and whose message says what that field must be, worded from the field's type as
`msgspec.inspect` describes it (``must be a number in [0, 1], got 1.5``).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta
from msgspec import inspect as mi

from engine.apns.reasons import Reason

T = TypeVar("T")

MAX_SETTINGS_VALUE: Final = 2**32 - 1  # SETTINGS values are 32-bit (RFC 9113 §6.5.1)
# msgspec bounds must be finite, so "at most the largest float" is how a field rejects inf (and
# NaN, which fails every comparison).
_FINITE: Final = sys.float_info.max

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
"""A per-request probability."""
Milliseconds = Annotated[float, Meta(ge=0.0, le=_FINITE)]
"""A finite, non-negative time in milliseconds."""
PositiveMilliseconds = Annotated[float, Meta(gt=0.0, le=_FINITE)]
"""A finite, positive time in milliseconds (a lognormal's median: its logarithm must exist)."""
Count = Annotated[int, Meta(ge=1)]
"""A count of requests or streams, at least one."""
StreamLimit = Annotated[int, Meta(ge=1, le=MAX_SETTINGS_VALUE)]
"""A MAX_CONCURRENT_STREAMS value a server can announce."""

_NOUNS: Final[dict[type[Any], str]] = {Reason: "APNs reason"}  # how messages name an enum


class FaultPlanError(ValueError):
    """A fault plan that cannot be used; `field` names the offending field (or flag key)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Checked(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of a plan's records: one built in Python is checked as `convert` checks one read."""

    def __post_init__(self) -> None:
        """Check (and normalise, e.g. a reason string to its `Reason`) every field, then `check`."""
        # msgspec checks types on convert and decode but not in __init__, so each field goes
        # through convert here; a value `convert` has just built comes back unchanged.
        for name, type_ in _field_types(type(self)):
            value = getattr(self, name)
            checked = _convert(value, type_, name, strict=True)
            if checked is not value:
                msgspec.structs.force_setattr(self, name, checked)
        self.check()

    def check(self) -> None:
        """Rules across fields that the field types cannot express; raise `FaultPlanError`."""


def convert(data: object, type_: type[T], *, strict: bool = True) -> T:
    """`data` (dicts, lists, scalars) as a `type_`, or a `FaultPlanError` naming the field at fault.

    `strict=False` also reads numbers from strings: the command-line form's values are text.
    """
    result: T = _convert(data, type_, "", strict=strict)
    return result


@functools.cache
def _field_types(cls: type[msgspec.Struct]) -> tuple[tuple[str, Any], ...]:
    return tuple((f.name, f.type) for f in msgspec.structs.fields(cls))


def _convert(data: object, type_: Any, at: str, *, strict: bool) -> Any:
    try:
        return msgspec.convert(data, type_, strict=strict)
    except msgspec.ValidationError as exc:
        raise _translate(exc, data, type_, at) from None


# --- msgspec's messages, restated ---------------------------------------------------------------

# "<detail> - at `$.a.b[0]`", or just "<detail>" for the value itself.
_AT: Final = re.compile(r"(?P<detail>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_STEP: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING: Final = re.compile(r"Object missing required field `(?P<name>[^`]*)`")
_UNKNOWN: Final = re.compile(r"Object contains unknown field `[^`]*`")


def _translate(exc: msgspec.ValidationError, data: object, type_: Any, at: str) -> FaultPlanError:
    """`exc`, raised converting `data` (found at path `at`) to `type_`, as a `FaultPlanError`."""
    match = _AT.fullmatch(str(exc))
    assert match is not None  # the pattern matches any text
    detail, path = match["detail"], match["path"] or ""
    field = (at + path).removeprefix(".")
    cause = exc.__cause__
    if isinstance(cause, FaultPlanError):  # a record's own `check` (or a field inside it) failed
        return FaultPlanError(_join(field, cause.field), cause.message)
    if missing := _MISSING.fullmatch(detail):
        return FaultPlanError(_join(field, missing["name"]), "is required")
    steps = [int(index) if index else name for name, index in _STEP.findall(path)]
    value, expected = _locate(data, mi.type_info(type_), steps)
    if _UNKNOWN.fullmatch(detail):
        return FaultPlanError(field or "fault plan", _unknown_keys(value, expected))
    if isinstance(expected, mi.EnumType) and isinstance(value, str):
        return FaultPlanError(field, f"unknown {_noun(expected)} {value!r}")
    wanted = _describe(expected)
    message = f"must be {wanted}, got {value!r}" if wanted else detail[:1].lower() + detail[1:]
    return FaultPlanError(field or "fault plan", message)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _locate(data: object, expected: mi.Type, steps: list[str | int]) -> tuple[object, mi.Type]:
    """The value at `steps` inside `data`, and the type msgspec expected there."""
    for step in steps:
        expected = _narrow(expected, data)
        if isinstance(step, int):
            data = data[step] if isinstance(data, list | tuple) and step < len(data) else None
            expected = (
                expected.item_type if isinstance(expected, mi.CollectionType) else mi.AnyType()
            )
        else:
            data = data.get(step) if isinstance(data, Mapping) else None
            expected = _field_type(expected, step)
    return data, _narrow(expected, data)


def _structs(expected: mi.Type) -> list[mi.StructType]:
    members = expected.types if isinstance(expected, mi.UnionType) else (expected,)
    return [t for t in members if isinstance(t, mi.StructType)]


def _narrow(expected: mi.Type, data: object) -> mi.Type:
    """`expected` without its None option, and a tagged union resolved by the tag in `data`."""
    if not isinstance(expected, mi.UnionType):
        return expected
    options = [t for t in expected.types if not isinstance(t, mi.NoneType)]
    if isinstance(data, Mapping):
        structs = _structs(expected)
        tagged: list[mi.Type] = [s for s in structs if s.tag and data.get(s.tag_field) == s.tag]
        options = tagged or options
    return options[0] if len(options) == 1 else mi.UnionType(tuple(options))


def _field_type(expected: mi.Type, name: str) -> mi.Type:
    structs = _structs(expected)
    tags = tuple(s.tag for s in structs if s.tag_field == name)
    if tags:  # the tag of a tagged union: one of its members' tags
        return mi.LiteralType(tags)
    types = [f.type for s in structs for f in s.fields if f.name == name]
    return types[0] if types else mi.AnyType()


def _unknown_keys(table: object, expected: mi.Type) -> str:
    structs = _structs(expected)
    known = {f.name for s in structs for f in s.fields}
    known.update(s.tag_field for s in structs if s.tag_field)
    keys = table if isinstance(table, Mapping) else {}
    unknown = ", ".join(sorted(repr(key) for key in keys if key not in known))
    return f"unknown key(s) {unknown}; expected some of {', '.join(sorted(known))}"


def _noun(expected: mi.EnumType) -> str:
    return _NOUNS.get(expected.cls, expected.cls.__name__)


def _describe(expected: mi.Type) -> str:
    """What a value of `expected` is, in words ("an integer >= 1"), or "" for other types."""
    if isinstance(expected, mi.IntType | mi.FloatType):
        return _describe_number(expected)
    if isinstance(expected, mi.EnumType):
        return f"a known {_noun(expected)}"
    if isinstance(expected, mi.LiteralType):
        return f"one of {', '.join(str(v) for v in expected.values)}"
    if isinstance(expected, mi.CollectionType):
        return "a list"
    structs = _structs(expected)
    tagged = [s for s in structs if s.tag_field]
    if tagged and len(tagged) == len(structs):
        tags = ", ".join(str(s.tag) for s in tagged)
        return f"a table with {tagged[0].tag_field} one of {tags}"
    return "a table" if structs else ""


def _describe_number(expected: mi.IntType | mi.FloatType) -> str:
    noun = "an integer" if isinstance(expected, mi.IntType) else "a number"
    low, high = expected.ge, expected.le
    if high == _FINITE:
        noun, high = noun.replace("a number", "a finite number"), None
    if low is not None and high is not None:
        return f"{noun} in [{_number(low)}, {_number(high)}]"
    bounds = [(">", expected.gt), (">=", low), ("<", expected.lt), ("<=", high)]
    return " ".join([noun, *(f"{op} {_number(v)}" for op, v in bounds if v is not None)])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
