"""Driving the HTTP API's ASGI app directly (no sockets) over a fake service."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.server.http.app import ApiApp, create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from tests.helpers.fakeservice import DEVICE_KEY, SEND_KEY, FakeService

__all__ = ["Harness", "Reply", "call", "make", "must"]


@dataclass
class Reply:
    """A whole answer: status, headers (decoded) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.body)


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


async def call(
    app: ApiApp,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    chunks: Sequence[bytes] | None = None,
    disconnect: bool = False,
) -> Reply | None:
    """One request through the app; None when it sent nothing (the client left)."""
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    hs = [(k.lower().encode(), v.encode()) for k, v in headers]
    if key is not None:
        hs.append((b"authorization", f"Bearer {key}".encode()))
    parts = list(chunks) if chunks is not None else [raw]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(parts) - 1}
        for i, c in enumerate(parts)
    ]
    if disconnect:
        messages = [{**messages[0], "more_body": True}, {"type": "http.disconnect"}]
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": hs,
        "query_string": query.encode(),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if not sent:
        return None
    start = sent[0]
    assert start["type"] == "http.response.start"
    out = {k.decode(): v.decode() for k, v in start["headers"]}
    data = b"".join(m.get("body", b"") for m in sent[1:])
    assert int(out["content-length"]) == len(data)
    return Reply(start["status"], out, data)


async def must(app: ApiApp, *args: Any, **kw: Any) -> Reply:
    """`call`, which must be answered."""
    reply = await call(app, *args, **kw)
    assert reply is not None
    return reply
