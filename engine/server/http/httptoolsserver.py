"""The HTTP/1.1 front with httptools (llhttp, a C parser) in place of h11: same rules, less CPU.

`HttptoolsServer` is `H11Server` (`engine.server.http.h11server`) with another parser: the
accept loop, the connection cap and who gives way (`engine.server.http.slots`), the whole-wait
bounds on slow and idle clients, h2c prior knowledge handed to hypercorn, graceful shutdown, the
app call and the JSON error answers are the same code. What differs is how a connection's bytes
become requests and answers:

- llhttp parses every byte it is given at once (pipelined requests included), calling back for
  the URL, each header and each body piece; the callbacks fill `_Request`s in a queue that is
  answered in order. More bytes are read only once every complete request was answered, so what
  is buffered stays bounded by one read plus one body;
- the checks h11 makes and llhttp does not are made here, so a bad request gets the answer the
  h11 front gives it: a request head over `max_head` (counted as h11 counts it: the target plus
  each header's name, value and 4) gets 431; an HTTP/1.1 request without exactly one `Host`
  header, a target with whitespace, or anything llhttp refuses gets 400; a body past the limit
  is cut there and the app's 413 answers it, then the connection closes;
- the response is encoded here (status line, the app's headers, `content-length`, `date`, and
  `connection: close` when the connection ends after it) and written with one socket write;
- keep-alive as h11 does it: HTTP/1.1 without `Connection: close`; an HTTP/1.0 request is answered
  and the connection closed. `Upgrade: h2c` on HTTP/1.1 is answered over HTTP/1.1, as the h11
  front does, and the connection goes on.

Chosen with `[server] http_parser = "httptools"` (see `engine.server.http.server`).
"""

from __future__ import annotations

import math
import os
from collections import deque
from typing import Final
from urllib.parse import unquote

import httptools
import trio

from engine.server.http.h11server import (
    _REASONS,
    RECEIVE_SIZE,
    H11Server,
    Message,
    Scope,
    _address,
    _Closed,
)
from engine.server.http.slots import Phase, Slot

__all__ = ["HttptoolsServer"]

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_VALUE: Final = frozenset(b"\r\n\x00")


