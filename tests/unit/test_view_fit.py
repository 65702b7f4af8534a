"""`lockstep devices` in a small terminal: newest first, ended folded, buttons, compact, 80×24."""

from __future__ import annotations

import random
from typing import Any

from rich.console import Console

from simulator import view, viewfit, viewline
from simulator.devices import ActivityOutcome, DeviceRegistry
from tests.helpers.viewkit import STATES, T0, deliver, draw, start_aps

BUTTONS = {
    "action": {"title": "Open", "type": "open_url", "url": "https://example.com"},
    "secondary_action": {"title": "Ack", "type": "webhook", "url": "https://example.com/a"},
}


def phones(count: int, types: list[str], *, ended: int = 0, note: bool = False) -> Any:
    """`GET /devices` JSON: `count` phones, each with one activity per type started a second
    apart (in the order given), then `ended` of them ended."""
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(5), max_active=8)
    for n in range(count):
        device = reg.add_device(f"phone-{n}", now=T0)
        tokens = []
        for i, type_ in enumerate(types):
            aps = start_aps({**STATES[type_], **BUTTONS}, T0 + i, f"p{n}-{i}")
            result = deliver(reg, device.push_to_start_token, aps, T0 + i)
            assert result.outcome is ActivityOutcome.STARTED
            tokens.append(str(result.issued_token))
        for token in tokens[:ended]:
            end = {"event": "end", "timestamp": T0 + 30}
            assert deliver(reg, token, end, T0 + 30).outcome is ActivityOutcome.ENDED
        if note:
            reg.devices[f"phone-{n}"].app.badge = 2  # what an alert push with a badge leaves
    return {"devices": reg.snapshot(T0 + 60)}


def terminal(width: int = 80, height: int = 24) -> Console:
    return Console(
        record=True, width=width, height=height, force_terminal=True, color_system="truecolor"
    )


def shown(console: Console, renderable: Any) -> list[str]:
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_newest_activity_comes_first() -> None:
    text = draw(view.render_devices(phones(1, ["value", "progress", "alert"]), now=T0 + 60))
    assert text.index("Disk") < text.index("Backup") < text.index("Queue depth")


def test_ended_activities_fold_into_lines_below_the_live_ones() -> None:
    text = draw(
        view.render_devices(phones(1, ["value", "progress", "alert"], ended=2), now=T0 + 60)
    )
    assert "1 live / 3 shown" in text
    assert "2 ended" in text
    assert text.index("Disk") < text.index("2 ended") < text.index("○ Backup")
    assert "╭─ value" not in text and "╭─ progress" not in text  # no cards for them
    assert "╭─ alert" in text


def test_buttons_are_drawn_on_cards_and_lines() -> None:
    data = phones(1, ["progress"])
    assert "[ Open ] [ Ack ↗ ]" in draw(view.render_devices(data, now=T0 + 60))
    compact = draw(viewfit.render_compact(data, now=T0 + 60))
    assert "[ Open ] [ Ack ↗ ]" in compact
    assert viewline.buttons({"title": "x"}) is None


def test_compact_lines_carry_each_types_gist() -> None:
    data = phones(1, list(STATES))
    text = draw(viewfit.render_compact(data, now=T0 + 60), width=120)
    for gist in (
        "■■■□□ 3/5",
        "████░░░░░░ 42%",
        "CPU 9% · MEM 45.5%",
        "orders 128 · revenue $4.2k",
        "1,024",
        "⚠ disk almost full",
        " P1 ",
        "timer 09:06 left",  # started at T0 + 6, drawn at T0 + 60
    ):
        assert gist in text, f"{gist!r} missing from:\n{text}"


def test_every_phone_is_visible_in_80_by_24() -> None:
    types = ["segmented_progress", "progress", "metrics", "stats", "value", "alert"]
    data = phones(3, types, ended=1)
    console = terminal()
    lines = shown(console, viewfit.fit(data, now=T0 + 60, console=console))
    assert len(lines) <= 23  # the prompt keeps the last line
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for n in range(3):
        assert f"phone-{n}" in text
    assert text.count("more") == 3  # what did not fit is counted, per phone
    assert text.index("Disk") < text.index("Queue depth")  # newest first still


def test_many_phones_in_80_by_24_get_a_line_each() -> None:
    data = phones(12, ["progress", "alert"])
    console = terminal()
    lines = shown(console, viewfit.fit(data, now=T0 + 60, console=console))
    assert len(lines) == 12
    for n, line in enumerate(lines):
        assert line.startswith(f"phone-{n}  2 live · 0 ended  Disk ⚠ disk almost full")


