"""Alert, background, VoIP and widgets pushes from unmodified third-party clients, over TLS.

Two clients send the same pushes to a simulator on 127.0.0.1 with token auth: aioapns (Python,
pointed at the simulator through its protocol class, as in test_sim_aioapns.py) and
@parse/node-apn run by Node (its `address`, `port` and `ca` options). Each checks the answers
and then what the simulated iPhone did with them: the notification a collapse id replaced, the
badge, a background wake, a VoIP call, a widget reload, a widgets push ignored for its body, a
push refused for its token kind, and the `.apns` files simctl could take.

node-apn is installed with npm into `.cache/node-apn/` (gitignored), once, and reused. Without
node or npm (or without the registry) the Node test is skipped, saying why, unless `CI=true`:
there it fails instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from simulator.apns import SimulatorConfig
from simulator.runner import Simulator
from tests.helpers.simkit import start_aps
from tests.helpers.tlskit import aioapns_client, one_device_options, two_environments

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NODE_APN_DIR = REPO / ".cache" / "node-apn"
NODE_APN_VERSION = "8.1.0"
NPM_INSTALL_TIMEOUT = 300.0  # a cold npm install fetches a few dozen packages
BUNDLE = SimulatorConfig().bundle_id
PAD = "x" * 4700  # takes a VoIP body past 4,096 bytes, under its 5,120


@dataclass(frozen=True)
class Send:
    """One push of the scenario: which app token, which topic and type, what body."""

    token: str  # "device", "voip" or "widgets": a key of the device snapshot's "tokens"
    topic: str
    push_type: str | None  # None: no apns-push-type header (the topic implies it)
    priority: int | None  # None: no apns-priority header
    aps: dict[str, Any]
    extra: dict[str, Any]
    collapse_id: str | None
    status: int
    reason: str | None


def _widgets_push(extra: dict[str, Any]) -> Send:
    """A widgets push asking WidgetKit for a reload, with `extra` beside `aps`: APNs accepts it."""
    topic = BUNDLE + ".push-type.widgets"
    return Send("widgets", topic, "widgets", 10, {"content-changed": True}, extra, None, 200, None)


SCENARIO = [
    Send(
        "device",
        BUNDLE,
        "alert",
        10,
        {"alert": {"title": "Build 41", "body": "running"}, "badge": 1},
        {},
        "build",
        200,
        None,
    ),
    Send(
        "device",
        BUNDLE,
        "alert",
        10,
        {"alert": {"title": "Build 41", "body": "passed"}, "badge": 2, "sound": "default"},
        {},
        "build",
        200,
        None,
    ),
    Send("device", BUNDLE, "background", 5, {"content-available": 1}, {}, None, 200, None),
    Send("voip", BUNDLE + ".voip", "voip", 10, {}, {"caller": "Ada", "pad": PAD}, None, 200, None),
    _widgets_push({}),
    # Accepted by APNs, ignored by WidgetKit: anything beside content-changed.
    _widgets_push({"x": 1}),
    # An alert to the VoIP token: the token kind takes voip only (validator step 12).
    Send("voip", BUNDLE, "alert", 10, {"alert": "hi"}, {}, None, 400, "DeviceTokenNotForTopic"),
]


def check_device(sim: Simulator, apns_dir: Path) -> None:
    """What iphone-1 shows after SCENARIO, whichever client sent it."""
    snap = sim.apns.registry.device_snapshot("iphone-1", time.time())
    assert snap is not None
    [note] = snap["notifications"]
    assert (note["title"], note["body"], note["badge"]) == ("Build 41", "passed", 2)
    assert (note["collapse_id"], note["replaced"], note["sound"]) == ("build", 1, "default")
    assert snap["badge"] == 2 and snap["notifications_replaced"] == 1
    assert snap["background_wakes"] == 1 and snap["widget_reloads"] == 1
    [call] = snap["calls"]
    assert call["payload"]["caller"] == "Ada" and len(call["payload"]["pad"]) == len(PAD)
    assert [e["detail"] for e in snap["app_events"]] == ["not-content-changed"]
    names = sorted(p.name for p in (apns_dir / "iphone-1").iterdir())
    assert names == ["000001-alert.apns", "000002-alert.apns", "000003-background.apns"]
    assert sim.apns_files is not None and sim.apns_files.skipped_type == 3


def build_simulator(tmp_path: Path) -> tuple[Simulator, dict[str, str]]:
    options = one_device_options(tmp_path, seed=11)
    sim = Simulator.build(options)
    snap = sim.apns.registry.device_snapshot("iphone-1", time.time())
    assert snap is not None
    return sim, dict(snap["tokens"])


# -- aioapns ----------------------------------------------------------------------------------


def _send_with_aioapns(sim: Simulator, port: int, tokens: dict[str, str]) -> list[tuple[Any, ...]]:
    """Runs in a worker thread with its own asyncio loop."""
    from aioapns import NotificationRequest, PushType

    # aioapns names no `widgets` push type: such a push goes without the header, and its topic
    # says what it is. The background push leaves its priority out: APNs reads it as 5.
    types = {"alert": PushType.ALERT, "background": PushType.BACKGROUND, "voip": PushType.VOIP}

    async def main() -> list[tuple[Any, ...]]:
        client = aioapns_client(sim, port, topic=BUNDLE)
        out = []
        for send in SCENARIO:
            result = await client.send_notification(
                NotificationRequest(
                    device_token=tokens[send.token],
                    message={"aps": send.aps, **send.extra},
                    push_type=types.get(send.push_type or ""),
                    priority=None if send.push_type == "background" else send.priority,
                    collapse_key=send.collapse_id,
                    apns_topic=send.topic,
                )
            )
            out.append((int(result.status), result.description))
        return out

    return asyncio.run(main())


async def test_aioapns_sends_every_push_type(tmp_path: Path) -> None:
    pytest.importorskip("aioapns")
    sim, tokens = build_simulator(tmp_path)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(sim.run)
            answers = await trio.to_thread.run_sync(
                _send_with_aioapns, sim, endpoints.apns_port, tokens
            )
            assert answers == [(s.status, s.reason) for s in SCENARIO]
            check_device(sim, tmp_path / "apns")
            await sim.stop()


# -- @parse/node-apn ---------------------------------------------------------------------------

NODE_SCRIPT = r"""
// Sends each push of the scenario with @parse/node-apn and prints the answers as JSON.
const apn = require(process.env.NODE_APN);
const cfg = JSON.parse(process.env.SCENARIO);

