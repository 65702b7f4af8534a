"""The sans-IO APNs client protocol against an in-memory h2 server playing APNs.

Bytes go both ways by hand (`pump`), so every test controls exactly what the server sees and when.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Decoder
from hpack.hpack import decode_integer
from hyperframe.frame import ContinuationFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.apns.h2wire import PREFACE
from engine.apns.protocol import (
    ApnsClientProtocol,
    ApnsProtocolError,
    ClientEvent,
    ConnectionClosed,
    GoAway,
    NoSlotError,
    PingAcked,
    PushAnswered,
    PushRequest,
    SlotsChanged,
    StreamRefused,
    StreamReset,
)
from engine.apns.reasons import Reason

AUTHORITY = "api.push.apple.com"
TOPIC = "com.example.app.push-type.liveactivity"
JWT = b"bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ." + b"x" * 140
BODY = b'{"aps":{"timestamp":1700000000,"event":"update","content-state":{"score":"1-0"}}}'


def token(i: int) -> str:
    return f"{i:064x}"


def push(i: int = 0, **kw: object) -> PushRequest:
    return PushRequest(token(i), TOPIC, BODY, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The in-memory server


@dataclass
class Request:
    """What the server received on one stream."""

    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False


class FakeApns:
    """An h2 server connection that records requests and answers when told to."""

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
        self.requests: dict[int, Request] = {}
        self.events: list[h2.events.Event] = []
        self.wire = bytearray()

    def feed(self, data: bytes) -> None:
        self.wire += data
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = Request(list(event.headers))
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
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        if apns_id is None:
            apns_id = dict(self.requests[stream_id].headers).get(b"apns-id", b"77E0A9C3-0000")
        headers = [(b":status", b"%d" % status), (b"apns-id", apns_id), *extra]
        if body:
            headers.append((b"content-type", b"application/json"))
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)

    def settings(self, **values: int) -> None:
        self.conn.update_settings({getattr(SettingCodes, k): v for k, v in values.items()})

    def ack_all(self) -> None:
        for stream_id, request in self.requests.items():
            if request.body:
                self.conn.acknowledge_received_data(len(request.body), stream_id)


def pump(client: ApnsClientProtocol, server: FakeApns) -> list[ClientEvent]:
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


def connect(**server_kw: object) -> tuple[ApnsClientProtocol, FakeApns, list[ClientEvent]]:
    client = ApnsClientProtocol(AUTHORITY)
    client.initiate()
    client.set_authorization(JWT)
    server = FakeApns(**server_kw)  # type: ignore[arg-type]
    events = pump(client, server)
    return client, server, events


def expected_headers(request: PushRequest, auth: bytes | None = JWT) -> list[tuple[bytes, bytes]]:
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


# --------------------------------------------------------------------------------------------
# Connection start


def test_initiate_sends_settings_and_connection_window() -> None:
    client = ApnsClientProtocol(AUTHORITY)
    client.initiate()
    server = FakeApns()
    pump(client, server)
    settings_event = next(
        e for e in server.events if isinstance(e, h2.events.RemoteSettingsChanged)
    )
    changed = {k: v.new_value for k, v in settings_event.changed_settings.items()}
    assert changed[SettingCodes.ENABLE_PUSH] == 0
    assert changed[SettingCodes.INITIAL_WINDOW_SIZE] == 1 << 20
    window = next(e for e in server.events if isinstance(e, h2.events.WindowUpdated))
    assert (window.stream_id, window.delta) == (0, (1 << 20) - 65_535)


def test_initiate_twice_and_send_before_initiate_fail() -> None:
    client = ApnsClientProtocol(AUTHORITY)
    with pytest.raises(NoSlotError, match="initiate"):
        client.send(push())
    client.initiate()
    with pytest.raises(ApnsProtocolError):
        client.initiate()
    with pytest.raises(ValueError):
        ApnsClientProtocol(AUTHORITY, initial_window=1000)


# --------------------------------------------------------------------------------------------
# Answers


def test_one_push_is_answered_with_200_and_apns_id() -> None:
    client, server, _ = connect()
    request = push(7, apns_id="0ba3c3d4-1111-2222-3333-444455556666")
    stream_id = client.send(request)
    assert client.open_streams == 1
    pump(client, server)
    assert server.requests[stream_id].headers == expected_headers(request)
    assert bytes(server.requests[stream_id].body) == BODY
    server.respond(stream_id)
    events = pump(client, server)
    assert events == [
        PushAnswered(stream_id, 200, "0ba3c3d4-1111-2222-3333-444455556666", *[None] * 4)
    ]
    assert client.open_streams == 0


@pytest.mark.parametrize(
    ("status", "body", "extra", "expected"),
    [
        (
            400,
            b'{"reason":"BadDeviceToken"}',
            (),
            (Reason.BAD_DEVICE_TOKEN, "BadDeviceToken", None, None),
        ),
        (
            410,
            b'{"reason":"Unregistered","timestamp":1700000000123}',
            (),
            (Reason.UNREGISTERED, "Unregistered", 1_700_000_000_123, None),
        ),
        (
            410,
            b'{"reason":"ExpiredToken","timestamp":1.5e12}',
            (),
            (Reason.EXPIRED_TOKEN, "ExpiredToken", 1_500_000_000_000, None),
        ),
        (400, b'{"reason":"SomethingNew"}', (), (None, "SomethingNew", None, None)),
        (500, b"<html>oops</html>", (), (None, "<html>oops</html>", None, None)),
        (400, b'["BadTopic"]', (), (None, '["BadTopic"]', None, None)),
        (400, b'{"reason":5}', (), (None, '{"reason":5}', None, None)),
        (400, b"\xff\xfe", (), (None, "\ufffd\ufffd", None, None)),
        (
            429,
            b'{"reason":"TooManyRequests"}',
            ((b"retry-after", b"30"),),
            (Reason.TOO_MANY_REQUESTS, "TooManyRequests", None, 30.0),
        ),
        (
            503,
            b'{"reason":"ServiceUnavailable"}',
            ((b"retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT"),),
            (Reason.SERVICE_UNAVAILABLE, "ServiceUnavailable", None, None),
        ),
    ],
)
def test_error_answers_are_parsed(
    status: int,
    body: bytes,
    extra: tuple[tuple[bytes, bytes], ...],
    expected: tuple[Reason | None, str | None, int | None, float | None],
) -> None:
    client, server, _ = connect()
    stream_id = client.send(push())
    pump(client, server)
    apns_id = b"1294465C-E2AA-61D5-E49A-72E1A3C70BDC"  # server-made ids are upper case (apns.md §1)
    server.respond(stream_id, status, body, apns_id=apns_id, extra=extra)
    (answer,) = pump(client, server)
    assert answer == PushAnswered(
        stream_id, status, "1294465C-E2AA-61D5-E49A-72E1A3C70BDC", *expected
    )


def test_body_split_over_data_frames_and_200_with_empty_data() -> None:
    client, server, _ = connect()
    a, b = client.send(push(1)), client.send(push(2))
    pump(client, server)
    server.conn.send_headers(a, [(b":status", b"410"), (b"apns-id", b"X")])
    for piece in (b'{"reason":', b'"Unregistered",', b'"timestamp":42}'):
        server.conn.send_data(a, piece)
    server.conn.end_stream(a)
    server.conn.send_headers(b, [(b":status", b"200"), (b"apns-id", b"Y")])
    server.conn.end_stream(b)
    events = pump(client, server)
    assert events == [
        PushAnswered(a, 410, "X", Reason.UNREGISTERED, "Unregistered", 42, None),
        PushAnswered(b, 200, "Y", None, None, None, None),
    ]


def test_answer_bodies_give_the_window_back() -> None:
    # A 64 KiB window and 100 KB of answer bodies: without acknowledgements the server stalls.
    client = ApnsClientProtocol(AUTHORITY, initial_window=65_535)
    client.initiate()
    server = FakeApns()
    pump(client, server)
    stream_ids = [client.send(push(i)) for i in range(100)]
    pump(client, server)
    padding = "x" * 1000
    events: list[ClientEvent] = []
    for stream_id in stream_ids:  # the server would raise FlowControlError on a closed window
        server.respond(stream_id, 400, json.dumps({"reason": "BadTopic", "p": padding}).encode())
        events += pump(client, server)
    assert [e.stream_id for e in events if isinstance(e, PushAnswered)] == stream_ids
    assert all(e.reason is Reason.BAD_TOPIC for e in events if isinstance(e, PushAnswered))


# --------------------------------------------------------------------------------------------
# Stream slots


def test_slots_start_at_one_and_follow_settings() -> None:
    client = ApnsClientProtocol(AUTHORITY)
    assert client.available_slots == 0  # not initiated
    client.initiate()
    assert client.available_slots == 1  # apns.md §4: one stream until a valid token
    server = FakeApns(max_streams=1)
    assert pump(client, server) == []  # still 1: nothing changed
    first = client.send(push(0))
    assert client.available_slots == 0
    with pytest.raises(NoSlotError, match="1 stream slots"):
        client.send(push(1))
    server.settings(MAX_CONCURRENT_STREAMS=1000)
    assert pump(client, server) == [SlotsChanged(1000)]
    assert client.available_slots == 999
    more = [client.send(push(i)) for i in range(1, 6)]
    server.settings(MAX_CONCURRENT_STREAMS=1)
    assert pump(client, server) == [SlotsChanged(1)]
    assert client.available_slots == 0  # six open, limit one: never negative
    for stream_id in [first, *more]:
        server.respond(stream_id)
    assert len(pump(client, server)) == 6
    assert client.available_slots == 1


def test_server_without_a_stream_limit() -> None:
    client, _, events = connect(max_streams=None)
    assert events == [SlotsChanged(2**32 + 1)]  # h2's "unlimited" (RFC 9113 §6.5.2)
    assert client.available_slots == 2**32 + 1


# --------------------------------------------------------------------------------------------
# Pipelining


def test_pipelining_500_requests_in_one_write() -> None:
    client, server, _ = connect()
    requests = [
        push(
            i,
            priority=5 if i % 2 else 10,
            expiration=1_700_000_000 + i if i % 3 == 0 else None,
            apns_id=f"{i:08x}-0000-4000-8000-000000000000" if i % 5 == 0 else None,
            collapse_id=f"match-{i % 7}" if i % 4 == 0 else None,
            push_type="liveactivity",
        )
        for i in range(500)
    ]
    stream_ids = [client.send(r) for r in requests]
    assert stream_ids == list(range(1, 1000, 2))
    wire = client.data_to_send()
    assert client.data_to_send() == b""
    server.feed(wire)
    assert len(server.requests) == 500
    for stream_id, request in zip(stream_ids, requests, strict=True):
        received = server.requests[stream_id]
        assert received.headers == expected_headers(request)
        assert bytes(received.body) == BODY
        assert received.ended
    for stream_id in stream_ids:
        server.respond(stream_id)
    events = pump(client, server)
    assert [e.stream_id for e in events if isinstance(e, PushAnswered)] == stream_ids


# --------------------------------------------------------------------------------------------
# HPACK


@dataclass(frozen=True)
class Field:
    """One header field representation of an HPACK block (RFC 7541 §6)."""

    kind: str
    raw: bytes
    huffman: bool


def split_block(block: bytes) -> Iterator[Field]:
    i = 0
    while i < len(block):
        first = block[i]
        if first & 0x80:
            kind, prefix = "indexed", 7
        elif first & 0x40:
            kind, prefix = "incremental", 6
        elif first & 0x20:
            kind, prefix = "size_update", 5
        elif first & 0x10:
            kind, prefix = "never_indexed", 4
        else:
            kind, prefix = "without_indexing", 4
        index, used = decode_integer(block[i:], prefix)
        j, huffman = i + used, False
        if kind not in ("indexed", "size_update"):
            for _ in range(1 if index else 2):  # name literal too when not indexed
                huffman |= bool(block[j] & 0x80)
                length, used = decode_integer(block[j:], 7)
                j += used + length
        yield Field(kind, block[i:j], huffman)
        i = j


def frames(wire: bytes) -> Iterator[Frame]:
    """Every frame in a client's byte stream."""
    data = memoryview(wire[len(PREFACE) :] if wire.startswith(PREFACE) else wire)
    while data:
        frame, length = Frame.parse_frame_header(data[:9])
        frame.parse_body(data[9 : 9 + length])
        data = data[9 + length :]
        yield frame


