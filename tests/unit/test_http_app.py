"""The HTTP API's ASGI app driven directly (no sockets) over a fake service."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.apns.reasons import Reason
from engine.results import DeliveryResult, DeliveryStatus
from engine.server.contract import errors, models
from engine.server.http.app import UNMATCHED, create_app
from engine.server.http.endpoint import Access
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import CONTENT_TYPE, LATENCY_BUCKETS, PromMetrics
from engine.server.http.routes import ENDPOINTS
from tests.helpers.asgicall import call
from tests.helpers.asgikit import assert_error, make, must
from tests.helpers.fakeservice import (
    ACTIVITY_BODY,
    DEVICE_BODY,
    DEVICE_KEY,
    REPORT_BODY,
    SEND_KEY,
    START_BODY,
    STREAM_BODY,
    TOKEN,
    TS,
    FakeService,
)

# (method, path, body, key kind that may call it, the service call it makes)
ROUTES: list[tuple[str, str, Any, Access, str]] = [
    ("PUT", "/api/live-activity/stream/prod-web_1", STREAM_BODY, Access.SEND, "stream"),
    ("DELETE", "/api/live-activity/stream/prod-web_1", None, Access.SEND, "end_stream"),
    ("GET", "/api/live-activity/stream/s1", None, Access.SEND, "stream_status"),
    ("GET", "/api/live-activity/act-1", None, Access.SEND, "status"),
    ("GET", "/api/live-activities", None, Access.SEND, "status_page"),
    ("POST", "/api/live-activity/start", START_BODY, Access.SEND, "start"),
    ("POST", "/api/live-activity/update", ACTIVITY_BODY, Access.SEND, "update"),
    ("POST", "/api/live-activity/end", ACTIVITY_BODY, Access.SEND, "end"),
    ("GET", "/api/devices", None, Access.SEND, "list"),
    ("GET", "/api/dashboard", None, Access.SEND, "status_recent"),
    ("PUT", "/api/devices/iphone-1", DEVICE_BODY, Access.DEVICE, "register"),
    ("DELETE", "/api/devices/iphone-1", None, Access.DEVICE, "unregister"),
    ("POST", "/api/activity-tokens", REPORT_BODY, Access.DEVICE, "report_token"),
    ("POST", "/api/metrics/revenue.eu/value", {"value": 12.5}, Access.SEND, "set_metric"),
    ("GET", "/api/devices/iphone-1/metrics", None, Access.DEVICE, "device_metrics"),
    ("GET", "/api/webhooks/gh/deliveries", None, Access.SEND, "webhook_deliveries"),
    ("POST", "/api/webhooks/gh/deliveries/d-1/replay", None, Access.SEND, "webhook_replay"),
    ("POST", "/api/push-notification", {"title": "Deploy"}, Access.SEND, "push"),
    ("PUT", "/api/push-notification/pn_1", {"title": "Deployed"}, Access.SEND, "replace"),
    ("POST", "/api/badge", {"badge": 3}, Access.SEND, "badge"),
]
KEY_OF = {Access.SEND: SEND_KEY, Access.DEVICE: DEVICE_KEY}
OTHER_KEY = {Access.SEND: DEVICE_KEY, Access.DEVICE: SEND_KEY}


def test_route_table_covers_every_authenticated_endpoint() -> None:
    table = {(m, p) for m, p, _, _, _ in ROUTES}
    secured = [e for e in ENDPOINTS if e.access in (Access.SEND, Access.DEVICE)]
    assert len(secured) == len(ROUTES)
    for ep in secured:
        assert any(m == ep.method and re.fullmatch(_regex(ep.template), p) for m, p in table)


def _regex(template: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "[^/]+", template)


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "access", "op"), ROUTES)
async def test_each_route_answers_its_own_key_kind(
    method: str, path: str, body: Any, access: Access, op: str
) -> None:
    h = make()
    reply = await must(h.app, method, path, body, key=KEY_OF[access])
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert [c[0] for c in h.service.calls] == [op]
    assert isinstance(reply.json(), dict)


@pytest.mark.parametrize(("method", "path", "body", "access", "op"), ROUTES)
@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("", 401, "unauthorized"),
        ("Bearer", 401, "unauthorized"),
        ("Bearer   ", 401, "unauthorized"),
        (f"Basic {SEND_KEY}", 401, "unauthorized"),
        (SEND_KEY, 401, "unauthorized"),  # no scheme
        ("Bearer nope", 403, "forbidden"),
        (f"Bearer {SEND_KEY}x", 403, "forbidden"),
        (f"Bearer {SEND_KEY[:-1]}", 403, "forbidden"),
        ("OTHER", 403, "forbidden"),  # the key of the other kind
    ],
)
async def test_auth_failures_never_reach_the_service(
    method: str,
    path: str,
    body: Any,
    access: Access,
    op: str,
    auth: str | None,
    status: int,
    code: str,
) -> None:
    h = make()
    if auth == "OTHER":
        auth = f"Bearer {OTHER_KEY[access]}"
    headers = [] if auth is None else [("authorization", auth)]
    reply = await must(h.app, method, path, body, headers=headers)
    assert_error(reply, status, code)
    assert h.service.calls == [] and h.recorded == []
    if status == 401:
        assert reply.headers["www-authenticate"] == "Bearer"
    assert SEND_KEY.encode() not in reply.body and DEVICE_KEY.encode() not in reply.body


async def test_bearer_scheme_is_case_insensitive_and_a_key_in_both_lists_opens_both() -> None:
    h = make()
    reply = await must(
        h.app, "GET", "/api/devices", headers=[("Authorization", f"bearer {SEND_KEY}")]
    )
    assert reply.status == 200
    both = create_app(
        FakeService(),
        api_keys=["k"],
        device_keys=["k"],
        metrics=PromMetrics(),
        openapi={},
    )
    assert (await must(both, "GET", "/api/devices", key="k")).status == 200
    assert (await must(both, "DELETE", "/api/devices/x", key="k")).status == 200


async def test_empty_configured_key_never_matches() -> None:
    h = make()
    reply = await must(h.app, "GET", "/api/devices", headers=[("authorization", "Bearer  ")])
    assert reply.status == 401


def test_app_repr_hides_keys() -> None:
    text = repr(make().app)
    assert SEND_KEY not in text and DEVICE_KEY not in text


# -- routing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/api/",
        "/api/nope",
        "/api/live-activity/stream/",
        "/api/live-activity/stream/a/b",
        "/api/devices/",
        "/healthz/",
        "/API/devices",
        "/ui/",
        "/ui/nope.js",
    ],
)
async def test_unknown_routes_are_404_before_auth(path: str) -> None:
    h = make()
    reply = await must(h.app, "GET", path)
    body = assert_error(reply, 404, "not_found")
    assert path in body["message"]
    assert h.metrics.api_requests_total.get(UNMATCHED, "404") == 1


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/api/live-activity/stream/k", "DELETE, GET, PUT"),
        ("PUT", "/api/live-activity/act-1", "GET"),
        ("GET", "/api/live-activity/start", "POST"),
        ("POST", "/api/devices", "GET"),
        ("POST", "/api/devices/iphone-1", "DELETE, PUT"),
        ("DELETE", "/healthz", "GET"),
        ("PUT", "/metrics", "GET"),
        ("POST", "/api/openapi.json", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(method: str, path: str, allow: str) -> None:
    h = make()
    reply = await must(h.app, method, path, key=SEND_KEY)
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == allow
    assert h.service.calls == []


# -- bodies -------------------------------------------------------------------------------------


async def test_body_over_the_limit_by_content_length_is_refused_before_reading() -> None:
    h = make(max_body=100)
    body = json.dumps(STREAM_BODY).encode() + b" " * 200
    reads: list[int] = []
    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/api/live-activity/stream/k",
        "headers": [
            (b"authorization", f"Bearer {SEND_KEY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": body}

    async def send(message: Any) -> None:
        sent.append(message)

    await h.app(scope, receive, send)
    assert reads == [] and sent[0]["status"] == 413
    payload = json.loads(sent[1]["body"])
    assert payload["error"] == "payload_too_large"
    assert payload["limit"] == 100 and payload["size"] == len(body)
    assert h.service.calls == []


async def test_body_over_the_limit_while_reading_chunks_is_413() -> None:
    h = make(max_body=100)
    reply = await must(
        h.app,
        "PUT",
        "/api/live-activity/stream/k",
        key=SEND_KEY,
        chunks=[b"{" + b" " * 60, b" " * 60, b"}"],
    )
    body = assert_error(reply, 413, "payload_too_large")
    assert body["limit"] == 100
    assert h.service.calls == []


async def test_body_exactly_at_the_limit_is_read() -> None:
    raw = json.dumps(STREAM_BODY).encode()
    h = make(max_body=len(raw))
    reply = await must(
        h.app, "PUT", "/api/live-activity/stream/k", key=SEND_KEY, chunks=[raw[:10], raw[10:]]
    )
    assert reply.status == 200
    assert h.service.calls[0][2].content_state.percentage == 40


async def test_bad_content_length_is_400() -> None:
    h = make()
    reply = await must(
        h.app,
        "PUT",
        "/api/live-activity/stream/k",
        STREAM_BODY,
        key=SEND_KEY,
        headers=[("content-length", "lots")],
    )
    assert_error(reply, 400, "bad_request")


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
        ("application/merge-patch+json", 200),
        ("application/x-www-form-urlencoded", 200),  # curl -d without -H
        ("text/html", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/xml", 415),
    ],
)
async def test_content_type_is_lenient_but_not_blind(content_type: str | None, status: int) -> None:
    h = make()
    headers = [] if content_type is None else [("content-type", content_type)]
    reply = await must(
        h.app, "PUT", "/api/live-activity/stream/k", STREAM_BODY, key=SEND_KEY, headers=headers
    )
    assert reply.status == status
    if status == 415:
        assert_error(reply, 415, "unsupported_media_type")
        assert h.service.calls == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[]", ""),
        (json.dumps({"content_state": {"title": "x", "color": "pink"}}).encode(), "color"),
        (json.dumps({"content_state": {"type": "progress"}}).encode(), "title"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(body: bytes, field: str) -> None:
    h = make()
    reply = await must(h.app, "PUT", "/api/live-activity/stream/k", body, key=SEND_KEY)
    payload = assert_error(reply, 400, "bad_request")
    assert field in payload["message"]
    assert h.service.calls == [] and h.recorded == []


@pytest.mark.parametrize("key", ["bad.key", "sp ace", "a" * 256, "ключ", "k\n"])
async def test_stream_key_is_checked_at_the_edge(key: str) -> None:
    h = make()
    for method in ("PUT", "DELETE"):
        reply = await must(
            h.app, method, f"/api/live-activity/stream/{key}", STREAM_BODY, key=SEND_KEY
        )
        assert "stream_key" in assert_error(reply, 400, "bad_request")["message"]
    assert h.service.calls == []


async def test_stream_delete_body_is_optional() -> None:
    h = make()
    assert (await must(h.app, "DELETE", "/api/live-activity/stream/k", key=SEND_KEY)).status == 200
    assert (
        await must(h.app, "DELETE", "/api/live-activity/stream/k", b"  \n", key=SEND_KEY)
    ).status == 200
    final = {"content_state": {"title": "Done"}}
    assert (
        await must(h.app, "DELETE", "/api/live-activity/stream/k", final, key=SEND_KEY)
    ).status == 200
    reqs = [c[2] for c in h.service.calls]
    assert reqs[0] is None and reqs[1] is None
    assert isinstance(reqs[2], models.StreamDeleteRequest)
    assert reqs[2].content_state is not None and reqs[2].content_state.title == "Done"


async def test_stream_put_hands_key_and_request_to_the_service() -> None:
    h = make()
    reply = await must(h.app, "PUT", "/api/live-activity/stream/prod-1", STREAM_BODY, key=SEND_KEY)
    assert reply.json() == {
        "success": True,
        "operation": "started",
        "stream_key": "prod-1",
        "activity_id": "act-1",
        "timestamp": TS,
    }
    _, key, req = h.service.calls[0]
    assert key == "prod-1" and isinstance(req, models.StreamRequest)


async def test_status_reads_answer_404_for_what_does_not_exist() -> None:
    h = make()
    body = (await must(h.app, "GET", "/api/live-activity/act-1", key=SEND_KEY)).json()
    assert body["devices"] == [
        {"device_id": "d1", "state": "live", "confirmed_version": 1, "current": True}
    ]
    assert_error(
        await must(h.app, "GET", "/api/live-activity/nope", key=SEND_KEY), 404, "not_found"
    )
    reply = await must(h.app, "GET", "/api/live-activity/stream/zz", key=SEND_KEY)
    assert_error(reply, 404, "not_found")
    reply = await must(h.app, "GET", "/api/live-activity/stream/bad%20key", key=SEND_KEY)
    assert reply.status == 400  # stream keys are checked at the edge for reads too


@pytest.mark.parametrize(
    ("query", "call"),
    [
        ("", ("status_page", None, 100, None)),
        ("?state=live&limit=5&after=la_1&other=x", ("status_page", "live", 5, "la_1")),
        ("?limit=7&limit=9", ("status_page", None, 7, None)),  # the first value counts
    ],
)
async def test_the_status_page_reads_its_query(query: str, call: tuple[Any, ...]) -> None:
    h = make()
    reply = await must(h.app, "GET", "/api/live-activities" + query, key=SEND_KEY)
    assert reply.status == 200 and reply.json()["next"] == "act-1"
    assert h.service.calls == [call]


async def test_a_status_page_limit_that_is_not_a_number_is_400() -> None:
    h = make()
    reply = await must(h.app, "GET", "/api/live-activities?limit=ten", key=SEND_KEY)
    assert assert_error(reply, 400, "bad_request")["message"].startswith("limit")
    assert h.service.calls == []


async def test_device_list_is_wrapped_in_an_object() -> None:
    h = make()
    reply = await must(h.app, "GET", "/api/devices", key=SEND_KEY)
    assert reply.json() == {
        "devices": [
            {
                "device_id": "iphone-1",
                "channels": [],
                "push_to_start_token_suffix": TOKEN[-8:],
                "registered_at": TS,
            }
        ]
    }


async def test_client_gone_mid_body_gets_no_answer() -> None:
    h = make()
    reply = await call(
        h.app, "PUT", "/api/live-activity/stream/k", b"{", key=SEND_KEY, disconnect=True
    )
    assert reply is None and h.service.calls == []


# -- service errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "expected", "header"),
    [
        (errors.NotFound("no stream 'k'"), 404, {"error": "not_found"}, None),
        (
            errors.NoRecipients("nobody", effective_channel_slugs=["ops"]),
            422,
            {"error": "no_recipients", "effective_channel_slugs": ["ops"]},
            None,
        ),
        (
            errors.RateLimited("slow down", retry_after=2.2),
            429,
            {"error": "rate_limited", "code": "rate_limited"},
            ("retry-after", "3"),
        ),
        (
            errors.ActivityLimit("full", limit=5, active=5),
            429,
            {"error": "live_activity_limit", "limit": 5, "active": 5},
            None,
        ),
        (
            errors.TooLarge("push too big", size=5000, limit=4096),
            413,
            {"size": 5000, "limit": 4096},
            None,
        ),
        (errors.Unavailable("draining", retry_after=0.1), 503, {}, ("retry-after", "1")),
        (
            errors.StorageUnavailable(
                "storage unavailable (disk full)", cause="disk full", retry_after=5
            ),
            503,
            {"error": "storage_unavailable", "cause": "disk full"},
            ("retry-after", "5"),
        ),
        (errors.BadRequest("content_state.type: changed"), 400, {"error": "bad_request"}, None),
    ],
)
async def test_service_errors_keep_status_and_body(
    exc: errors.ApiError, status: int, expected: dict[str, Any], header: tuple[str, str] | None
) -> None:
    h = make()
    h.service.fail = exc
    reply = await must(h.app, "POST", "/api/live-activity/start", START_BODY, key=SEND_KEY)
    body = assert_error(reply, status, exc.code)
    assert body == {**body, **expected}
    assert body["message"] == exc.message
    if header is not None:
        assert reply.headers[header[0]] == header[1]
    assert h.recorded == []


async def test_unexpected_exception_is_a_bare_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = make()
    h.service.fail = RuntimeError("secret detail in /srv/app/token.p8")
    with caplog.at_level(logging.ERROR, logger="lockstep.http"):
        reply = await must(h.app, "PUT", "/api/live-activity/stream/k", STREAM_BODY, key=SEND_KEY)
    assert reply.status == 500
    assert reply.json() == {"error": "internal", "message": "internal error"}
    assert b"secret" not in reply.body and b"Traceback" not in reply.body
    assert "RuntimeError" in caplog.text
    assert SEND_KEY not in caplog.text
    assert h.metrics.api_requests_total.get("/api/live-activity/stream/{stream_key}", "500") == 1


# -- recording ----------------------------------------------------------------------------------


async def test_record_sees_accepted_send_calls_with_bodies_only() -> None:
    h = make()
    raw = json.dumps(STREAM_BODY).encode()
    await must(h.app, "PUT", "/api/live-activity/stream/k", raw, key=SEND_KEY)
    await must(h.app, "GET", "/api/devices", key=SEND_KEY)
    await must(h.app, "PUT", "/api/devices/iphone-1", DEVICE_BODY, key=DEVICE_KEY)
    await must(h.app, "POST", "/api/live-activity/start", {"bad": 1}, key=SEND_KEY)
    await must(h.app, "DELETE", "/api/live-activity/stream/k", key=SEND_KEY)
    assert h.recorded == [
        ("PUT", "/api/live-activity/stream/k", raw),
        ("DELETE", "/api/live-activity/stream/k", b""),
    ]
    assert all(SEND_KEY.encode() not in b for _, _, b in h.recorded)


async def test_a_failing_recorder_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(method: str, path: str, body: bytes) -> None:
        raise OSError("disk full")

    app = create_app(
        FakeService(),
        api_keys=[SEND_KEY],
        device_keys=[],
        metrics=PromMetrics(),
        openapi={},
        record=broken,
    )
    with caplog.at_level(logging.ERROR, logger="lockstep.http"):
        reply = await must(app, "POST", "/api/live-activity/start", START_BODY, key=SEND_KEY)
    assert reply.status == 200 and "recording" in caplog.text


# -- public routes ------------------------------------------------------------------------------


async def test_healthz_reports_the_service_health() -> None:
    h = make()
    reply = await must(h.app, "GET", "/healthz")
    assert reply.status == 200 and reply.json() == {"ok": True, "devices": 2}
    h.service.healthy = False
    assert (await must(h.app, "GET", "/healthz")).status == 503


async def test_lifespan_is_acknowledged() -> None:
    h = make()
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await h.app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- the OpenAPI document -----------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_openapi_document_is_served_without_auth_and_covers_every_route() -> None:
    h = make()
    reply = await must(h.app, "GET", "/api/openapi.json")
    assert reply.status == 200
    doc = reply.json()
    assert doc == json.loads(msgspec.json.encode(build_openapi()))
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"] == [{"url": "/api"}]
    schemes = doc["components"]["securitySchemes"]
    assert all(s == {**s, "type": "http", "scheme": "bearer"} for s in schemes.values())
    operation_ids = set()
    for ep in ENDPOINTS:
        path = ep.template.removeprefix("/api") if ep.template.startswith("/api/") else ep.template
        op = doc["paths"][path][ep.method.lower()]
        operation_ids.add(op["operationId"])
        assert "200" in op["responses"]
        if ep.access in (Access.PUBLIC, Access.WEBHOOK):
            assert op["security"] == []
            if ep.access is Access.WEBHOOK:  # its own signature or secret, declared as headers
                assert {"401", "500"} <= set(op["responses"]) and "403" not in op["responses"]
                declared = {p["name"] for p in op["parameters"] if p["in"] == "header"}
                assert {"x-hub-signature-256", "x-webhook-secret"} <= declared
        else:
            assert op["security"] == [{"apiKey" if ep.access is Access.SEND else "deviceKey": []}]
            assert {"401", "403", "500"} <= set(op["responses"])
        if ep.request is not None:
            assert {"400", "413", "415"} <= set(op["responses"])
            assert "requestBody" in op
        names = re.findall(r"\{([a-z_]+)\}", ep.template)
        if names:
            assert [p["name"] for p in op["parameters"] if p["in"] == "path"] == names
    assert len(operation_ids) == len(ENDPOINTS)
    assert doc["paths"]["/healthz"]["servers"] == [{"url": "/"}]
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    put = doc["paths"]["/live-activity/stream/{stream_key}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StreamRequest"
    }
    assert "title" in schemas["ContentState"]["required"]
    assert set(schemas["Error"]["required"]) == {"error", "message"}


async def test_openapi_paths_match_the_routes_the_app_serves() -> None:
    """Every documented (path, method) is routed (no 404/405), and nothing else is."""
    h = make()
    doc = build_openapi()
    for path, item in doc["paths"].items():
        base = "" if "servers" in item else "/api"
        concrete = base + path.replace("{stream_key}", "k").replace("{device_id}", "d")
        for method in item.keys() - {"servers"}:
            reply = await must(h.app, method.upper(), concrete)
            assert reply.status not in (404, 405), (method, concrete)


# -- metrics ------------------------------------------------------------------------------------

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)\})? (?P<value>\S+)$'
)


def parse_exposition(text: str) -> dict[str, list[tuple[str, str]]]:
    """Check the text format line by line; family -> [(labels, value)]."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"} and name not in types
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line"
        float(m["value"].replace("+Inf", "inf"))
        samples.setdefault(name, []).append((m["labels"] or "", m["value"]))
    return samples


