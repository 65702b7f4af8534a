"""The assumptions `engine/apns/h2compat.py` makes about h2, hpack, hyperframe and hypercorn.

Run after every upgrade of those libraries. A failure names the assumption that broke, the
library internal it rests on and the project code that relies on it: mend `h2compat` (or keep the
pin) before loosening a pin in pyproject.toml.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.stream
import h2.utilities
import hpack
import hpack.hpack
import hpack.huffman
import hpack.huffman_constants
import hpack.huffman_table
import hpack.table
import hypercorn.config
import hypercorn.trio.tcp_server
import hypercorn.trio.worker_context
import hypercorn.utils
import pytest
import trio
from h2.connection import ConnectionInputs, ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy, StreamState
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from engine.apns.h2compat import (
    HPACK_STATIC_TABLE,
    PINS,
    AdvertisedOnlySettings,
    DrainingH2Connection,
    HpackEncoderBase,
    StreamView,
    closed_streams,
    decode_headers,
    dynamic_table,
    encoder_dynamic_table,
    hpack_reference_int,
    huffman_decode,
    huffman_encode,
    hypercorn_h2c,
    stream_view,
)
from engine.apns.h2conn import ApnsH2Connection, ApnsHpackEncoder
from engine.apns.h2wire import frame
from simulator.protocol import ApnsServerProtocol, RequestReady
from tests.helpers.apnspeer import connect, goaway_frame, pump, push
from tests.helpers.h2client import H2TestClient

ROOT = Path(__file__).resolve().parents[2]

# Where the project relies on each group of assumptions.
DRAIN = "DrainingH2Connection's GOAWAY drain: engine/apns/h2conn.py (every APNs connection), \
simulator/protocol.py, tests/helpers/h2client.py"
COUNT = (
    "DrainingH2Connection's O(1) open-stream count: engine/apns/h2conn.py, simulator/protocol.py"
)
REQUEST = "the request fast path (ApnsH2Connection.send_request via open_sent_request)"
ANSWER = "the answer fast path (ApnsH2Connection.receive via answerable_stream, \
end_stream_by_answer, terminate, decode_headers)"
READER = "engine/apns/h2wire.read_header_block (engine answers, simulator/fastsink.py apns-id)"
ENCODER = "engine/apns/h2conn.ApnsHpackEncoder (every request's headers) via HpackEncoderBase"
SIM_LIMIT = "simulator/protocol.py's per-stream REFUSED_STREAM (AdvertisedOnlySettings)"
HYPERCORN = "h2c on the HTTP API: engine/server/http/server.py via h2compat.hypercorn_h2c"
VIEWS = "the tests comparing the fast paths with h2's general paths (tests/unit/test_h2conn.py \
h2_view, this file) via stream_view, closed_streams, encoder_dynamic_table"
REFERENCE = "the tests of the project's HPACK code: tests/unit/test_h2wire.py (hpack_int against \
hpack_reference_int), Huffman-coded vectors from tests/helpers/hpackgen.py (huffman_encode)"


def broken(assumption: str, used_by: str, detail: object = "") -> str:
    """The failure message: which assumption, who relies on it, what was seen."""
    return (
        f"h2compat assumption broken: {assumption}\n"
        f"  relied on by: {used_by}\n"
        f"  seen: {detail}\n"
        "  mend engine/apns/h2compat.py for the new version, or keep the pin in pyproject.toml"
    )


# --------------------------------------------------------------------------------------------
# Versions


@pytest.mark.parametrize("dist", sorted(PINS))
def test_installed_versions_are_within_the_pins(dist: str) -> None:
    installed = version(dist)
    assert installed.startswith(PINS[dist] + "."), broken(
        f"{dist} {PINS[dist]}.* is installed",
        "every internal listed in engine/apns/h2compat.py",
        f"{dist} {installed}",
    )


@pytest.mark.parametrize("dist", sorted(PINS))
def test_pyproject_pins_the_versions_h2compat_was_written_for(dist: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["server"]]
    pins = [r.replace(" ", "").lower() for r in requirements]
    assert f"{dist}=={PINS[dist]}.*" in pins, broken(
        f"pyproject pins {dist}=={PINS[dist]}.* (h2compat.PINS)",
        "every internal listed in engine/apns/h2compat.py",
        [r for r in requirements if r.lower().startswith(dist)],
    )


# --------------------------------------------------------------------------------------------
# Names: every internal used exists, with the expected kind and signature


@dataclass(frozen=True)
class Internal:
    """One library internal h2compat reaches: how to get it and what it must look like."""

    name: str
    used_by: str
    get: Callable[[], object]
    kind: type | None = None  # what the object must be an instance of
    params: tuple[str, ...] | None = None  # a callable's parameter names, in order

    def check(self) -> None:
        try:
            obj = self.get()
        except (AttributeError, ImportError, KeyError) as exc:
            pytest.fail(broken(f"{self.name} exists", self.used_by, repr(exc)))
        if self.kind is not None:
            assert isinstance(obj, self.kind), broken(
                f"{self.name} is a {self.kind.__name__}", self.used_by, type(obj)
            )
        if self.params is not None:
            assert callable(obj), broken(f"{self.name} is callable", self.used_by, obj)
            names = tuple(inspect.signature(obj).parameters)
            assert names == self.params, broken(
                f"{self.name}{self.params}", self.used_by, f"parameters {names}"
            )


def _client() -> H2Connection:
    return H2Connection(h2.config.H2Configuration(client_side=True))


def _stream() -> h2.stream.H2Stream:
    return h2.stream.H2Stream(
        1, h2.config.H2Configuration(), inbound_window_size=1, outbound_window_size=1
    )


def _machine_flag(name: str) -> object:
    """An attribute h2's stream state machine sets itself, read from its instance dict."""
    return vars(_stream().state_machine)[name]


