"""Accept-all HTTP/2 sink: the byte-level core of the simulator's benchmark mode.

The benchmark mode exists to measure the engine's ceiling, so the server side must cost far less
than the client under test. This sans-IO class therefore parses HTTP/2 frames itself instead of
running h2's state machine: it never HPACK-decodes a request, validates nothing about APNs, and
answers every complete request with one pre-built HEADERS frame (`:status 200` plus `apns-id`,
apns.md §1). Only the stream id differs between responses.

What it still does, because a client must be able to rely on it (RFC 9113):
- checks the client preface and that the first frame is SETTINGS;
- ACKs SETTINGS, answers PING, keeps the client's DATA windows open with batched WINDOW_UPDATEs;
- follows stream ids (odd, increasing), CONTINUATION sequences and padding lengths;
- turns every malformed input into GOAWAY and `closed`; nothing is raised from `receive_data`.

Any stream error is treated as a connection error, which RFC 9113 §5.4.1 permits.

HPACK is safe to skip: the responses never touch the dynamic table, the client's encoder state
only matters to a decoder we do not run, and we never advertise SETTINGS_HEADER_TABLE_SIZE. When
the client changes *its* HEADER_TABLE_SIZE, the next response starts with a dynamic table size
update to 0, which strict decoders (nghttp2) expect after such a change (RFC 7541 §4.2).
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

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


def response_block(apns_id: str) -> bytes:
    """HPACK block of the accept-all answer: `:status 200` and `apns-id` (apns.md §1).

    `:status 200` is static index 8 (one byte, 0x88); `apns-id` is a literal header field without
    indexing with a new name, so the client's dynamic table is never touched.
    """
    return b"\x88\x00" + hpack_string(b"apns-id") + hpack_string(apns_id.encode("ascii"))


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
        if not 1 <= window_size <= MAX_WINDOW:
            raise ValueError("window_size must be within 1 .. 2**31-1")
        if max_concurrent_streams < 0:
            raise ValueError("max_concurrent_streams must not be negative")
        # APNs hands back uppercase ids when it generates them (apns.md §1, observed).
        self.apns_id = apns_id if apns_id is not None else str(uuid.uuid4()).upper()
        block = response_block(self.apns_id)
        self._response = struct.Struct(f">5sL{len(block)}s")
        self._response_head = frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 0, block)[:5]
        self._response_block = block
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
        self._conn_unacked = 0
        self._cont_sid = 0  # stream whose header block awaits CONTINUATION, 0 if none
        self._cont_end_stream = False
        self._cont_new = False
        self._cont_size = 0
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
        in `finally`); the rare frames go to `_control`.
        """
        end = len(buf)
        unpack = _FRAME_HEADER.unpack_from
        pack_response = self._response.pack
        head = self._response_head
        block = self._response_block
        out = self._out
        open_ = self._open
        threshold = self._threshold
        last_sid = self._last_sid
        table_update = self._table_update
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
                    if flags & (FLAG_PADDED | FLAG_PRIORITY):
                        _check_headers_prefix(buf, start, length, flags, sid)
                    if sid > last_sid:
                        last_sid = sid
                        new = True
                    elif sid in open_ and flags & FLAG_END_STREAM:
                        new = False  # trailers, which must end the stream (RFC 9113 §8.1)
                    else:
                        raise _Failure(STREAM_CLOSED if sid not in open_ else PROTOCOL_ERROR)
                    if not flags & FLAG_END_HEADERS:
                        self._begin_continuation(sid, flags, length, new)
                    elif flags & FLAG_END_STREAM:
                        if not new:
                            del open_[sid]
                        if table_update:
                            table_update = self._respond_with_table_update(sid)
                        else:
                            out += pack_response(head, sid, block)
                        answered += 1
                    elif len(open_) >= self._max_streams:
                        raise _Failure(PROTOCOL_ERROR)  # RFC 9113 §5.1.2
                    else:
                        open_[sid] = 0
                elif ftype == DATA and not self._cont_sid:
                    consumed += length  # padding counts too (RFC 9113 §6.9.1)
                    if flags & FLAG_PADDED and (length == 0 or buf[start] >= length):
                        raise _Failure(PROTOCOL_ERROR)
                    unacked = open_.get(sid)
                    if unacked is None:
                        raise _Failure(STREAM_CLOSED if 0 < sid <= last_sid else PROTOCOL_ERROR)
                    if flags & FLAG_END_STREAM:
                        del open_[sid]
                        if table_update:
                            table_update = self._respond_with_table_update(sid)
                        else:
                            out += pack_response(head, sid, block)
                        answered += 1
                    else:
                        unacked += length
                        if unacked >= threshold:
                            out += frame(WINDOW_UPDATE, 0, sid, _U32.pack(unacked))
                            unacked = 0
                        open_[sid] = unacked
                else:
                    self._last_sid = last_sid
                    self._table_update = table_update
                    if self._control(ftype, flags, sid, bytes(buf[start:pos])):
                        break
                    table_update = self._table_update
            return pos
        finally:
            self._last_sid = last_sid
            self._table_update = table_update
            self.requests += answered
            self._conn_unacked += consumed

    def _respond(self, sid: int) -> None:
        """Slow-path answer (after CONTINUATION): same bytes as the inline path."""
        if self._table_update:
            self._table_update = self._respond_with_table_update(sid)
        else:
            self._out += self._response.pack(self._response_head, sid, self._response_block)
        self.requests += 1

    def _respond_with_table_update(self, sid: int) -> bool:
        """Answer with a leading dynamic table size update to 0; returns the new (cleared) flag."""
        self._out += frame(
            HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, sid, b"\x20" + self._response_block
        )
        return False

    def _begin_continuation(self, sid: int, flags: int, length: int, new: bool) -> None:
        self._cont_sid = sid
        self._cont_end_stream = bool(flags & FLAG_END_STREAM)
        self._cont_new = new
        self._cont_size = length

    def _end_header_block(self) -> None:
        sid, new = self._cont_sid, self._cont_new
        self._cont_sid = 0
        if self._cont_end_stream:
            if not new:
                del self._open[sid]
            self._respond(sid)
        elif len(self._open) >= self._max_streams:
            raise _Failure(PROTOCOL_ERROR)
        else:
            self._open[sid] = 0

    def _control(self, ftype: int, flags: int, sid: int, payload: bytes) -> bool:
        """Handle every frame but a plain HEADERS or DATA; True means stop reading (GOAWAY)."""
        if self._cont_sid:
            if ftype != CONTINUATION or sid != self._cont_sid:
                raise _Failure(PROTOCOL_ERROR)  # RFC 9113 §6.10
            self._cont_size += len(payload)
            if self._cont_size > MAX_HEADER_BLOCK:
                raise _Failure(ENHANCE_YOUR_CALM)
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


