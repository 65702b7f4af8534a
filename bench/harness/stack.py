"""The system under test as two processes: the Lockstep server and the simulator.

- The **simulator process** runs the fake APNs (`simulator.runner.Simulator`, TLS on 127.0.0.1)
  with `devices` simulated iPhones, iPhone *i* subscribed to channel `ch<i>` so that a stream can
  target one device. A `PushListener` stamps every accepted push with `time.monotonic()` (one
  clock for every process on the machine: CLOCK_MONOTONIC on Linux) and keeps its
  content-state's `title` (the stream key) and `subtitle` (the call's marker). It can carry a fault
  plan, and it checks final states and order violations on its devices.
- The **server process** runs `engine.server.serve.open_server`, the same code as `lockstep serve`,
  with the simulator as its APNs (credentials: the simulator's `.p8`; endpoint: its port and CA).
  The devices register and report their update tokens through the server's device API (`attach`), as
  the iOS app would. It can also run an in-process job (the storm drives the embedded API).

`open_stack(...)` starts both (pinned per `Cores`), attaches, and stops both on exit.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness.core import LOOPBACK, Cores, cpu_seconds, pin, rss_bytes
from bench.harness.procs import Child, report_failure, serve_commands

API_KEY = "lsk_bench_send_key_0123456789abcdef"
DEVICE_KEY = "lsd_bench_device_key_0123456789abcdef"
START_TIMEOUT = 60.0
REPORT_WORKERS = 16  # token reports in flight at once (one simulated app each)


def device_name(i: int) -> str:
    """The i-th simulated iPhone (1-based)."""
    return f"iphone-{i}"


def channel_of(i: int) -> str:
    """The channel only the i-th simulated iPhone subscribes to."""
    return f"ch{i}"


# -- simulator process -----------------------------------------------------------------------------


class Arrivals:
    """A `PushListener`: (title, subtitle, event, monotonic time) of every accepted push."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str | None, str | None, float]] = []

    def on_accepted(self, push: Any, device: str | None) -> None:
        """Stamp the push now; the payload is already parsed (no extra work on the hot path)."""
        aps = push.payload.get("aps")
        state = aps.get("content-state") if isinstance(aps, dict) else None
        if isinstance(state, dict):
            self.items.append(
                (state.get("title"), state.get("subtitle"), aps.get("event"), time.monotonic())
            )
        else:
            self.items.append((None, None, None, time.monotonic()))


def sim_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """Simulator process: see the module docstring. Commands: attach, arrivals, check, counters."""
    import trio

    logging.basicConfig(level=logging.ERROR)
    try:
        pinned = pin(core)
        trio.run(_sim_async, conn, pinned, opts)
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


def _build_simulator(opts: dict[str, Any]) -> Any:
    from simulator.apns import SimulatorConfig
    from simulator.faults import FaultPlan
    from simulator.runner import Simulator, SimulatorOptions

    plan = FaultPlan.from_toml(opts["faults"]) if opts.get("faults") else None
    config = SimulatorConfig(seed=opts.get("seed", 0), max_active_activities=opts["max_active"])
    options = SimulatorOptions(
        host=LOOPBACK,
        port=0,
        control_port=None,
        devices=0,
        state_dir=Path(opts["state_dir"]),
        tls=True,
        plan=plan,
        drain_seconds=2.0,
        config=config,
        keep_state=False,  # every run starts with new phones, and no saving competes for the CPU
    )
    sim = Simulator.build(options)
    now = time.time()
    for i in range(1, opts["devices"] + 1):
        sim.apns.registry.add_device(device_name(i), channels=[channel_of(i)], now=now)
    return sim


