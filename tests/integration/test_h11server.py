"""The lean HTTP/1.1 server (`engine.server.http.h11server`) on 127.0.0.1, port 0, over raw sockets.

Keep-alive, pipelining, bodies split over TCP segments, the app's 413, malformed requests,
`Connection: close`, h2c prior knowledge (handed to hypercorn), graceful shutdown.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio

from engine.server.http import serve_http
from engine.server.http.h11server import H11Limits
from tests.helpers.fakeservice import SEND_KEY, FakeService
from tests.helpers.h2client import H2TestClient
from tests.helpers.h11kit import (
    FRONTS,
    STREAM,
    TIMEOUT,
    Reader,
    api_app,
    get,
    put,
    read_to_eof,
    running,
)


async def test_keep_alive_serves_several_requests_on_one_connection(front: str) -> None:
    service = FakeService()
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            reader = Reader(stream)
            for i in range(5):
                await stream.send_all(put(f"ka-{i}"))
                ans = await reader.answer(b"PUT")
                assert ans.status == 200 and ans.json()["stream_key"] == f"ka-{i}"
                assert ans.headers[b"content-type"] == b"application/json"
                assert b"connection" not in ans.headers and b"date" in ans.headers
            await stream.send_all(get("/healthz"))
            assert (await reader.answer()).json()["ok"] is True
            await stream.aclose()
    assert [c[1] for c in service.calls] == [f"ka-{i}" for i in range(5)]


async def test_pipelined_requests_are_answered_in_order(front: str) -> None:
    service = FakeService()
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(put("p-1") + get("/nope") + put("p-2") + get("/healthz"))
            reader = Reader(stream)
            answers = [await reader.answer(m) for m in (b"PUT", b"GET", b"PUT", b"GET")]
            assert [a.status for a in answers] == [200, 404, 200, 200]
            assert answers[0].json()["stream_key"] == "p-1"
            assert answers[1].json()["error"] == "not_found"
            assert answers[2].json()["stream_key"] == "p-2"
            await stream.aclose()
    assert [c[1] for c in service.calls] == ["p-1", "p-2"]


async def test_body_split_over_several_tcp_segments(front: str) -> None:
    service = FakeService()
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            raw = put("split")
            pieces = [raw[:10], raw[10:60], raw[60:-7], raw[-7:-1], raw[-1:]]
            for piece in pieces:
                await stream.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()  # the server reads each alone
            ans = await Reader(stream).answer(b"PUT")
            assert ans.status == 200 and ans.json()["stream_key"] == "split"
            await stream.aclose()


async def test_chunked_body_is_read(front: str) -> None:
    service = FakeService()
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            head = (
                f"PUT /api/live-activity/stream/ch HTTP/1.1\r\nHost: t\r\n"
                f"Authorization: Bearer {SEND_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (STREAM[:7], STREAM[7:]))
            await stream.send_all(head.encode() + chunks + b"0\r\n\r\n")
            ans = await Reader(stream).answer(b"PUT")
            assert ans.status == 200 and ans.json()["stream_key"] == "ch"
            await stream.aclose()


@pytest.mark.parametrize("chunked", [False, True])
async def test_too_large_body_gets_the_apps_413_and_a_close(front: str, chunked: bool) -> None:
    service = FakeService()
    big = b'{"content_state": {"title": "' + b"x" * 5000 + b'"}}'
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service, max_body=4096), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if chunked:
                head = (
                    f"PUT /api/live-activity/stream/big HTTP/1.1\r\nHost: t\r\n"
                    f"Authorization: Bearer {SEND_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                raw = head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
            else:
                raw = put("big", big)
            await stream.send_all(raw)
            ans = await Reader(stream).answer(b"PUT")
            assert ans.status == 413 and ans.json()["limit"] == 4096
            assert ans.headers[b"connection"] == b"close"
            assert await read_to_eof(stream) == b""
            await stream.aclose()
    assert service.calls == []


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "bad_request"),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
    ],
)
async def test_malformed_request_gets_json_error_and_close(
    front: str, raw: bytes, status: int, code: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(raw)
            reply = await read_to_eof(stream)
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d " % status)
            assert b"connection: close" in head.lower()
            doc = json.loads(body)
            assert doc["error"] == code and doc["message"]
            await stream.aclose()


async def test_a_malformed_header_line_is_never_echoed_back(front: str) -> None:
    raw = f"GET / HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SEND_KEY}\x00\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front=front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(raw.encode())
            reply = await read_to_eof(stream)
            await stream.aclose()
    assert reply.startswith(b"HTTP/1.1 400 ") and SEND_KEY.encode() not in reply
    message = json.loads(reply.partition(b"\r\n\r\n")[2])["message"]
    assert message and "Bearer" not in message


async def test_connection_close_is_honoured(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(get("/healthz", extra="Connection: close\r\n"))
            ans = await Reader(stream).answer()
            assert ans.status == 200 and ans.headers[b"connection"] == b"close"
            assert await read_to_eof(stream) == b""
            await stream.aclose()


async def test_http10_without_keep_alive_is_closed_after_the_answer(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            reply = await read_to_eof(stream)
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"connection: close" in reply.lower()
            await stream.aclose()


async def test_idle_connection_is_closed_after_the_idle_timeout(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front, limits=H11Limits(idle_timeout=0.05)) as (
            port,
            _,
            _,
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(get("/healthz"))
            assert (await Reader(stream).answer()).status == 200
            assert await read_to_eof(stream) == b""  # closed once idle
            await stream.aclose()


async def test_h2c_prior_knowledge_is_served_through_serve_http(front: str) -> None:
    service = FakeService()
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_http,
                    api_app(service),
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    server=front,
                )
            )
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = H2TestClient(stream, authority=f"127.0.0.1:{port}")
            await client.start()
            hs = [
                (":method", "PUT"),
                (":scheme", "http"),
                (":authority", client.authority),
                (":path", "/api/live-activity/stream/h2"),
                ("content-type", "application/json"),
                ("authorization", f"Bearer {SEND_KEY}"),
            ]
            answer = await client.request(hs, STREAM)
            assert answer.status == 200 and answer.json()["stream_key"] == "h2"
            # and HTTP/1.1 still works on another connection of the same server
            plain = await trio.open_tcp_stream("127.0.0.1", port)
            await plain.send_all(get("/healthz"))
            assert (await Reader(plain).answer()).status == 200
            await plain.aclose()
            await stream.aclose()
            stop.set()
    assert [c[:2] for c in service.calls] == [("stream", "h2")]


async def test_upgrade_h2c_is_answered_over_http11(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            upgrade = (
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
            )
            await stream.send_all(get("/healthz", extra=upgrade))
            ans = await Reader(stream).answer()
            assert ans.status == 200 and ans.json()["ok"] is True
            await stream.aclose()


def _gated_app(entered: trio.Event, release: trio.Event) -> Callable[..., Awaitable[None]]:
    """An ASGI app whose `/slow` waits for `release`; everything else answers at once."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    return app