def _check_headers_prefix(buf: bytearray, start: int, length: int, flags: int, sid: int) -> None:
    """Validate the optional pad length and priority fields of a HEADERS frame (RFC 9113 §6.2)."""
    overhead = 0
    if flags & FLAG_PADDED:
        if length < 1:
            raise _Failure(FRAME_SIZE_ERROR)
        overhead = 1 + buf[start]
    if flags & FLAG_PRIORITY:
        dep_at = start + (1 if flags & FLAG_PADDED else 0)
        overhead += 5
        if length < overhead:
            raise _Failure(FRAME_SIZE_ERROR)
        if _U32.unpack_from(buf, dep_at)[0] & 0x7FFFFFFF == sid:
            raise _Failure(PROTOCOL_ERROR)  # a stream cannot depend on itself
    if overhead > length:
        raise _Failure(PROTOCOL_ERROR)


def _check_setting(ident: int, value: int) -> None:
    """Reject the setting values RFC 9113 §6.5.2 forbids; the rest are ignored."""
    if ident == SETTINGS_ENABLE_PUSH and value > 1:
        raise _Failure(PROTOCOL_ERROR)
    if ident == SETTINGS_INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
        raise _Failure(FLOW_CONTROL_ERROR)
    if ident == SETTINGS_MAX_FRAME_SIZE and not MAX_FRAME_SIZE <= value <= 2**24 - 1:
        raise _Failure(PROTOCOL_ERROR)
