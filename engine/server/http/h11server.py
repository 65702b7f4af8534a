"""A lean HTTP/1.1 server for the ASGI app on trio + h11, with h2c handed to hypercorn.

Why: hypercorn's general ASGI machinery (a task per request, an event per body chunk, a socket
write per response part) costs several times what the API itself costs per call. This server
does the minimum the API needs, on one task per connection:

- one `h11.Connection` per connection; requests are answered in order (keep-alive and
  pipelining per h11: `start_next_cycle` after each exchange, `Connection: close` honoured);
- the request body is read whole before the app runs, bounded by the app's `max_body` + 1, so
  the app's own 413 logic still sees a body that is too large (it is handed over as one
  `http.request` message with `more_body=False`); a connection whose body was cut short is
  closed after the answer;
- the response is collected from `http.response.start` / `http.response.body` and written with
  one socket write (head, body and end of message joined);
- a malformed request gets a 400 (a request head over `max_head`: 431) with a JSON error body,
  and the connection is closed;
- every wait on the client is bounded as a whole, never per byte (a client that trickles a byte
  at a time gains nothing): a request's head must arrive within `head_timeout` of its first byte
  (a fresh connection's first head: of the accept), its body within `body_timeout` of the end of
  the head, an answer must be taken within `send_timeout`, and a keep-alive connection waits at
  most `idle_timeout` for its next request; past a bound the connection is closed;
- at most `max_connections` connections at a time. When all are taken and a new client waits
  in the accept backlog, the longest-idle connection is closed to make room (else the one whose
  request began longest ago; never one whose request the app is working on): see
  `engine.server.http.slots`. Slow or idle clients cannot keep the door shut;
- a connection that opens with the HTTP/2 preface (h2c prior knowledge) is handed, bytes
  already read included, to hypercorn's trio connection handler (`h2c`, as
  `engine.apns.h2compat.hypercorn_h2c` builds it). `Upgrade: h2c` on an HTTP/1.1 request is
  ignored: the request is answered over HTTP/1.1 (RFC 9113 §3.1 dropped the upgrade; a client
  that wants HTTP/2 opens with the preface);
- no ASGI lifespan protocol: the app (`ApiApp`) has no startup or shutdown work; the caller
  owns the resources the app uses.

Graceful shutdown (`shutdown_trigger` returned): the listeners close, idle keep-alive
connections close at once, a request in flight is answered (with `Connection: close`) within
`graceful_timeout`, after which whatever is left is cancelled.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote

import h11
import trio

from engine.apns.h2wire import PREFACE
from engine.server.http.slots import Phase, Slot, SlotTable

__all__ = ["DEFAULT_PARSER", "PARSERS", "H11Limits", "H11Server", "PrefacedStream"]

log = logging.getLogger("lockstep.http")

RECEIVE_SIZE: Final = 65536
_RESOURCE_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)  # accept() failing for want of resources: wait and retry, as trio.serve_listeners does
PARSERS: Final = ("h11", "httptools")  # what parses HTTP/1.1 (`engine.server.http.server`)
DEFAULT_PARSER: Final = "httptools"
_REASONS: Final = {s.value: s.phrase.encode() for s in HTTPStatus}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]
H2Handler = Callable[[trio.abc.HalfCloseableStream], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class H11Limits:
    """Bounds of the server, in seconds and bytes.

    `max_body=None`: the app's `max_body` + 1 (else 1 MiB). `parser`: one of `PARSERS`, which
    HTTP/1.1 parser the front uses (h11, or httptools: `engine.server.http.httptoolsserver`).

    The timeouts bound whole waits, not single reads; see the module docstring. The defaults
    are the `[server]` defaults of `engine.server.settings`.
    """

    max_connections: int = 1024
    idle_timeout: float = 60.0
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    max_head: int = 16384
    max_body: int | None = None
    parser: str = DEFAULT_PARSER


class PrefacedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first `receive_some` returns bytes that were already read from it.

    `socket` is exposed (hypercorn reads the peer and local addresses from it); there is no
    `do_handshake`, which is how hypercorn tells a plain stream from a TLS one.
    """

    def __init__(self, stream: trio.SocketStream, head: bytes) -> None:
        self._stream = stream
        self._head = head
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The already-read bytes first, then the socket's."""
        if self._head:
            data, self._head = self._head, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write to the socket."""
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Delegate to the socket stream."""
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Half-close the socket."""
        await self._stream.send_eof()

    async def aclose(self) -> None:
        """Close the socket."""
        await self._stream.aclose()


class _Closed(Exception):
    """The peer went away, stalled past a bound or was given up: close without answering."""


class H11Server:
    """Serve an ASGI app over HTTP/1.1 (and h2c via `h2c`) on trio; see the module docstring."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        limits: H11Limits = H11Limits(),
        h2c: H2Handler | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._app = app
        self._limits = limits
        self._h2c = h2c
        self._on_shutdown = on_shutdown
        app_max = getattr(app, "max_body", None)
        self._body_limit = (
            limits.max_body
            if limits.max_body is not None
            else (app_max + 1 if isinstance(app_max, int) else 1 << 20)
        )
        self._table = SlotTable(limits.max_connections)
        self._changed = trio.lowlevel.ParkingLot()  # a slot freed, or one can be given up
        self._closing = False
        self._date_second = -1
        self._date = b""

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
        shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
        graceful_timeout: float = 5.0,
        sock: socket.socket | None = None,
    ) -> None:
        """Listen on host:port, report the bound port, serve until `shutdown_trigger` returns.

        `sock`, when given, is a socket already bound and listening (a `lockstep serve --workers`
        worker's, engine/server/workers.py): it is served instead of opening one on host:port.
        """
        if sock is None:
            listeners = await trio.open_tcp_listeners(port, host=host)
        else:
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
        bound = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as connections:
            try:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(self._accept_loop, listener, connections)
                    task_status.started(bound)
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    else:
                        await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                for listener in listeners:
                    listener.socket.close()  # synchronous: works while being cancelled too
            await self._begin_shutdown()
            connections.cancel_scope.deadline = trio.current_time() + graceful_timeout

    async def _begin_shutdown(self) -> None:
        self._closing = True
        for slot in self._table.idle():
            _interrupt(slot)
        if self._on_shutdown is not None:
            await self._on_shutdown()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await self._make_room(listener)
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                log.error("accept failed (%s); retrying in 100 ms", errno.errorcode[exc.errno])
                await trio.sleep(0.1)
                continue
            # A fresh connection's first request head is bounded from the accept.
            slot = self._table.open(trio.current_time() + self._limits.head_timeout)
            nursery.start_soon(self._connection, stream, slot)

    async def _make_room(self, listener: trio.SocketListener) -> None:
        """Return once a slot is free, giving one up while a client waits for it."""
        while self._table.full:
            await trio.lowlevel.wait_readable(listener.socket)  # a client is in the backlog
            victim = self._table.victim()
            if victim is not None:
                log.debug("connection cap reached: closing the longest-idle connection")
                _interrupt(victim)
            await self._changed.park()

    async def _connection(self, stream: trio.SocketStream, slot: Slot) -> None:
        try:
            await self._serve_connection(stream, slot)
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._table.close(slot)
            self._changed.unpark_all()
            await trio.aclose_forcefully(stream)

    def _enter(self, slot: Slot, phase: Phase, deadline: float) -> None:
        """`slot` starts `phase`, its reads bounded by `deadline` (an absolute trio time)."""
        if phase is Phase.IDLE and self._closing:
            raise _Closed
        slot.deadline = deadline
        self._table.enter(slot, phase)
        if phase is not Phase.BUSY and self._changed:  # (nobody waiting: nothing to wake)
            self._changed.unpark_all()  # it can be given up now

    async def _serve_connection(self, stream: trio.SocketStream, slot: Slot) -> None:
        data = await self._receive(stream, slot)
        self._enter(slot, Phase.READING, slot.deadline)  # the accept's head bound goes on
        while len(data) < len(PREFACE) and data and PREFACE.startswith(data):
            more = await self._receive(stream, slot)
            if not more:
                return
            data += more
        if data.startswith(PREFACE) and self._h2c is not None:
            self._enter(slot, Phase.BUSY, math.inf)  # hypercorn's own timeouts from here
            await self._h2c(PrefacedStream(stream, data))
            return
        await self._serve_http1(stream, slot, data)

    async def _serve_http1(self, stream: trio.SocketStream, slot: Slot, data: bytes) -> None:
        """Serve HTTP/1.1 requests on `stream`, `data` already read from it (h11 parses)."""
        peer = _address(stream.socket.getpeername())
        local = _address(stream.socket.getsockname())
        h11conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_head)
        h11conn.receive_data(data)
        while True:
            try:
                event = h11conn.next_event()
                if event is h11.NEED_DATA:
                    more = await self._receive(stream, slot)
                    if more and slot.phase is Phase.IDLE:
                        # A request begins: its head is bounded from now, whatever trickles.
                        now = trio.current_time()
                        self._enter(slot, Phase.READING, now + self._limits.head_timeout)
                    h11conn.receive_data(more)
                    continue
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed, or a state h11 will not go on from
                if not await self._exchange(stream, slot, h11conn, event, peer, local):
                    return
                now = trio.current_time()
                if h11conn.trailing_data[0]:  # a pipelined request has begun already
                    self._enter(slot, Phase.READING, now + self._limits.head_timeout)
                else:
                    self._enter(slot, Phase.IDLE, now + self._limits.idle_timeout)
            except h11.RemoteProtocolError as exc:
                if h11conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(stream, self._reject(exc.error_status_hint, str(exc)))
                return

    async def _receive(self, stream: trio.SocketStream, slot: Slot) -> bytes:
        """The next bytes (b"" at end of stream) before `slot.deadline`; else `_Closed`.

        `_Closed` too once the connection was given up or (idle) a shutdown began.
        """
        if slot.evicted:
            raise _Closed
        with trio.CancelScope(deadline=slot.deadline) as scope:
            slot.scope = scope
            try:
                return bytes(await stream.receive_some(RECEIVE_SIZE))
            finally:
                slot.scope = None
        raise _Closed

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        """Write `data`, bounded by `send_timeout` (a client that reads nothing is let go)."""
        with trio.move_on_after(self._limits.send_timeout):
            await stream.send_all(data)
            return
        raise _Closed

    async def _exchange(
        self,
        stream: trio.SocketStream,
        slot: Slot,
        h11conn: h11.Connection,
        request: h11.Request,
        peer: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> bool:
        """Answer one request; whether the connection goes on to the next one."""
        target = bytes(request.target)
        # h11 bounds only a head that arrives in pieces; one read can bring a whole big head.
        head_size = len(target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head_size > self._limits.max_head:
            await self._send(stream, self._reject(431, "the request head is too large"))
            return False
        self._enter(slot, Phase.READING, trio.current_time() + self._limits.body_timeout)
        body, complete = await self._read_body(stream, slot, h11conn)
        self._enter(slot, Phase.BUSY, math.inf)
        raw_path, _, query = target.partition(b"?")
        try:
            path = unquote(raw_path.decode("ascii"))
        except UnicodeDecodeError:
            await self._send(stream, self._reject(400, "the request target is not ASCII"))
            return False
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode("ascii").upper(),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),
            "client": peer,
            "server": local,
        }
        await self._send(stream, await self._run_app(scope, body, h11conn, complete))
        if not complete or self._closing:
            return False
        if h11conn.our_state is not h11.DONE or h11conn.their_state is not h11.DONE:
            return False  # Connection: close, HTTP/1.0, or a failed answer
        h11conn.start_next_cycle()
        return True

    async def _read_body(
        self, stream: trio.SocketStream, slot: Slot, h11conn: h11.Connection
    ) -> tuple[bytes, bool]:
        """The request body, up to the limit; whether it was read to its end."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = h11conn.next_event()
            if event is h11.NEED_DATA:
                if h11conn.they_are_waiting_for_100_continue:
                    await self._send(
                        stream,
                        h11conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"",
                    )
                h11conn.receive_data(await self._receive(stream, slot))
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
                size += len(event.data)
                if size > self._body_limit:
                    return b"".join(chunks), False
            elif isinstance(event, h11.EndOfMessage):
                return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), True
            else:
                raise _Closed  # the peer went away mid-body

    async def _run_app(
        self, scope: Scope, body: bytes, h11conn: h11.Connection, complete: bool
    ) -> bytes:
        """Run the app on one request; the whole response's bytes (closing ones say so)."""
        start, parts = await self._call_app(scope, body)
        if start is None:
            return self._fail(h11conn)
        close = not complete or self._closing  # a shutdown may have begun meanwhile
        try:
            return self._encode(h11conn, start, parts, close, head=scope["method"] == "HEAD")
        except h11.LocalProtocolError:
            log.exception("invalid response to %s %s", scope["method"], scope["path"][:200])
            return self._fail(h11conn)

    async def _call_app(self, scope: Scope, body: bytes) -> tuple[Message | None, list[bytes]]:
        """Run the app on one request: its `http.response.start` (None: it failed) and body."""
        start: Message | None = None
        parts: list[bytes] = []
        state = {"delivered": False, "done": False}

        async def receive() -> Message:
            if not state["delivered"]:
                state["delivered"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            if state["done"]:
                return {"type": "http.disconnect"}
            await trio.sleep_forever()  # nothing more will come before the answer
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal start
            kind = message["type"]
            if kind == "http.response.start" and start is None:
                start = message
            elif kind == "http.response.body" and start is not None and not state["done"]:
                parts.append(bytes(message.get("body", b"")))
                state["done"] = not message.get("more_body", False)
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r}")

        try:
            await self._app(scope, receive, send)
        except Exception:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"][:200])
            start = None
        return start, parts

    def _encode(
        self,
        h11conn: h11.Connection,
        start: Message,
        parts: list[bytes],
        close: bool,
        *,
        head: bool,
    ) -> bytes:
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        headers = list(start.get("headers", ()))
        framed = False
        for name, _ in headers:
            lower = bytes(name).lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                framed = True
        if not framed:
            headers.append((b"content-length", str(len(body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        headers.append((b"date", self._now()))
        status = int(start["status"])
        out = (
            h11conn.send(
                h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
            )
            or b""
        )
        if body and not head:
            out += h11conn.send(h11.Data(data=body)) or b""
        return out + (h11conn.send(h11.EndOfMessage()) or b"")

    def _fail(self, h11conn: h11.Connection) -> bytes:
        """A bare 500 after the app failed; the connection closes after it."""
        h11conn.send_failed()  # h11 must not think it can go on with this connection
        body = b'{"error":"internal","message":"internal error"}'
        return self._raw(500, body)

    def _reject(self, status: int, message: str) -> bytes:
        """The answer to a request h11 could not parse (the connection closes after it).

        h11's message may quote the offending bytes (`illegal header line: bytearray(b'...')`),
        which can be an `Authorization` header: only the words before the quote are sent back.
        """
        code = "headers_too_large" if status == 431 else "bad_request"
        body = json.dumps({"error": code, "message": _unquoted(message)[:200]}).encode()
        return self._raw(status, body)

    def _raw(self, status: int, body: bytes) -> bytes:
        reason = _REASONS.get(status, b"")
        return (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"cache-control: no-store\r\nconnection: close\r\ndate: %s\r\n\r\n%s"
            % (status, reason, len(body), self._now(), body)
        )

    def _now(self) -> bytes:
        """The Date header's value, formatted once a second."""
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = formatdate(second, usegmt=True).encode()
        return self._date


def _interrupt(slot: Slot) -> None:
    """Stop `slot`'s connection waiting on its client (now, or at its next read)."""
    slot.evicted = True
    if slot.scope is not None:
        slot.scope.cancel()


def _address(addr: Any) -> tuple[str, int] | None:
    """(host, port) of a socket address; None for anything that is not IP."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return None


def _unquoted(message: str) -> str:
    """`message` up to the first quoted client bytes (a `b'...'` or `bytearray(...)` repr)."""
    cut = min(
        (i for i in (message.find("b'"), message.find('b"'), message.find("bytearray(")) if i >= 0),
        default=-1,
    )
    if cut < 0:
        return message
    return message[:cut].rstrip(" :(") or "malformed request"
