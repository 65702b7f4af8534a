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

Frames are dispatched by type to one handler each, through a table that is swapped while a header
block awaits its CONTINUATION frames (RFC 9113 §6.10: nothing else may come in between). The
frame and HPACK bytes come from `engine.apns.h2wire`, shared with the engine's fast paths.

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
from collections.abc import Callable
from typing import Final, TypeAlias

import hpack

from engine.apns.h2compat import dynamic_table
from engine.apns.h2wire import (
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME_SIZE,
    ENHANCE_YOUR_CALM,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    FLOW_CONTROL_ERROR,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    FRAME_SIZE_ERROR,
    GOAWAY,
    GOAWAY_HEAD,
    HEADERS,
    INITIAL_WINDOW,
    INTERNAL_ERROR,
    MAX_WINDOW,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    STREAM_CLOSED,
    STREAM_ID_MASK,
    U32,
    WINDOW_UPDATE,
    frame,
    hpack_string,
    indices_named,
    read_header_block,
)

MAX_FRAME_SIZE: Final = DEFAULT_MAX_FRAME_SIZE
"""We never raise SETTINGS_MAX_FRAME_SIZE, so the default bounds every frame we accept."""

DEFAULT_WINDOW: Final = 1 << 24
"""16 MiB per stream and per connection: ~50k Live-Activity bodies in flight, far past any need."""

MAX_HEADER_BLOCK: Final = 65536
"""A header block spread over CONTINUATIONs beyond this is refused (CONTINUATION flood guard)."""

MAX_ECHOED_ID: Final = 256
"""Longest request `apns-id` echoed back. A UUID is 36 bytes; APNs refuses anything else with
400 BadMessageId (apns.md §1), which the sink does not judge, but a longer value gets a generated
id instead so that every answer stays one small frame."""


class _Failure(Exception):
    """Internal: the connection must end with GOAWAY carrying `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


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


class ApnsIdReader:
    """Finds the `apns-id` of each request header block of one connection, blocks fed in order.

    The client's HPACK encoder refers to a dynamic table built from every block it sent before,
    so a decoder must follow all of them in order (RFC 7541 §2.3.2). `hpack.Decoder` owns that
    table here. Most blocks of an APNs client never change it: past the first request they are
    indexed fields and literals *without* indexing (the HPACK policy of apns.md §1). Such a block
    is read directly against the decoder's table (`engine.apns.h2wire.read_header_block`), which
    costs about a microsecond instead of the decoder's ~15; since it neither adds nor evicts an
    entry, the table ends exactly as decoding would leave it. Every other block (an insertion, a
    size update, anything malformed) goes to `hpack.Decoder.decode` whole, so every table change
    is made by the decoder, in order.

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
        self._dynamic = dynamic_table(self.decoder)
        # Table indices named apns-id; None once a decode may have moved them, recomputed by the
        # next quick read only (a client whose every block changes the table never pays for it).
        self._id_at: frozenset[int] | None = None

    def read(
        self, block: bytes | bytearray, start: int = 0, end: int | None = None
    ) -> bytes | None:
        """The first `apns-id` value in `block[start:end]`, or None.

        Raises `hpack.HPACKError` when the block does not decode (a COMPRESSION_ERROR).
        """
        stop = len(block) if end is None else end
        at = self._id_at
        if at is None:
            at = self._id_at = indices_named(_ID_NAME, self._dynamic)
        fields = read_header_block(block, self._dynamic, start, stop, only=_ID_NAME, only_at=at)
        if fields is None:
            return self._decode(bytes(block[start:stop]))
        return fields[0][1] if fields else None  # the first apns-id

    def _decode(self, block: bytes) -> bytes | None:
        self.decoded += 1
        self._id_at = None
        headers = self.decoder.decode(block, raw=True)
        return next((bytes(v) for n, v in headers if n == _ID_NAME), None)


