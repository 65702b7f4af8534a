"""h2's client connection, adjusted for APNs traffic: the HTTP/2 layer under `ApnsClientProtocol`.

h2 stays the authority on connection and stream state; this module changes how much it costs to
keep that state for the two frames that make up nearly all APNs traffic, and fixes two h2
behaviours:

* **Requests** (`send_request`): a new stream's HEADERS and its one DATA frame with END_STREAM are
  written straight into h2's output buffer, and the stream is registered with h2 in exactly the
  state `send_headers` + `send_data` would leave it in (half closed, windows charged). h2's
  general path builds a frame object per frame, a flag set per frame and runs two state machines
  per call; the result on the wire is byte for byte the same. Anything unusual (a body larger
  than a window or a frame, a connection that is not simply open) takes h2's path.
* **Answers** (`receive`): incoming bytes are split into frames here. A HEADERS frame with
  END_HEADERS and END_STREAM, unpadded and without priority, on a stream h2 holds half closed
  with no response yet (the usual APNs answer, apns.md §3) is decoded with h2's own HPACK decoder
  and closes the stream as h2 would; every other frame goes to h2 unchanged, in order. h2 builds
  a frame object, an event per state change and a repr of every frame (for a trace log) on that
  path, which cost more than the rest of the engine per answer.
* **HPACK encoding** (`ApnsHpackEncoder`): APNs' indexing policy, no Huffman, cached
  representations (see the class).
* **Stream counting**: h2 walks every stream to count the open ones on each new stream; the
  protocol's own table (`tracked`) gives the count in O(1).
* **GOAWAY**: h2 rejects every frame after a GOAWAY (h2 issue #1181); streams at or below the
  last stream id may still be answered (RFC 9113 §6.8), so that traffic stays allowed.

Errors behave as in h2: a frame h2 would refuse makes `receive` raise h2's exception, after h2's
GOAWAY has been queued; what the frames before it changed stays changed, as in h2.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable
from typing import Any, Final, TypeAlias

from h2.config import H2Configuration
from h2.connection import (
    ConnectionInputs,
    ConnectionState,
    H2Connection,
    H2ConnectionStateMachine,
    _decode_headers,
)
from h2.exceptions import ProtocolError
from h2.stream import H2Stream, StreamClosedBy, StreamState
from h2.utilities import is_informational_response
from hpack import Decoder, Encoder, HPACKError
from hpack.hpack import encode_integer
from hpack.huffman_table import decode_huffman
from hpack.struct import HeaderTuple
from hyperframe.exceptions import HyperframeError, InvalidDataError, InvalidFrameError
from hyperframe.frame import Frame, SettingsFrame

from engine.apns import wire

__all__ = [
    "H2_ERRORS",
    "AnswerHeaders",
    "ApnsH2Connection",
    "ApnsHpackEncoder",
    "decode_header_block",
]

H2_ERRORS: Final = (ProtocolError, HPACKError, HyperframeError)
"""What h2 raises on input it refuses (after queueing its GOAWAY)."""

_SWEEP_MIN: Final = 256  # h2 forgets closed streams only when asked; ask once it holds this many

# RFC 9113 §4.1: 24-bit length (split 16 + 8 here), type, flags, 31-bit stream id.
_FRAME_HEAD: Final = struct.Struct(">HBBBL")
_DATA: Final = 0x0
_HEADERS: Final = 0x1
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_END_HEADERS: Final = 0x4
_PADDED: Final = 0x8
_PRIORITY: Final = 0x20
_ANSWER_MASK: Final = _END_STREAM | _END_HEADERS | _PADDED | _PRIORITY
_ANSWER_FLAGS: Final = _END_STREAM | _END_HEADERS
_STREAM_ID_MASK: Final = 0x7FFFFFFF

_Header: TypeAlias = tuple[bytes, bytes]


# --------------------------------------------------------------------------------------------
# HPACK encoder

_LITERAL_NOT_INDEXED: Final = frozenset({b":path"})
_INDEX_NAME_ONCE: Final = frozenset(
    {wire.H_ID.encode(), wire.H_EXPIRATION.encode(), wire.H_COLLAPSE_ID.encode()}
)
_AnyHeader: TypeAlias = (
    HeaderTuple | tuple[bytes | str, bytes | str] | tuple[bytes | str, bytes | str, bool | None]
)
_SHORT_LENGTH: Final = tuple(bytes((n,)) for n in range(127))  # one-byte 7-bit-prefix integers


def _length(n: int) -> bytes:
    """An HPACK string length (7-bit prefix, H bit clear: no Huffman)."""
    return _SHORT_LENGTH[n] if n < 127 else bytes(encode_integer(n, 7))


class ApnsHpackEncoder(Encoder):
    """hpack's encoder with APNs' indexing policy, no Huffman, and cached representations.

    h2 calls `encode(headers)` with hpack's default `huffman=True`; this override never Huffman
    codes: in pure Python it costs more CPU than it saves bytes, and APNs values (JWTs, hex
    tokens, UUIDs) barely compress. The policy is by header name (apns.md §1): `:path` goes as a
    literal without indexing (a per-request token must not churn APNs' 4 KB table), `apns-id`,
    `apns-expiration` and `apns-collapse-id` are indexed on first use only, everything else
    (`authorization` included) is indexed incrementally. `HeaderTuple` sensitivity is not
    consulted, since every header comes from `ApnsClientProtocol`.

    A representation that does not change the dynamic table (an index, or a literal's indexed
    name) stays valid until the table changes, and the table changes only through this encoder
    (an incremental literal) or a table-size update: both clear the caches. Steady state is then
    a dict lookup per constant header and a concatenation per varying one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._indexed: dict[tuple[bytes, bytes], bytes] = {}
        self._name_prefix: dict[bytes, bytes] = {}

    def encode(
        self,
        headers: Iterable[_AnyHeader] | dict[bytes | str, bytes | str],
        huffman: bool = True,
    ) -> bytes:
        """Encode a header block of `(bytes, bytes)` pairs; `huffman` is ignored (always off)."""
        out: list[bytes] = [self._size_updates()] if self.table_size_changes else []
        if not isinstance(headers, list):  # h2 always passes a list of bytes pairs
            out.append(super().encode(headers, huffman=False))
            self._forget()
            return b"".join(out)
        indexed = self._indexed
        prefixes = self._name_prefix
        for name, value in headers:
            rep = indexed.get((name, value))
            if rep is None:
                prefix = prefixes.get(name)
                if prefix is None:
                    rep = self._encode_new(name, value)
                else:
                    n = len(value)
                    rep = prefix + (_SHORT_LENGTH[n] if n < 127 else _length(n)) + value
            out.append(rep)
        return b"".join(out)

    def _encode_new(self, name: bytes, value: bytes) -> bytes:
        """Slow path: a header not representable from the caches."""
        if name in _LITERAL_NOT_INDEXED or name in _INDEX_NAME_ONCE:
            match = self.header_table.search(name, value)
            if match is not None:
                index, _, exact = match
                if exact is not None:
                    rep = self._encode_indexed(index)
                    self._indexed[(name, value)] = rep
                    return rep
                # Literal without indexing, indexed name: 0000 + 4-bit prefix (RFC 7541 §6.2.2).
                prefix = bytes(encode_integer(index, 4))
                self._name_prefix[name] = prefix
                return prefix + _length(len(value)) + value
            if name in _LITERAL_NOT_INDEXED:
                return b"\x00" + _length(len(name)) + name + _length(len(value)) + value
            # First use of an index-once name: index it, so later values reuse the name.
        rep = self.add((name, value), False, False)
        if rep[0] & 0x80:
            self._indexed[(name, value)] = rep
        else:  # incremental literal: the entry was added and every dynamic index moved
            self._forget()
        return rep

    def _size_updates(self) -> bytes:
        """Dynamic table size updates owed to the peer's SETTINGS_HEADER_TABLE_SIZE changes.

        RFC 7541 §4.2: the smallest size since the last block, then the final one. hpack would
        send every intermediate size (one above the final limit is a decoding error) and skips
        them all when a size is set twice (its `resized` flag is then reset).
        """
        changes = self.table_size_changes
        smallest, final = min(changes), changes[-1]
        self.table_size_changes = []
        self.header_table.resized = False
        self._forget()  # a shrink evicted entries
        out = b""
        for size in (smallest, final) if final != smallest else (final,):
            update = encode_integer(size, 5)
            update[0] |= 0x20
            out += update
        return out

    def _forget(self) -> None:
        self._indexed.clear()
        self._name_prefix.clear()


# --------------------------------------------------------------------------------------------
# HPACK decoding


def _string(block: bytes, i: int) -> tuple[bytes, int] | None:
    """An HPACK string literal at `block[i]` (one-byte length): (bytes, next index), or None."""
    first = block[i]
    length = first & 0x7F
    if length == 0x7F:
        return None  # a multi-byte length: rare, left to hpack
    end = i + 1 + length
    if end > len(block):
        return None  # truncated: hpack reports it
    raw = block[i + 1 : end]
    if first & 0x80:
        raw = decode_huffman(raw)
    return raw, end


def _decode_simple(decoder: Decoder, block: bytes) -> list[_Header] | None:
    """`block` decoded, if it only holds representations that leave the dynamic table alone.

    Indexed fields, and literals without indexing or never indexed, with one-byte indices and
    lengths: what an answer usually is. None for anything else (or anything wrong), before any
    state changed, so hpack can decode (or reject) the same block from scratch.
    """
    table = decoder.header_table
    headers: list[_Header] = []
    size = 0
    i, n = 0, len(block)
    try:
        while i < n:
            first = block[i]
            if first & 0x80:  # indexed field (RFC 7541 §6.1)
                index = first & 0x7F
                if index == 0 or index == 0x7F:
                    return None
                name, value = table.get_by_index(index)
                i += 1
            elif first & 0xE0 == 0:  # literal without indexing / never indexed (§6.2.2, §6.2.3)
                index = first & 0x0F
                if index == 0x0F:
                    return None
                if index:
                    name = table.get_by_index(index)[0]
                    i += 1
                else:
                    literal = _string(block, i + 1)
                    if literal is None:
                        return None
                    name, i = literal
                literal = _string(block, i)
                if literal is None:
                    return None
                value, i = literal
            else:  # incremental indexing or a table size update: hpack changes the table
                return None
            headers.append((name, value))
            size += 32 + len(name) + len(value)  # RFC 7541 §4.1 entry size, as hpack counts
    except (IndexError, HPACKError):
        return None
    if size > decoder.max_header_list_size or (
        decoder.header_table_size > decoder.max_allowed_table_size
    ):
        return None  # hpack raises the matching error
    return headers


def decode_header_block(decoder: Decoder, block: bytes) -> list[_Header]:
    """Decode a complete header block as h2 does (its errors included), cheaply when possible.

    Raises h2's `ProtocolError` (or its `DenialOfServiceError`) where h2 would.
    """
    headers = _decode_simple(decoder, block)
    if headers is None:
        return list(_decode_headers(decoder, block))
    return headers


# --------------------------------------------------------------------------------------------
# The connection


def _header_valid(buf: bytes, pos: int) -> bool:
    """Whether hyperframe accepts the frame header at `buf[pos:]` (a stream id where one belongs).

    h2 checks a frame's header as soon as it has the nine bytes, even before the body arrived.
    """
    try:
        Frame.parse_frame_header(memoryview(buf)[pos : pos + 9])
    except (InvalidDataError, InvalidFrameError):
        return False
    return True


# RFC 9113 §6.8: after a GOAWAY, streams at or below the last stream id may still complete.
# h2 moves to CLOSED on any GOAWAY and then rejects every frame (h2 issue #1181); these
# transitions keep the traffic of such streams flowing. New streams stay forbidden.
_AFTER_GOAWAY: Final = (
    ConnectionInputs.RECV_HEADERS,
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
)


class _DrainingStateMachine(H2ConnectionStateMachine):
    """h2's connection state machine, plus the traffic a GOAWAY still allows."""

    _transitions = {  # noqa: RUF012 - h2 reads it as a class attribute, never mutated
        **H2ConnectionStateMachine._transitions,
        **{(ConnectionState.CLOSED, i): (None, ConnectionState.CLOSED) for i in _AFTER_GOAWAY},
    }


class AnswerHeaders:
    """A complete answer in one HEADERS frame (END_STREAM): h2's `ResponseReceived` with
    `stream_ended` set, as `receive` reports it. `headers` are raw `(name, value)` bytes.

    A plain slotted class rather than a frozen dataclass: one is made per answer, and it never
    leaves the protocol.
    """

    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: list[_Header]) -> None:
        self.stream_id = stream_id
        self.headers = headers


