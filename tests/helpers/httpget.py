"""A tiny HTTP/1.1 JSON client for tests (trio + h11), for the control API and the HTTP front."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import h11
import trio


async def request_json(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """Send one request and return (status, parsed JSON body or None)."""
    parts = urlsplit(url)
    data = b"" if body is None else json.dumps(body).encode()
    headers = [("host", parts.netloc), ("content-length", str(len(data))), ("connection", "close")]
    if body is not None:
        headers.append(("content-type", "application/json"))
    conn = h11.Connection(h11.CLIENT)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    async with stream:
        await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    raw = b"".join(chunks)
    return status, json.loads(raw) if raw else None
