"""One HTTP/2 connection to APNs: a thin trio shell over the sans-IO `ApnsClientProtocol`.

Three tasks per connection, none per push:

* the **reader** feeds every byte it reads to the protocol and settles pushes through their
  callbacks (`on_done(StreamResult)`, called exactly once per accepted `try_send`);
* the **writer** batches: `try_send` only encodes into the protocol and marks the connection dirty;
  the writer wakes, yields once so every sender of the same scheduler tick joins the batch, then
  writes it all with ONE `send_all`, under a lock and shielded from cancellation, so a cancelled
  caller never cuts a frame in half (trio-websocket's `_send`);
* the **timer** keeps liveness: a PING after `idle_ping` seconds without any incoming frame, the
  connection declared dead when no ack comes within `ping_timeout` (peers.md §5: hung idle
  connections), and a stream with no answer after `request_timeout` settled as `NoAnswer` and
  reset (CANCEL). One timer serves every stream: streams are kept in send order, so only the
  oldest one can be due.

Closing is graceful: `aclose()` (or APNs asking for a new connection, or stream ids running out)
stops taking pushes, waits for the open ones to be answered, then sends GOAWAY and closes.

A `StreamResult` is the connection's report on one stream, and says what a caller may do next:
`Answered` (APNs answered; the provider token the request carried comes with it, so an
ExpiredProviderToken refreshes the right generation), `Unprocessed` (REFUSED_STREAM, above a
GOAWAY's last stream id, or never written: retry at once elsewhere, apns.md §4), `NoAnswer` (lost
connection, reset or timeout: APNs may or may not have delivered it). The delivery layer turns
each into an `Outcome` (`engine.apns.reasons`). Device tokens travel inside `PushRequest`; every
other token here is a provider token, and is named so.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import trio

from engine.apns.auth import ProviderToken
from engine.apns.protocol import (
    ApnsClientProtocol,
    ClientEvent,
    ConnectionClosed,
    GoAway,
    PingAcked,
    PushAnswered,
    PushRequest,
    StreamRefused,
    StreamReset,
)
from engine.apns.reasons import Outcome, outcome_for
from engine.apns.tokens import TokenSource
from engine.config import DeliveryConfig

__all__ = [
    "Answered",
    "ApnsConnection",
    "NoAnswer",
    "StreamResult",
    "Unprocessed",
]

log = logging.getLogger("lockstep.apns")

_READ_SIZE = 65_536
_LAST_CLIENT_STREAM_ID = 2**31 - 1  # RFC 9113 §5.1.1: client stream ids are odd, at most this
_FINAL_FLUSH = 1.0  # seconds a closing connection may spend writing its last frames (GOAWAY)
_IO_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Answered:
    """APNs answered the push; `provider_token` is the one the request carried (apns.md §2)."""

    answer: PushAnswered
    provider_token: ProviderToken


@dataclass(frozen=True, slots=True)
class Unprocessed:
    """APNs did not process the push (refused, above a GOAWAY, never written): retry elsewhere."""

    reason: str


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """No answer came (connection lost, stream reset, timeout): the outcome is unknown."""

    reason: str


StreamResult: TypeAlias = Answered | Unprocessed | NoAnswer
"""The connection's report on one stream: what `on_done` receives, once per accepted `try_send`."""

OnDone: TypeAlias = Callable[[StreamResult], None]

# stream id → (on_done, provider token attached, monotonic send time)
_Pending: TypeAlias = tuple[OnDone, ProviderToken, float]


# --------------------------------------------------------------------------------------------
# The connection


