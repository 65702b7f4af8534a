"""`lockstep stream|end|start|update|end-activity|status` against a live server, as a user runs it.

The commands run in-process through the `lockstep` entry point (`engine.cli.main`), find the
server and key through `--config lockstep.toml` (the server listens on a port picked at start,
so this is a non-default server), and the simulated iPhones must show what the commands said.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main as lockstep
from tests.helpers.serverkit import API_KEY, LiveServer, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=4142)

DEVICES = 2
DELIVERY_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def config(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lockstep.toml naming the live server's port and key."""
    port = urllib.parse.urlsplit(server.api_base).port
    path = tmp_path_factory.mktemp("cli") / "lockstep.toml"
    path.write_text(f'[server]\nhost = "0.0.0.0"\nport = {port}\napi_keys = ["{API_KEY}"]\n')
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LOCKSTEP_URL", "LOCKSTEP_API_KEY", "LOCKSTEP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./lockstep-data/api-key to fall back on


class Cli:
    """Runs `lockstep ...` with the test's config; returns (status, stdout, stderr)."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config, self.capsys = config, capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = lockstep([*argv, "--config", str(self.config), "--timeout", "10"])
        out, err = self.capsys.readouterr()
        assert API_KEY not in out + err
        return status, out, err


@pytest.fixture
def cli(config: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(config, capsys)


def wait_shown(server: LiveServer, activity_id: str, state: str, expected: dict[str, Any]) -> None:
    def done(shown: dict[str, dict[str, Any]]) -> bool:
        return len(shown) == DEVICES and all(
            a["state"] == state and a["content_state"] == expected for a in shown.values()
        )

    wait_until(
        lambda: server.shown(activity_id),
        done,
        timeout=DELIVERY_TIMEOUT,
        what=f"{activity_id} {state} with {expected!r}",
    )


def test_a_stream_paused_then_ended_with_its_last_state(server: LiveServer, cli: Cli) -> None:
    status, out, err = cli(
        "stream",
        "cli-oven",
        "--type",
        "timer",
        "--title",
        "Pizza",
        "--subtitle",
        "oven 2",
        "--duration",
        "600",
        "--tags",
        "kitchen,dinner",
        "--metadata",
        '{"oven": 2}',
        "--json",
    )
    assert status == 0, err
    started = json.loads(out)
    assert started["operation"] == "started" and started["tags"] == ["kitchen", "dinner"]
    activity_id = started["activity_id"]
    status, out, err = cli(
        "stream", "cli-oven", "--title", "Pizza", "--subtitle", "oven 2", "--paused"
    )
    assert status == 0, err
    assert out.startswith(f"stream cli-oven: updated, activity {activity_id}\n")
    status, out, err = cli("status", "cli-oven", "--json")
    assert status == 0 and json.loads(out)["content_state"]["is_running"] is False
    # No content flags: the server ends the stream with its last state.
    status, out, err = cli("end", "cli-oven", "--clear-tags")
    assert status == 0, err
    assert out.startswith(f"stream cli-oven: ended, activity {activity_id}")
    wait_shown(
        server,
        activity_id,
        "ended",
        {
            "type": "timer",
            "title": "Pizza",
            "subtitle": "oven 2",
            "duration_seconds": 600.0,
            "counts_down": True,
            "is_running": False,
        },
    )
    status, out, _ = cli("end", "cli-oven")
    assert status == 0 and "message: the stream's activity had already ended" in out


def test_a_stream_ended_with_some_fields_keeps_the_rest(server: LiveServer, cli: Cli) -> None:
    argv = ["stream", "cli-deploy", "--type", "segmented_progress", "--title", "Deploy"]
    status, out, err = cli(*argv, "--steps", "4", "--step", "1", "--badge", "prod", "--id-only")
    assert status == 0, err
    activity_id = out.strip()
    assert activity_id.startswith("la_")
    status, out, err = cli("stream", "cli-deploy", "--step", "2")  # no title: the rest is kept
    assert status == 0 and out.startswith(f"stream cli-deploy: updated, activity {activity_id}")
    status, out, _ = cli("status", "cli-deploy", "--json")
    shown = json.loads(out)["content_state"]
    assert (shown["current_step"], shown["badge"]) == (2, {"title": "prod"})
    status, _, err = cli("end", "cli-deploy", "--step", "4", "--auto-dismiss-minutes", "30")
    assert status == 0, err
    expected = {
        "type": "segmented_progress",
        "title": "Deploy",
        "number_of_steps": 4,
        "current_step": 4,
        "badge": {"title": "prod"},
    }
    wait_shown(server, activity_id, "ended", expected)


def test_start_update_end_by_id_without_repeating_the_title(server: LiveServer, cli: Cli) -> None:
    status, out, err = cli(
        "start", "--type", "progress", "--title", "Backup", "--percentage", "10", "--id-only"
    )
    assert status == 0, err
    activity_id = out.strip()
    status, out, err = cli("update", activity_id, "--percentage", "55")
    assert status == 0, err
    assert out.startswith("updated, activity " + activity_id)
    status, _, err = cli("end-activity", activity_id, "--percentage", "100", "--color", "green")
    assert status == 0, err
    expected = {"type": "progress", "title": "Backup", "percentage": 100.0, "color": "green"}
    wait_shown(server, activity_id, "ended", expected)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stream", "cli-nobody", "--title", "t"], "content_state.type is required"),
        (
            ["start", "--type", "value", "--title", "t", "--value", "1", "--channels", "nobody"],
            "(HTTP 422, no_recipients)",
        ),
        (["end", "cli-never-started"], "(HTTP 404, not_found)"),
        (["update", "la_missing", "--percentage", "5"], "(HTTP 404, not_found)"),
        (
            ["stream", "cli-big", "--type", "alert", "--title", "t", "--message", "m" * 5000],
            "(HTTP 413, payload_too_large)",
        ),
    ],
)
def test_every_error_answer_exits_1_with_its_message(
    cli: Cli, argv: list[str], message: str
) -> None:
    status, out, err = cli(*argv)
    assert status == 1
    assert out == ""
    assert message in err


def test_a_wrong_key_exits_1(cli: Cli) -> None:
    status, _, err = cli("status", "cli-oven", "--key", "lsk_not_this_servers_key_000000")
    assert status == 1 and "(HTTP 403, forbidden)" in err
