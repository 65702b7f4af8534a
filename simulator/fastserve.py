"""Trio shell of the accept-all benchmark sink: sockets, TLS and the sink's own CPU accounting.

One task per connection moves bytes between the stream and `FastSinkProtocol`: read up to 64 KiB
(over TLS: every record that read brought in), feed it, write back everything produced in one
`send_all`. No locks and no per-request work here: the cost per request (frame parsing, reading
the request's `apns-id` through HPACK, the answer) stays in the pure core. `SinkStats` lets the
simulator report its own rate and CPU time, which shows whether a benchmark measured the client
or this server.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

import trio

from simulator.fastsink import FastSinkProtocol

RECEIVE_SIZE = 65536


@dataclass(frozen=True, slots=True)
class SinkReport:
    """The sink's throughput over a measured interval, from its own clocks."""

    requests: int
    connections: int
    bytes_in: int
    bytes_out: int
    wall_s: float
    cpu_s: float

    @property
    def rps(self) -> float:
        """Requests answered per wall-clock second."""
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Process CPU time spent per answered request, in microseconds."""
        return self.cpu_s * 1e6 / self.requests if self.requests else 0.0

    @property
    def cpu_load(self) -> float:
        """cpu_s / wall_s: near 1.0 means the sink was the bottleneck on its core."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Plain figures for JSON reports."""
        return {
            "requests": self.requests,
            "connections": self.connections,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "rps": self.rps,
            "cpu_us_per_request": self.cpu_us_per_request,
            "cpu_load": self.cpu_load,
        }


class SinkStats:
    """Counters summed over live and finished connections, measured from the last `restart`.

    CPU time is the whole process's (`time.process_time`), so run the sink in its own process when
    the figure matters.
    """

    def __init__(self) -> None:
        self._live: set[FastSinkProtocol] = set()
        self._done = [0, 0, 0]  # requests, bytes in, bytes out of closed connections
        self._connections = 0
        self._base = (0, 0, 0, 0)
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def attach(self, protocol: FastSinkProtocol) -> None:
        """Count a new connection; its counters are read live until `detach`."""
        self._connections += 1
        self._live.add(protocol)

    def detach(self, protocol: FastSinkProtocol) -> None:
        """Fold a finished connection into the totals."""
        self._live.discard(protocol)
        self._done[0] += protocol.requests
        self._done[1] += protocol.bytes_in
        self._done[2] += protocol.bytes_out

    @property
    def open_connections(self) -> int:
        """Connections being served right now."""
        return len(self._live)

    def _totals(self) -> tuple[int, int, int, int]:
        requests, bytes_in, bytes_out = self._done
        for p in self._live:
            requests += p.requests
            bytes_in += p.bytes_in
            bytes_out += p.bytes_out
        return requests, bytes_in, bytes_out, self._connections

    def restart(self) -> None:
        """Start a new measured interval now (e.g. after a warm-up)."""
        self._base = self._totals()
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def snapshot(self) -> SinkReport:
        """Figures since the last `restart` (or since creation)."""
        totals = self._totals()
        requests, bytes_in, bytes_out, connections = (
            now - base for now, base in zip(totals, self._base, strict=True)
        )
        return SinkReport(
            requests=requests,
            connections=connections,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            wall_s=time.perf_counter() - self._wall0,
            cpu_s=time.process_time() - self._cpu0,
        )

    def report(self) -> dict[str, float | int]:
        """`snapshot()` as a dict: requests, wall_s, cpu_s, rps, cpu_us_per_request, ..."""
        return self.snapshot().as_dict()


class _Plain:
    """h2c: the byte stream as it is."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def start(self) -> None:
        """Nothing to negotiate."""

    async def receive(self) -> bytes | bytearray:
        return await self.stream.receive_some(RECEIVE_SIZE)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


class _TLS:
    """TLS over a byte stream through `ssl.SSLObject`, one socket read yielding all its records.

    `trio.SSLStream.receive_some` hands back a single TLS record per call, so a client that writes
    one request per record costs one wake-up and one `send` per request. Draining every record a
    read brought in lets the sink answer them all with one write, as it does over h2c.
    """

    def __init__(self, stream: trio.abc.Stream, context: ssl.SSLContext) -> None:
        self.stream = stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._eof = False

    async def start(self) -> None:
        """Complete the handshake (ALPN is whatever the context offers)."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise trio.BrokenResourceError("closed during the TLS handshake") from None
        await self._flush()

    async def receive(self) -> bytes | bytearray:
        """All plaintext decrypted from the next socket read(s); empty at end of stream."""
        plain = bytearray()
        while not self._eof:
            try:
                while chunk := self._tls.read(RECEIVE_SIZE):
                    plain += chunk
                self._eof = True  # an empty read is the peer's close_notify
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                self._eof = True
            if plain:
                break
            await self._flush()  # e.g. answers to a KeyUpdate
            if not await self._fill():
                break
        return plain

    async def send(self, data: bytes) -> None:
        self._tls.write(data)
        await self._flush()

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(RECEIVE_SIZE)
        self._incoming.write(data)
        return bool(data)

    async def _flush(self) -> None:
        out = self._outgoing.read()
        if out:
            await self.stream.send_all(out)


async def serve_sink_stream(
    stream: trio.abc.Stream,
    stats: SinkStats | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_concurrent_streams: int = 1000,
    apns_id: str | None = None,
) -> None:
    """Run one accept-all HTTP/2 connection over `stream` until either side closes it.

    With `ssl_context`, TLS runs here over the raw stream (see `_TLS`); the context should offer
    ALPN `h2` (`ctx.set_alpn_protocols(["h2"])`), which APNs clients require. Answers echo each
    request's `apns-id`; requests without one get `apns_id`, or a fresh id when it is None.
    """
    protocol = FastSinkProtocol(max_concurrent_streams=max_concurrent_streams, apns_id=apns_id)
    link = _Plain(stream) if ssl_context is None else _TLS(stream, ssl_context)
    if stats is not None:
        stats.attach(protocol)
    try:
        await link.start()
        await link.send(protocol.data_to_send())
        while not protocol.closed:
            data = await link.receive()
            if not data:
                break
            protocol.receive_data(data)
            out = protocol.data_to_send()
            if out:
                await link.send(out)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        pass  # the peer went away or spoke broken TLS: nothing left to answer
    finally:
        if stats is not None:
            stats.detach(protocol)
        await trio.aclose_forcefully(stream)


async def serve_fast_sink(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    stats: SinkStats | None = None,
    max_concurrent_streams: int = 1000,
    apns_id: str | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on host:port and answer every request `200` until cancelled.

    With `ssl_context` the connections speak TLS (offer ALPN `h2` in it); without, plaintext h2c
    with prior knowledge. `task_status.started` receives the bound port, so port 0 works.
    `apns_id` is as for `serve_sink_stream` (None: a fresh id for each request without one).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await serve_sink_stream(
            stream,
            stats,
            ssl_context=ssl_context,
            max_concurrent_streams=max_concurrent_streams,
            apns_id=apns_id,
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
