"""The bad-input matrix against both HTTP/1.1 fronts (h11 and httptools), side by side.

Every malformed or oversize request gets the same status from both, and the connection closes
after it. Where llhttp is stricter than h11 (it refuses what h11 lets through to the app), the
httptools front answers 400: stricter, never looser.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.helpers.fakeservice import SEND_KEY, FakeService
from tests.helpers.h11kit import STREAM, TIMEOUT, Reader, api_app, get, put, read_to_eof, running

AUTH = f"Authorization: Bearer {SEND_KEY}\r\n".encode()
STREAM_PUT = b"PUT /api/live-activity/stream/x HTTP/1.1\r\nHost: t\r\n" + AUTH
GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"

# (raw request, the status both fronts answer)
SAME = {
    "garbage": (b"GARBAGE\r\n\r\n", 400),
    "no Host on HTTP/1.1": (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    "two Host headers": (GET + b"Host: u\r\n\r\n", 400),
    "no HTTP version": (b"GET /healthz\r\n\r\n", 400),
    "space before the colon": (b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    "NUL in a value": (GET + b"X: a\x00b\r\n\r\n", 400),
    "bad header name": (GET + b"X(y): a\r\n\r\n", 400),
    "empty header name": (GET + b": a\r\n\r\n", 400),
    "two differing Content-Lengths": (
        STREAM_PUT + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "negative Content-Length": (STREAM_PUT + b"Content-Length: -1\r\n\r\n", 400),
    "Content-Length not a number": (STREAM_PUT + b"Content-Length: nope\r\n\r\n", 400),
    "Content-Length overflows": (STREAM_PUT + b"Content-Length: " + b"9" * 30 + b"\r\n\r\n", 400),
    "Transfer-Encoding gzip": (STREAM_PUT + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    "Transfer-Encoding gzip, chunked": (
        STREAM_PUT + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        501,
    ),
    "Transfer-Encoding chunked, gzip": (
        STREAM_PUT + b"Transfer-Encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        501,
    ),
    "bad chunk size": (
        STREAM_PUT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk without its CRLF": (
        STREAM_PUT + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        400,
    ),
    "space in the target": (b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "non-ASCII target": (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "empty line before the request": (b"\r\n" + GET + b"\r\n", 400),
    "header over the head bound": (GET + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    "target over the head bound": (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 431),
    "many headers over the head bound": (GET + b"X: y\r\n" * 3000 + b"\r\n", 431),
}

# (raw request, h11's status, httptools' status): llhttp refuses these, h11 passes them on.
STRICTER = {
    "obsolete line folding": (GET + b"X: a\r\n b\r\n\r\n", 200, 400),
    "control character in a value": (GET + b"X: a\x01b\r\n\r\n", 200, 400),
    "DEL in a value": (GET + b"X: a\x7fb\r\n\r\n", 200, 400),
    "bare LF line ends": (b"GET /healthz HTTP/1.1\nHost: t\n\n", 200, 400),
    "HTTP/1.2": (b"GET /healthz HTTP/1.2\r\nHost: t\r\n\r\n", 200, 400),
    "lower-case method": (b"get /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 200, 400),
    "unknown method": (b"FOO /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 405, 400),
}


async def _status(front: str, raw: bytes) -> tuple[int, bool]:
    """The status of the first answer to `raw`, and whether the connection closed after it."""
    async with running(api_app(FakeService()), front) as (port, _, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(raw)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed without an answer: {reply!r}"
            reply += chunk
        head = reply.partition(b"\r\n\r\n")[0].lower()
        closes = b"connection: close" in head
        if closes:
            await read_to_eof(stream)
        await stream.aclose()
        return int(reply.split(b" ", 2)[1]), closes


@pytest.mark.parametrize("case", list(SAME))
async def test_both_fronts_refuse_bad_input_alike(front: str, case: str) -> None:
    raw, status = SAME[case]
    with trio.fail_after(TIMEOUT):
        assert await _status(front, raw) == (status, True)


@pytest.mark.parametrize("case", list(STRICTER))
async def test_the_httptools_front_is_stricter_never_looser(front: str, case: str) -> None:
    raw, h11_status, httptools_status = STRICTER[case]
    with trio.fail_after(TIMEOUT):
        status, closes = await _status(front, raw)
    if front == "h11":
        assert status == h11_status
    else:
        assert (status, closes) == (httptools_status, True)


async def test_a_head_that_never_ends_is_refused_once_past_the_bound(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(GET + b"X-Endless: ")
            reply = b""
            try:
                for _ in range(8):  # 40 kB of one header value, read piece by piece
                    await stream.send_all(b"a" * 5000)
                    await trio.testing.wait_all_tasks_blocked()
            except trio.BrokenResourceError:
                pass  # refused and closed before all of it was sent
            reply = await read_to_eof(stream)
            assert reply.startswith(b"HTTP/1.1 431 ")
            await stream.aclose()


async def test_expect_100_continue_is_answered_before_the_body(front: str) -> None:
    service = FakeService()
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            head, _, body = put("cont").partition(b"\r\n\r\n")
            await stream.send_all(head + b"\r\nExpect: 100-continue\r\n\r\n")
            interim = b""
            while b"\r\n\r\n" not in interim:
                interim += await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ") and interim.endswith(b"\r\n\r\n")
            await stream.send_all(body)
            ans = await Reader(stream).answer(b"PUT")
            assert ans.status == 200 and ans.json()["stream_key"] == "cont"
            await stream.aclose()
    assert [c[1] for c in service.calls] == ["cont"]


async def test_an_upgrade_request_is_answered_and_the_next_one_too(front: str) -> None:
    upgrade = b"Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(GET + upgrade + get("/nope"))
            reader = Reader(stream)
            assert (await reader.answer()).json()["ok"] is True
            assert (await reader.answer()).status == 404
            await stream.aclose()


@pytest.mark.parametrize("chunked", [False, True])
async def test_the_body_of_an_upgrade_request_is_its_own_not_a_request(
    front: str, chunked: bool
) -> None:
    """As curl --http2 sends a PUT over http://: the upgrade is declined, the body read."""
    service = FakeService()
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
    head = b"PUT /api/live-activity/stream/up HTTP/1.1\r\nHost: t\r\n" + AUTH + upgrade
    if chunked:
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n"
        raw += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (STREAM[:9], STREAM[9:]))
        raw += b"0\r\n\r\n"
    else:
        raw = head + b"Content-Length: %d\r\n\r\n" % len(STREAM) + STREAM
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            for piece in (raw[: len(head) + 20], raw[len(head) + 20 :] + get("/nope")):
                await stream.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()  # the server reads each alone
            reader = Reader(stream)
            ans = await reader.answer(b"PUT")
            assert ans.status == 200 and ans.json()["stream_key"] == "up"
            assert (await reader.answer()).status == 404
            await stream.aclose()
    assert [c[1] for c in service.calls] == ["up"]
