"""The HTTP/2 layer's fast paths against h2's general paths: same bytes, same events, same state.

A "twin" runs two `ApnsClientProtocol`s side by side: one as shipped, one forced onto h2's general
paths (every request through `send_headers`/`send_data`, every incoming byte through
`receive_data`). Both talk to one in-memory h2 server (`ApnsPeer`) and receive exactly the same
bytes, cut at the same places; every output, every event and h2's view of every stream must match.
Raw frames (the simulator sink's answers, Huffman and never-indexed literals, malformed answers,
header blocks left open, padding, priority, oversized frames) are mixed into the server's output.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import h2.exceptions
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Decoder, Encoder, HeaderTuple, HPACKError, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.apns.h2compat import closed_streams, dynamic_table, encoder_dynamic_table, stream_view
from engine.apns.h2conn import ApnsH2Connection, ApnsHpackEncoder, decode_header_block
from engine.apns.protocol import (
    ApnsClientProtocol,
    ClientEvent,
    ConnectionClosed,
    PushAnswered,
    PushRequest,
)
from tests.helpers.apnspeer import (
    AUTHORITY,
    JWT,
    TOPIC,
    ApnsPeer,
    connect,
    pump,
    push,
    raw_frame,
    token,
)
from tests.helpers.hpackgen import APNS_ID, FieldSpec, header_fields, huffman


def h2_of(client: ApnsClientProtocol) -> ApnsH2Connection:
    return client._h2


def general_only(client: ApnsClientProtocol) -> None:
    """Send and receive through h2's general paths only: the reference for the fast paths."""
    conn = h2_of(client)
    conn.send_request = lambda *args: False  # type: ignore[method-assign]
    conn._split = False


def h2_view(conn: ApnsH2Connection) -> tuple[Any, ...]:
    """Everything h2 knows about the connection and its streams that the fast paths touch."""
    return (
        conn.state_machine.state,
        conn.outbound_flow_control_window,
        conn.inbound_flow_control_window,
        conn.highest_outbound_stream_id,
        conn.highest_inbound_stream_id,
        conn.max_outbound_frame_size,
        {sid: stream_view(s) for sid, s in conn.streams.items()},
        dict(closed_streams(conn)),
        list(dynamic_table(conn.decoder)),
        list(encoder_dynamic_table(conn.encoder)),
    )


def sink_block(apns_id: bytes = APNS_ID) -> bytes:
    """The simulator sink's answer: `:status 200` indexed, `apns-id` a literal without indexing."""
    return b"\x88\x00\x07apns-id" + bytes([len(apns_id)]) + apns_id


def huffman_block() -> bytes:
    name, value = huffman(b"apns-id"), huffman(APNS_ID)
    return b"\x88\x00" + bytes([0x80 | len(name)]) + name + bytes([0x80 | len(value)]) + value


def never_indexed_block() -> bytes:
    # `:status 410` with an indexed name (static 8), never indexed; then a never-indexed literal.
    return b"\x18\x03410" + b"\x10\x0bretry-after\x0230"


RAW_BLOCKS: dict[str, tuple[int, bytes]] = {  # name -> (flags, HEADERS payload)
    "sink": (0x5, sink_block()),
    "huffman": (0x5, huffman_block()),
    "never_indexed": (0x5, never_indexed_block()),
    "status_only": (0x5, b"\x88"),
    "informational": (0x5, b"\x08\x03103"),  # 1xx with END_STREAM: h2 refuses it
    "bad_length": (0x5, b"\x88\x0f\x0d\x03abc"),  # content-length: abc
    "two_lengths": (0x5, b"\x88\x0f\x0d\x011\x0f\x0d\x012"),
    "garbage": (0x5, b"\xff\xff\xff"),
    "bad_index": (0x5, b"\x80"),
    "huge_index": (0x5, b"\xfe"),
    "truncated": (0x5, b"\x00\x07apns-id\x24abc"),
    "incremental": (0x5, b"\x40\x07x-extra\x01y\x88"),
    "size_update": (0x5, b"\x3f\xe1\x1f\x88"),  # a table size update to 4096
    "open_block": (0x1, b"\x88"),  # END_STREAM without END_HEADERS: a CONTINUATION must follow
    "no_end_stream": (0x4, b"\x88"),
    "padded": (0xD, b"\x02\x88\x00\x00"),  # pad length 2
    "priority": (0x25, b"\x00\x00\x00\x00\x0f\x88"),
}
RAW_OTHER = ["continuation", "data_stream0", "oversized", "reserved_bit", "rst_refused"]