class ApnsConnection:
    """One HTTP/2 connection to APNs over any trio byte stream (TLS socket or memory stream).

    Start it with `await nursery.start(conn.run)`; from then on `try_send` may be called from any
    task. `on_change(conn)` is called after anything that may change what the connection can take
    (answers, SETTINGS, GOAWAY, close); `on_result(result)` sees every result just before its
    `on_done` (the pool refreshes provider tokens there). Callbacks run in the reader task and
    must not block; an exception from `on_done` is logged and does not disturb other pushes.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        provider_tokens: TokenSource,
        *,
        authority: str,
        config: DeliveryConfig,
        on_change: Callable[[ApnsConnection], None] | None = None,
        on_result: Callable[[StreamResult], None] | None = None,
    ) -> None:
        self._stream = stream
        self._provider_tokens = provider_tokens
        self._config = config
        self._on_change = on_change
        self._on_result = on_result
        self._proto = ApnsClientProtocol(authority)
        self._provider_token: ProviderToken | None = None  # what `authorization` carries now
        self._pending: dict[int, _Pending] = {}  # insertion order = stream id order = send order
        self._out = bytearray()  # bytes taken from the protocol by the reader, written next
        self._dirty = trio.Event()
        self._send_lock = trio.Lock()
        self._closed_event = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._timer_scope: trio.CancelScope | None = None
        self._started = False
        self._stopping = False  # takes no new pushes; closes once the open ones are settled
        self._closed = False
        self._io_broken = False
        self._last_sid = 0  # highest stream id encoded so far
        self._handed_over = 0  # highest stream id whose bytes were passed to send_all
        self._last_rx = 0.0
        self._ping_sent_at: float | None = None
        self._ping_payload = b""
        self.close_reason: str | None = None
        """Why the connection closed: None after a clean drain, else a short description."""
        self.goaway: GoAway | None = None
        """The server's GOAWAY, once one arrived."""
        self.answered = 0
        """Pushes APNs answered on this connection (any status)."""
        self.writes = 0
        """`send_all` calls so far (one per batch)."""
        self.pings_sent = 0
        """Liveness PINGs sent so far."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Pushes sent and not yet settled."""
        return len(self._pending)

    @property
    def available_slots(self) -> int:
        """Pushes `try_send` would take right now (the server's stream limit minus open ones)."""
        if not self._started or self._stopping or self._closed:
            return 0
        return self._proto.available_slots

    @property
    def is_usable(self) -> bool:
        """Running and taking new pushes (no GOAWAY either way, not closed)."""
        return (
            self._started
            and not self._stopping
            and not self._closed
            and not self._proto.is_draining
        )

    @property
    def is_closed(self) -> bool:
        """Finished: every push it took has been settled."""
        return self._closed

    # -- sending -------------------------------------------------------------------------------

    def try_send(self, request: PushRequest, on_done: OnDone) -> bool:
        """Queue `request` for the next batch; False (and no callback) if there is no free slot."""
        proto = self._proto
        if not self._started or self._stopping or self._closed or proto.available_slots <= 0:
            return False
        provider_token = self._provider_tokens.current()  # refreshed by age; goes on this request
        if provider_token is not self._provider_token:
            proto.set_authorization(provider_token.header_value)
            self._provider_token = provider_token
        stream_id = proto.send(request)
        now = trio.current_time()
        if not self._pending:
            self._arm_timer(now + self._config.request_timeout)
        self._pending[stream_id] = (on_done, provider_token, now)
        self._last_sid = stream_id
        self._dirty.set()
        if stream_id + 2 > _LAST_CLIENT_STREAM_ID:
            self.stop_taking()  # stream ids are used up: retire it, the pool opens a new one
        return True

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Speak HTTP/2 on the stream until the connection closes; settle every push it took."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._proto.initiate()
                self._last_rx = trio.current_time()
                self._started = True
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._timer_loop)
                self._dirty.set()  # the preface goes out at once
                task_status.started()
        finally:
            self._finish("connection task cancelled")
            with trio.CancelScope(shield=True):
                await self._release_stream()
            self._closed_event.set()
            self._notify()

    async def aclose(self, deadline: float = 5.0) -> None:
        """Graceful close: take no new pushes, wait up to `deadline` s for the open ones to be
        answered, then GOAWAY and close. Pushes still unanswered then are settled as `NoAnswer`.

        The GOAWAY goes last, not first: a client GOAWAY only forbids new streams, but servers
        built on h2 (the simulator among them) stop answering open streams once they receive one.
        """
        if not self._started:
            self._closed = True
            await trio.aclose_forcefully(self._stream)
            self._closed_event.set()
            return
        self.stop_taking()
        with trio.move_on_after(deadline):
            await self._closed_event.wait()
        if not self._closed:
            self._shutdown(f"closed after waiting {deadline:g} s for answers")
        await self._closed_event.wait()

    def stop_taking(self) -> None:
        """Take no new pushes; close (GOAWAY) as soon as the open ones are settled."""
        if self._stopping or self._closed:
            return
        self._stopping = True
        if not self._pending:
            self._shutdown(None)
        else:
            self._notify()

    def _shutdown(self, reason: str | None) -> None:
        """Queue a GOAWAY (written before the stream closes) and close."""
        if self._closed:
            return
        self._proto.close()
        self._finish(reason)

    # -- tasks ---------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        stream, proto = self._stream, self._proto
        while True:
            try:
                data = await stream.receive_some(_READ_SIZE)
            except _IO_ERRORS as exc:
                self._io_broken = True
                self._finish(f"connection lost: {_describe(exc)}")
                return
            self._last_rx = trio.current_time()
            events = proto.receive_data(bytes(data))
            out = proto.data_to_send()  # SETTINGS/PING acks, WINDOW_UPDATEs, sends from callbacks
            if out:
                self._out += out
                self._dirty.set()
            if events:
                self._dispatch(events)
            if proto.is_closed:  # drained after a GOAWAY, or lost (EOF, protocol error)
                self._finish(self.close_reason)
                return
            if events:
                self._notify()

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            # Yield once so that every sender of this tick adds its request to the batch.
            await trio.lowlevel.checkpoint()
            self._dirty = trio.Event()
            if not await self._flush():
                return

    async def _flush(self) -> bool:
        """Write everything queued with one `send_all`; False if the connection broke."""
        async with self._send_lock:
            data = self._take_output()
            if not data:
                return True
            self._handed_over = self._last_sid
            # Shielded: a frame cut in half would corrupt the connection. Bounded: a peer that
            # stops reading must not hold this task (or a cancelled caller) forever.
            deadline = trio.current_time() + self._config.request_timeout
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                try:
                    await self._stream.send_all(data)
                except _IO_ERRORS as exc:
                    self._io_broken = True
                    self._finish(f"write failed: {_describe(exc)}")
                    return False
            if scope.cancelled_caught:
                self._io_broken = True
                self._finish("write timed out: the server stopped reading")
                return False
            self.writes += 1
            return True

    async def _timer_loop(self) -> None:
        while not self._closed:
            deadline = self._tick(trio.current_time())
            if deadline is None:
                return
            with trio.CancelScope(deadline=deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None

    def _tick(self, now: float) -> float | None:
        """Expire old streams and keep liveness; the next time to look, None if closed."""
        self._expire_streams(now)
        if self._closed:
            return None
        cfg = self._config
        if self._ping_sent_at is not None:
            dead_at = self._ping_sent_at + cfg.ping_timeout
            if now >= dead_at:
                self._finish(f"no PING ack within {cfg.ping_timeout:g} s: connection is dead")
                return None
            next_at = dead_at
        else:
            idle_at = self._last_rx + cfg.idle_ping
            if now >= idle_at:
                self._send_ping(now)
                next_at = now + cfg.ping_timeout
            else:
                next_at = idle_at
        if self._pending:
            oldest = next(iter(self._pending.values()))[2]
            next_at = min(next_at, oldest + cfg.request_timeout)
        return next_at

    # -- internals -----------------------------------------------------------------------------

    def _arm_timer(self, deadline: float) -> None:
        """Wake the timer earlier if `deadline` comes before the time it sleeps until."""
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def _send_ping(self, now: float) -> None:
        self.pings_sent += 1
        self._ping_payload = struct.pack(">Q", self.pings_sent)
        self._ping_sent_at = now
        self._proto.ping(self._ping_payload)
        self._dirty.set()

    def _expire_streams(self, now: float) -> None:
        timeout = self._config.request_timeout
        expired: list[int] = []
        for stream_id, (_, _, sent_at) in self._pending.items():
            if sent_at + timeout > now:  # the same sum `_tick` sleeps until: no busy wake-ups
                break
            expired.append(stream_id)
        if not expired:
            return
        reason = f"no answer within {self._config.request_timeout:g} s"
        for stream_id in expired:
            self._proto.cancel(stream_id)
            self._settle(stream_id, NoAnswer(reason))
        self._dirty.set()  # the RST_STREAM frames
        if self._proto.is_closed:  # draining after GOAWAY and nothing left to wait for
            self._finish(None)
        else:
            self._notify()

    def _take_output(self) -> bytes:
        data = self._proto.data_to_send()
        if self._out:
            data, self._out = bytes(self._out) + data, bytearray()
        return data

    def _dispatch(self, events: list[ClientEvent]) -> None:
        for event in events:
            if isinstance(event, PushAnswered):
                self._on_answer(event)
            elif isinstance(event, StreamRefused):
                self._settle(event.stream_id, Unprocessed("REFUSED_STREAM"))
            elif isinstance(event, StreamReset):
                reason = f"stream reset by the server (error {event.error_code})"
                self._settle(event.stream_id, NoAnswer(reason))
            elif isinstance(event, GoAway):
                self._on_goaway(event)
            elif isinstance(event, PingAcked):
                if event.payload == self._ping_payload:
                    self._ping_sent_at = None
            elif isinstance(event, ConnectionClosed):
                self._on_closed(event)
            # SlotsChanged needs nothing here: the reader notifies after every batch of events.

    def _on_answer(self, answer: PushAnswered) -> None:
        pending = self._pending.pop(answer.stream_id, None)
        if pending is None:
            return
        self.answered += 1
        if (
            not self._stopping
            and outcome_for(answer.status, answer.reason) is Outcome.NEW_CONNECTION
        ):
            # APNs asked for a new connection (apns.md §2 UnrelatedKeyIdInToken, 503 Shutdown):
            # stop using this one before the caller resends, so the retry goes elsewhere.
            self._stopping = True
        self._deliver(pending[0], Answered(answer, pending[1]))

    def _on_goaway(self, event: GoAway) -> None:
        self.goaway = event
        what = event.reason.value if event.reason is not None else (event.debug_text or "no reason")
        reason = f"above GOAWAY last_stream_id {event.last_stream_id} ({what})"
        for stream_id in event.unprocessed:
            self._settle(stream_id, Unprocessed(reason))

    def _on_closed(self, event: ConnectionClosed) -> None:
        error = event.error or "connection closed"
        for stream_id in event.unanswered:
            self._settle(stream_id, self._lost_result(stream_id, error))
        if event.error is not None and self.close_reason is None:
            self.close_reason = event.error

    def _lost_result(self, stream_id: int, error: str) -> StreamResult:
        if stream_id > self._handed_over:
            return Unprocessed(f"never written: {error}")
        return NoAnswer(error)

    def _settle(self, stream_id: int, result: StreamResult) -> None:
        pending = self._pending.pop(stream_id, None)
        if pending is not None:
            self._deliver(pending[0], result)

    def _deliver(self, on_done: OnDone, result: StreamResult) -> None:
        try:
            if self._on_result is not None:
                self._on_result(result)
            on_done(result)
        except Exception:
            log.exception("a push result callback raised; the push is settled regardless")
        if self._stopping and not self._pending:
            self._shutdown(None)

    def _fail_pending(self, error: str) -> None:
        while self._pending:
            stream_id = next(iter(self._pending))
            self._settle(stream_id, self._lost_result(stream_id, error))

    def _finish(self, reason: str | None) -> None:
        """Close: settle every open push, stop the tasks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason if self.close_reason is None else self.close_reason
        error = reason or "connection closed"
        self._dispatch(self._proto.connection_lost(error))
        self._fail_pending(error)
        if self._scope is not None:
            self._scope.cancel()
        self._notify()

    async def _release_stream(self) -> None:
        """Write what is still queued (a GOAWAY) if the stream works, then close it."""
        if not self._io_broken:
            with trio.move_on_after(_FINAL_FLUSH):
                data = self._take_output()
                if data:
                    with contextlib.suppress(*_IO_ERRORS):
                        await self._stream.send_all(data)
        await trio.aclose_forcefully(self._stream)

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self)


def _describe(exc: BaseException) -> str:
    """A short description of an I/O error (never any request content)."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