def header_blocks(wire: bytes) -> list[bytes]:
    """The HPACK blocks of every HEADERS (+CONTINUATION) frame in a client's byte stream."""
    blocks: list[bytes] = []
    for frame in frames(wire):
        if isinstance(frame, HeadersFrame):
            blocks.append(bytes(frame.data))
        elif isinstance(frame, ContinuationFrame):
            blocks[-1] += bytes(frame.data)
    return blocks


def decoded_fields(wire: bytes) -> list[list[tuple[bytes, bytes, Field]]]:
    decoder = Decoder()
    out = []
    for block in header_blocks(wire):
        fields = [f for f in split_block(block) if f.kind != "size_update"]
        headers = decoder.decode(block, raw=True)
        out.append([(n, v, f) for (n, v), f in zip(headers, fields, strict=True)])
    return out


def test_hpack_indexes_authorization_and_keeps_paths_out_of_the_table() -> None:
    client, server, _ = connect()
    mark = len(server.wire)
    for i in range(3):
        client.send(push(i, apns_id=f"{i:08x}-0000-4000-8000-000000000000"))
    pump(client, server)
    first, second, third = decoded_fields(bytes(server.wire[mark:]))
    by_name = [{n: f for n, _, f in block} for block in (first, second, third)]
    # authorization: a literal once, then a one- or two-byte index.
    assert by_name[0][b"authorization"].kind == "incremental"
    for later in by_name[1:]:
        assert later[b"authorization"].kind == "indexed"
        assert len(later[b"authorization"].raw) <= 2
        for name in (b":method", b":scheme", b":authority", b"apns-topic", b"apns-push-type"):
            assert later[name].kind == "indexed"
    # :path is never added to the table; apns-id indexes its name once (apns.md §1).
    assert all(b[b":path"].kind == "without_indexing" for b in by_name)
    assert by_name[0][b"apns-id"].kind == "incremental"
    assert by_name[1][b"apns-id"].kind == "without_indexing"
    assert len(by_name[1][b"apns-id"].raw) == 2 + 1 + 36  # dynamic name index, length, value
    # No Huffman anywhere: the literals are on the wire as they are.
    assert not any(f.huffman for block in (first, second, third) for _, _, f in block)
    assert bytes(server.wire).count(JWT) == 1
    assert token(2).encode() in server.wire


