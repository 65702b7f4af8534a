"""HTTP/1.1 on the wire for node-to-node calls, sans-IO: the request's bytes, the answer parsed.

The forwarder (`cluster.forward`) writes one request at a time on a kept-alive connection and
reads its answer before the next: no pipelining. The request is encoded here by hand and the
answer parsed with httptools (llhttp, in C), the parser of the API's own HTTP front: a forwarding
hop then costs about what serving a call costs, where h11 would take several times more.

- `encode_request` refuses (ValueError) a method, target, header name or value that could break
  the framing (CR, LF, NUL; a name that is not a token): such bytes never go out.
- `AnswerReader` takes the answer's bytes as they come. An answer must be framed
  (`content-length` or chunked), as every Lockstep answer is: one that would end only with the
  connection is refused. Interim answers (1xx) are skipped. After the answer, `reusable` says
  whether the connection may carry another request: HTTP/1.1 without `connection: close`, and
  not a byte beyond the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import httptools

__all__ = ["AnswerReader", "BadAnswer", "Headers", "encode_request"]

Headers = tuple[tuple[bytes, bytes], ...]

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKENS: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_UNSAFE: Final = re.compile(rb"[\x00\r\n]")
_TARGET: Final = re.compile(rb"[!-~]+")  # visible ASCII: no space, no control byte


class BadAnswer(ValueError):
    """The peer's bytes are not an HTTP/1.1 answer this client takes."""


def encode_request(method: str, target: str, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The request head (the body follows as is); ValueError for bytes that cannot go out."""
    verb = method.encode("ascii")
    path = target.encode("latin-1")
    if not _TOKEN.fullmatch(verb) or not _TARGET.fullmatch(path):
        raise ValueError("the method or target cannot be sent")
    pairs = list(headers)
    # Every name and every value checked at once: one regex call each, whatever the count.
    # (A name holding the separator would pass for two: the count of separators tells.)
    names = b"\n".join([name for name, _ in pairs])
    values = b"".join([value for _, value in pairs])
    if pairs and (
        not _TOKENS.fullmatch(names) or names.count(b"\n") >= len(pairs) or _UNSAFE.search(values)
    ):
        raise ValueError("a header cannot be sent")
    lines = [b"%s: %s\r\n" % (name, value.strip(b" \t")) for name, value in pairs]
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (verb, path, b"".join(lines))


class AnswerReader:
    """Parses one answer (see the module docstring); `complete` once it is whole."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self.received = 0  # bytes fed, the answer's and any beyond it
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self.complete = False
        self._keep_alive = False
        self._beyond = False  # bytes came after the answer

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request (once `complete`)."""
        return self.complete and self._keep_alive and not self._beyond

    @property
    def body(self) -> bytes:
        """The answer's body (whole once `complete`)."""
        return b"".join(self._chunks)

    def feed(self, data: bytes) -> None:
        """Parse the next bytes of the answer; `BadAnswer` for anything else."""
        self.received += len(data)
        if self.complete:
            self._beyond = True
            return
        try:
            self._parser.feed_data(data)
        # A callback's `BadAnswer` comes wrapped; an upgrade is not an `HttpParserError`.
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:  # bytes after a whole answer: it stands, the connection does not
                self._beyond = True
                return
            raise _bad(exc) from None

    def end(self) -> None:
        """The peer closed the connection: the answer must already be whole."""
        if not self.complete:
            raise BadAnswer("the answer was cut short")

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A message starts (a second one: bytes beyond the answer)."""
        if self.complete:
            self._beyond = True

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header, kept in order (lower-case name)."""
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        """The head is whole: its status, and whether the body is framed."""
        self.status = self._parser.get_status_code()
        if self.status >= 200 and not self._framed():
            raise BadAnswer("an answer without content-length or chunked framing")

    def on_body(self, body: bytes) -> None:
        """Body bytes, within `max_body`."""
        self._size += len(body)
        if self._size > self._max_body:
            raise BadAnswer(f"the answer is over {self._max_body} bytes")
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        """The answer is whole (an interim one is forgotten)."""
        if self.status < 200:  # an interim answer: the final one follows
            self.headers, self._chunks, self._size = [], [], 0
            return
        if self.complete:
            self._beyond = True
            return
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()

    def _framed(self) -> bool:
        if self.status in (204, 304):
            return True  # no body, by definition
        return any(name in (b"content-length", b"transfer-encoding") for name, _ in self.headers)


def _bad(exc: Exception) -> BadAnswer:
    if isinstance(exc, BadAnswer):
        return exc
    if isinstance(exc, httptools.HttpParserUpgrade):
        return BadAnswer("the answer switches protocols")
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, BadAnswer):  # raised in a callback, wrapped by the parser
        return cause
    return BadAnswer(str(exc) or "malformed answer")
