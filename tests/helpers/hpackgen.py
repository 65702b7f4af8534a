"""HPACK material shared by the wire and connection tests: Huffman coding and generated fields."""

from __future__ import annotations

from hypothesis import strategies as st

from engine.apns.h2compat import huffman_encode

__all__ = ["APNS_ID", "FieldSpec", "header_fields", "header_names", "huffman"]

APNS_ID = b"0BA3C3D4-1111-2222-3333-444455556666"
"""An `apns-id` as APNs makes them: an upper-case UUID (apns.md §1)."""

FieldSpec = tuple[bytes, bytes, str]
"""(name, value, "plain" or "never"): how a test asks hpack's encoder for one field."""


def huffman(raw: bytes) -> bytes:
    """`raw` Huffman coded (RFC 7541 §5.2, Appendix B), without the length prefix: hpack's own
    coder, through `h2compat.huffman_encode`."""
    return huffman_encode(raw)


header_names = st.sampled_from(
    [b":status", b"apns-id", b"retry-after", b"content-type", b"x-custom"]
)
"""Names an answer carries, and one it does not."""

header_values = st.binary(max_size=40) | st.sampled_from([b"200", b"410", APNS_ID])

header_fields: st.SearchStrategy[list[FieldSpec]] = st.lists(
    st.tuples(header_names, header_values, st.sampled_from(["plain", "never"])),
    min_size=1,
    max_size=5,
)
"""One header block's fields; "never" marks a never-indexed field (RFC 7541 §6.2.3)."""
