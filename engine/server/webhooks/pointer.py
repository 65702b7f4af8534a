"""JSON Pointers (RFC 6901): `/deploy/id` names `body["deploy"]["id"]`.

Pure. `resolve` walks a decoded JSON document; `check` validates a pointer's syntax (used when the
configuration is loaded, so a typo is refused at start-up, not on the first delivery).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MISSING", "PointerError", "check", "resolve"]


class _Missing:
    """What `resolve` answers for a pointer that names nothing in the document."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class PointerError(ValueError):
    """A pointer that is not valid RFC 6901 syntax."""


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PointerError(f"JSON pointer {pointer!r} must be empty or start with '/'")
    out = []
    for raw in pointer[1:].split("/"):
        # RFC 6901 §4: "~1" is "/", "~0" is "~"; any other "~" is invalid.
        if "~" in raw.replace("~0", "").replace("~1", ""):
            raise PointerError(f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1")
        out.append(raw.replace("~1", "/").replace("~0", "~"))
    return out


def check(pointer: str) -> str:
    """`pointer` when it is valid syntax; `PointerError` otherwise."""
    _tokens(pointer)
    return pointer


def resolve(document: Any, pointer: str) -> Any:
    """The value `pointer` names in `document`, or `MISSING` when there is none.

    An array index is a decimal without leading zeros (RFC 6901 §4); "-" (past the end) names
    nothing, as there is nothing to read there.
    """
    value = document
    for token in _tokens(pointer):
        if isinstance(value, dict):
            if token not in value:
                return MISSING
            value = value[token]
        elif isinstance(value, list):
            if not (token.isascii() and token.isdigit()) or (len(token) > 1 and token[0] == "0"):
                return MISSING
            index = int(token)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value
