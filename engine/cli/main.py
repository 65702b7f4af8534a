"""The `lockstep` command line.

Subcommands are registered through the `lockstep.commands` entry-point group, so that each part of
the distribution (the engine, the simulator, the benchmarks) brings its own commands and the engine
never has to import the simulator.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="lockstep", description="Live Activities engine, fake APNs and benchmarks."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group="lockstep.commands"), key=lambda e: e.name):
        try:
            register: Register = ep.load()
        except ImportError as exc:  # an optional part is not installed: the rest still works
            print(f"lockstep: command group {ep.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lockstep` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result = handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