INTERNALS = [
    Internal(
        "h2.connection._decode_headers",
        ANSWER,
        lambda: h2.connection._decode_headers,
        params=("decoder", "encoded_header_block"),
    ),
    Internal(
        "H2ConnectionStateMachine._transitions",
        DRAIN,
        lambda: h2.connection.H2ConnectionStateMachine._transitions,
        kind=dict,
    ),
    Internal(
        "H2Connection._receive_goaway_frame",
        DRAIN,
        lambda: H2Connection._receive_goaway_frame,
        params=("self", "frame"),
    ),
    Internal("H2Connection()._data_to_send", DRAIN, lambda: _client()._data_to_send, bytearray),
    Internal(
        "H2Connection._terminate_connection",
        ANSWER,
        lambda: H2Connection._terminate_connection,
        params=("self", "error_code"),
    ),
    Internal(
        "H2Connection.open_outbound_streams",
        COUNT,
        lambda: H2Connection.open_outbound_streams,
        property,
    ),
    Internal(
        "H2Connection.open_inbound_streams",
        COUNT,
        lambda: H2Connection.open_inbound_streams,
        property,
    ),
    Internal(
        "H2Connection()._closed_streams",
        f"{COUNT}; {VIEWS}",
        lambda: _client()._closed_streams,
        dict,
    ),
    Internal(
        "H2Connection().incoming_buffer._headers_buffer",
        ANSWER,
        lambda: _client().incoming_buffer._headers_buffer,
        list,
    ),
    Internal(
        "H2Stream(stream_id, config, inbound_window_size, outbound_window_size)",
        REQUEST,
        lambda: h2.stream.H2Stream,
        params=("stream_id", "config", "inbound_window_size", "outbound_window_size"),
    ),
    Internal(
        "H2Stream()._authority", f"{REQUEST}; {VIEWS}", lambda: _stream().__dict__["_authority"]
    ),
    Internal(
        "H2Stream()._expected_content_length",
        VIEWS,
        lambda: _stream().__dict__["_expected_content_length"],
    ),
    *(
        Internal(
            f"H2Stream().state_machine.{flag}",
            f"{REQUEST}; {ANSWER}; {VIEWS}",
            partial(_machine_flag, flag),
        )
        for flag in (
            "state",
            "client",
            "headers_sent",
            "headers_received",
            "trailers_sent",
            "trailers_received",
            "stream_closed_by",
        )
    ),
    Internal(
        "H2Stream._initialize_content_length",
        ANSWER,
        lambda: h2.stream.H2Stream._initialize_content_length,
        params=("self", "headers"),
    ),
    Internal(
        "h2.utilities.is_informational_response",
        ANSWER,
        lambda: h2.utilities.is_informational_response,
        params=("headers",),
    ),
    Internal(
        "HeaderTable.STATIC_TABLE", READER, lambda: hpack.table.HeaderTable.STATIC_TABLE, tuple
    ),
    Internal(
        "Decoder().header_table.dynamic_entries",
        READER,
        lambda: hpack.Decoder().header_table.dynamic_entries,
        deque,
    ),
    Internal(
        "hpack.huffman_table.decode_huffman",
        READER,
        lambda: hpack.huffman_table.decode_huffman,
        params=("huffman_string",),
    ),
    Internal(
        "Encoder().header_table.dynamic_entries",
        VIEWS,
        lambda: hpack.Encoder().header_table.dynamic_entries,
        deque,
    ),
    Internal(
        "hpack.huffman.HuffmanEncoder",
        REFERENCE,
        lambda: hpack.huffman.HuffmanEncoder,
        params=("huffman_code_list", "huffman_code_list_lengths"),
    ),
    Internal(
        "hpack.huffman_constants.REQUEST_CODES",
        REFERENCE,
        lambda: hpack.huffman_constants.REQUEST_CODES,
        list,
    ),
    Internal(
        "hpack.huffman_constants.REQUEST_CODES_LENGTH",
        REFERENCE,
        lambda: hpack.huffman_constants.REQUEST_CODES_LENGTH,
        list,
    ),
    Internal(
        "hpack.hpack.encode_integer",
        REFERENCE,
        lambda: hpack.hpack.encode_integer,
        params=("integer", "prefix_bits"),
    ),
    Internal(
        "Encoder.add",
        ENCODER,
        lambda: hpack.Encoder.add,
        params=("self", "to_add", "sensitive", "huffman"),
    ),
    Internal(
        "HeaderTable.search",
        ENCODER,
        lambda: hpack.table.HeaderTable.search,
        params=("self", "name", "value"),
    ),
    Internal(
        "Encoder().table_size_changes", ENCODER, lambda: hpack.Encoder().table_size_changes, list
    ),
    Internal(
        "Encoder().header_table.resized",
        ENCODER,
        lambda: hpack.Encoder().header_table.resized,
        bool,
    ),
    Internal(
        "hypercorn.trio.tcp_server.TCPServer",
        HYPERCORN,
        lambda: hypercorn.trio.tcp_server.TCPServer,
        params=("app", "config", "context", "state", "stream"),
    ),
    Internal(
        "hypercorn.trio.tcp_server.TCPServer.run",
        HYPERCORN,
        lambda: hypercorn.trio.tcp_server.TCPServer.run,
        params=("self",),
    ),
    Internal(
        "hypercorn.trio.worker_context.WorkerContext",
        HYPERCORN,
        lambda: hypercorn.trio.worker_context.WorkerContext,
        params=("max_requests",),
    ),
    Internal(
        "WorkerContext(None).terminated.set",
        HYPERCORN,
        lambda: hypercorn.trio.worker_context.WorkerContext(None).terminated.set,
        params=(),
    ),
    Internal(
        "hypercorn.utils.wrap_app",
        HYPERCORN,
        lambda: hypercorn.utils.wrap_app,
        params=("app", "wsgi_max_body_size", "mode"),
    ),
    Internal(
        "hypercorn Config().wsgi_max_body_size",
        HYPERCORN,
        lambda: hypercorn.config.Config().wsgi_max_body_size,
        int,
    ),
]


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda i: i.name)
def test_internal_exists_with_its_shape(internal: Internal) -> None:
    internal.check()


