"""Inbound webhooks through the real service: store + engine + fake APNs in memory, on MockClock.

GitHub's example payloads, signed as GitHub signs them, reach the simulated iPhones; redeliveries,
bad signatures, unsupported events and malformed payloads change nothing; the delivery log is
durable (a restart keeps it and its redelivery checks), bounded, and replayable; a failed log
write changes nothing in memory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from engine.server.contract import errors
from engine.server.webhooks import auth
from engine.server.webhooks.config import WebhookConfig
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
SECRET = "gh-webhook-secret-0123456789"
GH = WebhookConfig(name="gh", kind="github", secret=SECRET, auto_dismiss_minutes=2, keep=4)
DEPLOYS = WebhookConfig(
    name="deploys",
    kind="generic",
    secret=SECRET[::-1],
    stream_key="/id",
    map={"title": "/name", "percentage": "/progress"},
    set={"type": "progress"},
    end="/done",
)
HOOKS = (GH, DEPLOYS)
JOB_KEY = "gh-445650657-job-14541957942"
TIMEOUT = 600.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def payload(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def signed(event: str, body: bytes, delivery: str) -> dict[str, str]:
    return {
        "x-hub-signature-256": auth.sign(SECRET, body),
        "x-github-event": event,
        "x-github-delivery": delivery,
    }


def running_job() -> dict[str, Any]:
    return payload("workflow_job.in_progress.with-queued-steps")


def finished_job() -> dict[str, Any]:
    """The same job, completed: every step done (the shape of GitHub's completed examples)."""
    job = copy.deepcopy(running_job())
    job["action"] = "completed"
    job["workflow_job"].update(status="completed", conclusion="success")
    for step in job["workflow_job"]["steps"]:
        step.update(status="completed", conclusion="success")
    return job


async def deliver(h: Harness, event: str, body: dict[str, Any] | bytes, delivery: str) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await h.service.webhooks.receive("gh", signed(event, raw, delivery), raw)


def shown_on(h: Harness, key: str) -> dict[str, Any] | None:
    activity_id = h.service.status.stream(key).activity_id
    return h.shown("iphone-1", activity_id)


async def test_a_job_shows_its_steps_then_ends_dismissing_itself(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:
            reply = await deliver(h, "workflow_job", running_job(), "d-1")
            assert (reply.outcome, reply.streams) == ("applied", [JOB_KEY])
            await trio.sleep(5)
            shown = shown_on(h, JOB_KEY)
            assert shown is not None and shown["state"] == "active"
            state = shown["content_state"]
            assert (state["type"], state["number_of_steps"], state["current_step"]) == (
                "segmented_progress",
                9,
                2,
            )
            assert state["color"] == "blue"
            await deliver(h, "workflow_job", finished_job(), "d-2")
            await trio.sleep(5)
            shown = shown_on(h, JOB_KEY)
            assert shown is not None and shown["state"] == "ended"
            assert shown["content_state"]["current_step"] == 9
            assert shown["content_state"]["color"] == "green"
            ended_at = h.kit.now()
            assert shown["dismissal_at"] == pytest.approx(ended_at - 5 + 120, abs=2)


async def test_a_completion_whose_start_was_missed_still_shows_the_outcome(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:
            reply = await deliver(h, "workflow_run", payload("workflow_run.completed"), "d-9")
            assert reply.outcome == "applied"
            await trio.sleep(5)
            shown = shown_on(h, "gh-300029405-run-289782451")
            assert shown is not None and shown["state"] == "ended"
            assert shown["content_state"]["value"] == "success"


async def test_redeliveries_bad_signatures_and_unknown_events_change_nothing(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:
            hooks = h.service.webhooks
            await deliver(h, "workflow_job", running_job(), "d-1")
            await trio.sleep(5)
            version = h.service.status.stream(JOB_KEY).version
            # The same delivery id again, even with a newer body: a duplicate, nothing changes.
            again = await deliver(h, "workflow_job", finished_job(), "d-1")
            assert again.outcome == "duplicate" and again.streams == []
            # A bad signature: 401, not even logged.
            raw = json.dumps(finished_job()).encode()
            forged = {**signed("workflow_job", raw, "d-2"), "x-hub-signature-256": "sha256=00"}
            with pytest.raises(errors.Unauthorized):
                await hooks.receive("gh", forged, raw)
            missing = {k: v for k, v in forged.items() if k != "x-hub-signature-256"}
            with pytest.raises(errors.Unauthorized):
                await hooks.receive("gh", missing, raw)
            # An event GitHub sends that is not mapped, and a malformed payload: 400, logged.
            with pytest.raises(errors.ApiError) as unsupported:
                await deliver(h, "push", {"ref": "refs/heads/main"}, "d-3")
            assert unsupported.value.status == 400 and "workflow_job" in unsupported.value.message
            with pytest.raises(errors.BadRequest):
                await deliver(h, "workflow_job", b'{"workflow_job": ', "d-4")
            with pytest.raises(errors.NotFound):
                await hooks.receive("nope", signed("ping", b"{}", "d-5"), b"{}")
            await trio.sleep(5)
            assert h.service.status.stream(JOB_KEY).version == version
            shown = shown_on(h, JOB_KEY)
            assert shown is not None and shown["state"] == "active"
            log = hooks.deliveries("gh").deliveries
            assert [(d.delivery_id, d.outcome, d.status) for d in log] == [
                ("d-4", "rejected", 400),
                ("d-3", "rejected", 400),
                ("d-1", "applied", 200),
            ]
            assert SECRET not in repr(log) and SECRET not in repr(hooks)


async def test_the_log_survives_a_restart_is_bounded_and_replays(
    autojump_clock: Any, tmp_path: Path
) -> None:
    db = tmp_path / "db"
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), db, webhooks=HOOKS) as h:
            assert (await deliver(h, "ping", payload("ping"), "p-1")).outcome == "ignored"
            await deliver(h, "workflow_job", running_job(), "d-1")
        async with open_harness(make_kit(devices=1), db, webhooks=HOOKS) as h:
            hooks = h.service.webhooks
            assert [d.delivery_id for d in hooks.deliveries("gh").deliveries] == ["d-1", "p-1"]
            assert (await deliver(h, "workflow_job", running_job(), "d-1")).outcome == "duplicate"
            for n in range(2, 6):  # keep = 4: the oldest go
                await deliver(h, "ping", payload("ping"), f"p-{n}")
            kept = [d.delivery_id for d in hooks.deliveries("gh").deliveries]
            assert kept == ["p-5", "p-4", "p-3", "p-2"]
            with pytest.raises(errors.NotFound):
                await hooks.replay("gh", "d-1")
            replayed = await hooks.replay("gh", "p-3")
            assert replayed.outcome == "ignored"
            assert hooks.deliveries("gh").deliveries[2].replays == 1
        async with open_harness(make_kit(devices=1), db, webhooks=HOOKS) as h:
            log = h.service.webhooks.deliveries("gh").deliveries
            assert [(d.delivery_id, d.replays) for d in log] == [
                ("p-5", 0),
                ("p-4", 0),
                ("p-3", 1),  # a replay keeps its place in the log
                ("p-2", 0),
            ]


async def test_a_replay_runs_the_stored_body_again(autojump_clock: Any, tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:
            await deliver(h, "workflow_job", running_job(), "d-1")
            await h.service.live.end_stream(JOB_KEY, None)  # someone ended it by hand
            reply = await h.service.webhooks.replay("gh", "d-1")
            assert reply.outcome == "applied" and reply.streams == [JOB_KEY]
            status = h.service.status.stream(JOB_KEY)
            assert not status.ended  # the replay started the stream afresh


async def test_a_generic_delivery_maps_pointers_and_ends_on_its_flag(
    autojump_clock: Any, tmp_path: Path
) -> None:
    hooks_secret = {"x-webhook-secret": DEPLOYS.secret}
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:
            hooks = h.service.webhooks
            body = json.dumps({"id": "api-7", "name": "api v7", "progress": 30}).encode()
            with pytest.raises(errors.Unauthorized):
                await hooks.receive("deploys", {"x-webhook-secret": "wrong"}, body)
            reply = await hooks.receive("deploys", {**hooks_secret, "x-delivery-id": "x1"}, body)
            assert reply.streams == ["deploys-api-7"]
            done = json.dumps({"id": "api-7", "name": "api v7", "progress": 100, "done": True})
            await hooks.receive("deploys", hooks_secret, done.encode())
            await trio.sleep(5)
            shown = shown_on(h, "deploys-api-7")
            assert shown is not None and shown["state"] == "ended"
            assert shown["content_state"]["percentage"] == 100
            log = hooks.deliveries("deploys").deliveries
            assert len(log) == 2 and log[1].delivery_id == "x1"


async def test_a_failed_log_write_changes_nothing_in_memory(
    autojump_clock: Any, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:
            await deliver(h, "ping", payload("ping"), "p-1")
            conn = h.store._conn
            assert conn is not None
            conn.execute("PRAGMA query_only = ON")
            with pytest.raises(errors.StorageUnavailable):
                await deliver(h, "ping", payload("ping"), "p-2")
            assert [d.delivery_id for d in h.service.webhooks.deliveries("gh").deliveries] == [
                "p-1"
            ]
            conn.execute("PRAGMA query_only = OFF")
            assert (await deliver(h, "ping", payload("ping"), "p-2")).outcome == "ignored"


async def test_concurrent_copies_of_one_delivery_apply_once(
    autojump_clock: Any, tmp_path: Path
) -> None:
    outcomes: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with open_harness(make_kit(devices=1), tmp_path / "db", webhooks=HOOKS) as h:

            async def send() -> None:
                outcomes.append((await deliver(h, "workflow_job", running_job(), "d-1")).outcome)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(send)
            assert sorted(outcomes) == ["applied", "duplicate", "duplicate"]
            assert h.service.status.stream(JOB_KEY).version == 1
