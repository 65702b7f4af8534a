"""Accept-all sink: in-memory against a real h2 client, hostile bytes, `apns-id` echo through
HPACK, and TLS round trips (an h2 client and aioapns)."""

from __future__ import annotations

import re
import ssl
import struct
from functools import partial
from typing import TypeVar, cast

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
import trio
import trio.testing
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sink_probe import RequestEncoder, ResponseReader
from engine.apns.h2compat import HpackEncoderBase
from engine.apns.h2wire import (
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    ENHANCE_YOUR_CALM,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame,
    hpack_int,
    hpack_string,
)
from simulator.fastserve import SinkStats, serve_fast_sink, serve_sink_stream
from simulator.fastsink import MAX_ECHOED_ID, FastSinkProtocol, response_block

APNS_ID = "11111111-2222-3333-4444-555555555555"
REQUEST = [
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "api.sandbox.push.apple.com"),
    (":path", "/3/device/" + "ab" * 32),
    ("apns-push-type", "liveactivity"),
    ("apns-topic", "com.example.app.push-type.liveactivity"),
]
BODY = b'{"aps":{"timestamp":1700000000,"event":"update","content-state":{"n":1}}}'
CLIENT_SETTINGS = frame(SETTINGS, 0, 0, struct.pack(">HL", 2, 0))  # no HEADER_TABLE_SIZE
BLOCK = b"\x83\x87\x84\x41\x01x"  # POST, https, :path /, :authority x (indexed)
H = FLAG_END_HEADERS
E = TypeVar("E", bound=h2.events.Event)


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of every frame in `data`, which must hold whole frames."""
    frames, pos = [], 0
    while pos < len(data):
        hi, lo, ftype, flags, sid = struct.unpack_from(">BHBBL", data, pos)
        end = pos + 9 + ((hi << 16) | lo)
        assert end <= len(data), "truncated frame in server output"
        frames.append((ftype, flags, sid & 0x7FFFFFFF, data[pos + 9 : end]))
        pos = end
    return frames


def goaway_code(data: bytes) -> int | None:
    codes = [struct.unpack(">LL", p)[1] for t, _, _, p in parse_frames(data) if t == GOAWAY]
    assert len(codes) <= 1
    return codes[0] if codes else None


def answered_streams(data: bytes) -> list[int]:
    return [s for t, f, s, _ in parse_frames(data) if t == HEADERS and f & FLAG_END_STREAM]


def started_sink(**kwargs: int) -> FastSinkProtocol:
    """A sink past the preface and the client's first SETTINGS, its own output drained."""
    sink = FastSinkProtocol(apns_id=APNS_ID, **kwargs)
    sink.receive_data(PREFACE + CLIENT_SETTINGS)
    sink.data_to_send()
    return sink


class Pair:
    """An h2 client wired to a sink in memory."""

    def __init__(self, **sink_kwargs: int) -> None:
        config = h2.config.H2Configuration(client_side=True)
        self.client = h2.connection.H2Connection(config=config)
        self.client.initiate_connection()
        self.sink = FastSinkProtocol(apns_id=APNS_ID, **sink_kwargs)
        self.events: list[h2.events.Event] = []
        self.exchange()

    def exchange(self) -> None:
        """Move bytes both ways until neither side has anything to say (bounded)."""
        for _ in range(100):
            to_sink = self.client.data_to_send()
            if to_sink:
                self.sink.receive_data(to_sink)
            to_client = self.sink.data_to_send()
            if to_client:
                self.events += self.client.receive_data(to_client)
            if not to_sink and not to_client:
                return
        raise AssertionError("exchange did not settle")

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def request(self, body: bytes | None = BODY, headers: list[tuple[str, str]] = REQUEST) -> int:
        sid: int = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.client.send_data(sid, body, end_stream=True)
        return sid


def assert_answered(pair: Pair, sids: list[int]) -> None:
    responses = {e.stream_id: e.headers for e in pair.of(h2.events.ResponseReceived)}
    ended = {e.stream_id for e in pair.of(h2.events.StreamEnded)}
    for sid in sids:
        assert responses[sid] == [(b":status", b"200"), (b"apns-id", APNS_ID.encode())]
        assert sid in ended
    assert not pair.sink.closed


