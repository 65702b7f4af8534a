"""`lockstep mcp` driven by the official MCP SDK's own client over stdio, against a live server.

The client spawns `python -m engine.cli mcp` (the server and key from the environment, as an MCP
client configuration passes them), lists the tools, and calls them; the simulated iPhones must
show what the tools sent. Bad input and the server's 4xx answers must come back as tool errors
carrying the server's message, and the MCP server must keep serving after each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from engine.cli.main import main
from engine.cli.mcp_server import Connection, build_server
from tests.helpers.serverkit import API_KEY, LiveServer, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=5301)

DEVICES = 2
TIMEOUT = 60.0  # the whole test: spawning the MCP server, its calls, the devices' deliveries
DELIVERY_TIMEOUT = 10.0
TOOLS = {
    "stream",
    "end_stream",
    "start_live_activity",
    "update_live_activity",
    "end_live_activity",
    "send_push_notification",
    "replace_push_notification",
    "list_live_activities",
    "get_live_activity",
    "get_stream",
}


@asynccontextmanager
async def mcp_client(
    live: LiveServer, cwd: Path, *, mode: str = "auto", env: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """The SDK's client connected to a freshly spawned `lockstep mcp` for `live`; `mode`:
    "auto" (the newest protocol, found by probing) or "legacy" (the `initialize` handshake
    that most MCP clients in use still speak)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "engine.cli", "mcp"],
        env={"LOCKSTEP_URL": live.api_base, "LOCKSTEP_API_KEY": API_KEY} if env is None else env,
        cwd=cwd,
    )
    async with Client(params, read_timeout_seconds=30.0, mode=mode) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    """The tool result's text."""
    (block,) = result.content
    assert isinstance(block, TextContent), block
    return block.text


def ok(result: CallToolResult) -> dict[str, Any]:
    """The JSON answer of a successful call."""
    assert not result.is_error, text_of(result)
    data = json.loads(text_of(result))
    assert result.structured_content == data
    assert isinstance(data, dict)
    return data


def failed(result: CallToolResult) -> str:
    """The message of a failed call (it must be a tool error, never a protocol error)."""
    assert result.is_error, text_of(result)
    text = text_of(result)
    assert API_KEY not in text
    return text


