"""Node-to-node HTTP/1.1: hand a call to the node that owns its partition and bring back the answer.

Any node accepts any call; one that belongs to a partition another node owns is sent on to that
node's internal address by a `Forwarder`, over plain TCP (the nodes share a private network),
one request at a time per connection (`cluster.wire` encodes it and parses the answer).

- Connections are kept alive and pooled per address: at most `max_connections` per address (a
  call waits for a free one: backpressure, never unbounded growth), idle ones closed after
  `idle_timeout` seconds (on the next call, or by `reap`), most recently used first.
- Each call has one absolute deadline (`timeout`, 30 s: the owner may be waiting on APNs), from
  waiting for a connection to the last byte of the answer.
- Retry, once, only in the standard safe case of a stale keep-alive connection: it came from the
  pool, and writing to it failed or it reached its end before a single byte of the answer. An
  idle connection the peer has already closed is noticed before it is used and dropped without
  sending anything. No other failure is retried: a call that may have run on the owner must not
  run twice. `ForwardError.sent` says whether the owner may have received the call.
- Hop-by-hop headers (`connection` and the headers it names, `keep-alive`, `transfer-encoding`,
  `te`, `trailer`, `upgrade`, `proxy-*`, and `expect`: the whole body is sent at once) are not
  relayed either way; `content-length` is set from the body; `host` names the owner; the request
  carries `x-lockstep-forwarded: <this node's id>`, so the owner never forwards it again.

A `ForwardError` names the address and what went wrong, never a header or the body (they hold
API keys and device tokens).
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from engine.server.cluster.wire import AnswerReader, BadAnswer, Headers, encode_request

__all__ = ["FORWARDED_HEADER", "ForwardError", "Forwarded", "Forwarder", "parse_address"]

FORWARDED_HEADER: Final = b"x-lockstep-forwarded"
"""Carried by a forwarded request: the forwarding node's id (the owner answers, never forwards)."""

_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"content-length",  # recomputed from the body
    }
)
# What a forwarded request does not carry on as it came: this node sets them.
_NOT_RELAYED: Final = _HOP_BY_HOP | {b"host", FORWARDED_HEADER}
_READ_SIZE: Final = 65536


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The owner's answer: status, end-to-end headers (lower-case names), the whole body."""

    status: int
    headers: Headers
    body: bytes


class ForwardError(Exception):
    """No answer from the owner. `sent`: the request may have reached it (and run there)."""

    def __init__(self, address: str, what: str, *, sent: bool) -> None:
        super().__init__(f"forwarding to {address}: {what}")
        self.address = address
        self.sent = sent


class _StaleConnection(Exception):
    """A pooled connection failed before any byte of the answer: safe to try a fresh one."""


# -- sans-IO: headers, addresses, the connection's state ------------------------------------------


def parse_address(address: str) -> tuple[str, int]:
    """`"host:port"` or `"[v6]:port"` -> (host, port); ValueError for anything else."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: {address!r}")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port_text)


def end_to_end(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = _HOP_BY_HOP
) -> Headers:
    """`headers` (lower-cased) without the hop-by-hop ones, those `connection` names included,
    nor those in `drop` (the hop-by-hop ones by default)."""
    pairs = [(bytes(name).lower(), bytes(value)) for name, value in headers]
    for name, value in pairs:
        if name == b"connection":  # rare: it names more headers to drop
            drop = drop | {token.strip().lower() for token in value.split(b",")}
    return tuple([pair for pair in pairs if pair[0] not in drop and pair[0][:6] != b"proxy-"])


def request_headers(
    address: str, headers: Iterable[tuple[bytes, bytes]], body: bytes, node_id: str
) -> Headers:
    """The forwarded request's headers: end-to-end ones, `host`, the length, who forwards."""
    kept = end_to_end(headers, _NOT_RELAYED)
    return (
        (b"host", address.encode("ascii")),
        *kept,
        (b"content-length", str(len(body)).encode()),
        (FORWARDED_HEADER, node_id.encode("ascii")),
    )


def _check_node_id(node_id: str) -> str:
    if not node_id or not node_id.isascii() or not node_id.isprintable():
        raise ValueError("a node id is printable ASCII (it travels in a header)")
    return node_id


