"""Node-to-node HTTP/1.1 bytes (`engine.server.cluster.wire`): the request out, the answer in."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.server.cluster.wire import AnswerReader, BadAnswer, encode_request

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a":1}'


def test_a_request_head() -> None:
    head = encode_request("PUT", "/api/x?a=1", [(b"host", b"n:1"), (b"x-b", b" v ")])
    assert head == b"PUT /api/x?a=1 HTTP/1.1\r\nhost: n:1\r\nx-b: v\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("PUT", "/a b", []),
        ("PUT", "/a\r\nx: y", []),
        ("P UT", "/", []),
        ("PUT", "", []),
        ("PUT", "/", [(b"x", b"a\r\nevil: 1")]),
        ("PUT", "/", [(b"x", b"a\nb")]),
        ("PUT", "/", [(b"x", b"a\x00b")]),
        ("PUT", "/", [(b"x y", b"1")]),
        ("PUT", "/", [(b"x:", b"1")]),
        ("PUT", "/", [(b"", b"1")]),
    ],
)
def test_bytes_that_would_break_the_framing_never_go_out(
    method: str, target: str, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        encode_request(method, target, headers)


def test_an_answer_in_one_piece() -> None:
    reader = AnswerReader(1024)
    reader.feed(OK)
    assert (reader.complete, reader.reusable, reader.status) == (True, True, 200)
    assert reader.headers == [(b"content-type", b"application/json"), (b"content-length", b"7")]
    assert reader.body == b'{"a":1}' and reader.received == len(OK)


@given(st.lists(st.integers(min_value=1, max_value=len(OK) - 1), unique=True, max_size=8))
def test_an_answer_cut_anywhere_reads_the_same(cuts: list[int]) -> None:
    reader = AnswerReader(1024)
    edges = [0, *sorted(cuts), len(OK)]
    for begin, end in itertools.pairwise(edges):
        assert not reader.complete
        reader.feed(OK[begin:end])
    assert reader.complete and reader.body == b'{"a":1}' and reader.reusable


def test_chunked_and_interim_answers() -> None:
    reader = AnswerReader(1024)
    reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert not reader.complete
    reader.feed(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert (reader.status, reader.body, reader.reusable) == (201, b"abc", True)
    assert reader.headers == [(b"transfer-encoding", b"chunked")]


def test_a_bodiless_status_needs_no_framing() -> None:
    reader = AnswerReader(1024)
    reader.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert reader.complete and reader.body == b"" and reader.reusable


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\na",
        b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\na",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na garbage\r\n",
    ],
)
def test_answers_after_which_the_connection_is_not_reused(answer: bytes) -> None:
    reader = AnswerReader(1024)
    reader.feed(answer)
    assert reader.complete and reader.body == b"a" and not reader.reusable


def test_bytes_after_the_answer_in_a_later_read_spoil_the_connection() -> None:
    reader = AnswerReader(1024)
    reader.feed(OK)
    reader.feed(b"HTTP/1.1")
    assert reader.complete and not reader.reusable


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"garbage\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\n\r\nabc", "framing"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n" + b"x" * 11, "over 10 bytes"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
            "switches",
        ),
    ],
)
def test_bad_answers(answer: bytes, why: str | None) -> None:
    reader = AnswerReader(10)
    with pytest.raises(BadAnswer, match=why):
        reader.feed(answer)
    assert not reader.complete


def test_an_answer_cut_short() -> None:
    reader = AnswerReader(1024)
    reader.feed(OK[:-2])
    with pytest.raises(BadAnswer, match="cut short"):
        reader.end()
    reader.feed(OK[-2:])
    reader.end()  # whole: nothing to say