class ApnsH2Connection(H2Connection):
    """h2's client connection with the request and answer fast paths (see the module docstring).

    `tracked` is the protocol's table of open streams: its size is the open-stream count, and
    answers are taken on the fast path only for streams in it. `authority` is the `:authority`
    every request carries (h2 records it per stream).
    """

    def __init__(self, config: H2Configuration, tracked: Collection[int], authority: bytes) -> None:
        super().__init__(config)
        self.encoder = ApnsHpackEncoder()
        self.state_machine = _DrainingStateMachine()
        self._tracked = tracked
        self._authority = authority
        self._sweep_at = _SWEEP_MIN
        self._pending = b""  # the start of a frame whose end has not arrived yet
        self._split = True  # False once h2 owns the incoming bytes (an oversized frame)
        self._refresh_settings()

    # -- settings ------------------------------------------------------------------------------

    def _refresh_settings(self) -> None:
        """Copy the settings `send_request` reads: a `Settings` lookup hashes an enum in Python.

        Both sides' settings change only through a SETTINGS frame (the peer's values, or its ACK
        of ours) or when the connection starts, so those are the places that call this.
        """
        remote = self.remote_settings
        self._remote_window = remote.initial_window_size
        self._remote_max_streams = remote.max_concurrent_streams
        self._local_window = self.local_settings.initial_window_size

    def initiate_connection(self) -> None:
        """h2's `initiate_connection` (the local settings may have been replaced before it)."""
        super().initiate_connection()
        self._refresh_settings()

    def _receive_settings_frame(self, frame: SettingsFrame) -> tuple[list[Frame], list[Any]]:
        """h2's handler (the peer's settings, or its ACK of ours), then the copies refreshed."""
        try:
            return super()._receive_settings_frame(frame)
        finally:
            self._refresh_settings()

    @property
    def open_outbound_streams(self) -> int:
        """Open client streams, from the protocol's table (O(1)).

        The walk h2 would make also forgets closed streams, so it still runs, once the stream
        table has doubled.
        """
        if len(self.streams) >= self._sweep_at:
            _ = super().open_outbound_streams  # the walk forgets closed streams
            self._sweep_at = max(_SWEEP_MIN, 2 * len(self.streams))
        return len(self._tracked)

    # -- requests ------------------------------------------------------------------------------

    def send_request(self, stream_id: int, headers: list[_Header], body: bytes) -> bool:
        """Open `stream_id` with `headers` and send all of `body` with END_STREAM.

        The same frames and the same h2 state as `send_headers(stream_id, headers)` followed by
        `send_data(stream_id, body, end_stream=True)` (or `send_headers(..., end_stream=True)`
        for an empty body). Returns False, having changed nothing, when that needs h2's general
        path: the connection is not open, the stream id is not new, or the body does not fit
        one frame and the flow-control windows.
        """
        size = len(body)
        window = self._remote_window
        max_frame = self.max_outbound_frame_size
        if (
            self.state_machine.state is not ConnectionState.CLIENT_OPEN
            or stream_id <= self.highest_outbound_stream_id
            or size > max_frame
            or size > window
            or size > self.outbound_flow_control_window
            or len(self._tracked) + 1 > self._remote_max_streams
        ):
            return False
        if len(self.streams) >= self._sweep_at:
            _ = self.open_outbound_streams
        block = self.encoder.encode(headers)
        stream = H2Stream(
            stream_id,
            config=self.config,
            inbound_window_size=self._local_window,
            outbound_window_size=window,
        )
        stream.max_outbound_frame_size = max_frame
        machine = stream.state_machine
        machine.client = True
        machine.headers_sent = True
        machine.state = StreamState.HALF_CLOSED_LOCAL  # END_STREAM goes out with this request
        stream._authority = self._authority
        stream.request_method = b"POST"
        head = _FRAME_HEAD.pack
        flags = _END_HEADERS if size else _END_HEADERS | _END_STREAM
        n = len(block)
        if n <= max_frame:
            self._data_to_send += head(n >> 8, n & 0xFF, _HEADERS, flags, stream_id)
            self._data_to_send += block
        else:
            self._continued(stream_id, block, flags & _END_STREAM, max_frame)
        if size:
            self._data_to_send += head(size >> 8, size & 0xFF, _DATA, _END_STREAM, stream_id)
            self._data_to_send += body
            stream.outbound_flow_control_window = window - size
            self.outbound_flow_control_window -= size
        self.streams[stream_id] = stream
        self.highest_outbound_stream_id = stream_id
        return True

    def _continued(self, stream_id: int, block: bytes, end_stream: int, max_frame: int) -> None:
        """A header block over one frame: HEADERS, then CONTINUATION frames (as h2 splits it)."""
        last = (len(block) - 1) // max_frame
        for k in range(last + 1):
            part = block[k * max_frame : (k + 1) * max_frame]
            kind = _HEADERS if k == 0 else _CONTINUATION
            flags = (end_stream if k == 0 else 0) | (_END_HEADERS if k == last else 0)
            n = len(part)
            self._data_to_send += _FRAME_HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream_id)
            self._data_to_send += part

    # -- answers -------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Any]:
        """`receive_data`, with the answer fast path: h2 events and `AnswerHeaders`, in frame order.

        Raises what h2 raises on a frame it refuses, after queueing its GOAWAY, as
        `receive_data` does. A frame cut short is kept until the rest of it arrives.
        """
        if not isinstance(data, bytes):
            data = bytes(data)  # slices below must be bytes, not views
        if not self._split:
            return self.receive_data(data)
        buf = self._pending + data if self._pending else data
        self._pending = b""
        events: list[Any] = []
        tracked = self._tracked
        n = len(buf)
        pos = slow = 0  # buf[slow:pos] are whole frames h2 has not seen yet
        while n - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEAD.unpack_from(buf, pos)
            length = (high << 8) | low
            if length > self.max_inbound_frame_size:
                # h2 refuses it once all of it has arrived; from here on h2 reads every byte.
                self._split = False
                events += self.receive_data(buf[slow:])
                return events
            end = pos + 9 + length
            if end > n:
                break
            if (
                kind == _HEADERS
                and flags & _ANSWER_MASK == _ANSWER_FLAGS
                and (stream_id & _STREAM_ID_MASK) in tracked
            ):
                if slow < pos:
                    events += self.receive_data(buf[slow:pos])
                answer = self._answer(stream_id & _STREAM_ID_MASK, buf[pos + 9 : end])
                if answer is None:
                    slow = pos  # h2 takes it, with whatever follows
                else:
                    events.append(answer)
                    slow = end
            pos = end
        if n - pos >= 9 and not _header_valid(buf, pos):
            # h2 refuses a frame by its header alone, before the rest arrives: let it, now.
            self._split = False
            events += self.receive_data(buf[slow:])
            return events
        if slow < pos:
            events += self.receive_data(buf[slow:pos])
        if pos < n:
            self._pending = buf[pos:]
        return events

    def _answer(self, stream_id: int, block: bytes) -> AnswerHeaders | None:
        """The answer in a HEADERS frame with END_STREAM, or None if h2 must process the frame.

        Does what h2's `_receive_headers_frame` does for a response that ends its stream, minus
        the event objects; raises h2's `ProtocolError` where h2 would.
        """
        stream = self.streams.get(stream_id)
        if stream is None:
            return None
        machine = stream.state_machine
        if (
            machine.state is not StreamState.HALF_CLOSED_LOCAL
            or machine.headers_received
            or self.state_machine.state is not ConnectionState.CLIENT_OPEN
            or self.incoming_buffer._headers_buffer  # inside another header block: h2 refuses
        ):
            return None
        try:
            headers = decode_header_block(self.decoder, block)
            if is_informational_response(headers):
                raise ProtocolError("Cannot set END_STREAM on informational responses")
            machine.headers_received = True
            machine.state = StreamState.CLOSED
            machine.stream_closed_by = StreamClosedBy.RECV_END_STREAM
            stream._initialize_content_length(headers)  # h2 refuses a malformed content-length
        except ProtocolError as exc:
            self._terminate_connection(exc.error_code)  # what h2's receive_data does
            raise
        # The closed stream stays in `streams` until h2's sweep (see `open_outbound_streams`):
        # h2 answers a late frame differently for a stream it still holds and one it swept.
        return AnswerHeaders(stream_id, headers)
