"""Property-based fuzzing of the served OpenAPI document with schemathesis, against a real server.

The document is loaded from `GET /api/openapi.json` of a running simulate-mode server. Every
operation in it gets a bounded number of generated requests:

- positive cases (what the schema allows) and negative cases (wrong types, missing fields,
  values out of range, missing credentials);
- positive cases steered past the first checks (`reaching_the_service`): content states get a
  type and what it needs, update, end and token reports name an activity that exists, and a
  device's widget metrics are read for a registered device, and a notification replace names a
  notification that exists, so that the service itself, the store and the engine see fuzzed
  input too (metric values reach the store and the widget pushes unsteered: any key the pattern
  allows is a metric).

Each request carries the key its route needs, read from the operation's own `security` entry
(send key, device key or none). Whatever is sent, the server must never answer with a 5xx, and
every answer must match the document (status, content type, body schema).

The operations are listed at collection time from `build_openapi()` (pure, no server), and
`test_served_document_is_the_built_one` holds the served document to the same list. Each test
runs its own derandomized Hypothesis loop over `APIOperation.as_strategy`, so runs repeat.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.server.http.openapi import build_openapi
from engine.server.webhooks.config import WebhookConfig
from tests.helpers.serverkit import API_KEY, DEVICE_KEY, LiveServer, http_json, server_fixture

pytestmark = pytest.mark.e2e

SEED = 20_240_404
MAX_EXAMPLES = 40  # per operation: keeps this file well under a minute on two cores
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

FUZZ_SECRET = "fuzz-webhook-secret-0123456789"
FUZZ_HOOK = WebhookConfig(
    name="fuzz",
    kind="generic",
    secret=FUZZ_SECRET,
    stream_key="/id",
    map={"title": "/title", "value": "/value", "color": "/color"},
    set={"type": "value", "value": "fuzz"},
    end="/done",
)
server = server_fixture(seed=4102, webhooks=(FUZZ_HOOK,))

_KEYS = {"apiKey": API_KEY, "deviceKey": DEVICE_KEY}
_DOCUMENT = build_openapi()
OPERATIONS = [
    (path, method.upper())
    for path, item in _DOCUMENT["paths"].items()
    for method in item
    if method in {"get", "put", "post", "delete", "patch"}
]
_BY_ID = {"/live-activity/update", "/live-activity/end", "/activity-tokens"}
_NOTIFICATIONS = {"/push-notification", "/push-notification/{notification_id}", "/badge"}


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> Any:
    """The document as the server serves it."""
    config = schemathesis.Config(seed=SEED)
    return schemathesis.openapi.from_url(server.origin + "/api/openapi.json", config=config)


def auth_headers(operation: Any) -> dict[str, str]:
    """The bearer key the operation's `security` names (none for public routes)."""
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            if scheme in _KEYS:
                return {"Authorization": f"Bearer {_KEYS[scheme]}"}
    return {}


def start_activity(server: LiveServer) -> str:
    """A running alert activity on the simulated devices, for update / end / token reports."""
    status, body = http_json(
        "POST",
        server.api_base + "/live-activity/start",
        {"content_state": {"title": "Fuzz target", "type": "alert", "message": "fuzz"}},
        key=API_KEY,
    )
    assert status == 200, body
    return str(body["activity_id"])


def send_notification(server: LiveServer) -> str:
    """A notification on the simulated devices, for the replace route."""
    status, body = http_json(
        "POST", server.api_base + "/push-notification", {"title": "Fuzz target"}, key=API_KEY
    )
    assert status == 200, body
    return str(body["notification_id"])


def reaching_the_service(
    case: Any, *, activity_id: str, device_id: str, notification_id: str = ""
) -> Any:
    """Steer a positive case past the first checks: a content state gets a type and what the
    type needs, buttons with made-up URLs and unknown channels go, requests about an
    activity (or a notification) name one that exists (and a device that receives it), a
    device's metrics are read for a registered device, and webhook deliveries go to the
    configured generic webhook with its secret, with a stream id and a title."""
    if case.operation.path == "/push-notification/{notification_id}" and notification_id:
        case.path_parameters = {"notification_id": notification_id}
    if case.operation.path == "/devices/{device_id}/metrics":
        case.path_parameters = {**(case.path_parameters or {}), "device_id": device_id}
    if case.operation.path.startswith("/webhooks/"):
        case.path_parameters = {**(case.path_parameters or {}), "name": FUZZ_HOOK.name}
        case.headers = {**(case.headers or {}), "x-webhook-secret": FUZZ_SECRET}
        if isinstance(case.body, dict):
            case.body.setdefault("id", "f1")
            case.body.setdefault("title", "Fuzz")
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    if case.operation.path in _NOTIFICATIONS:
        for name in ("channels", "target", "actions", "icon", "media", "redirection", "payload"):
            body.pop(name, None)
    if isinstance(body.get("content_state"), dict):
        body["content_state"].update(type="alert", message="fuzz")
        for name in ("channels", "target", "action", "secondary_action"):
            body.pop(name, None)
    if case.operation.path in _BY_ID:
        body["activity_id"] = activity_id
    if case.operation.path == "/activity-tokens":
        body["device_id"] = device_id
    return case


def test_served_document_is_the_built_one(server: LiveServer) -> None:
    status, served = http_json("GET", server.origin + "/api/openapi.json")
    assert status == 200
    assert served == _DOCUMENT
    assert len(OPERATIONS) >= 12


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_server_errors(server: LiveServer, api_schema: Any, path: str, method: str) -> None:
    operation = api_schema[path][method]
    headers = auth_headers(operation)
    steer = partial(
        reaching_the_service,
        device_id=server.devices()[0]["name"],
        notification_id=send_notification(server),
    )
    ended = start_activity(server)
    status, body = http_json(
        "POST",
        server.api_base + "/live-activity/end",
        {"activity_id": ended, "content_state": {"title": "Ended"}},
        key=API_KEY,
    )
    assert status == 200, body
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    steered = st.builds(
        lambda case, activity_id: steer(case, activity_id=activity_id),
        positive,
        st.sampled_from([start_activity(server), ended]),  # a running and an ended one
    )
    cases = st.one_of(positive, steered, operation.as_strategy(GenerationMode.NEGATIVE))
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses[response.status_code] += 1

    run()
    assert statuses, "no request was sent"
    if headers:  # the key was accepted: some requests got past authentication
        assert set(statuses) - {401, 403}, statuses
