"""An unmodified third-party APNs client (aioapns, asyncio + h2) against the simulator over TLS.

aioapns has no host setting, so its connection pool is pointed at 127.0.0.1 the way one points
any client at a test server: its protocol class names the host and port (`tlskit.aioapns_client`).
Nothing else changes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import trio

from simulator.runner import Simulator
from tests.helpers.simkit import start_aps
from tests.helpers.tlskit import aioapns_client, one_device_options

aioapns = pytest.importorskip("aioapns")

pytestmark = pytest.mark.e2e


def _send_three(
    sim: Simulator, port: int, token: str, clock_offset: list[float]
) -> list[tuple[str, str | None]]:
    """Runs in a worker thread with its own asyncio loop."""
    from aioapns import NotificationRequest, PushType

    aps = start_aps(ts=int(time.time()))

    async def main() -> list[tuple[str, str | None]]:
        topic = sim.options.config.bundle_id + ".push-type.liveactivity"
        client = aioapns_client(sim, port, topic=topic)
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
    options = one_device_options(tmp_path, seed=3)
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
