"""The server in one process: the HTTP API, the service, the store and the engine.

`open_server(settings)` starts them all and yields a `Running`; `lockstep serve`
(engine/cli/serve.py) is its command line.

Start-up order: the store (and its group-commit writer), then the APNs side (Apple with the
configured credentials, or in simulate mode the simulator started in-process through the
`lockstep.simulate` entry point, so the engine never imports it), the engine, the service (which
re-queues what devices are missing after a restart), and last the HTTP front. In simulate mode the
simulated iPhones then register through the device API, exactly as an app would. Ctrl-C (or
SIGTERM) stops the HTTP front, drains the engine (bounded) and closes the store.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import trio

from engine.config import ApnsEndpoint, ConfigError, Credentials, EngineConfig
from engine.engine import Engine, open_engine
from engine.server.http.app import create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from engine.server.http.server import bind_address, serve_http
from engine.server.record import TrafficRecorder
from engine.server.service import Service, ServiceConfig, open_service
from engine.server.settings import Settings, ensure_keys
from engine.server.store.sqlite import SqliteStore

log = logging.getLogger("lockstep.serve")


@dataclass(frozen=True, slots=True)
class Running:
    """A started server: where it listens and what it runs (for tests and the banner)."""

    api_base: str
    port: int
    service: Service
    settings: Settings
    simulator: Any | None  # the embedded simulator in simulate mode
    engine: Engine  # the delivery engine (embedded use and benchmarks)


@asynccontextmanager
async def _simulated(settings: Settings) -> AsyncIterator[tuple[EngineConfig, Any]]:
    """Start the in-process simulator and an engine config that points at it."""
    found = [ep for ep in entry_points(group="lockstep.simulate") if ep.name == "simulator"]
    if not found:
        raise ConfigError("no [apns] credentials configured and the simulator is not installed")
    open_embedded: Callable[..., Any] = found[0].load()
    sim_settings = settings.simulate
    entered = False
    try:
        async with open_embedded(
            state_dir=settings.state_dir / "simulator",
            devices=sim_settings.devices,
            control_port=sim_settings.control_port,
            seed=sim_settings.seed,
            fresh=sim_settings.fresh,
            profile=sim_settings.profile,
        ) as sim:
            entered = True
            config = EngineConfig(
                credentials=Credentials(sim.team_id, sim.key_id, Path(sim.key_path), sim.bundle_id),
                endpoint=ApnsEndpoint(host=sim.host, port=sim.port, ca_file=Path(sim.ca_file)),
                delivery=settings.delivery,
            )
            yield config, sim
    except ValueError as exc:
        if entered:
            raise
        raise ConfigError(f"[simulate]: {exc}") from None  # a bad profile, named by its field


@asynccontextmanager
async def open_server(
    settings: Settings, *, wall_clock: Callable[[], float] | None = None
) -> AsyncIterator[Running]:
    """Run everything `lockstep serve` runs for the duration of the block."""
    import time

    clock = wall_clock or time.time
    settings = ensure_keys(settings)
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        # Entered first, closed last: every call the HTTP front accepts is written out.
        recorder = None
        if settings.record is not None:
            recorder = stack.enter_context(TrafficRecorder(settings.record))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        store = SqliteStore(settings.db_path)
        stack.callback(store.close)
        await nursery.start(store.run)
        sim = None
        if settings.credentials is None:
            config, sim = await stack.enter_async_context(_simulated(settings))
        else:
            config = EngineConfig(settings.credentials, settings.endpoint, settings.delivery)
        metrics = PromMetrics()
        engine = await stack.enter_async_context(
            open_engine(config, wall_clock=clock, listener=metrics)
        )
        service = await stack.enter_async_context(
            open_service(
                engine,
                store,
                wall_clock=clock,
                config=ServiceConfig(
                    live=settings.live, pacing_interval=settings.delivery.pacing_interval
                ),
            )
        )
        app = create_app(
            service,  # a `Service` is an `http.seam.ApiService`: mypy checks it here
            api_keys=settings.api_keys,
            device_keys=settings.device_keys,
            metrics=metrics,
            max_body=settings.max_body,
            openapi=build_openapi(),
            record_reply=recorder.record if recorder is not None else None,
        )
        shutdown = trio.Event()
        stack.callback(shutdown.set)
        port = await nursery.start(
            lambda task_status: serve_http(
                app,
                settings.host,
                settings.port,
                task_status=task_status,
                shutdown_trigger=shutdown.wait,
                limits=settings.http,
            )
        )
        api_base = f"http://{bind_address(settings.host, port)}/api"
        if sim is not None:
            await sim.attach(api_base, settings.device_keys[0])
        # Everything loaded so far (the registry, imports) lives as long as the server: move it
        # out of the collector's view, so full collections stay short under load.
        gc.collect()
        gc.freeze()
        try:
            yield Running(api_base, port, service, settings, sim, engine)
        finally:
            gc.unfreeze()


def banner(running: Running) -> str:
    """What `lockstep serve` prints once it is up (the API key included: it is the user's own)."""
    s = running.settings
    lines = [
        f"Lockstep is serving the HTTP API at {running.api_base}",
        f"  API key ({s.state_dir / 'api-key'} unless configured): {s.api_keys[0]}",
        f"  database: {s.db_path}",
    ]
    if running.simulator is not None:
        lines += [
            (
                "  APNs: the built-in simulator (simulate mode), "
                f"{s.simulate.devices} simulated iPhones"
            ),
            f"  simulator control API: {running.simulator.control_url}",
            "  watch the lock screens: lockstep devices --watch",
        ]
    else:
        lines.append(f"  APNs: {s.endpoint.authority}")
    if s.record is not None:
        lines.append(f"  recording accepted calls to {s.record} (replay: lockstep replay FILE)")
    lines += [
        "Try:",
        f"  curl -X PUT {running.api_base}/live-activity/stream/prod-web-1 \\",
        f"    -H 'Authorization: Bearer {s.api_keys[0]}' -H 'Content-Type: application/json' \\",
        (
            '    -d \'{"content_state": {"title": "Server Health", "type": "metrics", '
            '"metrics": [{"label": "CPU", "value": 9, "unit": "%"}]}}\''
        ),
    ]
    return "\n".join(lines)
