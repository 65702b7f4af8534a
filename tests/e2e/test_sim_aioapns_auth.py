"""The unmodified aioapns client against both simulator environments, with tokens and certificates.

As in `test_sim_aioapns.py`, aioapns is pointed at 127.0.0.1 through its protocol class (it has no
host setting); its sandbox and production protocol classes each get the port of the simulator's
listener for that environment. Certificate auth uses aioapns's own `client_cert=` (a PEM holding
the certificate and its key), with the files `lockstep simulator` writes into its state folder.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from simulator.apns import SimulatorConfig
from simulator.runner import Endpoints, Simulator
from simulator.validation import TokenKind
from tests.helpers.simkit import start_aps
from tests.helpers.tlskit import aioapns_client, two_environments

aioapns = pytest.importorskip("aioapns")

pytestmark = pytest.mark.e2e

BUNDLE = SimulatorConfig().bundle_id
Result = tuple[str, str | None]


def running(
    tmp_path: Path, **config: Any
) -> AbstractAsyncContextManager[tuple[Simulator, Endpoints]]:
    """A simulator serving sandbox and production, a device for each environment."""
    return two_environments(tmp_path, seed=11, **config)


def _client(sim: Simulator, ends: Endpoints, environment: str, cert: Path | None = None) -> Any:
    """An aioapns client for the simulator's `environment` listener: token auth, or `cert`."""
    port = ends.apns_port if environment == "sandbox" else ends.other_apns_port
    assert port is not None
    topic = BUNDLE if cert is not None else BUNDLE + ".push-type.liveactivity"
    return aioapns_client(sim, port, topic=topic, environment=environment, cert=cert)


async def _send(client: Any, token: str, push_type: str) -> Result:
    from aioapns import NotificationRequest, PushType

    if push_type == "liveactivity":
        request = NotificationRequest(
            device_token=token,
            message={"aps": start_aps(ts=int(time.time()))},
            push_type=PushType.LIVEACTIVITY,
            priority=10,
        )
    else:
        request = NotificationRequest(
            device_token=token,
            message={"aps": {"alert": {"title": "Hello", "body": "from aioapns"}}},
            push_type=PushType.ALERT,
        )
    result = await client.send_notification(request)
    return result.status, result.description


Step = tuple[str, Path | None, str, str]
"""(environment, client certificate or None for token auth, device token, push type)."""


def _run(sim: Simulator, ends: Endpoints, plan: list[Step]) -> list[Result]:
    """Send each step in order, from a worker thread with its own asyncio loop (aioapns builds
    its pools on the running loop, so the clients are made in there, one per credential)."""

    async def main() -> list[Result]:
        clients: dict[tuple[str, Path | None], Any] = {}
        out = []
        for environment, cert, token, kind in plan:
            key = (environment, cert)
            if key not in clients:
                clients[key] = _client(sim, ends, environment, cert)
            out.append(await _send(clients[key], token, kind))
        return out

    return asyncio.run(main())


def _tokens(sim: Simulator, device: str) -> tuple[str, str]:
    d = sim.apns.registry.devices[device]
    return d.push_to_start_token, d.app_tokens[TokenKind.DEVICE]


async def test_token_auth_on_both_environments(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running(tmp_path) as (sim, ends):
            sandbox_pts, _ = _tokens(sim, "iphone-1")
            production_pts, _ = _tokens(sim, "prod-phone")

            plan: list[Step] = [
                ("sandbox", None, sandbox_pts, "liveactivity"),
                ("production", None, production_pts, "liveactivity"),
                ("production", None, sandbox_pts, "liveactivity"),
                ("sandbox", None, production_pts, "liveactivity"),
            ]
            results = await trio.to_thread.run_sync(_run, sim, ends, plan)
            assert results == [
                ("200", None),
                ("200", None),
                ("400", "BadDeviceToken"),
                ("400", "BadDeviceToken"),
            ]


async def test_certificate_auth_and_its_403_reasons(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running(tmp_path) as (sim, ends):
            certs = sim.client_certificates
            pts, app = _tokens(sim, "iphone-1")
            _, prod_app = _tokens(sim, "prod-phone")

            plan: list[Step] = [
                ("sandbox", certs["sandbox"], app, "alert"),
                ("production", certs["production"], prod_app, "alert"),
                ("sandbox", certs["production"], app, "alert"),
                ("sandbox", certs["sandbox"], pts, "liveactivity"),
            ]
            results = await trio.to_thread.run_sync(_run, sim, ends, plan)
            assert results == [
                ("200", None),
                ("200", None),
                ("403", "BadCertificateEnvironment"),
                ("403", "MissingProviderToken"),
            ]
            devices = [p.device for p in sim.apns.log if p.status == 200]
            assert devices == ["iphone-1", "prod-phone"]


async def test_a_disabled_signing_key_is_forbidden(tmp_path: Path) -> None:
    key_id = SimulatorConfig().key_id
    with trio.fail_after(60):
        async with running(tmp_path, disabled_key_ids=frozenset({key_id})) as (sim, ends):
            pts, _ = _tokens(sim, "iphone-1")

            plan: list[Step] = [("sandbox", None, pts, "liveactivity")]
            assert await trio.to_thread.run_sync(_run, sim, ends, plan) == [("403", "Forbidden")]
