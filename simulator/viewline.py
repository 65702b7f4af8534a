"""One line per Live Activity, and its buttons: the short forms of `lockstep devices`.

`activity_line(activity, now=...)` draws an activity on a single line: a state mark, its title
in its accent color, the gist of its body by type (`■■□□□ 2/5`, `████░░░░ 40%`, `CPU 9% · MEM
45%`, the value, `⚠ message`, the timer reading), its badge, what the device holds back and its
buttons. The compact view (simulator/viewfit.py) draws every activity this way; the full view
folds ended and dismissed activities into such lines, below the live ones.

`buttons(state)` draws the `action` and `secondary_action` a content state carries as `[ Title ]`
(an `↗` marks a webhook).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from rich.text import Text

from simulator.viewfmt import (
    EMPTY,
    STATE_STYLES,
    lifecycle,
    num,
    rich_color,
    scalar,
    text,
    timer_reading,
)

__all__ = ["BAR_CELLS", "STATE_MARKS", "activity_line", "buttons", "gist", "is_live"]

STATE_MARKS: Final[Mapping[str, str]] = {
    "active": "●",
    "stale": "◐",
    "ended": "○",
    "dismissed": "·",
}
"""The mark before an activity's line, by state."""

BAR_CELLS: Final = 10
"""Width of a one-line progress bar."""


def is_live(activity: Mapping[str, Any]) -> bool:
    """True while the activity is on the Lock Screen as a live one (active or stale)."""
    return activity.get("state") in ("active", "stale")


def _state(activity: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = activity.get("content_state")
    return raw if isinstance(raw, dict) else {}


def _segments(state: Mapping[str, Any], accent: str) -> Text:
    steps, done = num(state.get("number_of_steps")), num(state.get("current_step")) or 0.0
    if steps is None or steps < 1:
        return Text("no steps", style="dim")
    total, done_i = int(min(steps, 20)), int(max(0.0, min(done, steps)))
    line = Text()
    line.append("■" * min(done_i, total), style=accent)
    line.append("□" * (total - min(done_i, total)), style=EMPTY)
    line.append(f" {done_i}/{int(steps)}", style="bold")
    return line


def _progress(state: Mapping[str, Any], accent: str) -> Text:
    pct = num(state.get("percentage"))
    value, upper = num(state.get("value")), num(state.get("upper_limit"))
    if pct is None and value is not None and upper:
        pct = value / upper * 100
    if pct is None:
        return Text("no percentage", style="dim")
    pct = max(0.0, min(100.0, pct))
    full = round(pct / 100 * BAR_CELLS)
    line = Text("█" * full, style=accent)
    line.append("░" * (BAR_CELLS - full), style=EMPTY)
    line.append(f" {pct:.0f}%", style="bold")
    return line


def _metrics(state: Mapping[str, Any], accent: str) -> Text:
    raw = state.get("metrics")
    rows = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    line = Text()
    for i, m in enumerate(rows):
        if i:
            line.append(" · ", style="dim")
        line.append(str(m.get("label", "")) + " ")
        value = scalar(m.get("value")) + (text(m.get("unit")) or "")
        line.append(value, style="bold " + rich_color(m.get("color"), accent))
    return line


def _value(state: Mapping[str, Any], accent: str) -> Text:
    return Text(scalar(state["value"]) if "value" in state else "", style="bold " + accent)


def _alert(state: Mapping[str, Any], accent: str) -> Text:
    return Text("⚠ " + (text(state.get("message")) or ""), style="bold " + accent)


_GISTS: Final[Mapping[str, Callable[[Mapping[str, Any], str], Text]]] = {
    "segmented_progress": _segments,
    "progress": _progress,
    "metrics": _metrics,
    "stats": _metrics,
    "value": _value,
    "alert": _alert,
}


def gist(activity: Mapping[str, Any], *, now: float) -> Text:
    """The body of an activity in a few characters (the timer as it reads at `now`, or frozen
    at the end of an ended one)."""
    state = _state(activity)
    accent = rich_color(state.get("color"))
    kind = str(state.get("type"))
    if kind == "timer":
        started = num(activity.get("started_at")) or now
        ended = num(activity.get("ended_at"))
        until = ended if ended is not None and not is_live(activity) else now
        reading = timer_reading(state, started_at=started, until=until)
        return Text("timer " + reading, style="bold " + accent)
    render = _GISTS.get(kind)
    return render(state, accent) if render is not None else Text(kind, style="dim")


def buttons(state: Mapping[str, Any]) -> Text | None:
    """The activity's buttons as `[ Title ]` (`↗` for a webhook), or None without any."""
    line = Text()
    for key in ("action", "secondary_action"):
        action = state.get(key)
        if not isinstance(action, dict) or text(action.get("title")) is None:
            continue
        if line:
            line.append(" ")
        mark = " ↗" if action.get("type") == "webhook" else ""
        line.append(f"[ {action['title']}{mark} ]", style="bold reverse")
    return line or None


def activity_line(activity: Mapping[str, Any], *, now: float, dates: bool = False) -> Text:
    """The activity on one line; `dates` adds the state's dates (stale, ended, dismissal)."""
    state = _state(activity)
    accent = rich_color(state.get("color"))
    lifecycle_state = str(activity.get("state", "?"))
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(
        STATE_MARKS.get(lifecycle_state, "?") + " ", style=STATE_STYLES.get(lifecycle_state)
    )
    line.append(text(state.get("title")) or "(untitled)", style="bold " + accent)
    line.append("  ")
    line.append_text(gist(activity, now=now))
    badge = state.get("badge")
    if isinstance(badge, dict) and text(badge.get("title")):
        line.append("  ")
        line.append(
            f" {badge['title']} ", style="reverse " + rich_color(badge.get("color"), accent)
        )
    if activity.get("awaiting_allow"):
        line.append("  ⏸ Allow?", style="bold yellow")
    held = activity.get("held")
    if isinstance(held, dict):
        why = "throttled" if held.get("reason") == "throttled" else "delayed"
        line.append("  ⏳ " + why, style="yellow")
    shown = buttons(state)
    if shown is not None:
        line.append("  ")
        line.append_text(shown)
    if dates or not is_live(activity):
        line.append("  ")
        line.append_text(lifecycle(activity, now))
    return line
