"""The sans-IO APNs client protocol against an in-memory h2 server playing APNs (`ApnsPeer`).

Bytes go both ways by hand (`pump`), so every test controls exactly what the server sees and when.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Decoder
from hyperframe.frame import ContinuationFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.apns.h2compat import dynamic_table
from engine.apns.h2wire import PREFACE, read_hpack_int
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
from tests.helpers.apnspeer import (
    AUTHORITY,
    BODY,
    JWT,
    TOPIC,
    ApnsPeer,
    connect,
    expected_headers,
    goaway_frame,
    pump,
    push,
    raw_frame,
    token,
)

# --------------------------------------------------------------------------------------------
# Connection start


def test_initiate_sends_settings_and_connection_window() -> None:
    client = ApnsClientProtocol(AUTHORITY)
    client.initiate()
    server = ApnsPeer()
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
        (
            410,
            b'{"reason":"Unregistered","timestamp":"1700000000123"}',
            (),
            (Reason.UNREGISTERED, "Unregistered", 1_700_000_000_123, None),
        ),
        (
            410,
            b'{"reason":"Unregistered","timestamp":true}',
            (),
            (Reason.UNREGISTERED, "Unregistered", None, None),
        ),
        (
            410,
            b'{"reason":"Unregistered","timestamp":"yesterday"}',
            (),
            (Reason.UNREGISTERED, "Unregistered", None, None),
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


def test_only_the_first_64_kib_of_an_answer_body_is_kept() -> None:
    # APNs' error bodies are a few dozen bytes (apns.md §3); a peer streaming more cannot grow
    # memory: frames stop being kept once 64 KiB are.
    client, server, _ = connect()
    stream_id = client.send(push(1))
    pump(client, server)
    server.conn.send_headers(stream_id, [(b":status", b"500"), (b"apns-id", b"X")])
    for _ in range(5):
        server.conn.send_data(stream_id, b"x" * 16_384)
    server.conn.end_stream(stream_id)
    (answer,) = pump(client, server)
    assert answer == PushAnswered(stream_id, 500, "X", None, "x" * 65_536, None, None)


def test_answer_bodies_give_the_window_back() -> None:
    # A 64 KiB window and 100 KB of answer bodies: without acknowledgements the server stalls.
    client = ApnsClientProtocol(AUTHORITY, initial_window=65_535)
    client.initiate()
    server = ApnsPeer()
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
    server = ApnsPeer(max_streams=1)
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


def test_stream_ids_run_out_at_the_last_odd_id() -> None:
    # RFC 9113 §5.1.1: a client's stream ids are odd and below 2**31, and are never reused; the
    # protocol is moved to its last id here rather than sending 2**30 requests.
    client, server, _ = connect()
    client._next_id = 2**31 - 1
    last = client.send(push(1))
    assert last == 2**31 - 1 and client.available_slots == 0
    with pytest.raises(NoSlotError, match="exhausted"):
        client.send(push(2))
    pump(client, server)
    server.respond(last)
    assert pump(client, server) == [PushAnswered(last, 200, "77E0A9C3-0000", *[None] * 4)]
    assert client.available_slots == 0 and client.open_streams == 0


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


def test_header_tails_are_cached_for_at_most_64_topics() -> None:
    # The cache of pre-built headers per (topic, push type, priority) stays bounded, and a tail
    # dropped from it is built again, the same.
    client, server, _ = connect()
    requests = [
        PushRequest(token(i), f"com.example.app{i}.push-type.liveactivity", BODY) for i in range(70)
    ]
    stream_ids = [client.send(r) for r in [*requests, requests[0]]]
    assert len(client._tails) <= 64
    pump(client, server)
    for stream_id, request in zip(stream_ids, [*requests, requests[0]], strict=True):
        assert server.requests[stream_id].headers == expected_headers(request)


# --------------------------------------------------------------------------------------------
# HPACK


@dataclass(frozen=True)
class Field:
    """One header field representation of an HPACK block (RFC 7541 §6)."""

    kind: str
    raw: bytes
    huffman: bool


def split_block(block: bytes) -> Iterator[Field]:
    """The field representations of an HPACK block, in order, each with its raw bytes."""
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
        index, j = read_hpack_int(block, i, prefix)
        huffman = False
        if kind not in ("indexed", "size_update"):
            for _ in range(1 if index else 2):  # name literal too when not indexed
                huffman |= bool(block[j] & 0x80)
                length, j = read_hpack_int(block, j, 7)
                j += length
        yield Field(kind, block[i:j], huffman)
        i = j


def frames(wire: bytes) -> Iterator[Frame]:
    """Every frame in a client's byte stream."""
    data = memoryview(wire.removeprefix(PREFACE))
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
    entries = dynamic_table(server.conn.decoder)
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
    updates = [read_hpack_int(f.raw, 0, 5)[0] for f in first if f.kind == "size_update"]
    assert updates == signalled
    assert all(f.kind == "size_update" for f in first[: len(updates)])