def test_dynamic_table_stays_small_under_varying_paths_and_ids() -> None:
    client, server, _ = connect()
    for i in range(300):
        client.send(push(i, apns_id=f"{i:08x}-0000-4000-8000-000000000000", expiration=i))
        if client.available_slots == 0:
            break
    pump(client, server)
    entries = server.conn.decoder.header_table.dynamic_entries
    assert len(entries) <= 12
    assert (b"authorization", JWT) in entries


def test_header_block_shrinks_after_first_request() -> None:
    client, server, _ = connect()
    mark = len(server.wire)
    client.send(push(1))
    client.send(push(2))
    pump(client, server)
    first, second = header_blocks(bytes(server.wire[mark:]))
    assert len(second) < len(first) - len(JWT)
    assert len(second) <= 4 + 2 + len(token(2)) + len("/3/device/") + 8


@pytest.mark.parametrize(
    ("sizes", "signalled"),
    [
        ((0,), [0]),
        ((0, 0), [0]),  # hpack alone would lose this one: the second set clears its flag
        ((64, 0), [0]),  # hpack alone would send 64, above the final limit
        ((0, 4096), [0, 4096]),  # RFC 7541 §4.2: the smallest, then the final size
        ((1024, 1024, 256), [256]),
    ],
)
def test_table_size_changes_are_signalled(sizes: tuple[int, ...], signalled: list[int]) -> None:
    client, server, _ = connect()
    client.send(push(1, apns_id="00000000-0000-4000-8000-000000000000"))
    for size in sizes:
        server.settings(HEADER_TABLE_SIZE=size)
        pump(client, server)
    mark = len(server.wire)
    for i in range(2, 5):
        request = push(i, apns_id=f"{i:08x}-0000-4000-8000-000000000000")
        stream_id = client.send(request)
        pump(client, server)
        assert server.requests[stream_id].headers == expected_headers(request)
    assert server.conn.decoder.header_table_size == sizes[-1]
    first = list(split_block(header_blocks(bytes(server.wire[mark:]))[0]))
    updates = [decode_integer(f.raw, 5)[0] for f in first if f.kind == "size_update"]
    assert updates == signalled
    assert all(f.kind == "size_update" for f in first[: len(updates)])


