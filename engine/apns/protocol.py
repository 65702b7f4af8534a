"""Sans-IO APNs client protocol over HTTP/2: push requests in, bytes out; bytes in, answers out.

`ApnsClientProtocol` wraps one `h2` client connection. It never touches a socket, a clock or trio:
a connection shell feeds `receive_data()` with what it read, writes `data_to_send()` once per
batch, and acts on the small frozen event records `receive_data()` returns.

Throughput comes from five choices made here once, so no caller has to remember them:

1. Pipelining: `send()` only encodes; many requests go out in one `data_to_send()` (one write).
2. h2's header validation and normalization are off: every header is built here from trusted parts.
3. `authorization` is indexed in HPACK, so after the first request it costs one or two bytes.
   (h2's normalization would mark it never-indexed and resend ~200 bytes of JWT per request.)
4. No Huffman coding: in pure Python it costs more CPU than it saves bytes, and APNs values (JWTs,
   hex tokens, UUIDs) barely compress.
5. The usual request (HEADERS + one DATA frame) and the usual answer (one HEADERS frame with
   END_STREAM) bypass h2's per-frame objects and events, with h2's state kept exactly in step.

The HTTP/2 layer (`engine.apns.h2conn`) holds the HPACK policy (apns.md §1) and those fast paths;
under it, `engine.apns.h2compat` adjusts h2 twice: no O(open streams) scan on every new stream, and
traffic of open streams still flowing after a GOAWAY, with the output queued before it kept (h2
issue #1181; RFC 9113 §6.8), so the answers APNs sends while draining are not lost.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgspec
from h2 import events as h2e
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings

from engine.apns import wire
from engine.apns.h2conn import H2_ERRORS, AnswerHeaders, ApnsH2Connection
from engine.apns.reasons import Reason, parse_reason

__all__ = [
    "ApnsClientProtocol",
    "ApnsProtocolError",
    "ClientEvent",
    "ConnectionClosed",
    "GoAway",
    "NoSlotError",
    "PingAcked",
    "PushAnswered",
    "PushRequest",
    "SlotsChanged",
    "StreamRefused",
    "StreamReset",
]

_MAX_STREAM_ID: Final = 2**31 - 1
_DEFAULT_WINDOW: Final = 65_535  # RFC 9113 §6.9.2: every window starts here
_MAX_BODY: Final = 65_536  # keep at most this much of an answer body (APNs sends a few dozen bytes)
_TAIL_CACHE: Final = 64  # distinct (topic, push type, priority) header tails kept pre-built


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class PushRequest:
    """One push to one device token (apns.md §1)."""

    token: str
    topic: str
    body: bytes
    push_type: str = wire.LIVE_ACTIVITY_PUSH_TYPE
    priority: int = 10
    expiration: int | None = None
    apns_id: str | None = None
    collapse_id: str | None = None


@dataclass(frozen=True, slots=True)
class PushAnswered:
    """APNs answered a push (apns.md §3). `reason_text` keeps the raw reason, known or not."""

    stream_id: int
    status: int  # 0 if the peer sent no usable :status
    apns_id: str | None
    reason: Reason | None
    reason_text: str | None
    timestamp_ms: int | None  # 410 only: when the token stopped being valid
    retry_after: float | None  # seconds, when a numeric `retry-after` header came along


@dataclass(frozen=True, slots=True)
class StreamRefused:
    """RST_STREAM(REFUSED_STREAM): the request was not processed; retry elsewhere (apns.md §4)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """Any other RST_STREAM: the outcome of the request is unknown."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server stops taking streams (apns.md §4).

    `unprocessed` streams (ids above `last_stream_id`) were never processed: retry them on another
    connection. Streams at or below `last_stream_id` may still be answered on this one.
    """

    last_stream_id: int
    error_code: int
    reason: Reason | None
    debug_text: str
    unprocessed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SlotsChanged:
    """The server's SETTINGS changed how many streams may be open at once (apns.md §4)."""

    max_concurrent_streams: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The server acknowledged `ping(payload)`: the connection is alive."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is finished; nothing more will arrive on it. Emitted once.

    `error` is None after a clean drain (GOAWAY NO_ERROR or `close()`, all streams answered).
    `unanswered` are streams whose response had not started: APNs may or may not have processed
    them (unlike `GoAway.unprocessed`), so a retry elsewhere can deliver a push twice. Streams
    whose response headers had arrived are reported as `PushAnswered` first (with whatever body
    came), since their status is known.
    """

    error: str | None
    unanswered: tuple[int, ...] = ()


ClientEvent: TypeAlias = (
    PushAnswered
    | StreamRefused
    | StreamReset
    | GoAway
    | SlotsChanged
    | PingAcked
    | ConnectionClosed
)
"""Everything `receive_data()` can report."""


class ApnsProtocolError(Exception):
    """A call the protocol cannot honour in its current state."""


class NoSlotError(ApnsProtocolError):
    """`send()` without a free stream slot; check `available_slots` first."""


# --------------------------------------------------------------------------------------------
# Answer parsing


class _ErrorBody(msgspec.Struct):
    """`{"reason": ..., "timestamp": ...}` (apns.md §3); loosely typed, checked by hand."""

    reason: Any = None
    timestamp: Any = None


_BODY_DECODER: Final = msgspec.json.Decoder(_ErrorBody)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _int_or_none(value: Any) -> int | None:
    """A JSON timestamp as an int; floats truncate, numeric strings parse, anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _parse_body(body: bytes) -> tuple[Reason | None, str | None, int | None]:
    """(reason, reason_text, timestamp_ms) from an error body; garbage keeps its raw text."""
    if not body:
        return None, None, None
    try:
        doc = _BODY_DECODER.decode(body)
    except msgspec.DecodeError:  # also ValidationError: valid JSON, but not an object
        return None, _text(body), None
    if not isinstance(doc.reason, str):
        return None, _text(body), _int_or_none(doc.timestamp)
    return parse_reason(doc.reason), doc.reason, _int_or_none(doc.timestamp)


