"""The HTTP API's ASGI app over a fake service, driven with `tests.helpers.asgicall`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.server.http.app import ApiApp, create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from tests.helpers.asgicall import Asgi, Reply, call
from tests.helpers.fakeservice import DEVICE_KEY, SEND_KEY, FakeService

__all__ = ["Harness", "assert_error", "make", "must"]


@dataclass
class Harness:
    """The app over a fake service, its metrics and what it recorded."""

    app: ApiApp
    service: FakeService
    metrics: PromMetrics
    recorded: list[tuple[str, str, bytes]]


def make(max_body: int = 65536, *, record: bool = True) -> Harness:
    """An app over a fresh `FakeService`, with the test keys."""
    service, metrics = FakeService(), PromMetrics()
    recorded: list[tuple[str, str, bytes]] = []
    app = create_app(
        service,
        api_keys=[SEND_KEY, ""],  # an empty key in the configuration must never match
        device_keys=[DEVICE_KEY],
        metrics=metrics,
        max_body=max_body,
        openapi=build_openapi(),
        record=(lambda m, p, b: recorded.append((m, p, b))) if record else None,
    )
    return Harness(app, service, metrics, recorded)


async def must(app: Asgi, *args: Any, **kw: Any) -> Reply:
    """`call`, which must be answered."""
    reply = await call(app, *args, **kw)
    assert reply is not None
    return reply


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """The reply is a JSON error with this status and code and a message; its body."""
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    return dict(body)