async def test_graceful_shutdown_finishes_the_request_in_flight(front: str) -> None:
    entered, release = trio.Event(), trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            stop = trio.Event()
            server = FRONTS[front](_gated_app(entered, release))
            done = trio.Event()

            async def serve(task_status: trio.TaskStatus[int]) -> None:
                await server.serve(
                    "127.0.0.1",
                    0,
                    task_status=task_status,
                    shutdown_trigger=stop.wait,
                    graceful_timeout=10,
                )
                done.set()

            port = await outer.start(serve)
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            await idle.send_all(get("/fast"))
            assert (await Reader(idle).answer()).body == b"/fast"
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(get("/slow"))
            await entered.wait()
            stop.set()
            assert await read_to_eof(idle) == b""  # the idle keep-alive connection is closed
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # the request in flight holds the server open
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)  # no longer accepting
            release.set()
            ans = await Reader(busy).answer()
            assert ans.body == b"/slow" and ans.headers[b"connection"] == b"close"
            await done.wait()
            await idle.aclose()
            await busy.aclose()


async def test_graceful_timeout_bounds_a_stuck_request(front: str) -> None:
    entered, release = trio.Event(), trio.Event()
    with trio.fail_after(TIMEOUT):
        async with running(_gated_app(entered, release), front, graceful_timeout=0.05) as (
            port,
            stop,
            _,
        ):
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(get("/slow"))
            await entered.wait()
            stop.set()
            assert await read_to_eof(busy) == b""  # cancelled at the deadline, not answered
            await busy.aclose()


async def test_app_failure_is_a_bare_500_and_a_close(front: str) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with trio.fail_after(TIMEOUT):
        async with running(broken, front) as (port, _, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(get("/x"))
            reply = await read_to_eof(stream)
            assert reply.startswith(b"HTTP/1.1 500 ") and b"boom" not in reply
            await stream.aclose()


async def test_unknown_server_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown HTTP server"):
        await serve_http(api_app(FakeService()), "127.0.0.1", 0, server="nginx")
