"""`lockstep devices`: the simulated iPhones' Lock Screens in a terminal, once or `--watch`ed.

    lockstep devices [--url http://127.0.0.1:8790] [--device NAME] [--compact | --full]
                     [--watch [--interval 1.0] [--count N]]

It reads the simulator control API's `GET /devices` (shape in simulator/devices.py) and draws it
with simulator/viewfit.py: in full (simulator/view.py) when that fits the terminal, compact (one
line per activity, every phone on screen) when it does not; `--full` and `--compact` choose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Final

from rich.console import Console, RenderableType
from rich.live import Live

from simulator.view import device_list, render_error
from simulator.viewfit import Mode, fit

__all__ = ["DEFAULT_CONTROL_URL", "FetchError", "fetch_devices", "register", "run"]

DEFAULT_CONTROL_URL: Final = "http://127.0.0.1:8790"
"""Where `lockstep simulator` serves its control API by default."""


class FetchError(Exception):
    """The control API could not be read."""


def fetch_devices(url: str, *, timeout: float) -> Any:
    """`GET {url}/devices`, decoded; raises `FetchError` with a one-line reason."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/devices", timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            raise FetchError(f"{url}/devices answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"reading {url}/devices failed: {exc}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `devices` subcommand to the `lockstep` parser."""
    p = sub.add_parser(
        "devices",
        help="show the simulated iPhones' Lock Screens",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--url",
        help=f"simulator control API (default $LOCKSTEP_SIM_URL or {DEFAULT_CONTROL_URL})",
    )
    p.add_argument("--device", metavar="NAME", help="show only this device")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--compact",
        dest="mode",
        action="store_const",
        const="compact",
        help="one line per activity, every phone on screen",
    )
    size.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="every activity as a card, however tall (default: full when it fits)",
    )
    p.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between redraws (1.0)")
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N redraws")
    p.add_argument("--timeout", type=float, default=5.0, help="request timeout in seconds (5)")
    p.set_defaults(handler=run, mode="auto")


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    """Handler of `lockstep devices`: draw once, or keep redrawing with `--watch`."""
    console = console or Console()
    args.url = args.url or os.environ.get("LOCKSTEP_SIM_URL") or DEFAULT_CONTROL_URL
    if args.interval < 0 or (args.count is not None and args.count < 1):
        print("lockstep devices: error: --interval must be >= 0 and --count >= 1", file=sys.stderr)
        return 2
    if args.watch:
        try:
            return _watch(args, console)
        except KeyboardInterrupt:
            return 0
    try:
        devices = fetch_devices(args.url, timeout=args.timeout)
    except FetchError as exc:
        print(f"lockstep devices: {exc}", file=sys.stderr)
        return 1
    if args.device is not None and not any(
        d.get("name") == args.device for d in device_list(devices)
    ):
        print(f"lockstep devices: no simulated device named {args.device!r}", file=sys.stderr)
        return 1
    console.print(_draw(devices, args, console))
    return 0


def _draw(devices: Any, args: argparse.Namespace, console: Console) -> RenderableType:
    mode: Mode = getattr(args, "mode", "auto")
    return fit(devices, now=time.time(), console=console, device=args.device, mode=mode)


def _frame(args: argparse.Namespace, console: Console) -> RenderableType:
    try:
        devices = fetch_devices(args.url, timeout=args.timeout)
    except FetchError as exc:
        return render_error(str(exc))  # keep watching: the simulator may be restarting
    return _draw(devices, args, console)


def _watch(args: argparse.Namespace, console: Console) -> int:
    with Live(console=console, auto_refresh=False) as live:
        shown = 0
        while True:
            live.update(_frame(args, console), refresh=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                return 0
            time.sleep(args.interval)