class _Request:
    """One request as the parser's callbacks fill it in."""

    __slots__ = (
        "body",
        "codings",
        "complete",
        "error",
        "head_done",
        "head_size",
        "headers",
        "hosts",
        "keep_alive",
        "length",
        "method",
        "over",
        "size",
        "url",
        "version",
        "wants_continue",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.head_size = 0
        self.hosts = 0
        self.codings: list[bytes] | None = None  # Transfer-Encoding's, if it came
        self.length: bytes | None = None  # Content-Length, if it came
        self.method = b""
        self.version = "1.1"
        self.keep_alive = False
        self.wants_continue = False
        self.head_done = False
        self.complete = False
        self.over = False  # the body went past the limit: cut there
        self.error: tuple[int, str] | None = None  # answer this and close, do not run the app


class _Requests:
    """The parser's callback target: the requests of one connection, oldest first."""

    def __init__(self, max_head: int, body_limit: int) -> None:
        self.queue: deque[_Request] = deque()
        self.current: _Request | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._max_head = max_head
        self._body_limit = body_limit
        self._raw_head = 0  # bytes of reads that began and ended inside the current head
        self._resuming = False  # a primed head is being parsed (`_resume_body`)

    @property
    def pending(self) -> bool:
        """Whether bytes of a request not yet answered were read."""
        return bool(self.queue)

    def feed(self, data: bytes) -> None:
        """Parse `data`; a refused request ends the queue with its error."""
        inside = self.current is not None and not self.current.head_done
        if self.current is None and data[:1] in (b"\r", b"\n"):
            # llhttp skips empty lines before a request line; h11, and so the h11 front, refuses.
            self._refuse(400, "no request line received")
            return
        rest = data
        while rest:
            try:
                self.parser.feed_data(rest)
                rest = b""
            except httptools.HttpParserUpgrade as upgrade:
                # An `Upgrade:` request's head was parsed; it is answered over HTTP/1.1 and
                # what follows is parsed as HTTP/1.1 again (its body first, if it has one).
                rest = rest[int(upgrade.args[0]) :]
                self.parser = httptools.HttpRequestParser(self)
                self._resume_body()
            except httptools.HttpParserError as exc:
                message = str(exc) or "the request is malformed"
                if "transfer-encoding" in message.lower() and "invalid" in message.lower():
                    self._refuse(501, "Only Transfer-Encoding: chunked is supported")
                else:
                    self._refuse(400, message)
                return
        request = self.current
        if request is None or request.head_done:
            self._raw_head = 0
        elif inside:
            # A head still arriving, bounded before its headers are whole (as h11 bounds an
            # incomplete event): a header that never ends cannot grow without end.
            self._raw_head += len(data)
            if self._raw_head > self._max_head and request.error is None:
                request.error = (431, "the request head is too large")

    def _resume_body(self) -> None:
        """Read the body of the upgrade request just parsed, if it has one, as HTTP/1.1.

        httptools skips the body of an upgrade request (for the new protocol to read); the
        upgrade is declined here, so the body must be read as h11 reads it, else its bytes
        would be parsed as a request of their own. The fresh parser is primed with a head of
        the same framing; its callbacks fill the upgrade request in (`_resuming`).
        """
        request = self.queue[-1] if self.queue else None
        if request is None or request.error is not None or request.method == b"CONNECT":
            return
        if request.codings:
            framing = b"transfer-encoding: chunked"
        elif request.length is not None and request.length.strip(b" \t") not in (b"", b"0"):
            framing = b"content-length: " + request.length.strip(b" \t")
        else:
            return
        request.complete = False
        self.current = request
        self._resuming = True
        self.parser.feed_data(b"PUT / HTTP/1.1\r\nhost: x\r\n" + framing + b"\r\n\r\n")

    def _refuse(self, status: int, message: str) -> None:
        request = self.current or _Request()
        if self.current is None:
            self.queue.append(request)
        request.error = (status, message)

    def _grow_head(self, size: int) -> None:
        request = self.current
        if request is None:
            return
        request.head_size += size
        if request.head_size > self._max_head and request.error is None:
            request.error = (431, "the request head is too large")

    # httptools callbacks

    def on_message_begin(self) -> None:
        """A request starts."""
        if self._resuming:
            return
        self.current = _Request()
        self.queue.append(self.current)

    def on_url(self, url: bytes) -> None:
        """A piece of the request target."""
        assert self.current is not None
        if self._resuming:
            return
        self.current.url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        """A whole header (httptools joins the pieces llhttp hands over)."""
        request = self.current
        assert request is not None
        if self._resuming:
            return
        name = name.lower()
        request.headers.append((name, value))
        self._grow_head(len(name) + len(value) + 4)
        if name == b"host":
            request.hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            request.wants_continue = True
        elif name == b"content-length":
            request.length = value
        elif name == b"transfer-encoding":
            codings = [c.strip(b" \t").lower() for c in value.split(b",")]
            request.codings = (request.codings or []) + codings

    def on_headers_complete(self) -> None:
        """The head is in."""
        request = self.current
        assert request is not None
        if self._resuming:
            self._resuming = False  # the primed head is in: the body is the upgrade request's
            return
        request.method = self.parser.get_method()
        request.version = self.parser.get_http_version()
        request.keep_alive = request.version == "1.1" and self.parser.should_keep_alive()
        request.head_done = True
        self._check_head(request)

    def on_body(self, body: bytes) -> None:
        """A piece of the body; past the limit it is dropped and the request cut there."""
        request = self.current
        assert request is not None
        if request.over:
            return
        request.body.append(body)
        request.size += len(body)
        if request.size > self._body_limit:
            request.over = True

    def on_message_complete(self) -> None:
        """The request is in."""
        assert self.current is not None
        self.current.complete = True
        self.current = None

    def _check_head(self, request: _Request) -> None:
        """What h11 refuses and llhttp lets through (the head count is h11's too)."""
        if request.error is not None:
            return
        if request.head_size > self._max_head:
            request.error = (431, "the request head is too large")
        elif request.version == "1.1" and request.hosts == 0:
            request.error = (400, "Missing mandatory Host: header")
        elif request.hosts > 1:
            request.error = (400, "Found multiple Host: headers")
        elif request.version not in ("1.0", "1.1"):
            request.error = (400, "illegal request line: no HTTP/1.x version")
        elif any(b <= 0x20 or b == 0x7F for b in request.url):
            request.error = (400, "illegal request target")
        elif request.codings is not None and request.codings != [b"chunked"]:
            # llhttp reads a body of `gzip, chunked` as chunked and hands it on still coded.
            request.error = (501, "Only Transfer-Encoding: chunked is supported")


class HttptoolsServer(H11Server):
    """`H11Server` parsing HTTP/1.1 with httptools; see the module docstring."""

    async def _serve_http1(self, stream: trio.SocketStream, slot: Slot, data: bytes) -> None:
        """Serve HTTP/1.1 requests on `stream`, `data` already read from it."""
        peer = _address(stream.socket.getpeername())
        local = _address(stream.socket.getsockname())
        requests = _Requests(self._limits.max_head, self._body_limit)
        requests.feed(data)
        head_seen = False
        while True:
            front = requests.queue[0] if requests.queue else None
            if front is not None and front.error is not None:
                await self._send(stream, self._reject(*front.error))
                return
            if front is not None and (front.complete or front.over):
                requests.queue.popleft()
                if not await self._answer(stream, slot, front, peer, local):
                    return
                head_seen = False
                now = trio.current_time()
                if requests.pending:  # a pipelined request has begun already
                    self._enter(slot, Phase.READING, now + self._limits.head_timeout)
                else:
                    self._enter(slot, Phase.IDLE, now + self._limits.idle_timeout)
                continue
            if front is not None and front.head_done and not head_seen:
                # Its body is bounded from the end of the head.
                head_seen = True
                now = trio.current_time()
                self._enter(slot, Phase.READING, now + self._limits.body_timeout)
                if front.wants_continue and front.version == "1.1":
                    await self._send(stream, _CONTINUE)
            more = await self._receive(stream, slot)
            if not more:
                return
            if slot.phase is Phase.IDLE:
                # A request begins: its head is bounded from now, whatever trickles.
                now = trio.current_time()
                self._enter(slot, Phase.READING, now + self._limits.head_timeout)
            requests.feed(more)

    async def _receive(self, stream: trio.SocketStream, slot: Slot) -> bytes:
        """`H11Server._receive` on the socket's descriptor: one scheduling point per read.

        trio's `receive_some` yields to the scheduler after every read, and the bounded wait
        enters a cancel scope even when bytes are waiting; here a read that finds bytes costs
        one checkpoint, and one that finds none waits for readability under `slot.deadline`.
        """
        if slot.evicted or trio.current_time() >= slot.deadline:
            raise _Closed  # given up, or past its bound even if bytes are waiting (as h11's)
        fd = stream.socket.fileno()
        try:
            data = os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            pass
        except OSError:
            raise _Closed from None  # reset by the peer
        else:
            await trio.lowlevel.checkpoint()  # bytes were waiting: let the others run too
            return data
        while True:
            with trio.CancelScope(deadline=slot.deadline) as scope:
                slot.scope = scope
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    slot.scope = None
            if scope.cancelled_caught:
                raise _Closed
            try:
                return os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                continue  # woken without bytes: wait again, under the same deadline
            except OSError:
                raise _Closed from None

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        """`H11Server._send`, first with one write straight to the socket (nearly always all)."""
        try:
            sent = os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise _Closed from None  # the peer is gone
        if sent < len(data):
            await super()._send(stream, data[sent:])  # the rest, bounded by `send_timeout`

    async def _answer(
        self,
        stream: trio.SocketStream,
        slot: Slot,
        request: _Request,
        peer: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> bool:
        """Answer one request; whether the connection goes on to the next one."""
        self._enter(slot, Phase.BUSY, math.inf)
        raw_path, _, query = request.url.partition(b"?")
        try:
            path = unquote(raw_path.decode("ascii"))
        except UnicodeDecodeError:
            await self._send(stream, self._reject(400, "the request target is not ASCII"))
            return False
        method = request.method.decode("ascii").upper()
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": peer,
            "server": local,
        }
        body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
        start, parts = await self._call_app(scope, body)
        go_on = request.keep_alive and not request.over and not self._closing
        out = None if start is None else self._encode_response(start, parts, go_on, method)
        if out is None:
            await self._send(
                stream, self._raw(500, b'{"error":"internal","message":"internal error"}')
            )
            return False
        await self._send(stream, out)
        return go_on and not self._closing

    def _encode_response(
        self, start: Message, parts: list[bytes], go_on: bool, method: str
    ) -> bytes | None:
        """The whole response as bytes; None if the app's head cannot be sent as it is."""
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        status = int(start["status"])
        if not 100 <= status <= 999:
            return None
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        framed = False
        for name, value in start.get("headers", ()):
            name, value = bytes(name), bytes(value)
            if not name or _BAD_VALUE.intersection(name + value) or b":" in name:
                return None
            lower = name.lower()
            if lower == b"transfer-encoding":
                return None  # the body is whole: it is framed by length
            framed = framed or lower == b"content-length"
            lines.append(b"%s: %s\r\n" % (name, value))
        if not framed:
            lines.append(b"content-length: %d\r\n" % len(body))
        if not go_on:
            lines.append(b"connection: close\r\n")
        lines.append(b"date: %s\r\n\r\n" % self._now())
        if body and method != "HEAD" and status >= 200 and status not in (204, 304):
            lines.append(body)
        return b"".join(lines)
