"""Every dependency on h2, hpack, hyperframe and hypercorn internals, in one place.

The engine's HTTP/2 fast paths (`engine.apns.h2conn`), the simulator's server connection
(`simulator.protocol`), the accept-all sink's header reader (through `engine.apns.h2wire`), the
HTTP server's h2c hookup (`engine.server.http.h11server`) and the test client
(`tests.helpers.h2client`) reach below these libraries' public API only through the names here.
Each wraps one assumption about how the pinned versions behave, says which in its docstring, and
is checked by `tests/unit/test_h2compat.py`, which fails naming the assumption and its users when
an upgrade breaks one. pyproject pins the minor versions (`PINS`); loosen a pin only after that
test passes on the new version.

What is here:

* **GOAWAY drain** (`DrainingH2Connection`). RFC 9113 §6.8: after a GOAWAY, streams at or below
  the last stream id may still complete. h2 moves its connection state machine to CLOSED on any
  GOAWAY, sent or received, and then refuses every frame (h2 issue #1181); on a received GOAWAY it
  also drops whatever output it had queued. Here the CLOSED state keeps accepting the traffic of
  streams that already exist (a server may still answer them; a client may not open new ones),
  and a received GOAWAY keeps the queued output.
* **Open-stream count** (`DrainingH2Connection`). h2 walks every stream it holds to count the
  open ones, on every new stream. The owner of the connection tracks its open streams anyway, so
  it passes a count of them and the walk only runs, to forget closed streams, when h2's table has
  doubled.
* **Fast-path state changes** (`DrainingH2Connection.open_sent_request`, `answerable_stream`,
  `end_stream_by_answer`, `terminate`; `outbound_buffer`, kept one object): the exact h2 state a
  request sent as HEADERS + DATA(END_STREAM), or an answer received as one HEADERS(END_STREAM),
  leaves behind.
* **Header decoding**: h2's HPACK error translation (`decode_headers`), hpack's static table and
  Huffman decoder for the hand-written reader in `engine.apns.h2wire`, and the encoder internals
  the APNs HPACK policy builds on (`HpackEncoderBase`).
* **An advertised-only stream limit** (`AdvertisedOnlySettings`) for the simulator, which refuses
  a stream over the limit on its own instead of h2's connection error.
* **hypercorn's connection handler** (`hypercorn_h2c`), imported lazily: importing the engine
  never imports hypercorn.
* **Views and references for the tests** (`stream_view`, `closed_streams`,
  `encoder_dynamic_table`, `huffman_encode`, `hpack_reference_int`): the h2 and hpack state the
  fast paths must leave as h2's general paths do, and hpack's own coders to check ours against
  and to build Huffman-coded test vectors. Only the tests call them.

No trio and no clock at import time: the sans-IO protocols import this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from h2.config import H2Configuration
from h2.connection import (
    ConnectionInputs,
    ConnectionState,
    H2Connection,
    H2ConnectionStateMachine,
    _decode_headers,
)
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from h2.stream import H2Stream, StreamClosedBy, StreamState
from h2.utilities import is_informational_response
from hpack import Decoder, Encoder
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = [
    "HPACK_STATIC_TABLE",
    "PINS",
    "AdvertisedOnlySettings",
    "DrainingH2Connection",
    "HpackEncoderBase",
    "StreamView",
    "closed_streams",
    "decode_headers",
    "dynamic_table",
    "encoder_dynamic_table",
    "hpack_reference_int",
    "huffman_decode",
    "huffman_encode",
    "hypercorn_h2c",
    "stream_view",
]

PINS: Final = {"h2": "4.4", "hpack": "4.2", "hyperframe": "6.1", "hypercorn": "0.18"}
"""The minor versions whose internals this module relies on; pyproject pins each as `==X.Y.*`."""

Header: TypeAlias = tuple[bytes, bytes]
"""A header field as h2 and hpack hand them out raw: `(name, value)` bytes."""
_MAX_STREAM_ID: Final = 2**31 - 1
_SWEEP_MIN: Final = 256  # h2's table size that first triggers the walk (see `sweep_at`)


# --------------------------------------------------------------------------------------------
# hpack


HPACK_STATIC_TABLE: Final[tuple[Header, ...]] = HeaderTable.STATIC_TABLE
"""RFC 7541 Appendix A, as hpack holds it: 61 `(name, value)` pairs, index 1 first."""

huffman_decode: Final[Callable[[bytes], bytes]] = decode_huffman
"""hpack's Huffman decoder (RFC 7541 §5.2, Appendix B); raises `hpack.HPACKDecodingError`."""