@pytest.mark.parametrize(
    ("ours", "theirs", "own"),
    [
        (
            ApnsH2Connection(h2.config.H2Configuration(client_side=True), {}, b"a"),
            _client(),
            {
                "sweep_at",
                "_client_streams",
                "_counts_outbound",
                "_tracked",
                "_authority",
                "_pending",
                "_split",
                "_remote_window",
                "_remote_max_streams",
                "_local_window",
                "_dynamic",
                "_answer_limit",
                "_out",
            },
        ),
        (ApnsHpackEncoder(), hpack.Encoder(), {"_indexed", "_name_prefix", "size_update_due"}),
    ],
    ids=["ApnsH2Connection", "ApnsHpackEncoder"],
)
def test_our_attributes_do_not_shadow_the_librarys(
    ours: object, theirs: object, own: set[str]
) -> None:
    # Subclasses share the instance namespace: an attribute h2 or hpack adds under one of our
    # names would be silently overwritten, or overwrite ours. `own` lists ours (keep it whole).
    added = set(vars(ours)) - set(vars(theirs))
    taken = own & (set(vars(theirs)) | set(dir(type(theirs))))
    assert added == own and not taken, broken(
        "our subclasses' own attribute names are not the library's",
        f"{DRAIN}; {ENCODER}",
        f"library names we use: {sorted(taken)}; ours: {sorted(added)}",
    )


# --------------------------------------------------------------------------------------------
# Behaviour: the GOAWAY drain


def _open_pair() -> tuple[H2Connection, H2Connection]:
    """A stock h2 client and server after the handshake, server limit raised."""
    client = _client()
    server = H2Connection(h2.config.H2Configuration(client_side=False))
    _handshake(client, server)
    return client, server


def _handshake(client: H2Connection, server: H2Connection) -> None:
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())


def _drain_client() -> tuple[DrainingH2Connection, H2Connection]:
    client = DrainingH2Connection(h2.config.H2Configuration(client_side=True))
    server = H2Connection(h2.config.H2Configuration(client_side=False))
    _handshake(client, server)
    return client, server


