"""The content-state options of `lockstep stream|end|start|update|end-activity`, and their values.

Each content field has a flag (`--title`, `--steps`, `--metric CPU=9%`, ...); `--content-state`
(or `--content-state-file`) gives a whole state as JSON, in the SDK's snake_case or in the
camelCase the hosted service's CLI takes (`numberOfSteps`), and the flags are applied over it.
`content_state(args)` is pure: it reads files only for `--content-state-file`.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Final

from engine.cli.common import UsageError, parse_json_object, read_json_file
from engine.server.contract.content import COLORS as CONTENT_COLORS
from engine.server.contract.content import CONTENT_TYPES

__all__ = [
    "COLORS",
    "TYPES",
    "add_content",
    "content_state",
    "parse_count",
    "parse_metric",
    "parse_number",
    "parse_scalar",
]

COLORS: Final = CONTENT_COLORS
"""The contract's colors (the request models' own list)."""

TYPES: Final = CONTENT_TYPES
"""The contract's Live Activity types (the request models' own list)."""

# A plain decimal number; anything else ("1e3", "0x10", "nan") stays a string, so a value is
# never silently reinterpreted.
_NUMBER: Final = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_METRIC_VALUE: Final = re.compile(r"\s*([-+]?(?:\d+(?:\.\d+)?|\.\d+))\s*(.*)", re.DOTALL)
_NOT_A_UNIT: Final = re.compile(r"[\d.]|[eE][-+]?\d")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])([A-Z])")


# -- argument types (argparse `type=` callables raise ArgumentTypeError -> exit 2) -------------


def parse_number(text: str) -> int | float:
    """A plain decimal number: int when it has no decimal point, else float."""
    text = text.strip()
    if _NUMBER.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return float(text) if "." in text else int(text)


def parse_count(text: str) -> int:
    """A non-negative integer."""
    value = parse_number(text)
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return value


def parse_scalar(text: str) -> int | float | str:
    """A number when `text` is a plain decimal number, else the string unchanged."""
    try:
        return parse_number(text)
    except argparse.ArgumentTypeError:
        return text


def parse_metric(text: str) -> dict[str, Any]:
    """`LABEL=VALUE[UNIT]` -> `{label, value, unit?}`: `CPU=9%` -> `{CPU, 9, "%"}`.

    A value starting with a number is split into the number and the unit after it (`12.5 ms`,
    `45%`); anything else (`OK`, `v1.2`, `1.2.3`) is kept whole as a string value.
    """
    label, sep, rest = text.partition("=")
    label = label.strip()
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE[UNIT], got {text!r}")
    if not rest.strip():
        raise argparse.ArgumentTypeError(f"metric {label!r} has no value")
    match = _METRIC_VALUE.fullmatch(rest)
    unit = match.group(2).strip() if match else ""
    # A "unit" that continues the number ("1.2.3", "12 34", "1e3") means this was not number+unit.
    if match is None or _NOT_A_UNIT.match(unit):
        return {"label": label, "value": rest.strip()}
    metric: dict[str, Any] = {"label": label, "value": parse_number(match.group(1))}
    if unit:
        metric["unit"] = unit
    return metric


def _snake(fields: dict[str, Any]) -> dict[str, Any]:
    """`numberOfSteps` -> `number_of_steps` for the top-level keys (a metric's keys are single
    words already); snake_case keys are left as they are."""
    return {_CAMEL.sub(r"_\1", key).lower(): value for key, value in fields.items()}


def content_state(args: argparse.Namespace) -> dict[str, Any]:
    """The `content_state` the flags describe: `--content-state[-file]`, then each flag over it."""
    raw, path = args.content_state, args.content_state_file
    if raw is not None and path is not None:
        raise UsageError("--content-state and --content-state-file cannot be used together")
    base = parse_json_object(raw) if raw is not None else None
    if path is not None:
        base = read_json_file(path, "--content-state-file")
    state: dict[str, Any] = _snake(base or {})
    simple = {
        "title": args.title,
        "subtitle": args.subtitle,
        "type": args.type,
        "color": args.color,
        "number_of_steps": args.steps,
        "current_step": args.step,
        "step_color": args.step_color,
        "percentage": args.percentage,
        "value": args.value,
        "upper_limit": args.upper_limit,
        "duration_seconds": args.duration,
        "message": args.message,
        "auto_dismiss_seconds": getattr(args, "auto_dismiss_seconds", None),
        "auto_dismiss_minutes": getattr(args, "auto_dismiss_minutes", None),
    }
    state.update({k: v for k, v in simple.items() if v is not None})
    if args.metric:
        state["metrics"] = list(args.metric)
    if args.count_up:
        state["counts_down"] = False
    if args.paused:
        state["is_running"] = False
    if args.icon is not None:
        state["icon"] = _with_color({"symbol": args.icon}, args.icon_color)
    if args.badge is not None:
        state["badge"] = _with_color({"title": args.badge}, args.badge_color)
    return state


def _with_color(obj: dict[str, Any], color: str | None) -> dict[str, Any]:
    return obj if color is None else {**obj, "color": color}


# -- options --------------------------------------------------------------------------------------

_COLOR_HELP: Final = "accent color: " + ", ".join(COLORS)


def add_content(p: argparse.ArgumentParser) -> None:
    """The content-state options: one per field, and the raw --content-state[-file]."""
    g = p.add_argument_group("content state")
    g.add_argument(
        "--type",
        choices=TYPES,
        metavar="TYPE",
        help="required to start: " + ", ".join(TYPES),
    )
    g.add_argument("--title")
    g.add_argument("--subtitle")
    g.add_argument("--color", choices=COLORS, metavar="COLOR", help=_COLOR_HELP)
    g.add_argument(
        "--steps", type=parse_count, metavar="N", help="segmented_progress: number of steps"
    )
    g.add_argument(
        "--step", type=parse_count, metavar="K", help="segmented_progress: completed steps"
    )
    g.add_argument(
        "--step-color",
        choices=COLORS,
        metavar="COLOR",
        help="segmented_progress: current step color",
    )
    g.add_argument("--percentage", type=parse_number, help="progress: 0-100")
    g.add_argument(
        "--value", type=parse_scalar, help="value: the readout; progress: with --upper-limit"
    )
    g.add_argument("--upper-limit", type=parse_number, help="progress: maximum of --value")
    g.add_argument("--duration", type=parse_number, help="timer: duration in seconds")
    g.add_argument("--count-up", action="store_true", help="timer: elapsed, not a countdown")
    g.add_argument("--paused", action="store_true", help="timer: frozen (is_running false)")
    g.add_argument(
        "--metric",
        action="append",
        type=parse_metric,
        metavar="LABEL=VALUE[UNIT]",
        help="metrics/stats: e.g. CPU=9%% (repeatable, at most 8)",
    )
    g.add_argument("--message", help="alert: the message")
    g.add_argument("--icon", metavar="SYMBOL", help="SF Symbol name")
    g.add_argument("--icon-color", choices=COLORS, metavar="COLOR")
    g.add_argument("--badge", metavar="TEXT")
    g.add_argument("--badge-color", choices=COLORS, metavar="COLOR")
    g.add_argument(
        "--content-state",
        metavar="OBJECT",
        help="raw content_state JSON (camelCase keys too); the other flags are applied over it",
    )
    g.add_argument(
        "--content-state-file", metavar="PATH", help="--content-state read from a file (- stdin)"
    )
