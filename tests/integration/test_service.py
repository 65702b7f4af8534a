"""The Live Activities service end to end in memory: store + engine + fake APNs, on MockClock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.apns.transport import ConnectError
from engine.server.contract import errors, models
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import Kit, make_kit


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def stream_req(**state: Any) -> models.StreamRequest:
    body = {"content_state": state}
    return models.decode(models.StreamRequest, msgspec.json.encode(body))


def delete_req(**state: Any) -> models.StreamDeleteRequest:
    body = {"content_state": state} if state else {}
    return models.decode(models.StreamDeleteRequest, msgspec.json.encode(body))


def metrics(cpu: int) -> dict[str, Any]:
    return {
        "title": "Server Health",
        "type": "metrics",
        "metrics": [{"label": "CPU", "value": cpu, "unit": "%"}],
    }


async def settle(h: Harness, seconds: float = 5.0) -> None:
    """Let pacing, answers and token reports run (mock time)."""
    await trio.sleep(seconds)


async def test_stream_start_update_noop_end(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            live = h.service.live
            first = await live.stream("prod-web-1", stream_req(**metrics(9)))
            assert first.operation == "started" and first.activity_id
            await settle(h)
            for cpu in range(10, 30):
                resp = await live.stream("prod-web-1", stream_req(**metrics(cpu)))
                assert resp.operation == "updated"
                assert resp.activity_id == first.activity_id
            same = await live.stream("prod-web-1", stream_req(**metrics(29)))
            assert same.operation == "noop" and same.ignored
            ended = await live.end_stream("prod-web-1", delete_req(**metrics(42)))
            assert ended.operation == "ended"
            again = await live.end_stream("prod-web-1", None)
            assert again.ignored
            await settle(h)
            for name in ("iphone-1", "iphone-2"):
                shown = h.shown(name, first.activity_id)
                assert shown is not None
                assert shown["content_state"]["metrics"][0]["value"] == 42
                assert shown["state"] in ("ended", "dismissed")
                assert shown["order_violations"] == 0


async def test_unknown_stream_and_activity_are_404(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            with pytest.raises(errors.NotFound):
                await h.service.live.end_stream("nope", None)
            body = msgspec.json.encode({"activity_id": "la_x", "content_state": {"title": "x"}})
            with pytest.raises(errors.NotFound):
                await h.service.live.update(models.decode(models.UpdateRequest, body))


async def test_type_change_rotates(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            first = await h.service.live.stream("job", stream_req(**metrics(1)))
            await settle(h)
            rotated = await h.service.live.stream(
                "job", stream_req(title="Done", type="value", value="ok")
            )
            assert rotated.operation == "rotated"
            assert rotated.previous_activity_id == first.activity_id
            assert rotated.activity_id != first.activity_id
            await settle(h)
            old = h.shown("iphone-1", first.activity_id)
            new = h.shown("iphone-1", str(rotated.activity_id))
            assert old is not None and old["state"] in ("ended", "dismissed")
            assert new is not None and new["content_state"]["value"] == "ok"


async def test_rotation_near_eight_hours(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            first = await h.service.live.stream("cron", stream_req(**metrics(1)))
            await settle(h)
            kit.offset += 7.6 * 3600  # the wall clock jumps past the rotation age
            resp = await h.service.live.stream("cron", stream_req(**metrics(2)))
            assert resp.operation == "rotated"
            assert resp.previous_activity_id == first.activity_id


async def test_held_updates_are_released_by_the_token_report(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db", forward_reports=False) as h:
            first = await h.service.live.stream("deploy", stream_req(**metrics(1)))
            await settle(h)
            update = await h.service.live.stream("deploy", stream_req(**metrics(2)))
            assert update.devices_queued == 1 and update.devices_notified == 0
            await h.service.live.stream("deploy", stream_req(**metrics(3)))
            await settle(h)
            shown = h.shown("iphone-1", first.activity_id)
            assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 1
            (report,) = h.reports
            await h.forward(report)
            await settle(h)
            shown = h.shown("iphone-1", first.activity_id)
            assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 3


async def test_no_recipients_and_payload_too_large(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            body = {"content_state": metrics(1), "channels": ["nobody"]}
            req = models.decode(models.StreamRequest, msgspec.json.encode(body))
            with pytest.raises(errors.NoRecipients):
                await h.service.live.stream("x", req)
            big = {**metrics(1), "subtitle": "x" * 250, "title": "y" * 250}
            big["metrics"] = [{"label": "m" * 120, "value": "v" * 60} for i in range(8)]
            link = {"title": "Open", "type": "open_url", "url": "https://example.com/" + "p" * 2000}
            body = {"content_state": big, "action": link, "secondary_action": link}
            req = models.decode(models.StreamRequest, msgspec.json.encode(body))
            with pytest.raises(errors.TooLarge) as info:
                await h.service.live.stream("x", req)
            assert info.value.status == 413
            assert h.service.registry.streams == {}


async def test_restart_delivers_the_pending_end(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    db = tmp_path / "db"
    with trio.fail_after(600):
        async with open_harness(kit, db, forward_reports=False) as h:
            first = await h.service.live.stream("build", stream_req(**metrics(1)))
            await settle(h)
            await h.service.live.stream("build", stream_req(**metrics(2)))
            await h.service.live.end_stream("build", delete_req(**metrics(3)))
            captured = list(h.reports)
        # restarted: same database, the app's report finally arrives
        async with open_harness(kit, db, register=False) as h2:
            for report in captured:
                await h2.forward(report)
            await settle(h2)
            shown = h2.shown("iphone-1", first.activity_id)
            assert shown is not None
            assert shown["content_state"]["metrics"][0]["value"] == 3
            assert shown["state"] in ("ended", "dismissed")
            assert shown["order_violations"] == 0


def _dead_connector(kit: Kit, nursery: trio.Nursery) -> Any:
    async def connect() -> trio.abc.Stream:
        raise ConnectError("APNs unreachable (test)")

    return connect


async def test_restart_recovers_pushes_never_sent(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    db = tmp_path / "db"
    with trio.fail_after(600):
        async with open_harness(kit, db, connector=_dead_connector, drain_timeout=1.0) as h:
            first = await h.service.live.stream("etl", stream_req(**metrics(1)))
            assert first.devices_queued == 1
        async with open_harness(kit, db, register=False) as h2:
            assert h2.service.recovered == 1
            await settle(h2)
            shown = h2.shown("iphone-1", first.activity_id)
            assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 1
            await h2.service.live.stream("etl", stream_req(**metrics(5)))
            await h2.service.live.end_stream("etl", None)
            await settle(h2)
            shown = h2.shown("iphone-1", first.activity_id)
            assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 5
            assert shown["state"] in ("ended", "dismissed")


async def test_start_update_end_by_id(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            live = h.service.live
            start = await live.start(
                models.decode(
                    models.StartRequest,
                    msgspec.json.encode(
                        {
                            "content_state": {
                                "title": "Deploy",
                                "type": "segmented_progress",
                                "number_of_steps": 4,
                                "current_step": 1,
                            }
                        }
                    ),
                )
            )
            await settle(h)
            for step in (2, 3):
                await live.update(
                    models.decode(
                        models.UpdateRequest,
                        msgspec.json.encode(
                            {
                                "activity_id": start.activity_id,
                                "content_state": {
                                    "title": "Deploy",
                                    "current_step": step,
                                    "number_of_steps": 4,
                                },
                            }
                        ),
                    )
                )
            end = await live.end(
                models.decode(
                    models.EndRequest,
                    msgspec.json.encode(
                        {
                            "activity_id": start.activity_id,
                            "content_state": {
                                "title": "Deployed",
                                "current_step": 4,
                                "number_of_steps": 4,
                                "auto_dismiss_minutes": 0,
                            },
                        }
                    ),
                )
            )
            assert end.activity_id == start.activity_id
            again = await live.end(
                models.decode(
                    models.EndRequest,
                    msgspec.json.encode(
                        {"activity_id": start.activity_id, "content_state": {"title": "x"}}
                    ),
                )
            )
            assert again.ignored
            await settle(h)
            for name in ("iphone-1", "iphone-2"):
                shown = h.shown(name, start.activity_id)
                assert shown is not None and shown["content_state"]["current_step"] == 4
                assert shown["content_state"]["type"] == "segmented_progress"


async def test_stream_whose_tokens_died_starts_afresh(autojump_clock: Any, tmp_path: Path) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            first = await h.service.live.stream("web", stream_req(**metrics(1)))
            await settle(h)
            (report,) = h.reports
            kit.apns.registry.unregister(report.activity_token, int(kit.now() * 1000) - 1000)
            failed = await h.service.live.stream("web", stream_req(**metrics(2)))
            assert failed.operation == "updated" and failed.errors
            await settle(h)
            fresh = await h.service.live.stream("web", stream_req(**metrics(3)))
            assert fresh.operation == "rotated"
            assert fresh.previous_activity_id == first.activity_id
            await settle(h)
            shown = h.shown("iphone-1", str(fresh.activity_id))
            assert shown is not None and shown["content_state"]["metrics"][0]["value"] == 3


async def test_a_token_reported_after_a_failed_end_releases_nothing(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "db") as h:
            first = await h.service.live.stream("web", stream_req(**metrics(1)))
            await settle(h)
            act = str(first.activity_id)

            async def report(token: str) -> models.ActivityTokenAccepted:
                body = {"device_id": "iphone-1", "activity_id": act, "activity_token": token}
                req = models.decode(models.ActivityTokenReport, msgspec.json.encode(body))
                return await h.service.devices.report_token(req)

            (reported,) = h.reports  # the app's token dies: the end to it fails for good
            kit.apns.registry.unregister(reported.activity_token, int(kit.now() * 1000) - 1000)
            ended = await h.service.live.end_stream("web", delete_req(**metrics(2)))
            assert ended.errors and "Unregistered" in ended.errors[0]
            await settle(h)
            # The engine closed the lane when the end failed; a later report is answered, not 500.
            with caplog.at_level("WARNING", logger="lockstep.service"):
                accepted = await report("11" * 8)
            assert accepted.success and accepted.released == 0
            assert any("its end failed" in r.getMessage() for r in caplog.records)
