"""`lockstep mcp`: a Model Context Protocol server (stdio) for AI agents.

    lockstep mcp --url https://lockstep.example.com/api      (key: $LOCKSTEP_API_KEY)

An MCP client (Claude Desktop, an IDE, an agent framework) starts this command and talks to it
over stdin/stdout; its tools stream, start, update and end Live Activities and list their
delivery status, through the HTTP API of the Lockstep server named here (`engine.cli.mcp_tools`
has the table). The server and the key are found as the other client commands find them
(`engine.cli.common`: `--url`, `--config`, `$LOCKSTEP_URL`; `--key`, `$LOCKSTEP_API_KEY`,
the config's key, `./lockstep-data/api-key`), once at start: a missing key is a usage error
before any MCP traffic.

The SDK is the optional `mcp` extra; this module imports it only when the command runs, so
`lockstep` works without it and `lockstep mcp` says how to install it (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

from engine.cli.common import Session, UsageError, add_server

__all__ = ["register", "run"]

MISSING_EXTRA: Final = (
    "lockstep mcp: the MCP server needs the `mcp` extra, which is not installed "
    "(pip install 'lockstep[mcp]'): {detail}"
)

_DESCRIPTION: Final = """\
Serve the Model Context Protocol on stdin/stdout: tools that let an AI agent stream, start,
update and end Live Activities and list their delivery status on a Lockstep server.

client configuration (e.g. Claude Desktop's claude_desktop_config.json):
  {"mcpServers": {"lockstep": {"command": "lockstep", "args": ["mcp"],
    "env": {"LOCKSTEP_URL": "https://lockstep.example.com/api", "LOCKSTEP_API_KEY": "lsk_..."}}}}
"""


def run(args: argparse.Namespace) -> int:
    """Handler of `lockstep mcp`: resolve the server and key, then serve until stdin closes."""
    try:
        session = Session.resolve(args, os.environ, Path.cwd())
    except UsageError as exc:
        print(f"lockstep mcp: error: {exc}", file=sys.stderr)
        return 2
    try:
        import anyio

        from engine.cli.mcp_server import Connection, serve_stdio
    except ImportError as exc:
        print(MISSING_EXTRA.format(detail=exc), file=sys.stderr)
        return 2
    connection = Connection(url=session.url, key=session.key, timeout=session.timeout)
    try:
        anyio.run(serve_stdio, connection, backend="trio")
    except KeyboardInterrupt:  # Ctrl-C in a terminal: a normal way to stop it, no traceback
        return 130
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `mcp` to the parser."""
    p = sub.add_parser(
        "mcp",
        help="serve MCP tools for AI agents over stdio (needs the `mcp` extra)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server(p)
    p.set_defaults(handler=run)