@dataclass(frozen=True)
class NewAuthorization:
    """A step: `set_authorization(value)` on the client."""

    value: bytes


@dataclass(frozen=True)
class NewTableSize:
    """A step: the server's SETTINGS_HEADER_TABLE_SIZE changes to `size`."""

    size: int


Step: TypeAlias = PushRequest | NewAuthorization | NewTableSize

_steps: st.SearchStrategy[list[Step]] = st.lists(
    st.one_of(
        st.builds(
            PushRequest,
            st.integers(0, 2**40).map(token),
            st.sampled_from([TOPIC, "com.example.other.push-type.liveactivity", "com.example.app"]),
            st.just(BODY),
            priority=st.sampled_from([5, 10]),
            expiration=st.none() | st.integers(0, 2**32),
            apns_id=st.none() | st.uuids().map(str),
            collapse_id=st.none() | st.text("abcxyz-", min_size=0, max_size=64),
        ),
        st.integers(0, 5).map(lambda n: NewAuthorization(b"bearer " + bytes([65 + n]) * 180)),
        st.sampled_from([0, 64, 256, 1024, 4096]).map(NewTableSize),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_every_header_block_decodes_to_exactly_what_was_sent(steps: list[Step]) -> None:
    client, server, _ = connect()
    auth = JWT
    sent: dict[int, list[tuple[bytes, bytes]]] = {}
    for step in steps:
        if isinstance(step, PushRequest):
            sent[client.send(step)] = expected_headers(step, auth)
        elif isinstance(step, NewAuthorization):
            auth = step.value
            client.set_authorization(auth)
        else:
            server.settings(HEADER_TABLE_SIZE=step.size)
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


def test_answers_on_streams_a_goaway_left_unprocessed_are_ignored() -> None:
    # Those streams were reported in `GoAway.unprocessed` and go elsewhere; an answer the server
    # sends on one anyway must not settle it a second time.
    client, server, _ = connect()
    first, second = client.send(push(1)), client.send(push(2))
    pump(client, server)
    events = client.receive_data(goaway_frame(first, 0, b""))
    assert events == [GoAway(first, 0, None, "", (second,))]
    server.conn.send_headers(second, [(b":status", b"400"), (b"apns-id", b"Y")])
    server.conn.send_data(second, b'{"reason":"BadTopic"}', end_stream=True)
    server.respond(first)
    assert pump(client, server) == [
        PushAnswered(first, 200, "77E0A9C3-0000", *[None] * 4),
        ConnectionClosed(None),
    ]


def test_a_drain_whose_last_stream_is_cancelled_ends_with_the_goaways_error() -> None:
    # Nothing is left to answer once the last stream is given up: the connection is closed, and
    # the end of the socket reports the drain's outcome, not a lost connection.
    client, server, _ = connect()
    stream_id = client.send(push(1))
    pump(client, server)
    code = int(ErrorCodes.ENHANCE_YOUR_CALM)
    assert client.receive_data(goaway_frame(stream_id, code, b"calm")) == [
        GoAway(stream_id, code, None, "calm", ())
    ]
    client.cancel(stream_id)
    assert client.is_closed
    assert client.connection_lost() == [ConnectionClosed("GOAWAY error 11: calm")]
    assert client.connection_lost() == []


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
    client.close("again")
    assert client.data_to_send() == b""  # one GOAWAY only


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
        server = ApnsPeer()
        pump(client, server)
        client.send(push(1))
    events = client.receive_data(data)
    if any(isinstance(e, ConnectionClosed) for e in events):
        assert client.is_closed
        assert client.receive_data(data) == []


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
    assert isinstance(events[0], PushAnswered) and events[0].status == 413
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