# Steps: ("push", token, priority, topic, expiration, id, collapse) | ("auth", n) | ("table", size)
_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.integers(0, 2**40),
            st.sampled_from([5, 10]),
            st.sampled_from([TOPIC, "com.example.other.push-type.liveactivity", "com.example.app"]),
            st.none() | st.integers(0, 2**32),
            st.none() | st.uuids().map(str),
            st.none() | st.text("abcxyz-", min_size=0, max_size=64),
        ),
        st.tuples(st.just("auth"), st.integers(0, 5)),
        st.tuples(st.just("table"), st.sampled_from([0, 64, 256, 1024, 4096])),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_every_header_block_decodes_to_exactly_what_was_sent(
    steps: list[tuple[object, ...]],
) -> None:
    client, server, _ = connect()
    auth = JWT
    sent: dict[int, list[tuple[bytes, bytes]]] = {}
    for step in steps:
        if step[0] == "push":
            _, i, priority, topic, expiration, apns_id, collapse = step
            request = PushRequest(
                token(i),
                topic,
                BODY,
                priority=priority,
                expiration=expiration,  # type: ignore[arg-type]
                apns_id=apns_id,
                collapse_id=collapse,  # type: ignore[arg-type]
            )
            sent[client.send(request)] = expected_headers(request, auth)
        elif step[0] == "auth":
            auth = b"bearer " + bytes([65 + int(step[1])]) * 180  # type: ignore[call-overload]
            client.set_authorization(auth)
        else:
            server.settings(HEADER_TABLE_SIZE=int(step[1]))  # type: ignore[call-overload]
        pump(client, server)
        for stream_id, headers in sent.items():  # answer, to keep slots free
            assert server.requests[stream_id].headers == headers
            server.respond(stream_id)
        sent.clear()
        pump(client, server)
    assert not sent
    assert client.open_streams == 0


