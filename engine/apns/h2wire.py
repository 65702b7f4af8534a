"""Hand-written HTTP/2 wire pieces: frames, the connection preface, HPACK integers and strings.

Shared by the three places that write or read HTTP/2 bytes without h2's frame objects: the
engine's request and answer fast paths (`engine.apns.h2conn`), the simulator's accept-all sink
(`simulator.fastsink`) and the sink's load generator (`bench.sink_probe`); the HTTP server tells
an h2c connection by its preface. APNs' own vocabulary (header names, paths, limits) is in
`engine.apns.wire`.

The header-block reader (`read_header_block`) decodes the blocks that leave the HPACK dynamic
table alone: indexed fields and literals without indexing or never indexed (RFC 7541 §6.1,
§6.2.2, §6.2.3), which is what an APNs answer, and most of a client's requests past the first,
consist of. It refers to the table without changing it and answers None, having changed nothing,
for every other block, which then goes whole to the connection's HPACK decoder: every table
change is made by that decoder, in order (RFC 7541 §2.3.2).

No trio, no clock, no state: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Sequence
from typing import Final, TypeAlias

from hpack import HPACKError

from engine.apns.h2compat import HPACK_STATIC_TABLE, huffman_decode

__all__ = [
    "CONTINUATION",
    "DATA",
    "DEFAULT_MAX_FRAME_SIZE",
    "FLAG_ACK",
    "FLAG_END_HEADERS",
    "FLAG_END_STREAM",
    "FLAG_PADDED",
    "FLAG_PRIORITY",
    "FRAME_HEAD",
    "FRAME_HEAD_SIZE",
    "GOAWAY",
    "HEADERS",
    "INITIAL_WINDOW",
    "MAX_WINDOW",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "SHORT_STRING_LENGTHS",
    "STREAM_ID_MASK",
    "WINDOW_UPDATE",
    "NeedsDecoder",
    "frame",
    "hpack_int",
    "hpack_string",
    "indices_named",
    "pack_frame_head",
    "read_header_block",
    "read_hpack_int",
    "read_hpack_string",
    "unpack_frame_head",
]

_Header: TypeAlias = tuple[bytes, bytes]
_Buffer: TypeAlias = bytes | bytearray

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface (RFC 9113 §3.4); a SETTINGS frame must follow it."""

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

# Flags (RFC 9113 §6); ACK shares END_STREAM's bit, on SETTINGS and PING.
FLAG_END_STREAM: Final = 0x1
FLAG_ACK: Final = 0x1
FLAG_END_HEADERS: Final = 0x4
FLAG_PADDED: Final = 0x8
FLAG_PRIORITY: Final = 0x20

# Error codes (RFC 9113 §7), as RST_STREAM and GOAWAY carry them.
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings identifiers (RFC 9113 §6.5.2).
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5

SETTING: Final = struct.Struct(">HL")
"""One setting in a SETTINGS payload: identifier, value (RFC 9113 §6.5.1)."""

GOAWAY_HEAD: Final = struct.Struct(">LL")
"""The fixed part of a GOAWAY payload: last stream id, error code (RFC 9113 §6.8)."""

U32: Final = struct.Struct(">L")
"""A 32-bit field: a WINDOW_UPDATE increment, an RST_STREAM error code (RFC 9113 §6.9, §6.4)."""

STREAM_ID_MASK: Final = 0x7FFFFFFF
"""A stream id is 31 bits; the reserved bit above them is ignored on receipt (RFC 9113 §4.1)."""

DEFAULT_MAX_FRAME_SIZE: Final = 16384
"""SETTINGS_MAX_FRAME_SIZE until a peer raises it (RFC 9113 §6.5.2)."""

INITIAL_WINDOW: Final = 65535
"""Every flow-control window starts here; SETTINGS change the streams' only (RFC 9113 §6.9.2)."""

MAX_WINDOW: Final = 2**31 - 1
"""The largest flow-control window (RFC 9113 §6.9.1)."""

