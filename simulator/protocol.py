"""The fake APNs server's HTTP/2 connection, sans-IO: bytes in, events out, bytes to send.

`ApnsServerProtocol` wraps an `h2` server connection and adds what APNs does on top of plain
HTTP/2 (apns.md §4):

- MAX_CONCURRENT_STREAMS is the simulator's to swing (1 until the first valid token, then ~1000,
  optionally 1 after a rejection). A stream above the limit is refused with RST_STREAM
  REFUSED_STREAM, as APNs does when the limit drops (pushy#486), instead of h2's connection error.
- GOAWAY carries a JSON `{"reason": ...}` debug payload, and streams already received are still
  answered after it, the simulator's or the client's: a graceful drain (RFC 9113 §6.8, through
  `engine.apns.h2compat`, which also spares h2's O(open streams) count on every new stream).
- Request bodies are buffered only up to a cap (the payload limit plus one byte), so a client that
  streams megabytes cannot grow memory; the validator still sees the true size.

No trio, no clock: the shell (`simulator.server`) feeds `receive_data` and writes `data_to_send`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from engine.apns import wire
from engine.apns.h2compat import AdvertisedOnlySettings, DrainingH2Connection
from engine.apns.reasons import Reason


@dataclass(frozen=True, slots=True)
class Request:
    """A complete request as received: pseudo-headers split out, other headers kept in order."""

    stream_id: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    body_size: int  # the true size, even when more than the buffered `body` arrived


@dataclass(frozen=True, slots=True)
class RequestReady:
    """A request whose END_STREAM arrived: answer it with `respond`."""

    request: Request


@dataclass(frozen=True, slots=True)
class StreamTurnedAway:
    """A stream opened above the current limit, or after our GOAWAY, was refused with
    RST_STREAM(REFUSED_STREAM) (apns.md §4)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamCancelled:
    """The client reset a stream it had opened; nothing is to be answered."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The client sent GOAWAY or broke the protocol; `error` says which (None: clean GOAWAY)."""

    error: str | None


ServerEvent = RequestReady | StreamTurnedAway | StreamCancelled | ConnectionEnded


