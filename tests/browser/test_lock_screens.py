"""The lock screens page in a real browser (headless Chromium) against a live server.

A simulate-mode server with two simulated iPhones runs for the module; each test opens the page
in a fresh browser, sends calls through the API as a backend would, and asserts what the page
draws: titles, step counts, a progress bar's width, a timer that moves, an ended activity folded
away, the server's delivery status and the push timeline, all without reloading the page. The
states a live server rarely shows on demand (stale, throttled, awaiting Allow, dismissed,
notifications) are drawn from a dashboard answer the test supplies (`page.route`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Route

from tests.helpers.browserkit import log_in, open_page, require_chromium, send
from tests.helpers.serverkit import API_KEY, LiveServer, http_json, server_fixture

pytestmark = pytest.mark.e2e

server = server_fixture(seed=1515, devices=2, profile={"push_to_start_budget": 200})
PHONES = ("iphone-1", "iphone-2")


@pytest.fixture
def page(server: LiveServer) -> Iterator[Page]:
    """The server's page, logged in, with both phones drawn."""
    with open_page(server.origin + "/", executable=require_chromium()) as page:
        log_in(page)
        page.locator("section.phone").nth(len(PHONES) - 1).wait_for()
        page.evaluate("window.__notReloaded = true")
        yield page
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"


def phone(page: Page, device: str) -> Locator:
    return page.locator(f'section.phone[data-device="{device}"]')


def card(page: Page, device: str, activity_id: str) -> Locator:
    return phone(page, device).locator(f'.activity[data-server-activity="{activity_id}"]')


def put(server: LiveServer, key: str, content: dict[str, Any], **extra: Any) -> str:
    answer = send(
        server, "PUT", f"/live-activity/stream/{key}", {"content_state": content, **extra}
    )
    return str(answer["activity_id"])


def end(server: LiveServer, key: str) -> None:
    send(server, "DELETE", f"/live-activity/stream/{key}")


def wait_for_width(page: Page, activity_id: str, want: float) -> None:
    """Wait until every phone draws the activity's bar `want` full (the page redraws each poll,
    and the fill's width eases in, so the bar is looked up afresh on every check)."""
    page.wait_for_function(
        """([id, want]) => {
            const bars = document.querySelectorAll(`[data-server-activity='${id}'] .bar`);
            const width = (b) => b.querySelector('.fill').offsetWidth / b.clientWidth;
            return bars.length > 0 && [...bars].every((b) => Math.abs(width(b) - want) < 0.02);
        }""",
        arg=[activity_id, want],
    )


def ratio(bar: Locator) -> float:
    """The width of a progress bar's fill over the bar's, as laid out."""
    return float(bar.evaluate("b => b.querySelector('.fill').offsetWidth / b.clientWidth"))


# -- the key ------------------------------------------------------------------------------------


def test_the_page_asks_for_the_key_and_keeps_it_in_the_tab_only(server: LiveServer) -> None:
    with open_page(server.origin + "/", executable=require_chromium()) as page:
        page.locator("#login").wait_for()
        assert API_KEY not in page.content()
        assert page.locator("section.phone").count() == 0
        log_in(page, "lsk_not_a_key")
        page.get_by_text("That key was refused.").wait_for()
        log_in(page)
        page.locator("section.phone").nth(1).wait_for()
        assert page.locator("#login").is_hidden()
        assert page.evaluate("sessionStorage.getItem('lockstep.apiKey')") == API_KEY
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("document.cookie") == ""
        page.locator("#logout").click()
        page.locator("#login").wait_for()
        assert page.evaluate("sessionStorage.getItem('lockstep.apiKey')") is None


def test_the_simulators_own_page_needs_no_key(server: LiveServer) -> None:
    with open_page(server.control_url + "/", executable=require_chromium()) as page:
        page.locator("section.phone").nth(1).wait_for()
        assert page.locator("#login").is_hidden()
        assert "simulator's own page" in page.locator("#server").inner_text()
        assert page.locator("#source").inner_text() == "simulator control API"


# -- drawing what the API sends ---------------------------------------------------------------


