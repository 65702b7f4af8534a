"""The `lockstep` command line: the top-level command (`main`) and the engine's own subcommands.

Each part of the distribution brings its subcommands through the `lockstep.commands` entry points:
`serve`, `keys` and the client calls live here, `simulator` and `devices` in simulator/, `bench` and
`replay` in bench/. Nothing in the embeddable engine imports this package.
"""

from engine.cli.main import main

__all__ = ["main"]
