"""The server in one process: the HTTP API, the service, the store and the engine.

`open_server(settings)` starts them all and yields a `Running`; `lockstep serve`
(engine/cli/serve.py) is its command line.

Start-up order: the store (and its group-commit writer), then the APNs side (Apple with the
configured credentials, or in simulate mode the simulator started in-process through the
`lockstep.simulate` entry point, so the engine never imports it), on PostgreSQL the provider
token shared with every other node of the database (engine/server/store/pgtokens.py), the
engine, the service (which re-queues what devices are missing after a restart), and last the
HTTP front. In simulate mode the simulated iPhones then register through the device API, exactly
as an app would. Ctrl-C (or SIGTERM) stops the HTTP front, drains the engine (bounded) and closes
the store.

A start that fails on the user's setup (the port taken, the database file not a database, the
state directory not a directory) raises a `StartupError` (engine/server/startup.py) or an error
that names its file, never a bare "address already in use".
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from engine.apns.auth import SigningKey
from engine.apns.tokens import TokenSource
from engine.config import ApnsEndpoint, ConfigError, Credentials, EngineConfig
from engine.engine import Engine, open_engine
from engine.server.http.app import create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from engine.server.http.seam import PhonesView
from engine.server.http.server import bind_address, serve_http
from engine.server.keys import KeyFile, KeyRing
from engine.server.linkedphones import LinkedPhones
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
from engine.server.workerlink import SimulatorLink, WorkerLink

if TYPE_CHECKING:  # psycopg is imported only for PostgreSQL (the `pg` extra)
    from engine.server.cluster.node import ClusterNode

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
    return PgStore(settings.store_url, commit_interval=0.0)  # the guard groups calls


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
async def open_simulator(settings: Settings) -> AsyncIterator[tuple[EngineConfig, Any]]:
    """Start the in-process simulator and an engine config that points at it (simulate mode;
    with `--workers N` the supervisor runs it once for every worker)."""
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


def _linked_config(sim: SimulatorLink, settings: Settings) -> EngineConfig:
    """The engine config of a worker whose APNs is the supervisor's simulator."""
    return EngineConfig(
        credentials=Credentials(sim.team_id, sim.key_id, Path(sim.key_path), sim.bundle_id),
        endpoint=ApnsEndpoint(host=sim.host, port=sim.port, ca_file=Path(sim.ca_file)),
        delivery=settings.delivery,
    )


async def _shared_tokens(
    nursery: trio.Nursery, config: EngineConfig, settings: Settings, clock: Callable[[], float]
) -> TokenSource:
    """A provider-token cache shared through the PostgreSQL store with every other node
    (engine/server/store/pgtokens.py), synced once before it is returned."""
    from engine.server.store.pgtokens import SharedTokens  # psycopg: the `pg` extra

    assert settings.store_url is not None
    creds = config.credentials
    key = SigningKey.from_file(creds.key_path, creds.key_id, creds.team_id)
    tokens = TokenSource(
        key, wall_clock=clock, max_age=settings.delivery.token_max_age, coordinated=True
    )
    shared = SharedTokens(settings.store_url, tokens, node_id=settings.node_id, wall_clock=clock)
    await nursery.start(shared.run)
    return tokens


