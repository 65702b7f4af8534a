"""A small, explicit HTTP/2 test client over any trio stream (memory or TCP/TLS).

It does only what the tests ask: open a stream, send a request, read frames until an event of
interest arrives. Tests keep full control of ordering (to provoke REFUSED_STREAM, GOAWAY drain...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.events
import trio

from engine.apns.h2compat import DrainingH2Connection


@dataclass
class Response:
    """What came back on one stream."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset_code: int | None = None

    @property
    def reason(self) -> str | None:
        """The APNs reason in the JSON body, if any."""
        return json.loads(self.body)["reason"] if self.body else None

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class H2TestClient:
    """HTTP/2 client for tests: explicit sends, a `pump()` that reads and records events."""

    def __init__(self, stream: trio.abc.Stream, authority: str = "api.push.apple.com") -> None:
        self.stream = stream
        self.authority = authority
        # After a GOAWAY, either side's, streams up to its last stream id still get their answers
        # (RFC 9113 §6.8), which stock h2 would refuse.
        self.conn = DrainingH2Connection(h2.config.H2Configuration(client_side=True))
        self.responses: dict[int, Response] = {}
        self.events: list[h2.events.Event] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False

    async def start(self) -> None:
        """Send the preface and settings."""
        self.conn.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        """Write whatever h2 has queued."""
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    def headers(
        self, token: str, jwt: str | None, topic: str, **extra: str
    ) -> list[tuple[str, str]]:
        """The APNs header list of a Live Activity push."""
        hs = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", f"/3/device/{token}"),
        ]
        if jwt is not None:
            hs.append(("authorization", f"bearer {jwt}"))
        hs += [("apns-topic", topic), ("apns-push-type", "liveactivity"), ("apns-priority", "10")]
        hs += [(k.replace("_", "-"), v) for k, v in extra.items()]
        return hs

    async def send(
        self, headers: list[tuple[str, str]], body: bytes | None, *, flush: bool = True
    ) -> int:
        """Open a stream with `headers` (+ `body`); returns its id."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self.responses[sid] = Response()
        if flush:
            await self.flush()
        return sid

    async def pump(self) -> bool:
        """Read once and record events; False when the server closed the connection."""
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._record(event)
        await self.flush()
        return True

    def _record(self, event: h2.events.Event) -> None:
        self.events.append(event)
        if isinstance(event, h2.events.ResponseReceived):
            r = self.responses.setdefault(event.stream_id, Response())
            r.headers = {k.decode(): v.decode() for k, v in event.headers}
            r.status = int(r.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.responses.setdefault(event.stream_id, Response()).reset_code = int(
                event.error_code
            )
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    async def until(self, predicate: Any) -> None:
        """Pump until `predicate()` is true or the connection closes."""
        while not predicate():
            if not await self.pump():
                return

    async def request(self, headers: list[tuple[str, str]], body: bytes | None) -> Response:
        """Send one request and wait for its complete answer (or reset)."""
        sid = await self.send(headers, body)
        r = self.responses[sid]
        await self.until(lambda: r.ended or r.reset_code is not None)
        return r

    @property
    def max_streams(self) -> int:
        """The server's current MAX_CONCURRENT_STREAMS as this client knows it."""
        return int(self.conn.remote_settings.max_concurrent_streams)