# --------------------------------------------------------------------------------------------
# Resets and GOAWAY


def test_refused_and_reset_streams() -> None:
    client, server, _ = connect()
    a, b = client.send(push(1)), client.send(push(2))
    pump(client, server)
    server.conn.reset_stream(a, ErrorCodes.REFUSED_STREAM)
    server.conn.reset_stream(b, ErrorCodes.INTERNAL_ERROR)
    events = pump(client, server)
    assert events == [StreamRefused(a), StreamReset(b, int(ErrorCodes.INTERNAL_ERROR))]
    assert client.open_streams == 0


def test_cancel_frees_the_slot_and_drops_a_late_answer() -> None:
    client, server, _ = connect(max_streams=1)
    stream_id = client.send(push(1))
    pump(client, server)
    assert client.available_slots == 0
    client.cancel(stream_id)
    client.cancel(stream_id)  # twice, or for an unknown id: nothing happens
    client.cancel(999)
    assert client.available_slots == 1 and client.open_streams == 0
    mark = len(server.wire)
    server.respond(stream_id)  # crosses the RST_STREAM on the wire
    assert pump(client, server) == []
    resets = [f for f in frames(bytes(server.wire[mark:])) if isinstance(f, RstStreamFrame)]
    # CANCEL, then h2's own STREAM_CLOSED for the answer that arrived on the reset stream.
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (stream_id, ErrorCodes.CANCEL),
        (stream_id, ErrorCodes.STREAM_CLOSED),
    ]
    later = client.send(push(2))
    pump(client, server)
    server.respond(later)
    assert [e.stream_id for e in pump(client, server) if isinstance(e, PushAnswered)] == [later]


