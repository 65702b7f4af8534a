"""The compact Lock Screens, and the choice between full and compact for a terminal's size.

`render_compact(devices_json, now=..., height=H)` draws each phone as a small panel with one line
per activity (simulator/viewline.py): the live ones newest first, then one line for the ended
ones, then one for the app (badge and newest notification). With a `height`, every phone gets an
equal share of the lines, and what does not fit is counted (`+2 more`) rather than cut off: all
the phones stay on screen. When even that is too tall (many phones in a small window), each phone
is one line.

`fit(devices_json, now=..., console=..., mode=...)` is what `lockstep devices` draws: `full`
(simulator/view.py), `compact`, or `auto`: full when it fits the terminal, compact otherwise.
Pure, like the full view: the caller passes the decoded JSON and the wall time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from simulator.view import device_info, device_list, newest_first, render_devices
from simulator.viewfmt import num, text
from simulator.viewline import activity_line, gist, is_live

__all__ = ["Mode", "fit", "phone_line", "render_compact", "tall"]

Mode = Literal["auto", "full", "compact"]
"""`lockstep devices --full` / `--compact`; `auto` unless one is given."""

_PANEL_LINES: Final = 2  # a panel's top and bottom borders


def _app_line(device: Mapping[str, Any]) -> Text | None:
    """The app's badge and newest notification, or None when it has had neither."""
    raw = device.get("notifications")
    notes = [n for n in raw if isinstance(n, dict)] if isinstance(raw, list) else []
    badge = num(device.get("badge")) or 0
    if not notes and not badge:
        return None
    line = Text(f"app · badge {int(badge)}", style="bold", no_wrap=True, overflow="ellipsis")
    if notes:
        newest = notes[-1]
        words = [text(newest.get(k)) for k in ("title", "body")]
        line.append(" · " + " — ".join(w for w in words if w), style="")
    return line


def _lines(device: Mapping[str, Any], now: float) -> list[Text]:
    activities = newest_first(device)
    live = [a for a in activities if is_live(a)]
    gone = [a for a in activities if not is_live(a)]
    lines = [activity_line(a, now=now) for a in live]
    if gone:
        titles = ", ".join(text(_state(a).get("title")) or "?" for a in gone)
        lines.append(Text(f"○ {len(gone)} ended: {titles}", style="dim", no_wrap=True))
    if not activities:
        lines.append(Text("no Live Activities", style="dim"))
    app = _app_line(device)
    if app is not None:
        lines.append(app)
    return lines


def _state(activity: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = activity.get("content_state")
    return raw if isinstance(raw, dict) else {}


def _budgeted(lines: list[Text], rows: int | None) -> list[Text]:
    """At most `rows` lines: the first ones, and a count of the rest in the last."""
    if rows is None or len(lines) <= rows:
        return lines
    kept = lines[: max(0, rows - 1)]
    return [*kept, Text(f"+{len(lines) - len(kept)} more", style="dim")]


def phone_line(device: Mapping[str, Any], *, now: float) -> Text:
    """A whole phone on one line: its name, counts, and its newest live activity's gist."""
    activities = newest_first(device)
    live = [a for a in activities if is_live(a)]
    line = Text(no_wrap=True, overflow="ellipsis")
    offline = device.get("online") is False
    line.append(str(device.get("name", "?")), style="bold red" if offline else "bold")
    line.append(f"  {len(live)} live · {len(activities) - len(live)} ended", style="dim")
    if offline:
        line.append("  OFFLINE", style="bold red")
    if live:
        newest = live[0]
        line.append("  " + (text(_state(newest).get("title")) or "(untitled)") + " ")
        line.append_text(gist(newest, now=now))
    return line


def render_compact(
    devices_json: Any, *, now: float, device: str | None = None, height: int | None = None
) -> RenderableType:
    """Every phone, compact; with `height`, all of them within that many lines."""
    devices = device_list(devices_json)
    if device is not None:
        devices = [d for d in devices if d.get("name") == device]
    if not devices:
        return render_devices(devices_json, now=now, device=device)  # its "none" message
    share = None if height is None else (height - 1) // len(devices)  # the prompt keeps a line
    if share is not None and share < _PANEL_LINES + 1:
        return Group(*(phone_line(d, now=now) for d in devices))
    panels = []
    for d in devices:
        rows = None if share is None else share - _PANEL_LINES
        info, offline = device_info(d)
        panels.append(
            Panel(
                Group(*_budgeted(_lines(d, now), rows)),
                title=Text(str(d.get("name", "?")), style="bold"),
                title_align="left",
                subtitle=Text(info, style="dim"),
                subtitle_align="right",
                box=box.ROUNDED,
                border_style="red" if offline else "bright_white",
                padding=(0, 1),
            )
        )
    return Group(*panels)


def tall(renderable: RenderableType, console: Console) -> int:
    """How many lines `renderable` takes at the console's width."""
    options = console.options.update(height=None)
    return len(console.render_lines(renderable, options, pad=False))


def fit(
    devices_json: Any,
    *,
    now: float,
    console: Console,
    device: str | None = None,
    mode: Mode = "auto",
) -> RenderableType:
    """What `lockstep devices` draws on `console`. In a terminal, `auto` draws in full when that
    fits its height and compact otherwise, and compact shares the height among the phones; off a
    terminal (piped), `auto` is full and compact is not cut."""
    height = console.height if console.is_terminal else None
    if mode == "compact":
        return render_compact(devices_json, now=now, device=device, height=height)
    full = render_devices(devices_json, now=now, device=device)
    if mode == "full" or height is None or tall(full, console) < height:
        return full
    return render_compact(devices_json, now=now, device=device, height=height)
