"""Simulate mode: a fake APNs with simulated iPhones inside another trio program.

`open_embedded(...)` is the `lockstep.simulate` entry point (name `simulator`). It builds a
`Simulator` on 127.0.0.1 (APNs over TLS on a free port, control API on `control_port`), runs it
in the caller's trio context for the duration of the `async with`, and drains it on exit:

    async with open_embedded(state_dir=Path("lockstep-sim")) as sim:
        # point an engine at sim.host / sim.port, trusting sim.ca_file, signing with sim.key_path
        await sim.attach("http://127.0.0.1:8787/api", device_key)

`attach` makes the simulated iPhones behave as installed apps would: each one registers its
push-to-start token, its app token (for notifications and the badge) and its widget token (iOS 26
`widgets` pushes, so the server can tell its widgets to reload) with the server's device API
(`PUT {api_base}/devices/{name}`, a `DeviceRegistration` body,
`simulator.reporting.registration_body`), and every update token a push-to-start issues is
reported to `POST {api_base}/activity-tokens` (apns.md §6, "Tokens"), and each reload of a phone's
widgets (a `widgets` push) reads the current metric values from `GET
{api_base}/devices/{name}/metrics`, as the app's widget extension would (simulator/widgets.py).
The server learns the devices only through that API; nothing here imports the engine's service.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from simulator.apns import SimulatorConfig
from simulator.profile import parse_profile
from simulator.reporting import (
    REQUEST_TIMEOUT,
    TRANSIENT,
    check_http_url,
    registration_body,
    send_json,
)
from simulator.runner import Simulator, SimulatorOptions
from simulator.webview import page_state

__all__ = ["AttachError", "EmbeddedSimulator", "Registrar", "open_embedded"]

log = logging.getLogger("lockstep.simulator.embed")

HOST = "127.0.0.1"
_DRAIN_SECONDS = 5.0
_MAX_DELAY = 2.0


class AttachError(Exception):
    """The server's device API refused, or never answered, a device registration."""


class Registrar:
    """Registers devices created after `attach` (the control API's `POST /devices`) with the
    server, in the background, as the app on a new phone would.

    Created devices wait in a bounded queue (dropped, counted and logged when it is full); until
    `attach` names the server they wait there, so a device created before it is registered by
    `attach` itself and again here, which the device API takes as an update.
    """

    def __init__(self, capacity: int = 100) -> None:
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](capacity)
        self._target: tuple[str, str] | None = None  # (api base, device key)
        self._ready = trio.Event()
        self.registered = 0
        self.failed = 0
        self.dropped = 0

    def __repr__(self) -> str:  # never the device key
        return f"Registrar(registered={self.registered}, failed={self.failed})"

    def submit(self, device: dict[str, Any]) -> None:
        """Queue a new device's snapshot (a `FakeApns.device_sinks` entry)."""
        try:
            self._send.send_nowait(device)
        except trio.WouldBlock:
            self.dropped += 1
            log.warning("device %s not registered with the server: queue full", device["name"])

    def target(self, api_base: str, device_key: str) -> None:
        """Register devices with `api_base` from now on."""
        self._target = (api_base, device_key)
        self._ready.set()

    async def run(self) -> None:
        """Register queued devices until cancelled (waiting for `target` first)."""
        await self._ready.wait()
        async for device in self._receive:
            assert self._target is not None
            base, key = self._target
            url = f"{base}/devices/{quote(str(device['name']), safe='')}"
            try:
                await _put_with_retries(
                    url, registration_body(device), key, attempts=3, backoff=0.2
                )
            except AttachError as exc:
                self.failed += 1
                log.warning("%s", exc)
            else:
                self.registered += 1


