"""Readers and formatters shared by the terminal views of the simulated iPhones (simulator/view.py).

Content-state fields are read leniently: the simulator accepts any JSON object as content-state,
so a missing or mistyped field reads as None (and is left out), never an error. Times are unix
seconds; `now` is always passed in, never read here.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from rich.text import Text

__all__ = [
    "DEFAULT_ACCENT",
    "EMPTY",
    "RICH_COLORS",
    "STATE_STYLES",
    "format_clock",
    "format_span",
    "format_when",
    "lifecycle",
    "num",
    "rich_color",
    "scalar",
    "text",
    "timer_reading",
    "waiting",
]

RICH_COLORS: Final[Mapping[str, str]] = {
    "lime": "chartreuse1",
    "green": "green3",
    "cyan": "cyan",
    "blue": "dodger_blue1",
    "purple": "purple",
    "magenta": "magenta",
    "red": "red",
    "orange": "dark_orange",
    "yellow": "yellow",
    "gray": "grey62",
}
"""The contract's ten colors (http-api.md) as rich color names."""

DEFAULT_ACCENT: Final = "white"
"""Accent of an activity without a (known) color."""

STATE_STYLES: Final[Mapping[str, str]] = {
    "active": "bold green3",
    "stale": "bold yellow",
    "ended": "bold red",
    "dismissed": "dim",
}
EMPTY: Final = "grey35"


def rich_color(name: object, default: str = DEFAULT_ACCENT) -> str:
    """The rich color of a contract color name; `default` for anything else."""
    return RICH_COLORS.get(name, default) if isinstance(name, str) else default


# -- small readers and formatters ------------------------------------------------------------------


def num(value: object) -> float | None:
    """A finite JSON number as float; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def text(value: object) -> str | None:
    """A non-empty JSON string; None for anything else."""
    return value if isinstance(value, str) and value else None


def scalar(value: object) -> str:
    """A metric or value readout: ints without ".0", strings as they are."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value)


def format_clock(seconds: float) -> str:
    """`mm:ss`, or `h:mm:ss` from one hour on; negative values count as zero."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_span(seconds: float) -> str:
    """A short human duration: `45s`, `2m 58s`, `3h 5m`."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60}s"
    return f"{total // 3600}h {total % 3600 // 60}m"


def format_when(at: float, now: float) -> str:
    """`12:03:00Z (in 2m 58s)` or `12:03:00Z (5s ago)`: a UTC time of day relative to `now`."""
    clock = _dt.datetime.fromtimestamp(at, tz=_dt.UTC).strftime("%H:%M:%SZ")
    delta = at - now
    return (
        f"{clock} (in {format_span(delta)})"
        if delta > 0
        else f"{clock} ({format_span(-delta)} ago)"
    )


def timer_reading(state: Mapping[str, Any], *, started_at: float, until: float) -> str:
    """The timer text of a `timer` content state, as shown at `until`.

    The timer runs from the activity's start: a countdown (`counts_down`, the default) shows what
    is left of `duration_seconds`, an elapsed timer shows the time since the start. A paused timer
    (`is_running` false) shows its full duration (countdown) or zero, as its pause point is not
    in the content state.
    """
    duration = num(state.get("duration_seconds"))
    counts_down = state.get("counts_down") is not False
    running = state.get("is_running") is not False
    elapsed = max(0.0, until - started_at) if running else 0.0
    if counts_down and duration is not None:
        left = max(0.0, duration - elapsed)
        label = "paused" if not running else ("done" if left == 0 else "left")
        return f"{format_clock(math.ceil(left))} {label}"
    return f"{format_clock(elapsed)} {'elapsed' if running else 'paused'}"


def lifecycle(activity: Mapping[str, Any], now: float) -> Text:
    """State label plus the dates that matter for it (stale, ended, dismissal)."""
    state = str(activity.get("state", "?"))
    line = Text(state, style=STATE_STYLES.get(state, "bold"))
    stale, ended = num(activity.get("stale_date")), num(activity.get("ended_at"))
    dismissal = num(activity.get("dismissal_at"))
    parts: list[str] = []
    if state in ("active", "stale") and stale is not None:
        parts.append(
            ("stale since " if state == "stale" else "stale at ") + format_when(stale, now)
        )
    if state in ("ended", "dismissed") and ended is not None:
        parts.append("ended " + format_when(ended, now))
    if dismissal is not None:
        verb = "dismissed " if state == "dismissed" else "dismisses "
        parts.append(verb + format_when(dismissal, now))
    for part in parts:
        line.append(" · " + part, style="dim")
    return line


def waiting(activity: Mapping[str, Any], now: float) -> Text | None:
    """What the device holds back: the Allow prompt, or a throttled / delayed update."""
    if activity.get("awaiting_allow"):
        return Text("⏸ awaiting Allow: no update token yet", style="bold yellow")
    held = activity.get("held")
    if not isinstance(held, dict):
        return None
    reason = (
        "throttled (budget spent)" if held.get("reason") == "throttled" else "delayed (priority 5)"
    )
    due = num(held.get("due_at"))
    when = "" if due is None else " · shows " + format_when(due, now)
    return Text(f"⏳ newer update {reason}{when}", style="yellow")
