"""The node-to-node forwarder (`engine.server.cluster.forward`) against a scripted peer on
127.0.0.1 (port 0): what is relayed, the pool's reuse and bound, and when a call is retried."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio

from engine.server.cluster.forward import (
    FORWARDED_HEADER,
    Forwarder,
    ForwardError,
    end_to_end,
    parse_address,
)

TIMEOUT = 20.0
KEY = b"Bearer lsk_secret_send_key"
BODY = b'{"content_state":{"title":"Deploy"}}'

ANSWER, DROP, PARTIAL, HANG, CLOSE = "answer", "drop", "partial", "hang", "close"


@dataclass
class Request:
    """One request as the peer read it."""

    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Peer:
    """An HTTP/1.1 server whose every answer is scripted: `script(connection number, request
    number on that connection)` is ANSWER, CLOSE (answer, then close although keep-alive),
    DROP (close without a byte), PARTIAL (half a status line, then close) or HANG."""

    script: Callable[[int, int], str] = lambda conn, n: ANSWER
    gate: trio.Event | None = None  # answers wait for it while set
    padding: int = 0  # bytes added to each answer's body
    accepts: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[Request] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)  # set at each change, then renewed

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds (the test's deadline bounds the wait)."""
        while not condition():
            await self.changed.wait()

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def serve(self, stream: trio.SocketStream) -> None:
        number = self.accepts
        self.accepts += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self._serve(stream, number)
        finally:
            self.open_now -= 1
            await stream.aclose()
            self._note()

    async def _serve(self, stream: trio.SocketStream, number: int) -> None:
        conn = h11.Connection(h11.SERVER)
        for n in range(1000):
            request = await _read_request(stream, conn)
            if request is None:
                return
            self.requests.append(request)
            self._note()
            action = self.script(number, n)
            if action == DROP:
                return
            if action == PARTIAL:
                await stream.send_all(b"HTTP/1.1 200")
                return
            if action == HANG:
                await trio.sleep_forever()
            if self.gate is not None:
                await self.gate.wait()
            await stream.send_all(_answer(conn, request, self.padding))
            if action == CLOSE:
                return
            conn.start_next_cycle()


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> Request | None:
    head: h11.Request | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            raw = [(bytes(k), bytes(v)) for k, v in head.headers.raw_items()]
            hs = {k.lower(): v for k, v in raw}
            return Request(head.method, head.target, hs, raw, b"".join(chunks))
        else:  # the client closed the connection
            return None


def _answer(conn: h11.Connection, request: Request, padding: int = 0) -> bytes:
    seen = {"seen": request.target.decode(), "bytes": len(request.body), "pad": "x" * padding}
    body = json.dumps(seen).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request.headers.get(b"x-request-id", b"none")),
        (b"keep-alive", b"timeout=60"),
    ]
    out = conn.send(h11.Response(status_code=201, headers=headers)) or b""
    out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