def test_pipelined_requests_are_all_answered_in_one_batch() -> None:
    pair = Pair()
    sids = [pair.request(None if i % 3 == 0 else BODY) for i in range(300)]
    pair.sink.receive_data(pair.client.data_to_send())
    batch = pair.sink.data_to_send()
    assert answered_streams(batch) == sids  # every answer from one receive_data, in order
    pair.events += pair.client.receive_data(batch)
    pair.exchange()
    assert_answered(pair, sids)
    assert pair.sink.requests == 300
    assert pair.sink.bytes_in > 200 * len(BODY)  # two in three carry a body
    assert pair.sink.bytes_out >= len(batch)


def test_server_preface_advertises_streams_and_windows_and_acks_settings() -> None:
    pair = Pair(max_concurrent_streams=7, window_size=1 << 20)
    changed = pair.of(h2.events.RemoteSettingsChanged)[0].changed_settings
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 7
    assert changed[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value == 1 << 20
    assert pair.of(h2.events.SettingsAcknowledged)
    assert pair.client.outbound_flow_control_window == 1 << 20


def test_ping_is_acked_with_the_same_payload() -> None:
    pair = Pair()
    pair.client.ping(b"8 bytes!")
    pair.exchange()
    assert [e.ping_data for e in pair.of(h2.events.PingAckReceived)] == [b"8 bytes!"]


def test_data_windows_stay_open_across_megabytes() -> None:
    pair = Pair(window_size=16384)
    bodies: dict[int, int] = {}
    for size in (1_200_000, 300_000, 5_000):
        sid = pair.client.get_next_available_stream_id()
        pair.client.send_headers(sid, REQUEST)
        bodies[sid] = size
    for _ in range(2000):
        if not bodies:
            break
        for sid, left in list(bodies.items()):
            room = min(pair.client.local_flow_control_window(sid), left, 16384)
            if room:
                pair.client.send_data(sid, b"x" * room, end_stream=room == left)
                bodies[sid] = left - room
            if bodies[sid] == 0:
                del bodies[sid]
        pair.exchange()
    assert not bodies, "a window stayed shut"
    assert len(pair.of(h2.events.ResponseReceived)) == 3
    assert pair.of(h2.events.WindowUpdated)  # credit came back on the streams and the connection


def test_continuation_split_header_block_from_h2_is_answered() -> None:
    pair = Pair()
    big = [*REQUEST, ("x-padding", "p" * 40_000)]  # h2 splits it into HEADERS + CONTINUATIONs
    sid = pair.request(body=BODY, headers=big)
    pair.exchange()
    assert_answered(pair, [sid])


def test_continuation_fed_byte_by_byte() -> None:
    sink = started_sink()
    wire = (
        frame(HEADERS, FLAG_END_STREAM, 1, BLOCK[:3])
        + frame(CONTINUATION, 0, 1, BLOCK[3:4])
        + frame(CONTINUATION, FLAG_END_HEADERS, 1, BLOCK[4:])
    )
    out = b""
    for i in range(len(wire)):
        sink.receive_data(wire[i : i + 1])
        out += sink.data_to_send()
    assert answered_streams(out) == [1]
    assert not sink.closed


def test_client_reset_stream_is_forgotten_and_others_still_answered() -> None:
    pair = Pair(max_concurrent_streams=1)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST)
    pair.client.reset_stream(sid)
    pair.exchange()
    later = []
    for _ in range(2):  # each would exceed the limit of 1 if the reset stream were kept
        later.append(pair.request())
        pair.exchange()
    assert_answered(pair, later)
    assert sid not in {e.stream_id for e in pair.of(h2.events.ResponseReceived)}


def test_client_goaway_answers_then_closes() -> None:
    pair = Pair()
    sids = [pair.request() for _ in range(3)]
    pair.client.close_connection()
    pair.sink.receive_data(pair.client.data_to_send())
    out = pair.sink.data_to_send()
    assert answered_streams(out) == sids
    assert goaway_code(out) == NO_ERROR
    assert struct.unpack(">L", parse_frames(out)[-1][3][:4])[0] == sids[-1]
    assert pair.sink.closed


def test_header_table_size_change_prefixes_next_answer_only() -> None:
    sink = FastSinkProtocol(apns_id=APNS_ID)
    sink.receive_data(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HL", 1, 0)))
    sink.receive_data(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, BLOCK))
    sink.receive_data(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, BLOCK))
    blocks = [p for t, _, _, p in parse_frames(sink.data_to_send()) if t == HEADERS]
    assert blocks[0][:2] == b"\x20\x88"
    assert blocks[1][:1] == b"\x88"


