"""Accept-all HTTP/2 sink: the byte-level core of the simulator's benchmark mode.

The benchmark mode exists to measure the engine's ceiling, so the server side must cost far less
than the client under test. This sans-IO class therefore parses HTTP/2 frames itself instead of
running h2's state machine, validates nothing about APNs, and answers every complete request with
one HEADERS frame: `:status 200` plus `apns-id` (apns.md §1). The `apns-id` echoes the request's
own (clients such as aioapns match answers by it), or is a fresh UUID-shaped id from a counter
when the request carries none, as APNs generates one (apns.md §1).

What it still does, because a client must be able to rely on it (RFC 9113):
- checks the client preface and that the first frame is SETTINGS;
- ACKs SETTINGS, answers PING, keeps the client's DATA windows open with batched WINDOW_UPDATEs;
- follows stream ids (odd, increasing), CONTINUATION sequences and padding lengths;
- keeps an HPACK decoder in step with the client's encoder (RFC 7541), see `ApnsIdReader`;
- turns every malformed input into GOAWAY and `closed`; nothing is raised from `receive_data`.

Any stream error is treated as a connection error, which RFC 9113 §5.4.1 permits.

The responses never touch the client's dynamic table (literals without indexing), and we never
advertise SETTINGS_HEADER_TABLE_SIZE. When the client changes *its* HEADER_TABLE_SIZE, the next
response starts with a dynamic table size update to 0, which strict decoders (nghttp2) expect after
such a change (RFC 7541 §4.2).
"""

from __future__ import annotations

import itertools
import struct
import uuid
from typing import Final

import hpack

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
FLAG_END_STREAM: Final = 0x1
FLAG_ACK: Final = 0x1
FLAG_END_HEADERS: Final = 0x4
FLAG_PADDED: Final = 0x8
FLAG_PRIORITY: Final = 0x20

# Error codes (RFC 9113 §7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings identifiers.
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5

MAX_FRAME_SIZE: Final = 16384
"""We never raise SETTINGS_MAX_FRAME_SIZE, so the default bounds every frame we accept."""

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 1 << 24
"""16 MiB per stream and per connection: ~50k Live-Activity bodies in flight, far past any need."""

MAX_HEADER_BLOCK: Final = 65536
"""A header block spread over CONTINUATIONs beyond this is refused (CONTINUATION flood guard)."""

MAX_ECHOED_ID: Final = 256
"""Longest request `apns-id` echoed back. A UUID is 36 bytes; APNs refuses anything else with
400 BadMessageId (apns.md §1), which the sink does not judge, but a longer value gets a generated
id instead so that every answer stays one small frame."""

_FRAME_HEADER: Final = struct.Struct(">BHBBL")  # 24-bit length split as 8 + 16 bits
_U32: Final = struct.Struct(">L")