# --------------------------------------------------------------------------------------------
# Frames

FRAME_HEAD: Final = struct.Struct(">BHBBL")
"""A frame header (RFC 9113 §4.1), for hot loops: the 24-bit length as its high 8 and low 16
bits, type, flags, and the stream id with the reserved bit. `pack_frame_head` and
`unpack_frame_head` are the plain forms."""

FRAME_HEAD_SIZE: Final = 9


def pack_frame_head(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    """The nine bytes that precede a `length`-byte payload."""
    return FRAME_HEAD.pack(length >> 16, length & 0xFFFF, ftype, flags, stream_id)


def unpack_frame_head(data: _Buffer, pos: int = 0) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id without the reserved bit) of the header at `data[pos:]`."""
    high, low, ftype, flags, stream_id = FRAME_HEAD.unpack_from(data, pos)
    return (high << 16) | low, ftype, flags, stream_id & STREAM_ID_MASK


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One whole frame: header and payload."""
    n = len(payload)
    return FRAME_HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


# --------------------------------------------------------------------------------------------
# HPACK integers and strings (RFC 7541 §5)


class NeedsDecoder(ValueError):
    """Something only a full HPACK decoder may handle: a table change, an integer or index out
    of the quick read's range, a malformed or truncated representation."""


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """`value` as an HPACK integer with an N-bit prefix (§5.1); `first` holds the bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


SHORT_STRING_LENGTHS: Final = tuple(bytes((n,)) for n in range(127))
"""`SHORT_STRING_LENGTHS[n]` is a string length n < 127 without Huffman coding: one byte."""


def hpack_string(raw: bytes) -> bytes:
    """A string literal without Huffman coding (§5.2): length, then the bytes."""
    n = len(raw)
    return (SHORT_STRING_LENGTHS[n] if n < 127 else hpack_int(n, 7)) + raw


def _int_tail(block: _Buffer, i: int, value: int) -> tuple[int, int]:
    """Finish an integer whose prefix was full: (value, next index).

    Gives up past three continuation bytes (2**21, far beyond any index or length here), so the
    quick read never accepts an integer that hpack would refuse.
    """
    for shift in (0, 7, 14):
        byte = block[i]
        i += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
    raise NeedsDecoder("integer too long for the quick read")


def read_hpack_int(block: _Buffer, i: int, prefix_bits: int) -> tuple[int, int]:
    """The integer with an N-bit prefix at `block[i]` (§5.1): (value, next index).

    Raises `NeedsDecoder` from 2**21 on, and `IndexError` when the block ends inside it.
    """
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    if value < limit:
        return value, i + 1
    return _int_tail(block, i + 1, value)


def read_hpack_string(block: _Buffer, i: int, end: int | None = None) -> tuple[bytes, int]:
    """The string literal at `block[i]` (§5.2), Huffman decoded if so coded: (bytes, next index).

    Raises `NeedsDecoder` when it runs past `end` (default: the block's end) or its Huffman code
    is invalid.
    """
    stop = len(block) if end is None else end
    first = block[i]
    length = first & 0x7F
    if length < 0x7F:
        i += 1
    else:
        length, i = _int_tail(block, i + 1, length)
    j = i + length
    if j > stop:
        raise NeedsDecoder("truncated string")
    raw = bytes(block[i:j])
    if first & 0x80:
        try:
            raw = huffman_decode(raw)
        except HPACKError as exc:
            raise NeedsDecoder("invalid Huffman code") from exc
    return raw, j


def _skip_string(block: _Buffer, i: int) -> int:
    """The index after the string literal at `block[i]`, not decoded."""
    length = block[i] & 0x7F
    if length < 0x7F:
        return i + 1 + length
    length, i = _int_tail(block, i + 1, length)
    return i + length


# --------------------------------------------------------------------------------------------
# Header blocks

_STATIC: Final = HPACK_STATIC_TABLE  # indices 1..61; the dynamic table starts at 62 (§2.3.3)


_EVERY_INDEX: Final = range(1, 1 << 32)  # `in` and truth are C-level tests, as for a set


def indices_named(name: bytes, dynamic: Sequence[_Header]) -> frozenset[int]:
    """The HPACK indices (static and dynamic) whose entry is named `name`."""
    return frozenset(k + 1 for k, (n, _) in enumerate((*_STATIC, *dynamic)) if n == name)


def read_header_block(
    block: _Buffer,
    dynamic: Sequence[_Header],
    start: int = 0,
    end: int | None = None,
    *,
    only: bytes | None = None,
    only_at: frozenset[int] | None = None,
    max_size: int | None = None,
) -> list[_Header] | None:
    """The fields of the header block `block[start:end]`, if it leaves the dynamic table alone.

    `dynamic` is the decoder's dynamic table, newest entry first (HPACK index 62). Indexed fields
    and literals without indexing or never indexed are decoded against it. For any other
    representation (incremental indexing, a table size update), an invalid index, a malformed or
    truncated field, the answer is None (no exception: that is the usual case on a connection
    whose peer indexes a per-message value), and the caller hands the whole block to its HPACK
    decoder, which changes the table or reports the error.

    With `only`, the result holds just the fields named `only`, and other values are skipped by
    length, not decoded (a broken Huffman string in one goes unnoticed). `only_at` saves a table
    lookup per indexed field: `indices_named(only, dynamic)`, which a caller that knows when its
    table changes may keep (by default it is computed per call).

    With `max_size`, a block whose fields add up to more than that (RFC 7541 §4.1 sizes: 32
    octets plus name and value each, as hpack counts against SETTINGS_MAX_HEADER_LIST_SIZE) is
    None too, so that the decoder reports it. Only the fields returned are counted: give it
    without `only`.
    """
    stop = len(block) if end is None else end
    static = _STATIC
    last = 61 + len(dynamic)  # the highest valid index: 61 static entries (RFC 7541 §2.3.3)
    want: Container[int] = _EVERY_INDEX
    if only is not None:
        want = indices_named(only, dynamic) if only_at is None else only_at
    fields: list[_Header] = []
    size = 0
    i = start
    try:
        while i < stop:
            byte = block[i]
            if byte > 0x80:  # indexed field (§6.1); 0x80, index 0, is invalid
                if byte != 0xFF:
                    index = byte - 0x80
                    i += 1
                else:
                    index, i = _int_tail(block, i + 1, 0x7F)
                if index > last:
                    return None  # an invalid index
                if want and index in want:
                    entry = static[index - 1] if index <= 61 else dynamic[index - 62]
                    fields.append(entry)
                    size += 32 + len(entry[0]) + len(entry[1])
                continue
            if byte >= 0x20 or byte == 0x80:
                return None  # incremental indexing (§6.2.1), a table size update (§6.3), index 0
            # A literal without indexing or never indexed (§6.2.2, §6.2.3): 4-bit name index.
            index = byte & 0x0F
            if index < 0x0F:
                i += 1
            else:
                index, i = _int_tail(block, i + 1, 0x0F)
            if index > last:
                return None  # an invalid index
            if not index:  # a new name
                name, i = read_hpack_string(block, i, stop)
                wanted = only is None or name == only
            elif want and index in want:
                name = static[index - 1][0] if index <= 61 else dynamic[index - 62][0]
                wanted = True
            else:
                wanted = False
            if wanted:
                value, i = read_hpack_string(block, i, stop)
                fields.append((name, value))
                size += 32 + len(name) + len(value)
            elif block[i] < 0x7F:  # a short value without Huffman coding, skipped
                i += 1 + block[i]
            else:
                i = _skip_string(block, i)
    except (IndexError, NeedsDecoder):  # a field cut short, or beyond the quick read
        return None
    if i != stop or (max_size is not None and size > max_size):
        return None  # the last field ran past the end, or the list is over the limit
    return fields
