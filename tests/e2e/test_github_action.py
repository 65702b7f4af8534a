"""The `live-activity` GitHub Action (.github/actions/live-activity), run step by step with bash
as a GitHub runner runs it (tests/helpers/actionkit.py), against a live server.

The simulated iPhones must show what the action sent; its outputs must carry the activity id and
the server's answer; a non-2xx answer must fail the step with the server's message; and the API
key must never reach the log.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.actionkit import ActionRun, parse_command_file, run_action
from tests.helpers.serverkit import API_KEY, LiveServer, http_json, server_fixture, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("bash") is None, reason="the action's steps need bash"),
]

server = server_fixture(seed=6101)

ACTION = Path(__file__).resolve().parents[2] / ".github" / "actions" / "live-activity"
DEVICES = 2
DELIVERY_TIMEOUT = 10.0


def act(live: LiveServer, workdir: Path, **inputs: str) -> ActionRun:
    """Run the action with the server's URL and key and `inputs` (dashes for underscores)."""
    given = {"url": live.api_base, "api-key": API_KEY}
    given.update({name.replace("_", "-"): value for name, value in inputs.items()})
    run = run_action(ACTION, given, workdir)
    assert API_KEY not in run.log, "the API key reached the log"
    # The only place the key is printed is the runner's own mask command.
    assert run.raw_stdout.count(API_KEY) == run.raw_stdout.count("::add-mask::" + API_KEY)
    return run


def wait_shown(live: LiveServer, activity_id: str, state: str, content: dict[str, Any]) -> None:
    """Until every simulated iPhone shows `activity_id` in `state` with `content`."""

    def done(shown: dict[str, dict[str, Any]]) -> bool:
        return len(shown) == DEVICES and all(
            act["state"] == state
            and all(act["content_state"].get(k) == v for k, v in content.items())
            for act in shown.values()
        )

    wait_until(
        lambda: live.shown(activity_id),
        done,
        timeout=DELIVERY_TIMEOUT,
        what=f"{activity_id} {state} with {content!r} on {DEVICES} devices",
    )


def test_a_deploy_starts_updates_and_ends(server: LiveServer, tmp_path: Path) -> None:
    run = act(
        server,
        tmp_path,
        stream_key="deploy-101",
        type="segmented_progress",
        title="Deploy web",
        subtitle="main @ 1a2b3c",
        number_of_steps="4",
        current_step="1",
        color="blue",
        icon="hammer",
        badge="prod",
    )
    assert run.ok, run.log
    assert [step.returncode for step in run.steps] == [0, 0]
    call = run.steps[-1]
    # The step's GITHUB_OUTPUT file, as the runner reads it.
    activity_id = call.outputs["activity_id"]
    assert activity_id and run.outputs["activity_id"] == activity_id
    answer = json.loads(run.outputs["response"])
    assert answer["activity_id"] == activity_id and answer["stream_key"] == "deploy-101"
    assert answer["operation"] == "started"
    assert run.summary.startswith(
        f"Lockstep: stream `deploy-101` started, Live Activity `{activity_id}`"
    )
    wait_shown(
        server,
        activity_id,
        "active",
        {"title": "Deploy web", "subtitle": "main @ 1a2b3c", "number_of_steps": 4,
         "current_step": 1, "color": "blue", "icon": {"symbol": "hammer"},
         "badge": {"title": "prod"}},
    )  # fmt: skip

    # A raw content state with the inputs over it.
    raw = json.dumps({"type": "segmented_progress", "title": "ignored", "number_of_steps": 4,
                      "step_color": "orange"})  # fmt: skip
    run = act(server, tmp_path, stream_key="deploy-101", content_state=raw, title="Deploy web",
              current_step="3")  # fmt: skip
    assert run.ok, run.log
    assert run.outputs["activity_id"] == activity_id
    wait_shown(server, activity_id, "active", {"title": "Deploy web", "current_step": 3,
                                               "step_color": "orange"})  # fmt: skip

    run = act(server, tmp_path, stream_key="deploy-101", end="true", type="segmented_progress",
              title="Deployed", number_of_steps="4", current_step="4", color="green",
              auto_dismiss_seconds="60")  # fmt: skip
    assert run.ok, run.log
    assert json.loads(run.outputs["response"])["operation"] == "ended"
    assert run.outputs["activity_id"] == activity_id
    wait_shown(server, activity_id, "ended", {"title": "Deployed", "current_step": 4,
                                              "color": "green"})  # fmt: skip


def test_metrics_and_channels(server: LiveServer, tmp_path: Path) -> None:
    metrics = [{"label": "CPU", "value": 9, "unit": "%"}, {"label": "MEM", "value": 45}]
    run = act(server, tmp_path, stream_key="web-1", type="metrics", title="web-1",
              metrics=json.dumps(metrics))  # fmt: skip
    assert run.ok, run.log
    wait_shown(server, run.outputs["activity_id"], "active", {"metrics": metrics})
    # The simulated iPhones subscribe to no channel: naming channels reaches nobody, and the
    # server's 422 says which channels it looked for.
    run = act(server, tmp_path, stream_key="web-2", type="value", title="web-2", value="1",
              channels=" ops, night-shift ")  # fmt: skip
    error = failed_with(run)
    assert "(HTTP 422, no_recipients)" in error, error
    no_stream(server, "web-2")