def test_auto_draws_in_full_when_it_fits_and_compact_when_asked() -> None:
    data = phones(1, ["segmented_progress"])
    console = terminal(height=60)
    full = "\n".join(shown(console, viewfit.fit(data, now=T0 + 60, console=console)))
    assert "╭─ segmented_progress" in full and "step 3/5" in full
    console = terminal(height=60)
    small = shown(console, viewfit.fit(data, now=T0 + 60, console=console, mode="compact"))
    assert len(small) == 3 and "■■■□□ 3/5" in small[1]


def test_off_a_terminal_auto_is_full_and_compact_is_not_cut() -> None:
    data = phones(3, ["progress", "alert", "value", "metrics", "stats"])
    piped = Console(record=True, width=80, height=24)  # not a terminal
    assert not piped.is_terminal
    full = shown(piped, viewfit.fit(data, now=T0 + 60, console=piped))
    assert len(full) > 24
    piped = Console(record=True, width=80, height=24)
    compact = shown(piped, viewfit.fit(data, now=T0 + 60, console=piped, mode="compact"))
    assert len(compact) == 3 * 7 and "more" not in "\n".join(compact)


def test_the_app_line_shows_the_badge() -> None:
    text = draw(viewfit.render_compact(phones(1, ["value"], note=True), now=T0 + 60))
    assert "app · badge 2" in text


def _act(activity_id: str, state: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "activity_id": activity_id,
        "state": state,
        "content_state": content,
        "started_at": T0 + int(activity_id[1:]),
        **extra,
    }


HAND_MADE: dict[str, list[dict[str, Any]]] = {
    "devices": [
        {
            "name": "hand",
            "online": False,
            "stored_count": 4,
            "badge": 5,
            "notifications": [{"title": "Backup", "body": "done", "interruption_level": "active"}],
            "activities": [
                _act("a1", "active", {"title": "Steps", "type": "segmented_progress"}),
                _act(
                    "a2", "active",
                    {"title": "Pct", "type": "progress", "value": 5, "upper_limit": 20},
                    awaiting_allow=True,
                ),
                _act(
                    "a3", "stale", {"title": "Bare", "type": "progress"},
                    held={"reason": "low-priority"},
                ),
                _act("a4", "active", {"title": "Odd", "type": "sparkline"}),
                *(
                    _act(f"a{n}", "ended", {"title": f"Old {n}", "type": "value", "value": n},
                         ended_at=T0 + 50)
                    for n in range(5, 10)
                ),
            ],
        },
        {"name": "empty", "activities": "not a list"},
    ]
}  # fmt: skip


def test_lenient_and_rare_cases_are_drawn_in_every_form() -> None:
    compact = draw(viewfit.render_compact(HAND_MADE, now=T0 + 60), width=120)
    for fragment in (
        "● Steps  no steps",
        "● Pct  ██░░░░░░░░ 25%  ⏸ Allow?",
        "◐ Bare  no percentage  ⏳ delayed",
        "● Odd  sparkline",
        "○ 5 ended: Old 9, Old 8, Old 7, Old 6, Old 5",
        "app · badge 5 · Backup — done",
        "OFFLINE · APNs keeps 4",
        "no Live Activities",
    ):
        assert fragment in compact, f"{fragment!r} missing from:\n{compact}"
    full = draw(view.render_devices(HAND_MADE, now=T0 + 60), width=120)
    assert "5 ended" in full and "+2 more ended" in full and "Old 9" in full
    assert "Old 6" not in full  # only the newest three ended ones get a line
    only = draw(viewfit.render_compact(HAND_MADE, now=T0 + 60, device="empty"))
    assert "empty" in only and "hand" not in only
    none = draw(viewfit.render_compact(HAND_MADE, now=T0 + 60, device="nope"))
    assert "no simulated device named 'nope'" in none


def test_a_phone_on_one_line_says_offline_and_its_newest_activity() -> None:
    line = viewfit.phone_line(HAND_MADE["devices"][0], now=T0 + 60).plain
    assert line.startswith("hand  4 live · 5 ended  OFFLINE  Odd sparkline")
    assert viewfit.phone_line({"name": "x"}, now=T0).plain == "x  0 live · 0 ended"