@dataclass(frozen=True, slots=True)
class EmbeddedSimulator:
    """A running embedded simulator: where it listens and how to sign pushes for it."""

    host: str
    port: int  # APNs, TLS
    ca_file: Path  # trust this CA to reach `host:port`
    key_path: Path  # the `.p8` signing key the fake APNs accepts
    key_id: str
    team_id: str
    bundle_id: str
    control_url: str | None  # None when the control API is off
    simulator: Simulator = field(repr=False)
    registrar: Registrar = field(default_factory=Registrar, repr=False)

    def page_state(self) -> dict[str, Any]:
        """The phones and the push log for the server's lock screens page (simulator/webview.py)."""
        apns = self.simulator.apns
        return page_state(apns, apns.wall_clock())

    async def attach(
        self,
        api_base: str,
        device_key: str,
        *,
        attempts: int = 8,
        backoff: float = 0.1,
    ) -> None:
        """Register every simulated device with `api_base`, then report tokens there.

        Each registration is retried (`attempts` tries, delays doubling from `backoff` seconds,
        at most 2 s) while the server is unreachable or answers 429/5xx, so attaching to a server
        that is still starting works. Raises `AttachError` naming the URL when a registration
        fails for good; the device key never appears in errors or logs.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        base = api_base.rstrip("/")
        check_http_url(base)
        now = self.simulator.apns.wall_clock()
        for device in self.simulator.apns.registry.snapshot(now):
            name = str(device["name"])
            body = registration_body(device)
            url = f"{base}/devices/{quote(name, safe='')}"
            await _put_with_retries(url, body, device_key, attempts=attempts, backoff=backoff)
        self.registrar.target(base, device_key)  # devices created from now on
        self.simulator.set_reporter(f"{base}/activity-tokens", bearer=device_key)
        self.simulator.set_widget_reader(base, bearer=device_key)


async def _put_with_retries(
    url: str, body: bytes, bearer: str, *, attempts: int, backoff: float
) -> None:
    """PUT `body` to `url` until a 2xx; give up at once on other 4xx answers."""
    delay = backoff
    problem = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                status = await send_json("PUT", url, body, bearer=bearer)
        except TRANSIENT as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if 200 <= status < 300:
                return
            problem = f"HTTP {status}"
            if 400 <= status < 500 and status != 429:
                # A refusal (bad device key, invalid registration): retrying will not help.
                raise AttachError(f"device registration PUT {url} was refused: {problem}")
        if attempt < attempts:
            await trio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
    raise AttachError(f"device registration PUT {url} failed after {attempts} attempts: {problem}")


@asynccontextmanager
async def open_embedded(
    *,
    state_dir: Path,
    devices: int = 3,
    control_port: int | None = 8790,
    seed: int = 0,
    record_pushes: Path | None = None,
    fresh: bool = False,
    profile: Mapping[str, Any] | None = None,
) -> AsyncIterator[EmbeddedSimulator]:
    """Run a simulator in the caller's trio context for the duration of the block.

    APNs listens with TLS on 127.0.0.1 on a free port; the CA, server certificate and signing
    key live in `state_dir` (created, and reused across runs). `control_port` is the control
    API's port (0 picks a free one, None turns it off). `seed` fixes the devices' tokens.
    `record_pushes` writes every accepted push to that file as JSON lines (`simulator.record`).
    The devices are kept in `state_dir` across runs (simulator/state.py); `fresh` starts with
    new phones instead. `profile` holds `DeviceProfile` fields for the devices it creates
    (ValueError naming a bad field).
    Leaving the block normally sends GOAWAY to every connection and waits (at most a few
    seconds) for them to drain; leaving it with an exception tears everything down at once.
    """
    if devices < 0:
        raise ValueError(f"devices must be >= 0, got {devices}")
    options = SimulatorOptions(
        host=HOST,
        port=0,
        control_port=control_port,
        devices=devices,
        state_dir=Path(state_dir),
        record_pushes=record_pushes,
        tls=True,
        drain_seconds=_DRAIN_SECONDS,
        config=SimulatorConfig(seed=seed),
        fresh=fresh,
        profile=parse_profile(dict(profile or {})),
    )
    simulator = Simulator.build(options)
    assert simulator.certs is not None  # tls=True always issues certificates
    try:
        async with trio.open_nursery() as nursery:
            ends = await nursery.start(simulator.run)
            config = options.config
            registrar = Registrar()
            simulator.apns.device_sinks.append(registrar.submit)
            nursery.start_soon(registrar.run)
            yield EmbeddedSimulator(
                host=HOST,
                port=ends.apns_port,
                ca_file=simulator.certs.ca.resolve(),
                key_path=simulator.key_path.resolve(),
                key_id=config.key_id,
                team_id=config.team_id,
                bundle_id=config.bundle_id,
                control_url=f"http://{HOST}:{ends.control_port}" if ends.control_port else None,
                simulator=simulator,
                registrar=registrar,
            )
            # Reached only on a normal exit: drain politely, bounded (stop() waits at most
            # drain_seconds for connections; the extra second covers the control API).
            with trio.move_on_after(_DRAIN_SECONDS + 1.0):
                await simulator.stop()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps even a lone error (the caller's own, or "address in use" from a
        # listener) in a group; hand the caller that error itself, as a plain context would.
        sole = _sole_exception(group)
        if sole is None:
            raise
        context = sole.__context__
        try:
            raise sole
        finally:
            sole.__context__ = context  # not the group: it is only our wrapping
            del sole, context


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a (nested) group of one wraps, or None if it holds several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner
