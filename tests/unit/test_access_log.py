"""The access log and the log formats (`engine.server.logs`), and the request id every answer
carries: one line per request with the route template, never a path, a key or a body."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from engine.server.logs import ACCESS, JsonFormatter, TextFormatter, configure, request_id
from tests.helpers.asgikit import make, must
from tests.helpers.fakeservice import DEVICE_KEY, SEND_KEY, STREAM_BODY


class Keep(logging.Handler):
    """Keeps the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_records() -> Iterator[list[logging.LogRecord]]:
    """Every access record, with the access log on (it is off unless configured)."""
    handler, level = Keep(), ACCESS.level
    records = handler.records
    ACCESS.addHandler(handler)
    ACCESS.setLevel(logging.INFO)
    try:
        yield records
    finally:
        ACCESS.removeHandler(handler)
        ACCESS.setLevel(level)


def test_request_id_takes_a_sane_client_token_and_makes_one_otherwise() -> None:
    assert request_id(b"req-42.a:b_C") == "req-42.a:b_C"
    for bad in (None, b"", b"x" * 65, b"has space", b'quo"te', b"new\nline", "é".encode()):
        made = request_id(bad)
        assert len(made) == 16 and int(made, 16) >= 0
    assert request_id(None) != request_id(None)


async def test_one_line_per_request_with_template_status_duration_and_id(
    access_records: list[logging.LogRecord],
) -> None:
    ticks = iter([10.0, 10.0025])
    h = make()
    h.app._clock = lambda: next(ticks)
    reply = await must(
        h.app,
        "PUT",
        "/api/live-activity/stream/customer-acme-deploy",
        STREAM_BODY,
        key=SEND_KEY,
        headers=[("X-Request-Id", "trace-7")],
    )
    assert reply.status == 200 and reply.headers["x-request-id"] == "trace-7"
    [record] = access_records
    line = record.getMessage()
    assert line == "PUT /api/live-activity/stream/{stream_key} 200 2.50ms id=trace-7"
    fields = {k: record.__dict__[k] for k in ("method", "route", "status", "duration_ms")}
    assert fields == {
        "method": "PUT",
        "route": "/api/live-activity/stream/{stream_key}",
        "status": 200,
        "duration_ms": 2.5,
    }
    assert "acme" not in line and SEND_KEY not in line  # never the path, never a key


async def test_errors_unmatched_routes_and_device_calls_are_logged_too(
    access_records: list[logging.LogRecord],
) -> None:
    h = make()
    bad = await must(h.app, "PUT", "/api/devices/iphone-9", {"nope": 1}, key=DEVICE_KEY)
    lost = await must(h.app, "GET", "/secret-path", key=SEND_KEY)
    denied = await must(h.app, "GET", "/api/devices", key="lsk_wrong_key_value")
    statuses = [(r.__dict__["route"], r.__dict__["status"]) for r in access_records]
    assert statuses == [
        ("/api/devices/{device_id}", bad.status),
        ("unmatched", 404),
        ("/api/devices", 403),
    ]
    assert denied.headers["x-request-id"] != lost.headers["x-request-id"]
    text = " ".join(r.getMessage() for r in access_records)
    assert DEVICE_KEY not in text and "lsk_wrong" not in text and "secret-path" not in text


async def test_nothing_is_logged_while_the_access_log_is_off() -> None:
    handler = Keep()
    ACCESS.addHandler(handler)
    try:
        assert not ACCESS.isEnabledFor(logging.INFO)
        h = make()
        h.app._clock = lambda: pytest.fail("no clock read while the access log is off")
        reply = await must(h.app, "GET", "/healthz")
        assert reply.status == 200 and reply.headers["x-request-id"]
    finally:
        ACCESS.removeHandler(handler)
    assert handler.records == []


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "lockstep.access", logging.INFO, __file__, 1, "GET %s", ("/x",), None
    )
    record.created, record.msecs = 1796652000.25, 250.0
    record.__dict__.update(extra)
    return record


def test_text_and_json_formats() -> None:
    record = _record(method="GET", route="/x", status=200, duration_ms=1.5, request_id="r1")
    text = TextFormatter().format(record)
    assert text == "2026-12-07T14:00:00.250Z INFO lockstep.access: GET /x"
    parsed = json.loads(JsonFormatter().format(record))
    assert parsed == {
        "time": "2026-12-07T14:00:00.250Z",
        "level": "INFO",
        "logger": "lockstep.access",
        "message": "GET /x",
        "method": "GET",
        "route": "/x",
        "status": 200,
        "duration_ms": 1.5,
        "request_id": "r1",
    }
    try:
        raise ValueError("boom\nline two")
    except ValueError:
        failing = _record()
        failing.exc_info = sys.exc_info()
    out = JsonFormatter().format(failing)
    assert "\n" not in out and "boom" in json.loads(out)["exc"]
    assert "Traceback" in TextFormatter().format(failing)


def test_configure_sets_levels_and_replaces_handlers() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, ACCESS.level)
    try:
        configure(verbose=False, fmt="json", access=True)
        configure(verbose=True, fmt="text", access=False)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, TextFormatter)
        assert root.level == logging.INFO and not ACCESS.isEnabledFor(logging.INFO)
        configure(verbose=False, fmt="json", access=True)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING and ACCESS.isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ACCESS.setLevel(saved[2])
