"""The simulator's control API over real HTTP on 127.0.0.1, and the CLI's option parsing."""

from __future__ import annotations

import argparse
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.apns.auth import ProviderToken
from simulator.cli import describe_profile, options_from_args, register
from simulator.profile import AllowPrompt, DeviceProfile
from simulator.runner import Simulator, SimulatorOptions
from tests.helpers.h2client import H2TestClient
from tests.helpers.httpget import request_json
from tests.helpers.simkit import start_body, update_body


async def test_control_api_lists_devices_pushes_and_creates_devices(tmp_path: Path) -> None:
    options = SimulatorOptions(
        port=0, control_port=0, devices=2, state_dir=tmp_path, tls=False, apns_dir=tmp_path / "apns"
    )
    sim = Simulator.build(options)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ends = await nursery.start(sim.run)
            base = f"http://127.0.0.1:{ends.control_port}"
            assert await request_json("GET", base + "/healthz") == (200, {"ok": True})
            status, info = await request_json("GET", base + "/info")
            assert status == 200 and info["topic"] == "com.example.lockstep.push-type.liveactivity"
            assert info["apns_url"] == f"http://127.0.0.1:{ends.apns_port}"
            assert info["apns_files"] == {"written": 0, "skipped_oversize": 0, "skipped_type": 0}
            status, body = await request_json("GET", base + "/devices")
            names = [d["name"] for d in body["devices"]]
            assert names == ["iphone-1", "iphone-2"]
            token = body["devices"][0]["push_to_start_token"]

            stream = await trio.open_tcp_stream("127.0.0.1", ends.apns_port)
            client = H2TestClient(stream)
            await client.start()
            jwt = ProviderToken.issue(sim.key, int(time.time())).value
            hs = client.headers(token, jwt, info["topic"])
            assert (await client.request(hs, start_body(ts=int(time.time())))).status == 200

            _, info = await request_json("GET", base + "/info")
            assert info["apns_files"] == {"written": 1, "skipped_oversize": 0, "skipped_type": 0}
            status, body = await request_json("GET", base + "/devices/iphone-1")
            assert status == 200 and len(body["activities"]) == 1
            assert body["activities"][0]["state"] == "active"
            status, body = await request_json("GET", base + "/pushes?limit=5")
            assert status == 200 and body["pushes"][-1]["status"] == 200
            assert body["pushes"][-1]["device"] == "iphone-1"

            created = await request_json(
                "POST", base + "/devices", {"name": "ipad", "push_to_start_token": "abcd1234"}
            )
            assert created[0] == 201 and created[1]["push_to_start_token"] == "abcd1234"
            dup = await request_json("POST", base + "/devices", {"name": "ipad"})
            assert dup[0] == 409 and dup[1]["error"] == "conflict"
            bad = await request_json("POST", base + "/devices", {"nam": "x"})
            assert bad[0] == 400 and "nam" in bad[1]["message"]
            assert (await request_json("GET", base + "/devices/nope"))[0] == 404
            assert (await request_json("GET", base + "/pushes?limit=zero"))[0] == 400
            assert (await request_json("DELETE", base + "/devices"))[0] == 405
            await stream.aclose()
            await sim.stop()


