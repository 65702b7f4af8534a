"""Trio shell of the accept-all benchmark sink: sockets, TLS and the sink's own CPU accounting.

One task per connection moves bytes between the stream and `FastSinkProtocol`: read up to 64 KiB,
feed it, write back everything produced in one `send_all`. No locks and no per-request work: the
cost per request stays in the pure core. `SinkStats` lets the simulator report its own rate and
CPU time, which shows whether a benchmark measured the client or this server.
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


async def serve_sink_stream(
    stream: trio.abc.Stream,
    stats: SinkStats | None = None,
    *,
    max_concurrent_streams: int = 1000,
    apns_id: str | None = None,
) -> None:
    """Run one accept-all HTTP/2 connection over `stream` until either side closes it."""
    protocol = FastSinkProtocol(max_concurrent_streams=max_concurrent_streams, apns_id=apns_id)
    if stats is not None:
        stats.attach(protocol)
    try:
        # Sending the server preface first also drives the TLS handshake on an SSLStream.
        await stream.send_all(protocol.data_to_send())
        while not protocol.closed:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                break
            protocol.receive_data(data)
            out = protocol.data_to_send()
            if out:
                await stream.send_all(out)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the peer went away (or the TLS handshake failed): nothing left to answer
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

    With `ssl_context` the listener speaks TLS; the context should offer ALPN `h2`
    (`ctx.set_alpn_protocols(["h2"])`), which APNs clients require. Without it, plaintext h2c
    with prior knowledge. `task_status.started` receives the bound port, so port 0 works.
    """
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(
        await trio.open_tcp_listeners(port, host=host)
    )
    bound = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners
        ]

    async def handler(stream: trio.abc.Stream) -> None:
        await serve_sink_stream(
            stream, stats, max_concurrent_streams=max_concurrent_streams, apns_id=apns_id
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
