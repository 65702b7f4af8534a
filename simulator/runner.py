"""Assemble and run a whole simulator: fake APNs listener, simulated iPhones, control API.

`Simulator.build(options)` prepares everything that touches the disk (CA and server certificate,
a client certificate per environment, the signing key and its `.p8`, the `.apns` output folder)
and the in-memory state (devices, fault plan); `Simulator.run()` serves until cancelled or until
`stop()` drains it. Used by `lockstep simulator`, by tests, and by anything that wants a fake APNs
in-process.

The APNs listener on `port` serves one environment (`environment`, sandbox by default); with
`other_environment_port` a second listener serves the other one, over the same devices and
account, so a client can be tested against both endpoints as it would be against Apple's
(apns.md §1, Hosts).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from engine.apns import wire
from engine.apns.auth import SigningKey
from simulator.apns import FakeApns, SimulatorConfig, WallClock
from simulator.apnsfile import ApnsFileWriter
from simulator.auth import KeyRing
from simulator.certs import CertificatePaths, ensure_certificates, server_ssl_context
from simulator.clientcert import ensure_client_certificates
from simulator.control import ControlApp
from simulator.devices import DeviceRegistry
from simulator.faults import FaultPlan
from simulator.profile import ENVIRONMENTS, PRODUCTION, SANDBOX, DeviceProfile
from simulator.record import PushRecorder
from simulator.reporting import TokenReporter
from simulator.server import ApnsServer
from simulator.state import STATE_FILE, StateKeeper, load
from simulator.widgets import WidgetReader

log = logging.getLogger("lockstep.simulator")

TICK_SECONDS = 1.0
"""How often a running simulator advances its phones with no request arriving."""


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """How to run a simulator (see `lockstep simulator --help`)."""

    host: str = "127.0.0.1"
    port: int = 2197
    control_port: int | None = 8790  # None: no control API
    devices: int = 3
    state_dir: Path = Path("lockstep-sim")
    apns_dir: Path | None = None
    record_pushes: Path | None = None  # JSON lines of every accepted push (simulator.record)
    tls: bool = True
    plan: FaultPlan | None = None
    report_url: str | None = None
    report_key: str | None = field(default=None, repr=False)
    drain_seconds: float = 5.0
    config: SimulatorConfig = field(default_factory=SimulatorConfig)
    profile: DeviceProfile = field(default_factory=DeviceProfile)  # of every device it creates
    keep_state: bool = True  # devices survive a restart in <state_dir>/devices.json
    fresh: bool = False  # ignore (and later replace) the saved devices
    environment: str = SANDBOX
    """The APNs environment the `port` listener serves (its devices are built for it too)."""
    other_environment_port: int | None = None
    """A second APNs listener serving the other environment (0: a free port; None: none)."""

    def __post_init__(self) -> None:
        """Refuse an environment APNs does not have."""
        if self.environment not in ENVIRONMENTS:
            raise ValueError(
                f"environment must be 'sandbox' or 'production', not {self.environment!r}"
            )

    @property
    def other_environment(self) -> str:
        """The environment the second listener serves."""
        return PRODUCTION if self.environment == SANDBOX else SANDBOX


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running simulator listens."""

    apns_port: int
    control_port: int | None
    other_apns_port: int | None = None
    """The listener of the other environment, when there is one."""


def load_or_create_key(state_dir: Path, config: SimulatorConfig) -> tuple[SigningKey, Path]:
    """The simulator's signing key: reuse `AuthKey_<kid>.p8` in `state_dir`, or generate it."""
    path = state_dir / f"AuthKey_{config.key_id}.p8"
    if path.exists():
        return SigningKey.from_file(path, config.key_id, config.team_id), path
    key = SigningKey.generate(config.key_id, config.team_id)
    return key, key.write_p8(path)


def _stats(reporter: TokenReporter) -> dict[str, Any]:
    """The reporter's counters, JSON-ready."""
    s = reporter.stats
    return {"delivered": s.delivered, "failed": s.failed, "dropped": s.dropped}


def _reads(reader: WidgetReader) -> dict[str, Any]:
    """The widget reader's counters, JSON-ready."""
    s = reader.stats
    return {"url": reader.api_base, "read": s.read, "failed": s.failed, "dropped": s.dropped}


