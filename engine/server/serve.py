"""The server in one process: the HTTP API, the service, the store and the engine.

`open_server(settings)` starts them all and yields a `Running`; `lockstep serve`
(engine/cli/serve.py) is its command line.

Start-up order: the store (and its group-commit writer), then the APNs side (Apple with the
configured credentials, or in simulate mode the simulator started in-process through the
`lockstep.simulate` entry point, so the engine never imports it), the engine, the service (which
re-queues what devices are missing after a restart), and last the HTTP front. In simulate mode the
simulated iPhones then register through the device API, exactly as an app would. Ctrl-C (or
SIGTERM) stops the HTTP front, drains the engine (bounded) and closes the store.

A start that fails on the user's setup (the port taken, the database file not a database, the
state directory not a directory) raises a `StartupError` (engine/server/startup.py) or an error
that names its file, never a bare "address already in use".
"""

from __future__ import annotations

import errno
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
from engine.server.keys import KeyFile, KeyRing
from engine.server.record import TrafficRecorder
from engine.server.service import Service, ServiceConfig, open_service
from engine.server.settings import KeyOrigin, Settings, ensure_keys
from engine.server.startup import (
    StartupError,
    check_state_dir,
    listen_failure,
    os_reason,
    sole_os_error,
)
from engine.server.store.sqlite import SqliteStore

log = logging.getLogger("lockstep.serve")


def open_store(settings: Settings) -> SqliteStore:
    """The store `settings` choose: PostgreSQL for `[store] url = "postgresql://..."`, else the
    SQLite file at `settings.db_path`. psycopg is imported only for PostgreSQL (the `pg` extra)."""
    if settings.store_url is None:
        # No wait for more writes per transaction: the service's StoreGuard groups them already.
        return SqliteStore(settings.db_path, commit_interval=0.0)
    try:
        from engine.server.store.pg import PgStore  # optional: the `pg` extra
    except ImportError:
        raise StartupError(
            "[store] url names a PostgreSQL database, but psycopg is not installed: "
            "pip install 'lockstep[pg]'"
        ) from None
    return PgStore(settings.store_url)


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
    except OSError as exc:
        # The control API's is the one fixed port the simulator binds (APNs takes a free one).
        if entered or exc.errno != errno.EADDRINUSE or sim_settings.control_port is None:
            raise
        address = bind_address("127.0.0.1", sim_settings.control_port)  # the simulator's host
        raise listen_failure(
            "the simulator's control API",
            address,
            exc,
            hint="--sim-control-port 0 picks a free port, -1 turns it off",
        ) from None


@asynccontextmanager
async def open_server(
    settings: Settings, *, wall_clock: Callable[[], float] | None = None
) -> AsyncIterator[Running]:
    """Run everything `lockstep serve` runs for the duration of the block."""
    import time

    clock = wall_clock or time.time
    check_state_dir(settings.state_dir)
    settings = ensure_keys(settings)
    # The named keys: `[keys.NAME]` and the key file `lockstep keys` edits (read before anything
    # starts, so a broken key file is a configuration error naming it).
    named_keys = KeyRing(named=settings.named_keys, file=KeyFile(settings.key_file))
    if settings.store_url is None:
        settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        # Entered first, closed last: every call the HTTP front accepts is written out.
        recorder = None
        if settings.record is not None:
            try:
                recorder = stack.enter_context(TrafficRecorder(settings.record))
            except OSError as exc:
                raise StartupError(f"--record file {settings.record}: {os_reason(exc)}") from None
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        store = open_store(settings)
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
                    live=settings.live,
                    pacing_interval=settings.delivery.pacing_interval,
                    storage_retry_after=settings.storage_retry_after,
                    widgets=settings.widgets,
                    webhooks=settings.webhooks,
                ),
            )
        )
        app = create_app(
            service,  # a `Service` is an `http.seam.ApiService`: mypy checks it here
            api_keys=settings.api_keys,
            device_keys=settings.device_keys,
            named_keys=named_keys,
            metrics=metrics,
            max_body=settings.max_body,
            openapi=build_openapi(),
            record_reply=recorder.record if recorder is not None else None,
            phones=sim,  # the simulated iPhones the lock screens page draws (simulate mode)
        )
        shutdown = trio.Event()
        stack.callback(shutdown.set)
        try:
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
        except (OSError, BaseExceptionGroup) as exc:
            cause = sole_os_error(exc)
            if cause is None:
                raise
            address = bind_address(settings.host, settings.port)
            raise listen_failure(
                "the HTTP API", address, cause, hint="choose one with --port"
            ) from None
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