@pytest.mark.parametrize("apns_id", ["A", "B" * 126, "C" * 127, "D" * 300])
def test_response_block_decodes_for_any_id_length(apns_id: str) -> None:
    headers = hpack.Decoder().decode(response_block(apns_id), raw=True)
    assert headers == [(b":status", b"200"), (b"apns-id", apns_id.encode())]


def test_unknown_and_priority_frames_are_ignored() -> None:
    sink = started_sink()
    sink.receive_data(
        frame(0xEE, 0xFF, 0, b"whatever")
        + frame(PRIORITY, 0, 3, struct.pack(">LB", 1, 16))
        + frame(HEADERS, H | FLAG_END_STREAM | FLAG_PADDED, 1, b"\x02" + BLOCK + b"\0\0")
    )
    assert answered_streams(sink.data_to_send()) == [1]
    assert not sink.closed


CASES = [
    ("bad preface", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_ERROR, False),
    ("first frame not SETTINGS", PREFACE + frame(PING, 0, 0, b"12345678"), PROTOCOL_ERROR, False),
    ("oversized frame", struct.pack(">BHBBL", 0, 16385, DATA, 0, 1), FRAME_SIZE_ERROR, True),
    ("HEADERS on stream 0", frame(HEADERS, H, 0, BLOCK), PROTOCOL_ERROR, True),
    ("even stream id", frame(HEADERS, H, 2, BLOCK), PROTOCOL_ERROR, True),
    ("DATA on idle stream", frame(DATA, FLAG_END_STREAM, 1, b"x"), PROTOCOL_ERROR, True),
    ("DATA on stream 0", frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR, True),
    (
        "stream id reused",
        frame(HEADERS, H | 1, 5, BLOCK) + frame(HEADERS, H | 1, 5, BLOCK),
        STREAM_CLOSED,
        True,
    ),
    (
        "DATA after END_STREAM",
        frame(HEADERS, H | 1, 1, BLOCK) + frame(DATA, 1, 1, b"x"),
        STREAM_CLOSED,
        True,
    ),
    ("stray CONTINUATION", frame(CONTINUATION, H, 1, BLOCK), PROTOCOL_ERROR, True),
    (
        "interrupted header block",
        frame(HEADERS, 0, 1, BLOCK) + frame(PING, 0, 0, b"12345678"),
        PROTOCOL_ERROR,
        True,
    ),
    (
        "CONTINUATION flood",
        frame(HEADERS, 0, 1, BLOCK) + frame(CONTINUATION, 0, 1, b"a" * 16384) * 5,
        ENHANCE_YOUR_CALM,
        True,
    ),
    ("PING of 7 bytes", frame(PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR, True),
    ("PING on a stream", frame(PING, 0, 1, b"12345678"), PROTOCOL_ERROR, True),
    ("SETTINGS ACK with payload", frame(SETTINGS, FLAG_ACK, 0, b"\0" * 6), FRAME_SIZE_ERROR, True),
    ("SETTINGS of 5 bytes", frame(SETTINGS, 0, 0, b"\0" * 5), FRAME_SIZE_ERROR, True),
    ("ENABLE_PUSH=2", frame(SETTINGS, 0, 0, struct.pack(">HL", 2, 2)), PROTOCOL_ERROR, True),
    (
        "window over 2**31-1",
        frame(SETTINGS, 0, 0, struct.pack(">HL", 4, 2**31)),
        FLOW_CONTROL_ERROR,
        True,
    ),
    (
        "MAX_FRAME_SIZE too small",
        frame(SETTINGS, 0, 0, struct.pack(">HL", 5, 100)),
        PROTOCOL_ERROR,
        True,
    ),
    (
        "PUSH_PROMISE from client",
        frame(PUSH_PROMISE, H, 1, b"\0\0\0\2" + BLOCK),
        PROTOCOL_ERROR,
        True,
    ),
    ("WINDOW_UPDATE of 0", frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), PROTOCOL_ERROR, True),
    ("WINDOW_UPDATE of 3 bytes", frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"), FRAME_SIZE_ERROR, True),
    ("RST_STREAM on idle stream", frame(RST_STREAM, 0, 9, b"\0\0\0\0"), PROTOCOL_ERROR, True),
    ("PRIORITY on itself", frame(PRIORITY, 0, 1, struct.pack(">LB", 1, 16)), PROTOCOL_ERROR, True),
    (
        "pad longer than HEADERS",
        frame(HEADERS, H | FLAG_PADDED, 1, b"\x09" + BLOCK),
        PROTOCOL_ERROR,
        True,
    ),
    (
        "HEADERS priority self",
        frame(HEADERS, H | FLAG_PRIORITY, 1, struct.pack(">LB", 1, 0) + BLOCK),
        PROTOCOL_ERROR,
        True,
    ),
    (
        "pad longer than DATA",
        frame(HEADERS, H, 1, BLOCK) + frame(DATA, FLAG_PADDED, 1, b"\x05ab"),
        PROTOCOL_ERROR,
        True,
    ),
    ("GOAWAY of 4 bytes", frame(GOAWAY, 0, 0, b"\0\0\0\0"), FRAME_SIZE_ERROR, True),
    ("HPACK index 0", frame(HEADERS, H | 1, 1, b"\x82\x80"), COMPRESSION_ERROR, True),
    ("HPACK index past the table", frame(HEADERS, H | 1, 1, b"\x82\xbe"), COMPRESSION_ERROR, True),
    (
        "HPACK truncated literal",
        frame(HEADERS, H | 1, 1, b"\x00\x07apns-id\x24abc"),
        COMPRESSION_ERROR,
        True,
    ),
    (
        "HPACK table size over 4096",
        frame(HEADERS, H | 1, 1, b"\x3f\xe1\x3f" + BLOCK),
        COMPRESSION_ERROR,
        True,
    ),
    (
        "HPACK size update after a field",
        frame(HEADERS, H | 1, 1, b"\x82\x20"),
        COMPRESSION_ERROR,
        True,
    ),
    (
        "HPACK index of an evicted entry",  # 0x21: table size 1, which evicts :authority x
        frame(HEADERS, H | 1, 1, BLOCK)
        + frame(HEADERS, H | 1, 3, b"\x21\x82\x84\x86")
        + frame(HEADERS, H | 1, 5, b"\x82\xbe"),
        COMPRESSION_ERROR,
        True,
    ),
    (
        "HPACK bad index in CONTINUATION",
        frame(HEADERS, 1, 1, b"\x82") + frame(CONTINUATION, H, 1, b"\xff\x7f"),
        COMPRESSION_ERROR,
        True,
    ),
]


@pytest.mark.parametrize(
    ("wire", "code", "after_preface"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_ends_in_goaway_without_raising(
    wire: bytes, code: int, after_preface: bool
) -> None:
    sink = started_sink() if after_preface else FastSinkProtocol(apns_id=APNS_ID)
    sink.receive_data(wire)
    assert goaway_code(sink.data_to_send()) == code
    assert sink.closed and sink.error_code == code
    sink.receive_data(frame(HEADERS, H | 1, 101, BLOCK))  # ignored once closed
    assert sink.data_to_send() == b""


def test_concurrent_stream_limit_is_enforced() -> None:
    sink = started_sink(max_concurrent_streams=2)
    sink.receive_data(b"".join(frame(HEADERS, H, sid, BLOCK) for sid in (1, 3, 5)))
    assert goaway_code(sink.data_to_send()) == PROTOCOL_ERROR


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_random_bytes_after_preface_never_raise(junk: bytes, chunk: int) -> None:
    sink = started_sink()
    for i in range(0, len(junk), chunk):
        sink.receive_data(junk[i : i + chunk])
    out = sink.data_to_send()
    parse_frames(out)  # whatever happened, the output is whole frames
    assert sink.error_code != INTERNAL_ERROR


random_frame = st.builds(
    frame,
    st.integers(min_value=0, max_value=11),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=9),
    st.binary(max_size=40),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(random_frame, max_size=12), st.integers(min_value=1, max_value=97))
def test_random_well_framed_input_never_raises(frames: list[bytes], chunk: int) -> None:
    sink = started_sink()
    wire = b"".join(frames)
    for i in range(0, len(wire), chunk):
        sink.receive_data(wire[i : i + chunk])
    parse_frames(sink.data_to_send())
    assert sink.error_code != INTERNAL_ERROR
    assert sink.closed or sink.requests <= len(frames)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20))
