"""`lockstep serve`: parse the flags, load the settings, run the server until Ctrl-C or SIGTERM.

    lockstep serve [--config lockstep.toml] [--host 127.0.0.1] [--port 8787] [--db PATH]
                   [--record traffic.jsonl] [--log-format text|json] [--no-access-log] [-v]

The server itself is `engine.server.serve.open_server`; this module is only its command line.
A start that fails on the setup (engine/server/startup.py: a port in use, a file that is not a
database, a state directory that is not one) prints one line per failure naming the port or file
and exits 2 for a configuration error, 1 otherwise; a failure after the banner, or one that is not
a recognised start-up failure, keeps its traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path

import trio

from engine.server.logs import FORMATS, configure
from engine.server.serve import banner, open_server
from engine.server.settings import Settings, load_settings
from engine.server.startup import failure_lines


async def _serve_until_signal(settings: Settings, started: list[bool]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(settings) as running:
            started.append(True)
            print(banner(running), flush=True)
            async for _ in signals:
                print("stopping: draining pushes (Ctrl-C again to force)", flush=True)
                break


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
        trio.run(_serve_until_signal, settings, started)
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
