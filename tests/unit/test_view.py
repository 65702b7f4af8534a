"""`lockstep devices`: drawing the simulated iPhones' Lock Screens from the control API's JSON."""

from __future__ import annotations

import argparse
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rich.console import Console

from simulator import view, viewcli
from simulator.devices import ActivityOutcome, DeviceRegistry
from simulator.profile import AllowPrompt, DeviceProfile
from simulator.validation import TokenKind
from tests.helpers.viewkit import STATES, T0, deliver, draw, simulated, start_aps


def rendered(type_: str, now: float = T0 + 75) -> str:
    return draw(view.render_devices(simulated([type_], now=now), now=now))


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        ("segmented_progress", ["Deploy", "build 42", "■ ■ ■ □ □", "step 3/5"]),
        ("progress", ["Backup", "42%"]),
        ("metrics", ["web-1", "CPU", "9", "MEM", "45.5", "%"]),
        ("stats", ["Sales", "128", "orders", "$4.2k", "revenue"]),
        ("value", ["Queue depth", "1,024"]),
        ("alert", ["Disk", "⚠ disk almost full", "[externaldrive]", " P1 "]),
        ("timer", ["Pizza", "timer 08:45 left"]),  # 600 s from T0, drawn at T0 + 75 s
    ],
)
def test_each_type_draws_its_body(type_: str, expected: list[str]) -> None:
    text = rendered(type_)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} missing from:\n{text}"
    assert "phone-0" in text
    assert "active" in text
    assert type_ in text  # the card's title is the type


def test_timer_counts_from_the_activity_start() -> None:
    assert "timer 10:00 left" in rendered("timer", now=T0)
    assert "timer 00:00 done" in rendered("timer", now=T0 + 3600)


@pytest.mark.parametrize(
    ("state", "until", "expected"),
    [
        ({"duration_seconds": 90}, T0 + 30, "01:00 left"),
        ({"duration_seconds": 90, "counts_down": False}, T0 + 30, "00:30 elapsed"),
        ({"counts_down": False}, T0 + 3725, "1:02:05 elapsed"),
        ({"duration_seconds": 90, "is_running": False}, T0 + 30, "01:30 paused"),
        ({"duration_seconds": 10}, T0 + 9.5, "00:01 left"),  # a countdown rounds up
        ({}, T0 - 5, "00:00 elapsed"),  # a clock behind the start is not negative
    ],
)
def test_timer_reading(state: dict[str, Any], until: float, expected: str) -> None:
    assert view.timer_reading(state, started_at=T0, until=until) == expected


def test_ended_activity_shows_its_dismissal_time_and_frozen_timer() -> None:
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(1))
    device = reg.add_device("phone", now=T0)
    started = deliver(reg, device.push_to_start_token, start_aps(STATES["timer"], T0, "t"), T0)
    end = {"event": "end", "timestamp": T0 + 60, "dismissal-date": T0 + 240}
    assert deliver(reg, str(started.issued_token), end, T0 + 60).outcome is ActivityOutcome.ENDED
    text = draw(view.render_devices({"devices": reg.snapshot(T0 + 100)}, now=T0 + 100))
    assert "ended" in text
    assert "dismisses 22:17:20Z (in 2m 20s)" in text
    assert "timer 09:00 left" in text  # frozen at the end, 60 s in

    later = draw(view.render_devices({"devices": reg.snapshot(T0 + 300)}, now=T0 + 300), width=120)
    assert "dismissed 22:17:20Z (1m 0s ago)" in later


def test_stale_activity() -> None:
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(1))
    device = reg.add_device("phone", now=T0)
    aps = {**start_aps(STATES["value"], T0, "v"), "stale-date": T0 + 10}
    deliver(reg, device.push_to_start_token, aps, T0)
    text = draw(view.render_devices({"devices": reg.snapshot(T0 + 20)}, now=T0 + 20))
    assert "stale · stale since 22:13:30Z (10s ago)" in text


def test_what_the_device_holds_back_is_drawn() -> None:
    reg = DeviceRegistry(
        bundle_id="com.example.app",
        rng=random.Random(1),
        default_profile=DeviceProfile(update_budget=1, allow_prompt=AllowPrompt.AUTO),
    )
    device = reg.add_device("phone", now=T0)
    token = deliver(reg, device.push_to_start_token, start_aps(STATES["value"], T0, "v"), T0)
    update = {"event": "update", "content-state": STATES["value"]}
    deliver(reg, token.issued_token, {**update, "timestamp": T0 + 1}, T0 + 1)
    deliver(reg, token.issued_token, {**update, "timestamp": T0 + 2}, T0 + 2)
    manual = reg.add_device("slow", profile=DeviceProfile(allow_prompt=AllowPrompt.MANUAL), now=T0)
    deliver(reg, manual.push_to_start_token, start_aps(STATES["value"], T0, "w"), T0)
    reg.set_online("slow", False, now=T0 + 3)
    text = draw(view.render_devices({"devices": reg.snapshot(T0 + 5)}, now=T0 + 5), width=120)
    assert "newer update throttled (budget spent) · shows" in text
    assert "budget 0/1 per h" in text
    assert "awaiting Allow" in text and "OFFLINE · APNs keeps 0" in text


