"""The tools `lockstep mcp` offers to AI agents: a table over the HTTP API's route table.

Each tool names one route of `engine.server.http.routes.ENDPOINTS` by its operation id, so its
method, path, query parameters and body type come from the very table the server routes with.
A tool's input schema is one flat JSON object: the route's path parameters (with the OpenAPI
document's schemas, `openapi.PATH_PARAMETERS`), its query parameters, and the fields of its
request body, whose schemas are msgspec's JSON schema of the contract's request types — the same
machinery that builds the OpenAPI document — with the nested types under `$defs`. Its output
schema is, the same way, that of the route's answer model.

Adding a tool for a new route (a push notification, say) is one `ToolSpec` entry in `TOOLS`.

Pure: `input_schema` builds a schema, `build_call` turns a tool's arguments into an
`ApiRequest` (or a `ToolInputError` saying what is wrong), `outcome` turns the server's answer
into what the agent sees. `engine.cli.mcp_server` does the I/O.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from engine.cli.common import ApiRequest, ApiResponse, error_text
from engine.server.contract.responses import RECIPIENT_STATES
from engine.server.http.endpoint import Endpoint
from engine.server.http.openapi import API_PREFIX, PATH_PARAMETERS
from engine.server.http.routes import ENDPOINTS

__all__ = [
    "TOOLS",
    "Outcome",
    "Tool",
    "ToolInputError",
    "ToolSpec",
    "build_call",
    "input_schema",
    "make_tools",
    "outcome",
    "output_schema",
]

_REF: Final = "#/$defs/{name}"


class ToolInputError(Exception):
    """A tool's arguments cannot make a request; the message says which argument and why."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One entry of the tool table: the tool's name, the route it calls, what it is for."""

    name: str
    operation_id: str  # an `Endpoint.operation_id` of the route table
    description: str


TOOLS: Final[tuple[ToolSpec, ...]] = (
    ToolSpec(
        "stream",
        "reconcileLiveActivityStream",
        "Show the latest state of an ongoing thing (a deploy, a job, an agent run) under a "
        "stream key: the first call starts a Live Activity on the devices (content_state.type "
        "is required then), later calls update it. Each call sends the whole content state.",
    ),
    ToolSpec(
        "end_stream",
        "endLiveActivityStream",
        "End the stream key's Live Activity, optionally with a final content state "
        "(content_state.auto_dismiss_seconds or _minutes: when it leaves the lock screen).",
    ),
    ToolSpec(
        "start_live_activity",
        "startLiveActivity",
        "Start a Live Activity (content_state.type and title are required); answers with the "
        "activity_id that update_live_activity and end_live_activity take.",
    ),
    ToolSpec(
        "update_live_activity",
        "updateLiveActivity",
        "Update a Live Activity by its activity_id; fields left out keep their values.",
    ),
    ToolSpec(
        "end_live_activity",
        "endLiveActivity",
        "End a Live Activity by its activity_id, with a final content state.",
    ),
    ToolSpec(
        "send_push_notification",
        "sendPushNotification",
        "Send a push notification to the devices' apps (title required; message, subtitle, "
        "interruption_level, redirection, channels, ...): for outcomes and one-off alerts. "
        "Answers with the notification_id that replace_push_notification takes.",
    ),
    ToolSpec(
        "replace_push_notification",
        "replacePushNotification",
        "Replace a sent push notification in place on the devices it went to (by its "
        "notification_id): the phone shows one notification with the new text.",
    ),
    ToolSpec(
        "list_live_activities",
        "listLiveActivityStatuses",
        "List Live Activities with each device's delivery status ("
        + ", ".join(RECIPIENT_STATES)
        + "), a page at a time; `state` keeps those with a device in that state.",
    ),
    ToolSpec(
        "get_live_activity",
        "getLiveActivityStatus",
        "Where each targeted device stands with one Live Activity (by activity_id).",
    ),
    ToolSpec(
        "get_stream",
        "getLiveActivityStreamStatus",
        "Where each targeted device stands with a stream key's current Live Activity.",
    ),
)
"""Every tool, in the order agents see them."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool bound to its route: what `tools/list` shows and how a call becomes a request."""

    spec: ToolSpec
    endpoint: Endpoint
    schema: dict[str, Any]
    output_schema: dict[str, Any] | None  # the route's JSON answer (None: not a model)

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.spec.name

    @property
    def path_params(self) -> tuple[str, ...]:
        """The route's path parameters, in path order."""
        return _path_params(self.endpoint.template)

    @property
    def query_params(self) -> tuple[str, ...]:
        """The route's query parameters."""
        return tuple(q.name for q in self.endpoint.query)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a call shows the agent: a text, the JSON answer, and whether it is an error."""

    text: str
    data: dict[str, Any] | None
    is_error: bool


def make_tools(
    specs: Sequence[ToolSpec] = TOOLS, endpoints: Sequence[Endpoint] = ENDPOINTS
) -> dict[str, Tool]:
    """The tools of `specs`, by name, each bound to its route in `endpoints`."""
    by_id = {ep.operation_id: ep for ep in endpoints}
    tools: dict[str, Tool] = {}
    for spec in specs:
        endpoint = by_id.get(spec.operation_id)
        if endpoint is None:
            raise ValueError(f"tool {spec.name!r}: no route has operation id {spec.operation_id!r}")
        if not endpoint.template.startswith(API_PREFIX + "/"):
            raise ValueError(f"tool {spec.name!r}: {endpoint.template} is not under {API_PREFIX}")
        if spec.name in tools:
            raise ValueError(f"tool {spec.name!r} is listed twice")
        tools[spec.name] = Tool(spec, endpoint, input_schema(endpoint), output_schema(endpoint))
    return tools


def input_schema(endpoint: Endpoint) -> dict[str, Any]:
    """One JSON object schema for a route's path parameters, query parameters and body fields."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name in _path_params(endpoint.template):
        param = PATH_PARAMETERS[name]
        properties[name] = {"description": param["description"], **param["schema"]}
        required.append(name)
    for query in endpoint.query:
        properties[query.name] = {"description": query.description, **query.schema}
    schema: dict[str, Any] = {"type": "object"}
    if endpoint.request is not None:
        (ref,), defs = msgspec.json.schema_components([endpoint.request], ref_template=_REF)
        body = defs.pop(ref["$ref"].rpartition("/")[2])
        for name, field in body.get("properties", {}).items():
            if name in properties:
                raise ValueError(f"{endpoint.operation_id}: {name!r} is a parameter and a field")
            properties[name] = field
        if endpoint.body_required:
            required += body.get("required", [])
        if body.get("description"):
            schema["description"] = body["description"]
        if defs:
            schema["$defs"] = defs
    schema["properties"] = properties
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def output_schema(endpoint: Endpoint) -> dict[str, Any] | None:
    """The schema of a route's 200 answer, when it is a contract model (an object)."""
    if endpoint.response is None or not isinstance(endpoint.response, type):
        return None
    if not issubclass(endpoint.response, msgspec.Struct):
        return None
    (ref,), defs = msgspec.json.schema_components([endpoint.response], ref_template=_REF)
    schema: dict[str, Any] = defs.pop(ref["$ref"].rpartition("/")[2])
    return {**schema, "$defs": defs} if defs else schema