class Simulator:
    """A fake APNs with simulated iPhones, ready to run."""

    def __init__(
        self,
        options: SimulatorOptions,
        *,
        apns: FakeApns,
        key: SigningKey,
        key_path: Path,
        certs: CertificatePaths | None,
        reporter: TokenReporter | None,
        client_certificates: dict[str, Path] | None = None,
    ) -> None:
        self.options = options
        self.apns = apns
        self.key = key
        self.key_path = key_path
        self.certs = certs
        self.client_certificates = client_certificates or {}
        """Environment → PEM with a client certificate and its key (certificate auth)."""
        self.reporter = reporter
        ssl_context = server_ssl_context(certs) if certs else None
        self.server = ApnsServer(apns, ssl_context=ssl_context, environment=options.environment)
        self.other_server: ApnsServer | None = None
        """The other environment's listener (`options.other_environment_port`), or None."""
        if options.other_environment_port is not None:
            self.other_server = ApnsServer(
                apns, ssl_context=ssl_context, environment=options.other_environment
            )
        self.endpoints: Endpoints | None = None
        self.push_recorder: PushRecorder | None = None
        self.apns_files: ApnsFileWriter | None = None
        self.state_keeper: StateKeeper | None = None
        self.widget_reader: WidgetReader | None = None  # the widget extensions' reads
        self._control_shutdown = trio.Event()
        self._nursery: trio.Nursery | None = None  # run()'s nursery, while it runs

    @classmethod
    def build(cls, options: SimulatorOptions, *, wall_clock: WallClock = time.time) -> Simulator:
        """Prepare certificates, key, devices and listeners from `options`."""
        config = options.config
        options.state_dir.mkdir(parents=True, exist_ok=True)
        key, key_path = load_or_create_key(options.state_dir, config)
        certs = ensure_certificates(options.state_dir) if options.tls else None
        client_certificates = None
        if certs is not None:
            client_certificates = ensure_client_certificates(
                certs, bundle_id=config.bundle_id, team_id=config.team_id
            )
        registry = DeviceRegistry(
            bundle_id=config.bundle_id,
            rng=random.Random(f"devices:{config.seed}"),
            max_active=config.max_active_activities,
            # Devices it creates are builds for the main listener's environment, so its pushes
            # reach them; a device of the other one comes from `POST /devices` with a profile.
            default_profile=msgspec.structs.replace(
                options.profile, environment=options.environment
            ),
        )
        now = wall_clock()
        keeper = None
        if options.keep_state:
            keeper = StateKeeper(registry, options.state_dir / STATE_FILE)
            if not options.fresh and load(registry, keeper.path):
                log.info("simulated devices restored from %s", keeper.path)
        for n in range(1, options.devices + 1):
            if f"iphone-{n}" not in registry.devices:
                registry.add_device(f"iphone-{n}", now=now)
        apns = FakeApns(
            config,
            keyring=KeyRing.from_signing_keys(key),
            registry=registry,
            plan=options.plan,
            wall_clock=wall_clock,
        )
        writer = None
        if options.apns_dir is not None:
            writer = ApnsFileWriter(options.apns_dir, bundle_id=config.bundle_id)
            apns.listeners.append(writer)
        reporter = None
        if options.report_url:
            reporter = TokenReporter(options.report_url, bearer=options.report_key)
            apns.token_sinks.append(reporter.submit)
        simulator = cls(
            options,
            apns=apns,
            key=key,
            key_path=key_path,
            certs=certs,
            reporter=reporter,
            client_certificates=client_certificates,
        )
        simulator.apns_files = writer
        simulator.state_keeper = keeper
        if options.record_pushes is not None:
            simulator.push_recorder = PushRecorder.attach(apns, options.record_pushes)
        return simulator

    def info(self) -> dict[str, Any]:
        """What a client needs to talk to this simulator (printed by the CLI, served at /info)."""
        o, c = self.options, self.options.config
        ports = self.endpoints or Endpoints(o.port, o.control_port, o.other_environment_port)
        scheme = "https" if o.tls else "http"
        urls: dict[str, str | None] = dict.fromkeys(ENVIRONMENTS)
        urls[o.environment] = f"{scheme}://{o.host}:{ports.apns_port}"
        if ports.other_apns_port is not None:
            urls[o.other_environment] = f"{scheme}://{o.host}:{ports.other_apns_port}"
        return {
            "apns_url": urls[o.environment],
            "environment": o.environment,
            "apns_urls": urls,
            "tls": o.tls,
            "ca_certificate": str(self.certs.ca.resolve()) if self.certs else None,
            "client_certificates": {
                env: str(path.resolve()) for env, path in self.client_certificates.items()
            },
            "signing_key": str(self.key_path.resolve()),
            "key_id": c.key_id,
            "team_id": c.team_id,
            "bundle_id": c.bundle_id,
            "topic": c.bundle_id + wire.LIVE_ACTIVITY_TOPIC_SUFFIX,
            "control_url": f"http://{o.host}:{ports.control_port}" if ports.control_port else None,
            "apns_dir": str(o.apns_dir.resolve()) if o.apns_dir else None,
            "apns_files": None if self.apns_files is None else self.apns_files.counts(),
            "record_pushes": str(o.record_pushes.resolve()) if o.record_pushes else None,
            "token_report_url": self.reporter.url if self.reporter else None,
            "token_reports": None if self.reporter is None else _stats(self.reporter),
            "widget_reads": None if self.widget_reader is None else _reads(self.widget_reader),
            "state_file": str(self.state_keeper.path.resolve()) if self.state_keeper else None,
        }

    async def run(
        self, *, task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled or until `stop()` has drained the connections."""
        async with trio.open_nursery() as nursery:
            apns_port = await nursery.start(self.server.serve, self.options.host, self.options.port)
            other_port = None
            if self.other_server is not None:
                other_port = await nursery.start(
                    self.other_server.serve, self.options.host, self.options.other_environment_port
                )
            control_port = None
            if self.options.control_port is not None:
                control_port = await nursery.start(self._serve_control)
            # From here on `set_reporter` starts a new reporter itself; before, this does.
            self._nursery = nursery
            try:
                if self.reporter is not None:
                    nursery.start_soon(self.reporter.run)
                if self.widget_reader is not None:
                    nursery.start_soon(self.widget_reader.run)
                if self.state_keeper is not None:
                    nursery.start_soon(self.state_keeper.run)
                nursery.start_soon(self._tick)
                self.endpoints = Endpoints(apns_port, control_port, other_port)
                task_status.started(self.endpoints)
                await self.server.shutdown.wait()
                await self._control_shutdown.wait()
                nursery.cancel_scope.cancel()
            finally:
                self._nursery = None
                if self.push_recorder is not None:
                    self.push_recorder.close()

    async def _tick(self) -> None:
        """About once a second, bring the phones to the present without waiting for traffic:
        held updates fall due, plan outages end, and the token reports that makes go out."""
        while True:
            await trio.sleep(TICK_SECONDS)
            self.apns.tick(self.apns.wall_clock())

    def set_widget_reader(self, api_base: str, *, bearer: str | None = None) -> WidgetReader:
        """After a widgets push reloads a phone's widgets, read the values from `api_base`'s
        device route with `bearer` (simulator/widgets.py); retargets an existing reader."""
        if self.widget_reader is not None:
            self.widget_reader.retarget(api_base, bearer=bearer)
            return self.widget_reader
        reader = WidgetReader(
            self.apns.registry, api_base, bearer=bearer, wall_clock=self.apns.wall_clock
        )
        self.widget_reader = reader
        self.apns.listeners.append(reader)
        if self._nursery is not None:
            self._nursery.start_soon(reader.run)
        return reader

    def set_reporter(self, url: str, *, bearer: str | None = None) -> TokenReporter:
        """Report new update tokens to `url` from now on, with `bearer` as the credential.

        Retargets the existing reporter, or creates one (started at once if the simulator is
        running, else by `run()`). Reports drained while no reporter existed are not replayed;
        those still queued (the tokens of restored activities) are sent now.
        """
        if self.reporter is not None:
            self.reporter.retarget(url, bearer=bearer)
            return self.reporter
        reporter = TokenReporter(url, bearer=bearer)
        self.reporter = reporter
        self.apns.token_sinks.append(reporter.submit)
        if self._nursery is not None:
            self._nursery.start_soon(reporter.run)
        self.apns.forward_token_reports()  # what waited for a backend (restored activities)
        return reporter

    async def stop(self) -> bool:
        """GOAWAY every connection, wait for the drain (bounded), then stop the control API."""
        servers = [s for s in (self.server, self.other_server) if s is not None]
        drained = [False] * len(servers)

        async def drain(i: int) -> None:
            drained[i] = await servers[i].drain(self.options.drain_seconds)

        async with trio.open_nursery() as nursery:  # both listeners drain at the same time
            for i in range(len(servers)):
                nursery.start_soon(drain, i)
        self._control_shutdown.set()
        return all(drained)

    async def _serve_control(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = HypercornConfig()
        config.bind = [f"{self.options.host}:{self.options.control_port}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("lockstep.simulator.control")
        app: Any = ControlApp(
            self.apns, info=self.info
        )  # an ASGI app; hypercorn types are narrower
        async with trio.open_nursery() as nursery:
            bound: list[str] = await nursery.start(
                lambda task_status: hypercorn_serve(
                    app,
                    config,
                    shutdown_trigger=self._control_shutdown.wait,
                    task_status=task_status,
                )
            )
            task_status.started(int(bound[0].rsplit(":", 1)[1]))
