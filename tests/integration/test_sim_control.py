"""The simulator's control API over real HTTP on 127.0.0.1, and the CLI's option parsing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import trio

from engine.apns.auth import ProviderToken
from simulator.cli import options_from_args, register
from simulator.runner import Simulator, SimulatorOptions
from tests.helpers.h2client import H2TestClient
from tests.helpers.httpget import request_json
from tests.helpers.simkit import start_body


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


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["simulator", *argv])


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
