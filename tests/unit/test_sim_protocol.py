"""The fake APNs' sans-IO server connection against an in-memory h2 client.

Bytes go both ways by hand (`Pair.pump`), so each test decides what the server has received, and
when, down to the frame: windows that stay shut, bodies over the cap, frames after END_STREAM, a
connection already failed. The server shell (`simulator.server`) and its answers are covered by
tests/integration/test_sim_server.py; this module covers the HTTP/2 edges under them.
"""

from __future__ import annotations

import json

import h2.config
import h2.events
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings

from engine.apns.h2compat import DrainingH2Connection
from engine.apns.reasons import Reason
from simulator.protocol import (
    ApnsServerProtocol,
    ConnectionEnded,
    RequestReady,
    ServerEvent,
    StreamCancelled,
    StreamTurnedAway,
)
from tests.helpers.apnspeer import raw_frame

HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.push.apple.com"),
    (b":path", b"/3/device/" + b"ab" * 32),
    (b"apns-topic", b"com.example.app.push-type.liveactivity"),
]
ERROR_BODY = b'{"reason":"BadDeviceToken"}'


class Pair:
    """An `ApnsServerProtocol` and a stock h2 client connection, wired by hand.

    `window` is the client's SETTINGS_INITIAL_WINDOW_SIZE: how much of each answer body the
    server may send before the client opens the stream's window (RFC 9113 §6.9.2).
    """

    def __init__(
        self, *, max_streams: int = 100, body_cap: int = 4096, window: int = 65_535
    ) -> None:
        self.server = ApnsServerProtocol(initial_max_streams=max_streams, body_cap=body_cap)
        self.server.initiate()
        # A client that drains as APNs clients must (RFC 9113 §6.8).
        self.client = DrainingH2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.local_settings = Settings(
            client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.client.initiate_connection()
        self.client_events: list[h2.events.Event] = []
        self.pump()

    def pump(self) -> list[ServerEvent]:
        """Move bytes both ways until both sides are quiet; return the server's events."""
        events: list[ServerEvent] = []
        while True:
            to_server = self.client.data_to_send()
            if to_server:
                events += self.server.receive_data(to_server)
            to_client = self.server.data_to_send()
            if to_client:
                self.client_events += self.client.receive_data(to_client)
            if not to_server and not to_client:
                return events

    def request(self, body: bytes = b"{}") -> int:
        """Send a whole request on the next stream; return its id."""
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, HEADERS)
        self.client.send_data(sid, body, end_stream=True)
        return sid

    def received(self, sid: int) -> bytes:
        """The answer body the client has received on `sid` so far."""
        return b"".join(
            e.data
            for e in self.client_events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )

    def ended(self, sid: int) -> bool:
        """Whether the client saw the answer on `sid` end."""
        return any(
            isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.client_events
        )

    def response_headers(self, sid: int) -> dict[bytes, bytes]:
        """The answer's headers on `sid`, as the client decoded them."""
        (event,) = (
            e
            for e in self.client_events
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid
        )
        return dict(event.headers)


def ready_ids(events: list[ServerEvent]) -> list[int]:
    """The stream ids of the complete requests among `events`."""
    return [e.request.stream_id for e in events if isinstance(e, RequestReady)]


# --------------------------------------------------------------------------------------------
# Answers


def test_an_answer_carries_the_unique_id_when_given() -> None:
    # APNs adds apns-unique-id in its development environment (apns.md §3).
    pair = Pair()
    sid = pair.request()
    assert ready_ids(pair.pump()) == [sid]
    pair.server.respond(sid, 200, "ID-1", unique_id="u-1")
    pair.pump()
    headers = pair.response_headers(sid)
    assert headers[b"apns-id"] == b"ID-1" and headers[b"apns-unique-id"] == b"u-1"
    assert pair.ended(sid) and pair.server.in_flight == 0


def test_an_answer_to_an_unknown_stream_sends_nothing() -> None:
    pair = Pair()
    pair.server.respond(99, 200, "ID-1")
    assert pair.server.data_to_send() == b""


def test_an_error_body_waits_for_the_clients_window() -> None:
    # A shut stream window: the HEADERS go out, the body waits for WINDOW_UPDATEs, connection-level
    # ones included, and goes out as far as each allows (RFC 9113 §6.9).
    pair = Pair(window=0)
    first, second = pair.request(), pair.request()
    assert ready_ids(pair.pump()) == [first, second]
    pair.server.respond(first, 400, "ID-1", ERROR_BODY)
    pair.pump()
    assert pair.response_headers(first)[b":status"] == b"400"
    assert pair.received(first) == b"" and not pair.ended(first)
    assert not pair.server.drained and pair.server.in_flight == 1  # the second, unanswered

    pair.client.increment_flow_control_window(100)  # the connection's window: not the stream's
    pair.client.increment_flow_control_window(10, stream_id=second)  # nothing pending there
    pair.pump()
    assert pair.received(first) == b""

    pair.client.increment_flow_control_window(10, stream_id=first)
    pair.pump()
    assert pair.received(first) == ERROR_BODY[:10] and not pair.ended(first)

    pair.client.increment_flow_control_window(len(ERROR_BODY), stream_id=first)
    pair.pump()
    assert pair.received(first) == ERROR_BODY and pair.ended(first)