async def test_metrics_endpoint_renders_counters_histogram_and_gauges() -> None:
    h = make()
    await must(h.app, "PUT", "/api/live-activity/stream/a", STREAM_BODY, key=SEND_KEY)
    await must(h.app, "PUT", "/api/live-activity/stream/b", STREAM_BODY, key=SEND_KEY)
    await must(h.app, "GET", "/api/devices")
    await must(h.app, "GET", "/nowhere/1")
    await must(h.app, "GET", "/nowhere/2")
    h.metrics.answered(200, None, 0.003)
    h.metrics.answered(410, Reason.UNREGISTERED, 0.2)
    reply = await must(h.app, "GET", "/metrics")
    assert reply.status == 200 and reply.headers["content-type"] == CONTENT_TYPE
    samples = parse_exposition(reply.body.decode())
    api = dict(samples["lockstep_api_requests_total"])
    assert api['route="/api/live-activity/stream/{stream_key}",status="200"'] == "2"
    assert api['route="/api/devices",status="401"'] == "1"
    assert api[f'route="{UNMATCHED}",status="404"'] == "2"
    answered = dict(samples["lockstep_pushes_answered_total"])
    assert answered['status="410",reason="Unregistered"'] == "1"
    assert answered['status="200",reason="none"'] == "1"
    assert dict(samples["lockstep_devices"]) == {"": "2"}
    assert dict(samples["lockstep_recipients_pending"]) == {"": "5"}
    assert not any(name.startswith("lockstep_not") for name in samples)
    assert dict(samples["lockstep_apns_latency_seconds_count"]) == {"": "2"}