@dataclass(slots=True)
class _Partial:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytearray
    size: int = 0


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class ApnsServerProtocol:
    """One HTTP/2 connection of the fake APNs, sans-IO."""

    def __init__(self, *, initial_max_streams: int = 1, body_cap: int = wire.MAX_PAYLOAD) -> None:
        self._partial: dict[int, _Partial] = {}
        self._answering: set[int] = set()  # complete requests not yet answered
        self._pending_body: dict[int, bytes] = {}  # response bodies waiting for window
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self._h2 = DrainingH2Connection(config, client_streams=self._open_streams)
        # The stream limit is advertised, and enforced here one stream at a time (apns.md §4).
        self._h2.local_settings = AdvertisedOnlySettings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: initial_max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: 8000,  # APNs' value (apns.md §4)
            },
        )
        self._body_cap = body_cap + 1
        self.max_streams = initial_max_streams
        self.goaway_sent = False
        self.last_stream_id = 0  # highest stream id this side will process
        self.closed = False
        self.streams_received = 0

    # -- outbound -------------------------------------------------------------------------
    def initiate(self) -> None:
        """Queue the server preface (SETTINGS)."""
        self._h2.initiate_connection()

    def data_to_send(self) -> bytes:
        """Everything queued for the wire, in order."""
        return self._h2.data_to_send()

    def _open_streams(self) -> int:
        """Open client streams, as h2 counts them: receiving, awaiting an answer, or still
        sending an answer's body."""
        return len(self._partial) + len(self._answering) + len(self._pending_body)

    def set_max_streams(self, value: int) -> None:
        """Announce a new MAX_CONCURRENT_STREAMS and enforce it from now on (apns.md §4)."""
        if value == self.max_streams or self.closed:
            return
        self.max_streams = value
        self._h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: value})

    def respond(
        self,
        stream_id: int,
        status: int,
        apns_id: str,
        body: bytes = b"",
        *,
        unique_id: str | None = None,
    ) -> None:
        """Answer a request as APNs does (apns.md §3): 200 headers only, errors with a JSON body."""
        self._answering.discard(stream_id)
        if self.closed or stream_id not in self._h2.streams:
            return
        headers: list[tuple[bytes, bytes]] = [
            (b":status", str(status).encode()),
            (b"apns-id", apns_id.encode()),
        ]
        if unique_id is not None:
            headers.append((b"apns-unique-id", unique_id.encode()))
        try:
            if not body:
                self._h2.send_headers(stream_id, headers, end_stream=True)
                return
            headers.append((b"content-type", b"application/json"))
            self._h2.send_headers(stream_id, headers)
            self._send_body(stream_id, body)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The client reset the stream while we were answering: nothing left to do.
            self._pending_body.pop(stream_id, None)

    def _send_body(self, stream_id: int, body: bytes) -> None:
        window = self._h2.local_flow_control_window(stream_id)
        if window >= len(body):
            self._h2.send_data(stream_id, body, end_stream=True)
            return
        if window > 0:
            self._h2.send_data(stream_id, body[:window])
        self._pending_body[stream_id] = body[window:]

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.INTERNAL_ERROR) -> None:
        """Reset a stream (a fault-plan reset, or a refusal)."""
        self._answering.discard(stream_id)
        self._partial.pop(stream_id, None)
        self._pending_body.pop(stream_id, None)
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, code)

    def goaway(
        self, reason: Reason | None, *, error_code: ErrorCodes = ErrorCodes.NO_ERROR
    ) -> None:
        """Send GOAWAY with `{"reason": ...}` but keep answering streams already received.

        APNs drains (apns.md §4): streams up to `last_stream_id` are still answered, later ones
        refused; the connection's drain keeps h2 taking and sending their frames.
        """
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self._h2.close_connection(
            error_code=error_code,
            additional_data=json.dumps({"reason": reason.value}).encode() if reason else b"",
            last_stream_id=self.last_stream_id,
        )

    @property
    def in_flight(self) -> int:
        """Requests received (complete or not) and not yet answered."""
        return len(self._partial) + len(self._answering)

    @property
    def drained(self) -> bool:
        """After GOAWAY: nothing left to answer or to flush."""
        return self.goaway_sent and self.in_flight == 0 and not self._pending_body

    # -- inbound --------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray) -> list[ServerEvent]:
        """Feed bytes from the wire; never raises on bad input (the connection ends instead)."""
        if self.closed:
            return []
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY(PROTOCOL_ERROR or the like); the shell flushes then closes.
            self.closed = True
            return [ConnectionEnded(f"protocol error: {type(exc).__name__}")]
        out: list[ServerEvent] = []
        for event in h2_events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event, out)
        return out

    def _on_request(self, event: h2.events.RequestReceived, out: list[ServerEvent]) -> None:
        sid = event.stream_id
        self.streams_received += 1
        if self.goaway_sent and sid > self.last_stream_id:
            self.reset(sid, ErrorCodes.REFUSED_STREAM)  # opened after our GOAWAY: unprocessed
            out.append(StreamTurnedAway(sid))
            return
        if self.in_flight >= self.max_streams:
            self.reset(sid, ErrorCodes.REFUSED_STREAM)
            out.append(StreamTurnedAway(sid))
            return
        # After our GOAWAY every new stream is above `last_stream_id` (stream ids only grow, RFC
        # 9113 §5.1.1) and was turned away above: the GOAWAY's last stream id stays as sent.
        self.last_stream_id = max(self.last_stream_id, sid)
        method, path = "", ""
        headers: list[tuple[str, str]] = []
        for name, value in event.headers or ():
            key, text = _text(name), _text(value)
            if key == ":method":
                method = text
            elif key == ":path":
                path = text
            elif not key.startswith(":"):
                headers.append((key, text))
        self._partial[sid] = _Partial(method, path, tuple(headers), bytearray())

    def _on_data(self, event: h2.events.DataReceived, out: list[ServerEvent]) -> None:
        # Acknowledge at once: the body is buffered (capped) here, never in h2's windows.
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        partial = self._partial.get(event.stream_id)
        if partial is None:
            return
        data = event.data or b""
        partial.size += len(data)
        room = self._body_cap - len(partial.body)
        if room > 0:
            partial.body += data[:room]

    def _on_stream_ended(self, event: h2.events.StreamEnded, out: list[ServerEvent]) -> None:
        if event.stream_id in self._partial:
            self._complete(event.stream_id, out)

    def _complete(self, sid: int, out: list[ServerEvent]) -> None:
        partial = self._partial.pop(sid)
        self._answering.add(sid)
        request = Request(
            sid, partial.method, partial.path, partial.headers, bytes(partial.body), partial.size
        )
        out.append(RequestReady(request))

    def _on_reset(self, event: h2.events.StreamReset, out: list[ServerEvent]) -> None:
        sid = event.stream_id
        known = self._partial.pop(sid, None) is not None or sid in self._answering
        self._answering.discard(sid)
        self._pending_body.pop(sid, None)
        if known and event.remote_reset:
            out.append(StreamCancelled(sid))

    def _on_window(self, event: h2.events.WindowUpdated, out: list[ServerEvent]) -> None:
        for sid in list(self._pending_body) if event.stream_id == 0 else [event.stream_id]:
            body = self._pending_body.pop(sid, None)
            if body is not None:
                with contextlib.suppress(
                    h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError
                ):
                    self._send_body(sid, body)

    def _on_goaway(self, event: h2.events.ConnectionTerminated, out: list[ServerEvent]) -> None:
        code = event.error_code
        clean = code is None or int(code) == int(ErrorCodes.NO_ERROR)
        out.append(ConnectionEnded(None if clean else f"client GOAWAY error code {int(code or 0)}"))


_HANDLERS: dict[
    type[h2.events.Event], Callable[[ApnsServerProtocol, Any, list[ServerEvent]], None]
] = {
    h2.events.RequestReceived: ApnsServerProtocol._on_request,
    h2.events.DataReceived: ApnsServerProtocol._on_data,
    h2.events.StreamEnded: ApnsServerProtocol._on_stream_ended,
    h2.events.StreamReset: ApnsServerProtocol._on_reset,
    h2.events.WindowUpdated: ApnsServerProtocol._on_window,
    h2.events.ConnectionTerminated: ApnsServerProtocol._on_goaway,
}
"""Event type → handler, in the manner of h2's own dispatch tables."""