def test_answers_do_not_depend_on_how_bytes_are_split(cuts: list[int]) -> None:
    enc = RequestEncoder(tokens=4)
    wire = enc.preface() + enc.encode(40)
    sink, pos, out = FastSinkProtocol(apns_id=APNS_ID), 0, b""
    for cut in cuts * (len(wire) // sum(cuts) + 1):
        sink.receive_data(wire[pos : pos + cut])
        out += sink.data_to_send()
        pos += cut
    assert answered_streams(out) == list(range(1, 81, 2))
    assert not sink.closed


def test_probe_encoder_speaks_valid_http2_to_h2() -> None:
    config = h2.config.H2Configuration(client_side=False)
    server = h2.connection.H2Connection(config=config)
    server.initiate_connection()
    enc = RequestEncoder(tokens=2)
    events = server.receive_data(enc.preface() + enc.encode(3))
    requests = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    bodies = [e.data for e in events if isinstance(e, h2.events.DataReceived)]
    assert len(requests) == 3 and bodies == [enc.body] * 3
    first, second = dict(requests[0].headers), dict(requests[1].headers)
    assert first.pop(b":path") != second.pop(b":path")  # tokens rotate
    assert first == second  # indexed fields decode to the literals of the first request
    assert first[b"apns-push-type"] == b"liveactivity"
    assert first[b"content-length"] == str(len(enc.body)).encode()


def test_probe_reader_counts_answers_and_acks_settings() -> None:
    sink, reader = FastSinkProtocol(apns_id=APNS_ID), ResponseReader()
    enc = RequestEncoder(tokens=2)
    reply = reader.feed(sink.data_to_send())
    sink.receive_data(enc.preface() + reply + enc.encode(5))
    reader.feed(sink.data_to_send())
    assert (reader.answered, reader.not_ok, reader.max_streams) == (5, 0, 1000)
    assert reader.window > 65535


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts from a throwaway CA, both offering ALPN h2."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    for ctx in (server_ctx, client_ctx):
        ctx.set_alpn_protocols(["h2"])
    return server_ctx, client_ctx


async def h2_over_tls(port: int, client_ctx: ssl.SSLContext, count: int) -> list[bytes]:
    """Send `count` requests, each in its own TLS record, then collect every `:status`."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, client_ctx, server_hostname="127.0.0.1")
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "h2"
    client = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    await stream.send_all(client.data_to_send())
    for _ in range(count):  # one record per request: the sink must drain them all per read
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST)
        client.send_data(sid, BODY, end_stream=True)
        await stream.send_all(client.data_to_send())
    ended, statuses = 0, []
    while ended < count:
        data = await stream.receive_some(65536)
        assert data, "server closed early"
        for event in client.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                statuses.append(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.StreamEnded):
                ended += 1
        await stream.send_all(client.data_to_send())
    await stream.aclose()  # close_notify, which the sink reads as end of stream
    return statuses


@pytest.mark.e2e
async def test_tls_round_trip_with_h2_client() -> None:
    server_ctx, client_ctx = tls_contexts()
    stats = SinkStats()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_fast_sink, ssl_context=server_ctx, stats=stats, apns_id=APNS_ID)
            )
            garbage = await trio.open_tcp_stream("127.0.0.1", port)
            await garbage.send_all(b"GET / HTTP/1.1\r\n\r\n" * 4)  # not TLS: dropped quietly
            while await garbage.receive_some(4096):
                pass
            await garbage.aclose()
            assert await h2_over_tls(port, client_ctx, 50) == [b"200"] * 50
            await trio.testing.wait_all_tasks_blocked()
            assert stats.open_connections == 0
            report = stats.report()
            assert report["requests"] == 50 and report["connections"] == 2
            nursery.cancel_scope.cancel()


async def test_stream_shell_over_memory_streams_folds_stats_on_close() -> None:
    client_side, server_side = trio.testing.memory_stream_pair()
    stats = SinkStats()
    enc = RequestEncoder(tokens=2)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_sink_stream, server_side, stats)
            wire = enc.preface() + enc.encode(10)
            await client_side.send_all(wire)
            reader = ResponseReader()
            while reader.answered < 10:
                reader.feed(await client_side.receive_some(65536))
            await client_side.aclose()
    report = stats.snapshot()
    assert (report.requests, report.connections) == (10, 1)
    assert report.bytes_in == len(wire)
    assert report.bytes_out > 10 * 50
    stats.restart()
    assert stats.snapshot().requests == 0


# -- apns-id: echoed from the request, or generated ---------------------------------------------

UUID_SHAPE = re.compile(rb"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
ID_1 = b"0a2e1d4c-1f5b-4c47-9d3f-2a6b8f0e9c11"
ID_2 = b"123e4567-e89b-12d3-a456-426614174000"


def answer_ids(data: bytes) -> dict[int, bytes]:
    """Stream id -> the `apns-id` of each answer in `data`, decoded as a client would."""
    decoder, ids = hpack.Decoder(), {}
    for ftype, flags, sid, payload in parse_frames(data):
        if ftype == HEADERS and flags & FLAG_END_STREAM:
            headers = dict(decoder.decode(payload, raw=True))
            assert headers[b":status"] == b"200"
            ids[sid] = headers[b"apns-id"]
    return ids


def plain_literal(name: bytes | int, value: bytes, first: int = 0x00) -> bytes:
    """A literal without indexing (0x00) or never indexed (0x10), RFC 7541 §6.2.2-3; `name` is
    a table index or a new name. hpack's encoder never emits the 0x00 form; APNs clients do."""
    if isinstance(name, int):
        return hpack_int(name, 4, first) + hpack_string(value)
    return bytes([first]) + hpack_string(name) + hpack_string(value)


PSEUDO = b"\x83\x87\x04" + hpack_string(b"/3/device/" + b"ab" * 32)  # POST, https, :path


def test_h2_client_ids_are_echoed_whether_new_indexed_or_never_indexed() -> None:
    pair = Pair()
    never = cast("tuple[str, str]", hpack.NeverIndexedHeaderTuple("apns-id", ID_2.decode()))
    sids = [
        pair.request(headers=[*REQUEST, ("apns-id", ID_1.decode())]),  # inserted in the table
        pair.request(headers=[*REQUEST, ("apns-id", ID_1.decode())]),  # then one indexed byte
        pair.request(None, [*REQUEST, never]),
        pair.request(headers=REQUEST),  # no id: one is made up
    ]
    pair.exchange()
    got = {e.stream_id: dict(e.headers)[b"apns-id"] for e in pair.of(h2.events.ResponseReceived)}
    assert [got[s] for s in sids[:3]] == [ID_1, ID_1, ID_2]
    assert got[sids[3]] == APNS_ID.encode()  # the fixed id this sink was given
    assert not pair.sink.closed


def test_requests_without_an_id_get_distinct_uuid_shaped_ones() -> None:
    sink = FastSinkProtocol()  # no fixed id: generated per request
    sink.receive_data(PREFACE + CLIENT_SETTINGS)
    sink.data_to_send()
    wire = b"".join(
        frame(HEADERS, H, sid, PSEUDO) + frame(DATA, 1, sid, BODY) for sid in range(1, 200, 2)
    )
    sink.receive_data(wire + frame(HEADERS, H | FLAG_END_STREAM, 201, PSEUDO))
    ids = answer_ids(sink.data_to_send())
    assert sorted(ids) == list(range(1, 202, 2))
    assert all(UUID_SHAPE.fullmatch(i) for i in ids.values())
    assert len(set(ids.values())) == 101
    other = FastSinkProtocol()  # another connection does not repeat them
    other.receive_data(PREFACE + CLIENT_SETTINGS + frame(HEADERS, H | 1, 1, PSEUDO))
    assert not set(answer_ids(other.data_to_send()).values()) & set(ids.values())


def test_table_neutral_blocks_skip_the_full_decoder_and_still_echo() -> None:
    """The HPACK policy of APNs clients (apns.md §1): after the first request, indexed fields and
    literals without indexing only; the id name is indexed once, later ids use that index."""
    sink = started_sink()
    enc = HpackEncoderBase()
    first = enc.encode([("apns-topic", "t"), ("apns-id", ID_1.decode())], huffman=False)
    name_index = enc.table_search(b"apns-id", b"")[0]  # type: ignore[index]
    topic = enc.encode([("apns-topic", "t")])  # one indexed byte now
    ids = [ID_2, b"%08x-0000-4000-8000-000000000000" % 7, b"short", b"z" * 300]
    wire = frame(HEADERS, H | 1, 1, PSEUDO + first)
    for n, value in enumerate(ids):
        wire += frame(HEADERS, H | 1, 3 + 2 * n, PSEUDO + topic + plain_literal(name_index, value))
    wire += frame(HEADERS, H | 1, 11, PSEUDO + plain_literal(b"apns-id", ID_1, 0x10))
    wire += frame(HEADERS, H | 1, 13, PSEUDO + topic)
    sink.receive_data(wire)
    got = answer_ids(sink.data_to_send())
    assert [got[s] for s in (1, 3, 5, 7, 11)] == [ID_1, ID_2, ids[1], b"short", ID_1]
    assert len(b"z" * 300) > MAX_ECHOED_ID and UUID_SHAPE.fullmatch(got[9])
    assert got[13] == APNS_ID.encode()
    # Full decodes: the first block only (it fills the table); the 300-byte id, whose length
    # takes two bytes, is read quickly too.
    assert sink.ids.decoded == 1


def test_id_in_a_header_block_split_over_continuations() -> None:
    sink = started_sink()
    block = PSEUDO + plain_literal(b"apns-id", ID_1) + b"\x41\x01x"  # the id straddles frames
    cut1, cut2 = len(PSEUDO) + 5, len(PSEUDO) + 20
    wire = (
        frame(HEADERS, FLAG_PADDED, 1, b"\x03" + block[:cut1] + b"\0\0\0")
        + frame(CONTINUATION, 0, 1, block[cut1:cut2])
        + frame(CONTINUATION, H, 1, block[cut2:])
        + frame(DATA, 0, 1, BODY[:10])
        + frame(DATA, FLAG_END_STREAM, 1, BODY[10:])
        + frame(HEADERS, H | 1, 3, PSEUDO + b"\xbe")  # :authority x, indexed by the block above
    )
    out = b""
    for i in range(0, len(wire), 7):
        sink.receive_data(wire[i : i + 7])
        out += sink.data_to_send()
    assert answer_ids(out) == {1: ID_1, 3: APNS_ID.encode()}
    assert not sink.closed


def test_continuation_split_from_h2_keeps_the_id_and_the_table() -> None:
    pair = Pair()
    big = [*REQUEST, ("x-padding", "p" * 40_000), ("apns-id", ID_2.decode())]
    sids = [pair.request(body=BODY, headers=big), pair.request(headers=big)]
    pair.exchange()
    got = {e.stream_id: dict(e.headers)[b"apns-id"] for e in pair.of(h2.events.ResponseReceived)}
    assert got == dict.fromkeys(sids, ID_2)


def test_trailers_are_decoded_and_the_request_id_is_answered() -> None:
    sink = started_sink()
    trailers = plain_literal(b"apns-id", ID_2, 0x40)  # enters the table: must not be missed
    sink.receive_data(
        frame(HEADERS, H, 1, PSEUDO + plain_literal(b"apns-id", ID_1))
        + frame(DATA, 0, 1, BODY)
        + frame(HEADERS, H | FLAG_END_STREAM, 1, trailers)
        + frame(HEADERS, H | FLAG_END_STREAM, 3, PSEUDO + b"\xbe")  # refers to the trailer
    )
    assert answer_ids(sink.data_to_send()) == {1: ID_1, 3: ID_2}


def test_rst_stream_forgets_the_id() -> None:
    sink = started_sink()
    sink.receive_data(
        frame(HEADERS, H, 1, PSEUDO + plain_literal(b"apns-id", ID_1))
        + frame(RST_STREAM, 0, 1, b"\0\0\0\x08")
    )
    assert not sink._echo and not sink._open
    assert answer_ids(sink.data_to_send()) == {}


@st.composite
def encoded_requests(draw: st.DrawFn) -> list[tuple[bytes, bytes | None, bool]]:
    """Header blocks from one HPACK encoder in every style a client may use, with the id each
    carries and whether a body follows: the sink must find every id while the table churns."""
    enc = HpackEncoderBase()
    requests: list[tuple[bytes, bytes | None, bool]] = []
    used: list[bytes] = []
    for n in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 9)) == 0:
            enc.header_table_size = draw(st.sampled_from([0, 64, 300, 4096]))
        huffman = draw(st.booleans())
        token = draw(st.sampled_from(["ab" * 32, "cd" * 32, f"{n:064x}"]))
        block = enc.encode(
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/3/device/" + token),
                ("apns-topic", draw(st.sampled_from(["a.push-type.liveactivity", "b"]))),
            ],
            huffman=huffman,
        )
        fresh = b"%08x-0000-4000-8000-%012x" % (n, draw(st.integers(0, 2**48 - 1)))
        apns_id = draw(st.sampled_from([None, fresh, *used[-3:]]))
        if apns_id is not None:
            used.append(apns_id)
            style = draw(st.sampled_from(["indexed", "never", "plain", "plain-name"]))
            if style == "indexed":
                block += enc.encode([(b"apns-id", apns_id)], huffman=huffman)
            elif style == "never":
                field = hpack.NeverIndexedHeaderTuple(b"apns-id", apns_id)
                block += enc.encode([field], huffman=huffman)
            else:
                found = enc.table_search(b"apns-id", b"")
                name: bytes | int = found[0] if found and style == "plain-name" else b"apns-id"
                block += plain_literal(name, apns_id)
        block += enc.encode([("x-filler", draw(st.text("xyz", max_size=30)))], huffman=huffman)
        requests.append((block, apns_id, draw(st.booleans())))
    return requests


