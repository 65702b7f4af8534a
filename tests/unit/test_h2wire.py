"""The HTTP/2 wire pieces (`engine.apns.h2wire`) against RFC 9113, RFC 7541 and hpack itself.

Frame heads, HPACK integers and strings, and the header-block reader the engine's answer fast
path and the simulator sink's `apns-id` lookup share: what it decodes must be what hpack decodes,
and every block it cannot read alone must come back as None, so the caller hands it to hpack.
"""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, HeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.apns.h2compat import dynamic_table, hpack_reference_int
from engine.apns.h2wire import (
    NeedsDecoder,
    frame,
    hpack_int,
    hpack_string,
    indices_named,
    pack_frame_head,
    read_header_block,
    read_hpack_int,
    read_hpack_string,
    unpack_frame_head,
)
from tests.helpers.hpackgen import APNS_ID, FieldSpec, header_fields, header_names, huffman

# --------------------------------------------------------------------------------------------
# Frames


@given(
    st.integers(0, 2**24 - 1), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**32 - 1)
)
def test_frame_heads_round_trip(length: int, ftype: int, flags: int, stream_id: int) -> None:
    head = pack_frame_head(length, ftype, flags, stream_id)
    assert len(head) == 9 and head[:3] == length.to_bytes(3, "big")
    assert unpack_frame_head(b"x" + head, 1) == (length, ftype, flags, stream_id & 0x7FFFFFFF)
    assert (
        frame(ftype, flags, stream_id, b"ab") == pack_frame_head(2, ftype, flags, stream_id) + b"ab"
    )


# --------------------------------------------------------------------------------------------
# HPACK integers and strings (RFC 7541 §5)


@pytest.mark.parametrize(
    ("value", "prefix_bits", "encoded"),
    [
        (10, 5, b"\x0a"),  # RFC 7541 C.1.1
        (1337, 5, b"\x1f\x9a\x0a"),  # C.1.2
        (42, 8, b"\x2a"),  # C.1.3
    ],
)
def test_hpack_integers_are_rfc_7541s(value: int, prefix_bits: int, encoded: bytes) -> None:
    assert hpack_int(value, prefix_bits) == encoded
    assert read_hpack_int(b"\xe0" + encoded, 1, prefix_bits) == (value, 1 + len(encoded))


def test_an_integer_beyond_the_quick_read_needs_the_decoder() -> None:
    with pytest.raises(NeedsDecoder):
        read_hpack_int(b"\x1f\xff\xff\xff\x01", 0, 5)  # four continuation bytes: 2**21 and up


@given(st.integers(0, 2**21 - 1), st.integers(1, 8))
def test_hpack_integers_are_hpacks(value: int, prefix: int) -> None:
    ours = hpack_int(value, prefix)
    assert ours == hpack_reference_int(value, prefix)
    assert read_hpack_int(ours + b"rest", 0, prefix) == (value, len(ours))


@given(st.binary(max_size=300), st.booleans())
def test_hpack_strings_read_back(raw_value: bytes, coded: bool) -> None:
    literal = (
        bytes([0x80 | len(code)]) + code
        if coded and len(code := huffman(raw_value)) < 127
        else hpack_string(raw_value)
    )
    assert read_hpack_string(b"@" + literal + b"tail", 1) == (raw_value, 1 + len(literal))
    with pytest.raises(NeedsDecoder):
        read_hpack_string(literal, 0, len(literal) - 1)  # past the end given


# --------------------------------------------------------------------------------------------
# Header blocks


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # indexed field 0 (RFC 7541 §6.1)
        b"\xbe",  # indexed field 62, and the dynamic table is empty
        b"\x0f\x40",  # literal whose name index, 79, is beyond the table (§6.2.2)
        b"\x40\x01a\x01b",  # incremental indexing (§6.2.1): the table would change
        b"\x3f\xe1\x1f",  # a dynamic table size update (§6.3)
        b"\x00\x01a",  # a literal cut short before its value
    ],
)
def test_the_reader_leaves_what_it_cannot_read_alone_to_the_decoder(block: bytes) -> None:
    assert read_header_block(b"\x88" + block, ()) is None  # after a good field too


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(header_fields, st.booleans()), min_size=1, max_size=4), header_names)
def test_the_readers_only_mode_picks_what_the_full_read_holds(
    blocks: list[tuple[list[FieldSpec], bool]], name: bytes
) -> None:
    # The sink's apns-id lookup and the engine's answer decoding share one reader.
    encoder, decoder = Encoder(), Decoder()
    table = dynamic_table(decoder)
    for fields, coded in blocks:
        block = encoder.encode([HeaderTuple(n, v) for n, v, _ in fields], huffman=coded)
        full = read_header_block(block, table)
        only = read_header_block(block, table, only=name)
        at = read_header_block(block, table, only=name, only_at=indices_named(name, table))
        if full is None:
            assert only is None and at is None
        else:
            assert only == at == [f for f in full if f[0] == name]
        decoder.decode(block, raw=True)  # keep the table in step, as the callers do


def test_the_readers_only_mode_steps_over_other_values_by_length() -> None:
    # Other fields' values are skipped, not decoded: long ones (a multi-byte length, RFC 7541
    # §5.1), Huffman-coded ones, and an invalid Huffman code, which only the full read notices.
    wanted = b"\x00" + hpack_string(b"apns-id") + hpack_string(APNS_ID)
    coded = huffman(b"application/json")
    block = b"".join(
        [
            b"\x00" + hpack_string(b"x-long") + hpack_string(b"v" * 300),
            b"\x0f\x10" + bytes([0x80 | len(coded)]) + coded,  # content-type, static index 31
            b"\x1f\x10\x84\xff\xff\xff\xff",  # never indexed, content-type: EOS codes, invalid
            wanted,
        ]
    )
    assert read_header_block(block, (), only=b"apns-id") == [(b"apns-id", APNS_ID)]
    assert read_header_block(block, ()) is None


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00\x03x-a\x05ab",  # a short value
        b"\x0f\x10\x85ab",  # a Huffman-coded value
        b"\x00\x03x-a\x7f\x05" + b"v" * 20,  # a long value
    ],
)
def test_the_readers_only_mode_refuses_a_skipped_value_past_the_end(tail: bytes) -> None:
    block = b"\x00" + hpack_string(b"apns-id") + hpack_string(APNS_ID) + tail
    assert read_header_block(block, (), only=b"apns-id") is None
    assert read_header_block(block + b"v" * 200, (), only=b"apns-id", end=len(block)) is None


def test_the_reader_takes_long_indices_and_lengths() -> None:
    encoder, decoder = Encoder(), Decoder()
    for n in range(80):  # dynamic indices beyond 127 need a second byte
        decoder.decode(encoder.encode([(b"x-%d" % n, b"v")], huffman=False))
    long_value = b"z" * 300
    block = (
        hpack_int(62 + 70, 7, 0x80) + b"\x00" + hpack_string(b"x-long") + hpack_string(long_value)
    )
    assert read_header_block(block, dynamic_table(decoder)) == [
        (b"x-9", b"v"),
        (b"x-long", long_value),
    ]
    assert [tuple(h) for h in decoder.decode(block, raw=True)] == [
        (b"x-9", b"v"),
        (b"x-long", long_value),
    ]
    assert read_header_block(block[:-1], dynamic_table(decoder)) is None  # cut short
    assert read_header_block(b"\xff\xff\xff\xff\x7f", dynamic_table(decoder)) is None  # too long