async def shown_everywhere(
    live: LiveServer, activity_id: str, state: str, content: dict[str, Any]
) -> None:
    """Wait until every simulated iPhone shows `activity_id` in `state` with `content`."""

    def done(shown: dict[str, dict[str, Any]]) -> bool:
        return len(shown) == DEVICES and all(
            act["state"] == state
            and all(act["content_state"].get(k) == v for k, v in content.items())
            for act in shown.values()
        )

    await trio.to_thread.run_sync(
        lambda: wait_until(
            lambda: live.shown(activity_id),
            done,
            timeout=DELIVERY_TIMEOUT,
            what=f"{activity_id} {state} with {content!r} on {DEVICES} devices",
        )
    )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_are_listed_with_schemas_from_the_contract(
    server: LiveServer, tmp_path: Path, mode: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with mcp_client(server, tmp_path, mode=mode) as client:
            listed = await client.list_tools()
            # legacy: an `initialize` handshake version (2025-11-25 and older)
            assert (client.protocol_version < "2026") is (mode == "legacy")
            text = failed(await client.call_tool("get_live_activity", {"activity_id": "none"}))
            assert "HTTP 404" in text, text
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOLS
    for tool in tools.values():  # the answers are checked against these by the SDK's client
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is tool.name.startswith(("get_", "list_"))
    stream = tools["stream"].input_schema
    assert stream["required"] == ["stream_key", "content_state"]
    assert stream["properties"]["stream_key"]["pattern"] == "^[A-Za-z0-9_-]{1,255}$"
    content = stream["$defs"]["ContentState"]["properties"]
    assert {"title", "type", "percentage", "number_of_steps", "metrics"} <= set(content)
    assert set(tools["list_live_activities"].input_schema["properties"]) == {
        "state",
        "limit",
        "after",
    }
    assert tools["update_live_activity"].input_schema["required"] == [
        "activity_id",
        "content_state",
    ]


async def test_a_stream_reaches_the_devices_and_ends(server: LiveServer, tmp_path: Path) -> None:
    first = {"type": "segmented_progress", "title": "Agent run", "number_of_steps": 4,
             "current_step": 1}  # fmt: skip
    last = {**first, "title": "Agent done", "current_step": 4}
    with trio.fail_after(TIMEOUT):
        async with mcp_client(server, tmp_path) as client:
            put = ok(
                await client.call_tool(
                    "stream", {"stream_key": "agent-run-1", "content_state": first}
                )
            )
            activity_id = put["activity_id"]
            assert put["stream_key"] == "agent-run-1"
            await shown_everywhere(server, activity_id, "active", first)

            ended = ok(
                await client.call_tool(
                    "end_stream", {"stream_key": "agent-run-1", "content_state": last}
                )
            )
            assert ended["operation"] == "ended" and ended["activity_id"] == activity_id
            await shown_everywhere(server, activity_id, "ended", last)

            status = ok(await client.call_tool("get_stream", {"stream_key": "agent-run-1"}))
            assert status["activity_id"] == activity_id and status["ended"] is True


async def test_a_push_notification_reaches_the_devices_and_is_replaced(
    server: LiveServer, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with mcp_client(server, tmp_path) as client:
            sent = ok(
                await client.call_tool(
                    "send_push_notification", {"title": "Agent run", "message": "tests pass"}
                )
            )
            notification_id = sent["notification_id"]
            assert sent["devices_targeted"] == DEVICES
            await notes_everywhere(server, notification_id, "tests pass")
            replaced = ok(
                await client.call_tool(
                    "replace_push_notification",
                    {"notification_id": notification_id, "title": "Agent run", "message": "done"},
                )
            )
            assert replaced["notification_id"] == notification_id
            await notes_everywhere(server, notification_id, "done")
            text = failed(await client.call_tool("send_push_notification", {"message": "no title"}))
            assert "title" in text


async def notes_everywhere(server: LiveServer, notification_id: str, body: str) -> None:
    """Wait until every phone shows one notification `notification_id`, with `body`."""
    deadline = trio.current_time() + DELIVERY_TIMEOUT
    while True:
        devices = await trio.to_thread.run_sync(server.devices)
        mine = [
            [n for n in d.get("notifications", []) if n.get("collapse_id") == notification_id]
            for d in devices
        ]
        if len(mine) == DEVICES and all(len(m) == 1 and m[0].get("body") == body for m in mine):
            return
        assert trio.current_time() < deadline, mine
        await trio.sleep(0.1)


async def test_start_update_end_by_id_and_list(server: LiveServer, tmp_path: Path) -> None:
    start = {"type": "progress", "title": "Backup", "percentage": 10}
    with trio.fail_after(TIMEOUT):
        async with mcp_client(server, tmp_path) as client:
            started = ok(await client.call_tool("start_live_activity", {"content_state": start}))
            activity_id = started["activity_id"]
            await shown_everywhere(server, activity_id, "active", start)

            update = {"title": "Backup", "percentage": 60}
            args = {"activity_id": activity_id, "content_state": update}
            ok(await client.call_tool("update_live_activity", args))
            await shown_everywhere(server, activity_id, "active", update)

            final = {"title": "Backup done", "percentage": 100}
            args = {"activity_id": activity_id, "content_state": final}
            assert ok(await client.call_tool("end_live_activity", args))["success"] is True
            await shown_everywhere(server, activity_id, "ended", final)

            one = ok(await client.call_tool("get_live_activity", {"activity_id": activity_id}))
            assert one["ended"] is True and len(one["devices"]) == DEVICES
            page = ok(await client.call_tool("list_live_activities", {"limit": 500}))
            listed = {item["activity_id"]: item for item in page["activities"]}
            assert listed[activity_id]["ended"] is True
            ended_only = ok(
                await client.call_tool("list_live_activities", {"state": "ended", "limit": 500})
            )
            assert activity_id in {item["activity_id"] for item in ended_only["activities"]}


async def test_errors_are_tool_errors_with_the_servers_message(
    server: LiveServer, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with mcp_client(server, tmp_path) as client:
            # The server's 400 names the field.
            bad_type = {"stream_key": "x1", "content_state": {"type": "bogus", "title": "T"}}
            text = failed(await client.call_tool("stream", bad_type))
            assert "content_state.type" in text and "HTTP 400" in text, text
            # The server's 404.
            text = failed(await client.call_tool("get_live_activity", {"activity_id": "nope"}))
            assert "HTTP 404" in text, text
            # Starting without a type: the server's 400.
            text = failed(
                await client.call_tool("start_live_activity", {"content_state": {"title": "T"}})
            )
            assert "content_state.type" in text and "is required" in text, text
            # Caught before any request: unknown arguments, a missing path parameter, no tool.
            text = failed(await client.call_tool("stream", {"stream_key": "x", "colour": "red"}))
            assert "unknown argument colour" in text, text
            text = failed(await client.call_tool("end_stream", {}))
            assert "stream_key: is required" in text, text
            text = failed(await client.call_tool("send_fax", {}))
            assert "unknown tool 'send_fax'" in text, text
            text = failed(await client.call_tool("list_live_activities", {"limit": "many"}))
            assert "limit must be an integer" in text, text
            # Nothing of that stopped the server; the failed stream left nothing behind.
            text = failed(await client.call_tool("get_stream", {"stream_key": "x1"}))
            assert "HTTP 404" in text, text
            state = {"type": "value", "title": "Still here", "value": 1}
            ok(await client.call_tool("stream", {"stream_key": "x2", "content_state": state}))


async def test_the_key_file_in_the_working_directory_is_used(
    server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "lockstep-data").mkdir()
    (tmp_path / "lockstep-data" / "api-key").write_text(API_KEY + "\n", encoding="utf-8")
    with trio.fail_after(TIMEOUT):
        async with mcp_client(server, tmp_path, env={"LOCKSTEP_URL": server.api_base}) as client:
            page = ok(await client.call_tool("list_live_activities", {"limit": 1}))
    assert "activities" in page


async def test_an_unreachable_server_is_a_tool_error(tmp_path: Path) -> None:
    # A port nothing listens on: bind one, note it, close it.
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "engine.cli", "mcp", "--url", f"http://127.0.0.1:{port}/api", "--key", "k"],
        cwd=tmp_path,
    )
    with trio.fail_after(TIMEOUT):
        async with Client(params, read_timeout_seconds=30.0) as client:
            text = failed(await client.call_tool("get_live_activity", {"activity_id": "a"}))
    assert "cannot reach" in text, text


def run_cli(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m engine.cli ...` (or `python -c code`) with no Lockstep variables set."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_without_a_key_it_says_where_to_put_one(tmp_path: Path) -> None:
    done = run_cli("mcp", cwd=tmp_path)
    assert done.returncode == 2
    assert "no API key: pass --key, set LOCKSTEP_API_KEY" in done.stderr
    assert done.stdout == ""


def test_without_the_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    # `sys.modules[name] = None` makes `import name` fail as if it were not installed.
    code = (
        "import sys\n"
        "sys.modules['mcp'] = None\n"
        "from engine.cli.main import main\n"
        "sys.exit(main(['mcp', '--key', 'k']))\n"
    )
    done = run_cli(cwd=tmp_path, code=code)
    assert done.returncode == 2, done.stderr
    assert "needs the `mcp` extra" in done.stderr
    assert "pip install 'lockstep[mcp]'" in done.stderr


def test_the_readme_client_configuration_runs_lockstep_mcp() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n### MCP server for AI agents\n") :]
    start = section.index("```json\n") + len("```json\n")
    config = json.loads(section[start : section.index("```", start)])
    entry = config["mcpServers"]["lockstep"]
    assert entry["command"].endswith("lockstep") and entry["args"] == ["mcp"]
    assert set(entry["env"]) == {"LOCKSTEP_URL", "LOCKSTEP_API_KEY"}
    assert entry["env"]["LOCKSTEP_URL"].endswith("/api")


async def test_in_process_the_same_server_answers_the_same(server: LiveServer) -> None:
    # The server object `lockstep mcp` serves, connected in-process (no stdio, same handlers).
    connection = Connection(url=server.api_base, key=API_KEY, timeout=10.0)
    assert API_KEY not in repr(connection)
    state = {"type": "value", "title": "In process", "value": 7}
    with trio.fail_after(TIMEOUT):
        async with Client(build_server(connection)) as client:
            assert len((await client.list_tools()).tools) == len(TOOLS)
            put = ok(
                await client.call_tool("stream", {"stream_key": "in-proc", "content_state": state})
            )
            await shown_everywhere(server, put["activity_id"], "active", state)
            assert "unknown tool 'x'" in failed(await client.call_tool("x", {}))
            assert "unknown argument y" in failed(await client.call_tool("stream", {"y": 1}))
            text = failed(await client.call_tool("get_stream", {"stream_key": "bad key"}))
            assert "stream_key" in text and "HTTP 400" in text, text


def test_the_command_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCKSTEP_API_KEY", raising=False)
    assert main(["mcp", "--url", "http://127.0.0.1:1/api"]) == 2  # no key anywhere
    assert "lockstep mcp: error: no API key" in capsys.readouterr().err
    assert main(["mcp", "--url", "ftp://x", "--key", "k"]) == 2
    assert "--url must be an http:// or https:// URL" in capsys.readouterr().err
    # The SDK missing: `import` of the module that needs it fails as if it were not installed.
    monkeypatch.setitem(sys.modules, "engine.cli.mcp_server", None)
    assert main(["mcp", "--key", "k"]) == 2
    assert "needs the `mcp` extra" in capsys.readouterr().err