def test_steps_title_badge_and_buttons_are_drawn_and_follow_updates(
    server: LiveServer, page: Page
) -> None:
    content = {
        "title": "Deploy web",
        "subtitle": "prod-eu",
        "type": "segmented_progress",
        "number_of_steps": 5,
        "current_step": 2,
        "color": "blue",
        "icon": {"symbol": "server.rack"},
        "badge": {"title": "v2.4", "color": "green"},
    }
    buttons = {
        "action": {"title": "Open logs", "type": "open_url", "url": "https://example.com/l"},
        "secondary_action": {"title": "Ack", "type": "webhook", "url": "https://example.com/a"},
    }
    activity = put(server, "web-deploy", content, **buttons)
    for device in PHONES:
        shown = card(page, device, activity)
        shown.locator(".steps").filter(has_text="step 2/5").wait_for()
        assert shown.locator(".title").inner_text() == "Deploy web"
        assert shown.locator(".subtitle").inner_text() == "prod-eu"
        assert shown.locator(".badge").inner_text() == "v2.4"
        assert shown.locator(".icon").get_attribute("title") == "server.rack"
        assert shown.locator(".segment").count() == 5
        assert shown.locator(".segment.done").count() == 2
        assert shown.locator(".action").all_inner_texts() == ["Open logs", "Ack"]
        assert shown.get_attribute("data-state") == "active"
    put(server, "web-deploy", {**content, "current_step": 4})
    for device in PHONES:
        card(page, device, activity).locator(".steps").filter(has_text="step 4/5").wait_for()
        assert card(page, device, activity).locator(".segment.done").count() == 4
    end(server, "web-deploy")


def test_a_progress_bar_is_as_wide_as_its_percentage(server: LiveServer, page: Page) -> None:
    content = {"title": "Upload", "type": "progress", "percentage": 40, "color": "orange"}
    activity = put(server, "web-upload", content)
    card(page, "iphone-1", activity).locator(".pct").filter(has_text="40%").wait_for()
    wait_for_width(page, activity, 0.40)
    put(server, "web-upload", {**content, "percentage": 75})
    card(page, "iphone-1", activity).locator(".pct").filter(has_text="75%").wait_for()
    wait_for_width(page, activity, 0.75)
    assert abs(ratio(card(page, "iphone-2", activity).locator(".bar")) - 0.75) < 0.02
    end(server, "web-upload")


def test_a_timer_counts_down_between_polls(server: LiveServer, page: Page) -> None:
    content = {"title": "Build", "type": "timer", "duration_seconds": 600, "color": "purple"}
    activity = put(server, "web-timer", content)
    timer = card(page, "iphone-1", activity).locator(".timer")
    timer.wait_for()
    first = timer.inner_text()
    assert re.fullmatch(r"(09:\d\d|10:00) left", first), first
    page.wait_for_function(  # looked up afresh: the page redraws its cards on every poll
        "([id, was]) => {"
        " const t = document.querySelector(`[data-server-activity='${id}'] .timer`);"
        " return t !== null && t.textContent !== was; }",
        arg=[activity, first],
    )
    later = timer.inner_text()
    assert re.fullmatch(r"0\d:\d\d left", later) and later < first, (first, later)
    end(server, "web-timer")


def test_an_ended_activity_is_folded_away(server: LiveServer, page: Page) -> None:
    activity = put(server, "web-ended", {"title": "Nightly", "type": "value", "value": "3 of 5"})
    live = phone(page, "iphone-1").locator(".activities")
    live.locator(f'[data-server-activity="{activity}"] .big-value').wait_for()
    end(server, "web-ended")
    fold = phone(page, "iphone-1").locator("details.ended-fold")
    folded = fold.locator(f'.activity[data-server-activity="{activity}"]')
    folded.wait_for(state="attached")
    assert live.locator(f'[data-server-activity="{activity}"]').count() == 0
    assert folded.is_hidden() and fold.get_attribute("open") is None
    assert re.fullmatch(r"\d+ ended", fold.locator("summary").inner_text())
    fold.locator("summary").click()
    folded.wait_for()
    assert folded.get_attribute("data-state") == "ended"
    assert folded.locator(".state-label").text_content() == "ended"
    page.wait_for_timeout(1_500)  # a poll or two later the user's fold stays open
    assert folded.is_visible()


def test_the_server_view_shows_each_devices_status_and_pushes(
    server: LiveServer, page: Page
) -> None:
    content = {"title": "Health", "type": "metrics", "metrics": [{"label": "CPU", "value": 9}]}
    activity = put(server, "web-health", content)
    status = page.locator(f'.astatus[data-stream="web-health"][data-activity="{activity}"]')
    for device in PHONES:
        status.locator(f'.chip[data-device="{device}"]').filter(has_text="live").wait_for()
        timeline = page.locator(f'.timeline[data-device="{device}"]')
        timeline.locator(".push .push-event").filter(has_text="start").first.wait_for()
        card(page, device, activity).locator(".server-line").filter(has_text="live").wait_for()
    metric = card(page, "iphone-1", activity).locator(".metric")
    assert metric.locator(".metric-label").inner_text() == "CPU"
    assert metric.locator(".metric-value").inner_text() == "9"
    end(server, "web-health")
    status.locator('.chip[data-device="iphone-1"]').filter(has_text="ended").wait_for()


