"""An in-memory h2 server playing APNs, for the sans-IO client protocol's tests.

`ApnsPeer` is a stock h2 server connection that records what each stream received and answers
when told. Bytes go both ways by hand (`pump`), so a test controls exactly what each side sees
and when; `raw_frame` and `goaway_frame` write frames h2's server would refuse to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from engine.apns import wire
from engine.apns.protocol import ApnsClientProtocol, ClientEvent, PushRequest

__all__ = [
    "AUTHORITY",
    "BODY",
    "JWT",
    "TOPIC",
    "ApnsPeer",
    "ReceivedRequest",
    "connect",
    "expected_headers",
    "goaway_frame",
    "pump",
    "push",
    "raw_frame",
    "token",
]

AUTHORITY = "api.push.apple.com"
TOPIC = "com.example.app.push-type.liveactivity"
JWT = b"bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ." + b"x" * 140
BODY = b'{"aps":{"timestamp":1700000000,"event":"update","content-state":{"score":"1-0"}}}'

Header = tuple[bytes, bytes]


def token(i: int) -> str:
    """The `i`th device token: 64 hex digits (apns.md §1)."""
    return f"{i:064x}"


def push(
    i: int = 0,
    *,
    priority: int = 10,
    expiration: int | None = None,
    apns_id: str | None = None,
    collapse_id: str | None = None,
    push_type: str = wire.LIVE_ACTIVITY_PUSH_TYPE,
) -> PushRequest:
    """A Live Activity update to `token(i)` with the usual body."""
    return PushRequest(
        token(i),
        TOPIC,
        BODY,
        push_type=push_type,
        priority=priority,
        expiration=expiration,
        apns_id=apns_id,
        collapse_id=collapse_id,
    )


@dataclass
class ReceivedRequest:
    """What the server received on one stream."""

    headers: list[Header]
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False


class ApnsPeer:
    """An h2 server connection that records requests and answers when told.

    `max_streams` (None: no limit) and `initial_window` go out in the server's SETTINGS;
    `connection_window` opens the connection window beyond 64 KiB; with `auto_ack` off, request
    bodies are not acknowledged until `ack_all`, so the client's windows stay closed.
    """

    def __init__(
        self,
        *,
        max_streams: int | None = 1000,
        initial_window: int | None = None,
        auto_ack: bool = True,
        connection_window: int = 0,
    ) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        values: dict[SettingCodes, int] = {}
        if max_streams is not None:
            values[SettingCodes.MAX_CONCURRENT_STREAMS] = max_streams
        if initial_window is not None:
            values[SettingCodes.INITIAL_WINDOW_SIZE] = initial_window
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=values)
        self.conn.initiate_connection()
        if connection_window:
            self.conn.increment_flow_control_window(connection_window)
        self.auto_ack = auto_ack
        self.requests: dict[int, ReceivedRequest] = {}
        self.events: list[h2.events.Event] = []
        self.wire = bytearray()  # every byte the client sent, in order

    def feed(self, data: bytes) -> None:
        """Take bytes from the client, recording requests and events."""
        self.wire += data
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = ReceivedRequest(list(event.headers))
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id].body += event.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, h2.events.StreamEnded):
                self.requests[event.stream_id].ended = True

    def respond(
        self,
        stream_id: int,
        status: int = 200,
        body: bytes = b"",
        apns_id: bytes | None = None,
        extra: tuple[Header, ...] = (),
    ) -> None:
        """Answer as APNs does (apns.md §3): the request's `apns-id` echoed, or a made-up one."""
        if apns_id is None:
            apns_id = dict(self.requests[stream_id].headers).get(b"apns-id", b"77E0A9C3-0000")
        headers = [(b":status", b"%d" % status), (b"apns-id", apns_id), *extra]
        if body:
            headers.append((b"content-type", b"application/json"))
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)

    def settings(self, **values: int) -> None:
        """Queue a SETTINGS frame: `settings(MAX_CONCURRENT_STREAMS=5)`."""
        self.conn.update_settings({getattr(SettingCodes, k): v for k, v in values.items()})

    def ack_all(self) -> None:
        """Hand back the window every request body received so far used."""
        for stream_id, request in self.requests.items():
            if request.body:
                self.conn.acknowledge_received_data(len(request.body), stream_id)


def pump(client: ApnsClientProtocol, server: ApnsPeer) -> list[ClientEvent]:
    """Move bytes both ways until both sides are quiet; return the client's events."""
    events: list[ClientEvent] = []
    while True:
        to_server = client.data_to_send()
        if to_server:
            server.feed(to_server)
        to_client = server.conn.data_to_send()
        if to_client:
            events += client.receive_data(to_client)
        if not to_server and not to_client:
            return events


def connect(
    *,
    max_streams: int | None = 1000,
    initial_window: int | None = None,
    auto_ack: bool = True,
    connection_window: int = 0,
) -> tuple[ApnsClientProtocol, ApnsPeer, list[ClientEvent]]:
    """An initiated client (authorization `JWT`) after its handshake with a new `ApnsPeer`."""
    client = ApnsClientProtocol(AUTHORITY)
    client.initiate()
    client.set_authorization(JWT)
    server = ApnsPeer(
        max_streams=max_streams,
        initial_window=initial_window,
        auto_ack=auto_ack,
        connection_window=connection_window,
    )
    events = pump(client, server)
    return client, server, events


def expected_headers(request: PushRequest, auth: bytes | None = JWT) -> list[Header]:
    """The header list the server should decode for `request`, in the order it is sent."""
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", AUTHORITY.encode()),
        (b":path", b"/3/device/" + request.token.encode()),
    ]
    if auth is not None:
        headers.append((b"authorization", auth))
    headers += [
        (b"apns-topic", request.topic.encode()),
        (b"apns-push-type", request.push_type.encode()),
        (b"apns-priority", str(request.priority).encode()),
    ]
    if request.expiration is not None:
        headers.append((b"apns-expiration", str(request.expiration).encode()))
    if request.apns_id is not None:
        headers.append((b"apns-id", request.apns_id.encode()))
    if request.collapse_id is not None:
        headers.append((b"apns-collapse-id", request.collapse_id.encode()))
    return headers


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame as bytes, whatever its contents (RFC 9113 §4.1).

    Written out here rather than taken from `engine.apns.h2wire`, so the tests of those wire
    pieces do not check them against themselves.
    """
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big")
    return header + payload


def goaway_frame(last_stream_id: int, error_code: int, debug: bytes) -> bytes:
    """A GOAWAY frame, written by hand: h2's server refuses to answer streams after its own."""
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = error_code
    frame.additional_data = debug
    return frame.serialize()