class _Failure(Exception):
    """Internal: the connection must end with GOAWAY carrying `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """Serialise one HTTP/2 frame (RFC 9113 §4.1)."""
    n = len(payload)
    return _FRAME_HEADER.pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """Encode an HPACK integer with an N-bit prefix (RFC 7541 §5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(raw: bytes) -> bytes:
    """A string literal without Huffman coding (RFC 7541 §5.2)."""
    return hpack_int(len(raw), 7) + raw


_ID_NAME: Final = b"apns-id"
_ANSWER_LEAD: Final = b"\x88\x00" + hpack_string(_ID_NAME)
"""`:status 200`, then the start of a literal without indexing, new name `apns-id`."""


def response_block(apns_id: str | bytes) -> bytes:
    """HPACK block of the accept-all answer: `:status 200` and `apns-id` (apns.md §1).

    `:status 200` is static index 8 (one byte, 0x88); `apns-id` is a literal header field without
    indexing with a new name, so the client's dynamic table is never touched.
    """
    raw = apns_id.encode("ascii") if isinstance(apns_id, str) else apns_id
    return _ANSWER_LEAD + hpack_string(raw)


_UUID_LEAD: Final = _ANSWER_LEAD + b"\x24"  # the value's length, 36, as a one-byte HPACK integer
_UUID_ANSWER: Final = struct.Struct(f">5sL{len(_UUID_LEAD)}s36s")
_ANSWER_FLAGS: Final = FLAG_END_HEADERS | FLAG_END_STREAM
_UUID_HEAD: Final = frame(HEADERS, _ANSWER_FLAGS, 0, _UUID_LEAD + b"0" * 36)[:5]


class _NeedsDecoder(Exception):
    """Internal: the quick read met something that only the full HPACK decoder may handle."""


def _varint(block: bytes | bytearray, i: int, value: int) -> tuple[int, int]:
    """Finish an HPACK integer whose prefix was full (RFC 7541 §5.1); return (value, next index).

    Gives up past three continuation bytes (2**21, far beyond any index or length here), so the
    quick read never accepts an integer that `hpack` would refuse.
    """
    for shift in (0, 7, 14):
        byte = block[i]
        i += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
    raise _NeedsDecoder


class ApnsIdReader:
    """Finds the `apns-id` of each request header block of one connection, blocks fed in order.

    The client's HPACK encoder refers to a dynamic table built from every block it sent before,
    so a decoder must follow all of them in order (RFC 7541 §2.3.2). `hpack.Decoder` owns that
    table here. Most blocks of an APNs client never change it: past the first request they are
    indexed fields and literals *without* indexing (the HPACK policy of apns.md §1). Such a block
    is read directly against the decoder's table, which costs about a microsecond instead of the
    decoder's ~15; since it neither adds nor evicts an entry, the table ends exactly as decoding
    would leave it. Every other block (an insertion, a size update, a Huffman-coded `apns-id` or
    name, anything malformed) goes to `hpack.Decoder.decode` whole, so every table change is
    made by the decoder, in order.

    Values the quick read does not need are skipped by length, not decoded: a broken Huffman
    string in, say, `authorization` goes unnoticed there, as the sink validates nothing it does
    not read.
    """

    def __init__(self) -> None:
        # No limit on the decoded header list: MAX_HEADER_BLOCK already bounds a block, and the
        # quick read does not compute that size, so both paths accept the same blocks.
        self.decoder = hpack.Decoder(max_header_list_size=2**31)
        self.decoded = 0
        """How many blocks went through `hpack.Decoder.decode` (the rest were read quickly)."""
        self._table = self.decoder.header_table
        # Dynamic-table indices whose name is apns-id; None once a decode may have moved them,
        # recomputed by the next quick read only (a client whose every block changes the table
        # never pays for it).
        self._id_indices: frozenset[int] | None = frozenset()

    def read(
        self, block: bytes | bytearray, start: int = 0, end: int | None = None
    ) -> bytes | None:
        """The first `apns-id` value in `block[start:end]`, or None.

        Raises `hpack.HPACKError` when the block does not decode (a COMPRESSION_ERROR).
        """
        stop = len(block) if end is None else end
        try:
            return self._read_quick(block, start, stop)
        except (_NeedsDecoder, IndexError):
            return self._decode(bytes(block[start:stop]))

    def _decode(self, block: bytes) -> bytes | None:
        self.decoded += 1
        headers = self.decoder.decode(block, raw=True)
        self._id_indices = None
        return next((bytes(v) for n, v in headers if n == _ID_NAME), None)

    def _read_quick(self, block: bytes | bytearray, i: int, end: int) -> bytes | None:
        """Read a block that leaves the dynamic table alone; `_NeedsDecoder` for any other.

        The one-byte cases come first: this loop is most of the sink's cost per request.
        """
        entries = self._table.dynamic_entries
        last = 61 + len(entries)  # the highest valid index (RFC 7541 §2.3.3)
        ids = self._id_indices
        if ids is None:
            ids = frozenset(62 + k for k, (name, _) in enumerate(entries) if name == _ID_NAME)
            self._id_indices = ids
        found: bytes | None = None
        while i < end:
            byte = block[i]
            if byte > 0x80:  # indexed header field (RFC 7541 §6.1); 0x80, index 0, is invalid
                if byte < 0xFF:
                    index, i = byte - 0x80, i + 1
                else:
                    index, i = _varint(block, i + 1, 0x7F)
                if index > last:
                    raise _NeedsDecoder  # which reports the bad index
                if ids and index in ids and found is None:
                    found = entries[index - 62][1]
                continue
            if byte >= 0x20:
                raise _NeedsDecoder  # incremental indexing or a size update: the table changes
            # Literal without indexing or never indexed (RFC 7541 §6.2.2, §6.2.3).
            index = byte & 0x0F
            if index < 0x0F:
                i += 1
            else:
                index, i = _varint(block, i + 1, 0x0F)
            if index:
                if index > last:
                    raise _NeedsDecoder
                is_id = index in ids
            else:
                size = block[i]
                if size >= 0x7F:
                    raise _NeedsDecoder  # a Huffman-coded or long name
                is_id = size == 7 and block[i + 1 : i + 8] == _ID_NAME
                i += 1 + size
            size = block[i]
            if size < 0x7F:  # a short value without Huffman coding
                i += 1 + size
                if is_id and found is None:
                    found = bytes(block[i - size : i])
                continue
            if is_id and found is None:
                raise _NeedsDecoder  # a Huffman-coded or long id
            if size & 0x7F == 0x7F:
                size, i = _varint(block, i + 1, 0x7F)
            else:
                size, i = size & 0x7F, i + 1
            i += size
        if i != end:
            raise _NeedsDecoder  # truncated: the decoder says so
        return found


class FastSinkProtocol:
    """Server side of one HTTP/2 connection that answers every request with `200` + `apns-id`.

    Feed received bytes to `receive_data`; send what `data_to_send` returns. All responses produced
    by one `receive_data` call leave in one `data_to_send` batch.
    """

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 1000,
        apns_id: str | None = None,
        window_size: int = DEFAULT_WINDOW,
    ) -> None:
        """`apns_id`: the id answered to requests that carry none; None (the default) answers each
        such request with a fresh one. A request's own `apns-id` is always echoed."""
        if not 1 <= window_size <= MAX_WINDOW:
            raise ValueError("window_size must be within 1 .. 2**31-1")
        if max_concurrent_streams < 0:
            raise ValueError("max_concurrent_streams must not be negative")
        self.apns_id = apns_id
        self._fixed_block = None if apns_id is None else response_block(apns_id)
        # Generated ids: APNs makes uppercase ones (apns.md §1). A random 24-character head per
        # connection and a 12-digit counter keep them unique at the cost of one format per answer.
        self._id_head = str(uuid.uuid4()).upper()[:24].encode("ascii")
        self._id_counter = itertools.count(1)
        self.ids = ApnsIdReader()
        self._max_streams = max_concurrent_streams
        self._window = window_size
        self._threshold = max(1, window_size // 2)
        self.closed = False
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.error_code: int | None = None
        """The code of the GOAWAY this side sent, once closed; None while open."""
        self._buf = bytearray()
        self._out = bytearray()
        self._preface_pending = True
        self._settings_pending = True
        self._last_sid = 0
        self._open: dict[int, int] = {}  # stream id -> DATA bytes not yet credited back
        self._echo: dict[int, bytes] = {}  # open stream id -> the apns-id its request carried
        self._conn_unacked = 0
        self._cont_sid = 0  # stream whose header block awaits CONTINUATION, 0 if none
        self._cont_end_stream = False
        self._cont_new = False
        self._cont_size = 0
        self._cont_block = bytearray()
        self._table_update = False
        self._send_preface()

    def _send_preface(self) -> None:
        settings = struct.pack(
            ">HLHL",
            SETTINGS_MAX_CONCURRENT_STREAMS,
            self._max_streams,
            SETTINGS_INITIAL_WINDOW_SIZE,
            self._window,
        )
        self._out += frame(SETTINGS, 0, 0, settings)
        # The connection window starts at 65535 whatever SETTINGS say (RFC 9113 §6.9.2).
        if self._window > 65535:
            self._out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._window - 65535))

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (may be empty)."""
        out = bytes(self._out)
        self._out.clear()
        self.bytes_out += len(out)
        return out

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Consume bytes from the peer; never raises, ends in GOAWAY on bad input."""
        if self.closed:
            return
        self.bytes_in += len(data)
        buf = self._buf
        buf += data
        try:
            pos = self._consume_preface(buf) if self._preface_pending else 0
            if not self._preface_pending and not self.closed:
                pos = self._parse(buf, pos)
            del buf[:pos]
            if self._conn_unacked >= self._threshold and not self.closed:
                self._out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_unacked))
                self._conn_unacked = 0
        except _Failure as failure:
            self._fail(failure.code)
        except hpack.HPACKError:
            self._fail(COMPRESSION_ERROR)  # the decoder's state is lost (RFC 9113 §4.3)
        except Exception:  # a bug must not take the sink down; tests assert this never happens
            self._fail(INTERNAL_ERROR)

    def _consume_preface(self, buf: bytearray) -> int:
        n = min(len(buf), len(PREFACE))
        if buf[:n] != PREFACE[:n]:
            raise _Failure(PROTOCOL_ERROR)
        if n < len(PREFACE):
            return 0
        self._preface_pending = False
        return n

    def _fail(self, code: int) -> None:
        self._goaway(code)
        self._buf.clear()

    def _goaway(self, code: int) -> None:
        if not self.closed:
            self._out += frame(GOAWAY, 0, 0, struct.pack(">LL", self._last_sid, code))
            self.closed = True
            self.error_code = code

    def _parse(self, buf: bytearray, pos: int) -> int:
        """Handle every complete frame in `buf` from `pos`; return where the next frame starts.

        HEADERS and DATA, the per-request frames, are handled inline on local state (written back
        in `finally`), and so is the usual answer (a UUID, no table size update due); the rare
        frames go to `_control`, the rare answers to `_answer`.
        """
        end = len(buf)
        unpack = _FRAME_HEADER.unpack_from
        read_id = self.ids.read
        pack_answer = _UUID_ANSWER.pack
        head, lead = _UUID_HEAD, _UUID_LEAD
        id_head, id_counter = self._id_head, self._id_counter
        generate = self._fixed_block is None
        plain = not self._table_update
        out = self._out
        open_ = self._open
        echo = self._echo
        threshold = self._threshold
        last_sid = self._last_sid
        answered = 0
        consumed = 0
        try:
            if self._settings_pending and end - pos >= 9:
                if buf[pos + 3] != SETTINGS or buf[pos + 4] & FLAG_ACK:
                    raise _Failure(PROTOCOL_ERROR)  # the preface ends with SETTINGS, RFC 9113 §3.4
                self._settings_pending = False
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = unpack(buf, pos)
                length = (hi << 16) | lo
                if length > MAX_FRAME_SIZE:
                    raise _Failure(FRAME_SIZE_ERROR)
                start = pos + 9
                if start + length > end:
                    break
                pos = start + length
                sid &= 0x7FFFFFFF
                if ftype == HEADERS and not self._cont_sid:
                    if not sid & 1:
                        raise _Failure(PROTOCOL_ERROR)  # client streams are odd, never 0
                    block_start, block_end = start, pos
                    if flags & (FLAG_PADDED | FLAG_PRIORITY):
                        block_start, block_end = _headers_fragment(buf, start, length, flags, sid)
                    if sid > last_sid:
                        last_sid = sid
                        new = True
                    elif sid in open_ and flags & FLAG_END_STREAM:
                        new = False  # trailers, which must end the stream (RFC 9113 §8.1)
                    else:
                        raise _Failure(STREAM_CLOSED if sid not in open_ else PROTOCOL_ERROR)
                    if not flags & FLAG_END_HEADERS:
                        self._begin_continuation(sid, flags, new, buf[block_start:block_end])
                        continue
                    # Every block is read, trailers too: the decoder must see them all in order.
                    rid = read_id(buf, block_start, block_end)
                    if not new:
                        del open_[sid]
                        rid = echo.pop(sid, None)
                    elif not flags & FLAG_END_STREAM:
                        if len(open_) >= self._max_streams:
                            raise _Failure(PROTOCOL_ERROR)  # RFC 9113 §5.1.2
                        open_[sid] = 0
                        if rid is not None:
                            echo[sid] = rid
                        continue
                elif ftype == DATA and not self._cont_sid:
                    consumed += length  # padding counts too (RFC 9113 §6.9.1)
                    if flags & FLAG_PADDED and (length == 0 or buf[start] >= length):
                        raise _Failure(PROTOCOL_ERROR)
                    unacked = open_.get(sid)
                    if unacked is None:
                        raise _Failure(STREAM_CLOSED if 0 < sid <= last_sid else PROTOCOL_ERROR)
                    if not flags & FLAG_END_STREAM:
                        unacked += length
                        if unacked >= threshold:
                            out += frame(WINDOW_UPDATE, 0, sid, _U32.pack(unacked))
                            unacked = 0
                        open_[sid] = unacked
                        continue
                    del open_[sid]
                    rid = echo.pop(sid, None) if echo else None
                else:
                    self._last_sid = last_sid
                    if self._control(ftype, flags, sid, bytes(buf[start:pos])):
                        break
                    plain = not self._table_update
                    continue
                # The request on `sid` is complete: answer it.
                if plain and rid is None and generate:
                    out += pack_answer(head, sid, lead, id_head + b"%012X" % next(id_counter))
                    answered += 1
                elif plain and rid is not None and len(rid) == 36:
                    out += pack_answer(head, sid, lead, rid)
                    answered += 1
                else:
                    self._answer(sid, rid)
                    plain = not self._table_update
            return pos
        finally:
            self._last_sid = last_sid
            self.requests += answered
            self._conn_unacked += consumed

    def _answer(self, sid: int, apns_id: bytes | None) -> None:
        """Queue the `200` for stream `sid`, echoing `apns_id` or naming a generated one."""
        if apns_id is None:
            if self._fixed_block is not None:
                self._queue_answer(sid, self._fixed_block)
                return
            apns_id = self._id_head + b"%012X" % next(self._id_counter)
        elif len(apns_id) > MAX_ECHOED_ID:
            apns_id = self._id_head + b"%012X" % next(self._id_counter)
        self._queue_answer(sid, response_block(apns_id))

    def _queue_answer(self, sid: int, block: bytes) -> None:
        """Queue a HEADERS answer, led by a table size update to 0 when one is due."""
        if self._table_update:
            self._table_update = False
            block = b"\x20" + block
        self._out += frame(HEADERS, _ANSWER_FLAGS, sid, block)
        self.requests += 1

    def _begin_continuation(
        self, sid: int, flags: int, new: bool, fragment: bytes | bytearray
    ) -> None:
        self._cont_sid = sid
        self._cont_end_stream = bool(flags & FLAG_END_STREAM)
        self._cont_new = new
        self._cont_size = len(fragment)
        self._cont_block[:] = fragment

    def _end_header_block(self) -> None:
        sid, new = self._cont_sid, self._cont_new
        self._cont_sid = 0
        rid = self.ids.read(self._cont_block)
        self._cont_block.clear()
        if not new:
            del self._open[sid]
            self._answer(sid, self._echo.pop(sid, None))
        elif self._cont_end_stream:
            self._answer(sid, rid)
        elif len(self._open) >= self._max_streams:
            raise _Failure(PROTOCOL_ERROR)
        else:
            self._open[sid] = 0
            if rid is not None:
                self._echo[sid] = rid

    def _control(self, ftype: int, flags: int, sid: int, payload: bytes) -> bool:
        """Handle every frame but a plain HEADERS or DATA; True means stop reading (GOAWAY)."""
        if self._cont_sid:
            if ftype != CONTINUATION or sid != self._cont_sid:
                raise _Failure(PROTOCOL_ERROR)  # RFC 9113 §6.10
            self._cont_size += len(payload)
            if self._cont_size > MAX_HEADER_BLOCK:
                raise _Failure(ENHANCE_YOUR_CALM)
            self._cont_block += payload
            if flags & FLAG_END_HEADERS:
                self._end_header_block()
            return False
        handler = _CONTROL_HANDLERS.get(ftype)
        if handler is None:
            return False  # unknown frame types are ignored (RFC 9113 §5.5)
        return handler(self, flags, sid, payload)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> bool:
        if sid:
            raise _Failure(PROTOCOL_ERROR)
        if flags & FLAG_ACK:
            if payload:
                raise _Failure(FRAME_SIZE_ERROR)
            return False
        if len(payload) % 6:
            raise _Failure(FRAME_SIZE_ERROR)
        for ident, value in struct.iter_unpack(">HL", payload):
            _check_setting(ident, value)
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True
        self._out += frame(SETTINGS, FLAG_ACK, 0)
        return False

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> bool:
        if sid:
            raise _Failure(PROTOCOL_ERROR)
        if len(payload) != 8:
            raise _Failure(FRAME_SIZE_ERROR)
        if not flags & FLAG_ACK:
            self._out += frame(PING, FLAG_ACK, 0, payload)
        return False

    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> bool:
        # Our responses are HEADERS only, never flow-controlled: the increment is not needed.
        if len(payload) != 4:
            raise _Failure(FRAME_SIZE_ERROR)
        if not _U32.unpack(payload)[0] & 0x7FFFFFFF:
            raise _Failure(PROTOCOL_ERROR)
        if sid > self._last_sid:
            raise _Failure(PROTOCOL_ERROR)  # idle stream
        return False

    def _on_rst_stream(self, flags: int, sid: int, payload: bytes) -> bool:
        if len(payload) != 4:
            raise _Failure(FRAME_SIZE_ERROR)
        if not sid or sid > self._last_sid:
            raise _Failure(PROTOCOL_ERROR)
        self._open.pop(sid, None)
        self._echo.pop(sid, None)
        return False

    def _on_priority(self, flags: int, sid: int, payload: bytes) -> bool:
        # Ignored, as APNs does (apns.md §1), once the frame is well formed.
        if not sid:
            raise _Failure(PROTOCOL_ERROR)
        if len(payload) != 5:
            raise _Failure(FRAME_SIZE_ERROR)
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            raise _Failure(PROTOCOL_ERROR)
        return False

    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> bool:
        if sid:
            raise _Failure(PROTOCOL_ERROR)
        if len(payload) < 8:
            raise _Failure(FRAME_SIZE_ERROR)
        # Every request completed so far is already answered in this batch; close politely.
        self._goaway(NO_ERROR)
        return True

    def _on_forbidden(self, flags: int, sid: int, payload: bytes) -> bool:
        raise _Failure(PROTOCOL_ERROR)  # PUSH_PROMISE from a client, or a stray CONTINUATION