async def _sim_async(conn: Connection, pinned: bool, opts: dict[str, Any]) -> None:
    import trio

    from simulator.embed import EmbeddedSimulator

    sim = _build_simulator(opts)
    arrivals = Arrivals()
    sim.apns.listeners.append(arrivals)
    async with trio.open_nursery() as nursery:
        ends = await nursery.start(sim.run)
        config = sim.options.config
        embedded = EmbeddedSimulator(
            host=LOOPBACK,
            port=ends.apns_port,
            ca_file=sim.certs.ca.resolve(),
            key_path=sim.key_path.resolve(),
            key_id=config.key_id,
            team_id=config.team_id,
            bundle_id=config.bundle_id,
            control_url=None,
            simulator=sim,
        )
        cpu0 = cpu_seconds()

        async def attach(api_base: str, device_key: str) -> int:
            await embedded.attach(api_base, device_key)
            # Many iPhones report their tokens at once, each on its own: more consumers of the
            # one report queue (`attach` started the first) model that.
            for _ in range(REPORT_WORKERS - 1):
                nursery.start_soon(sim.reporter.run)
            return len(sim.apns.registry.devices)

        async def take_arrivals() -> list[tuple[str | None, str | None, str | None, float]]:
            items, arrivals.items = arrivals.items, []
            return items

        async def check(expected: dict[str, tuple[str, str]], ended: bool = True) -> dict[str, Any]:
            return check_devices(sim.apns.registry, expected, time.time(), ended=ended)

        async def counters() -> dict[str, Any]:
            reporter = sim.reporter.stats if sim.reporter is not None else None
            return {
                **sim.apns.snapshot(),
                "reports_delivered": reporter.delivered if reporter else 0,
                "reports_dropped": (reporter.dropped if reporter else 0)
                + sim.apns.registry.reports_dropped,
                "reports_failed": reporter.failed if reporter else 0,
                "cpu_s": cpu_seconds() - cpu0,
                "rss_bytes": rss_bytes(),
            }

        info = {
            "port": ends.apns_port,
            "ca_file": str(embedded.ca_file),
            "key_path": str(embedded.key_path),
            "key_id": embedded.key_id,
            "team_id": embedded.team_id,
            "bundle_id": embedded.bundle_id,
            "pinned": pinned,
        }
        await serve_commands(
            conn,
            {"attach": attach, "arrivals": take_arrivals, "check": check, "counters": counters},
            info,
        )
        nursery.cancel_scope.cancel()


def check_devices(
    registry: Any, expected: dict[str, tuple[str, str]], now: float, *, ended: bool = True
) -> dict[str, Any]:
    """Final states and order violations on the simulated devices.

    `expected` maps an engine `activity_id` (the push-to-start's `attributes.activity_id`) to the
    `subtitle` of its final state and the device it targets; that activity must show that state
    on that device (and be ended, when `ended`). A final that cannot arrive because the fault
    plan unregistered the token it needs — the activity's update token, or the device's
    push-to-start token for an activity that never started there (410: the app is gone) — is not
    lost: it is counted apart, as `finals_unregistered`.
    """
    registry.advance(now)
    seen: dict[str, Any] = {}
    violations = activities = 0
    for device in registry.devices.values():
        for act in device.activities.values():
            activities += 1
            violations += act.order_violations
            aid = act.attributes.get("activity_id")
            if aid in expected:
                seen[aid] = act
    lost: list[str] = []
    unregistered = 0
    for aid, (subtitle, device_name_) in expected.items():
        act = seen.get(aid)
        finished = not ended or (act is not None and act.state.value in ("ended", "dismissed"))
        if act is not None and finished and act.content_state.get("subtitle") == subtitle:
            continue
        if act is not None:
            token = act.token
        else:
            device = registry.devices.get(device_name_)
            token = device.push_to_start_token if device is not None else None
        info = registry.lookup(token) if token is not None else None
        if info is not None and info.unregistered_at_ms is not None:
            unregistered += 1
        else:
            lost.append(aid)
    return {
        "expected": len(expected),
        "delivered": len(expected) - len(lost) - unregistered,
        "lost": len(lost),
        "lost_examples": lost[:5],
        "lost_on_devices": [_device_view(seen.get(aid), aid) for aid in lost[:3]],
        "finals_unregistered": unregistered,
        "order_violations": violations,
        "activities_on_devices": activities,
    }


def _device_view(act: Any, aid: str) -> dict[str, Any]:
    """What a device shows of one activity, for explaining a lost final state."""
    if act is None:
        return {"activity_id": aid, "on_device": False}
    snap = act.snapshot()
    return {
        "activity_id": aid,
        "on_device": True,
        "state": snap["state"],
        "subtitle": snap["content_state"].get("subtitle"),
        "last_timestamp": snap["last_timestamp"],
        "events": snap["events"][-4:],
    }


# -- server process --------------------------------------------------------------------------------


def server_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """Server process: `open_server` against the simulator. Commands: held, stats, job."""
    import trio

    logging.basicConfig(level=logging.ERROR)
    try:
        pinned = pin(core)
        trio.run(_server_async, conn, pinned, opts)
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


def server_settings(opts: dict[str, Any]) -> Any:
    """`lockstep serve` settings pointing at the simulator process (from its start-up info)."""
    from engine.config import ApnsEndpoint, Credentials, DeliveryConfig
    from engine.server.service import LiveConfig
    from engine.server.settings import Settings, SimulateSettings

    sim = opts["sim"]
    return Settings(
        host=LOOPBACK,
        port=0,
        state_dir=Path(opts["state_dir"]),
        api_keys=(API_KEY,),
        device_keys=(DEVICE_KEY,),
        credentials=Credentials(
            sim["team_id"], sim["key_id"], Path(sim["key_path"]), sim["bundle_id"]
        ),
        endpoint=ApnsEndpoint(host=LOOPBACK, port=sim["port"], ca_file=Path(sim["ca_file"])),
        delivery=DeliveryConfig(**opts.get("delivery", {})),
        live=LiveConfig(**opts.get("live", {})),
        simulate=SimulateSettings(devices=0, control_port=None),
    )