REQUEST_HEADERS = [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
GOAWAY_LAST_1 = goaway_frame(1, 0, b"")


def test_h2_drops_queued_output_on_goaway_and_the_drain_keeps_it() -> None:
    stock, _ = _open_pair()
    stock.ping(b"12345678")
    stock.receive_data(GOAWAY_LAST_1)
    assert stock.data_to_send() == b"", broken(
        "h2 clears its output buffer when a GOAWAY arrives (the reason for the drain's override;"
        " if h2 stopped doing so, the override is no longer needed)",
        DRAIN,
    )
    drain, _ = _drain_client()
    drain.ping(b"12345678")
    drain.receive_data(GOAWAY_LAST_1)
    kept = drain.data_to_send()
    assert kept.startswith(frame(0x6, 0, 0, b"12345678")), broken(
        "the PING queued before a GOAWAY is still sent", DRAIN, kept
    )


def test_the_output_buffer_stays_one_object() -> None:
    # The request fast path keeps `outbound_buffer()` for the connection's life and appends to
    # it: h2 must append to the buffer in place, and every place that empties it must do so in
    # place (data_to_send, clear_outbound_data_buffer, a received GOAWAY).
    drain, _ = _drain_client()
    buffer = drain.outbound_buffer()
    drain.ping(b"12345678")
    assert bytes(buffer).endswith(b"12345678"), broken(
        "h2 appends frames to its output buffer in place", REQUEST, bytes(buffer)
    )
    assert drain.data_to_send(9) == frame(0x6, 0, 0, b"12345678")[:9]
    assert drain.data_to_send() == b"12345678" and not buffer
    buffer += b"x"
    drain.clear_outbound_data_buffer()
    assert not buffer
    buffer += b"y"
    drain.receive_data(GOAWAY_LAST_1)
    assert drain.outbound_buffer() is buffer and drain.data_to_send().startswith(b"y"), broken(
        "the output buffer is emptied in place, never replaced", REQUEST
    )


def test_h2_refuses_an_answer_after_goaway_and_the_drain_takes_it() -> None:
    stock, stock_server = _open_pair()
    stock.send_headers(1, REQUEST_HEADERS, end_stream=True)
    stock_server.receive_data(stock.data_to_send())
    stock.receive_data(GOAWAY_LAST_1)
    stock_server.send_headers(1, [(":status", "200")], end_stream=True)
    with pytest.raises(h2.exceptions.ProtocolError):
        stock.receive_data(stock_server.data_to_send())  # h2 issue #1181

    drain, server = _drain_client()
    drain.send_headers(1, REQUEST_HEADERS, end_stream=True)
    server.receive_data(drain.data_to_send())
    drain.receive_data(GOAWAY_LAST_1)
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 5})  # needs an ACK (§6.5.3)
    server.send_headers(1, [(":status", "200")], end_stream=True)
    try:
        events = drain.receive_data(server.data_to_send())
    except h2.exceptions.ProtocolError as exc:
        pytest.fail(broken("a stream at or below last-stream-id still completes", DRAIN, exc))
    kinds = {type(e) for e in events}
    assert {h2.events.ResponseReceived, h2.events.StreamEnded} <= kinds, broken(
        "the answer after GOAWAY comes out as h2 events", DRAIN, events
    )
    assert SettingsFrame(0, flags=["ACK"]).serialize() in drain.data_to_send(), broken(
        "a SETTINGS during the drain is acknowledged", DRAIN
    )
    with pytest.raises(h2.exceptions.ProtocolError):
        drain.send_headers(3, REQUEST_HEADERS, end_stream=True)  # no new streams after GOAWAY