_CONTROL_HANDLERS: Final = {
    SETTINGS: FastSinkProtocol._on_settings,
    PING: FastSinkProtocol._on_ping,
    WINDOW_UPDATE: FastSinkProtocol._on_window_update,
    RST_STREAM: FastSinkProtocol._on_rst_stream,
    PRIORITY: FastSinkProtocol._on_priority,
    GOAWAY: FastSinkProtocol._on_goaway,
    PUSH_PROMISE: FastSinkProtocol._on_forbidden,
    CONTINUATION: FastSinkProtocol._on_forbidden,
    HEADERS: FastSinkProtocol._on_forbidden,
    DATA: FastSinkProtocol._on_forbidden,
}
"""Frame type -> handler. HEADERS and DATA only get here inside a CONTINUATION sequence, which
`_control` rejects before the lookup; they are listed so the table covers every known type."""


def _headers_fragment(
    buf: bytearray, start: int, length: int, flags: int, sid: int
) -> tuple[int, int]:
    """Bounds of the header block fragment of a padded or prioritised HEADERS frame, after
    checking its pad length and priority fields (RFC 9113 §6.2)."""
    overhead = pad = 0
    if flags & FLAG_PADDED:
        if length < 1:
            raise _Failure(FRAME_SIZE_ERROR)
        pad = buf[start]
        overhead = 1 + pad
    if flags & FLAG_PRIORITY:
        dep_at = start + (1 if flags & FLAG_PADDED else 0)
        overhead += 5
        if length < overhead:
            raise _Failure(FRAME_SIZE_ERROR)
        if _U32.unpack_from(buf, dep_at)[0] & 0x7FFFFFFF == sid:
            raise _Failure(PROTOCOL_ERROR)  # a stream cannot depend on itself
    if overhead > length:
        raise _Failure(PROTOCOL_ERROR)
    lead = overhead - pad
    return start + lead, start + length - pad


def _check_setting(ident: int, value: int) -> None:
    """Reject the setting values RFC 9113 §6.5.2 forbids; the rest are ignored."""
    if ident == SETTINGS_ENABLE_PUSH and value > 1:
        raise _Failure(PROTOCOL_ERROR)
    if ident == SETTINGS_INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
        raise _Failure(FLOW_CONTROL_ERROR)
    if ident == SETTINGS_MAX_FRAME_SIZE and not MAX_FRAME_SIZE <= value <= 2**24 - 1:
        raise _Failure(PROTOCOL_ERROR)
