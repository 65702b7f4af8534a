"""The lean HTTP front under slow and idle clients, on 127.0.0.1 (port 0) and trio's MockClock.

Every wait on a client is bounded as a whole (a byte now and then buys nothing), idle keep-alive
connections close on time, and with every slot taken a waiting client is served because the
longest-idle connection gives way — a device's token report included.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from engine.server.http.h11server import H11Limits
from tests.helpers.fakeservice import DEVICE_KEY, REPORT_BODY, FakeService
from tests.helpers.h11kit import Reader, api_app, get, put, running

# Virtual seconds: the MockClock jumps over waits, so a hang fails here in no real time.
TIMEOUT = 3600.0
LIMITS = H11Limits(head_timeout=10.0, body_timeout=30.0, idle_timeout=60.0, send_timeout=30.0)
REPORT = json.dumps(REPORT_BODY).encode()


def token_report() -> bytes:
    """`POST /api/activity-tokens` with the device key, as an iOS app sends it."""
    return (
        f"POST /api/activity-tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {DEVICE_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(REPORT)}\r\n\r\n"
    ).encode() + REPORT


async def trickle(stream: trio.SocketStream, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, `every` seconds apart, until sent or the server closes."""
    try:
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
            await trio.sleep(every)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def closed(stream: trio.SocketStream) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it closed it."""
    chunks = []
    try:
        while chunk := await stream.receive_some(65536):
            chunks.append(bytes(chunk))
    except trio.BrokenResourceError:
        pass  # a reset: the server closed with bytes of ours unread
    return b"".join(chunks), trio.current_time()


async def connect(port: int) -> trio.SocketStream:
    """A client connection to the server under test."""
    return await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_slowloris_head_is_cut_at_the_head_deadline(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = FakeService()
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front, limits=LIMITS) as (port, _, _):
            stream = await connect(port)
            opened = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle, stream, put("slow"), 3.0)
                reply, at = await closed(stream)
                nursery.cancel_scope.cancel()
            assert reply == b""
            assert 10.0 <= at - opened < 13.0  # bounded from the accept, not per byte
            await stream.aclose()
    assert service.calls == []


async def test_a_slow_head_on_a_keep_alive_connection_is_bounded_from_its_first_byte(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front, limits=LIMITS) as (port, _, _):
            stream = await connect(port)
            await stream.send_all(get("/healthz"))
            assert (await Reader(stream).answer()).status == 200
            await trio.sleep(50.0)  # idle, within the idle bound
            began = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle, stream, get("/healthz"), 2.0)
                reply, at = await closed(stream)
                nursery.cancel_scope.cancel()
            assert reply == b""
            assert 10.0 <= at - began < 12.0
            await stream.aclose()


async def test_a_slow_body_is_cut_at_the_body_deadline(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = FakeService()
    raw = put("slow-body")
    head, _, body = raw.partition(b"\r\n\r\n")
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front, limits=LIMITS) as (port, _, _):
            stream = await connect(port)
            await stream.send_all(head + b"\r\n\r\n")
            sent = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle, stream, body, 2.0)
                reply, at = await closed(stream)
                nursery.cancel_scope.cancel()
            assert reply == b""
            assert 30.0 <= at - sent < 32.0
            await stream.aclose()
    assert service.calls == []


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_bound(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front, limits=LIMITS) as (port, _, _):
            stream = await connect(port)
            await stream.send_all(get("/healthz"))
            assert (await Reader(stream).answer()).status == 200
            answered = trio.current_time()
            reply, at = await closed(stream)
            assert reply == b"" and 60.0 <= at - answered < 61.0
            await stream.aclose()


async def test_a_silent_new_connection_is_closed_at_the_head_bound(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front, limits=LIMITS) as (port, _, _):
            stream = await connect(port)
            opened = trio.current_time()
            reply, at = await closed(stream)
            assert reply == b"" and 10.0 <= at - opened < 11.0  # not the 60 s idle bound
            await stream.aclose()


async def test_when_full_the_longest_idle_connection_gives_way(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = H11Limits(max_connections=4, head_timeout=10.0, idle_timeout=600.0)
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front, limits=limits) as (port, _, _):
            idle = []
            for _ in range(4):
                stream = await connect(port)
                await stream.send_all(get("/healthz"))
                assert (await Reader(stream).answer()).status == 200
                idle.append(stream)
                await trio.sleep(1.0)
            asked = trio.current_time()
            newcomer = await connect(port)
            await newcomer.send_all(get("/healthz"))
            assert (await Reader(newcomer).answer()).status == 200
            assert trio.current_time() - asked < 1.0  # served at once, not at an idle bound
            assert (await closed(idle[0]))[0] == b""  # the longest idle went
            for stream in idle[1:]:  # the others still serve
                await stream.send_all(get("/healthz"))
                assert (await Reader(stream).answer()).status == 200
            for stream in [*idle, newcomer]:
                await stream.aclose()


async def test_a_token_report_is_answered_while_slow_clients_hold_every_slot(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = FakeService()
    limits = H11Limits(max_connections=8, head_timeout=10.0)
    with trio.fail_after(TIMEOUT):
        async with running(api_app(service), front, limits=limits) as (port, _, _):
            async with trio.open_nursery() as nursery:
                slow = []
                for i in range(8):
                    stream = await connect(port)
                    slow.append(stream)
                    nursery.start_soon(trickle, stream, put(f"slow-{i}"), 1.0)
                    await trio.sleep(0.25)
                asked = trio.current_time()
                phone = await connect(port)
                await phone.send_all(token_report())
                answer = await Reader(phone).answer(b"POST")
                assert trio.current_time() - asked < 1.0  # well before any head deadline
                assert answer.status == 200 and answer.json()["released"] == 1
                _, at = await closed(slow[0])  # the one whose request began first gave way
                assert at - asked < 1.0
                nursery.cancel_scope.cancel()
            for stream in [*slow, phone]:
                await stream.aclose()
    assert [c[0] for c in service.calls] == ["report_token"]


async def test_idle_connections_give_way_before_a_request_being_read(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = H11Limits(max_connections=3, head_timeout=10.0, idle_timeout=600.0)
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService()), front, limits=limits) as (port, _, _):
            async with trio.open_nursery() as nursery:
                reading = await connect(port)
                opened = trio.current_time()
                nursery.start_soon(trickle, reading, get("/healthz"), 1.0)
                idle = []
                for _ in range(2):
                    await trio.sleep(1.0)
                    stream = await connect(port)
                    await stream.send_all(get("/healthz"))
                    assert (await Reader(stream).answer()).status == 200
                    idle.append(stream)
                newcomer = await connect(port)
                await newcomer.send_all(get("/healthz"))
                assert (await Reader(newcomer).answer()).status == 200
                _, at = await closed(idle[0])
                assert at - opened < 3.0  # given up at once
                _, at = await closed(reading)
                assert at - opened >= 10.0  # cut at its head deadline, not given up
                nursery.cancel_scope.cancel()
            for stream in [reading, *idle, newcomer]:
                await stream.aclose()


def _gated(release: trio.Event, big: int = 0) -> Callable[..., Awaitable[None]]:
    """An ASGI app: `/slow` waits for `release`, `/big` answers `big` bytes, others at once."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/slow":
            await release.wait()
        body = b"x" * big if scope["path"] == "/big" else scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_connection_being_answered_never_gives_way(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()
    limits = H11Limits(max_connections=1, idle_timeout=600.0)
    with trio.fail_after(TIMEOUT):
        async with running(_gated(release), front, limits=limits) as (port, _, _):
            busy = await connect(port)
            await busy.send_all(get("/slow"))
            waiting = await connect(port)  # in the backlog: the only slot is busy
            await waiting.send_all(get("/fast"))
            await trio.sleep(100.0)
            with trio.move_on_after(1.0):
                await waiting.receive_some(1)
                raise AssertionError("a client was served past the cap")
            release.set()
            assert (await Reader(busy).answer()).body == b"/slow"
            answered = trio.current_time()
            # Answered, `busy` idles: now it gives way to the waiting client at once.
            assert (await Reader(waiting).answer()).body == b"/fast"
            assert trio.current_time() - answered < 1.0
            assert (await closed(busy))[0] == b""
            await busy.aclose()
            await waiting.aclose()


async def test_a_client_that_takes_no_answer_is_let_go_after_the_send_bound(
    front: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = H11Limits(max_connections=1, send_timeout=30.0)
    with trio.fail_after(TIMEOUT):
        async with running(_gated(trio.Event(), big=32 << 20), front, limits=limits) as (
            port,
            _,
            _,
        ):
            stuck = await connect(port)
            await stuck.send_all(get("/big"))  # and never reads the 32 MiB answer
            asked = trio.current_time()
            other = await connect(port)
            await other.send_all(get("/fast"))
            assert (await Reader(other).answer()).body == b"/fast"
            assert trio.current_time() - asked >= 30.0  # the slot came free at the send bound
            await stuck.aclose()
            await other.aclose()