def test_every_device_is_drawn_in_order_with_its_channels() -> None:
    data = simulated(list(STATES))
    data["devices"][0]["channels"] = ["ops", "web"]
    text = draw(view.render_devices(data, now=T0 + 75))
    positions = [text.index(f"phone-{i}") for i in range(len(STATES))]
    assert positions == sorted(positions)
    assert "channels ops, web" in text
    assert "1 live / 1 shown" in text


def test_device_filter_and_empty_answers() -> None:
    data = simulated(["value", "alert"])
    only = draw(view.render_devices(data, now=T0, device="phone-1"))
    assert "phone-1" in only and "phone-0" not in only
    assert "no simulated device named 'nope'" in draw(
        view.render_devices(data, now=T0, device="nope")
    )
    assert "no simulated devices" in draw(view.render_devices({"devices": []}, now=T0))
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(1))
    reg.add_device("idle", now=T0)
    assert "no Live Activities" in draw(view.render_devices({"devices": reg.snapshot(T0)}, now=T0))


def test_one_device_answer_and_bare_list_are_accepted() -> None:
    device = simulated(["value"])["devices"][0]
    assert "1,024" in draw(view.render_devices(device, now=T0))
    assert "1,024" in draw(view.render_devices([device], now=T0))


def test_user_text_is_not_rich_markup() -> None:
    state = {"title": "[bold red]x[/]", "type": "alert", "message": "[link=y]z[/link]"}
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(1))
    device = reg.add_device("phone", now=T0)
    deliver(reg, device.push_to_start_token, start_aps(state, T0, "m"), T0)
    text = draw(view.render_devices({"devices": reg.snapshot(T0)}, now=T0))
    assert "[bold red]x[/]" in text
    assert "[link=y]z[/link]" in text


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"type": "segmented_progress", "number_of_steps": "five"},
        {"type": "progress"},
        {"type": "progress", "value": 3, "upper_limit": 0},
        {"type": "metrics", "metrics": "CPU"},
        {"type": "stats", "metrics": [1, None]},
        {"type": "value"},
        {"type": "timer", "duration_seconds": float("inf")},
        {"type": "unknown-kind", "x": 1},
        {"type": None, "icon": "cpu", "badge": 3, "color": 7},
    ],
)
def test_malformed_content_state_never_breaks_drawing(state: dict[str, Any]) -> None:
    activity = simulated(["value"])["devices"][0]["activities"][0]
    activity["content_state"] = state
    assert "phone-0" in draw(
        view.render_devices([{"name": "phone-0", "activities": [activity]}], now=T0)
    )


def test_progress_from_value_and_upper_limit() -> None:
    activity = simulated(["value"])["devices"][0]["activities"][0]
    activity["content_state"] = {
        "title": "Copy",
        "type": "progress",
        "value": 30,
        "upper_limit": 120,
    }
    text = draw(view.render_activity(activity, now=T0))
    assert "25%  30 / 120" in text


def test_colors_map_to_rich_colors_on_the_border() -> None:
    assert set(view.RICH_COLORS) == {
        "lime",
        "green",
        "cyan",
        "blue",
        "purple",
        "magenta",
        "red",
        "orange",
        "yellow",
        "gray",
    }
    assert view.rich_color("nope") == view.DEFAULT_ACCENT
    activity = simulated(["value"])["devices"][0]["activities"][0]
    assert view.render_activity(activity, now=T0).border_style == "dark_orange"


@pytest.mark.parametrize(
    ("seconds", "clock", "span"),
    [
        (0, "00:00", "0s"),
        (59.9, "00:59", "1m 0s"),
        (61, "01:01", "1m 1s"),
        (3600, "1:00:00", "1h 0m"),
        (-5, "00:00", "0s"),
    ],
)
def test_formatters(seconds: float, clock: str, span: str) -> None:
    assert view.format_clock(seconds) == clock
    assert view.format_span(seconds) == span


# -- the command against a local HTTP server -------------------------------------------------------


class _Control(BaseHTTPRequestHandler):
    answer: bytes = b"{}"
    status: int = 200
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def control() -> Iterator[tuple[str, type[_Control]]]:
    answer = json.dumps(simulated(["metrics"])).encode()
    handler: type[_Control] = type("Handler", (_Control,), {"hits": [], "answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lockstep")
    viewcli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["devices", "--timeout", "5", *argv])


def test_command_draws_once(control: tuple[str, type[_Control]]) -> None:
    url, handler = control
    console = Console(record=True, width=100)
    assert viewcli.run(parse("--url", url), console) == 0
    assert handler.hits == ["/devices"]
    assert "web-1" in console.export_text()