def failed_with(run: ActionRun) -> str:
    """The failing step's error annotation (the step must have failed, and been the last)."""
    assert not run.ok and run.steps[-1].returncode == 1, run.log
    assert run.outputs == {} and run.steps[-1].outputs == {} and run.summary == ""
    errors = [line for line in run.log.splitlines() if line.startswith("::error")]
    assert len(errors) == 1, run.log
    return errors[0]


def no_stream(live: LiveServer, key: str) -> None:
    """Nothing was stored for `key`."""
    status, body = http_json("GET", f"{live.api_base}/live-activity/stream/{key}", key=API_KEY)
    assert status == 404, body


def test_a_non_2xx_fails_the_step_with_the_servers_message(
    server: LiveServer, tmp_path: Path
) -> None:
    error = failed_with(act(server, tmp_path, stream_key="bad-1", type="sparkles", title="T"))
    assert error.startswith("::error title=Lockstep::PUT /live-activity/stream/bad-1: ")
    assert "content_state.type" in error and "(HTTP 400" in error
    no_stream(server, "bad-1")

    # The first call of a stream needs a type: the server's message says so.
    error = failed_with(act(server, tmp_path, stream_key="bad-2", title="T"))
    assert "content_state.type" in error and "HTTP 4" in error
    no_stream(server, "bad-2")

    # Ending a stream that never started.
    error = failed_with(act(server, tmp_path, stream_key="never-started", end="true"))
    assert "(HTTP 404" in error

    # An unknown key: 403, and that key is masked too.
    wrong = "lsk_not_a_key_0123456789"
    run = run_action(ACTION, {"url": server.api_base, "api-key": wrong, "stream-key": "bad-3",
                              "type": "value", "title": "T", "value": "1"}, tmp_path)  # fmt: skip
    assert "(HTTP 403" in failed_with(run) and wrong not in run.log


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"content-state": "{not json"}, "content-state is not valid JSON"),
        ({"content-state": "[1]"}, "content-state must be a JSON object"),
        ({"metrics": '{"CPU": 9}'}, "metrics must be a JSON array"),
        ({"end": "yes"}, "end must be true or false"),
        ({"stream-key": "a/b"}, "stream-key must be 1-255 letters"),
        ({"timeout": "soon"}, "timeout must be a number"),
    ],
)
def test_bad_inputs_fail_before_any_request(
    server: LiveServer, tmp_path: Path, inputs: dict[str, str], message: str
) -> None:
    given = {"stream-key": "bad-input", "type": "value", "title": "T", "value": "1", **inputs}
    error = failed_with(act(server, tmp_path, **{k.replace("-", "_"): v for k, v in given.items()}))
    assert message in error, error
    no_stream(server, "bad-input")


def test_an_unreachable_server_fails_the_step(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, noted, closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    inputs = {"url": url, "api-key": "lsk_unused_key", "stream-key": "x", "title": "T"}
    error = failed_with(run_action(ACTION, inputs, tmp_path))
    assert error.startswith(f"::error title=Lockstep::cannot reach {url}: "), error


def test_command_files_are_read_as_the_runner_reads_them() -> None:
    text = 'a=1\nresponse<<EOF_1\n{\n  "x": 1\n}\nEOF_1\nempty=\n'
    assert parse_command_file(text) == {"a": "1", "response": '{\n  "x": 1\n}', "empty": ""}


def readme_block(heading: str, fence: str) -> str:
    """The first ```fence block under `heading` in README.md."""
    text = (ACTION.parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    start = section.index(f"```{fence}\n") + len(fence) + 4
    return section[start : section.index("```", start)]


def test_the_readme_workflow_uses_only_declared_inputs() -> None:
    workflow = yaml.safe_load(readme_block("### GitHub Action", "yaml"))
    declared = yaml.safe_load((ACTION / "action.yml").read_text(encoding="utf-8"))
    inputs = declared["inputs"]
    required = {name for name, spec in inputs.items() if spec.get("required")}
    (job,) = workflow["jobs"].values()
    uses = [step for step in job["steps"] if step.get("uses") == "./.github/actions/live-activity"]
    assert len(uses) == 3
    for step in uses:
        assert set(step["with"]) <= set(inputs), set(step["with"]) - set(inputs)
        assert required <= set(step["with"])
    state = json.loads(job["env"]["LIVE_STATE"])  # the shared content-state is valid JSON
    assert state["type"] == "segmented_progress"
    assert set(declared["outputs"]) == {"activity_id", "response"}