def goaway_frame(last_stream_id: int, error_code: int, debug: bytes) -> bytes:
    # Written by hand: h2's server would refuse to answer streams after its own GOAWAY.
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = error_code
    frame.additional_data = debug
    return frame.serialize()


@pytest.mark.parametrize(
    ("debug", "reason", "text"),
    [
        (b'{"reason":"Shutdown"}', Reason.SHUTDOWN, '{"reason":"Shutdown"}'),
        (
            b"Maximum active streams violated for this endpoint.",
            None,
            "Maximum active streams violated for this endpoint.",
        ),
        (b"", None, ""),
        (b'{"reason":"NotAReason"}', None, '{"reason":"NotAReason"}'),
    ],
)
def test_goaway_drains_streams_up_to_last_stream_id(
    debug: bytes, reason: Reason | None, text: str
) -> None:
    client, server, _ = connect()
    ids = [client.send(push(i)) for i in range(4)]  # 1, 3, 5, 7
    pump(client, server)
    client.send(push(9))  # encoded, not yet written when the GOAWAY arrives
    client.ping(b"12345678")  # queued, not yet written either
    events = client.receive_data(goaway_frame(3, 0, debug))
    assert events == [GoAway(3, 0, reason, text, (5, 7, 9))]
    assert client.available_slots == 0
    assert client.is_draining and not client.is_closed
    with pytest.raises(NoSlotError, match="GOAWAY"):
        client.send(push(10))
    held = client.data_to_send()  # what was queued before the GOAWAY is still written
    server.feed(held)
    assert 9 in server.requests
    server.respond(ids[0])
    server.respond(ids[1], 400, b'{"reason":"BadTopic"}')
    events = pump(client, server)
    assert [type(e) for e in events] == [PingAcked, PushAnswered, PushAnswered, ConnectionClosed]
    assert events[-1] == ConnectionClosed(None)
    assert client.is_closed
    assert client.receive_data(b"\x00") == []


def test_goaway_drain_keeps_output_of_the_same_read_and_acknowledges_settings() -> None:
    # The PING that came in the read with the GOAWAY is still acknowledged (h2 drops what it had
    # queued when a GOAWAY arrives), and a SETTINGS during the drain gets its ACK (RFC 9113
    # §6.5.3) instead of failing the connection with its open stream.
    client, server, _ = connect()
    stream_id = client.send(push(1))
    pump(client, server)
    server.conn.ping(b"pingpong")
    events = client.receive_data(server.conn.data_to_send() + goaway_frame(stream_id, 0, b""))
    assert events == [GoAway(stream_id, 0, None, "", ())]
    server.feed(client.data_to_send())
    assert any(isinstance(e, h2.events.PingAckReceived) for e in server.events)
    server.settings(MAX_CONCURRENT_STREAMS=5)
    server.respond(stream_id)
    events = pump(client, server)
    assert [type(e) for e in events] == [PushAnswered, ConnectionClosed]
    assert events[-1] == ConnectionClosed(None)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in server.events)


def test_goaway_with_error_and_nothing_to_drain_closes_at_once() -> None:
    client, server, _ = connect()
    client.send(push(1))
    pump(client, server)
    events = client.receive_data(goaway_frame(0, int(ErrorCodes.ENHANCE_YOUR_CALM), b"calm"))
    assert events == [
        GoAway(0, int(ErrorCodes.ENHANCE_YOUR_CALM), None, "calm", (1,)),
        ConnectionClosed("GOAWAY error 11: calm"),
    ]
    assert client.is_closed


