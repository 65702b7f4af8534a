"""Builders shared by the simulator tests: a fake APNs with known keys, devices and clock."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import trio

from engine.apns.auth import ProviderToken, SigningKey
from simulator.apns import FakeApns, SimulatorConfig
from simulator.auth import KeyRing
from simulator.devices import DeviceRegistry
from simulator.faults import FaultPlan
from simulator.server import ApnsServer
from tests.helpers.h2client import H2TestClient

EPOCH = 1_800_000_000.0
BUNDLE = "com.example.lockstep"
TOPIC = BUNDLE + ".push-type.liveactivity"


@dataclass
class Kit:
    """A fake APNs with one signing key, simulated devices and a controllable wall clock."""

    key: SigningKey
    apns: FakeApns
    server: ApnsServer
    offset: float = 0.0

    def now(self) -> float:
        """Wall time: a fixed epoch plus trio's (mock) clock plus a manual offset."""
        return EPOCH + trio.current_time() + self.offset

    def jwt(self, issued_at: float | None = None, key: SigningKey | None = None) -> str:
        """A provider token issued `issued_at` (default: now)."""
        at = self.now() if issued_at is None else issued_at
        return ProviderToken.issue(key or self.key, int(at)).value

    def push_to_start_token(self, device: str = "iphone-1") -> str:
        """The push-to-start token of a simulated device."""
        return str(self.device(device)["push_to_start_token"])

    def device(self, name: str = "iphone-1") -> dict[str, Any]:
        """A simulated device's snapshot (it must exist)."""
        snapshot = self.apns.registry.device_snapshot(name, self.now())
        assert snapshot is not None, f"no simulated device {name!r}"
        return snapshot


def make_kit(*, devices: int = 2, plan: FaultPlan | None = None, **config: object) -> Kit:
    """A `Kit` whose wall clock follows trio's clock (so MockClock drives JWT and activity ages)."""
    key = SigningKey.generate("SIMKEY0001", "LOCKSTEP01")
    cfg = SimulatorConfig(**config)  # type: ignore[arg-type]
    registry = DeviceRegistry(
        bundle_id=cfg.bundle_id, rng=random.Random(7), max_active=cfg.max_active_activities
    )
    kit = Kit(key=key, apns=None, server=None)  # type: ignore[arg-type]
    apns = FakeApns(
        cfg,
        keyring=KeyRing.from_signing_keys(key),
        registry=registry,
        plan=plan,
        wall_clock=lambda: kit.now(),
    )
    for n in range(1, devices + 1):
        registry.add_device(f"iphone-{n}", now=EPOCH)
    kit.apns, kit.server = apns, ApnsServer(apns)
    return kit


def start_aps(title: str = "Deploy", ts: int | None = None) -> dict[str, Any]:
    """The `aps` dictionary of a push-to-start payload."""
    return {
        "timestamp": ts or int(EPOCH),
        "event": "start",
        "content-state": {"title": title},
        "attributes-type": "LockstepAttributes",
        "attributes": {"activity_id": "a1"},
        "alert": {"title": title, "body": "started"},
    }


def start_body(title: str = "Deploy", ts: int | None = None) -> bytes:
    """A push-to-start payload."""
    import json

    return json.dumps({"aps": start_aps(title, ts)}).encode()


def update_body(state: dict[str, object], ts: int, event: str = "update") -> bytes:
    """An update (or end) payload."""
    import json

    return json.dumps({"aps": {"timestamp": ts, "event": event, "content-state": state}}).encode()


def memory_connector(kit: Kit, nursery: trio.Nursery) -> Any:
    """An engine `Connector` that wires each new connection to the kit's server in memory."""
    import trio.testing

    async def connect() -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(kit.server.handle, server)
        return client

    return connect


async def open_h2_client(kit: Kit, nursery: trio.Nursery) -> H2TestClient:
    """An HTTP/2 test client wired to the kit's server in memory, past the server's preface."""
    client = H2TestClient(await memory_connector(kit, nursery)())
    await client.start()
    await client.pump()  # server preface
    return client


def engine_config(kit: Kit, **delivery: Any) -> Any:
    """An `EngineConfig` for the kit's fake APNs (the key is passed to `open_engine` directly)."""
    from pathlib import Path

    from engine.config import ApnsEndpoint, Credentials, DeliveryConfig, EngineConfig

    creds = Credentials(
        team_id=kit.key.team_id, key_id=kit.key.key_id, key_path=Path("unused.p8"), bundle_id=BUNDLE
    )
    return EngineConfig(
        credentials=creds,
        endpoint=ApnsEndpoint(host="127.0.0.1", port=2197),
        delivery=DeliveryConfig(**delivery),
    )
