"""The MCP server behind `lockstep mcp`: the tool table of `mcp_tools`, served over stdio.

Built on the official `mcp` SDK's low-level `Server` (the `mcp` extra): `tools/list` answers with
the table, `tools/call` turns the arguments into one HTTP API request (`mcp_tools.build_call`),
sends it with the command line client's `send` in a worker thread (it blocks), and answers with
the server's JSON. Every failure — unknown tool, bad arguments, an error answer from the server,
an unreachable server — is a tool result with `isError` and a message the agent can act on
(the server's own message for a 4xx); the process never stops on one. The API key goes only into
the `Authorization` header, never into a result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

import anyio
import anyio.to_thread
import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from engine.cli.common import ApiRequest, ApiResponse, ClientError, send
from engine.cli.mcp_tools import Outcome, Tool, ToolInputError, build_call, make_tools, outcome

__all__ = ["Connection", "build_server", "call", "serve_stdio"]

INSTRUCTIONS: Final = (
    "Lockstep shows Live Activities on iPhones' lock screens. For an ongoing thing (a deploy, "
    "a job, your own run) call `stream` with a stable stream_key and the whole content_state "
    "each time (type and title first), and `end_stream` when it is done. `start_live_activity`, "
    "`update_live_activity` and `end_live_activity` do the same by activity_id. "
    "`list_live_activities` and `get_live_activity` tell whether the devices show it."
)


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the Lockstep server is and how to call it."""

    url: str
    key: str
    timeout: float

    def __repr__(self) -> str:  # the key never reaches a log line or a traceback
        return f"Connection(url={self.url!r}, timeout={self.timeout!r})"


def _send(request: ApiRequest, connection: Connection) -> ApiResponse:
    return send(request, url=connection.url, key=connection.key, timeout=connection.timeout)


async def call(tool: Tool, arguments: dict[str, Any] | None, connection: Connection) -> Outcome:
    """Run one tool call against the server; every failure is an error `Outcome`."""
    try:
        request = build_call(tool, arguments)
    except ToolInputError as exc:
        return Outcome(f"{tool.name}: {exc}", None, is_error=True)
    try:
        response = await anyio.to_thread.run_sync(functools.partial(_send, request, connection))
    except ClientError as exc:
        return Outcome(f"{tool.name}: {exc}", None, is_error=True)
    result = outcome(response)
    if result.is_error:
        return Outcome(f"{tool.name}: {result.text}", None, is_error=True)
    return result


def _result(result: Outcome) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=result.text)],
        structured_content=result.data,
        is_error=result.is_error,
    )


_DESTRUCTIVE = frozenset({"end_stream", "end_live_activity"})
_IDEMPOTENT = "/api/live-activity/stream/"


def _listed(tool: Tool) -> types.Tool:
    method = tool.endpoint.method
    return types.Tool(
        name=tool.name,
        title=tool.endpoint.summary,
        description=tool.spec.description,
        input_schema=tool.schema,
        output_schema=tool.output_schema,
        # GETs only read; a stream PUT or DELETE repeated changes nothing more (a noop), but a
        # notification replace pushes again; ending an activity takes it off the lock screens.
        annotations=types.ToolAnnotations(
            read_only_hint=method == "GET",
            destructive_hint=tool.name in _DESTRUCTIVE,
            idempotent_hint=method == "GET" or tool.endpoint.template.startswith(_IDEMPOTENT),
            open_world_hint=False,
        ),
    )


def build_server(connection: Connection, tools: dict[str, Tool] | None = None) -> Server[Any]:
    """The MCP server offering `tools` (default: the whole table) against `connection`."""
    table = make_tools() if tools is None else tools
    listed = [_listed(tool) for tool in table.values()]

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = table.get(params.name)
        if tool is None:
            known = ", ".join(table)
            return _result(Outcome(f"unknown tool {params.name!r}; tools: {known}", None, True))
        return _result(await call(tool, params.arguments, connection))

    return Server(
        "lockstep",
        version=_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(connection: Connection) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    server = build_server(connection)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _version() -> str:
    try:
        return metadata.version("lockstep")
    except metadata.PackageNotFoundError:
        return "0.0.0"