def test_the_server_side_drain_answers_after_the_clients_goaway() -> None:
    client = _client()
    server = DrainingH2Connection(h2.config.H2Configuration(client_side=False))
    _handshake(client, server)
    client.send_headers(1, REQUEST_HEADERS, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")])  # queued when the client's GOAWAY arrives
    client.close_connection(last_stream_id=0)
    server.receive_data(client.data_to_send())
    try:
        server.send_data(1, b"late", end_stream=True)
    except h2.exceptions.ProtocolError as exc:
        pytest.fail(broken("a server still answers after the client's GOAWAY", DRAIN, exc))
    out = server.data_to_send()
    assert out.startswith(frame(0x1, 0x4, 1, b"\x88")) and out.endswith(b"late"), broken(
        "the answer's HEADERS queued before the GOAWAY and its DATA after it both go out",
        DRAIN,
        out,
    )


def test_the_drain_extends_h2s_transition_table_without_replacing_it() -> None:
    stock = h2.connection.H2ConnectionStateMachine._transitions
    closed = {i for (state, i) in stock if state is ConnectionState.CLOSED}
    assert closed == {ConnectionInputs.SEND_GOAWAY, ConnectionInputs.RECV_GOAWAY}, broken(
        "h2's CLOSED state allows nothing but GOAWAY (if h2 drains by itself now, revisit"
        " _DRAIN_BOTH / _DRAIN_SERVER)",
        DRAIN,
        sorted(i.name for i in closed),
    )
    for opened in (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN):
        assert stock[(opened, ConnectionInputs.RECV_GOAWAY)] == (None, ConnectionState.CLOSED)
    for side in (True, False):
        machine = DrainingH2Connection(h2.config.H2Configuration(client_side=side)).state_machine
        table = machine._transitions
        assert all(table[key] == value for key, value in stock.items()), broken(
            "the drain tables hold every h2 transition unchanged", DRAIN
        )


# --------------------------------------------------------------------------------------------
# Behaviour: the open-stream count


def _walk(conn: H2Connection, *, outbound: bool) -> int:
    prop = H2Connection.open_outbound_streams if outbound else H2Connection.open_inbound_streams
    return int(prop.fget(conn))  # type: ignore[attr-defined]


def test_the_client_count_equals_h2s_walk() -> None:
    client, server, _ = connect()
    ids = [client.send(push(i)) for i in range(6)]
    pump(client, server)
    server.respond(ids[0])
    server.respond(ids[1], 400, b'{"reason":"BadTopic"}')
    server.conn.send_headers(ids[2], [(b":status", b"200")])  # headers, body still to come
    server.conn.reset_stream(ids[3], ErrorCodes.REFUSED_STREAM)
    pump(client, server)
    client.cancel(ids[4])
    conn = client._h2
    fast = conn.open_outbound_streams
    assert fast == _walk(conn, outbound=True) == 2, broken(
        "the protocol's table counts the streams h2 holds open",
        COUNT,
        (fast, _walk(conn, outbound=True)),
    )


def test_the_server_count_equals_h2s_walk() -> None:
    proto = ApnsServerProtocol(initial_max_streams=100)
    proto.initiate()
    client = _client()
    client.local_settings = Settings(
        client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 8}
    )
    client.initiate_connection()
    client.receive_data(proto.data_to_send())
    headers = [*REQUEST_HEADERS[:3], (":path", "/3/device/ab")]
    for sid in (1, 3, 5, 7):
        client.send_headers(sid, headers)
        client.send_data(sid, b"{}", end_stream=sid != 3)  # 3 stays open: its body goes on
    ready = [
        e.request.stream_id
        for e in proto.receive_data(client.data_to_send())
        if isinstance(e, RequestReady)
    ]
    assert ready == [1, 5, 7]
    proto.respond(5, 400, "id", b'{"reason":"BadDeviceToken"}')  # 27 bytes > window 8: pending
    proto.respond(7, 200, "id")
    conn = proto._h2
    fast = conn.open_inbound_streams
    assert fast == _walk(conn, outbound=False) == 3, broken(
        "the simulator's tables count the streams h2 holds open",
        COUNT,
        (fast, _walk(conn, outbound=False)),
    )


def test_the_owners_count_sweeps_once_h2s_table_has_doubled() -> None:
    # With the owner's count h2 never walks, so closed streams pile up in `streams` until the
    # count itself has h2 forget them (the general path: send_headers takes the count too).
    conn = DrainingH2Connection(
        h2.config.H2Configuration(client_side=True),
        client_streams=lambda: 0,  # every stream is answered before the next one opens
    )
    server = H2Connection(h2.config.H2Configuration(client_side=False))
    _handshake(conn, server)
    for sid in range(1, 2 * conn.sweep_at, 2):
        conn.send_headers(sid, REQUEST_HEADERS, end_stream=True)
        server.receive_data(conn.data_to_send())
        server.send_headers(sid, [(":status", "200")], end_stream=True)
        conn.receive_data(server.data_to_send())
    assert len(conn.streams) == conn.sweep_at == 256
    assert conn.open_outbound_streams == 0
    assert not conn.streams and len(closed_streams(conn)) == 256, broken(
        "h2's walk, run by the count once the table reaches `sweep_at`, forgets closed streams",
        COUNT,
        (len(conn.streams), len(closed_streams(conn))),
    )


def test_the_walk_forgets_closed_streams() -> None:
    client, server, _ = connect()
    ids = [client.send(push(i)) for i in range(3)]
    pump(client, server)
    server.respond(ids[0])
    pump(client, server)
    conn = client._h2
    record = closed_streams(conn)
    assert ids[0] in conn.streams and ids[0] not in record  # closed, but held until the sweep
    conn.forget_closed_streams()
    assert set(conn.streams) == {ids[1], ids[2]}, broken(
        "h2's count walk moves closed streams out of `streams`", COUNT, sorted(conn.streams)
    )
    assert dict(record) == {ids[0]: StreamClosedBy.RECV_END_STREAM}, broken(
        "h2 remembers how a forgotten stream closed, in the one `_closed_streams` record",
        f"{COUNT}; {VIEWS}",
        dict(record),
    )


# --------------------------------------------------------------------------------------------
# Behaviour: the fast paths' state changes


