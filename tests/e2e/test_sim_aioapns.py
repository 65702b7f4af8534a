"""An unmodified third-party APNs client (aioapns, asyncio + h2) against the simulator over TLS.

aioapns has no host setting, so its connection pool is pointed at 127.0.0.1 the way one points
any client at a test server: its protocol class names the host and port. Nothing else changes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from simulator.apns import SimulatorConfig
from simulator.runner import Simulator, SimulatorOptions

aioapns = pytest.importorskip("aioapns")

pytestmark = pytest.mark.e2e


def _client(sim: Simulator, port: int, key_path: Path) -> Any:
    from aioapns.connection import APNsDevelopmentClientProtocol

    class LocalProtocol(APNsDevelopmentClientProtocol):
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    assert sim.certs is not None
    ctx = ssl.create_default_context(cafile=str(sim.certs.ca))
    client = aioapns.APNs(
        key=key_path.read_text(),
        key_id=sim.options.config.key_id,
        team_id=sim.options.config.team_id,
        topic=sim.options.config.bundle_id + ".push-type.liveactivity",
        use_sandbox=True,
        ssl_context=ctx,
        max_connection_attempts=1,
    )
    client.pool.protocol_class = LocalProtocol
    return client


def _send_three(
    sim: Simulator, port: int, token: str, clock_offset: list[float]
) -> list[tuple[str, str | None]]:
    """Runs in a worker thread with its own asyncio loop."""
    from aioapns import NotificationRequest, PushType

    aps = {
        "timestamp": int(time.time()),
        "event": "start",
        "content-state": {"title": "Deploy"},
        "attributes-type": "LockstepAttributes",
        "attributes": {"activity_id": "a1"},
        "alert": {"title": "Deploy", "body": "started"},
    }

    async def main() -> list[tuple[str, str | None]]:
        client = _client(sim, port, sim.key_path)
        out = []
        for device_token in (token, "ab" * 32):
            result = await client.send_notification(
                NotificationRequest(
                    device_token=device_token,
                    message={"aps": aps},
                    push_type=PushType.LIVEACTIVITY,
                    priority=10,
                )
            )
            out.append((result.status, result.description))
        # The same client, one hour and a bit later by the simulator's clock: its cached JWT
        # (aioapns keeps one for 30 min of *its* clock) is now stale as APNs sees it.
        clock_offset[0] = 3700.0
        result = await client.send_notification(
            NotificationRequest(
                device_token=token,
                message={"aps": aps},
                push_type=PushType.LIVEACTIVITY,
                priority=10,
            )
        )
        out.append((result.status, result.description))
        return out

    return asyncio.run(main())


async def test_aioapns_push_bad_token_and_expired_jwt(tmp_path: Path) -> None:
    options = SimulatorOptions(
        port=0,
        control_port=None,
        devices=1,
        state_dir=tmp_path / "state",
        apns_dir=tmp_path / "apns",
        config=SimulatorConfig(seed=3),
    )
    clock_offset = [0.0]
    sim = Simulator.build(options, wall_clock=lambda: time.time() + clock_offset[0])
    token = sim.apns.registry.snapshot(time.time())[0]["push_to_start_token"]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(sim.run)
            results = await trio.to_thread.run_sync(
                _send_three, sim, endpoints.apns_port, token, clock_offset
            )
            assert results[0] == ("200", None)
            assert results[1] == ("400", "BadDeviceToken")
            assert results[2] == ("403", "ExpiredProviderToken")
            files = list((tmp_path / "apns").rglob("*.apns"))
            assert len(files) == 1
            await sim.stop()
