"""The benchmarks' load generator against a canned HTTP/1.1 server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import trio

from bench.harness.loadgen import run_calls

OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 22\r\n\r\n"
    b'{"activity_id":"la_1"}'
)
CHUNKED = (
    b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
    b'9\r\n{"activit\r\nd\r\ny_id":"la_2"}\r\n0\r\n\r\n'
)
CLOSE = b"HTTP/1.1 503 Unavailable\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"


async def _handler(stream: trio.SocketStream, answers: list[bytes], seen: list[bytes]) -> None:
    """Answer each request with the next of `answers` (b"" closes the connection mid-call)."""
    buf = b""
    while answers:
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += await stream.receive_some(65536)
        seen.append(head.split(b"\r\n")[0] + b" " + rest[:length])
        buf = rest[length:]
        answer = answers.pop(0)
        if not answer:
            await stream.aclose()
            return
        await stream.send_all(answer)
        if b"connection: close" in answer:
            await stream.aclose()
            return


async def _run(answers: list[bytes], calls: int) -> tuple[dict[str, Any], list[bytes], list[int]]:
    seen: list[bytes] = []
    accepted: list[int] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        accepted.append(1)
        await _handler(stream, answers, seen)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            out = await run_calls(
                f"http://127.0.0.1:{port}/api",
                "lsk_test",
                [(0.0, "PUT", f"/x/{i}", b'{"n":%d}' % i, True) for i in range(calls)],
                connections=1,
                deadline=5.0,
            )
            nursery.cancel_scope.cancel()
    return out, seen, accepted


async def test_keep_alive_answers_chunked_bodies_and_reconnects_after_close() -> None:
    out, seen, accepted = await _run([OK, CHUNKED, CLOSE, OK], 4)
    results = out["results"]
    assert [r.status for r in results] == [200, 201, 503, 200]
    assert [r.activity_id for r in results] == ["la_1", None, None, "la_1"]  # 201 is not read
    assert seen == [b'PUT /api/x/%d HTTP/1.1 {"n":%d}' % (i, i) for i in range(4)]
    assert len(accepted) == 2  # one connection until the server closed it, then a new one
    assert out["errors"] == {}
    assert all(r.sent <= r.done for r in results)


async def test_a_connection_closed_mid_call_is_a_counted_failure_and_the_next_call_reconnects() -> (
    None
):
    out, _, accepted = await _run([OK, b"", OK], 3)
    assert [r.status for r in out["results"]] == [200, -1, 200]
    assert out["errors"] == {"ConnectionError": 1}
    assert len(accepted) == 2
