"""Merging the nodes' parts of `GET /api/live-activities` and `GET /api/dashboard` into one."""

from __future__ import annotations

import msgspec

from engine.server.contract import models
from engine.server.http.routes import DASHBOARD_ACTIVITIES, ENDPOINTS, Dashboard
from tests.helpers.fakeservice import sample_status

LISTING = next(e for e in ENDPOINTS if e.template == "/api/live-activities")


def page(*ids: str, next: str | None = None) -> bytes:
    acts = [msgspec.structs.replace(sample_status(), activity_id=i) for i in ids]
    return msgspec.json.encode(models.ActivityStatusList(activities=acts, next=next))


def merged(bodies: list[bytes], limit: int) -> tuple[list[str], str | None]:
    assert LISTING.merge is not None
    out = msgspec.json.decode(
        LISTING.merge(bodies, {"limit": str(limit)}), type=models.ActivityStatusList
    )
    return [a.activity_id for a in out.activities], out.next


def test_the_first_limit_of_all_parts_by_id_and_next_when_more_are_left() -> None:
    assert merged([page("b", "d"), page("a", "c", "e")], 3) == (["a", "b", "c"], "c")
    assert merged([page("b"), page("a")], 3) == (["a", "b"], None)
    assert merged([page(), page()], 3) == ([], None)


def test_an_activity_in_two_parts_is_listed_once() -> None:
    assert merged([page("a", "b"), page("b", "c")], 3) == (["a", "b", "c"], None)


def test_a_part_with_more_behind_it_keeps_a_next_even_when_the_page_is_just_full() -> None:
    # The second node had more than `limit`: the merged page must not look like the last one.
    assert merged([page(), page("a", "b", next="b")], 2) == (["a", "b"], "b")


def test_the_default_limit_is_the_routes() -> None:
    assert LISTING.merge is not None
    ids = [f"la_{i:03d}" for i in range(150)]
    out = msgspec.json.decode(LISTING.merge([page(*ids[:100], next="la_099"), page()], {}))
    assert len(out["activities"]) == 100 and out["next"] == "la_099"


def board(*acts: tuple[str, str], devices: int = 0) -> bytes:
    statuses = [
        msgspec.structs.replace(sample_status(), activity_id=i, updated_at=at) for i, at in acts
    ]
    return msgspec.json.encode(
        Dashboard(
            now=1.0,
            source="server",
            devices=[{"name": f"iphone-{d}"} for d in range(devices)],
            pushes=[],
            activities=statuses,
        )
    )


def test_the_dashboard_keeps_its_own_phones_and_the_newest_activities_of_every_node() -> None:
    dash = next(e for e in ENDPOINTS if e.template == "/api/dashboard")
    assert dash.merge is not None
    t = "2026-12-07T10:00:0{}.000Z".format
    mine = board(("la_a", t(1)), ("la_c", t(5)), devices=2)
    theirs = board(("la_b", t(3)), ("la_d", t(5)), devices=2)
    out = msgspec.json.decode(dash.merge([mine, theirs], {}), type=Dashboard)
    assert [d["name"] for d in out.devices] == ["iphone-0", "iphone-1"]  # not twice
    assert [a.activity_id for a in out.activities or ()] == ["la_c", "la_d", "la_b", "la_a"]
    n = DASHBOARD_ACTIVITIES
    evens = [(f"la_{2 * i:04d}", t(i % 10)) for i in range(n)]
    odds = [(f"la_{2 * i + 1:04d}", t(i % 10)) for i in range(n)]
    capped = msgspec.json.decode(dash.merge([board(*evens), board(*odds)], {}), type=Dashboard)
    assert len(capped.activities or ()) == n
    twice = msgspec.json.decode(dash.merge([board(*evens), board(*evens)], {}), type=Dashboard)
    assert sorted(a.activity_id for a in twice.activities or ()) == sorted(i for i, _ in evens)
