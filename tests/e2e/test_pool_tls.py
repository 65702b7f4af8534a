"""The APNs pool over real sockets on 127.0.0.1: TLS 1.2+ with ALPN h2, and plaintext h2c.

The simulator serves on port 0 with its own CA; the engine trusts that CA through
`ApnsEndpoint.ca_file` and checks the certificate against `server_hostname`, as it would Apple's.
"""

from __future__ import annotations

import random
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from engine.apns.connection import Answered, StreamResult
from engine.apns.pool import ApnsPool
from engine.apns.protocol import PushRequest
from engine.apns.reasons import Reason
from engine.apns.tokens import TokenSource
from engine.apns.transport import ConnectError, tcp_connector
from engine.config import ApnsEndpoint, DeliveryConfig
from simulator.certs import ensure_certificates, server_ssl_context
from simulator.server import ApnsServer
from tests.helpers.simkit import TOPIC, Kit, make_kit, start_body

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def serving(kit: Kit, ssl_context: ssl.SSLContext | None) -> AsyncIterator[int]:
    """Run the simulator on 127.0.0.1:0; yield its port."""
    server = ApnsServer(kit.apns, ssl_context=ssl_context)
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(server.serve, "127.0.0.1", 0)
        yield port
        await server.drain(2.0)
        nursery.cancel_scope.cancel()


async def push_all(pool: ApnsPool, requests: list[PushRequest]) -> list[StreamResult]:
    results: list[StreamResult] = []

    async def one(request: PushRequest) -> None:
        results.append(await pool.send(request))

    async with trio.open_nursery() as nursery:
        for request in requests:
            nursery.start_soon(one, request)
    return results


async def run_flow(kit: Kit, endpoint: ApnsEndpoint) -> None:
    """200 pushes that APNs accepts and one with a bad device token, through a pool of 2.

    The kit has no per-token limit: the 200 go to one token to exercise the streams.
    """
    tokens = TokenSource(kit.key, wall_clock=kit.now)
    pool = ApnsPool(
        tcp_connector(endpoint, connect_timeout=5.0),
        tokens,
        authority=endpoint.authority,
        size=2,
        config=DeliveryConfig(),
        rng=random.Random(3),
    )
    good = PushRequest(kit.push_to_start_token(), TOPIC, start_body())
    bad = PushRequest("ab" * 32, TOPIC, start_body())
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        results = await push_all(pool, [good] * 200 + [bad])
        await pool.aclose(deadline=2.0)
    answers = [r.answer for r in results if isinstance(r, Answered)]
    assert len(answers) == 201
    assert Counter(a.status for a in answers) == {200: 200, 400: 1}
    (rejected,) = [a for a in answers if a.status == 400]
    assert rejected.reason is Reason.BAD_DEVICE_TOKEN
    assert Counter(p.status for p in kit.apns.log) == {200: 200, 400: 1}
    assert 1 <= kit.apns.counters.connections <= 2
    assert pool.last_connect_error is None


async def test_pool_over_tls_with_alpn_h2(tmp_path: Path) -> None:
    kit = make_kit(token_rate_limit=None)
    paths = ensure_certificates(tmp_path)
    with trio.fail_after(30):
        async with serving(kit, server_ssl_context(paths)) as port:
            endpoint = ApnsEndpoint(
                host="127.0.0.1", port=port, ca_file=paths.ca, server_hostname="localhost"
            )
            await run_flow(kit, endpoint)


async def test_pool_over_plaintext_h2c() -> None:
    kit = make_kit(token_rate_limit=None)
    with trio.fail_after(30):
        async with serving(kit, None) as port:
            await run_flow(kit, ApnsEndpoint(host="127.0.0.1", port=port, tls=False))


async def test_an_untrusted_certificate_is_a_clear_connect_error(tmp_path: Path) -> None:
    kit = make_kit(token_rate_limit=None)
    paths = ensure_certificates(tmp_path)
    with trio.fail_after(30):
        async with serving(kit, server_ssl_context(paths)) as port:
            # No ca_file: the system store does not know the simulator's CA.
            endpoint = ApnsEndpoint(host="127.0.0.1", port=port, server_hostname="localhost")
            with pytest.raises(ConnectError, match="certificate verification failed"):
                await tcp_connector(endpoint, connect_timeout=5.0)()


async def test_a_wrong_server_name_is_rejected(tmp_path: Path) -> None:
    kit = make_kit(token_rate_limit=None)
    paths = ensure_certificates(tmp_path)
    with trio.fail_after(30):
        async with serving(kit, server_ssl_context(paths)) as port:
            endpoint = ApnsEndpoint(
                host="127.0.0.1", port=port, ca_file=paths.ca, server_hostname="example.org"
            )
            with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
                await tcp_connector(endpoint, connect_timeout=5.0)()


async def test_a_server_without_h2_is_a_clear_connect_error(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(paths.cert), str(paths.key))
    context.set_alpn_protocols(["http/1.1"])

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with trio.move_on_after(5):
            await stream.do_handshake()
            await stream.receive_some(1)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_ssl_over_tcp, handler, 0, context, host="127.0.0.1")
            (listener,) = await nursery.start(serve)
            port = listener.transport_listener.socket.getsockname()[1]
            endpoint = ApnsEndpoint(
                host="127.0.0.1", port=port, ca_file=paths.ca, server_hostname="localhost"
            )
            with pytest.raises(ConnectError, match="ALPN h2"):
                await tcp_connector(endpoint, connect_timeout=5.0)()
            nursery.cancel_scope.cancel()


async def test_nothing_listening_is_a_clear_connect_error() -> None:
    with trio.fail_after(30):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        for listener in listeners:
            await listener.aclose()  # the port is now closed
        endpoint = ApnsEndpoint(host="127.0.0.1", port=port, tls=False)
        with pytest.raises(ConnectError, match=f"cannot reach APNs at 127.0.0.1:{port}: .*refused"):
            await tcp_connector(endpoint, connect_timeout=5.0)()