def test_an_offline_phone_is_marked_and_comes_back(server: LiveServer, page: Page) -> None:
    url = f"{server.control_url}/devices/iphone-2/actions"
    assert http_json("POST", url, {"action": "offline"})[0] == 200
    try:
        page.locator('section.phone.offline[data-device="iphone-2"]').wait_for()
        assert "offline" in phone(page, "iphone-2").locator(".offline-banner").inner_text()
        assert page.locator("section.phone.offline").count() == 1
    finally:
        assert http_json("POST", url, {"action": "online"})[0] == 200
    page.locator('section.phone.offline[data-device="iphone-2"]').wait_for(state="detached")


# -- states drawn from a supplied dashboard -----------------------------------------------------

NOW = 1_796_000_000.0


def _activity(activity_id: str, state: str, content: dict[str, Any], **extra: Any) -> Any:
    return {
        "activity_id": activity_id,
        "state": state,
        "attributes": {"activity_id": "la_" + activity_id},
        "content_state": content,
        "started_at": NOW - 60,
        "ended_at": None,
        "stale_date": None,
        "dismissal_at": None,
        "held": None,
        "awaiting_allow": False,
        **extra,
    }


DASHBOARD = {
    "now": NOW,
    "source": "server",
    "devices": [
        {
            "name": "sim-a",
            "online": True,
            "badge": 3,
            "notifications": [
                {"title": "Backup done", "body": "42 GB", "interruption_level": "passive"},
                {"title": "Disk", "body": "91% full", "interruption_level": "time-sensitive"},
            ],
            "activities": [
                _activity(
                    "a1", "stale", {"title": "Old", "type": "value", "value": 7},
                    stale_date=NOW - 5,
                ),
                _activity(
                    "a2", "active",
                    {"title": "Stats", "type": "stats", "metrics": [
                        {"label": "p95", "value": 120, "unit": "ms", "color": "red"}]},
                    held={"reason": "throttled", "due_at": NOW + 30}, started_at=NOW - 30,
                ),
                _activity(
                    "a3", "active",
                    {"title": "Pager", "type": "alert", "message": "db down", "color": "red"},
                    awaiting_allow=True, started_at=NOW - 1,
                ),
                _activity(
                    "a4", "dismissed", {"title": "Gone", "type": "value", "value": 1},
                    ended_at=NOW - 100, dismissal_at=NOW - 50,
                ),
            ],
        },
        {"name": "sim-b", "online": False, "stored_count": 2, "activities": []},
    ],
    "pushes": [],
    "activities": [],
}  # fmt: skip


def test_states_types_notifications_and_badge_are_drawn(server: LiveServer) -> None:
    def fulfil(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(DASHBOARD))

    with open_page("about:blank", executable=require_chromium()) as page:
        page.route("**/api/dashboard", fulfil)
        page.goto(server.origin + "/")
        phone(page, "sim-a").wait_for()
        a = phone(page, "sim-a")
        titles = a.locator(".activities .activity .title").all_inner_texts()
        assert titles == ["Pager", "Stats", "Old"]  # newest first, the dismissed one folded
        assert a.locator('[data-activity="a1"]').get_attribute("data-state") == "stale"
        assert a.locator('[data-activity="a1"] .state-label').text_content() == "stale"
        assert "throttled" in a.locator('[data-activity="a2"] .banner').inner_text()
        assert a.locator('[data-activity="a2"] .stat-value').inner_text() == "120ms"
        assert "awaiting Allow" in a.locator('[data-activity="a3"] .banner').inner_text()
        assert a.locator('[data-activity="a3"] .alert-message').inner_text() == "⚠ db down"
        assert a.locator(".ended-fold summary").inner_text() == "1 ended"
        assert a.locator('.ended-fold [data-activity="a4"]').get_attribute("data-state") == (
            "dismissed"
        )
        assert a.locator(".notification .note-title").all_inner_texts() == ["Disk", "Backup done"]
        assert a.locator(".app-badge").inner_text() == "3"
        b = phone(page, "sim-b")
        assert "offline" in (b.get_attribute("class") or "")
        assert "APNs keeps 2" in b.locator(".offline-banner").inner_text()
        assert b.locator(".app-badge").count() == 0
