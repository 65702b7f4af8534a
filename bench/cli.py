"""`lockstep bench SCENARIO`: run benchmark scenarios, append JSON lines, print a table.

    lockstep bench raw|latency|sequential|burst|storm|scale|soak|scale-out|all [--size smoke|full]
                   [--scenario-file X.toml] [--out bench/results/latest.jsonl]

Each scenario reads its sizes from `bench/scenarios/<name>.toml` (or `--scenario-file`), runs
its processes on 127.0.0.1 only (engine and simulator pinned to their own cores when the machine
has two), appends one JSON line per measurement to `--out` — with the machine, the settings and
what was measured — and prints a table. The exit status is 1 when an invariant (lost final
states, order violations) is broken or a scenario fails, else 0. `--size smoke` runs each
scenario in a few seconds (what CI runs); `--size full` runs the sizes the README quotes.
`scale-out` needs the local PostgreSQL server (`LOCKSTEP_TEST_PG`), so `all` leaves it out.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness.core import (
    DEFAULT_OUT,
    SIZES,
    Cores,
    RunEnv,
    ScenarioError,
    append_results,
    load_scenario,
    machine_info,
)

SCENARIOS = ("raw", "latency", "sequential", "burst", "storm", "scale", "soak")
"""In the order `all` runs them (the cheap ones first)."""

PG_SCENARIOS = ("scale-out",)
"""Scenarios that need the local PostgreSQL server: run by name only, never by `all`."""

Runner = Callable[[dict[str, Any], RunEnv], list[dict[str, Any]]]


def runner_of(name: str) -> Runner:
    """The `run(cfg, env)` function of scenario `name` (module `bench.<name>`, without dashes)."""
    module = importlib.import_module(f"bench.{name.replace('-', '')}")
    run: Runner = module.run
    return run


def run_scenarios(
    names: list[str],
    size: str,
    *,
    scenario_file: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run `names` at `size` in a scratch folder each; every result record, in order."""
    say = progress or (lambda _msg: None)
    machine, cores = machine_info(), Cores.plan()
    records: list[dict[str, Any]] = []
    for name in names:
        cfg = load_scenario(scenario_file or name, size)
        with tempfile.TemporaryDirectory(prefix=f"lockstep-bench-{name}-") as tmp:
            env = RunEnv(Path(tmp), machine, cores, say)
            t0 = time.monotonic()
            records += runner_of(name)(cfg, env)
            say(f"{name}: done in {time.monotonic() - t0:.1f} s")
    return records


def _handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.harness.report import invariant_failures, render

    console = Console(stderr=False)
    if not console.is_terminal:
        console.width = 160  # a log file or a CI page: do not fold the tables at 80 columns
    err = Console(stderr=True, soft_wrap=True)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    if args.scenario_file is not None and len(names) > 1:
        err.print("lockstep bench: --scenario-file needs one scenario, not 'all'")
        return 2
    records: list[dict[str, Any]] = []
    status = 0
    for name in names:
        try:
            records += run_scenarios(
                [name],
                args.size,
                scenario_file=args.scenario_file,
                progress=lambda msg: err.print(f"[dim]{msg}[/]"),
            )
        except ScenarioError as exc:
            err.print(f"lockstep bench: {exc}")
            return 2
        except Exception as exc:  # noqa: BLE001 - one scenario's failure must not hide the others
            err.print(f"[bold red]lockstep bench: {name} failed[/]: {type(exc).__name__}: {exc}")
            status = 1
    written = append_results(args.out, records)
    render(records, console)
    console.print(f"{written} result lines appended to {args.out}")
    if invariant_failures(records):
        status = 1
    return status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lockstep bench`."""
    p = sub.add_parser(
        "bench",
        help="run benchmark scenarios (raw, latency, sequential, burst, storm, scale, soak, "
        "scale-out)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=[*SCENARIOS, *PG_SCENARIOS, "all"])
    p.add_argument(
        "--size",
        choices=SIZES,
        default="full",
        help="smoke: seconds each (CI); full: the published sizes (default)",
    )
    p.add_argument(
        "--scenario-file",
        type=Path,
        default=None,
        help="a scenario TOML file instead of bench/scenarios/<scenario>.toml",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON lines are appended here (default bench/results/latest.jsonl)",
    )
    p.set_defaults(handler=_handle)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.cli ...`: the same as `lockstep bench ...`."""
    parser = argparse.ArgumentParser(prog="lockstep")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(argv if argv is not None else sys.argv[1:])])
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