def dynamic_table(decoder: Decoder) -> Sequence[Header]:
    """The decoder's dynamic table, newest entry first: `[k]` is HPACK index 62 + k.

    hpack keeps it as `header_table.dynamic_entries`, a deque it appends to on the left and
    evicts from on the right, never replaced: the object returned stays the decoder's table.
    """
    entries: Sequence[Header] = decoder.header_table.dynamic_entries
    return entries


_HPACK_TABLE_SIZE: Final[Any] = vars(Encoder)["header_table_size"]  # hpack's own property


class HpackEncoderBase(Encoder):
    """hpack's encoder, with named access to the internals an encoding policy builds on."""

    def table_search(self, name: bytes, value: bytes) -> tuple[int, bytes, bytes | None] | None:
        """hpack's table search: `(index, name, value)` for a whole match, `(index, name, None)`
        for a name-only match (the lowest such index), None for no match."""
        return self.header_table.search(name, value)

    def index_field(self, name: bytes, value: bytes) -> bytes:
        """hpack's incremental indexing (RFC 7541 §6.2.1), without Huffman coding.

        hpack's `add` answers an indexed field (§6.1) when the pair is already in the table, and
        otherwise a literal with incremental indexing that it also adds to the table.
        """
        return self.add((name, value), False, False)

    def __init__(self) -> None:
        super().__init__()
        self.size_update_due = False
        """Whether the peer changed SETTINGS_HEADER_TABLE_SIZE since the last header block.

        A plain attribute, kept by the `header_table_size` setter below (hpack records every new
        size in `table_size_changes` there): the encoder reads it once per request.
        """

    @property
    def header_table_size(self) -> int:
        """hpack's HPACK table size (h2 sets it from the peer's SETTINGS_HEADER_TABLE_SIZE)."""
        return int(_HPACK_TABLE_SIZE.fget(self))

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        _HPACK_TABLE_SIZE.fset(self, value)  # hpack records a changed size for the next block
        self.size_update_due = bool(self.table_size_changes)

    def take_size_changes(self) -> list[int]:
        """The table sizes set since the last block, oldest first; hpack forgets them.

        hpack would emit them itself from `encode` (its `resized` flag); taking them here leaves
        that to the caller.
        """
        changes = self.table_size_changes
        self.table_size_changes = []
        self.header_table.resized = False
        self.size_update_due = False
        return changes


# --------------------------------------------------------------------------------------------
# h2: header decoding and settings


def decode_headers(decoder: Decoder, block: bytes) -> list[Header]:
    """Decode a whole header block as h2 does, with h2's errors.

    h2's `_decode_headers` turns hpack's errors into `ProtocolError` (`DenialOfServiceError` for
    an oversized header list), the exception `receive_data` answers with a GOAWAY.
    """
    return list(_decode_headers(decoder, block))


class AdvertisedOnlySettings(Settings):
    """Local settings whose MAX_CONCURRENT_STREAMS is advertised to the peer but not enforced.

    h2 reads `local_settings.max_concurrent_streams` only to raise a connection error when the
    peer opens one stream too many; APNs refuses the one stream instead (apns.md §4), which the
    simulator does itself. The value still goes out in SETTINGS.
    """

    @property
    def max_concurrent_streams(self) -> int:
        """No limit, as far as h2's own check is concerned."""
        return _MAX_STREAM_ID

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[SettingCodes.MAX_CONCURRENT_STREAMS] = value


# --------------------------------------------------------------------------------------------
# h2: the connection

# RFC 9113 §6.8: streams at or below the last stream id may still complete after a GOAWAY. These
# inputs keep their traffic flowing in h2's CLOSED state; opening a stream stays refused.
_DRAIN_BOTH: Final = (
    ConnectionInputs.RECV_HEADERS,  # a response, or trailers
    ConnectionInputs.RECV_DATA,
    ConnectionInputs.RECV_WINDOW_UPDATE,
    ConnectionInputs.RECV_PING,
    ConnectionInputs.RECV_SETTINGS,
    ConnectionInputs.RECV_RST_STREAM,
    ConnectionInputs.RECV_PRIORITY,
    ConnectionInputs.RECV_ALTERNATIVE_SERVICE,
    ConnectionInputs.SEND_DATA,
    ConnectionInputs.SEND_RST_STREAM,
    ConnectionInputs.SEND_WINDOW_UPDATE,
    ConnectionInputs.SEND_PING,
    ConnectionInputs.SEND_SETTINGS,  # the ACK a peer's SETTINGS needs (RFC 9113 §6.5.3), or ours
)
# A server also answers the streams it has received (HEADERS on an existing stream: a server
# opens none that way).
_DRAIN_SERVER: Final = (*_DRAIN_BOTH, ConnectionInputs.SEND_HEADERS)


