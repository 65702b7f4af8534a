"""h2's client connection, adjusted for APNs traffic: the HTTP/2 layer under `ApnsClientProtocol`.

h2 stays the authority on connection and stream state; this module changes how much it costs to
keep that state for the two frames that make up nearly all APNs traffic:

* **Requests** (`send_request`): a new stream's HEADERS and its one DATA frame with END_STREAM are
  written straight into h2's output buffer, and the stream is registered with h2 in exactly the
  state `send_headers` + `send_data` would leave it in (half closed, windows charged). h2's
  general path builds a frame object per frame, a flag set per frame and runs two state machines
  per call; the result on the wire is byte for byte the same. Anything unusual (a body larger
  than a window or a frame, a connection that is not simply open) takes h2's path.
* **Answers** (`receive`): incoming bytes are split into frames here. A HEADERS frame with
  END_HEADERS and END_STREAM, unpadded and without priority, on a stream h2 holds half closed
  with no response yet (the usual APNs answer, apns.md §3) is decoded against h2's own HPACK
  table and closes the stream as h2 would; every other frame goes to h2 unchanged, in order. h2
  builds a frame object, an event per state change and a repr of every frame (for a trace log) on
  that path, which cost more than the rest of the engine per answer.
* **HPACK encoding** (`ApnsHpackEncoder`): APNs' indexing policy, no Huffman, cached
  representations (see the class).

The h2 state those fast paths produce, the GOAWAY drain (streams at or below the last stream id
still complete, RFC 9113 §6.8) and the O(1) open-stream count (from the protocol's own table,
`tracked`) come from `engine.apns.h2compat`, which owns every reliance on h2's internals; the
frame and HPACK bytes come from `engine.apns.h2wire`.

Errors behave as in h2: a frame h2 would refuse makes `receive` raise h2's exception, after h2's
GOAWAY has been queued; what the frames before it changed stays changed, as in h2.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Final, TypeAlias

from h2.config import H2Configuration
from h2.connection import ConnectionState
from h2.exceptions import ProtocolError
from hpack import Decoder, HeaderTuple, HPACKError
from hyperframe.exceptions import HyperframeError, InvalidDataError, InvalidFrameError
from hyperframe.frame import Frame

from engine.apns import wire
from engine.apns.h2compat import (
    DrainingH2Connection,
    HpackEncoderBase,
    decode_headers,
    dynamic_table,
)
from engine.apns.h2wire import (
    CONTINUATION,
    DATA,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADERS,
    SHORT_STRING_LENGTHS,
    STREAM_ID_MASK,
    hpack_int,
    hpack_string,
    read_header_block,
)

__all__ = [
    "H2_ERRORS",
    "AnswerHeaders",
    "ApnsH2Connection",
    "ApnsHpackEncoder",
    "decode_header_block",
]

H2_ERRORS: Final = (ProtocolError, HPACKError, HyperframeError)
"""What h2 raises on input it refuses (after queueing its GOAWAY)."""

_ANSWER_MASK: Final = FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY
_ANSWER_FLAGS: Final = FLAG_END_STREAM | FLAG_END_HEADERS

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
_SHORT: Final = SHORT_STRING_LENGTHS


class ApnsHpackEncoder(HpackEncoderBase):
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
        out: list[bytes] = [self._size_updates()] if self.size_update_due else []
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
                    rep = prefix + (_SHORT[n] if n < 127 else hpack_int(n, 7)) + value
            out.append(rep)
        return b"".join(out)

    def _encode_new(self, name: bytes, value: bytes) -> bytes:
        """Slow path: a header not representable from the caches."""
        if name in _LITERAL_NOT_INDEXED or name in _INDEX_NAME_ONCE:
            match = self.table_search(name, value)
            if match is not None:
                index, _, exact = match
                if exact is not None:
                    rep = hpack_int(index, 7, 0x80)  # indexed field (RFC 7541 §6.1)
                    self._indexed[(name, value)] = rep
                    return rep
                # Literal without indexing, indexed name: 0000 + 4-bit prefix (RFC 7541 §6.2.2).
                prefix = hpack_int(index, 4)
                self._name_prefix[name] = prefix
                return prefix + hpack_string(value)
            # Unreached while the set is {":path"}, a static-table name (RFC 7541 Appendix A).
            if name in _LITERAL_NOT_INDEXED:  # pragma: no cover - its names are all in the table
                return b"\x00" + hpack_string(name) + hpack_string(value)
            # First use of an index-once name: index it, so later values reuse the name.
        rep = self.index_field(name, value)
        if rep[0] & 0x80:
            self._indexed[(name, value)] = rep
        else:  # incremental literal: the entry was added and every dynamic index moved
            self._forget()
        return rep

    def _size_updates(self) -> bytes:
        """Dynamic table size updates owed to the peer's SETTINGS_HEADER_TABLE_SIZE changes.

        RFC 7541 §4.2: the smallest size since the last block, then the final one. hpack would
        send every intermediate size (one above the final limit is a decoding error) and skips
        them all when a size is set twice.
        """
        changes = self.take_size_changes()
        smallest, final = min(changes), changes[-1]
        self._forget()  # a shrink evicted entries
        sizes = (smallest, final) if final != smallest else (final,)
        return b"".join(hpack_int(size, 5, 0x20) for size in sizes)  # §6.3

    def _forget(self) -> None:
        self._indexed.clear()
        self._name_prefix.clear()


# --------------------------------------------------------------------------------------------
# HPACK decoding


def answer_limit(decoder: Decoder) -> int:
    """The header-list size a quickly read block may reach (SETTINGS_MAX_HEADER_LIST_SIZE), or -1
    when every block must go to hpack: the table is over the size our SETTINGS allow, and the
    peer owes a size update (hpack raises without one)."""
    if decoder.header_table_size > decoder.max_allowed_table_size:
        return -1
    return int(decoder.max_header_list_size)


def decode_header_block(decoder: Decoder, block: bytes) -> list[_Header]:
    """Decode a complete header block as h2 does (its errors included), cheaply when possible.

    A block that leaves the dynamic table alone (what an answer usually is) is read directly
    against the decoder's table; anything else, or anything wrong (a header list over
    `answer_limit` included), goes whole to hpack through h2, with nothing changed before.
    Raises h2's `ProtocolError` (or its `DenialOfServiceError`) where h2 would.
    """
    limit = answer_limit(decoder)
    headers = (
        read_header_block(block, dynamic_table(decoder), max_size=limit) if limit >= 0 else None
    )
    return decode_headers(decoder, block) if headers is None else headers


# --------------------------------------------------------------------------------------------
# The connection


def _header_valid(buf: bytes, pos: int) -> bool:
    """Whether hyperframe accepts the frame header at `buf[pos:]` (a stream id where one belongs).

    h2 checks a frame's header as soon as it has the nine bytes, even before the body arrived.
    """
    try:
        Frame.parse_frame_header(memoryview(buf)[pos : pos + FRAME_HEAD_SIZE])
    except (InvalidDataError, InvalidFrameError):
        return False
    return True


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


class ApnsH2Connection(DrainingH2Connection):
    """h2's client connection with the request and answer fast paths (see the module docstring).

    `tracked` is the protocol's table of open streams: its size is the open-stream count, and
    answers are taken on the fast path only for streams in it. `authority` is the `:authority`
    every request carries (h2 records it per stream).
    """

    def __init__(self, config: H2Configuration, tracked: Collection[int], authority: bytes) -> None:
        super().__init__(config, client_streams=tracked.__len__)
        self.encoder = ApnsHpackEncoder()
        self._dynamic = dynamic_table(self.decoder)  # the same object for the connection's life
        self._out = self.outbound_buffer()  # likewise
        self._tracked = tracked
        self._authority = authority
        self._pending = b""  # the start of a frame whose end has not arrived yet
        self._split = True  # False once h2 owns the incoming bytes (an oversized frame)
        self.settings_changed()

    # -- settings ------------------------------------------------------------------------------

    def settings_changed(self) -> None:
        """Copy the settings `send_request` and `_answer` read (after every SETTINGS frame).

        A `Settings` lookup hashes an enum in Python; both sides' settings change only through a
        SETTINGS frame (the peer's values, or its ACK of ours) or when the connection starts.
        """
        remote = self.remote_settings
        self._remote_window = remote.initial_window_size
        self._remote_max_streams = remote.max_concurrent_streams
        self._local_window = self.local_settings.initial_window_size
        self._answer_limit = answer_limit(self.decoder)

    def initiate_connection(self) -> None:
        """h2's `initiate_connection` (the local settings may have been replaced before it)."""
        super().initiate_connection()
        self.settings_changed()

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
        block = self.encoder.encode(headers)
        out = self._out
        head = FRAME_HEAD.pack
        flags = FLAG_END_HEADERS if size else FLAG_END_HEADERS | FLAG_END_STREAM
        n = len(block)
        if n <= max_frame:
            out += head(n >> 16, n & 0xFFFF, HEADERS, flags, stream_id)
            out += block
        else:
            self._continued(out, stream_id, block, flags & FLAG_END_STREAM, max_frame)
        if size:
            out += head(size >> 16, size & 0xFFFF, DATA, FLAG_END_STREAM, stream_id)
            out += body
        self.open_sent_request(
            stream_id, self._authority, size, max_frame, self._local_window, window
        )
        return True

    @staticmethod
    def _continued(
        out: bytearray, stream_id: int, block: bytes, end_stream: int, max_frame: int
    ) -> None:
        """A header block over one frame: HEADERS, then CONTINUATION frames (as h2 splits it)."""
        last = (len(block) - 1) // max_frame
        for k in range(last + 1):
            part = block[k * max_frame : (k + 1) * max_frame]
            kind = HEADERS if k == 0 else CONTINUATION
            flags = (end_stream if k == 0 else 0) | (FLAG_END_HEADERS if k == last else 0)
            n = len(part)
            out += FRAME_HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id)
            out += part

    # -- answers -------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Any]:
        """`receive_data`, with the answer fast path: h2 events and `AnswerHeaders`, in frame order.

        Raises what h2 raises on a frame it refuses, after queueing its GOAWAY, as
        `receive_data` does. A frame cut short is kept until the rest of it arrives.
        """
        if not isinstance(data, bytes):  # pragma: no cover - typed callers pass bytes
            data = bytes(data)  # slices below must be bytes, not views
        if not self._split:
            return self.receive_data(data)
        buf = self._pending + data if self._pending else data
        self._pending = b""
        events: list[Any] = []
        tracked = self._tracked
        n = len(buf)
        pos = slow = 0  # buf[slow:pos] are whole frames h2 has not seen yet
        while n - pos >= FRAME_HEAD_SIZE:
            high, low, kind, flags, stream_id = FRAME_HEAD.unpack_from(buf, pos)
            length = (high << 16) | low
            if length > self.max_inbound_frame_size:
                # h2 refuses it once all of it has arrived; from here on h2 reads every byte.
                self._split = False
                events += self.receive_data(buf[slow:])
                return events
            end = pos + FRAME_HEAD_SIZE + length
            if end > n:
                break
            if (
                kind == HEADERS
                and flags & _ANSWER_MASK == _ANSWER_FLAGS
                and (stream_id & STREAM_ID_MASK) in tracked
            ):
                if slow < pos:
                    events += self.receive_data(buf[slow:pos])
                answer = self._answer(stream_id & STREAM_ID_MASK, buf[pos + FRAME_HEAD_SIZE : end])
                if answer is None:
                    slow = pos  # h2 takes it, with whatever follows
                else:
                    events.append(answer)
                    slow = end
            pos = end
        if n - pos >= FRAME_HEAD_SIZE and not _header_valid(buf, pos):
            # h2 refuses a frame by its header alone, before the rest arrives: let it, now.
            self._split = False
            events += self.receive_data(buf[slow:])
            # h2 parses frame headers with the same hyperframe call, so it has raised by now.
            return events  # pragma: no cover - h2 refuses this frame header
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
        stream = self.answerable_stream(stream_id)
        if stream is None:
            return None
        try:
            # `decode_header_block`, with `answer_limit` read once per SETTINGS: the limits change
            # only with our acknowledged SETTINGS, and the table can only come back within them
            # (a size update decoded by hpack), so a stale -1 sends a block to hpack, no worse.
            limit = self._answer_limit
            if limit < 0:
                limit = self._answer_limit = answer_limit(self.decoder)
            headers = (
                read_header_block(block, self._dynamic, max_size=limit) if limit >= 0 else None
            )
            if headers is None:
                headers = decode_headers(self.decoder, block)
            self.end_stream_by_answer(stream, headers)
        except ProtocolError as exc:
            self.terminate(exc.error_code)  # what h2's receive_data does
            raise
        # The closed stream stays in `streams` until h2's sweep (see `forget_closed_streams`):
        # h2 answers a late frame differently for a stream it still holds and one it swept.
        return AnswerHeaders(stream_id, headers)