@settings(max_examples=200, deadline=None, derandomize=True)
@given(encoded_requests(), st.integers(min_value=1, max_value=200))
def test_every_id_is_found_whatever_the_encoding(
    requests: list[tuple[bytes, bytes | None, bool]], chunk: int
) -> None:
    sink = FastSinkProtocol()
    wire, expected = PREFACE + CLIENT_SETTINGS, {}
    for n, (block, apns_id, body) in enumerate(requests):
        sid = 2 * n + 1
        cut = len(block) // 2  # every other block spans HEADERS + CONTINUATION
        if n % 2:
            wire += frame(HEADERS, 0 if body else 1, sid, block[:cut])
            wire += frame(CONTINUATION, H, sid, block[cut:])
        else:
            wire += frame(HEADERS, H | (0 if body else 1), sid, block)
        if body:
            wire += frame(DATA, FLAG_END_STREAM, sid, BODY)
        expected[sid] = apns_id
    out = b""
    for i in range(0, len(wire), chunk):
        sink.receive_data(wire[i : i + chunk])
        out += sink.data_to_send()
    assert not sink.closed, sink.error_code
    got = answer_ids(out)
    assert sorted(got) == sorted(expected)
    for sid, apns_id in expected.items():
        assert got[sid] == apns_id if apns_id is not None else UUID_SHAPE.fullmatch(got[sid])