def _poller(stream: trio.SocketStream) -> select.poll:
    """A poll object watching `stream` for bytes to read (made once per connection)."""
    poller = select.poll()
    poller.register(stream.socket.fileno(), select.POLLIN)
    return poller


# -- the pool -------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    stream: trio.SocketStream
    idle_since: float = 0.0
    reused: bool = False
    poller: select.poll | None = None

    def peer_closed(self) -> bool:
        """An idle keep-alive connection with something to read has been closed by its peer
        (or holds bytes nobody asked for): either way it cannot carry a request."""
        if self.poller is None:
            self.poller = _poller(self.stream)
        return bool(self.poller.poll(0))

    def close(self) -> None:
        # Synchronous: it runs on every way out, cancellation included.
        self.stream.socket.close()


@dataclass(eq=False)
class _Pool:
    """One address's connections: a slot per connection, open or about to be; the address
    parsed once."""

    slots: trio.Semaphore
    host: str
    port: int
    idle: list[_Connection] = field(default_factory=list)  # oldest first


@dataclass(eq=False)
class _Progress:
    """How far one call got: decides what a failure means."""

    sent: bool = False  # request bytes were written (the owner may run the call)


class Forwarder:
    """Forward calls to other nodes over pooled HTTP/1.1 connections (see the module docstring).

    `node_id` goes in `x-lockstep-forwarded`. Close it with `aclose()`; run `reap()` in a
    nursery to close idle connections while no call comes (calls also close them).
    """

    def __init__(
        self,
        node_id: str,
        *,
        max_connections: int = 16,
        idle_timeout: float = 20.0,
        timeout: float = 30.0,
        max_response: int = 16 * 1024 * 1024,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.node_id = _check_node_id(node_id)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout  # below the peers' own (60 s): they close first rarely
        self.timeout = timeout
        self.max_response = max_response
        self.opened = 0  # connections opened, ever (the pool's reuse shows in it)
        self.retried = 0  # calls sent again after a stale pooled connection
        self._pools: dict[str, _Pool] = {}

    def __repr__(self) -> str:
        return f"Forwarder(node_id={self.node_id!r}, addresses={len(self._pools)})"

    async def forward(
        self,
        address: str,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> Forwarded:
        """Send the call to `address` and return its answer; `ForwardError` without one."""
        pool = self._pools.get(address) or self._pool(address)
        try:
            request = encode_request(
                method, target, request_headers(address, headers, body, self.node_id)
            )
        except (ValueError, UnicodeEncodeError):
            raise ForwardError(address, "the request cannot be sent on", sent=False) from None
        request += body
        now = trio.current_time()
        self._close_idle(now - self.idle_timeout)
        progress = _Progress()
        with trio.CancelScope(deadline=now + self.timeout):
            # A free slot is taken without a scheduling point (the exchange has its own).
            try:
                pool.slots.acquire_nowait()
            except trio.WouldBlock:
                await pool.slots.acquire()
            try:
                return await self._exchange(address, pool, request, progress)
            finally:
                pool.slots.release()
        raise ForwardError(address, f"no answer within {self.timeout:g} s", sent=progress.sent)

    def _pool(self, address: str) -> _Pool:
        """A new address's pool; `ForwardError` for an address that is not host:port."""
        try:
            host, port = parse_address(address)
        except ValueError:
            raise ForwardError(address, "not a host:port address", sent=False) from None
        slots = trio.Semaphore(self.max_connections)
        pool = self._pools[address] = _Pool(slots, host, port)
        return pool

    def close_idle(self) -> None:
        """Close every connection idle for `idle_timeout` seconds or more."""
        self._close_idle(trio.current_time() - self.idle_timeout, every=True)

    def _close_idle(self, oldest: float, *, every: bool = False) -> None:
        for pool in self._pools.values():
            if not every and (not pool.idle or pool.idle[0].idle_since > oldest):
                continue  # the oldest idle connection is young enough: so are the others
            keep = [c for c in pool.idle if c.idle_since > oldest]
            for conn in pool.idle:
                if conn.idle_since <= oldest:
                    conn.close()
            pool.idle = keep

    async def reap(self) -> None:
        """Close idle connections as they pass `idle_timeout`, until cancelled."""
        while True:
            await trio.sleep(self.idle_timeout / 2)
            self.close_idle()

    async def aclose(self) -> None:
        """Close every idle connection (calls in flight close theirs as they end)."""
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle = []
        await trio.lowlevel.checkpoint()

    async def _exchange(
        self, address: str, pool: _Pool, request: bytes, progress: _Progress
    ) -> Forwarded:
        conn = self._take(pool)
        if conn is not None:
            try:
                return await self._round_trip(address, pool, conn, request, progress)
            except _StaleConnection:
                # The one retry, on a new connection (never retried): the owner did not take
                # the call, or it would have begun to answer.
                progress.sent = False
                self.retried += 1
        conn = await self._connect(address, pool.host, pool.port)
        try:
            return await self._round_trip(address, pool, conn, request, progress)
        except _StaleConnection:
            raise ForwardError(address, "closed before answering", sent=True) from None

    def _take(self, pool: _Pool) -> _Connection | None:
        """The most recently used idle connection that is still usable."""
        while pool.idle:
            conn = pool.idle.pop()
            if not conn.peer_closed():
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _connect(self, address: str, host: str, port: int) -> _Connection:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            why = exc.strerror or "refused"
            raise ForwardError(address, f"cannot connect ({why})", sent=False) from None
        self.opened += 1
        return _Connection(stream)

    async def _round_trip(
        self,
        address: str,
        pool: _Pool,
        conn: _Connection,
        request: bytes,
        progress: _Progress,
    ) -> Forwarded:
        """One request and its answer on `conn`; the connection goes back to the pool only if
        the exchange ended cleanly and both sides may go on."""
        kept = False
        try:
            progress.sent = True
            try:
                await _send(conn.stream, request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if conn.reused:
                    raise _StaleConnection from None
                raise ForwardError(address, "connection lost while sending", sent=True) from None
            reader = await self._read_answer(address, conn)
            if reader.reusable:
                conn.idle_since = trio.current_time()
                pool.idle.append(conn)
                kept = True
            return Forwarded(reader.status, end_to_end(reader.headers), reader.body)
        finally:
            if not kept:
                conn.close()

    async def _read_answer(self, address: str, conn: _Connection) -> AnswerReader:
        reader = AnswerReader(self.max_response)
        while not reader.complete:
            # The request was just sent: the answer cannot be there yet, so wait first.
            chunk = await self._receive(address, conn, reader.received, wait=reader.received == 0)
            try:
                reader.feed(chunk)
            except BadAnswer as exc:
                raise ForwardError(address, f"bad answer ({exc})", sent=True) from None
        return reader

    async def _receive(
        self, address: str, conn: _Connection, received: int, *, wait: bool = False
    ) -> bytes:
        """The next bytes of the answer. A pooled connection that ends or resets before the
        first byte is stale (`_StaleConnection`); any other end before the answer is whole is a
        `ForwardError`."""
        chunk = await _receive(conn.stream, wait=wait)
        if chunk:
            return chunk
        if received == 0 and conn.reused:
            raise _StaleConnection
        what = "closed before answering" if received == 0 else "the answer was cut short"
        raise ForwardError(address, what, sent=True)


# -- the socket, straight: one scheduling point per read (as the API's httptools front) ----------


async def _send(stream: trio.SocketStream, data: bytes) -> None:
    """One write to the descriptor (nearly always all of it); the rest through trio."""
    try:
        sent = os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError:
        raise trio.BrokenResourceError("the peer is gone") from None
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])


async def _receive(stream: trio.SocketStream, *, wait: bool = False) -> bytes:
    """The next bytes; b"" at the end of the stream (or a reset). trio's `receive_some` yields
    after every read and costs several calls more; this waits only when nothing is there (or
    first, with `wait`: a read that would only fail is not tried)."""
    fd = stream.socket.fileno()
    waited = wait
    if wait:
        await trio.lowlevel.wait_readable(fd)
    while True:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            waited = True
            continue
        except OSError:
            data = b""  # reset by the peer: the same as its end, for what follows
        if not waited:
            await trio.lowlevel.checkpoint()  # bytes were there already: let the others run
        return data