def test_histogram_buckets_are_cumulative_and_end_at_count() -> None:
    m = PromMetrics()
    latencies = [0.0005, 0.001, 0.004, 0.3, 0.3, 7.0, 60.0, -1.0]
    for i, latency in enumerate(latencies):
        m.answered(200, None, latency)
        assert m.latency.count == i + 1
    samples = parse_exposition(m.render().decode())
    buckets = samples["lockstep_apns_latency_seconds_bucket"]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1 and buckets[-1] == ('le="+Inf"', "8")
    counts = [int(v) for _, v in buckets]
    assert counts == sorted(counts)
    assert dict(buckets)['le="0.001"'] == "3"  # 0.0005, 0.001 and the clamped -1
    assert dict(buckets)['le="10"'] == "7"
    assert float(samples["lockstep_apns_latency_seconds_sum"][0][1]) == pytest.approx(
        sum(max(x, 0) for x in latencies)
    )


def test_listener_events_land_in_bounded_series() -> None:
    m = PromMetrics()
    m.submitted("start")
    m.submitted("surprise")
    m.dispatched("update", 2)
    m.unanswered("transport", "connection lost to 17.0.0.1")
    m.unanswered("weird", "x")
    m.settled(DeliveryResult(DeliveryStatus.SUPERSEDED, device_token=TOKEN))
    m.settled(
        DeliveryResult(DeliveryStatus.REJECTED, device_token=TOKEN, reason=Reason.BAD_DEVICE_TOKEN)
    )
    m.answered(999, None, 0.1)
    m.connection_opened()
    m.goaway("Shutdown")
    samples = parse_exposition(m.render({"queue": 1.5, "odd key!": 2}).decode())
    assert dict(samples["lockstep_pushes_submitted_total"]) == {
        'kind="alert"': "0",
        'kind="end"': "0",
        'kind="other"': "1",
        'kind="start"': "1",
        'kind="update"': "0",
    }
    assert dict(samples["lockstep_push_attempts_total"]) == {'kind="update"': "1"}
    assert dict(samples["lockstep_push_unanswered_total"]) == {
        'outcome="other"': "1",
        'outcome="transport"': "1",
    }
    settled = dict(samples["lockstep_pushes_settled_total"])
    assert settled['status="superseded"'] == "1" and settled['status="accepted"'] == "0"
    assert dict(samples["lockstep_pushes_rejected_total"]) == {'reason="BadDeviceToken"': "1"}
    assert dict(samples["lockstep_pushes_answered_total"]) == {'status="other",reason="none"': "1"}
    assert dict(samples["lockstep_apns_connection_events_total"]) == {
        'event="goaway"': "1",
        'event="opened"': "1",
    }
    assert dict(samples["lockstep_queue"]) == {"": "1.5"}
    assert dict(samples["lockstep_odd_key_"]) == {"": "2"}


