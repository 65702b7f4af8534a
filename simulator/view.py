"""The simulated iPhones' Lock Screens in full, drawn in a terminal with rich (`lockstep devices`).

From the simulator control API's `GET /devices` (shape in simulator/devices.py) it draws one panel
per device with one panel per live Live Activity, newest first: title, subtitle, icon, badge, the
body of its type (segments, progress bar, metrics table, stats, big value, alert message, timer),
its buttons, its accent color as the border, its state (active / stale) and dates. Ended and
dismissed activities are folded below them, one line each (simulator/viewline.py). Below those,
`render_app` draws the app's own pushes: its badge, wake, reload and call counts, and its newest
notifications (newest on top, with their interruption level).

`render_devices(devices_json, now=...)` is pure: it takes the decoded JSON and the wall time (unix
seconds, for timers and "in 2m" labels) and returns a rich renderable, so tests can draw it on a
recording console. The compact form for small terminals is simulator/viewfit.py; fetching, the
command and the `--watch` loop are simulator/viewcli.py.

Content-state fields are read leniently: the simulator accepts any JSON object as content-state,
so a missing or mistyped field is left out (or shown raw), never an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from rich import box
from rich.align import Align
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from simulator.viewfmt import (
    DEFAULT_ACCENT,
    RICH_COLORS,
    format_clock,
    format_span,
    format_when,
    rich_color,
    timer_reading,
)
from simulator.viewfmt import EMPTY as _EMPTY
from simulator.viewfmt import lifecycle as _lifecycle
from simulator.viewfmt import num as _num
from simulator.viewfmt import scalar as _scalar
from simulator.viewfmt import text as _str
from simulator.viewfmt import waiting as _waiting
from simulator.viewline import activity_line, buttons, is_live

__all__ = [
    "DEFAULT_ACCENT",
    "FOLDED_SHOWN",
    "RICH_COLORS",
    "device_info",
    "device_list",
    "format_clock",
    "format_span",
    "format_when",
    "newest_first",
    "render_activity",
    "render_app",
    "render_device",
    "render_devices",
    "render_error",
    "rich_color",
    "timer_reading",
]

FOLDED_SHOWN: Final = 3
"""How many ended or dismissed activities a phone lists (the newest), one line each."""


# -- type bodies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What a body renderer needs besides the content state."""

    accent: str
    started_at: float
    until: float  # `now`, or the end time for an ended activity (its timer froze then)