async def test_device_actions_allow_rotate_offline_dismiss_over_http(tmp_path: Path) -> None:
    sim = Simulator.build(
        SimulatorOptions(port=0, control_port=0, devices=0, state_dir=tmp_path, tls=False)
    )
    reports: list[Any] = []
    sim.apns.token_sinks.append(reports.append)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ends = await nursery.start(sim.run)
            base = f"http://127.0.0.1:{ends.control_port}"
            profile = {"allow_prompt": "manual", "low_priority_delay": 0}
            status, device = await request_json(
                "POST", base + "/devices", {"name": "ipad", "profile": profile}
            )
            assert status == 201 and device["profile"]["allow_prompt"] == "manual"
            assert device["online"] and device["budget"]["updates_left"] == 30
            bad = await request_json(
                "POST", base + "/devices", {"name": "x", "profile": {"allow_prompt": "maybe"}}
            )
            assert bad[0] == 400 and "allow_prompt" in bad[1]["message"]

            stream = await trio.open_tcp_stream("127.0.0.1", ends.apns_port)
            client = H2TestClient(stream)
            await client.start()
            topic = sim.info()["topic"]

            jwt = ProviderToken.issue(sim.key, int(time.time())).value

            async def push(token: str, body: bytes) -> Any:
                return await client.request(client.headers(token, jwt, topic), body)

            now = int(time.time())
            assert (await push(device["push_to_start_token"], start_body(ts=now))).status == 200
            actions = base + "/devices/ipad/actions"
            _, snap = await request_json("GET", base + "/devices/ipad")
            [act] = snap["activities"]
            assert act["awaiting_allow"] and act["token"] == "" and reports == []

            status, done = await request_json(
                "POST", actions, {"action": "allow", "activity_id": act["activity_id"]}
            )
            assert (
                status == 200
                and done["token"]
                and [r.activity_token for r in reports] == [done["token"]]
            )
            again = await request_json(
                "POST", actions, {"action": "allow", "activity_id": act["activity_id"]}
            )
            assert again[0] == 409 and again[1]["error"] == "conflict"
            status, rotated = await request_json(
                "POST", actions, {"action": "rotate-token", "activity_id": act["activity_id"]}
            )
            token = rotated["token"]
            assert status == 200 and token != done["token"] and reports[-1].activity_token == token
            old = await push(done["token"], update_body({"v": 0}, now + 1))
            assert (old.status, old.reason) == (410, "Unregistered")

            assert (await request_json("POST", actions, {"action": "offline"}))[0] == 200
            assert (await push(token, update_body({"v": 1}, now + 2))).status == 200
            _, snap = await request_json("GET", base + "/devices/ipad")
            assert not snap["online"] and len(snap["stored"]) == 1
            assert snap["activities"][0]["content_state"] == {"title": "Deploy"}
            status, back = await request_json("POST", actions, {"action": "online"})
            assert status == 200 and [d["outcome"] for d in back["delivered"]] == ["applied"]
            assert back["device"]["activities"][0]["content_state"] == {"v": 1}

            status, gone = await request_json(
                "POST", actions, {"action": "dismiss", "activity_id": act["activity_id"]}
            )
            assert status == 200 and gone["device"]["activities"][0]["state"] == "dismissed"
            late = await push(token, update_body({"v": 2}, now + 3))
            assert (late.status, late.reason) == (410, "Unregistered")
            assert isinstance(late.json()["timestamp"], int)

            app_token = snap["tokens"]["device"]
            status, expired = await request_json(
                "POST", actions, {"action": "expire-token", "token": app_token.upper()}
            )
            assert status == 200 and expired["token"] == app_token
            alert = client.headers(app_token, jwt, sim.info()["bundle_id"])
            alert = [(k, "alert" if k == "apns-push-type" else v) for k, v in alert]
            gone = await client.request(alert, b'{"aps":{"alert":"hi"}}')
            assert (gone.status, gone.reason) == (410, "ExpiredToken")

            for body, code in [
                ({"action": "expire-token"}, 400),  # needs a token
                ({"action": "expire-token", "token": "ab" * 32}, 404),  # not this phone's
                ({"action": "dismiss"}, 400),  # needs an activity_id
                ({"action": "explode"}, 400),
                ({"action": "dismiss", "activity_id": "nope"}, 404),
                ({"action": "deny", "activity_id": act["activity_id"]}, 409),
            ]:
                answer = await request_json("POST", actions, body)
                assert answer[0] == code, (body, answer)
                assert set(answer[1]) == {"error", "message"}
            missing = await request_json(
                "POST", base + "/devices/nobody/actions", {"action": "online"}
            )
            assert missing[0] == 404 and "nobody" in missing[1]["message"]
            assert (await request_json("GET", actions))[0] == 405
            await stream.aclose()
            await sim.stop()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["simulator", *argv])


def test_cli_profile_flags() -> None:
    options = options_from_args(_parse())
    assert options.profile == DeviceProfile() and options.config.token_rate_limit == 100
    assert "30 priority-10 updates/h, 10 push-to-starts/h" in describe_profile(options.profile)
    options = options_from_args(
        _parse(
            "--profile",
            '{"update_budget": 7, "low_priority_delay": 2}',
            "--low-power",
            "--allow-prompt",
            "manual",
            "--token-rate-limit",
            "0",
        )
    )
    assert options.profile == DeviceProfile(
        update_budget=7, low_priority_delay=2, low_power=True, allow_prompt=AllowPrompt.MANUAL
    )
    assert options.config.token_rate_limit is None
    ideal = options_from_args(_parse("--no-budgets", "--frequent-updates")).profile
    assert not ideal.budgets and ideal.frequent_updates
    assert describe_profile(ideal).startswith("no budgets")
    with pytest.raises(ValueError, match="update_budget"):
        options_from_args(_parse("--profile", '{"update_budget": 0}'))
    with pytest.raises(ValueError, match="token-rate-limit"):
        options_from_args(_parse("--token-rate-limit", "-1"))


def test_cli_options_and_errors(tmp_path: Path) -> None:
    args = _parse(
        "--port",
        "2197",
        "--devices",
        "3",
        "--seed",
        "7",
        "--apns-dir",
        str(tmp_path),
        "--faults",
        "latency=fixed:5,drop=0.01",
        "--max-streams",
        "500",
        "--drop-to-one",
    )
    options = options_from_args(args)
    assert options.devices == 3 and options.apns_dir == tmp_path
    assert options.config.warm_max_streams == 500 and options.config.drop_to_one_after_rejection
    assert (
        options.plan is not None
        and options.plan.seed == 7
        and options.plan.drop_probability == 0.01
    )
    with pytest.raises(ValueError, match="devices"):
        options_from_args(_parse("--devices", "-1"))
    with pytest.raises(ValueError, match="drop"):
        options_from_args(_parse("--faults", "drop=2"))


async def test_the_standalone_simulator_serves_the_lock_screens_page(tmp_path: Path) -> None:
    options = SimulatorOptions(port=0, control_port=0, devices=1, state_dir=tmp_path, tls=False)
    sim = Simulator.build(options)

    def fetch(url: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.headers["content-type"], answer.read()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ends = await nursery.start(sim.run)
            base = f"http://127.0.0.1:{ends.control_port}"
            kind, html = await trio.to_thread.run_sync(fetch, base + "/")
            assert kind.startswith("text/html") and b'src="ui/app.js"' in html
            kind, script = await trio.to_thread.run_sync(fetch, base + "/ui/app.js")
            assert kind.startswith("text/javascript") and b"api/dashboard" in script
            status, body = await request_json("GET", base + "/api/dashboard")
            assert status == 200 and body["source"] == "simulator"
            assert [d["name"] for d in body["devices"]] == ["iphone-1"]
            nursery.cancel_scope.cancel()