def build_call(tool: Tool, arguments: Mapping[str, Any] | None) -> ApiRequest:
    """The HTTP request a call of `tool` with `arguments` makes.

    Only the shape is checked here (an object, known argument names, the path parameters given
    as non-empty strings); the server checks the body and answers 400 naming the field.
    """
    args = dict(arguments or {})
    known = set(tool.schema["properties"])
    unknown = sorted(set(args) - known)
    if unknown:
        raise ToolInputError(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"{tool.name} takes: {', '.join(sorted(known))}"
        )
    path = tool.endpoint.template.removeprefix(API_PREFIX)
    for name in tool.path_params:
        value = args.pop(name, None)
        if not isinstance(value, str) or not value:
            raise ToolInputError(f"{name}: is required, a non-empty string")
        path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    query = {}
    for name in tool.query_params:
        value = args.pop(name, None)
        if value is not None:
            query[name] = _query_value(name, value)
    if query:
        path += "?" + urllib.parse.urlencode(query)
    body: dict[str, Any] | None = None
    if tool.endpoint.request is not None and (args or tool.endpoint.body_required):
        body = args
    return ApiRequest(tool.endpoint.method, path, body)


def _query_value(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ToolInputError(f"{name}: must be a string or an integer")
    return str(value)


def outcome(response: ApiResponse) -> Outcome:
    """What the agent sees of an answer: the JSON on success; the server's message on an error."""
    if not response.ok:
        return Outcome(error_text(response), None, is_error=True)
    body = response.body
    text = json.dumps(body, indent=2, ensure_ascii=False) if body is not None else "OK"
    return Outcome(text, body if isinstance(body, dict) else None, is_error=False)


def _path_params(template: str) -> tuple[str, ...]:
    return tuple(seg[1:-1] for seg in template.split("/") if seg.startswith("{"))
