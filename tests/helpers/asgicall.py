"""Driving an ASGI app directly, without sockets: one request in, the whole answer out.

`call(app, method, path, body, key=...)` builds the ASGI scope (`?query` split off), feeds the
body (in `chunks` if given, or cut short by a disconnect), collects what the app sends and
returns it as a `Reply` (None when the app sent nothing, e.g. after a disconnect). The tests of
the API app and of the key scopes over the real service share it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Asgi", "Reply", "call"]

Asgi = Callable[[Any, Any, Any], Awaitable[None]]
"""An ASGI application: the API's `ApiApp`, the simulator's `ControlApp`."""


@dataclass
class Reply:
    """One complete answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


async def call(
    app: Asgi,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    chunks: Sequence[bytes] | None = None,
    disconnect: bool = False,
) -> Reply | None:
    """One request to `app` (see the module docstring)."""
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