def test_the_request_body_is_buffered_up_to_the_cap_and_measured_in_full() -> None:
    pair = Pair(body_cap=10)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, HEADERS)
    for piece in (b"a" * 8, b"b" * 8, b"c" * 8):  # the cap is reached in the second frame
        pair.client.send_data(sid, piece)
    pair.client.end_stream(sid)
    (ready,) = pair.pump()
    assert isinstance(ready, RequestReady)
    assert ready.request.body == b"a" * 8 + b"b" * 3  # the cap plus one byte: "too large" shows
    assert ready.request.body_size == 24


# --------------------------------------------------------------------------------------------
# Resets


def test_data_after_end_stream_resets_the_stream_without_a_cancel_event() -> None:
    # The reset is h2's own (STREAM_CLOSED, RFC 9113 §5.1): the client did not cancel anything,
    # but the request is gone and its answer is dropped.
    pair = Pair()
    sid = pair.request()
    assert ready_ids(pair.pump()) == [sid]
    pair.client_events.clear()
    events = pair.server.receive_data(raw_frame(0x0, 0x0, sid, b"late"))
    assert events == []
    assert pair.server.in_flight == 0
    pair.server.respond(sid, 200, "ID-1")
    pair.pump()
    resets = [e for e in pair.client_events if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(sid, ErrorCodes.STREAM_CLOSED)]
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in pair.client_events)


def test_a_client_reset_cancels_the_request() -> None:
    pair = Pair()
    sid = pair.request()
    pair.pump()
    pair.client.reset_stream(sid, ErrorCodes.CANCEL)
    assert pair.pump() == [StreamCancelled(sid)]
    assert pair.server.in_flight == 0


# --------------------------------------------------------------------------------------------
# GOAWAY and failed connections


def test_goaway_is_sent_once() -> None:
    pair = Pair()
    pair.server.goaway(Reason.SHUTDOWN)
    pair.server.goaway(Reason.IDLE_TIMEOUT)
    pair.pump()
    (goaway,) = (e for e in pair.client_events if isinstance(e, h2.events.ConnectionTerminated))
    assert goaway.additional_data is not None
    assert json.loads(goaway.additional_data) == {"reason": "Shutdown"}
    assert pair.server.drained


def test_streams_after_goaway_are_turned_away_and_earlier_ones_answered() -> None:
    pair = Pair()
    first = pair.request()
    assert ready_ids(pair.pump()) == [first]
    pair.server.goaway(Reason.SHUTDOWN)
    later = pair.request()  # crosses the GOAWAY on the wire
    assert pair.pump() == [StreamTurnedAway(later)]
    assert pair.server.last_stream_id == first and not pair.server.drained
    pair.server.respond(first, 200, "ID-1")
    pair.pump()
    assert pair.ended(first) and pair.server.drained
    resets = [e for e in pair.client_events if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(later, ErrorCodes.REFUSED_STREAM)]


def test_a_failed_connection_takes_no_more_input_and_sends_nothing_more() -> None:
    pair = Pair()
    sid = pair.request()
    assert ready_ids(pair.pump()) == [sid]
    (ended,) = pair.server.receive_data(raw_frame(0x1, 0x5, 0, b"\x88"))  # HEADERS on stream 0
    assert isinstance(ended, ConnectionEnded) and ended.error is not None
    assert pair.server.closed
    pair.server.data_to_send()  # h2's GOAWAY(PROTOCOL_ERROR)
    assert pair.server.receive_data(raw_frame(0x6, 0x0, 0, b"12345678")) == []
    pair.server.respond(sid, 200, "ID-1")
    pair.server.reset(sid)
    pair.server.goaway(Reason.SHUTDOWN)
    pair.server.set_max_streams(1000)
    assert pair.server.data_to_send() == b""
    assert pair.server.in_flight == 0


# --------------------------------------------------------------------------------------------
# The stream limit and the client's GOAWAY


def test_a_stream_over_the_limit_is_refused_and_a_raised_limit_is_announced() -> None:
    pair = Pair(max_streams=1)
    # A client that ignores the advertised limit of one: APNs refuses the one stream (apns.md §4).
    pair.client.remote_settings = Settings(
        client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 100}
    )
    first, second = pair.request(), pair.request()
    events = pair.pump()
    assert ready_ids(events) == [first] and events[1:] == [StreamTurnedAway(second)]
    pair.server.set_max_streams(2)
    pair.server.set_max_streams(2)  # unchanged: no second SETTINGS
    pair.pump()
    limits = [
        e.changed_settings[SettingCodes.MAX_CONCURRENT_STREAMS].new_value
        for e in pair.client_events
        if isinstance(e, h2.events.RemoteSettingsChanged)
    ]
    assert limits == [1, 2]
    third = pair.request()
    assert ready_ids(pair.pump()) == [third]
    assert pair.server.in_flight == 2 and pair.server.streams_received == 3


def test_the_clients_goaway_ends_the_connection_cleanly_or_with_its_error() -> None:
    pair = Pair()
    pair.client.close_connection()
    assert pair.pump() == [ConnectionEnded(None)]
    pair = Pair()
    pair.client.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
    assert pair.pump() == [ConnectionEnded("client GOAWAY error code 11")]