def test_the_stream_view_reads_what_h2_records_at_each_step() -> None:
    # What the fast paths are compared on must be what h2 keeps: each step changes other fields.
    client, server = _open_pair()
    post = [(":method", "POST"), (":scheme", "https"), (":authority", "api"), (":path", "/3")]
    client.send_headers(1, post)
    client.send_data(1, b"{}", end_stream=True)
    window = client.remote_settings.initial_window_size
    sent = stream_view(client.streams[1])
    assert sent == StreamView(
        StreamState.HALF_CLOSED_LOCAL,
        True,  # client
        True,  # headers_sent
        None,  # headers_received
        None,  # trailers_sent
        None,  # trailers_received
        None,  # closed_by
        window - 2,
        client.local_settings.initial_window_size,
        client.max_outbound_frame_size,
        b"POST",
        b"api",  # h2's `_authority`
        None,
    ), broken(
        "h2 records a sent request so (state machine flags, windows, `_authority`)", VIEWS, sent
    )
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200"), ("content-length", "3")])
    client.receive_data(server.data_to_send())
    answered = stream_view(client.streams[1])
    assert (answered.headers_received, answered.expected_content_length) == (True, 3), broken(
        "h2 records a response's headers and its content-length (`_expected_content_length`)",
        VIEWS,
        answered,
    )
    server.send_data(1, b"abc")
    server.send_headers(1, [("x-trailer", "1")], end_stream=True)
    client.receive_data(server.data_to_send())
    ended = stream_view(client.streams[1])
    seen = (ended.state, ended.trailers_received, ended.closed_by)
    assert seen == (StreamState.CLOSED, True, StreamClosedBy.RECV_END_STREAM), broken(
        "h2 records received trailers and how the stream closed", VIEWS, ended
    )
    client.send_headers(3, post)
    client.send_headers(3, [("x-trailer", "1")], end_stream=True)
    trailed = stream_view(client.streams[3])
    assert (trailed.trailers_sent, trailed.state) == (True, StreamState.HALF_CLOSED_LOCAL), broken(
        "h2 records sent trailers", VIEWS, trailed
    )


def test_open_sent_request_leaves_the_state_send_headers_and_send_data_leave() -> None:
    body = b'{"aps":{}}'
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", "api"), (":path", "/3")]
    general, _ = _drain_client()
    general.send_headers(1, headers)
    general.send_data(1, body, end_stream=True)
    fast, _ = _drain_client()
    fast.outbound_buffer().extend(b"frames")
    fast.open_sent_request(
        1,
        b"api",
        len(body),
        fast.max_outbound_frame_size,
        fast.local_settings.initial_window_size,
        fast.remote_settings.initial_window_size,
    )
    assert fast.data_to_send().endswith(b"frames"), broken(
        "h2's output buffer takes frames appended to it", REQUEST
    )
    seen = (
        stream_view(fast.streams[1]),
        fast.outbound_flow_control_window,
        fast.highest_outbound_stream_id,
    )
    expected = (
        stream_view(general.streams[1]),
        general.outbound_flow_control_window,
        general.highest_outbound_stream_id,
    )
    assert seen == expected, broken(
        "a stream built by open_sent_request is the one send_headers + send_data build",
        REQUEST,
        (seen, expected),
    )


def _answered_pair(block: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...] | str]:
    """h2's own receipt of HEADERS(END_STREAM) `block` on stream 1 vs `end_stream_by_answer`."""
    general, _ = _drain_client()
    general.send_headers(1, REQUEST_HEADERS, end_stream=True)
    try:
        general.receive_data(frame(0x1, 0x5, 1, block))
        expected: tuple[Any, ...] | str = stream_view(general.streams[1])
    except h2.exceptions.ProtocolError as exc:
        expected = type(exc).__name__
    fast, _ = _drain_client()
    fast.send_headers(1, REQUEST_HEADERS, end_stream=True)
    stream = fast.answerable_stream(1)
    assert stream is not None, broken("a stream awaiting its answer is answerable", ANSWER)
    try:
        fast.end_stream_by_answer(stream, decode_headers(fast.decoder, block))
        return stream_view(stream), expected
    except h2.exceptions.ProtocolError as exc:
        return (type(exc).__name__,), expected


@pytest.mark.parametrize(
    ("block", "outcome"),
    [
        (b"\x88", "closed"),  # :status 200
        (b"\x88\x0f\x0d\x013", "closed"),  # content-length: 3
        (b"\x88\x0f\x0d\x03abc", "ProtocolError"),  # content-length: abc
        (b"\x08\x03103", "ProtocolError"),  # a 1xx with END_STREAM
    ],
    ids=["status", "content_length", "bad_content_length", "informational"],
)
def test_end_stream_by_answer_does_what_h2s_receive_does(block: bytes, outcome: str) -> None:
    seen, expected = _answered_pair(block)
    if outcome == "closed":
        assert seen == expected, broken(
            "end_stream_by_answer closes a stream as h2's receipt of HEADERS(END_STREAM) does",
            ANSWER,
            (seen, expected),
        )
    else:
        assert seen == (outcome,) and expected == outcome, broken(
            "a malformed content-length or a 1xx with END_STREAM is refused as h2 refuses it"
            " (h2's _initialize_content_length, is_informational_response)",
            ANSWER,
            (seen, expected),
        )


