"""Partial calls the contract allows: the service completes them from the last accepted state.

A timer paused without `duration_seconds`, a stream ended with only some fields, an update or end
by id with only what changed: each is accepted, and every device is sent (and shows) a complete
content state. Metadata and tags left out are kept, `{}` and `[]` clear them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.contract import errors, models
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def stream(**body: Any) -> models.StreamRequest:
    return models.decode(models.StreamRequest, msgspec.json.encode(body))


def delete(**body: Any) -> models.StreamDeleteRequest:
    return models.decode(models.StreamDeleteRequest, msgspec.json.encode(body))


def by_id(type_: type[Any], activity_id: str, **body: Any) -> Any:
    return models.decode(type_, msgspec.json.encode({"activity_id": activity_id, **body}))


def shown_state(h: Harness, activity_id: str | None) -> dict[str, Any]:
    shown = h.shown("iphone-1", activity_id)
    assert shown is not None, activity_id
    state: dict[str, Any] = shown["content_state"]
    return state


TIMER = {"title": "Pizza", "type": "timer", "duration_seconds": 600}
SEG = {"title": "Deploy", "type": "segmented_progress", "number_of_steps": 4, "current_step": 1}


async def test_a_timer_stream_pauses_and_ends_without_its_duration(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("oven", stream(content_state=TIMER))
            await trio.sleep(5)
            paused = await live.stream(
                "oven",
                stream(content_state={"title": "Pizza", "type": "timer", "is_running": False}),
            )
            assert (paused.operation, paused.activity_id) == ("updated", first.activity_id)
            await trio.sleep(5)
            assert shown_state(h, first.activity_id) == {
                "type": "timer",
                "title": "Pizza",
                "duration_seconds": 600.0,
                "counts_down": True,
                "is_running": False,
            }
            again = await live.stream(
                "oven", stream(content_state={"title": "Pizza", "is_running": False})
            )
            assert again.operation == "noop"  # the completed state is the one already shown
            ended = await live.end_stream("oven", delete(content_state={"title": "Ready"}))
            assert ended.operation == "ended" and not ended.ignored
            await trio.sleep(5)
            state = shown_state(h, first.activity_id)
            assert state["title"] == "Ready" and state["duration_seconds"] == 600.0
            assert state["is_running"] is False  # an end without a new window freezes the timer


async def test_an_end_with_a_new_window_keeps_the_timer_running(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("oven", stream(content_state=TIMER))
            await trio.sleep(5)
            last = {"title": "Cooling", "duration_seconds": 30}
            await live.end_stream("oven", delete(content_state=last))
            await trio.sleep(5)
            state = shown_state(h, first.activity_id)
            assert (state["duration_seconds"], state["is_running"]) == (30.0, True)


async def test_a_segmented_stream_ends_with_only_its_step(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("deploy", stream(content_state=SEG, tags=["ci"]))
            await trio.sleep(5)
            await live.end_stream(
                "deploy", delete(content_state={"title": "Deployed", "current_step": 4})
            )
            await trio.sleep(5)
            assert shown_state(h, first.activity_id) == {
                "type": "segmented_progress",
                "title": "Deployed",
                "number_of_steps": 4,
                "current_step": 4,
            }


async def test_a_stream_still_drops_optional_fields_it_leaves_out(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            live = h.service.live
            badged = {**SEG, "badge": {"title": "prod"}}
            first = await live.stream("deploy", stream(content_state=badged))
            await trio.sleep(5)
            await live.stream(
                "deploy", stream(content_state={"title": "Deploy", "current_step": 2})
            )
            await trio.sleep(5)
            state = shown_state(h, first.activity_id)
            assert "badge" not in state and state["number_of_steps"] == 4


async def test_a_rotation_is_completed_from_the_old_activity(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("oven", stream(content_state=TIMER))
            await trio.sleep(5)
            kit.offset += 7.6 * 3600  # past the rotation age
            rotated = await live.stream(
                "oven", stream(content_state={"title": "Pizza", "is_running": False})
            )
            assert rotated.operation == "rotated"
            assert rotated.previous_activity_id == first.activity_id
            await trio.sleep(5)
            state = shown_state(h, rotated.activity_id)
            assert state["duration_seconds"] == 600.0 and state["is_running"] is False


async def test_a_type_change_still_needs_a_complete_state(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            await h.service.live.stream("job", stream(content_state=SEG))
            with pytest.raises(errors.BadRequest, match="duration_seconds"):
                await h.service.live.stream(
                    "job", stream(content_state={"title": "t", "type": "timer"})
                )


async def test_a_timer_by_id_pauses_and_ends_with_only_some_fields(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            live = h.service.live
            start = await live.start(
                models.decode(models.StartRequest, msgspec.json.encode({"content_state": TIMER}))
            )
            await trio.sleep(5)
            aid = str(start.activity_id)
            paused = {"title": "Pizza", "type": "timer", "is_running": False}
            await live.update(by_id(models.UpdateRequest, aid, content_state=paused))
            await live.end(by_id(models.EndRequest, aid, content_state={"title": "Pizza"}))
            await trio.sleep(5)
            assert shown_state(h, aid) == {
                "type": "timer",
                "title": "Pizza",
                "duration_seconds": 600.0,
                "counts_down": True,
                "is_running": False,
            }


async def test_tags_and_metadata_are_kept_when_left_out_and_cleared_when_empty(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(600):
        async with open_harness(make_kit(devices=1), tmp_path / "db") as h:
            live = h.service.live
            start = await live.start(
                models.decode(
                    models.StartRequest,
                    msgspec.json.encode(
                        {"content_state": SEG, "tags": ["ci"], "metadata": {"run": 7}}
                    ),
                )
            )
            aid = str(start.activity_id)
            row = h.service.registry.activities[aid].row
            step = {"title": "Deploy", "current_step": 2}
            await live.update(by_id(models.UpdateRequest, aid, content_state=step))
            assert (row.tags, row.metadata) == (["ci"], {"run": 7})
            await live.update(
                by_id(models.UpdateRequest, aid, content_state=step, tags=[], metadata={})
            )
            assert (row.tags, row.metadata) == (None, None)
            await live.end(by_id(models.EndRequest, aid, content_state=step, tags=["done"]))
            assert row.tags == ["done"]


async def test_a_dismissal_beyond_a_year_is_shortened_not_refused(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("deploy", stream(content_state=SEG))
            end = {"title": "Deployed", "auto_dismiss_seconds": 2**62}
            await live.end_stream("deploy", delete(content_state=end))
            row = h.service.registry.activities[str(first.activity_id)].row
            assert row.dismissal_date == int(kit.now() + models.MAX_DISMISS_SECONDS)