def held_recipients(service: Any) -> int:
    """Recipients still waiting for their device's update token (held by the service)."""
    return sum(
        1
        for act in service.registry.activities.values()
        if not act.row.ended
        for rec in act.recipients.values()
        if rec.row.update_token is None and not rec.row.dead
    )


def explain_activity(service: Any, activity_id: str) -> dict[str, Any]:
    """The server's view of one activity and its recipients (to explain a lost final state)."""
    from engine.server.store.records import unpack_state

    act = service.registry.activities.get(activity_id)
    if act is None:
        return {"activity_id": activity_id, "known": False}
    return {
        "activity_id": activity_id,
        "known": True,
        "version": act.row.version,
        "ended": act.row.ended,
        "subtitle": unpack_state(act.row.state).get("subtitle"),
        "recipients": [
            {
                "device": device_id,
                "started": rec.row.started,
                "dead": rec.row.dead,
                "has_update_token": rec.row.update_token is not None,
                "sent_version": rec.row.sent_version,
                "queued_version": rec.queued_version,
            }
            for device_id, rec in act.recipients.items()
        ],
    }


async def _server_async(conn: Connection, pinned: bool, opts: dict[str, Any]) -> None:
    from engine.server.serve import open_server

    async with open_server(server_settings(opts)) as running:
        cpu0 = cpu_seconds()

        async def held() -> int:
            return held_recipients(running.service)

        async def stats() -> dict[str, Any]:
            out: dict[str, Any] = dict(running.service.stats())
            outbox = running.service.outbox
            out.update(
                accepted=outbox.accepted,
                rejected=outbox.rejected,
                failed=outbox.failed,
                cpu_s=cpu_seconds() - cpu0,
                rss_bytes=rss_bytes(),
            )
            return out

        async def explain(activity_ids: list[str]) -> list[dict[str, Any]]:
            return [explain_activity(running.service, aid) for aid in activity_ids]

        async def job(target: str, args: dict[str, Any]) -> Any:
            module, _, name = target.partition(":")
            fn = getattr(importlib.import_module(module), name)
            return await fn(running, **args)

        ready = {"api_base": running.api_base, "port": running.port, "pinned": pinned}
        await serve_commands(
            conn, {"held": held, "stats": stats, "explain": explain, "job": job}, ready
        )


# -- both ------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """A running server + simulator pair, as seen from the parent."""

    sim: Child
    server: Child
    sim_info: dict[str, Any]
    server_info: dict[str, Any]
    devices: int

    @property
    def api_base(self) -> str:
        """`http://127.0.0.1:<port>/api`."""
        return str(self.server_info["api_base"])

    def wait_tokens(self, timeout: float) -> int:
        """Wait until no recipient is held for its update token; the number still held."""
        deadline = time.monotonic() + timeout
        while True:
            held = int(self.server.ask("held", timeout=30))
            if held == 0 or time.monotonic() > deadline:
                return held
            time.sleep(0.1)


@contextmanager
def open_stack(
    *,
    cores: Cores,
    folder: Path,
    devices: int,
    max_active: int,
    seed: int = 0,
    faults: str | None = None,
    delivery: dict[str, Any] | None = None,
    live: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """Simulator, then server (pointed at it), then the devices attach; both stop on exit."""
    sim_opts = {
        "state_dir": str(folder / "sim"),
        "devices": devices,
        "max_active": max_active,
        "seed": seed,
        "faults": faults,
    }
    sim = Child.spawn("simulator", sim_main, cores.simulator, sim_opts)
    server: Child | None = None
    try:
        sim_info = sim.ready(START_TIMEOUT)
        server_opts = {
            "state_dir": str(folder / "server"),
            "sim": sim_info,
            "delivery": delivery or {},
            # The server's per-device limit is the simulated phones' own (the scenarios size it).
            "live": {"device_limit": max_active, **(live or {})},
        }
        server = Child.spawn("server", server_main, cores.engine, server_opts)
        server_info = server.ready(START_TIMEOUT)
        sim.ask(
            "attach",
            timeout=START_TIMEOUT + devices * 0.05,
            api_base=server_info["api_base"],
            device_key=DEVICE_KEY,
        )
        yield Stack(sim, server, sim_info, server_info, devices)
    finally:
        if server is not None:
            server.stop()
        sim.stop()