def raw(kind: str, stream_id: int) -> bytes:
    if kind in RAW_BLOCKS:
        flags, payload = RAW_BLOCKS[kind]
        return raw_frame(0x1, flags, stream_id, payload)
    if kind == "continuation":
        return raw_frame(0x9, 0x4, stream_id, b"")
    if kind == "data_stream0":
        return raw_frame(0x0, 0x1, 0, b"x" * 30)
    if kind == "oversized":
        return raw_frame(0x0, 0x0, stream_id, b"x" * 16_385)
    if kind == "reserved_bit":
        return raw_frame(0x1, 0x5, stream_id | 0x8000_0000, sink_block())
    assert kind == "rst_refused"
    return raw_frame(0x3, 0x0, stream_id, int(ErrorCodes.REFUSED_STREAM).to_bytes(4, "big"))


def _stable(outcome: object) -> str:
    """`outcome` as text, without the buffer addresses some hpack error messages quote."""
    return re.sub(r"<memory at 0x[0-9a-f]+>", "<memory>", repr(outcome))


class Twin:
    """A shipped client and a general-path client fed exactly the same bytes."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.fast = ApnsClientProtocol(AUTHORITY)
        self.ref = ApnsClientProtocol(AUTHORITY)
        general_only(self.ref)
        for client in (self.fast, self.ref):
            client.initiate()
            client.set_authorization(JWT)
        self.server = ApnsPeer(auto_ack=auto_ack)
        self.wire = bytearray()  # server output not delivered yet
        self.events: list[ClientEvent] = []
        self.answered: set[int] = set()
        self.flush()
        self.deliver([])
        self.events.clear()  # the handshake's SlotsChanged

    def both(self, call: Callable[[ApnsClientProtocol], Any]) -> Any:
        """The same call on both clients: same result, or the same exception."""
        outcomes = []
        for client in (self.fast, self.ref):
            try:
                outcomes.append(("ok", call(client)))
            except Exception as exc:  # noqa: BLE001 - any error: both clients must raise the same
                outcomes.append(("raised", (type(exc), str(exc))))
        assert _stable(outcomes[0]) == _stable(outcomes[1])
        self.check()
        return outcomes[0][1] if outcomes[0][0] == "ok" else None

    def check(self) -> None:
        fast, ref = self.fast, self.ref
        assert h2_view(h2_of(fast)) == h2_view(h2_of(ref))
        assert (fast.open_streams, fast.available_slots, fast.is_closed, fast.is_draining) == (
            ref.open_streams,
            ref.available_slots,
            ref.is_closed,
            ref.is_draining,
        )

    def flush(self) -> None:
        """Client bytes (equal on both) to the server; its answers join the undelivered wire."""
        out = self.fast.data_to_send()
        assert out == self.ref.data_to_send()
        if out:
            # If the server gives up, the clients still see the same bytes.
            with contextlib.suppress(h2.exceptions.H2Error):
                self.server.feed(out)
        self.wire += self.server.conn.data_to_send()

    def server_does(self, action: Callable[[], object]) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):  # not possible in the server's state
            action()
        self.wire += self.server.conn.data_to_send()

    def deliver(self, cuts: list[int]) -> None:
        """Everything undelivered, in the same pieces to both, until both sides are quiet."""
        for _ in range(4):
            data = bytes(self.wire)
            self.wire.clear()
            if not data:
                return
            start = 0
            for cut in [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]:
                piece = data[start:cut]
                start = cut
                events = self.both(partial(ApnsClientProtocol.receive_data, data=piece))
                assert isinstance(events, list)  # receive_data never raises
                self.events += events
                self.flush()

    def open_ids(self) -> list[int]:
        return sorted(self.fast._streams)

    def pick(self, index: int) -> int:
        ids = self.open_ids()
        return ids[index % len(ids)] if ids else 2 * index + 1


def answer(twin: Twin, kind: str, index: int) -> None:
    server = twin.server
    candidates = sorted(set(server.requests) - twin.answered)
    if not candidates:
        return
    sid = candidates[index % len(candidates)]
    twin.answered.add(sid)
    conn = server.conn

    def run() -> None:
        if kind == "200":
            server.respond(sid)
        elif kind == "410":
            server.respond(sid, 410, b'{"reason":"Unregistered","timestamp":42}')
        elif kind == "refused":
            conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        elif kind == "split":
            conn.send_headers(sid, [(b":status", b"200"), (b"apns-id", APNS_ID)])
            conn.end_stream(sid)
        elif kind == "trailers":
            conn.send_headers(sid, [(b":status", b"500")])
            conn.send_data(sid, b'{"reason":"InternalServerError"}')
            conn.send_headers(sid, [(b"x-trailer", b"1")], end_stream=True)
        else:
            assert kind == "informational"
            conn.send_headers(sid, [(b":status", b"100")])
            server.respond(sid)

    twin.server_does(run)


_requests = st.sampled_from(
    [
        push(1),
        PushRequest(token(2), TOPIC, b""),
        push(3, apns_id="0ba3c3d4-1111-2222-3333-444455556666", expiration=1_700_000_000),
        push(4, collapse_id="c", priority=5),
        PushRequest(token(5), TOPIC, b"b" * 20_000),  # over a frame: h2's general path
    ]
)
_GOOD_RAW = [
    "sink",
    "huffman",
    "never_indexed",
    "status_only",
    "no_end_stream",
    "padded",
    "priority",
    "reserved_bit",
    "rst_refused",
    "incremental",
    "size_update",
]
_send = st.tuples(st.just("send"), st.lists(_requests, min_size=1, max_size=6))
_answer = st.tuples(
    st.just("answer"),
    st.sampled_from(["200", "200", "410", "refused", "split", "trailers", "informational"]),
    st.integers(0, 20),
)
_good_raw = st.tuples(st.just("raw"), st.sampled_from(_GOOD_RAW), st.integers(0, 20))
_any_raw = st.tuples(st.just("raw"), st.sampled_from([*RAW_BLOCKS, *RAW_OTHER]), st.integers(0, 20))
_deliver = st.tuples(st.just("deliver"), st.lists(st.integers(1, 400), max_size=6))
_settings = st.tuples(
    st.just("settings"),
    st.sampled_from(
        [
            {"MAX_CONCURRENT_STREAMS": 3},
            {"MAX_CONCURRENT_STREAMS": 1000},
            {"INITIAL_WINDOW_SIZE": 100},
            {"INITIAL_WINDOW_SIZE": 200_000},
            {"MAX_FRAME_SIZE": 20_000},
            {"HEADER_TABLE_SIZE": 0},
        ]
    ),
)
_ping = st.tuples(st.just("ping"))
_cancel = st.tuples(st.just("cancel"), st.integers(0, 20))
_by_kind: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "send": _send,
    "answer": _answer,
    "good_raw": _good_raw,
    "any_raw": _any_raw,
    "deliver": _deliver,
    "settings": _settings,
    "ping": _ping,
    "cancel": _cancel,
    "goaway": st.tuples(st.just("goaway"), st.integers(0, 20)),
    "close": st.tuples(st.just("close")),
}
# Mostly steady traffic; what ends a connection comes rarely, so most runs go on for a while.
_weights = {"send": 5, "answer": 6, "good_raw": 3, "deliver": 4, "settings": 1, "ping": 1}
_weights |= {"cancel": 1, "any_raw": 1, "goaway": 1, "close": 1}
_actions = st.lists(
    st.sampled_from([k for k, w in _weights.items() for _ in range(w)]).flatmap(
        lambda kind: _by_kind[kind]
    ),
    min_size=4,
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(_actions, st.booleans())
def test_fast_paths_match_h2_byte_for_byte(actions: list[tuple[Any, ...]], acks: bool) -> None:
    twin = Twin(auto_ack=acks)
    for action in actions:
        kind = action[0]
        if kind == "send":
            for request in action[1]:
                twin.both(partial(ApnsClientProtocol.send, request=request))
            twin.flush()
        elif kind == "answer":
            answer(twin, action[1], action[2])
        elif kind == "raw":
            twin.wire += raw(action[1], twin.pick(action[2]))
        elif kind == "settings":
            twin.server_does(partial(twin.server.settings, **action[1]))
        elif kind == "ping":
            twin.both(lambda c: c.ping(b"12345678"))
            twin.flush()
        elif kind == "cancel":
            sid = twin.pick(action[1])
            twin.both(partial(ApnsClientProtocol.cancel, stream_id=sid))
            twin.flush()
        elif kind == "goaway":
            twin.server_does(partial(twin.server.conn.close_connection, 0, None, action[1]))
        elif kind == "close":
            twin.both(lambda c: c.close("bye"))
            twin.flush()
        else:
            twin.deliver(action[1])
    twin.deliver([])
    twin.events += twin.both(lambda c: c.receive_data(b""))
    assert sum(isinstance(e, ConnectionClosed) for e in twin.events) <= 1


# --------------------------------------------------------------------------------------------
# The fast paths are the ones taken


def test_usual_request_and_answer_bypass_h2_general_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    client, server, _ = connect()
    client.send(push(0))  # the first request opens the connection on h2's path
    pump(client, server)
    server.respond(1)
    pump(client, server)
    conn = h2_of(client)
    general: list[str] = []
    for name in ("send_headers", "send_data", "receive_data"):
        original = getattr(conn, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            general.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(conn, name, spy)
    ids = [client.send(push(i)) for i in range(1, 50)]
    assert general == []
    server.feed(client.data_to_send())
    answers = b"".join(raw_frame(0x1, 0x5, sid, sink_block()) for sid in ids)
    events = client.receive_data(answers)
    assert general == []
    assert events == [PushAnswered(sid, 200, APNS_ID.decode(), *[None] * 4) for sid in ids]
    assert all(conn.streams[sid].closed for sid in ids)  # closed as h2 closes them
    assert client.open_streams == 0


def test_a_push_without_a_body_is_one_headers_frame_with_end_stream_like_h2() -> None:
    # The first request opens the connection on h2's path; the next takes the fast one.
    twin = Twin()
    for i in range(2):
        twin.both(partial(ApnsClientProtocol.send, request=PushRequest(token(i), TOPIC, b"")))
    twin.flush()
    received = [twin.server.requests[sid] for sid in twin.open_ids()]
    assert [(r.ended, bytes(r.body)) for r in received] == [(True, b""), (True, b"")]


def test_a_frame_over_the_size_limit_fails_the_connection_once_it_has_arrived() -> None:
    # h2 checks the length against SETTINGS_MAX_FRAME_SIZE (RFC 9113 §4.2) when the whole frame
    # is in: from its header on, h2 reads every byte, so it refuses the frame where h2 alone would.
    twin = Twin()
    twin.both(partial(ApnsClientProtocol.send, request=push(1)))
    twin.flush()
    twin.wire += raw("oversized", twin.open_ids()[0])
    twin.deliver([20, 10_000])
    (closed,) = twin.events
    assert isinstance(closed, ConnectionClosed) and closed.error is not None
    assert "FrameTooLargeError" in closed.error


def test_header_block_over_one_frame_uses_continuation_like_h2() -> None:
    twin = Twin()
    big = b"bearer " + b"j" * 40_000  # three frames of 16 KiB
    twin.both(lambda c: c.set_authorization(big))
    for i in range(3):
        twin.both(partial(ApnsClientProtocol.send, request=push(i)))
    twin.flush()
    assert twin.server.requests[twin.open_ids()[-1]].headers[4] == (b"authorization", big)


def test_answer_split_in_every_place_is_decoded_once() -> None:
    client, server, _ = connect()
    ids = [client.send(push(i)) for i in range(3)]
    pump(client, server)
    data = b"".join(raw_frame(0x1, 0x5, sid, sink_block()) for sid in ids)
    for cut in range(1, len(data)):
        probe, probe_server, _ = connect()
        probe_ids = [probe.send(push(i)) for i in range(3)]
        pump(probe, probe_server)
        assert probe_ids == ids
        events = probe.receive_data(data[:cut]) + probe.receive_data(data[cut:])
        assert [e.stream_id for e in events if isinstance(e, PushAnswered)] == ids


def test_frame_refused_by_its_header_fails_before_its_body_arrives() -> None:
    twin = Twin()
    twin.both(lambda c: c.send(push(1)))
    twin.flush()
    twin.wire += raw_frame(0x0, 0x0, 0, b"x" * 100)[:20]  # DATA on stream 0, body incomplete
    twin.deliver([])
    closed = [e for e in twin.events if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1 and closed[0].error is not None
    assert "invalid header" in closed[0].error


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("informational", "Cannot set END_STREAM on informational responses"),
        ("bad_length", "Invalid content-length header"),
        ("garbage", "Error decoding header block"),
    ],
)
def test_malformed_answers_fail_the_connection_as_h2_does(kind: str, message: str) -> None:
    twin = Twin()
    twin.both(lambda c: c.send(push(1)))
    twin.both(lambda c: c.send(push(2)))
    twin.flush()
    ids = twin.open_ids()
    twin.wire += raw("sink", ids[0]) + raw(kind, ids[1])  # a good answer, then a bad one
    twin.deliver([])
    (closed,) = twin.events
    assert isinstance(closed, ConnectionClosed) and closed.error is not None
    assert message in closed.error
    assert closed.unanswered == tuple(ids)  # as before: nothing of that read is trusted


def test_second_answer_while_the_body_is_blocked_does_not_raise() -> None:
    # The server answers twice in one read while the request body still waits for window: h2
    # resets the stream itself on the second answer, before the protocol cancels the body.
    twin = Twin(auto_ack=False)
    for i in range(5):
        request = PushRequest(token(i), TOPIC, b"b" * 20_000)
        twin.both(partial(ApnsClientProtocol.send, request=request))
    twin.flush()
    last = twin.open_ids()[-1]
    twin.wire += raw("sink", last)
    answer(twin, "200", len(twin.server.requests) - 1)
    twin.deliver([])
    assert [e.stream_id for e in twin.events if isinstance(e, PushAnswered)] == [last]


def test_window_for_a_stream_h2_reset_in_the_same_read_does_not_raise() -> None:
    # WINDOW_UPDATEs, then two answers on a stream whose body waits for window, in one read: by
    # the time the window handler resumes that body, h2 has reset the stream.
    twin = Twin()
    twin.both(lambda c: c.send(push(0)))
    for i in range(1, 5):
        request = PushRequest(token(i), TOPIC, b"b" * 20_000)
        twin.both(partial(ApnsClientProtocol.send, request=request))
    twin.flush()
    target = twin.open_ids()[-1]
    answer(twin, "200", sorted(twin.server.requests).index(target))
    twin.wire += raw("sink", target)
    twin.deliver([])
    assert [e.stream_id for e in twin.events if isinstance(e, PushAnswered)] == [target]


# --------------------------------------------------------------------------------------------
# HPACK decoding


def _decode_or_error(decoder: Decoder, block: bytes, ours: bool) -> object:
    try:
        if ours:
            return [tuple(h) for h in decode_header_block(decoder, block)]
        return [tuple(h) for h in decoder.decode(block, raw=True)]
    except h2.exceptions.ProtocolError as exc:
        return ("error", str(exc.__cause__ or exc))
    except HPACKError as exc:  # hpack's own error, as h2 wraps it
        return ("error", str(exc))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(header_fields, st.booleans()), min_size=1, max_size=4),
    st.binary(max_size=12),
    st.integers(0, 64),
)
def test_header_blocks_decode_exactly_as_hpack(
    blocks: list[tuple[list[FieldSpec], bool]], noise: bytes, cut: int
) -> None:
    encoder, ours, theirs = Encoder(), Decoder(), Decoder()
    for fields, coded in blocks:
        headers = [
            NeverIndexedHeaderTuple(n, v) if how == "never" else HeaderTuple(n, v)
            for n, v, how in fields
        ]
        block = encoder.encode(headers, huffman=coded)
        for candidate in (block, block[:cut], noise + block, block + noise):
            expected = _decode_or_error(theirs, candidate, ours=False)
            assert _decode_or_error(ours, candidate, ours=True) == expected
            assert list(dynamic_table(ours)) == list(dynamic_table(theirs))


def test_a_block_owing_a_table_size_update_goes_to_hpack() -> None:
    # Our SETTINGS_HEADER_TABLE_SIZE fell below the decoder's table size: the peer's next block
    # must start with a size update (RFC 7541 §4.2). hpack refuses one without it, and takes one
    # with it, shrinking the table.
    decoder = Decoder()
    decoder.max_allowed_table_size = 0
    with pytest.raises(h2.exceptions.ProtocolError, match="shrink"):
        decode_header_block(decoder, sink_block())
    assert decode_header_block(decoder, b"\x20" + sink_block()) == [
        (b":status", b"200"),
        (b"apns-id", APNS_ID),
    ]
    assert decoder.header_table_size == 0


def test_header_list_limit_is_kept() -> None:
    decoder = Decoder()
    decoder.max_header_list_size = 60
    block = sink_block()  # 32 + 7 + 36 > 60
    with pytest.raises(h2.exceptions.DenialOfServiceError):
        decode_header_block(decoder, block)


def test_sink_answer_decodes_without_touching_the_table() -> None:
    decoder = Decoder()
    assert decode_header_block(decoder, sink_block()) == [
        (b":status", b"200"),
        (b"apns-id", APNS_ID),
    ]
    assert decode_header_block(decoder, huffman_block())[1] == (b"apns-id", APNS_ID)
    assert decode_header_block(decoder, never_indexed_block()) == [
        (b":status", b"410"),
        (b"retry-after", b"30"),
    ]
    assert len(dynamic_table(decoder)) == 0


# --------------------------------------------------------------------------------------------
# HPACK encoding


def test_the_encoder_takes_other_header_collections_and_then_drops_its_caches() -> None:
    # h2 always passes a list; anything else goes through hpack's own `encode` (still without
    # Huffman), which may add entries and move every dynamic index, so no cached representation
    # survives it (a stale one would name the wrong entry).
    encoder, decoder = ApnsHpackEncoder(), Decoder()
    blocks = [
        encoder.encode([(b"x-a", b"1")]),  # a literal with incremental indexing: x-a at 62
        encoder.encode([(b"x-a", b"1")]),  # indexed as 62, and that representation cached
        encoder.encode(((b"x-b", b"2"),)),  # a tuple: hpack adds x-b at 62, x-a moves to 63
        encoder.encode([(b"x-a", b"1")]),
    ]
    assert [decoder.decode(block, raw=True) for block in blocks] == [
        [(b"x-a", b"1")],
        [(b"x-a", b"1")],
        [(b"x-b", b"2")],
        [(b"x-a", b"1")],
    ]
    assert b"x-b" in blocks[2]  # not Huffman coded


def test_answers_return_to_the_fast_path_after_the_table_shrinks_to_our_settings() -> None:
    # Our SETTINGS_HEADER_TABLE_SIZE drops below what the server's answers filled (h2 indexes
    # `apns-id`): until the server's size update arrives, every answer goes to hpack; after it,
    # answers are read quickly again.
    client, server, _ = connect()
    conn = h2_of(client)
    answered = []
    for i in range(4):
        sid = client.send(push(i))
        pump(client, server)
        server.respond(sid)
        answered += pump(client, server)
        if i == 0:
            assert conn.decoder.header_table_size > 0  # the server indexed its answer
            conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
            pump(client, server)  # acknowledged: the table is over our limit now
            assert conn._answer_limit == -1
    assert [type(e) for e in answered] == [PushAnswered] * 4
    assert conn.decoder.header_table_size == 0
    assert conn._answer_limit == conn.decoder.max_header_list_size