# Where the `lockstep` client commands look when told nothing (engine.cli.client, simulator.view):
# the banner says how to point them elsewhere only when this server is elsewhere.
_CLI_API_URL = "http://127.0.0.1:8787/api"
_CLI_KEY_FILE = "lockstep-data/api-key"
_CLI_CONTROL_URL = "http://127.0.0.1:8790"


def _cli_environment(api_base: str, key: KeyOrigin) -> str:
    """`LOCKSTEP_URL=... LOCKSTEP_API_KEY=...` for what the CLI would not find by itself."""
    parts = [] if api_base == _CLI_API_URL else [f"LOCKSTEP_URL={api_base}"]
    if key.kind == "file" and key.where != _CLI_KEY_FILE:
        parts.append(f"LOCKSTEP_API_KEY={key.shell()}")
    return " ".join(parts)


def banner(running: Running) -> str:
    """What `lockstep serve` prints once it is up: where the keys are, never a key itself.

    Terminal output ends up in scrollback, screen shares and CI logs; the key files are 0600.
    The `curl` example reads the key where it lives (`$(cat FILE)`), so it still pastes as is.
    """
    s = running.settings
    api_key = s.api_key_origin.shell()
    control = running.simulator.control_url if running.simulator is not None else None
    lines = [
        f"Lockstep is serving the HTTP API at {running.api_base}",
        f"  lock screens in the browser: {running.api_base.removesuffix('/api')}/",
        f"  API key: {s.api_key_origin.describe()}",
        f"  device key (the iOS app's): {s.device_key_origin.describe()}",
        (
            f"  named API keys: {len(s.named_keys)} in the config file, created ones in "
            f"{s.key_file} (lockstep keys list)"
        ),
        f"  database: {s.store_where}",
    ]
    if running.simulator is not None:
        lines += [
            (
                "  APNs: the built-in simulator (simulate mode), "
                f"{s.simulate.devices} simulated iPhones"
            ),
            f"  simulator control API: {running.simulator.control_url}",
            "  watch the lock screens: lockstep devices --watch"
            + ("" if control == _CLI_CONTROL_URL else f" --url {control}"),
        ]
    else:
        lines.append(f"  APNs: {s.endpoint.authority}")
    for hook in s.webhooks:  # where to point GitHub (or curl); the secret stays in the config
        lines.append(
            f"  webhook {hook.name} ({hook.kind}): POST {running.api_base}/webhooks/{hook.name}"
        )
    cli = _cli_environment(running.api_base, s.api_key_origin)
    if cli:
        lines.append(f"  the CLI: export {cli}")
    if s.record is not None:
        lines.append(f"  recording accepted calls to {s.record} (replay: lockstep replay FILE)")
    if api_key is None:  # keys handed over in the config file: no file or variable to read
        api_key = "$KEY"
        lines.append("Try (with KEY set to your API key):")
    else:
        lines.append("Try:")
    lines += [
        f"  curl -X PUT {running.api_base}/live-activity/stream/prod-web-1 \\",
        f"    -H \"Authorization: Bearer {api_key}\" -H 'Content-Type: application/json' \\",
        (
            '    -d \'{"content_state": {"title": "Server Health", "type": "metrics", '
            '"metrics": [{"label": "CPU", "value": 9, "unit": "%"}]}}\''
        ),
    ]
    return "\n".join(lines)
