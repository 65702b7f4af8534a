"""The unmodified aioapns client against both simulator environments, with tokens and certificates.

As in `test_sim_aioapns.py`, aioapns is pointed at 127.0.0.1 through its protocol class (it has no
host setting); its sandbox and production protocol classes each get the port of the simulator's
listener for that environment. Certificate auth uses aioapns's own `client_cert=` (a PEM holding
the certificate and its key), with the files `lockstep simulator` writes into its state folder.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from simulator.apns import SimulatorConfig
from simulator.profile import DeviceProfile
from simulator.runner import Endpoints, Simulator, SimulatorOptions
from simulator.validation import TokenKind

aioapns = pytest.importorskip("aioapns")

pytestmark = pytest.mark.e2e

BUNDLE = SimulatorConfig().bundle_id
Result = tuple[str, str | None]


@asynccontextmanager
async def running(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[Simulator, Endpoints]]:
    """A simulator serving sandbox and production, a device for each environment."""
    options = SimulatorOptions(
        port=0,
        control_port=None,
        devices=1,
        state_dir=tmp_path / "state",
        other_environment_port=0,
        config=SimulatorConfig(seed=11, **config),
    )
    sim = Simulator.build(options)
    sim.apns.registry.add_device(
        "prod-phone", now=time.time(), profile=DeviceProfile(environment="production")
    )
    async with trio.open_nursery() as nursery:
        ends = await nursery.start(sim.run)
        yield sim, ends
        await sim.stop()


def _client(sim: Simulator, ends: Endpoints, environment: str, cert: Path | None = None) -> Any:
    """An aioapns client for the simulator's `environment` listener: token auth, or `cert`."""
    from aioapns.connection import APNsDevelopmentClientProtocol, APNsProductionClientProtocol

    sandbox = environment == "sandbox"
    port = ends.apns_port if sandbox else ends.other_apns_port
    base = APNsDevelopmentClientProtocol if sandbox else APNsProductionClientProtocol

    class LocalProtocol(base):  # type: ignore[misc, valid-type]
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    assert sim.certs is not None
    ctx = ssl.create_default_context(cafile=str(sim.certs.ca))
    if cert is not None:
        client = aioapns.APNs(
            client_cert=str(cert),
            topic=BUNDLE,
            use_sandbox=sandbox,
            ssl_context=ctx,
            max_connection_attempts=1,
        )
    else:
        client = aioapns.APNs(
            key=sim.key_path.read_text(),
            key_id=sim.options.config.key_id,
            team_id=sim.options.config.team_id,
            topic=BUNDLE + ".push-type.liveactivity",
            use_sandbox=sandbox,
            ssl_context=ctx,
            max_connection_attempts=1,
        )
    client.pool.protocol_class = LocalProtocol
    return client


def _start_aps() -> dict[str, Any]:
    return {
        "timestamp": int(time.time()),
        "event": "start",
        "content-state": {"title": "Deploy"},
        "attributes-type": "LockstepAttributes",
        "attributes": {"activity_id": "a1"},
        "alert": {"title": "Deploy", "body": "started"},
    }


async def _send(client: Any, token: str, push_type: str) -> Result:
    from aioapns import NotificationRequest, PushType

    if push_type == "liveactivity":
        request = NotificationRequest(
            device_token=token,
            message={"aps": _start_aps()},
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
