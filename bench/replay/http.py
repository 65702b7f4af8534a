"""A small HTTP/1.1 client for replays: keep-alive connections over trio, framed by h11.

`HttpPool(origin, size=N)` keeps up to N connections open to one `http://host:port` origin and
lends one to each request; a request waits for a free connection when all N are busy. A pooled
connection the server closed while it sat idle (keep-alive timeout) is noticed on reuse: the
request is sent again once on a fresh connection, but only when no byte of an answer had arrived,
so a call is never applied twice because of the pool. Plain HTTP only (the API is served in
clear, TLS being a reverse proxy's job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["HttpError", "HttpPool", "HttpReply"]

_READ: Final = 65_536
_STALE: Final = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.RemoteProtocolError,
    ConnectionError,
    EOFError,
)


class HttpError(Exception):
    """A request that got no answer (connection refused or broken, or a timeout)."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A complete answer."""

    status: int
    body: bytes


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.answered = False  # some byte of an answer arrived on this cycle

    async def exchange(self, request: h11.Request, body: bytes) -> HttpReply:
        data = self.h11.send(request) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        status, chunks = 0, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                received = await self.stream.receive_some(_READ)
                self.answered = self.answered or bool(received)
                self.h11.receive_data(received)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return HttpReply(status, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise EOFError("connection closed during the answer")

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.answered = False
            return True
        return False


class HttpPool:
    """Keep-alive connections to one origin (see the module docstring)."""

    def __init__(
        self,
        origin: str,
        *,
        size: int = 8,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
    ) -> None:
        """Connect lazily to `origin` (`http://host:port`), at most `size` connections."""
        parts = urlsplit(origin)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://host:port origin, got {origin!r}")
        if size < 1:
            raise ValueError("size must be at least 1")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._authority = parts.netloc
        self._headers = tuple(headers)
        self._timeout = timeout
        self._idle: list[_Conn] = []
        self._slots = trio.Semaphore(size)

    def __repr__(self) -> str:  # the headers may hold a key
        return f"HttpPool({self.host}:{self.port}, idle={len(self._idle)})"

    async def request(self, method: str, target: str, body: bytes = b"") -> HttpReply:
        """Send one request and read its whole answer; raises HttpError when none comes."""
        headers = [("host", self._authority), *self._headers]
        if body or method in ("POST", "PUT"):
            headers.append(("content-length", str(len(body))))
        if body:
            headers.append(("content-type", "application/json"))
        request = h11.Request(method=method, target=target, headers=headers)
        async with self._slots:
            try:
                with trio.fail_after(self._timeout):
                    return await self._send(request, body)
            except trio.TooSlowError:
                raise HttpError(f"no answer within {self._timeout:g} s") from None

    async def _send(self, request: h11.Request, body: bytes) -> HttpReply:
        conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                return await self._exchange(conn, request, body)
            except _STALE as exc:
                if conn.answered:  # the server may have acted on it: never send it twice
                    raise HttpError(f"connection failed during the answer: {exc!r}") from None
                # Closed while idle (keep-alive timeout): send it again on a new connection.
        try:
            conn = _Conn(await trio.open_tcp_stream(self.host, self.port))
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        try:
            return await self._exchange(conn, request, body)
        except (*_STALE, h11.LocalProtocolError) as exc:
            raise HttpError(f"connection to {self.host}:{self.port} failed: {exc!r}") from None

    async def _exchange(self, conn: _Conn, request: h11.Request, body: bytes) -> HttpReply:
        try:
            reply = await conn.exchange(request, body)
        except BaseException:
            conn.stream.socket.close()  # synchronous: safe even while being cancelled
            raise
        self._keep(conn)
        return reply

    def _keep(self, conn: _Conn) -> None:
        if conn.reusable():
            self._idle.append(conn)
        else:
            conn.stream.socket.close()

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.stream.aclose()

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