def _goaway_reason(data: bytes | None) -> tuple[Reason | None, str]:
    """GOAWAY debug data: JSON `{"reason": ...}`, plain text, or nothing (apns.md §4)."""
    if not data:
        return None, ""
    text = _text(data)
    try:
        doc = _BODY_DECODER.decode(data)
    except msgspec.DecodeError:
        return None, text
    return (parse_reason(doc.reason) if isinstance(doc.reason, str) else None), text


def _retry_after(value: bytes) -> float | None:
    """`retry-after` in seconds; an HTTP-date would need a clock, so it is left to the caller."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class _Response:
    """A response whose headers arrived and whose body is still coming."""

    __slots__ = ("apns_id", "body", "retry_after", "status")

    def __init__(self, status: int, apns_id: str | None, retry_after: float | None) -> None:
        self.status = status
        self.apns_id = apns_id
        self.retry_after = retry_after
        self.body = bytearray()

    def answer(self, stream_id: int) -> PushAnswered:
        reason, text, timestamp = _parse_body(bytes(self.body))
        return PushAnswered(
            stream_id, self.status, self.apns_id, reason, text, timestamp, self.retry_after
        )


# --------------------------------------------------------------------------------------------
# The protocol

_PATH_PREFIX: Final = wire.DEVICE_PATH_PREFIX.encode()
_H_PATH: Final = b":path"
_H_AUTHORIZATION: Final = wire.H_AUTHORIZATION.encode()
_H_TOPIC: Final = wire.H_TOPIC.encode()
_H_PUSH_TYPE: Final = wire.H_PUSH_TYPE.encode()
_H_PRIORITY: Final = wire.H_PRIORITY.encode()
_H_EXPIRATION: Final = wire.H_EXPIRATION.encode()
_H_ID: Final = wire.H_ID.encode()
_H_COLLAPSE_ID: Final = wire.H_COLLAPSE_ID.encode()

_Header: TypeAlias = tuple[bytes, bytes]
_Handler: TypeAlias = Callable[[Any, list[ClientEvent]], None]


class ApnsClientProtocol:
    """One HTTP/2 connection to APNs, as a sans-IO state machine (see the module docstring).

    Call `initiate()` once, then `send()` while `available_slots` > 0. Every call that produces
    output leaves it in `data_to_send()`. Stream slots start at 1 until the server's first
    SETTINGS (apns.md §4: one stream until a valid token was posted) and then follow every
    SETTINGS update.
    """

    def __init__(self, authority: str, *, initial_window: int = 1 << 20) -> None:
        if not _DEFAULT_WINDOW <= initial_window <= _MAX_STREAM_ID:
            raise ValueError(f"initial_window must be in [{_DEFAULT_WINDOW}, {_MAX_STREAM_ID}]")
        self._initial_window = initial_window
        # Open streams; None until response headers arrive. Insertion order is stream-id order.
        self._streams: dict[int, _Response | None] = {}
        self._blocked: dict[int, memoryview] = {}  # unsent body remainders, waiting for window
        self._h2 = ApnsH2Connection(
            H2Configuration(
                client_side=True,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,  # it only joins cookie fields
                header_encoding=None,
            ),
            self._streams,
            authority.encode(),
        )
        self._pseudo: tuple[_Header, ...] = (
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
        )
        self._authorization: _Header | None = None
        self._tails: dict[tuple[str, str, int], tuple[_Header, ...]] = {}
        self._next_id = 1
        self._max_streams = 1
        self._settings_seen = False
        self._accepting = False  # initiated, and no GOAWAY either way
        self._draining = False
        self._dead = False
        self._drain_error: str | None = None
        self._handlers: dict[type, _Handler] = {
            h2e.ResponseReceived: self._on_response,
            h2e.DataReceived: self._on_data,
            h2e.StreamEnded: self._on_stream_ended,
            h2e.StreamReset: self._on_reset,
            h2e.WindowUpdated: self._on_window,
            h2e.RemoteSettingsChanged: self._on_settings,
            h2e.ConnectionTerminated: self._on_goaway,
            h2e.PingAckReceived: self._on_ping_ack,
            AnswerHeaders: self._on_answer,
        }

    # -- state ---------------------------------------------------------------------------------

    @property
    def available_slots(self) -> int:
        """Streams that may be opened now: the peer's limit minus open streams; 0 once stopping."""
        if not self._accepting or self._next_id > _MAX_STREAM_ID:
            return 0
        return max(0, self._max_streams - len(self._streams))

    @property
    def open_streams(self) -> int:
        """Requests sent and not yet answered, refused, reset or given up."""
        return len(self._streams)

    @property
    def is_draining(self) -> bool:
        """A GOAWAY was sent or received: no new streams, open ones may still be answered."""
        return self._draining

    @property
    def is_closed(self) -> bool:
        """Nothing more will happen on this connection: the shell may close the socket."""
        return self._dead or (self._draining and not self._streams)

    # -- output --------------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the preface, SETTINGS (no push, a large stream window) and a connection window."""
        if self._accepting or self._draining or self._dead:
            raise ApnsProtocolError("initiate() may be called once")
        self._h2.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: self._initial_window,
                SettingCodes.MAX_CONCURRENT_STREAMS: 100,  # h2's default; push is off anyway
                SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 16,
            },
        )
        self._h2.initiate_connection()
        if self._initial_window > _DEFAULT_WINDOW:
            self._h2.increment_flow_control_window(self._initial_window - _DEFAULT_WINDOW)
        self._accepting = True

    def set_authorization(self, header_value: bytes | None) -> None:
        """The `authorization` value (b"bearer <JWT>") for every following request; None: none."""
        self._authorization = None if header_value is None else (_H_AUTHORIZATION, header_value)
        self._tails.clear()

    def send(self, request: PushRequest) -> int:
        """Encode one request (HEADERS, then DATA with END_STREAM); return its stream id.

        Raises `NoSlotError` when `available_slots` is 0. A body larger than the peer's
        flow-control window is sent as far as the window allows; the rest follows as the server
        opens windows (WINDOW_UPDATE or SETTINGS).
        """
        stream_id = self._next_id
        if (
            not self._accepting
            or len(self._streams) >= self._max_streams
            or stream_id > _MAX_STREAM_ID
        ):
            raise NoSlotError(self._no_slot_reason())
        tail = self._tails.get((request.topic, request.push_type, request.priority))
        if tail is None:
            tail = self._build_tail(request)
        headers = [*self._pseudo, (_H_PATH, _PATH_PREFIX + request.token.encode()), *tail]
        if request.expiration is not None:
            headers.append((_H_EXPIRATION, b"%d" % request.expiration))
        if request.apns_id is not None:
            headers.append((_H_ID, request.apns_id.encode()))
        if request.collapse_id is not None:
            headers.append((_H_COLLAPSE_ID, request.collapse_id.encode()))
        h2 = self._h2
        body = request.body
        if h2.send_request(stream_id, headers, body):
            pass  # the usual case, without h2's frame objects
        elif not body:
            h2.send_headers(stream_id, headers, end_stream=True)
        else:
            h2.send_headers(stream_id, headers)
            size = len(body)
            if size <= h2.max_outbound_frame_size and size <= h2.local_flow_control_window(
                stream_id
            ):
                h2.send_data(stream_id, body, end_stream=True)
            else:
                self._blocked[stream_id] = memoryview(body)
                self._push_body(stream_id)
        self._streams[stream_id] = None
        self._next_id = stream_id + 2
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Give up on an open stream (its answer is overdue, say): RST_STREAM(CANCEL).

        Its slot is free at once and nothing more is reported for it; an answer already on its
        way is dropped. Unknown or settled stream ids are ignored.
        """
        if stream_id not in self._streams:
            return  # also once closed: every way to `_dead` leaves `_streams` empty
        del self._streams[stream_id]
        self._blocked.pop(stream_id, None)
        with contextlib.suppress(ProtocolError):  # already closed on h2's side
            self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)

    def ping(self, payload: bytes) -> None:
        """Queue a PING (8 bytes); its ack comes back as `PingAcked(payload)`."""
        if len(payload) != 8:
            raise ValueError("a PING payload is exactly 8 bytes")
        if self._dead:
            raise ApnsProtocolError("the connection is closed")
        self._h2.ping(payload)

    def close(self, reason: str = "", *, error_code: int = 0) -> None:
        """Queue a GOAWAY and stop opening streams; open streams may still be answered.

        With nothing open the connection is closed at once (`is_closed`, no event); otherwise
        `ConnectionClosed` follows the last answer.
        """
        if self._dead:
            return
        self._stop()
        self._h2.close_connection(error_code=error_code, additional_data=reason.encode())
        if not self._streams:
            self._dead = True

    def data_to_send(self) -> bytes:
        """All bytes queued for the peer since the last call."""
        return self._h2.data_to_send()

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes read from the socket; b"" means end of file. Never raises on bad input."""
        if self._dead:
            return []
        if not data:
            return self.connection_lost()
        try:
            h2_events = self._h2.receive(data)
        except H2_ERRORS as exc:
            # h2 queued a GOAWAY; the shell should write it, then close the socket.
            return self._fail(f"protocol error: {type(exc).__name__}: {exc}")
        out: list[ClientEvent] = []
        handlers = self._handlers
        for event in h2_events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event, out)
        if self._draining and not self._streams and not self._dead:
            self._dead = True
            out.append(ConnectionClosed(self._drain_error))
        return out

    def connection_lost(self, error: str | None = None) -> list[ClientEvent]:
        """The socket ended (EOF or error): report every open stream and close."""
        if self._dead:
            return []
        if self._draining and not self._streams:
            self._dead = True
            return [ConnectionClosed(self._drain_error)]
        return self._fail(error or "connection closed by peer")

    # -- internals -----------------------------------------------------------------------------

    def _no_slot_reason(self) -> str:
        if self._dead or self._draining:
            return "the connection is closing (GOAWAY): open a new one"
        if not self._accepting:
            return "initiate() the connection first"
        if self._next_id > _MAX_STREAM_ID:
            return "stream ids are exhausted: open a new connection"
        return f"all {self._max_streams} stream slots are in use"

    def _build_tail(self, request: PushRequest) -> tuple[_Header, ...]:
        """The headers that stay the same for a (topic, push type, priority), built once."""
        if len(self._tails) >= _TAIL_CACHE:
            self._tails.clear()
        tail = ((self._authorization,) if self._authorization is not None else ()) + (
            (_H_TOPIC, request.topic.encode()),
            (_H_PUSH_TYPE, request.push_type.encode()),
            (_H_PRIORITY, b"%d" % request.priority),
        )
        self._tails[(request.topic, request.push_type, request.priority)] = tail
        return tail

    def _push_body(self, stream_id: int) -> bool:
        """Send as much of a blocked body as the windows allow; True once all of it is sent."""
        h2 = self._h2
        view = self._blocked[stream_id]
        try:
            while view:
                room = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
                if room <= 0:
                    self._blocked[stream_id] = view
                    return False
                chunk, view = view[:room], view[room:]
                h2.send_data(stream_id, bytes(chunk), end_stream=not view)
        except StreamClosedError:
            pass  # h2 closed the stream in the same read (it reset it): nothing more to send
        del self._blocked[stream_id]
        return True

    def _flush_blocked(self) -> None:
        for stream_id in list(self._blocked):
            if not self._push_body(stream_id) and self._h2.outbound_flow_control_window <= 0:
                return

    def _forget(self, stream_id: int) -> None:
        """A stream answered early: stop sending the rest of its body (RFC 9113 §8.1)."""
        if self._blocked.pop(stream_id, None) is not None:
            # h2 may have reset it already (a second response on the stream, in the same read).
            with contextlib.suppress(StreamClosedError):
                self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)

    def _stop(self) -> None:
        self._accepting = False
        self._draining = True

    def _fail(self, error: str) -> list[ClientEvent]:
        out: list[ClientEvent] = []
        unanswered: list[int] = []
        for stream_id, response in self._streams.items():
            if response is None:
                unanswered.append(stream_id)
            else:
                out.append(response.answer(stream_id))
        self._streams.clear()
        self._blocked.clear()
        self._stop()
        self._dead = True
        out.append(ConnectionClosed(error, tuple(unanswered)))
        return out

    def _on_response(self, event: h2e.ResponseReceived, out: list[ClientEvent]) -> None:
        self._respond(event.stream_id, event.headers, event.stream_ended is not None, out)

    def _on_answer(self, event: AnswerHeaders, out: list[ClientEvent]) -> None:
        # The usual 200: one HEADERS frame with END_STREAM (apns.md §3), from h2conn's fast path.
        self._respond(event.stream_id, event.headers, True, out)

    def _respond(
        self, stream_id: int, headers: list[_Header], ended: bool, out: list[ClientEvent]
    ) -> None:
        if stream_id not in self._streams:
            return
        status, apns_id, retry_after = 0, None, None
        for name, value in headers:
            if name == b":status":
                status = int(value) if value.isdigit() else 0
            elif name == _H_ID:
                apns_id = value.decode("ascii", "replace")
            elif name == b"retry-after":
                retry_after = _retry_after(value)
        if not ended:
            self._streams[stream_id] = _Response(status, apns_id, retry_after)
            return
        del self._streams[stream_id]
        self._forget(stream_id)
        out.append(PushAnswered(stream_id, status, apns_id, None, None, None, retry_after))

    def _on_data(self, event: h2e.DataReceived, out: list[ClientEvent]) -> None:
        # Hand the window back at once, so answers never stall the connection window.
        if event.flow_controlled_length:
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        response = self._streams.get(event.stream_id)
        if response is not None and len(response.body) < _MAX_BODY:
            response.body += event.data

    def _on_stream_ended(self, event: h2e.StreamEnded, out: list[ClientEvent]) -> None:
        stream_id = event.stream_id
        if stream_id not in self._streams:
            return
        response = self._streams.pop(stream_id)
        self._forget(stream_id)
        # Ended without response headers: h2 refuses DATA before them ("cannot receive data
        # before headers"), and HEADERS that end the stream are the response (`_respond` settles
        # it), so this is for an h2 that would behave otherwise: the stream is still settled.
        if response is None:  # pragma: no cover - h2 ends no stream before its response
            out.append(PushAnswered(stream_id, 0, None, None, None, None, None))
        else:
            out.append(response.answer(stream_id))

    def _on_reset(self, event: h2e.StreamReset, out: list[ClientEvent]) -> None:
        stream_id = event.stream_id
        if stream_id not in self._streams:
            return
        del self._streams[stream_id]
        self._blocked.pop(stream_id, None)
        code = int(event.error_code)
        if code == ErrorCodes.REFUSED_STREAM:
            out.append(StreamRefused(stream_id))
        else:
            out.append(StreamReset(stream_id, code))

    def _on_window(self, event: h2e.WindowUpdated, out: list[ClientEvent]) -> None:
        if self._blocked:
            self._flush_blocked()

    def _on_settings(self, event: h2e.RemoteSettingsChanged, out: list[ClientEvent]) -> None:
        if self._blocked:  # INITIAL_WINDOW_SIZE or MAX_FRAME_SIZE may have grown
            self._flush_blocked()
        limit = self._h2.remote_settings.max_concurrent_streams
        first, self._settings_seen = not self._settings_seen, True
        if (first or SettingCodes.MAX_CONCURRENT_STREAMS in event.changed_settings) and (
            limit != self._max_streams
        ):
            self._max_streams = limit
            if self._accepting:
                out.append(SlotsChanged(limit))

    def _on_goaway(self, event: h2e.ConnectionTerminated, out: list[ClientEvent]) -> None:
        last = event.last_stream_id or 0
        code = int(event.error_code or 0)
        reason, text = _goaway_reason(event.additional_data)
        self._stop()
        unprocessed = tuple(sid for sid in self._streams if sid > last)
        for stream_id in unprocessed:
            del self._streams[stream_id]
            self._blocked.pop(stream_id, None)
        if code != ErrorCodes.NO_ERROR:
            self._drain_error = f"GOAWAY error {code}: {text or reason or 'no debug data'}"
        out.append(GoAway(last, code, reason, text, unprocessed))

    def _on_ping_ack(self, event: h2e.PingAckReceived, out: list[ClientEvent]) -> None:
        out.append(PingAcked(event.ping_data))
