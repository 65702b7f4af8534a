"""A real simulator on 127.0.0.1 over TLS for the e2e tests, and clients pointed at it.

`one_device_options` describes a simulator with one sandbox device; `two_environments` runs a
simulator with a sandbox listener and a production one, a device for each. `aioapns_client`
builds an unmodified aioapns client for one of their listeners: aioapns has no host setting, so
its connection pool is pointed at 127.0.0.1 the way one points any client at a test server,
through its protocol class (the sandbox or production one) naming host and port.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from simulator.apns import SimulatorConfig
from simulator.profile import DeviceProfile
from simulator.runner import Endpoints, Simulator, SimulatorOptions


def one_device_options(tmp_path: Path, *, seed: int) -> SimulatorOptions:
    """A simulator on a free port with one device ("iphone-1") and no control API, writing the
    `.apns` files of the pushes it accepts under `tmp_path / "apns"`."""
    return SimulatorOptions(
        port=0,
        control_port=None,
        devices=1,
        state_dir=tmp_path / "state",
        apns_dir=tmp_path / "apns",
        config=SimulatorConfig(seed=seed),
    )


@asynccontextmanager
async def two_environments(
    tmp_path: Path, *, seed: int, control_port: int | None = None, **config: Any
) -> AsyncIterator[tuple[Simulator, Endpoints]]:
    """A simulator serving sandbox and production: "iphone-1" on sandbox, "prod-phone" on
    production; `control_port` 0 adds the control API on a free port, `config` refines the
    `SimulatorConfig`."""
    options = SimulatorOptions(
        port=0,
        control_port=control_port,
        devices=1,
        state_dir=tmp_path / "state",
        other_environment_port=0,
        config=SimulatorConfig(seed=seed, **config),
    )
    sim = Simulator.build(options)
    sim.apns.registry.add_device(
        "prod-phone", now=time.time(), profile=DeviceProfile(environment="production")
    )
    async with trio.open_nursery() as nursery:
        ends = await nursery.start(sim.run)
        yield sim, ends
        await sim.stop()


def aioapns_client(
    sim: Simulator,
    port: int,
    *,
    topic: str,
    environment: str = "sandbox",
    cert: Path | None = None,
) -> Any:
    """An aioapns client for the simulator's `environment` listener on `port`, trusting the
    simulator's CA: token auth with the simulator's key, or the client certificate PEM `cert`.

    Call it inside the asyncio loop that will use the client (aioapns builds its pools there).
    """
    import aioapns
    from aioapns.connection import APNsDevelopmentClientProtocol, APNsProductionClientProtocol

    sandbox = environment == "sandbox"
    base = APNsDevelopmentClientProtocol if sandbox else APNsProductionClientProtocol

    class LocalProtocol(base):  # type: ignore[misc, valid-type]
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    assert sim.certs is not None
    ctx = ssl.create_default_context(cafile=str(sim.certs.ca))
    if cert is not None:
        auth: dict[str, Any] = {"client_cert": str(cert)}
    else:
        auth = {
            "key": sim.key_path.read_text(),
            "key_id": sim.options.config.key_id,
            "team_id": sim.options.config.team_id,
        }
    client = aioapns.APNs(
        **auth, topic=topic, use_sandbox=sandbox, ssl_context=ctx, max_connection_attempts=1
    )
    client.pool.protocol_class = LocalProtocol
    return client