def _segments(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    steps = _num(state.get("number_of_steps"))
    done = _num(state.get("current_step")) or 0.0
    if steps is None or steps < 1:
        return Text("segmented progress without number_of_steps", style="dim")
    total, done_i = int(min(steps, 64)), int(max(0.0, min(done, steps)))
    raw_colors = state.get("step_colors")
    colors: list[Any] = raw_colors if isinstance(raw_colors, list) else []
    text = Text()
    for i in range(total):
        if i < done_i:
            color = rich_color(colors[i], ctx.accent) if i < len(colors) else ctx.accent
            if i == done_i - 1:  # the current step (http-api.md: step_color overrides it)
                color = rich_color(state.get("step_color"), color)
            text.append("■", style=color)
        else:
            text.append("□", style=_EMPTY)
        text.append(" ")
    text.append(f" step {done_i}/{int(steps)}", style="bold")
    return text


def _progress(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    pct = _num(state.get("percentage"))
    value, upper = _num(state.get("value")), _num(state.get("upper_limit"))
    detail = ""
    if pct is None and value is not None and upper:
        pct = value / upper * 100
        detail = f"  {_scalar(state.get('value'))} / {_scalar(state.get('upper_limit'))}"
    if pct is None:
        return Text("progress without percentage", style="dim")
    pct = max(0.0, min(100.0, pct))
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(justify="right", no_wrap=True)
    bar = ProgressBar(
        total=100.0,
        completed=pct,
        complete_style=ctx.accent,
        finished_style=ctx.accent,
        style=_EMPTY,
    )
    grid.add_row(bar, Text(f"{pct:.0f}%{detail}", style="bold"))
    return grid


def _metric_rows(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    metrics = state.get("metrics")
    return [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []


def _metrics(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    rows = _metric_rows(state)
    if not rows:
        return Text("no metrics", style="dim")
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, header_style="dim")
    table.add_column("label")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for m in rows:
        style = "bold " + rich_color(m.get("color"), ctx.accent)
        table.add_row(
            Text(str(m.get("label", ""))),
            Text(_scalar(m.get("value")), style=style),
            Text(_str(m.get("unit")) or ""),
        )
    return table


def _stats(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    rows = _metric_rows(state)
    if not rows:
        return Text("no stats", style="dim")
    grid = Table.grid(padding=(0, 3))
    for _ in rows:
        grid.add_column(justify="center")
    grid.add_row(
        *(
            Text(
                _scalar(m.get("value")) + (_str(m.get("unit")) or ""),
                style="bold " + rich_color(m.get("color"), ctx.accent),
            )
            for m in rows
        )
    )
    grid.add_row(*(Text(str(m.get("label", "")), style="dim") for m in rows))
    return grid


def _value(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    if "value" not in state:
        return Text("no value", style="dim")
    return Align.center(Text(_scalar(state["value"]), style="bold " + ctx.accent))


def _alert(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    return Text("⚠ " + (_str(state.get("message")) or "(no message)"), style="bold " + ctx.accent)


def _timer(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    reading = timer_reading(state, started_at=ctx.started_at, until=ctx.until)
    return Text("timer " + reading, style="bold " + ctx.accent)


_BODIES: Final[Mapping[str, Callable[[Mapping[str, Any], _Ctx], RenderableType]]] = {
    "segmented_progress": _segments,
    "progress": _progress,
    "metrics": _metrics,
    "stats": _stats,
    "value": _value,
    "alert": _alert,
    "timer": _timer,
}


def _render_body(state: Mapping[str, Any], ctx: _Ctx) -> RenderableType:
    """The type-specific part of an activity; unknown types show their content state raw."""
    body = _BODIES.get(str(state.get("type")))
    if body is None:
        return Text(json.dumps(state, sort_keys=True)[:500], style="dim")
    return body(state, ctx)


# -- activities and devices ----------------------------------------------------------------------


def _header(state: Mapping[str, Any], accent: str) -> Text:
    text = Text()
    icon = state.get("icon")
    if isinstance(icon, dict) and _str(icon.get("symbol")):
        text.append(f"[{icon['symbol']}] ", style=rich_color(icon.get("color"), accent))
    text.append(_str(state.get("title")) or "(untitled)", style="bold")
    badge = state.get("badge")
    if isinstance(badge, dict) and _str(badge.get("title")):
        text.append("  ")
        text.append(
            f" {badge['title']} ", style="reverse " + rich_color(badge.get("color"), accent)
        )
    return text


def _footer(activity: Mapping[str, Any], now: float) -> Text:
    started = _num(activity.get("started_at"))
    bits = [f"id {activity.get('activity_id', '?')}"]
    if started is not None:
        bits.append("started " + format_when(started, now))
    bits.append(f"applied {activity.get('applied', 0)}")
    ignored, violations = activity.get("ignored", 0), activity.get("order_violations", 0)
    bits.append(f"ignored {ignored}" + (f" ({violations} out of order)" if violations else ""))
    return Text(" · ".join(bits), style="dim")


def render_activity(activity: Mapping[str, Any], *, now: float) -> Panel:
    """One Live Activity as its Lock Screen card."""
    raw = activity.get("content_state")
    state: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    lifecycle = str(activity.get("state", ""))
    accent = rich_color(state.get("color"))
    started = _num(activity.get("started_at")) or now
    ended = _num(activity.get("ended_at"))
    until = ended if ended is not None and lifecycle in ("ended", "dismissed") else now
    parts: list[RenderableType] = [_header(state, accent)]
    if _str(state.get("subtitle")):
        parts.append(Text(state["subtitle"], style="italic"))
    parts.append(_render_body(state, _Ctx(accent, started, until)))
    shown = buttons(state)
    if shown is not None:
        parts.append(shown)
    alert = activity.get("last_alert")
    if isinstance(alert, dict) and (_str(alert.get("title")) or _str(alert.get("body"))):
        line = " — ".join(s for s in (_str(alert.get("title")), _str(alert.get("body"))) if s)
        parts.append(Text("alert: " + line, style="dim"))
    parts.append(_lifecycle(activity, now))
    waiting = _waiting(activity, now)
    if waiting is not None:
        parts.append(waiting)
    parts.append(_footer(activity, now))
    dismissed = lifecycle == "dismissed"
    return Panel(
        Group(*parts),
        title=Text(str(state.get("type", "activity"))),
        title_align="left",
        border_style="grey35" if dismissed else accent,
        style="dim" if dismissed else "",
        box=box.ROUNDED,
    )


NOTIFICATIONS_SHOWN: Final = 3
"""How many of a device's notifications `lockstep devices` draws (the newest, on top)."""

_LEVEL_MARKS: Final[Mapping[str, str]] = {"passive": "· ", "time-sensitive": "! ", "critical": "‼ "}
"""The mark before a notification, by interruption level ("• " for `active`)."""


def _alert_text(value: object) -> str | None:
    """A notification title/subtitle/body: a string, or a `loc-key` object shown as key [args]."""
    if isinstance(value, dict):
        args = value.get("loc-args")
        shown = ", ".join(str(a) for a in args) if isinstance(args, list) else ""
        return f"{value.get('loc-key')} [{shown}]"
    return _str(value)


def render_app(device: Mapping[str, Any], *, now: float) -> RenderableType | None:
    """The app's own pushes on a device: its badge, counters and newest notifications.

    None when the app has received nothing (Live Activity pushes alone), so such a device draws
    exactly as before.
    """
    raw = device.get("notifications")
    notes = [n for n in raw if isinstance(n, dict)] if isinstance(raw, list) else []
    calls = device.get("calls")
    counts = [
        (device.get("badge"), "badge {}"),
        (device.get("background_wakes"), "{} background wakes"),
        (device.get("widget_reloads"), "{} widget reloads"),
        (len(calls) if isinstance(calls, list) else 0, "{} calls"),
    ]
    bits = [label.format(n) for n, label in counts if _num(n)]
    if not notes and not bits:
        return None
    lines: list[RenderableType] = [Text("app · " + (" · ".join(bits) or "badge 0"), style="bold")]
    for note in reversed(notes[-NOTIFICATIONS_SHOWN:]):
        text = Text(_LEVEL_MARKS.get(str(note.get("interruption_level")), "• "))
        parts = [_alert_text(note.get(k)) for k in ("title", "subtitle", "body")]
        text.append(" — ".join(p for p in parts if p) or "(no text)")
        at = _num(note.get("at"))
        if at is not None:
            text.append("  " + format_when(at, now), style="dim")
        lines.append(text)
    if len(notes) > NOTIFICATIONS_SHOWN:
        lines.append(Text(f"+{len(notes) - NOTIFICATIONS_SHOWN} older notifications", style="dim"))
    widget = render_widget(device.get("widget"), now=now)
    if widget is not None:
        lines.append(widget)
    return Group(*lines)


def render_widget(widget: object, *, now: float) -> Text | None:
    """The values the app's widget shows (read from the server after its last reload)."""
    if not isinstance(widget, dict):
        return None
    metrics = widget.get("metrics")
    values = metrics if isinstance(metrics, dict) else {}
    if not values and not widget.get("error"):
        return None
    text = Text("widget  ")
    text.append("  ".join(f"{k} {v}" for k, v in values.items()) or "(nothing yet)")
    at = _num(widget.get("shown_at"))
    if at is not None:
        text.append("  " + format_when(at, now), style="dim")
    if widget.get("error"):
        text.append(f"  read failed: {widget['error']}", style="red")
    return text


def newest_first(device: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A device's activities, the most recently started first."""
    raw = device.get("activities")
    activities = [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
    return sorted(activities, key=lambda a: -(_num(a.get("started_at")) or 0.0))


def folded(gone: list[Mapping[str, Any]], *, now: float, shown: int = FOLDED_SHOWN) -> Group:
    """Ended and dismissed activities, newest first: a line each (wrapped, never cut) for the
    first `shown`, and how many more there are."""
    lines: list[Text] = [Text(f"{len(gone)} ended", style="dim")]
    for activity in gone[:shown]:
        line = activity_line(activity, now=now, dates=True)
        line.no_wrap, line.overflow = False, "fold"
        lines.append(line)
    if len(gone) > shown:
        lines.append(Text(f"+{len(gone) - shown} more ended", style="dim"))
    return Group(*lines)


def device_info(device: Mapping[str, Any]) -> tuple[str, bool]:
    """The line under a phone (live and known activities, channels, budget, outage) and whether
    the phone is offline."""
    activities = newest_first(device)
    live = sum(1 for a in activities if is_live(a))
    channels = device.get("channels") or []
    info = [f"{live} live / {len(activities)} shown"]
    if channels:
        info.append("channels " + ", ".join(str(c) for c in channels))
    if device.get("ignored"):
        info.append(f"ignored starts {device['ignored']}")
    budget = device.get("budget")
    if isinstance(budget, dict) and budget.get("updates_left") is not None:
        info.append(f"budget {budget['updates_left']}/{budget.get('updates_per_hour', '?')} per h")
    offline = device.get("online") is False
    if offline:
        stored = device.get("stored")
        count = len(stored) if isinstance(stored, list) else device.get("stored_count", 0)
        info.append(f"OFFLINE · APNs keeps {count}")
    return " · ".join(info), offline


def render_device(device: Mapping[str, Any], *, now: float) -> Panel:
    """One simulated iPhone: its live activities as cards, newest first, then the ended ones
    folded, one line each."""
    activities = newest_first(device)
    live = [a for a in activities if is_live(a)]
    gone = [a for a in activities if not is_live(a)]
    parts: list[RenderableType] = [render_activity(a, now=now) for a in live]
    if not activities:
        parts.append(Text("no Live Activities", style="dim"))
    if gone:
        parts.append(folded(gone, now=now))
    app = render_app(device, now=now)  # notifications and badge, below the Live Activities
    if app is not None:
        parts.append(app)
    info, offline = device_info(device)
    return Panel(
        Group(*parts),
        title=Text(str(device.get("name", "?")), style="bold"),
        title_align="left",
        subtitle=Text(info, style="dim"),
        subtitle_align="right",
        box=box.HEAVY,
        border_style="red" if offline else "bright_white",
    )


def device_list(devices_json: Any) -> list[Mapping[str, Any]]:
    """The devices in a `GET /devices` answer (also a bare list, or one `GET /devices/{name}`)."""
    if isinstance(devices_json, dict) and "devices" in devices_json:
        devices_json = devices_json["devices"]
    elif isinstance(devices_json, dict):
        devices_json = [devices_json]
    if not isinstance(devices_json, list):
        return []
    return [d for d in devices_json if isinstance(d, dict)]


def render_devices(devices_json: Any, *, now: float, device: str | None = None) -> RenderableType:
    """Every device of a `GET /devices` answer (or only `device`) as panels, as of `now`."""
    devices = device_list(devices_json)
    if device is not None:
        devices = [d for d in devices if d.get("name") == device]
        if not devices:
            return Text(f"no simulated device named {device!r}", style="yellow")
    if not devices:
        return Text("no simulated devices", style="dim")
    return Group(*(render_device(d, now=now) for d in devices))


def render_error(message: str) -> RenderableType:
    """What `--watch` shows while the control API cannot be read."""
    return Panel(Text(message), title="control API unavailable", border_style="red")
