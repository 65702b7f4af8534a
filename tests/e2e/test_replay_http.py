"""The replay's keep-alive HTTP pool against small scripted servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from bench.replay.http import HttpError, HttpPool

pytestmark = pytest.mark.e2e

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return b""
        data += chunk
    return data


async def test_keep_alive_and_a_retry_after_an_idle_close() -> None:
    seen: list[int] = []

    async def one_per_connection(stream: trio.SocketStream) -> None:
        # Answers one request, then closes as a keep-alive timeout would, without saying so.
        seen.append(len(seen))
        if await read_request(stream):
            await stream.send_all(OK)
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await serve(nursery, one_per_connection)
            async with HttpPool(origin, size=1) as pool:
                assert (await pool.request("PUT", "/a", b"{}")).body == b"ok"
                await trio.sleep(0.05)  # let the close arrive
                assert (await pool.request("PUT", "/b", b"{}")).status == 200
            nursery.cancel_scope.cancel()
    assert len(seen) == 2


async def test_a_connection_lost_during_the_answer_is_not_sent_again() -> None:
    requests: list[bytes] = []

    async def half_answer_second(stream: trio.SocketStream) -> None:
        requests.append(await read_request(stream))
        await stream.send_all(OK)
        requests.append(await read_request(stream))  # on the kept-alive connection
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await serve(nursery, half_answer_second)
            async with HttpPool(origin, size=1) as pool:
                assert (await pool.request("POST", "/x", b"{}")).status == 200
                with pytest.raises(HttpError, match="during the answer"):
                    await pool.request("POST", "/y", b"{}")
            nursery.cancel_scope.cancel()
    assert [r.split(b" ")[1] for r in requests] == [b"/x", b"/y"]  # /y went out once


async def test_no_answer_in_time_and_no_server_are_http_errors() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await serve(nursery, silent)
            async with HttpPool(origin, size=1, timeout=0.2) as pool:
                with pytest.raises(HttpError, match="no answer within"):
                    await pool.request("GET", "/")
            nursery.cancel_scope.cancel()
        closed = HttpPool("http://127.0.0.1:1", size=1)
        with pytest.raises(HttpError, match="cannot connect"):
            await closed.request("GET", "/")