@asynccontextmanager
async def running(peer: Peer) -> AsyncIterator[str]:
    """The peer on 127.0.0.1 for the block: its "host:port"."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def put(forwarder: Forwarder, address: str, key: str = "k1") -> int:
    answer = await forwarder.forward(
        address,
        "PUT",
        f"/api/live-activity/stream/{key}?x=1",
        [(b"authorization", KEY), (b"content-type", b"application/json")],
        BODY,
    )
    return answer.status


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- what goes over ------------------------------------------------------------------------------


async def test_the_request_and_answer_are_relayed_without_hop_by_hop_headers() -> None:
    peer = Peer()
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            answer = await forwarder.forward(
                address,
                "PUT",
                "/api/live-activity/stream/s%2F1?a=1&b=2",
                [
                    (b"Host", b"public.example"),
                    (b"Authorization", KEY),
                    (b"x-request-id", b"req-1"),
                    (b"connection", b"keep-alive, x-private"),
                    (b"x-private", b"1"),
                    (b"keep-alive", b"timeout=5"),
                    (b"te", b"trailers"),
                    (b"proxy-authorization", b"Basic xyz"),
                    (b"content-length", b"999"),
                    (b"expect", b"100-continue"),
                    (FORWARDED_HEADER, b"spoofed"),
                ],
                BODY,
            )
            await forwarder.aclose()
    [seen] = peer.requests
    assert (seen.method, seen.target, seen.body) == (
        b"PUT",
        b"/api/live-activity/stream/s%2F1?a=1&b=2",
        BODY,
    )
    assert seen.headers == {
        b"host": address.encode(),
        b"authorization": KEY,
        b"x-request-id": b"req-1",
        b"content-length": str(len(BODY)).encode(),
        FORWARDED_HEADER: b"node-a",
    }
    assert answer.status == 201
    assert json.loads(answer.body) == {
        "seen": "/api/live-activity/stream/s%2F1?a=1&b=2",
        "bytes": len(BODY),
        "pad": "",
    }
    assert answer.headers == ((b"content-type", b"application/json"), (b"x-request-id", b"req-1"))


async def test_large_bodies_both_ways_on_one_connection() -> None:
    # Larger than a socket's buffers: written and read in many pieces.
    peer = Peer(padding=6_000_000)
    forwarder = Forwarder("node-a")
    body = b'{"pad":"' + b"y" * 8_000_000 + b'"}'
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            for _ in range(2):
                answer = await forwarder.forward(address, "POST", "/big", [], body)
                assert answer.status == 201
                assert json.loads(answer.body)["bytes"] == len(body)
                assert len(json.loads(answer.body)["pad"]) == 6_000_000
            await forwarder.aclose()
    assert [r.body for r in peer.requests] == [body, body] and peer.accepts == 1


async def test_an_answer_over_max_response_is_a_forward_error() -> None:
    peer = Peer(padding=5000)
    forwarder = Forwarder("node-a", max_response=4096)
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            with pytest.raises(ForwardError, match="over 4096 bytes") as failed:
                await put(forwarder, address)
    assert failed.value.sent is True and forwarder._pools[address].idle == []


def test_end_to_end_drops_what_connection_names_and_proxy_headers() -> None:
    headers = [
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Upgrade", b"h2c"),
        (b"Trailer", b"x"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Kept", b"2"),
    ]
    assert end_to_end(headers) == ((b"x-kept", b"2"),)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:1", ("::1", 1)), ("n1:65535", ("n1", 65535))],
)
def test_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["n1", "n1:", ":80", "n1:0", "n1:65536", "::1:80", "n1:x"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(address)


async def test_a_bad_address_is_a_forward_error_with_nothing_sent() -> None:
    with pytest.raises(ForwardError) as failed:
        await put(Forwarder("node-a"), "nowhere")
    assert failed.value.sent is False and "nowhere" in str(failed.value)


@pytest.mark.parametrize("node_id", ["", "a\nb", "nœud"])
def test_node_ids_travel_in_a_header(node_id: str) -> None:
    with pytest.raises(ValueError, match="node id"):
        Forwarder(node_id)


# -- the pool ------------------------------------------------------------------------------------


async def test_calls_reuse_one_kept_alive_connection() -> None:
    peer = Peer()
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            statuses = [await put(forwarder, address, f"k{i}") for i in range(5)]
            await forwarder.aclose()
            await peer.until(lambda: peer.open_now == 0)
    assert statuses == [201] * 5
    assert (peer.accepts, forwarder.opened, len(peer.requests)) == (1, 1, 5)


async def test_the_pool_is_bounded_and_calls_wait_for_a_connection() -> None:
    peer = Peer(gate=trio.Event())
    forwarder = Forwarder("node-a", max_connections=2)
    statuses: list[int] = []

    async def one(i: int) -> None:
        statuses.append(await put(forwarder, address, f"k{i}"))

    with trio.fail_after(TIMEOUT):
        async with running(peer) as address, trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(one, i)
            await peer.until(lambda: len(peer.requests) == 2)
            await trio.sleep(0.05)  # time for a third connection, were there one
            assert (peer.accepts, len(peer.requests)) == (2, 2)
            assert peer.gate is not None
            peer.gate.set()
        await forwarder.aclose()
    assert statuses == [201] * 6
    assert (peer.accepts, peer.most_open, forwarder.opened) == (2, 2, 2)


async def test_idle_connections_past_idle_timeout_are_closed() -> None:
    peer = Peer()
    forwarder = Forwarder("node-a", idle_timeout=0.0)
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            await put(forwarder, address)
            assert peer.open_now == 1  # kept alive, idle in the pool
            forwarder.close_idle()
            await peer.until(lambda: peer.open_now == 0)
            await put(forwarder, address)
            await forwarder.aclose()
    assert peer.accepts == 2


async def test_reap_closes_idle_connections_while_no_call_comes() -> None:
    peer = Peer()
    forwarder = Forwarder("node-a", idle_timeout=0.1)
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            await put(forwarder, address)
            assert peer.open_now == 1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forwarder.reap)
                await peer.until(lambda: peer.open_now == 0)
                nursery.cancel_scope.cancel()
    assert peer.accepts == 1


# -- failures and the one retry ------------------------------------------------------------------


async def test_an_idle_connection_the_peer_closed_is_dropped_before_use() -> None:
    peer = Peer(script=lambda conn, n: CLOSE)
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            await put(forwarder, address)
            await peer.until(lambda: peer.open_now == 0)
            assert await put(forwarder, address) == 201
            await forwarder.aclose()
    # Nothing was sent on the closed connection: two requests, two connections, no retry.
    assert (peer.accepts, len(peer.requests), forwarder.retried) == (2, 2, 0)


async def test_a_stale_pooled_connection_is_retried_once_on_a_new_one() -> None:
    # The peer takes the second request on the first connection and closes without a byte
    # (its keep-alive ran out as the request came): the call goes again on a new connection.
    peer = Peer(script=lambda conn, n: DROP if (conn, n) == (0, 1) else ANSWER)
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            assert await put(forwarder, address, "first") == 201
            assert await put(forwarder, address, "second") == 201
            await forwarder.aclose()
    targets = [r.target.split(b"?")[0].rsplit(b"/", 1)[1] for r in peer.requests]
    assert targets == [b"first", b"second", b"second"]
    assert (peer.accepts, forwarder.retried) == (2, 1)


async def test_a_stale_connection_is_retried_only_once() -> None:
    peer = Peer(script=lambda conn, n: ANSWER if (conn, n) == (0, 0) else DROP)
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            await put(forwarder, address)
            with pytest.raises(ForwardError, match="closed before answering") as failed:
                await put(forwarder, address)
    assert failed.value.sent is True
    assert (peer.accepts, len(peer.requests)) == (2, 3)


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    peer = Peer(script=lambda conn, n: DROP)
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            with pytest.raises(ForwardError) as failed:
                await put(forwarder, address)
    assert failed.value.sent is True
    assert (peer.accepts, len(peer.requests)) == (1, 1)


async def test_a_half_answer_on_a_pooled_connection_is_not_retried() -> None:
    peer = Peer(script=lambda conn, n: PARTIAL if n == 1 else ANSWER)
    forwarder = Forwarder("node-a")
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            await put(forwarder, address)
            with pytest.raises(ForwardError) as failed:
                await put(forwarder, address)
    assert failed.value.sent is True
    assert (peer.accepts, len(peer.requests)) == (1, 2)


async def test_no_listener_is_a_forward_error_naming_the_address_only() -> None:
    address = f"127.0.0.1:{closed_port()}"
    with trio.fail_after(TIMEOUT), pytest.raises(ForwardError) as failed:
        await put(Forwarder("node-a"), address)
    assert failed.value.sent is False and failed.value.address == address
    assert address in str(failed.value)
    assert KEY.decode() not in str(failed.value) and "Deploy" not in str(failed.value)


async def test_an_owner_that_never_answers_is_a_forward_error_at_the_deadline() -> None:
    peer = Peer(script=lambda conn, n: HANG)
    forwarder = Forwarder("node-a", timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with running(peer) as address:
            with pytest.raises(ForwardError, match=r"no answer within 0\.3 s") as failed:
                await put(forwarder, address)
            await peer.until(lambda: len(peer.requests) == 1)
    assert failed.value.sent is True
    assert forwarder._pools[address].idle == []  # a connection cut mid-call is never reused
