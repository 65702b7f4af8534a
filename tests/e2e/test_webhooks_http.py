"""Inbound webhooks through real HTTP against a live server with simulated iPhones.

GitHub's example payloads, signed the way GitHub signs them, are POSTed to the server; what the
simulated phones show is read from the simulator's control API. Bad signatures, unknown webhook
names, malformed payloads and unsupported events each get a clear 4xx and change nothing; the
delivery log and the replay route take an API key; no answer ever carries a webhook's secret.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.server.webhooks import auth
from engine.server.webhooks.config import WebhookConfig
from tests.helpers.serverkit import (
    API_KEY,
    LiveServer,
    http_json,
    http_raw,
    server_fixture,
    wait_until,
)

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
SECRET = "e2e-github-secret-0123456789"
GENERIC_SECRET = "e2e-generic-secret-9876543210"
HOOKS = (
    WebhookConfig(name="github", kind="github", secret=SECRET, auto_dismiss_minutes=1),
    WebhookConfig(
        name="deploys",
        kind="generic",
        secret=GENERIC_SECRET,
        stream_key="/deploy/id",
        map={"title": "/deploy/name", "percentage": "/deploy/progress"},
        set={"type": "progress", "color": "cyan"},
        end="/deploy/state",
        end_values=("succeeded", "failed"),
    ),
)
JOB_KEY = "github-445650657-job-14541957942"

server = server_fixture(seed=4301, devices=1, webhooks=HOOKS)


def payload(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def running_job() -> dict[str, Any]:
    return payload("workflow_job.in_progress.with-queued-steps")


def finished_job() -> dict[str, Any]:
    job = copy.deepcopy(running_job())
    job["action"] = "completed"
    job["workflow_job"].update(status="completed", conclusion="failure")
    for step in job["workflow_job"]["steps"]:
        step.update(status="completed", conclusion="success")
    job["workflow_job"]["steps"][-3]["conclusion"] = "failure"
    return job


def github_post(
    server: LiveServer,
    event: str,
    body: dict[str, Any] | bytes,
    delivery: str,
    *,
    secret: str = SECRET,
    hook: str = "github",
    **headers: str,
) -> tuple[int, Any]:
    """POST as GitHub does: JSON body, event, delivery id and the body's signature."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/e2e",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": auth.sign(secret, raw),
        **headers,
    }
    status, answer = http_raw("POST", f"{server.api_base}/webhooks/{hook}", raw, sent)
    assert SECRET not in json.dumps(answer) and GENERIC_SECRET not in json.dumps(answer)
    return status, answer


def phone_activity(server: LiveServer, key: str) -> dict[str, Any] | None:
    status, body = http_json("GET", f"{server.api_base}/live-activity/stream/{key}", key=API_KEY)
    if status != 200:
        return None
    shown = server.shown(body["activity_id"])
    return next(iter(shown.values()), None)


def deliveries(server: LiveServer, hook: str = "github") -> list[dict[str, Any]]:
    status, body = http_json("GET", f"{server.api_base}/webhooks/{hook}/deliveries", key=API_KEY)
    assert status == 200, body
    return list(body["deliveries"])


@pytest.fixture(scope="module")
def running(server: LiveServer) -> Iterator[LiveServer]:
    """The server once the running job shows on the phone."""
    status, body = github_post(server, "workflow_job", running_job(), "job-1")
    assert status == 200 and body["outcome"] == "applied" and body["streams"] == [JOB_KEY], body
    wait_until(
        lambda: phone_activity(server, JOB_KEY),
        lambda act: act is not None and act["state"] == "active",
        what="the job on the phone",
    )
    yield server


def test_ping_is_answered_and_logged(server: LiveServer) -> None:
    status, body = github_post(server, "ping", payload("ping"), "ping-1")
    assert status == 200, body
    assert (body["outcome"], body["event"], body["delivery_id"]) == ("ignored", "ping", "ping-1")
    assert body["message"].startswith("pong")