def _drain_table(inputs: tuple[ConnectionInputs, ...]) -> dict[Any, Any]:
    """h2's transition table plus `inputs` allowed in CLOSED (staying CLOSED)."""
    return {
        **H2ConnectionStateMachine._transitions,
        **{(ConnectionState.CLOSED, i): (None, ConnectionState.CLOSED) for i in inputs},
    }


class _ClientDrainingMachine(H2ConnectionStateMachine):
    """h2's connection state machine, plus what a client may still do after a GOAWAY.

    h2's `process_input` looks `(state, input)` up in `self._transitions`; anything missing is a
    `ProtocolError` (and CLOSED).
    """

    _transitions = _drain_table(_DRAIN_BOTH)  # read-only, as in h2


class _ServerDrainingMachine(H2ConnectionStateMachine):
    """h2's connection state machine, plus what a server may still do after a GOAWAY."""

    _transitions = _drain_table(_DRAIN_SERVER)  # read-only, as in h2


class DrainingH2Connection(H2Connection):
    """h2's connection with the GOAWAY drain and the O(1) open-stream count (module docstring).

    `client_streams`, when given, returns how many client-initiated (odd) streams are open: the
    owner's own table of them. It answers `open_outbound_streams` on the client side and
    `open_inbound_streams` on the server side, the counts h2 takes before each new stream;
    without it (and for the other direction, which APNs traffic never uses) h2 walks its streams.
    """

    def __init__(
        self,
        config: H2Configuration,
        *,
        client_streams: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(config)
        client = bool(config.client_side)
        self.state_machine = _ClientDrainingMachine() if client else _ServerDrainingMachine()
        self._client_streams = client_streams
        self._counts_outbound = client
        self.sweep_at = _SWEEP_MIN
        """When `streams` holds this many, the next count first has h2 forget closed streams."""

    # -- SETTINGS ----------------------------------------------------------------------------

    def _receive_settings_frame(self, frame: SettingsFrame) -> tuple[list[Frame], list[Any]]:
        """h2's SETTINGS handling, then `settings_changed()`.

        Both sides' settings change only here: the peer's values when its SETTINGS arrive, ours
        when the peer acknowledges them (h2 applies local settings, and the HPACK decoder's
        limits, on the ACK).
        """
        try:
            return super()._receive_settings_frame(frame)
        finally:
            self.settings_changed()

    def settings_changed(self) -> None:
        """Called after every SETTINGS frame (a subclass keeps copies of what it reads)."""

    # -- GOAWAY ------------------------------------------------------------------------------

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Any]]:
        """h2's GOAWAY handling, minus dropping the output queued so far.

        h2 calls `clear_outbound_data_buffer` here, losing whatever was queued before the GOAWAY
        (a request's frames, a SETTINGS ACK, an answer): frames that still belong on the wire.
        """
        queued = bytes(self._data_to_send)
        result = super()._receive_goaway_frame(frame)
        self._data_to_send[:0] = queued  # before anything h2 queued since
        return result

    # -- the output buffer -------------------------------------------------------------------

    def outbound_buffer(self) -> bytearray:
        """h2's output buffer, the one bytearray h2 appends every frame to (`_data_to_send`).

        h2 replaces it when it hands it out or clears it; here it is emptied in place instead
        (`data_to_send`, `clear_outbound_data_buffer` below), so the object returned stays the
        buffer for the connection's life, and a fast path may keep it and append whole
        serialised frames to it.
        """
        return self._data_to_send

    def data_to_send(self, amount: int | None = None) -> bytes:
        """h2's `data_to_send`: the queued bytes (at most `amount`), taken out of the buffer."""
        out = self._data_to_send
        if amount is None:
            data = bytes(out)
            out.clear()
        else:
            data = bytes(out[:amount])
            del out[:amount]
        return data

    def clear_outbound_data_buffer(self) -> None:
        """h2's `clear_outbound_data_buffer`, emptying the buffer in place."""
        self._data_to_send.clear()

    # -- open-stream count -------------------------------------------------------------------

    @property
    def open_outbound_streams(self) -> int:
        """Open streams this side initiated (O(1) on the client side)."""
        return self._count(outbound=True)

    @property
    def open_inbound_streams(self) -> int:
        """Open streams the peer initiated (O(1) on the server side)."""
        return self._count(outbound=False)

    def _count(self, *, outbound: bool) -> int:
        if len(self.streams) >= self.sweep_at:
            self.forget_closed_streams()
        if self._client_streams is None or outbound != self._counts_outbound:
            walk = (
                H2Connection.open_outbound_streams
                if outbound
                else H2Connection.open_inbound_streams
            )
            return int(walk.fget(self))  # type: ignore[attr-defined]
        return self._client_streams()

    def forget_closed_streams(self) -> None:
        """Have h2 forget its closed streams, and walk again once its table has doubled.

        h2's count walk (`_open_streams`, behind `open_outbound_streams`) also moves every closed
        stream from `streams` to its size-limited `_closed_streams` record, whatever the side;
        nothing else forgets them.
        """
        _ = H2Connection.open_outbound_streams.fget(self)  # type: ignore[attr-defined]
        self.sweep_at = max(_SWEEP_MIN, 2 * len(self.streams))

    # -- fast-path state changes -------------------------------------------------------------

    def open_sent_request(
        self,
        stream_id: int,
        authority: bytes,
        body_size: int,
        max_frame: int,
        inbound_window: int,
        outbound_window: int,
    ) -> None:
        """Hold `stream_id` as h2's `send_headers` + `send_data(end_stream=True)` leave it.

        A client POST whose HEADERS and `body_size` bytes of DATA with END_STREAM the caller
        wrote to `outbound_buffer()`: the stream half closed (local), its `:authority` recorded
        (h2 keeps it in `_authority`), both windows charged with the body, and its id the
        highest outbound one. The windows are the peer's INITIAL_WINDOW_SIZE (`outbound_window`)
        and ours (`inbound_window`), as h2 opens a stream with them. Positional parameters: this
        runs once per push. Closed streams are forgotten first once h2's table has doubled.
        """
        if len(self.streams) >= self.sweep_at:
            self.forget_closed_streams()
        stream = H2Stream(
            stream_id,
            config=self.config,
            inbound_window_size=inbound_window,
            outbound_window_size=outbound_window - body_size,
        )
        stream.max_outbound_frame_size = max_frame
        machine = stream.state_machine
        machine.client = True
        machine.headers_sent = True
        machine.state = StreamState.HALF_CLOSED_LOCAL  # END_STREAM went out with the request
        stream._authority = authority
        stream.request_method = b"POST"
        self.outbound_flow_control_window -= body_size
        self.streams[stream_id] = stream
        self.highest_outbound_stream_id = stream_id

    def answerable_stream(self, stream_id: int) -> H2Stream | None:
        """The stream, if a HEADERS(END_STREAM) now may be taken as its whole answer.

        That is: the connection is open, h2 holds the stream half closed (local) with no response
        yet, and no header block is open (h2's frame buffer keeps an unfinished HEADERS +
        CONTINUATION sequence in `_headers_buffer`, and refuses any other frame meanwhile).
        """
        stream = self.streams.get(stream_id)
        if (
            stream is None
            or self.state_machine.state is not ConnectionState.CLIENT_OPEN
            or self.incoming_buffer._headers_buffer
        ):
            return None
        machine = stream.state_machine
        if machine.state is not StreamState.HALF_CLOSED_LOCAL or machine.headers_received:
            return None
        return stream

    def end_stream_by_answer(self, stream: H2Stream, headers: list[Header]) -> None:
        """Close `stream` as h2's `_receive_headers_frame` does for a response with END_STREAM.

        Raises h2's `ProtocolError` where h2 would: an informational (1xx) status with
        END_STREAM, or a malformed `content-length` (h2's `_initialize_content_length`).
        """
        if is_informational_response(headers):
            raise ProtocolError("Cannot set END_STREAM on informational responses")
        machine = stream.state_machine
        machine.headers_received = True
        machine.state = StreamState.CLOSED
        machine.stream_closed_by = StreamClosedBy.RECV_END_STREAM
        stream._initialize_content_length(headers)

    def terminate(self, error_code: ErrorCodes | int) -> None:
        """Queue h2's GOAWAY for a connection error, as `receive_data` does before it re-raises.

        h2's `_terminate_connection` sends GOAWAY(last stream id = highest inbound) with
        `error_code` and moves the state machine to CLOSED.
        """
        self._terminate_connection(ErrorCodes(error_code))


