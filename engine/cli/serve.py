"""`lockstep serve`: parse the flags, load the settings, run the server until Ctrl-C or SIGTERM.

    lockstep serve [--config lockstep.toml] [--host 127.0.0.1] [--port 8787] [--db PATH]
                   [--record traffic.jsonl] [--log-format text|json] [--no-access-log] [-v]
                   [--workers N]

The server itself is `engine.server.serve.open_server`; this module is only its command line.
With `--workers N` (or `[server] workers`) above 1 it runs the supervisor instead
(engine/server/workers.py), which starts N workers: this same command, each told its part in
`LOCKSTEP_WORKER` (engine/server/workerlink.py), reporting ready instead of printing a banner and
stopping when the supervisor is gone.
A start that fails on the setup (engine/server/startup.py: a port in use, a file that is not a
database, a state directory that is not one) prints one line per failure naming the port or file
and exits 2 for a configuration error, 1 otherwise; a failure after the banner, or one that is not
a recognised start-up failure, keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from engine.server.logs import FORMATS, configure
from engine.server.serve import banner, open_server
from engine.server.settings import Settings, load_settings
from engine.server.startup import failure_lines
from engine.server.workerlink import WorkerLink, report_ready
from engine.server.workers import supervise

log = logging.getLogger("lockstep.serve")


async def _serve_until_signal(
    settings: Settings, started: list[bool], link: WorkerLink | None = None
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(settings, link=link) as running:
            started.append(True)
            if link is None:
                print(banner(running), flush=True)
            else:
                report_ready(link)  # the supervisor prints the one banner
            async with trio.open_nursery() as waiting:
                waiting.start_soon(_until_signal, signals, waiting.cancel_scope, link is None)
                if link is not None:
                    waiting.start_soon(_until_orphaned, link.lifeline_fd, waiting.cancel_scope)


async def _until_signal(signals: Any, scope: trio.CancelScope, say: bool) -> None:
    async for _ in signals:
        if say:
            print("stopping: draining pushes (Ctrl-C again to force)", flush=True)
        break
    scope.cancel()


async def _until_orphaned(lifeline: int, scope: trio.CancelScope) -> None:
    """A worker whose supervisor is gone (the lifeline reads end-of-file) stops, as on SIGTERM."""
    await trio.lowlevel.wait_readable(lifeline)
    log.warning("the supervising lockstep serve is gone: stopping")
    scope.cancel()


def _worker_command(args: argparse.Namespace) -> list[str]:
    """The command line of a `--workers` worker: `lockstep serve` with the flags that shape a
    worker's settings (the simulator's flags are the supervisor's alone)."""
    command = [sys.executable, "-m", "engine.cli", "serve"]
    for flag, value in (
        ("--config", args.config),
        ("--host", args.host),
        ("--port", args.port),
        ("--db", args.db),
        ("--state-dir", args.state_dir),
        ("--log-format", args.log_format),
    ):
        if value is not None:
            command += [flag, str(value)]
    if args.no_access_log:
        command.append("--no-access-log")
    if args.verbose:
        command.append("-v")
    return command


def _run(args: argparse.Namespace) -> int:
    configure(verbose=args.verbose, fmt=args.log_format or "text", access=False)
    started: list[bool] = []  # set once the server is up: later failures are not start-ups
    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            db=args.db,
            state_dir=args.state_dir,
            record=args.record,
            workers=args.workers,
        )
        if args.log_format is not None:
            settings = replace(settings, log_format=args.log_format)
        if args.no_access_log:
            settings = replace(settings, access_log=False)
        configure(verbose=args.verbose, fmt=settings.log_format, access=settings.access_log)
        if args.devices is not None:
            settings = replace(settings, simulate=replace(settings.simulate, devices=args.devices))
        if args.fresh_simulator:
            settings = replace(settings, simulate=replace(settings.simulate, fresh=True))
        if args.sim_control_port is not None:
            port = None if args.sim_control_port < 0 else args.sim_control_port
            settings = replace(settings, simulate=replace(settings.simulate, control_port=port))
        link = WorkerLink.from_env()
        if link is None and settings.workers > 1:
            return trio.run(supervise, settings, _worker_command(args))
        trio.run(_serve_until_signal, settings, started, link)
    except Exception as exc:
        failure = None if started else failure_lines(exc)
        if failure is None:
            raise
        status, lines = failure
        for line in lines:
            print(f"lockstep serve: {line}", file=sys.stderr)
        return status
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lockstep serve`."""
    p = sub.add_parser("serve", help="run the HTTP API, the engine and (by default) a simulator")
    p.add_argument("--config", type=Path, default=None, help="lockstep.toml")
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8787)")
    p.add_argument("--db", type=Path, default=None, help="SQLite file (default in --state-dir)")
    p.add_argument("--state-dir", type=Path, default=None, help="default ./lockstep-data")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="N processes serving the port, supervised (default 1; >1 needs PostgreSQL)",
    )
    p.add_argument("--devices", type=int, default=None, help="simulated iPhones (simulate mode)")
    p.add_argument(
        "--sim-control-port",
        type=int,
        default=None,
        metavar="PORT",
        help="the simulator's control API port (default 8790; 0 = any; -1 = off)",
    )
    p.add_argument(
        "--fresh-simulator",
        action="store_true",
        help="simulate mode: new phones instead of the ones kept in --state-dir/simulator",
    )
    p.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="FILE",
        help="write every accepted send call to FILE as JSON lines (never the keys)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="log lines as text (the default) or one JSON object each",
    )
    p.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (default: one)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    p.set_defaults(handler=_run)
