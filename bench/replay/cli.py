"""`lockstep replay`: re-issue recorded API traffic, or recorded APNs pushes, and check the result.

    lockstep replay TRAFFIC.jsonl [--speed 10] [--target URL --key KEY [--control URL]]
                    [--connections 16] [--devices 3] [--record-pushes pushes.jsonl] [--json]
    lockstep replay --pushes pushes.jsonl [--apns-dir DIR] [--speed 10]

Traffic (what `lockstep serve --record` writes, or a file of `bench/traffic/`): the calls go out
with their recorded spacing divided by `--speed`, against `--target` or, by default, a fresh
in-process server with its simulator, behind a progress bar. The report gives latency
percentiles, calls/s, errors by status, coalescing (API calls against pushes the simulator
accepted) and the final-state check: every stream's and activity's last recorded state must be
what the simulated iPhones show (`bench.replay.check`). Exit status 1 when a state differs or a
call failed; with `--target`, the check needs the simulator's control API (`--control`).

Pushes (what `lockstep simulator --record-pushes` writes): they are delivered straight to fresh
simulated iPhones (`simulator.replay`), and the lock screens they end on are drawn; `--apns-dir`
also writes every push as a `.apns` file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import trio
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from bench.replay.http import HttpError
from bench.replay.run import CallResult, ReplayOptions, ReplayReport, replay_traffic
from bench.traffic.format import TrafficError, load_traffic

__all__ = ["main", "register", "render_report"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render_report(report: ReplayReport) -> RenderableType:
    """The end-of-replay summary as a rich renderable."""
    table = Table(
        title=f"replay of {report.traffic} ({report.target}, speed {report.speed:g})",
        show_header=False,
        title_justify="left",
    )
    table.add_column("what", style="bold")
    table.add_column("value")
    lat = report.latency
    table.add_row(
        "calls",
        f"{report.calls} in {report.duration:.2f} s ({report.calls_per_second:.1f} calls/s)",
    )
    table.add_row(
        "latency",
        f"p50 {_ms(lat.p50)} · p90 {_ms(lat.p90)} · p99 {_ms(lat.p99)} · max {_ms(lat.max)}",
    )
    table.add_row("lag", f"max {_ms(report.max_lag)} behind schedule")
    errors = ", ".join(f"{status}: {n}" for status, n in sorted(report.errors.items())) or "none"
    table.add_row("errors", Text(errors, style="red" if report.errors else "green"))
    if report.pushes is not None:
        line = f"{report.pushes} pushes accepted by the simulator"
        if report.wanted:
            saved = 1 - report.pushes / report.wanted
            line += (
                f" for {report.wanted} call x device updates asked "
                f"({saved:.0%} coalesced away), {report.devices} devices"
            )
        table.add_row("coalescing", line)
    if report.checked is None:
        table.add_row("final state", Text("not checked (no simulator control API)", style="dim"))
    else:
        verdict = f"{report.checked} streams/activities checked after {report.settle:.1f} s: "
        verdict += f"{len(report.mismatches)} mismatches" if report.mismatches else "all match"
        table.add_row("final state", Text(verdict, style="red" if report.mismatches else "green"))
    parts: list[RenderableType] = [table]
    parts += [Text(f"  mismatch: {m}", style="red") for m in report.mismatches[:200]]
    if len(report.mismatches) > 200:
        parts.append(Text(f"  ... and {len(report.mismatches) - 200} more", style="red"))
    parts += [Text(f"  error: {e}", style="red") for e in report.error_samples]
    return Group(*parts)


async def _with_progress(
    path: Path, options: ReplayOptions, console: Console, show: bool
) -> ReplayReport:
    traffic = load_traffic(path)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=False) as progress:
        task = progress.add_task(f"replaying {traffic.name}", total=len(traffic.calls), errors=0)
        failed = 0

        def on_result(result: CallResult) -> None:
            nonlocal failed
            failed += 0 if result.ok else 1
            progress.update(task, advance=1, errors=failed)

        def on_phase(phase: str) -> None:
            progress.update(task, description=f"{traffic.name}: {phase}")

        return await replay_traffic(traffic, options, on_result=on_result, on_phase=on_phase)


def _run_traffic(args: argparse.Namespace) -> int:
    from engine.cli.common import UsageError, resolve_key

    key = None
    if args.target:
        try:
            key = resolve_key(args.key, dict(os.environ), Path.cwd())
        except UsageError as exc:
            print(f"lockstep replay: {exc}", file=sys.stderr)
            return 2
    options = ReplayOptions(
        speed=args.speed or 1.0,
        target=args.target,
        key=key,
        control=args.control,
        connections=args.connections,
        devices=args.devices,
        settle_timeout=args.settle_timeout,
        record_pushes=args.record_pushes,
    )
    console = Console(stderr=True)
    try:
        report = trio.run(_with_progress, args.traffic, options, console, not args.json)
    except (TrafficError, ValueError, OSError, HttpError) as exc:
        print(f"lockstep replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        Console().print(render_report(report))
    return 0 if report.ok else 1


def _run_pushes(args: argparse.Namespace) -> int:
    from simulator.replay import PushFileError, load_pushes, replay_pushes
    from simulator.view import render_devices

    try:
        pushes = load_pushes(args.pushes)
        result = trio.run(lambda: replay_pushes(pushes, speed=args.speed, apns_dir=args.apns_dir))
    except (PushFileError, ValueError, OSError) as exc:
        print(f"lockstep replay: {exc}", file=sys.stderr)
        return 2
    console = Console()
    console.print(render_devices({"devices": result.devices}, now=result.now))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())) or "none"
    summary = f"{result.delivered} pushes delivered ({outcomes})"
    if result.unmapped:
        summary += f"; {result.unmapped} to tokens this replay cannot map (skipped)"
    if args.apns_dir:
        summary += f"; {result.files_written} .apns files in {args.apns_dir}"
    console.print(summary)
    return 0


def main(args: argparse.Namespace) -> int:
    """Handler of `lockstep replay`."""
    if (args.traffic is None) == (args.pushes is None):
        print(
            "lockstep replay: give a traffic file or --pushes FILE (one of them)", file=sys.stderr
        )
        return 2
    if args.speed is not None and not args.speed > 0:
        print("lockstep replay: --speed must be > 0", file=sys.stderr)
        return 2
    return _run_pushes(args) if args.pushes is not None else _run_traffic(args)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `replay` subcommand to the `lockstep` parser."""
    p = sub.add_parser(
        "replay",
        help="re-issue recorded API traffic or APNs pushes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("traffic", nargs="?", type=Path, help="traffic file (JSON lines)")
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="divide the recorded spacing by this (traffic default 1; pushes: at once)",
    )
    p.add_argument("--target", help="a running server (http://host:port or its /api base)")
    p.add_argument(
        "--key",
        help="API key for --target (default $LOCKSTEP_API_KEY or "
        "./lockstep-data/api-key); never printed",
    )
    p.add_argument("--control", help="the target's simulator control API, for the final check")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (16)")
    p.add_argument(
        "--devices",
        type=int,
        default=3,
        help="in-process: simulated iPhones when the file names none (3)",
    )
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for deliveries after the last call (30)",
    )
    p.add_argument(
        "--record-pushes",
        type=Path,
        metavar="FILE",
        help="in-process: record the pushes the simulator receives",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.add_argument(
        "--pushes",
        type=Path,
        metavar="FILE",
        help="replay recorded APNs pushes into fresh simulated iPhones instead",
    )
    p.add_argument("--apns-dir", type=Path, help="with --pushes: write each push as a .apns file")
    p.set_defaults(handler=main)