# --------------------------------------------------------------------------------------------
# hypercorn


def hypercorn_h2c(
    app: Any, config: Config
) -> tuple[Callable[[Any], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """hypercorn's trio connection handler for h2c connections, and its graceful-stop call.

    Built as `hypercorn.trio.run.worker_serve` builds it, from hypercorn modules that are not its
    public API: the app wrapped by `hypercorn.utils.wrap_app` as ASGI, one
    `hypercorn.trio.worker_context.WorkerContext` for all connections (setting its `terminated`
    event closes idle ones), and a `hypercorn.trio.tcp_server.TCPServer` per connection. The
    handler takes a trio stream (a plain one has no `do_handshake`, which is how hypercorn tells
    it from TLS) and serves it to the end.
    """
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.utils import wrap_app

    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)

    async def handle(stream: Any) -> None:
        # hypercorn types the stream as TLS; it serves plain ones too.
        await TCPServer(wrapped, config, context, {}, stream).run()

    async def terminate() -> None:
        await context.terminated.set()

    return handle, terminate


# --------------------------------------------------------------------------------------------
# For the tests: views of h2's and hpack's state, and hpack's coders as references
#
# Nothing in the engine or the simulator calls these: they let the tests compare what a fast
# path leaves behind with what h2's general path leaves, and check the project's own HPACK code
# against hpack's, without reaching into either library themselves.


class StreamView(NamedTuple):
    """What h2 holds about one stream that the fast paths set or read (see `stream_view`)."""

    state: StreamState
    client: bool | None
    headers_sent: bool | None
    headers_received: bool | None
    trailers_sent: bool | None
    trailers_received: bool | None
    closed_by: StreamClosedBy | None
    outbound_window: int
    inbound_window: int
    max_outbound_frame_size: int | None
    request_method: bytes | None
    authority: bytes | None
    expected_content_length: int | None


def stream_view(stream: H2Stream) -> StreamView:
    """A snapshot of `stream` as h2 holds it, for comparing two streams field by field.

    The flags are those of h2's stream state machine (`H2Stream.state_machine`); `authority` is
    the `:authority` h2 records from a request's headers (`_authority`, which the request fast
    path sets itself), and `expected_content_length` the length h2 takes from an answer's
    `content-length` to check its DATA against (`_expected_content_length`).
    """
    machine = stream.state_machine
    return StreamView(
        machine.state,
        machine.client,
        machine.headers_sent,
        machine.headers_received,
        machine.trailers_sent,
        machine.trailers_received,
        machine.stream_closed_by,
        stream.outbound_flow_control_window,
        stream.inbound_flow_control_window,
        stream.max_outbound_frame_size,
        stream.request_method,
        stream._authority,
        stream._expected_content_length,
    )


def closed_streams(conn: H2Connection) -> Mapping[int, StreamClosedBy | None]:
    """h2's record of the streams it has forgotten: stream id to how each closed.

    h2's count walk (run by `DrainingH2Connection.forget_closed_streams`) moves a closed stream
    out of `streams` into this size-limited dict (`_closed_streams`, oldest dropped first), which
    h2 consults to answer a late frame on the stream; the object returned is that record itself.
    """
    return conn._closed_streams


def encoder_dynamic_table(encoder: Encoder) -> Sequence[Header]:
    """The encoder's dynamic table, newest entry first: `[k]` is HPACK index 62 + k.

    hpack keeps it as the decoder does (`dynamic_table`): `header_table.dynamic_entries`, one
    deque for the encoder's life. After the same blocks it equals the peer decoder's table
    (RFC 7541 §2.3.2).
    """
    entries: Sequence[Header] = encoder.header_table.dynamic_entries
    return entries


# Built as hpack's `Encoder` builds its own (`huffman_coder`).
_HUFFMAN: Final = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def huffman_encode(raw: bytes) -> bytes:
    """`raw` Huffman coded (RFC 7541 §5.2, Appendix B), without the string's length prefix.

    hpack's own encoder (`hpack.huffman.HuffmanEncoder` over `hpack.huffman_constants`' code
    table, the one HPACK uses in both directions), padded with ones to a whole octet.
    """
    return bytes(_HUFFMAN.encode(raw))


def hpack_reference_int(value: int, prefix_bits: int) -> bytes:
    """`value` as hpack encodes an HPACK integer with an N-bit prefix (RFC 7541 §5.1).

    hpack's `hpack.hpack.encode_integer`: the prefix bits above N left zero. The reference that
    `engine.apns.h2wire.hpack_int` is checked against.
    """
    return bytes(encode_integer(value, prefix_bits))