def test_content_length_is_recorded_for_the_check_on_data() -> None:
    stream = _stream()
    stream._initialize_content_length([(b"content-length", b"12")])
    assert stream_view(stream).expected_content_length == 12, broken(
        "h2 records a response's content-length in `_expected_content_length`", ANSWER
    )


def test_no_stream_is_answerable_inside_a_header_block() -> None:
    conn, _ = _drain_client()
    conn.send_headers(1, REQUEST_HEADERS, end_stream=True)
    conn.send_headers(3, REQUEST_HEADERS, end_stream=True)
    conn.receive_data(frame(0x1, 0x1, 3, b"\x88"))  # HEADERS without END_HEADERS
    assert conn.answerable_stream(1) is None, broken(
        "h2's frame buffer holds an unfinished header block in `_headers_buffer`", ANSWER
    )


def test_terminate_queues_h2s_goaway() -> None:
    conn, _ = _drain_client()
    conn.terminate(ErrorCodes.COMPRESSION_ERROR)
    goaway, _ = Frame.parse_frame_header(memoryview(conn.data_to_send()[:9]))
    assert isinstance(goaway, GoAwayFrame), broken("terminate queues a GOAWAY", ANSWER, goaway)
    assert conn.state_machine.state is ConnectionState.CLOSED


def test_advertised_only_settings_are_sent_but_not_enforced() -> None:
    server = H2Connection(h2.config.H2Configuration(client_side=False))
    server.local_settings = AdvertisedOnlySettings(
        client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 1}
    )
    client = _client()
    _handshake(client, server)
    assert client.remote_settings.max_concurrent_streams == 1, broken(
        "the limit is advertised in SETTINGS", SIM_LIMIT
    )
    client.remote_settings = Settings(client=False)  # a client that ignores the limit
    for sid in (1, 3, 5):
        client.send_headers(sid, REQUEST_HEADERS)
    try:
        events = server.receive_data(client.data_to_send())
    except h2.exceptions.TooManyStreamsError as exc:
        pytest.fail(
            broken(
                "h2 checks the stream limit only through local_settings.max_concurrent_streams",
                SIM_LIMIT,
                exc,
            )
        )
    assert sum(isinstance(e, h2.events.RequestReceived) for e in events) == 3


def test_advertised_only_settings_keep_h2s_setter() -> None:
    # Settings' `max_concurrent_streams` setter stores the value to advertise, as h2's does.
    settings = AdvertisedOnlySettings(client=False)
    settings.max_concurrent_streams = 7
    settings.acknowledge()
    assert settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 7, broken(
        "Settings store a value by its code until the peer acknowledges it", SIM_LIMIT
    )
    assert settings.max_concurrent_streams == 2**31 - 1  # and h2's check still sees no limit


# --------------------------------------------------------------------------------------------
# Behaviour: hpack


def test_the_static_table_is_rfc_7541s() -> None:
    assert len(HPACK_STATIC_TABLE) == 61, broken(
        "61 static entries", READER, len(HPACK_STATIC_TABLE)
    )
    assert HPACK_STATIC_TABLE[0] == (b":authority", b""), broken("index 1", READER)
    assert HPACK_STATIC_TABLE[7] == (b":status", b"200"), broken("index 8", READER)
    assert HPACK_STATIC_TABLE[60] == (b"www-authenticate", b""), broken("index 61", READER)


def test_the_dynamic_table_is_the_decoders_own_newest_first() -> None:
    decoder = hpack.Decoder()
    table = dynamic_table(decoder)
    encoder = hpack.Encoder()
    decoder.decode(encoder.encode([("x-a", "1")]))
    decoder.decode(encoder.encode([("x-b", "2")]))
    assert dynamic_table(decoder) is table, broken("the table object is kept", READER)
    assert list(table) == [(b"x-b", b"2"), (b"x-a", b"1")], broken(
        "index 62 is the newest entry", READER, list(table)
    )
    decoder.header_table_size = 0  # evicts everything
    assert dynamic_table(decoder) is table and not table, broken(
        "eviction empties the same table object", READER
    )


def test_the_encoder_dynamic_table_is_the_encoders_own_newest_first() -> None:
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    table = encoder_dynamic_table(encoder)
    decoder.decode(encoder.encode([("x-a", "1")]))
    decoder.decode(encoder.encode([("x-b", "2")]))
    assert encoder_dynamic_table(encoder) is table, broken("the table object is kept", VIEWS)
    assert list(table) == [(b"x-b", b"2"), (b"x-a", b"1")] == list(dynamic_table(decoder)), broken(
        "index 62 is the newest entry, as in the peer decoder's table", VIEWS, list(table)
    )
    encoder.header_table_size = 0  # evicts everything
    assert encoder_dynamic_table(encoder) is table and not table, broken(
        "eviction empties the same table object", VIEWS
    )