def test_command_draws_compact_or_full_as_asked(control: tuple[str, type[_Control]]) -> None:
    url, _ = control
    for flag, expected in (("--compact", "● web-1  CPU 9% · MEM 45.5%"), ("--full", "╭─ metrics")):
        console = Console(record=True, width=80, height=24, force_terminal=True)
        assert viewcli.run(parse("--url", url, flag), console) == 0
        assert expected in console.export_text(), flag
    with pytest.raises(SystemExit):
        parse("--compact", "--full")


def test_command_watch_stops_after_count(control: tuple[str, type[_Control]]) -> None:
    url, handler = control
    console = Console(record=True, width=100)
    args = parse("--url", url, "--watch", "--count", "3", "--interval", "0")
    assert viewcli.run(args, console) == 0
    assert handler.hits == ["/devices"] * 3
    assert "web-1" in console.export_text()


def test_command_errors(
    control: tuple[str, type[_Control]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = control
    console = Console(record=True, width=100)
    assert viewcli.run(parse("--url", url, "--device", "nope"), console) == 1
    assert "no simulated device named 'nope'" in capsys.readouterr().err
    handler.status = 500
    assert viewcli.run(parse("--url", url), console) == 1
    assert "HTTP 500" in capsys.readouterr().err
    assert viewcli.run(parse("--url", url, "--count", "0"), console) == 2


def test_watch_keeps_going_when_the_control_api_fails(
    control: tuple[str, type[_Control]],
) -> None:
    url, handler = control
    handler.status = 503
    console = Console(record=True, width=100)
    assert (
        viewcli.run(parse("--url", url, "--watch", "--count", "2", "--interval", "0"), console) == 0
    )
    assert handler.hits == ["/devices"] * 2
    assert "control API unavailable" in console.export_text()


def test_url_comes_from_the_environment(
    control: tuple[str, type[_Control]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = control
    monkeypatch.setenv("LOCKSTEP_SIM_URL", url)
    assert viewcli.run(parse(), Console(record=True, width=100)) == 0
    assert handler.hits == ["/devices"]


# -- the app's own pushes ------------------------------------------------------------------------


def app_device(notes: int) -> dict[str, Any]:
    """A device's JSON after `notes` alert pushes (the last one time-sensitive, badge 3)."""
    reg = DeviceRegistry(bundle_id="com.example.app", rng=random.Random(5))
    device = reg.add_device("phone", now=T0)
    token = device.app_tokens[TokenKind.DEVICE]
    for n in range(notes):
        aps: dict[str, Any] = {"alert": {"title": f"Build {n}", "body": "[red]passed[/]"}}
        if n == notes - 1:
            aps.update({"badge": 3, "interruption-level": "time-sensitive"})
        reg.deliver(token, {"aps": aps}, now=T0 + n, priority=10, apns_id=str(n), push_type="alert")
    result: dict[str, Any] = reg.snapshot(T0 + 60)[0]
    return result


def test_notifications_and_badge_are_drawn_newest_first() -> None:
    text = draw(view.render_devices([app_device(5)], now=T0 + 60))
    assert "app · badge 3" in text
    lines = [line for line in text.splitlines() if "Build" in line]
    assert ["Build 4" in lines[0], "Build 3" in lines[1], "Build 2" in lines[2]] == [True] * 3
    assert len(lines) == view.NOTIFICATIONS_SHOWN
    assert "! Build 4 — [red]passed[/]" in text  # time-sensitive mark; text is not markup
    assert "+2 older notifications" in text
    assert "(56s ago)" in text


def test_app_counters_and_loc_keys() -> None:
    device = app_device(0)
    assert view.render_app(device, now=T0) is None  # nothing received: drawn as before
    device.update(
        background_wakes=2,
        widget_reloads=1,
        calls=[{}],
        notifications=[{"title": {"loc-key": "GAME", "loc-args": ["A", 2]}, "at": "?"}, 7],
    )
    text = draw(view.render_device(device, now=T0))
    assert "app · 2 background wakes · 1 widget reloads · 1 calls" in text
    assert "• GAME [A, 2]" in text
    device.update(notifications=[{"body": None, "interruption_level": "critical"}], calls=None)
    assert "‼ (no text)" in draw(view.render_device(device, now=T0))


def test_the_widget_shows_its_values() -> None:
    device = app_device(0)
    device.update(widget_reloads=2, widget={"metrics": {}, "shown_at": None, "error": None})
    assert "widget" not in draw(view.render_device(device, now=T0)).replace("widget reloads", "")
    device["widget"] = {"metrics": {"revenue": 1234.5, "status": "green"}, "shown_at": T0 - 5,
                        "error": "HTTP 503"}  # fmt: skip
    text = draw(view.render_device(device, now=T0))
    assert "widget  revenue 1234.5  status green" in text
    assert "(5s ago)" in text and "read failed: HTTP 503" in text
