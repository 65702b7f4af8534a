"""The MCP tool table: schemas built from the route table and the contract, calls built from
arguments (pure; `tests/e2e/test_mcp.py` drives the real server over stdio)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from engine.cli.common import ApiResponse
from engine.cli.mcp_tools import (
    TOOLS,
    ToolInputError,
    ToolSpec,
    build_call,
    make_tools,
    outcome,
)
from engine.server.contract import models
from engine.server.http.endpoint import Access, Context, Endpoint, Reply
from engine.server.http.openapi import build_openapi
from engine.server.http.routes import ENDPOINTS

TABLE = make_tools()


def test_every_tool_names_a_route_of_the_table() -> None:
    assert list(TABLE) == [spec.name for spec in TOOLS]
    by_id = {ep.operation_id: ep for ep in ENDPOINTS}
    for tool in TABLE.values():
        assert tool.endpoint is by_id[tool.spec.operation_id]
        assert tool.endpoint.access is Access.SEND


@pytest.mark.parametrize(
    ("tool", "request_type"),
    [
        ("stream", models.StreamRequest),
        ("end_stream", models.StreamDeleteRequest),
        ("start_live_activity", models.StartRequest),
        ("update_live_activity", models.UpdateRequest),
        ("end_live_activity", models.EndRequest),
    ],
)
def test_body_fields_are_msgspecs_schema_of_the_request_type(
    tool: str, request_type: type[Any]
) -> None:
    (ref,), defs = msgspec.json.schema_components([request_type], ref_template="#/$defs/{name}")
    body = defs.pop(ref["$ref"].rpartition("/")[2])
    schema = TABLE[tool].schema
    params = set(TABLE[tool].path_params)
    assert {k: v for k, v in schema["properties"].items() if k not in params} == body["properties"]
    assert schema["$defs"] == defs
    assert schema["type"] == "object" and schema["additionalProperties"] is False


def test_path_and_query_parameters_carry_the_servers_rules() -> None:
    stream = TABLE["end_stream"].schema
    assert stream["properties"]["stream_key"]["pattern"] == models.STREAM_KEY_PATTERN
    assert stream["required"] == ["stream_key"]  # the DELETE body is optional
    listing = TABLE["list_live_activities"].schema
    assert listing["properties"]["state"]["enum"] == list(models.RECIPIENT_STATES)
    assert listing["properties"]["limit"]["maximum"] == 500
    assert "required" not in listing and "$defs" not in listing


def test_a_new_route_is_one_entry() -> None:
    class Ping(msgspec.Struct, kw_only=True):
        """A made-up request."""

        text: str
        loud: bool = False

    async def handler(ctx: Context, params: Any, body: bytes) -> Reply:
        raise AssertionError("not called")

    route = Endpoint("POST", "/api/ping/{device_id}", Access.SEND, handler, "ping", "Ping",
                     request=Ping)  # fmt: skip
    tools = make_tools((*TOOLS, ToolSpec("ping", "ping", "Ping a device.")), (*ENDPOINTS, route))
    assert tools["ping"].schema["required"] == ["device_id", "text"]
    call = build_call(tools["ping"], {"device_id": "phone 1", "text": "hi"})
    assert (call.method, call.path, call.body) == ("POST", "/ping/phone%201", {"text": "hi"})


def test_a_table_naming_an_unknown_route_is_refused() -> None:
    with pytest.raises(ValueError, match="no route has operation id 'nope'"):
        make_tools((ToolSpec("x", "nope", "?"),))
    with pytest.raises(ValueError, match="listed twice"):
        make_tools((TOOLS[0], replace(TOOLS[1], name=TOOLS[0].name)))
    with pytest.raises(ValueError, match="/healthz is not under /api"):
        make_tools((ToolSpec("health", "getHealth", "?"),))


def test_a_body_field_shadowing_a_parameter_is_refused() -> None:
    class Clash(msgspec.Struct):
        stream_key: str

    async def handler(ctx: Context, params: Any, body: bytes) -> Reply:
        raise AssertionError("not called")

    route = Endpoint("PUT", "/api/x/{stream_key}", Access.SEND, handler, "x", "X", request=Clash)
    with pytest.raises(ValueError, match="'stream_key' is a parameter and a field"):
        make_tools((ToolSpec("x", "x", "?"),), (route,))


def test_calls_become_requests() -> None:
    state = {"type": "progress", "title": "T", "percentage": 5}
    call = build_call(TABLE["stream"], {"stream_key": "a-1", "content_state": state})
    assert (call.method, call.path) == ("PUT", "/live-activity/stream/a-1")
    assert call.body == {"content_state": state}
    # A DELETE without a final state has no body at all.
    call = build_call(TABLE["end_stream"], {"stream_key": "a-1"})
    assert (call.method, call.path, call.body) == ("DELETE", "/live-activity/stream/a-1", None)
    # Path values are quoted whole: no way to reach another route.
    call = build_call(TABLE["get_live_activity"], {"activity_id": "../devices"})
    assert call.path == "/live-activity/..%2Fdevices" and call.body is None
    call = build_call(TABLE["list_live_activities"], {"state": "live", "limit": 5})
    assert call.path == "/live-activities?state=live&limit=5"
    assert build_call(TABLE["list_live_activities"], None).path == "/live-activities"
    args = {"activity_id": "A", "content_state": {"title": "x"}}
    call = build_call(TABLE["update_live_activity"], args)
    assert (call.method, call.path, call.body) == ("POST", "/live-activity/update", args)


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("stream", {"stream_key": "k", "colour": 1}, "unknown argument colour; stream takes:"),
        ("stream", {"a": 1, "b": 2}, "unknown arguments a, b;"),
        ("end_stream", {}, "stream_key: is required, a non-empty string"),
        ("get_stream", {"stream_key": ""}, "stream_key: is required"),
        ("get_live_activity", {"activity_id": 7}, "activity_id: is required"),
        ("list_live_activities", {"limit": 1.5}, "limit: must be a string or an integer"),
        ("list_live_activities", {"limit": True}, "limit: must be a string or an integer"),
    ],
)
def test_malformed_arguments_say_what_is_wrong(
    tool: str, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolInputError) as caught:
        build_call(TABLE[tool], args)
    assert message in str(caught.value)


def test_outcomes() -> None:
    good = outcome(ApiResponse(200, {"success": True, "activity_id": "A"}))
    assert not good.is_error and good.data == {"success": True, "activity_id": "A"}
    assert '"activity_id": "A"' in good.text
    bad = outcome(ApiResponse(400, {"error": "bad_request", "message": "content_state.type: nope"}))
    assert bad.is_error and bad.data is None
    assert bad.text == "content_state.type: nope (HTTP 400, bad_request)"
    assert outcome(ApiResponse(502, "<html>bad gateway</html>")).text.startswith("HTTP 502: <html>")


def test_tool_schemas_agree_with_the_openapi_document() -> None:
    document = build_openapi()
    components = document["components"]["schemas"]

    def local(value: Any) -> Any:  # the document's refs, spelled as a tool schema spells them
        text = json.dumps(value).replace("#/components/schemas/", "#/$defs/")
        return json.loads(text)

    for tool in TABLE.values():
        operation = document["paths"][tool.endpoint.template.removeprefix("/api")][
            tool.endpoint.method.lower()
        ]
        params = {p["name"]: p for p in operation.get("parameters", [])}
        props = tool.schema["properties"]
        for name, param in params.items():
            assert {k: v for k, v in props[name].items() if k != "description"} == param["schema"]
        fields: dict[str, Any] = {}
        if "requestBody" in operation:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            fields = components[ref.rpartition("/")[2]]["properties"]
            assert {k: props[k] for k in fields} == local(fields)
            for name, schema in tool.schema["$defs"].items():
                assert schema == local(components[name])
        assert set(props) == set(params) | set(fields)
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert tool.output_schema is not None
        output = {k: v for k, v in tool.output_schema.items() if k != "$defs"}
        assert output == local(components[answer.rpartition("/")[2]])