@asynccontextmanager
async def open_server(
    settings: Settings,
    *,
    wall_clock: Callable[[], float] | None = None,
    link: WorkerLink | None = None,
) -> AsyncIterator[Running]:
    """Run everything `lockstep serve` runs for the duration of the block.

    `link` makes this server one worker of `lockstep serve --workers N` (engine/server/workers.py):
    it serves the listening socket it inherited, and in simulate mode its APNs is the simulator
    the supervisor runs, whose devices the supervisor registers (once, for all workers).
    """
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
            if link is not None and link.simulator is not None:
                config = _linked_config(link.simulator, settings)  # the supervisor's simulator
            else:
                config, sim = await stack.enter_async_context(open_simulator(settings))
        else:
            config = EngineConfig(settings.credentials, settings.endpoint, settings.delivery)
        metrics = PromMetrics()
        tokens = None
        if settings.store_url is not None:  # one provider token for every node on the database
            tokens = await _shared_tokens(nursery, config, settings, clock)
        engine = await stack.enter_async_context(
            open_engine(config, wall_clock=clock, listener=metrics, provider_tokens=tokens)
        )
        # On PostgreSQL every server is a cluster node (engine/server/cluster): the activities
        # come partition by partition as it gains leases, and every write is fenced by them.
        node = _cluster_node(settings) if settings.store_url is not None else None
        service = await stack.enter_async_context(
            open_service(
                engine,
                store if node is None else node.fenced(store),
                activities=node is None,
                new_activity_id=None if node is None else node.new_activity_id,
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
        phones: PhonesView | None = sim
        linked = link.simulator if link is not None else None
        if linked is not None and linked.control_url is not None:
            phones = LinkedPhones(linked.control_url)  # the supervisor's phones (linkedphones.py)
            await nursery.start(phones.run)
        app = create_app(
            service,  # a `Service` is an `http.seam.ApiService`: mypy checks it here
            api_keys=settings.api_keys,
            device_keys=settings.device_keys,
            named_keys=named_keys,
            metrics=metrics,
            max_body=settings.max_body,
            openapi=build_openapi(),
            record_reply=recorder.record if recorder is not None else None,
            phones=phones,  # the simulated iPhones the lock screens page draws (simulate mode)
            node_id=settings.node_id,
            router=node,
            router_wait=settings.cluster.forward_wait,
        )
        if node is not None:
            stack.push_async_callback(app.aclose)  # the connections to the other nodes
        shutdown = trio.Event()
        stack.callback(shutdown.set)
        listen_sock = None
        if link is not None:  # the supervisor bound the port (engine/server/listen.py)
            listen_sock = socket.socket(fileno=link.listen_fd)
        try:
            port = await nursery.start(
                lambda task_status: serve_http(
                    app,
                    settings.host,
                    settings.port,
                    task_status=task_status,
                    shutdown_trigger=shutdown.wait,
                    limits=settings.http,
                    sock=listen_sock,
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
        if node is not None:
            await _join(stack, nursery, app, node, service, settings, shutdown)
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


def _cluster_node(settings: Settings) -> ClusterNode:
    """This server's cluster node (its leases and router), not yet running."""
    from engine.server.cluster.node import ClusterNode, LeaseBook, LeaseTable

    assert settings.store_url is not None
    cfg = settings.cluster
    table = LeaseTable(
        settings.store_url,
        node_id=settings.node_id,
        address="",  # set once the internal listener has its port (`_join`)
        partitions=cfg.partitions,
        ttl=cfg.lease_ttl,
    )
    book = LeaseBook(settings.node_id, cfg.partitions, ttl=cfg.lease_ttl, margin=cfg.lease_margin)
    return ClusterNode(table, book, interval=cfg.lease_interval)


async def _join(
    stack: AsyncExitStack,
    nursery: trio.Nursery,
    app: Any,
    node: ClusterNode,
    service: Service,
    settings: Settings,
    shutdown: trio.Event,
) -> None:
    """Open the internal listener the other nodes forward calls to, then join the cluster (its
    first lease round done: this node holds its share of the free partitions)."""
    from engine.server.cluster.config import split_address
    from engine.server.cluster.forward import Forwarder
    from engine.server.cluster.node import open_node
    from engine.server.cluster.streams import ClusterStreams
    from engine.server.http.placement import internal

    host, port = split_address(settings.cluster.listen)
    try:
        bound = await nursery.start(
            lambda task_status: serve_http(
                internal(app),  # only here does x-lockstep-forwarded come from a node
                host,
                port,
                task_status=task_status,
                shutdown_trigger=shutdown.wait,
                limits=settings.http,
            )
        )
    except (OSError, BaseExceptionGroup) as exc:
        cause = sole_os_error(exc)
        if cause is None:
            raise
        raise listen_failure(
            "the cluster's internal listener",
            bind_address(host, port),
            cause,
            hint="set [cluster] listen",
        ) from None
    node.table.address = settings.cluster.advertise or bind_address(host, bound)
    # Webhook deliveries land on partition 0's owner; their streams run on their own nodes.
    forwarder = Forwarder(node.node_id)
    stack.push_async_callback(forwarder.aclose)
    service.webhooks.live = ClusterStreams(
        service.live,
        node.place,
        forwarder,
        settings.api_keys[0],
        wait=settings.cluster.forward_wait,
    )
    service.cluster_stats = node.stats
    await stack.enter_async_context(open_node(service, node))


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
    control = running.simulator.control_url if running.simulator is not None else None
    return serving_banner(
        running.api_base, running.settings, simulated=running.simulator is not None, control=control
    )


def serving_banner(
    api_base: str,
    s: Settings,
    *,
    simulated: bool,
    control: str | None,
    nodes: Sequence[str] = (),
) -> str:
    """`banner` from its parts: also the `--workers N` supervisor's, `nodes` naming its workers."""
    api_key = s.api_key_origin.shell()
    lines = [
        f"Lockstep is serving the HTTP API at {api_base}",
        f"  lock screens in the browser: {api_base.removesuffix('/api')}/",
        f"  API key: {s.api_key_origin.describe()}",
        f"  device key (the iOS app's): {s.device_key_origin.describe()}",
        (
            f"  named API keys: {len(s.named_keys)} in the config file, created ones in "
            f"{s.key_file} (lockstep keys list)"
        ),
        f"  database: {s.store_where}",
    ]
    if nodes:
        lines.append(f"  workers: {len(nodes)} processes on this port ({', '.join(nodes)})")
    if simulated:
        lines += [
            (
                "  APNs: the built-in simulator (simulate mode), "
                f"{s.simulate.devices} simulated iPhones"
            ),
            f"  simulator control API: {control}",
            "  watch the lock screens: lockstep devices --watch"
            + ("" if control == _CLI_CONTROL_URL else f" --url {control}"),
        ]
    else:
        lines.append(f"  APNs: {s.endpoint.authority}")
    for hook in s.webhooks:  # where to point GitHub (or curl); the secret stays in the config
        lines.append(f"  webhook {hook.name} ({hook.kind}): POST {api_base}/webhooks/{hook.name}")
    cli = _cli_environment(api_base, s.api_key_origin)
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
        f"  curl -X PUT {api_base}/live-activity/stream/prod-web-1 \\",
        f"    -H \"Authorization: Bearer {api_key}\" -H 'Content-Type: application/json' \\",
        (
            '    -d \'{"content_state": {"title": "Server Health", "type": "metrics", '
            '"metrics": [{"label": "CPU", "value": 9, "unit": "%"}]}}\''
        ),
    ]
    return "\n".join(lines)