def test_close_sends_goaway_and_drains() -> None:
    client, server, _ = connect()
    stream_id = client.send(push(1))
    client.close("bye")
    assert client.is_draining and client.available_slots == 0
    pump(client, server)
    terminated = [e for e in server.events if isinstance(e, h2.events.ConnectionTerminated)]
    assert terminated[0].additional_data == b"bye"
    assert server.requests[stream_id].ended


def test_close_with_nothing_open_is_closed_at_once() -> None:
    client, server, _ = connect()
    client.close()
    assert client.is_closed
    assert pump(client, server) == []  # the GOAWAY goes out; no event comes back
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in server.events)


# --------------------------------------------------------------------------------------------
# Connection failures


def test_eof_reports_unanswered_streams() -> None:
    client, server, _ = connect()
    a, b = client.send(push(1)), client.send(push(2))
    pump(client, server)
    server.conn.send_headers(b, [(b":status", b"500"), (b"apns-id", b"Z")])  # started, not ended
    assert pump(client, server) == []
    events = client.receive_data(b"")
    assert events == [
        PushAnswered(b, 500, "Z", None, None, None, None),
        ConnectionClosed("connection closed by peer", (a,)),
    ]
    assert client.is_closed and client.available_slots == 0
    assert client.receive_data(b"more") == []
    with pytest.raises(ApnsProtocolError):
        client.ping(b"abcdefgh")