def test_the_phone_shows_the_jobs_steps(running: LiveServer) -> None:
    act = phone_activity(running, JOB_KEY)
    assert act is not None
    state = act["content_state"]
    assert (state["type"], state["current_step"], state["number_of_steps"]) == (
        "segmented_progress",
        2,
        9,
    )
    assert state["title"] == "Do examples need to be regenerated?"
    assert state["step_colors"] == ["green", "green"] and state["color"] == "blue"


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("forged signature", 401, "unauthorized"),
        ("no signature", 401, "unauthorized"),
        ("another webhook's secret", 401, "unauthorized"),
        ("unknown webhook", 404, "not_found"),
        ("unsupported event", 400, "unsupported_event"),
        ("malformed JSON", 400, "bad_request"),
        ("missing field", 400, "bad_request"),
        ("form-encoded", 400, "bad_request"),
        ("no event header", 400, "bad_request"),
    ],
)
def test_bad_deliveries_get_a_clear_4xx_and_change_nothing(
    running: LiveServer, case: str, status: int, code: str
) -> None:
    before = phone_activity(running, JOB_KEY)
    logged = len(deliveries(running))
    done = json.dumps(finished_job()).encode()
    if case == "forged signature":
        got = github_post(running, "workflow_job", done, "bad-1", secret="x" * 20)
    elif case == "no signature":
        raw_headers = {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
                       "X-GitHub-Delivery": "bad-2"}  # fmt: skip
        got = http_raw("POST", f"{running.api_base}/webhooks/github", done, raw_headers)
    elif case == "another webhook's secret":
        got = github_post(running, "workflow_job", done, "bad-3", secret=GENERIC_SECRET)
    elif case == "unknown webhook":
        got = github_post(running, "workflow_job", done, "bad-4", hook="gitlab")
    elif case == "unsupported event":
        got = github_post(running, "push", {"ref": "refs/heads/main"}, "bad-5")
    elif case == "malformed JSON":
        got = github_post(running, "workflow_job", done[:40], "bad-6")
    elif case == "missing field":
        broken = finished_job()
        del broken["workflow_job"]["id"]
        got = github_post(running, "workflow_job", broken, "bad-7")
    elif case == "form-encoded":
        got = github_post(running, "workflow_job", b"payload=%7B%7D", "bad-8",
                          **{"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    else:
        got = github_post(running, "", done, "bad-9")
    assert got[0] == status, got
    assert got[1]["error"] == code and got[1]["message"], got
    if case == "unsupported event":
        assert "'push'" in got[1]["message"] and "workflow_job" in got[1]["message"]
    if case == "missing field":
        assert "/workflow_job/id" in got[1]["message"]
    if case == "form-encoded":
        assert "application/json" in got[1]["message"]
    after = phone_activity(running, JOB_KEY)
    assert after is not None and before is not None
    assert after["content_state"] == before["content_state"] and after["state"] == "active"
    # Only authenticated, well-addressed deliveries are logged (as rejected).
    authenticated = status == 400 and case != "no event header"
    assert len(deliveries(running)) == logged + int(authenticated)
    if authenticated:
        assert deliveries(running)[0]["outcome"] == "rejected"


def test_a_redelivery_changes_nothing(running: LiveServer) -> None:
    before = phone_activity(running, JOB_KEY)
    status, body = github_post(running, "workflow_job", finished_job(), "job-1")
    assert status == 200 and body["outcome"] == "duplicate" and body["streams"] == [], body
    after = phone_activity(running, JOB_KEY)
    assert after is not None and before is not None
    assert after["content_state"] == before["content_state"] and after["state"] == "active"


def test_completion_ends_the_activity_with_its_outcome_then_replays(running: LiveServer) -> None:
    status, body = github_post(running, "workflow_job", finished_job(), "job-2")
    assert status == 200 and body["outcome"] == "applied", body
    act = wait_until(
        lambda: phone_activity(running, JOB_KEY),
        lambda a: a is not None and a["state"] == "ended",
        what="the job to end on the phone",
    )
    assert act is not None
    state = act["content_state"]
    assert state["current_step"] == state["number_of_steps"] == 9
    assert state["color"] == "red" and state["step_colors"][-3] == "red"
    assert act["dismissal_at"] is not None  # auto-dismissed (after a minute)
    log = deliveries(running)
    assert log[0]["delivery_id"] == "job-2" and log[0]["outcome"] == "applied"
    assert log[0]["streams"] == [JOB_KEY] and log[0]["status"] == 200
    # The log and the replay take an API key, not the webhook's secret.
    url = f"{running.api_base}/webhooks/github/deliveries"
    assert http_json("GET", url)[0] == 401
    assert http_json("POST", f"{url}/job-2/replay")[0] == 401
    assert http_json("POST", f"{url}/nope/replay", key=API_KEY)[0] == 404
    assert http_json("GET", f"{running.api_base}/webhooks/nope/deliveries", key=API_KEY)[0] == 404
    status, body = http_json("POST", f"{url}/job-2/replay", key=API_KEY)
    assert status == 200 and body["outcome"] == "applied", body
    assert deliveries(running)[0]["replays"] == 1


def test_a_generic_webhook_maps_json_pointers(server: LiveServer) -> None:
    url = f"{server.api_base}/webhooks/deploys"
    body = {"deploy": {"id": "api-42", "name": "api v42", "progress": 30, "state": "running"}}
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Webhook-Secret": GENERIC_SECRET}
    assert http_raw("POST", url, raw, {**headers, "X-Webhook-Secret": "nope"})[0] == 401
    status, answer = http_raw("POST", url, raw, {**headers, "X-Delivery-Id": "rel-1"})
    assert status == 200 and answer["streams"] == ["deploys-api-42"], answer
    act = wait_until(
        lambda: phone_activity(server, "deploys-api-42"),
        lambda a: a is not None and a["state"] == "active",
    )
    assert act is not None
    assert act["content_state"]["percentage"] == 30 and act["content_state"]["color"] == "cyan"
    bad = json.dumps({"deploy": {"id": "api-42", "name": "x", "progress": 300}}).encode()
    status, answer = http_raw("POST", url, bad, headers)
    assert status == 400 and "(mapped from /deploy/progress)" in answer["message"], answer
    body["deploy"].update(progress=100, state="succeeded")
    status, answer = http_raw("POST", url, json.dumps(body).encode(), headers)
    assert status == 200, answer
    wait_until(
        lambda: phone_activity(server, "deploys-api-42"),
        lambda a: (
            a is not None and a["state"] == "ended" and a["content_state"]["percentage"] == 100
        ),
    )
    assert [d["outcome"] for d in deliveries(server, "deploys")] == [
        "applied",
        "rejected",
        "applied",
    ]