# RFC 7541 C.4.1 and C.4.2: request header values, Huffman coded.
HUFFMAN_VECTORS = [
    (b"www.example.com", bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")),
    (b"no-cache", bytes.fromhex("a8eb10649cbf")),
    (b"", b""),
]


@pytest.mark.parametrize(("raw", "code"), HUFFMAN_VECTORS)
def test_huffman_encode_is_rfc_7541s(raw: bytes, code: bytes) -> None:
    assert huffman_encode(raw) == code, broken(
        "hpack's HuffmanEncoder over its code table encodes as RFC 7541 Appendix B",
        REFERENCE,
        huffman_encode(raw).hex(),
    )


@pytest.mark.parametrize(("raw", "code"), HUFFMAN_VECTORS)
def test_huffman_decode_is_rfc_7541s(raw: bytes, code: bytes) -> None:
    assert huffman_decode(code) == raw, broken("Huffman decoding", READER)


def test_huffman_decode_refuses_an_eos_inside_the_string() -> None:
    with pytest.raises(hpack.HPACKError):
        huffman_decode(b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    ("value", "prefix_bits", "encoded"),
    [
        (10, 5, b"\x0a"),  # RFC 7541 C.1.1
        (1337, 5, b"\x1f\x9a\x0a"),  # C.1.2
        (42, 8, b"\x2a"),  # C.1.3
        (127, 7, b"\x7f\x00"),  # a value filling the prefix takes a zero continuation byte
    ],
)
def test_hpack_reference_int_is_rfc_7541s(value: int, prefix_bits: int, encoded: bytes) -> None:
    seen = hpack_reference_int(value, prefix_bits)
    assert type(seen) is bytes and seen == encoded, broken(
        "hpack's encode_integer encodes as RFC 7541 §5.1, prefix bits above N left zero",
        REFERENCE,
        seen,
    )


def test_the_encoder_base_searches_indexes_and_hands_over_size_changes() -> None:
    encoder = HpackEncoderBase()
    assert encoder.table_search(b":status", b"200") == (8, b":status", b"200")
    assert encoder.table_search(b":path", b"/x") == (4, b":path", None), broken(
        "a name-only match gives the lowest index and no value", ENCODER
    )
    first = encoder.index_field(b"x-a", b"1")
    assert first[0] & 0xC0 == 0x40, broken("a new pair is an incremental literal", ENCODER, first)
    assert encoder.index_field(b"x-a", b"1") == b"\xbe", broken(
        "a pair in the table is an indexed field (62)", ENCODER
    )
    assert not encoder.size_update_due
    encoder.header_table_size = 100
    encoder.header_table_size = 200
    assert encoder.header_table_size == 200
    assert encoder.size_update_due and encoder.take_size_changes() == [100, 200], broken(
        "hpack records every table size set, in order", ENCODER
    )
    assert not encoder.size_update_due
    assert encoder.encode([(b"x-b", b"2")], huffman=False)[0] & 0xE0 != 0x20, broken(
        "once taken, hpack emits no size update itself", ENCODER
    )


# --------------------------------------------------------------------------------------------
# Imports and hypercorn


def test_importing_the_engine_does_not_import_hypercorn() -> None:
    code = (
        "import sys\n"
        "import engine, engine.apns.h2compat, engine.apns.h2conn, engine.apns.protocol\n"
        "print('hypercorn' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert out == "False", broken("h2compat imports hypercorn lazily", HYPERCORN, out)


def _module_imports(module: str) -> set[str]:
    """What `module` imports when it is loaded, through project modules too: module-level
    imports only (not under TYPE_CHECKING, not inside functions), packages' __init__ aside."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        if name in seen or not path.exists():
            continue
        seen.add(name)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
                seen.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo.append(node.module)
                seen.add(node.module)
    return {name.split(".")[0] for name in seen} | seen


@pytest.mark.parametrize(
    "module",
    [
        "engine.apns.h2compat",
        "engine.apns.h2wire",
        "engine.apns.h2conn",
        "engine.apns.protocol",
        "simulator.protocol",
        "simulator.fastsink",
    ],
)
def test_the_sans_io_layers_import_neither_trio_nor_hypercorn(module: str) -> None:
    found = _module_imports(module) & {"trio", "hypercorn"}
    assert not found, broken(
        "h2compat and the sans-IO modules built on it load without trio or hypercorn",
        module,
        sorted(found),
    )


@pytest.mark.e2e
async def test_hypercorn_h2c_serves_a_connection_and_its_terminate_closes_it() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    handle, terminate = hypercorn_h2c(app, hypercorn.config.Config())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve_one() -> None:
        await handle(await listeners[0].accept())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            client = H2TestClient(await trio.open_tcp_stream("127.0.0.1", port), "127.0.0.1")
            await client.start()
            headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
            answer = await client.request(headers, None)
            assert answer.status == 204, broken("hypercorn serves an h2c stream", HYPERCORN, answer)
            await terminate()
            await client.until(lambda: client.closed)
            assert client.closed, broken(
                "setting `terminated` closes an idle connection", HYPERCORN
            )
    for listener in listeners:
        await listener.aclose()