def test_garbage_from_the_server_closes_without_raising() -> None:
    client, server, _ = connect()
    stream_id = client.send(push(1))
    pump(client, server)
    events = client.receive_data(b"\x00\x00\x08\x07\x00\x00\x00\x00\x01" + b"\xff" * 64)
    assert len(events) == 1 and isinstance(events[0], ConnectionClosed)
    assert events[0].error is not None and events[0].error.startswith("protocol error")
    assert events[0].unanswered == (stream_id,)
    goaway = client.data_to_send()  # h2 answers a protocol error with its own GOAWAY
    frame, _ = Frame.parse_frame_header(memoryview(goaway[:9]))
    assert isinstance(frame, GoAwayFrame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_raise(data: bytes, handshake: bool) -> None:
    client = ApnsClientProtocol(AUTHORITY)
    client.initiate()
    if handshake:
        server = FakeApns()
        pump(client, server)
        client.send(push(1))
    events = client.receive_data(data)
    if any(isinstance(e, ConnectionClosed) for e in events):
        assert client.is_closed
        assert client.receive_data(data) == []


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame as bytes, whatever its contents (RFC 9113 §4.1)."""
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big")
    return header + payload


_frames = st.lists(
    st.tuples(
        st.integers(0, 10),  # frame type: the ten of RFC 9113 and an unknown one
        st.integers(0, 255),  # flags
        st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),  # stream id
        st.binary(max_size=40),
    ).map(lambda f: raw_frame(*f)),
    max_size=8,
)


def settled(events: list[ClientEvent]) -> list[int]:
    """Every stream id an event settles, in order (answered, refused, reset, given up)."""
    ids: list[int] = []
    for e in events:
        if isinstance(e, PushAnswered | StreamRefused | StreamReset):
            ids.append(e.stream_id)
        elif isinstance(e, GoAway):
            ids += e.unprocessed
        elif isinstance(e, ConnectionClosed):
            ids += e.unanswered
    return ids


@settings(max_examples=300, deadline=None)
@given(_frames)
def test_random_frames_never_raise_and_settle_each_stream_once(frames: list[bytes]) -> None:
    client, server, _ = connect()
    ids = [client.send(push(i)) for i in range(3)]
    pump(client, server)
    events: list[ClientEvent] = []
    for frame in frames:
        events += client.receive_data(frame)
        client.data_to_send()
    events += client.receive_data(b"")  # end of file settles whatever is left
    assert sorted(settled(events)) == ids
    assert client.is_closed and client.open_streams == 0
    assert sum(isinstance(e, ConnectionClosed) for e in events) == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=20))
def test_answers_do_not_depend_on_how_bytes_are_split(cuts: list[int]) -> None:
    client, server, _ = connect()
    ids = [client.send(push(i)) for i in range(4)]
    pump(client, server)
    for n, stream_id in enumerate(ids):
        if n % 2:
            server.respond(stream_id, 410, b'{"reason":"Unregistered"}')
        else:
            server.respond(stream_id)
    data = server.conn.data_to_send()
    events: list[ClientEvent] = []
    start = 0
    for cut in sorted({c for c in cuts if c < len(data)}):
        events += client.receive_data(data[start:cut])
        start = cut
    events += client.receive_data(data[start:])
    assert [(e.stream_id, e.status) for e in events if isinstance(e, PushAnswered)] == [
        (ids[0], 200),
        (ids[1], 410),
        (ids[2], 200),
        (ids[3], 410),
    ]


# --------------------------------------------------------------------------------------------
# Flow control


def test_body_larger_than_the_stream_window_is_sent_as_windows_open() -> None:
    client, server, _ = connect(initial_window=100)
    body = bytes(range(256)) * 11 + b"tail"  # 2820 bytes
    stream_id = client.send(PushRequest(token(1), TOPIC, body))
    server.feed(client.data_to_send())
    assert len(server.requests[stream_id].body) == 100  # no more than the window allows
    assert not server.requests[stream_id].ended
    pump(client, server)  # the server acknowledges as it reads: WINDOW_UPDATEs release the rest
    assert bytes(server.requests[stream_id].body) == body
    assert server.requests[stream_id].ended
    server.respond(stream_id)
    assert [type(e) for e in pump(client, server)] == [PushAnswered]


def test_connection_window_is_shared_fairly_and_released() -> None:
    client, server, _ = connect(auto_ack=False)
    body = b"b" * 3000
    ids = [client.send(PushRequest(token(i), TOPIC, body)) for i in range(30)]  # 90 KB > 64 KB
    pump(client, server)
    received = sum(len(r.body) for r in server.requests.values())
    assert received == 65_535
    server.ack_all()
    pump(client, server)
    server.ack_all()
    pump(client, server)
    assert all(bytes(server.requests[i].body) == body and server.requests[i].ended for i in ids)


def test_early_answer_cancels_the_rest_of_the_body() -> None:
    client, server, _ = connect(initial_window=100, auto_ack=False)
    stream_id = client.send(PushRequest(token(1), TOPIC, b"z" * 3000))
    pump(client, server)
    server.respond(stream_id, 413, b'{"reason":"PayloadTooLarge"}')
    events = pump(client, server)
    assert events[0].status == 413  # type: ignore[union-attr]
    assert client.open_streams == 0
    resets = [e for e in server.events if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(stream_id, ErrorCodes.CANCEL)]
    server.ack_all()
    pump(client, server)
    assert len(server.requests[stream_id].body) == 100  # nothing more was sent


# --------------------------------------------------------------------------------------------
# PING


def test_ping_is_acknowledged() -> None:
    client, server, _ = connect()
    client.ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    assert pump(client, server) == [PingAcked(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    with pytest.raises(ValueError):
        client.ping(b"short")


def test_h2_forgets_closed_streams() -> None:
    # The O(1) open-stream count must not keep every finished stream alive inside h2.
    client, server, _ = connect()
    for _ in range(30):
        ids = [client.send(push(i)) for i in range(100)]
        pump(client, server)
        for stream_id in ids:
            server.respond(stream_id)
        pump(client, server)
    assert client.open_streams == 0
    assert len(client._h2.streams) <= 600


def test_authorization_can_be_absent_and_replaced() -> None:
    client, server, _ = connect()
    client.set_authorization(None)
    a = client.send(push(1))
    client.set_authorization(b"bearer new")
    b = client.send(push(2))
    pump(client, server)
    assert server.requests[a].headers == expected_headers(push(1), None)
    assert server.requests[b].headers == expected_headers(push(2), b"bearer new")