_Handler: TypeAlias = Callable[["FastSinkProtocol", int, int, bytearray, int, int], bool]
"""A frame handler: (sink, flags, stream id, buffer, payload start, payload end) -> stop reading."""


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
        self._handlers = _HANDLERS  # _IN_HEADER_BLOCK while CONTINUATION frames are due
        self._last_sid = 0
        self._open: dict[int, int] = {}  # stream id -> DATA bytes not yet credited back
        self._echo: dict[int, bytes] = {}  # open stream id -> the apns-id its request carried
        self._conn_unacked = 0
        self._cont_sid = 0  # stream whose header block awaits CONTINUATION, 0 if none
        self._cont_end_stream = False
        self._cont_new = False
        self._cont_block = bytearray()
        self._table_update = False
        self._send_preface()

    def _send_preface(self) -> None:
        settings = SETTING.pack(SETTINGS_MAX_CONCURRENT_STREAMS, self._max_streams) + SETTING.pack(
            SETTINGS_INITIAL_WINDOW_SIZE, self._window
        )
        self._out += frame(SETTINGS, 0, 0, settings)
        # The connection window starts at 65535 whatever SETTINGS say (RFC 9113 §6.9.2).
        if self._window > INITIAL_WINDOW:
            self._out += frame(WINDOW_UPDATE, 0, 0, U32.pack(self._window - INITIAL_WINDOW))

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
                self._out += frame(WINDOW_UPDATE, 0, 0, U32.pack(self._conn_unacked))
                self._conn_unacked = 0
        except _Failure as failure:
            self._fail(failure.code)
        except hpack.HPACKError:
            self._fail(COMPRESSION_ERROR)  # the decoder's state is lost (RFC 9113 §4.3)
        except Exception:  # noqa: BLE001 - a bug must not take the sink down; tests assert none
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
            self._out += frame(GOAWAY, 0, 0, GOAWAY_HEAD.pack(self._last_sid, code))
            self.closed = True
            self.error_code = code

    def _parse(self, buf: bytearray, pos: int) -> int:
        """Handle every complete frame in `buf` from `pos`; return where the next frame starts.

        Each frame goes to the handler its type has in the current table; a handler that
        returns True (a GOAWAY) stops the reading.
        """
        end = len(buf)
        if self._settings_pending and end - pos >= FRAME_HEAD_SIZE:
            if buf[pos + 3] != SETTINGS or buf[pos + 4] & FLAG_ACK:
                raise _Failure(PROTOCOL_ERROR)  # the preface ends with SETTINGS, RFC 9113 §3.4
            self._settings_pending = False
        unpack, head_size, max_size = FRAME_HEAD.unpack_from, FRAME_HEAD_SIZE, MAX_FRAME_SIZE
        while end - pos >= head_size:
            hi, lo, ftype, flags, sid = unpack(buf, pos)
            length = (hi << 16) | lo
            if length > max_size:
                raise _Failure(FRAME_SIZE_ERROR)
            start = pos + head_size
            if start + length > end:
                break
            pos = start + length
            if self._handlers[ftype](self, flags, sid & STREAM_ID_MASK, buf, start, pos):
                break
        return pos

    # -- requests ----------------------------------------------------------------------------

    def _on_headers(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        if not sid & 1:
            raise _Failure(PROTOCOL_ERROR)  # client streams are odd, never 0
        if flags & (FLAG_PADDED | FLAG_PRIORITY):
            start, end = _headers_fragment(buf, start, end - start, flags, sid)
        if sid > self._last_sid:
            self._last_sid = sid
            new = True
        elif sid in self._open and flags & FLAG_END_STREAM:
            new = False  # trailers, which must end the stream (RFC 9113 §8.1)
        else:
            raise _Failure(STREAM_CLOSED if sid not in self._open else PROTOCOL_ERROR)
        if not flags & FLAG_END_HEADERS:
            self._cont_sid = sid
            self._cont_end_stream = bool(flags & FLAG_END_STREAM)
            self._cont_new = new
            self._cont_block[:] = buf[start:end]
            self._handlers = _IN_HEADER_BLOCK
            return False
        # Every block is read, trailers too: the decoder must see them all in order.
        rid = self.ids.read(buf, start, end)
        if new and not flags & FLAG_END_STREAM and len(self._open) < self._max_streams:
            self._open[sid] = 0  # the usual request: its body follows
            if rid is not None:
                self._echo[sid] = rid
            return False
        self._header_block(sid, new, flags & FLAG_END_STREAM, rid)
        return False

    def _on_continuation(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        if sid != self._cont_sid:
            raise _Failure(PROTOCOL_ERROR)  # RFC 9113 §6.10
        block = self._cont_block
        block += buf[start:end]
        if len(block) > MAX_HEADER_BLOCK:
            raise _Failure(ENHANCE_YOUR_CALM)
        if flags & FLAG_END_HEADERS:
            self._handlers = _HANDLERS
            self._cont_sid = 0
            rid = self.ids.read(block)
            block.clear()
            self._header_block(sid, self._cont_new, self._cont_end_stream, rid)
        return False

    def _header_block(self, sid: int, new: bool, end_stream: int | bool, rid: bytes | None) -> None:
        """A whole header block on `sid` (a request's headers, or its trailers) was read."""
        if not new:
            del self._open[sid]
            self._answer(sid, self._echo.pop(sid, None))
        elif end_stream:
            self._answer(sid, rid)
        elif len(self._open) >= self._max_streams:
            raise _Failure(PROTOCOL_ERROR)  # RFC 9113 §5.1.2
        else:
            self._open[sid] = 0
            if rid is not None:
                self._echo[sid] = rid

    def _on_data(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        length = end - start
        self._conn_unacked += length  # padding counts too (RFC 9113 §6.9.1)
        if flags & FLAG_PADDED and (length == 0 or buf[start] >= length):
            raise _Failure(PROTOCOL_ERROR)
        open_ = self._open
        unacked = open_.get(sid)
        if unacked is None:
            raise _Failure(STREAM_CLOSED if 0 < sid <= self._last_sid else PROTOCOL_ERROR)
        if not flags & FLAG_END_STREAM:
            unacked += length
            if unacked >= self._threshold:
                self._out += frame(WINDOW_UPDATE, 0, sid, U32.pack(unacked))
                unacked = 0
            open_[sid] = unacked
            return False
        del open_[sid]
        if self._echo or self._table_update or self._fixed_block is not None:
            self._answer(sid, self._echo.pop(sid, None))
        else:  # the usual answer, as `_answer` would build it, with one call less per request
            generated = self._id_head + b"%012X" % next(self._id_counter)  # `_new_id()`
            self._out += _UUID_ANSWER.pack(_UUID_HEAD, sid, _UUID_LEAD, generated)
            self.requests += 1
        return False

    # -- answers -----------------------------------------------------------------------------

    def _answer(self, sid: int, apns_id: bytes | None) -> None:
        """Queue the `200` for stream `sid`, echoing `apns_id` or naming a generated one.

        A 36-byte id (a UUID) with no table size update due is one struct pack.
        """
        if apns_id is None:
            if self._fixed_block is not None:
                self._queue_answer(sid, self._fixed_block)
                return
            apns_id = self._new_id()
        elif len(apns_id) > MAX_ECHOED_ID:
            apns_id = self._new_id()
        if len(apns_id) == 36 and not self._table_update:
            self._out += _UUID_ANSWER.pack(_UUID_HEAD, sid, _UUID_LEAD, apns_id)
            self.requests += 1
        else:
            self._queue_answer(sid, response_block(apns_id))

    def _new_id(self) -> bytes:
        """A fresh uppercase UUID-shaped id (apns.md §1): the connection's head, then a counter."""
        return self._id_head + b"%012X" % next(self._id_counter)

    def _queue_answer(self, sid: int, block: bytes) -> None:
        """Queue a HEADERS answer, led by a table size update to 0 when one is due."""
        if self._table_update:
            self._table_update = False
            block = b"\x20" + block
        self._out += frame(HEADERS, _ANSWER_FLAGS, sid, block)
        self.requests += 1

    # -- everything else ---------------------------------------------------------------------

    def _on_settings(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        if sid:
            raise _Failure(PROTOCOL_ERROR)
        if flags & FLAG_ACK:
            if end > start:
                raise _Failure(FRAME_SIZE_ERROR)
            return False
        if (end - start) % 6:
            raise _Failure(FRAME_SIZE_ERROR)
        for ident, value in SETTING.iter_unpack(buf[start:end]):
            _check_setting(ident, value)
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True
        self._out += frame(SETTINGS, FLAG_ACK, 0)
        return False

    def _on_ping(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        if sid:
            raise _Failure(PROTOCOL_ERROR)
        if end - start != 8:
            raise _Failure(FRAME_SIZE_ERROR)
        if not flags & FLAG_ACK:
            self._out += frame(PING, FLAG_ACK, 0, bytes(buf[start:end]))
        return False

    def _on_window_update(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        # Our responses are HEADERS only, never flow-controlled: the increment is not needed.
        if end - start != 4:
            raise _Failure(FRAME_SIZE_ERROR)
        if not U32.unpack_from(buf, start)[0] & 0x7FFFFFFF:
            raise _Failure(PROTOCOL_ERROR)
        if sid > self._last_sid:
            raise _Failure(PROTOCOL_ERROR)  # idle stream
        return False

    def _on_rst_stream(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        if end - start != 4:
            raise _Failure(FRAME_SIZE_ERROR)
        if not sid or sid > self._last_sid:
            raise _Failure(PROTOCOL_ERROR)
        self._open.pop(sid, None)
        self._echo.pop(sid, None)
        return False

    def _on_priority(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        # Ignored, as APNs does (apns.md §1), once the frame is well formed.
        if not sid:
            raise _Failure(PROTOCOL_ERROR)
        if end - start != 5:
            raise _Failure(FRAME_SIZE_ERROR)
        if U32.unpack_from(buf, start)[0] & 0x7FFFFFFF == sid:
            raise _Failure(PROTOCOL_ERROR)
        return False

    def _on_goaway(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        if sid:
            raise _Failure(PROTOCOL_ERROR)
        if end - start < 8:
            raise _Failure(FRAME_SIZE_ERROR)
        # Every request completed so far is already answered in this batch; close politely.
        self._goaway(NO_ERROR)
        return True

    def _on_forbidden(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        # PUSH_PROMISE from a client, a stray CONTINUATION, or any frame but CONTINUATION inside
        # a header block (RFC 9113 §6.10).
        raise _Failure(PROTOCOL_ERROR)

    def _on_unknown(self, flags: int, sid: int, buf: bytearray, start: int, end: int) -> bool:
        return False  # unknown frame types are ignored (RFC 9113 §5.5)


def _handler_table(known: dict[int, _Handler], default: _Handler) -> tuple[_Handler, ...]:
    """Frame type -> handler for every possible type byte, `default` for the rest."""
    return tuple(known.get(ftype, default) for ftype in range(256))


_HANDLERS: Final = _handler_table(
    {
        DATA: FastSinkProtocol._on_data,
        HEADERS: FastSinkProtocol._on_headers,
        PRIORITY: FastSinkProtocol._on_priority,
        RST_STREAM: FastSinkProtocol._on_rst_stream,
        SETTINGS: FastSinkProtocol._on_settings,
        PUSH_PROMISE: FastSinkProtocol._on_forbidden,
        PING: FastSinkProtocol._on_ping,
        GOAWAY: FastSinkProtocol._on_goaway,
        WINDOW_UPDATE: FastSinkProtocol._on_window_update,
        CONTINUATION: FastSinkProtocol._on_forbidden,
    },
    FastSinkProtocol._on_unknown,
)
"""Frame type -> handler, between header blocks, in the manner of h2's dispatch table."""

_IN_HEADER_BLOCK: Final = _handler_table(
    {CONTINUATION: FastSinkProtocol._on_continuation}, FastSinkProtocol._on_forbidden
)
"""Frame type -> handler while a header block awaits CONTINUATION: nothing else may come."""


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
        if U32.unpack_from(buf, dep_at)[0] & 0x7FFFFFFF == sid:
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