async function main() {
  const provider = new apn.Provider({
    token: { key: cfg.key, keyId: cfg.keyId, teamId: cfg.teamId },
    address: "127.0.0.1",
    port: cfg.port,
    ca: cfg.ca,
    production: !!cfg.production,
    connectionRetryLimit: 1,
  });
  const answers = [];
  for (const send of cfg.sends) {
    const note = new apn.Notification();
    note.topic = send.topic;
    if (send.push_type) note.pushType = send.push_type;
    note.priority = send.priority;
    if (send.collapse_id) note.collapseId = send.collapse_id;
    note.rawPayload = Object.assign({ aps: send.aps }, send.extra);
    const result = await provider.send(note, send.device_token);
    if (result.sent.length === 1) {
      answers.push([200, null]);
    } else {
      const failed = result.failed[0];
      answers.push([failed.status ? Number(failed.status) : null,
                    failed.response ? failed.response.reason : String(failed.error)]);
    }
  }
  await provider.shutdown();
  return answers;
}

main().then(
  (answers) => { process.stdout.write(JSON.stringify(answers)); },
  (error) => { process.stderr.write(String(error && error.stack || error)); process.exit(1); },
);
"""


def _unavailable(reason: str) -> None:
    """Skip, saying why; on CI a missing Node toolchain is a failure, never a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node_apn() -> Path:
    """The @parse/node-apn package directory, installed into .cache/node-apn/ once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed to run @parse/node-apn")
    package = NODE_APN_DIR / "node_modules" / "@parse" / "node-apn"
    manifest = package / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == NODE_APN_VERSION:
        return package
    NODE_APN_DIR.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [
                str(npm),
                "install",
                "--prefix",
                str(NODE_APN_DIR),
                "--no-audit",
                "--no-fund",
                f"@parse/node-apn@{NODE_APN_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=NPM_INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"npm install @parse/node-apn took over {NPM_INSTALL_TIMEOUT:.0f} s")
    except subprocess.CalledProcessError as exc:
        tail = exc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        _unavailable(f"npm install @parse/node-apn failed: {' / '.join(tail)}")
    return package


async def _run_node_apn(
    node_apn: Path,
    tmp_path: Path,
    sim: Simulator,
    port: int,
    sends: list[dict[str, Any]],
    *,
    production: bool = False,
) -> list[tuple[Any, ...]]:
    """Send `sends` with @parse/node-apn to `port` (token auth) and return its answers."""
    script = tmp_path / "send.js"
    script.write_text(NODE_SCRIPT)
    assert sim.certs is not None
    scenario = {
        "key": str(sim.key_path),
        "keyId": sim.options.config.key_id,
        "teamId": sim.options.config.team_id,
        "port": port,
        "ca": str(sim.certs.ca),
        "production": production,
        "sends": sends,
    }
    env = {**os.environ, "NODE_APN": str(node_apn), "SCENARIO": json.dumps(scenario)}
    node = shutil.which("node")
    assert node is not None
    run = await trio.run_process(
        [node, str(script)], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return [tuple(a) for a in json.loads(run.stdout)]


async def test_node_apn_sends_every_push_type(tmp_path: Path, node_apn: Path) -> None:
    sim, tokens = build_simulator(tmp_path)
    sends = [
        {
            "device_token": tokens[s.token],
            "topic": s.topic,
            "push_type": s.push_type,
            "priority": s.priority,
            "collapse_id": s.collapse_id,
            "aps": s.aps,
            "extra": s.extra,
        }
        for s in SCENARIO
    ]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(sim.run)
            answers = await _run_node_apn(node_apn, tmp_path, sim, endpoints.apns_port, sends)
            assert answers == [(s.status, s.reason) for s in SCENARIO]
            check_device(sim, tmp_path / "apns")
            await sim.stop()


async def test_node_apn_meets_both_environments(tmp_path: Path, node_apn: Path) -> None:
    """A token answers only on the environment that issued it (apns.md §1): 400 BadDeviceToken
    on the other one, for Live Activity and alert pushes alike."""
    async with two_environments(tmp_path, seed=23) as (sim, ends):
        devices = {d["name"]: d for d in sim.apns.registry.snapshot(time.time())}
        bundle = sim.options.config.bundle_id

        def sends(device: str) -> list[dict[str, Any]]:
            start = start_aps(ts=int(time.time()))
            alert = {"alert": {"title": "Hello", "body": device}}
            return [
                {"device_token": devices[device]["push_to_start_token"],
                 "topic": bundle + ".push-type.liveactivity", "push_type": "liveactivity",
                 "priority": 10, "aps": start, "extra": {}},
                {"device_token": devices[device]["tokens"]["device"], "topic": bundle,
                 "push_type": "alert", "priority": 10, "aps": alert, "extra": {}},
            ]  # fmt: skip

        with trio.fail_after(60):
            for port, production, home in (
                (ends.apns_port, False, "iphone-1"),
                (ends.other_apns_port, True, "prod-phone"),
            ):
                assert port is not None
                away = "prod-phone" if home == "iphone-1" else "iphone-1"
                answers = await _run_node_apn(
                    node_apn, tmp_path, sim, port, sends(home) + sends(away), production=production
                )
                ok, wrong = (200, None), (400, "BadDeviceToken")
                assert answers == [ok, ok, wrong, wrong], (home, answers)
        shown = {d["name"]: d for d in sim.apns.registry.snapshot(time.time())}
        for name in ("iphone-1", "prod-phone"):
            assert len(shown[name]["activities"]) == 1 and len(shown[name]["notifications"]) == 1
