"""GitHub deliveries mapped to stream calls (sans-IO), on GitHub's own example payloads, and the
signature check."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from engine.server.contract import errors
from engine.server.webhooks import auth, github
from engine.server.webhooks.plan import Finish, Put, UnsupportedEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
TARGET = github.Target("gh", ("ops",), 5)
SECRET = "It's a Secret to Everybody"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def state_of(action: Put | Finish) -> dict[str, Any]:
    import msgspec

    return dict(msgspec.to_builtins(action.request.content_state))


def test_every_fixture_is_a_supported_event_and_maps_to_at_most_one_call() -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        event = path.name.split(".", 1)[0]
        assert event in github.SUPPORTED
        plan = github.plan(event, json.loads(path.read_text()), TARGET)
        assert plan.event == event and plan.summary
        assert len(plan.actions) == (0 if event == "ping" else 1)
        for action in plan.actions:
            assert action.key.startswith("gh-") and action.request.channels == ["ops"]


def test_ping_is_answered_and_changes_nothing() -> None:
    plan = github.plan("ping", fixture("ping"), TARGET)
    assert plan.actions == () and plan.summary == "pong: Anything added dilutes everything else."


def test_a_running_job_is_its_steps_done_of_its_steps() -> None:
    plan = github.plan(
        "workflow_job", fixture("workflow_job.in_progress.with-queued-steps"), TARGET
    )
    [action] = plan.actions
    assert isinstance(action, Put)
    assert action.key == "gh-445650657-job-14541957942"  # repository id, job id
    assert state_of(action) == {
        "title": "Do examples need to be regenerated?",
        "subtitle": "Run actions/setup-node@2fddd8803e2f5c9604345a0b591c3020ee971a93",
        "type": "segmented_progress",
        "number_of_steps": 9,
        "current_step": 2,  # two steps completed, the third running, six queued
        "step_colors": ["green", "green"],
        "step_color": "blue",
        "color": "blue",
    }


def test_a_queued_job_without_steps_is_one_empty_gray_segment() -> None:
    [action] = github.plan("workflow_job", fixture("workflow_job.queued"), TARGET).actions
    state = state_of(action)
    assert (state["number_of_steps"], state["current_step"], state["color"]) == (1, 0, "gray")


def test_a_completed_job_ends_its_stream_coloured_by_conclusion_and_step() -> None:
    payload = fixture("workflow_job.completed.failure.with-organization")
    [action] = github.plan("workflow_job", payload, TARGET).actions
    assert isinstance(action, Finish) and action.auto_dismiss_minutes == 5
    state = state_of(action)
    steps = payload["workflow_job"]["steps"]
    assert state["number_of_steps"] == state["current_step"] == len(steps)
    assert state["color"] == "red"
    colors = {"success": "green", "failure": "red", "skipped": "gray"}
    assert state["step_colors"] == [colors[s["conclusion"]] for s in steps]
    ended = action.end_request().content_state
    assert ended is not None and ended.auto_dismiss_minutes == 5
    success = github.plan(
        "workflow_job", fixture("workflow_job.completed.success.with-organization"), TARGET
    )
    assert state_of(success.actions[0])["color"] == "green"


def test_a_workflow_run_keeps_one_stream_from_requested_to_completed() -> None:
    [started] = github.plan("workflow_run", fixture("workflow_run.requested"), TARGET).actions
    [done] = github.plan("workflow_run", fixture("workflow_run.completed"), TARGET).actions
    assert isinstance(started, Put) and isinstance(done, Finish)
    assert started.key == done.key == "gh-300029405-run-289782451"
    assert state_of(started) == {
        "title": "test #163",  # the run's name is empty in the example: the workflow's
        "subtitle": "octo-org/octo-repo · master",
        "type": "value",
        "value": "queued",
        "color": "gray",
    }
    assert (state_of(done)["value"], state_of(done)["color"]) == ("success", "green")


def test_deployment_status_and_check_suite() -> None:
    [deploy] = github.plan(
        "deployment_status", fixture("deployment_status.created"), TARGET
    ).actions
    assert isinstance(deploy, Finish) and deploy.key == "gh-186853002-deploy-145988746"
    assert state_of(deploy)["title"] == "Deploy to production"
    assert (state_of(deploy)["value"], state_of(deploy)["color"]) == ("success", "green")
    pending = fixture("deployment_status.created")
    pending["deployment_status"]["state"] = "in_progress"
    [running] = github.plan("deployment_status", pending, TARGET).actions
    assert isinstance(running, Put) and state_of(running)["color"] == "blue"
    [requested] = github.plan("check_suite", fixture("check_suite.requested"), TARGET).actions
    [completed] = github.plan("check_suite", fixture("check_suite.completed"), TARGET).actions
    assert isinstance(requested, Put) and isinstance(completed, Finish)
    assert state_of(requested)["title"] == "octocoders-linter on master"
    assert state_of(completed)["color"] == "green"


@pytest.mark.parametrize(
    ("conclusion", "color"),
    [
        ("failure", "red"),
        ("timed_out", "red"),
        ("cancelled", "gray"),
        ("action_required", "orange"),
    ],
)
def test_colour_follows_the_conclusion(conclusion: str, color: str) -> None:
    payload = fixture("workflow_run.completed")
    payload["workflow_run"]["conclusion"] = conclusion
    [action] = github.plan("workflow_run", payload, TARGET).actions
    assert state_of(action)["color"] == color
    assert state_of(action)["value"] == conclusion.replace("_", " ")


def test_two_webhooks_never_share_a_stream() -> None:
    payload = fixture("workflow_run.requested")
    a = github.plan("workflow_run", payload, github.Target("a")).actions[0]
    b = github.plan("workflow_run", payload, github.Target("b")).actions[0]
    assert a.key != b.key and a.request.channels is None  # no channels: every device


def test_an_unsupported_event_names_the_supported_ones() -> None:
    with pytest.raises(UnsupportedEvent) as caught:
        github.plan("push", {"ref": "refs/heads/main"}, TARGET)
    assert caught.value.status == 400 and caught.value.code == "unsupported_event"
    assert "'push'" in caught.value.message
    assert all(event in caught.value.message for event in github.SUPPORTED)


@pytest.mark.parametrize(
    ("event", "edit", "pointer"),
    [
        ("workflow_job", lambda p: p.pop("workflow_job"), "/workflow_job"),
        (
            "workflow_job",
            lambda p: p["workflow_job"].__setitem__("steps", "x"),
            "/workflow_job/steps",
        ),
        ("workflow_job", lambda p: p["workflow_job"].pop("id"), "/workflow_job/id"),
        ("workflow_run", lambda p: p["repository"].pop("id"), "/repository/id"),
        (
            "workflow_run",
            lambda p: p["workflow_run"].__setitem__("status", 3),
            "/workflow_run/status",
        ),
        ("deployment_status", lambda p: p.pop("deployment"), "/deployment"),
        ("check_suite", lambda p: p["check_suite"].__setitem__("id", True), "/check_suite/id"),
    ],
)
def test_a_malformed_payload_names_the_field(event: str, edit: Any, pointer: str) -> None:
    names = {
        "workflow_job": "workflow_job.in_progress.with-queued-steps",
        "workflow_run": "workflow_run.requested",
        "deployment_status": "deployment_status.created",
        "check_suite": "check_suite.requested",
    }
    payload = copy.deepcopy(fixture(names[event]))
    edit(payload)
    with pytest.raises(errors.BadRequest) as caught:
        github.plan(event, payload, TARGET)
    assert caught.value.message.startswith(f"payload {pointer}:")
    with pytest.raises(errors.BadRequest):
        github.plan(event, [payload], TARGET)


def test_long_names_are_clipped_to_what_a_title_holds() -> None:
    payload = fixture("workflow_job.in_progress.with-queued-steps")
    payload["workflow_job"]["name"] = "x" * 1000
    [action] = github.plan("workflow_job", payload, TARGET).actions
    assert len(action.request.content_state.title) == 256


# -- signatures -----------------------------------------------------------------------------------


def test_the_signature_is_githubs_documented_example() -> None:
    # GitHub's docs, "Validating webhook deliveries": this secret and body give this signature.
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert auth.sign(SECRET, body) == expected
    auth.check_signature(SECRET, body, expected)


@pytest.mark.parametrize(
    "header",
    [None, "", "sha1=abc", "sha256=", "sha256=" + "0" * 64, auth.sign("another secret!!", b"x")],
)
def test_a_bad_or_missing_signature_is_401_and_never_shows_the_secret(header: str | None) -> None:
    with pytest.raises(errors.Unauthorized) as caught:
        auth.check_signature(SECRET, b"x", header)
    assert SECRET not in caught.value.message
    assert auth.sign(SECRET, b"x") not in caught.value.message


def test_the_signature_covers_every_byte_of_the_body() -> None:
    signature = auth.sign(SECRET, b'{"a": 1}')
    with pytest.raises(errors.Unauthorized):
        auth.check_signature(SECRET, b'{"a":1}', signature)


def test_the_shared_secret_header() -> None:
    auth.check_secret(SECRET, SECRET)
    for wrong in (None, "", SECRET[:-1], SECRET + "x", "é" * 5):
        with pytest.raises(errors.Unauthorized) as caught:
            auth.check_secret(SECRET, wrong)
        assert SECRET not in caught.value.message


def test_a_secret_beyond_ascii_matches_the_bytes_that_were_sent() -> None:
    secret = "clé-secrète-0123456789"
    sent = secret.encode().decode("latin-1")  # how the HTTP layer hands a header over
    auth.check_secret(secret, sent)
    with pytest.raises(errors.Unauthorized):
        auth.check_secret(secret, secret)  # the same text, but not the bytes of a UTF-8 header
