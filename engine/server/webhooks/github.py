"""GitHub webhook events mapped to Live Activity streams. Pure: a payload in, a `Plan` out.

- `workflow_run`: stream `<name>-<repo id>-run-<run id>`, a `value` showing its status;
- `workflow_job`: stream `<name>-<repo id>-job-<job id>`, a `segmented_progress` of its steps;
- `deployment_status`: stream `<name>-<repo id>-deploy-<deployment id>`, a `value` (its state);
- `check_suite`: stream `<name>-<repo id>-suite-<suite id>`, a `value` showing its status.

`<name>` is the webhook's name, so two webhooks never share a stream. Keys use GitHub's numeric
ids, which survive renames. A job's steps are its segments: `current_step` counts the completed
steps, each coloured by its conclusion. The accent colour follows status and conclusion: gray
while queued, blue while running, then green (success), red (failure, timed out, error), gray
(cancelled, skipped, neutral, stale, inactive) or orange (anything else, e.g. action_required).
A completed run, job, suite or deployment ends its stream with the final state, dismissed after
the webhook's `auto_dismiss_minutes` (default: the server's).

`ping` (sent when the webhook is created) is answered with a plan that does nothing. Any other
event is refused with 400 `unsupported_event` naming the ones supported; a payload missing what
the mapping reads is refused with 400 naming the JSON pointer of the missing field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from engine.server.contract import models
from engine.server.contract.content import Color
from engine.server.webhooks.plan import Finish, Plan, Put, UnsupportedEvent, malformed

__all__ = ["SUPPORTED", "Target", "plan"]

SUPPORTED: Final = ("ping", "workflow_run", "workflow_job", "deployment_status", "check_suite")
"""The events a GitHub webhook maps (select these in GitHub's webhook settings)."""

_DONE: Final = {
    "success": "green",
    "failure": "red",
    "timed_out": "red",
    "startup_failure": "red",
    "error": "red",
    "cancelled": "gray",
    "skipped": "gray",
    "neutral": "gray",
    "stale": "gray",
    "inactive": "gray",
}
_WAITING: Final = frozenset({"queued", "requested", "waiting", "pending"})
_DEPLOY_FINAL: Final = frozenset({"success", "failure", "error", "inactive"})

# GitHub names (workflows, commit messages) can be long: a lock screen shows a line or two.
_TITLE_MAX: Final = 256


@dataclass(frozen=True, slots=True)
class Target:
    """Where a webhook's streams go: key prefix (its name), channels, dismissal on completion."""

    prefix: str
    channels: tuple[str, ...] = ()
    auto_dismiss_minutes: int | None = None


def plan(event: str, payload: Any, target: Target) -> Plan:
    """The stream calls of one GitHub delivery (`X-GitHub-Event: event`)."""
    if event == "ping":
        zen = payload.get("zen") if isinstance(payload, dict) else None
        return Plan("ping", f"pong{': ' + zen if isinstance(zen, str) else ''}")
    mapper = _MAPPERS.get(event)
    if mapper is None:
        raise UnsupportedEvent(
            f"GitHub event {event[:100]!r} is not supported; supported events: "
            f"{', '.join(SUPPORTED)} (select only these in the webhook's settings)"
        )
    if not isinstance(payload, dict):
        raise malformed("", "must be a JSON object")
    return mapper(payload, target)


# -- the events -------------------------------------------------------------------------------


def _workflow_run(payload: dict[str, Any], target: Target) -> Plan:
    run = _obj(payload, "workflow_run")
    repo_id, repo = _repo(payload)
    status, conclusion = _str(run, "/workflow_run/status"), _opt(run, "conclusion")
    workflow = payload.get("workflow")
    name = (
        _opt(run, "name")
        or (_opt(workflow, "name") if isinstance(workflow, dict) else None)
        or _opt(run, "display_title")
        or "Workflow run"
    )
    title = f"{name} #{_int(run, '/workflow_run/run_number')}"
    state = models.ContentState(
        title=_clip(title),
        subtitle=_clip(_join(repo, _opt(run, "head_branch"))),
        type="value",
        value=_label(status, conclusion),
        color=_color(status, conclusion),
    )
    key = f"{target.prefix}-{repo_id}-run-{_int(run, '/workflow_run/id')}"
    return _plan("workflow_run", key, state, status == "completed", target, title)


def _workflow_job(payload: dict[str, Any], target: Target) -> Plan:
    job = _obj(payload, "workflow_job")
    repo_id, repo = _repo(payload)
    status, conclusion = _str(job, "/workflow_job/status"), _opt(job, "conclusion")
    steps = job.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise malformed("/workflow_job/steps", "must be an array of objects")
    done = [s for s in steps if s.get("status") == "completed"]
    running = next((s for s in steps if s.get("status") == "in_progress"), None)
    total = max(1, len(steps))  # a queued job has no steps yet: one empty segment
    current = len(done) if steps else int(status == "completed")
    title = _str(job, "/workflow_job/name")
    step_name = _opt(running, "name") if running is not None else None
    state = models.ContentState(
        title=_clip(title),
        subtitle=_clip(step_name or _join(repo, _opt(job, "workflow_name"))),
        type="segmented_progress",
        number_of_steps=min(total, models.MAX_STEPS),
        current_step=min(current, total, models.MAX_STEPS),
        step_colors=[_color("completed", _opt(s, "conclusion")) for s in done][: models.MAX_STEPS]
        or None,
        step_color=_color(status, conclusion),
        color=_color(status, conclusion),
    )
    key = f"{target.prefix}-{repo_id}-job-{_int(job, '/workflow_job/id')}"
    return _plan("workflow_job", key, state, status == "completed", target, title)


def _deployment_status(payload: dict[str, Any], target: Target) -> Plan:
    status = _obj(payload, "deployment_status")
    deployment = _obj(payload, "deployment")
    repo_id, repo = _repo(payload)
    state_name = _str(status, "/deployment_status/state")
    environment = _opt(status, "environment") or _opt(deployment, "environment") or "deployment"
    title = f"Deploy to {environment}"
    final = state_name in _DEPLOY_FINAL
    state = models.ContentState(
        title=_clip(title),
        subtitle=_clip(_join(repo, _opt(deployment, "ref"))),
        type="value",
        value=_clip(state_name.replace("_", " ")),
        color=_color("completed", state_name) if final else _color(state_name, None),
    )
    key = f"{target.prefix}-{repo_id}-deploy-{_int(deployment, '/deployment/id')}"
    return _plan("deployment_status", key, state, final, target, title)


def _check_suite(payload: dict[str, Any], target: Target) -> Plan:
    suite = _obj(payload, "check_suite")
    repo_id, repo = _repo(payload)
    status, conclusion = _str(suite, "/check_suite/status"), _opt(suite, "conclusion")
    app = suite.get("app")
    app_name = (_opt(app, "name") if isinstance(app, dict) else None) or "Checks"
    sha = _opt(suite, "head_sha")
    where = _opt(suite, "head_branch") or (sha[:7] if sha else None)
    title = f"{app_name} on {where}" if where else app_name
    state = models.ContentState(
        title=_clip(title),
        subtitle=_clip(repo),
        type="value",
        value=_label(status, conclusion),
        color=_color(status, conclusion),
    )
    key = f"{target.prefix}-{repo_id}-suite-{_int(suite, '/check_suite/id')}"
    return _plan("check_suite", key, state, status == "completed", target, title)


_MAPPERS: Final[dict[str, Callable[[dict[str, Any], Target], Plan]]] = {
    "workflow_run": _workflow_run,
    "workflow_job": _workflow_job,
    "deployment_status": _deployment_status,
    "check_suite": _check_suite,
}


# -- helpers ----------------------------------------------------------------------------------


def _plan(
    event: str, key: str, state: models.ContentState, final: bool, target: Target, title: str
) -> Plan:
    request = models.validate(
        models.StreamRequest(content_state=state, channels=list(target.channels) or None)
    )
    word = "ended" if final else "shown"
    summary = f"{event}: {title[:80]!r} {word} on stream {key}"
    if final:
        return Plan(event, summary, (Finish(key, request, target.auto_dismiss_minutes),))
    return Plan(event, summary, (Put(key, request),))


def _color(status: str, conclusion: str | None) -> Color:
    if status == "completed":
        return _DONE.get(conclusion or "", "orange")  # type: ignore[return-value]
    return "gray" if status in _WAITING else "blue"


def _label(status: str, conclusion: str | None) -> str:
    word = (conclusion or "completed") if status == "completed" else status
    return _clip(word.replace("_", " "))


def _repo(payload: dict[str, Any]) -> tuple[int, str]:
    repo = _obj(payload, "repository")
    return _int(repo, "/repository/id"), _str(repo, "/repository/full_name")


def _obj(parent: dict[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise malformed(f"/{name}", "must be an object")
    return value


def _str(obj: dict[str, Any], where: str) -> str:
    value = obj.get(where.rsplit("/", 1)[1])
    if not isinstance(value, str) or not value:
        raise malformed(where, "must be a non-empty string")
    return value


def _int(obj: dict[str, Any], where: str) -> int:
    value = obj.get(where.rsplit("/", 1)[1])
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise malformed(where, "must be a non-negative integer")
    return value


def _opt(obj: Any, name: str) -> str | None:
    value = obj.get(name) if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None


def _join(*parts: str | None) -> str:
    return " · ".join(p for p in parts if p)


def _clip(text: str) -> str:
    return text if len(text) <= _TITLE_MAX else text[: _TITLE_MAX - 1] + "…"