def _aioapns_burst(port: int, client_ctx: ssl.SSLContext, count: int) -> list[tuple[str, str]]:
    """`count` concurrent aioapns pushes to the sink (in a worker thread, own asyncio loop);
    (status, id sent) of each, in order, or a TimeoutError if answers go unmatched."""
    import asyncio

    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsDevelopmentClientProtocol

    from engine.apns.auth import SigningKey

    class LocalProtocol(APNsDevelopmentClientProtocol):
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    async def main() -> list[tuple[str, str]]:
        key = SigningKey.generate("SINKKEY001", "SINKTEAM01")
        client = APNs(
            key=key.to_p8().decode(),
            key_id=key.key_id,
            team_id=key.team_id,
            topic="com.example.app.push-type.liveactivity",
            use_sandbox=True,
            ssl_context=client_ctx,
            max_connection_attempts=1,
        )
        client.pool.protocol_class = LocalProtocol
        requests = [
            NotificationRequest(
                device_token=f"{i:064x}",
                message={"aps": {"event": "update"}},
                push_type=PushType.LIVEACTIVITY,
                priority=5,
            )
            for i in range(count)
        ]
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.send_notification(r) for r in requests)), 20
            )
        finally:
            client.pool.close()
        assert [r.notification_id for r in results] == [r.notification_id for r in requests]
        return [(r.status, r.notification_id) for r in results]

    return asyncio.run(main())


@pytest.mark.e2e
async def test_aioapns_matches_every_answer_by_its_own_id_over_tls() -> None:
    pytest.importorskip("aioapns")
    server_ctx, client_ctx = tls_contexts()
    client_ctx.set_alpn_protocols(["h2"])
    stats = SinkStats()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = partial(serve_fast_sink, ssl_context=server_ctx, stats=stats)
            port = await nursery.start(serve)
            results = await trio.to_thread.run_sync(_aioapns_burst, port, client_ctx, 300)
            nursery.cancel_scope.cancel()
    assert [status for status, _ in results] == ["200"] * 300
    assert len({apns_id for _, apns_id in results}) == 300
    assert stats.snapshot().requests == 300