def test_stats_callback_feeds_gauges_when_none_are_passed() -> None:
    m = PromMetrics(stats=lambda: {"activities": 3})
    assert dict(parse_exposition(m.render().decode())["lockstep_activities"]) == {"": "3"}


def test_label_values_are_escaped() -> None:
    m = PromMetrics()
    m.api_request('a"b\\c\nd', 200)
    text = m.render().decode()
    assert 'route="a\\"b\\\\c\\nd"' in text
    parse_exposition(text)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.text(alphabet="abc/-_.%", min_size=1, max_size=30), min_size=1, max_size=20))
async def test_raw_paths_never_become_labels(paths: list[str]) -> None:
    h = make()
    for path in paths:
        await call(h.app, "GET", "/" + path)
        await call(h.app, "PUT", "/api/live-activity/stream/" + path, STREAM_BODY, key=SEND_KEY)
    routes = {route for route, _ in h.metrics.api_requests_total.values}
    assert routes <= {UNMATCHED, "/api/live-activity/stream/{stream_key}", "/healthz", "/metrics"}


# -- inbound webhooks -----------------------------------------------------------------------------


async def test_a_webhook_route_takes_no_key_and_hands_over_its_declared_headers_and_raw_body() -> (
    None
):
    h = make()
    raw = b'{"zen": "Keep it logically awesome."}'
    headers = [
        ("X-Hub-Signature-256", "sha256=00"),
        ("X-GitHub-Event", "ping"),
        ("X-GitHub-Delivery", "d-7"),
        ("X-Other", "not handed over"),
    ]
    reply = await must(h.app, "POST", "/api/webhooks/gh", raw, headers=headers)
    assert reply.status == 200, reply.body
    [(op, name, given, body)] = h.service.calls
    assert (op, name, body) == ("webhook", "gh", raw)
    assert given == {"x-hub-signature-256": "sha256=00", "x-github-event": "ping",
                     "x-github-delivery": "d-7"}  # fmt: skip
    assert h.recorded == []  # webhook deliveries are not API-key traffic: never recorded
    # An API key is neither needed nor looked at: the service checks the webhook's own secret.
    reply = await must(h.app, "POST", "/api/webhooks/gh", raw, key="not-a-key")
    assert reply.status == 200


async def test_only_live_activity_calls_are_recorded_for_replays() -> None:
    h = make()
    assert (await must(h.app, "POST", "/api/badge", {"badge": 3}, key=SEND_KEY)).status == 200
    body = {"title": "Deploy"}
    assert (await must(h.app, "POST", "/api/push-notification", body, key=SEND_KEY)).status == 200
    assert h.recorded == []
    await must(h.app, "PUT", "/api/live-activity/stream/web-1", STREAM_BODY, key=SEND_KEY)
    assert [(m, p) for m, p, _ in h.recorded] == [("PUT", "/api/live-activity/stream/web-1")]
