"""Raw-socket HTTP/1.1 pieces for the tests of the lean HTTP front (`engine.server.http.h11server`).

Requests as bytes, an h11 client that reads successive answers off one connection, and the
front (`H11Server`, or `HttptoolsServer` with `front="httptools"`) running on 127.0.0.1 (port 0)
for the length of a block. Tests of the front take the `front` fixture to run against both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio

from engine.server.http import PromMetrics, build_openapi, create_app
from engine.server.http.app import ApiApp
from engine.server.http.h11server import PARSERS, H11Limits, H11Server
from engine.server.http.httptoolsserver import HttptoolsServer
from tests.helpers.fakeservice import DEVICE_KEY, SEND_KEY, STREAM_BODY, FakeService

__all__ = [
    "DEFAULT_LIMITS",
    "FRONTS",
    "STREAM",
    "TIMEOUT",
    "Answer",
    "Reader",
    "api_app",
    "get",
    "put",
    "read_to_eof",
    "running",
]

TIMEOUT = 20.0
STREAM = json.dumps(STREAM_BODY).encode()
DEFAULT_LIMITS = H11Limits()
FRONTS: dict[str, type[H11Server]] = {"h11": H11Server, "httptools": HttptoolsServer}
assert tuple(FRONTS) == PARSERS


def api_app(service: FakeService, max_body: int = 65536) -> ApiApp:
    """The API app over `service`, with the fake keys."""
    return create_app(
        service,
        api_keys=[SEND_KEY],
        device_keys=[DEVICE_KEY],
        metrics=PromMetrics(),
        max_body=max_body,
        openapi=build_openapi(),
    )


def put(key: str, body: bytes = STREAM, *, extra: str = "") -> bytes:
    """A stream PUT as raw HTTP/1.1 bytes."""
    return (
        f"PUT /api/live-activity/stream/{key} HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {SEND_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(path: str, *, extra: str = "") -> bytes:
    """A GET as raw HTTP/1.1 bytes."""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


@dataclass
class Answer:
    """One response read off the wire."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Reader:
    """Reads successive responses from one connection with an h11 client."""

    stream: trio.SocketStream
    conn: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    async def answer(self, method: bytes = b"GET") -> Answer:
        """The next response (the client side is told a request of `method` went out)."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        self.conn.send(h11.Request(method=method, target="/", headers=[("host", "t")]))
        self.conn.send(h11.EndOfMessage())
        status, headers, chunks = 0, {}, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, headers, b"".join(chunks))
            else:
                raise AssertionError(f"unexpected {event!r}")


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(bytes(chunk))
    return b"".join(chunks)


@asynccontextmanager
async def running(
    app: Any,
    front: str = "h11",
    *,
    limits: H11Limits = DEFAULT_LIMITS,
    graceful_timeout: float = 5.0,
) -> AsyncIterator[tuple[int, trio.Event, trio.Nursery]]:
    """The `front` server on 127.0.0.1 (port 0): (port, the shutdown event, the nursery)."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server = FRONTS[front](app, limits=limits)
        port = await nursery.start(
            partial(
                server.serve,
                "127.0.0.1",
                0,
                shutdown_trigger=stop.wait,
                graceful_timeout=graceful_timeout,
            )
        )
        yield port, stop, nursery
        stop.set()
