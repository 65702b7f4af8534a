"""A pool of HTTP/2 connections to APNs: pure policy functions plus the trio runner.

Policy, kept pure so it can be tested without a network or a clock:

* `choose_connection` picks the least-loaded usable connection with a free stream slot;
* `backoff_delay` spaces reconnect attempts 1 s, 2 s, 4 s ... up to a cap, with seeded jitter, so
  a failing APNs never sees a tight reconnect loop (apns.md §4: rapid reconnects look like an
  attack and get a server blocked).

`ApnsPool` runs the connections in its own nursery. It connects lazily: nothing until a push needs
a slot, then one more connection each time every open one is full, up to `size`. That matters
because APNs starts every connection at one stream until a request with a valid token went
through (apns.md §4), so a burst at start-up is served by opening more connections, and once the
limit rises (to ~1000) one connection carries it. A connection that gets GOAWAY or dies leaves its
slot at once (it drains on the side) and is replaced the same lazy way.

Backoff is per slot. A slot's failure count grows with each failed connect and with each
connection that closed before APNs answered anything on it, and resets once a connection answered.
While a slot is failing, no other empty slot is tried, so a dead endpoint sees one attempt per
backoff step, not one per slot.

Provider tokens: when an answer says the token was expired (or missing), the pool calls
`provider_tokens.on_expired(token_that_was_sent)` before the caller's callback, so 500 streams
failing at once cause exactly one refresh, and every connection's next request carries the new
token.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from engine.apns.connection import (
    Answered,
    ApnsConnection,
    NoAnswer,
    OnDone,
    StreamResult,
    Unprocessed,
)
from engine.apns.protocol import PushRequest
from engine.apns.reasons import REASONS, Outcome
from engine.apns.tokens import TokenSource
from engine.apns.transport import ConnectError, Connector
from engine.config import DeliveryConfig

__all__ = [
    "Answered",
    "ApnsPool",
    "ConnectionLoad",
    "NoAnswer",
    "PoolClosedError",
    "PoolListener",
    "StreamResult",
    "Unprocessed",
    "backoff_delay",
    "choose_connection",
]

log = logging.getLogger("lockstep.apns")

_REFRESH_REASONS = frozenset(r for r, row in REASONS.items() if row.outcome is Outcome.REFRESH_AUTH)
_CONNECT_ERRORS = (ConnectError, OSError, trio.BrokenResourceError)


# --------------------------------------------------------------------------------------------
# Pure policy


class ConnectionLoad(Protocol):
    """What `choose_connection` needs to know about a connection."""

    @property
    def is_usable(self) -> bool:
        """Taking new pushes."""
        ...

    @property
    def available_slots(self) -> int:
        """Pushes it would take right now."""
        ...

    @property
    def open_streams(self) -> int:
        """Pushes in flight on it."""
        ...


def choose_connection(conns: Sequence[ConnectionLoad]) -> int | None:
    """Index of the least-loaded usable connection with a free slot, or None.

    Most free slots first, then fewest open streams, then the lowest index. Preferring free slots
    spreads a burst over every warm connection, as Apple recommends (apns.md §4).
    """
    best: int | None = None
    best_key = (0, 0)
    for index, conn in enumerate(conns):
        if not conn.is_usable:
            continue
        free = conn.available_slots
        if free <= 0:
            continue
        key = (free, -conn.open_streams)
        if best is None or key > best_key:
            best, best_key = index, key
    return best


def backoff_delay(failures: int, cap: float, rng: random.Random) -> float:
    """Seconds to wait after `failures` consecutive failures: 1, 2, 4 ... ±20 %, at most `cap`.

    0 failures means no wait. The jitter spreads reconnects of many engines after a shared outage.
    """
    if failures <= 0:
        return 0.0
    base = min(cap, 2.0 ** min(failures - 1, 62))
    return min(cap, base * rng.uniform(0.8, 1.2))


# --------------------------------------------------------------------------------------------
# Metrics


class PoolListener:
    """Pool events for metrics; every method is a no-op here. Metrics never drive behaviour."""

    def connection_opened(self) -> None:
        """A connection came up."""

    def connection_closed(self, reason: str | None) -> None:
        """A connection closed; `reason` is None after a clean drain."""

    def connect_failed(self, error: Exception) -> None:
        """A connect attempt failed (the pool backs off and tries again later)."""

    def goaway(self, reason: str) -> None:
        """The server sent GOAWAY; `reason` is its debug reason, or a description."""


class PoolClosedError(Exception):
    """The pool is closing or closed and takes no more pushes."""


# --------------------------------------------------------------------------------------------
# The runner


@dataclass(slots=True)
class _Slot:
    """One of the pool's `size` connection places, with its reconnect backoff."""

    conn: ApnsConnection | None = None
    connecting: bool = False
    failures: int = 0
    retry_at: float = -math.inf


class _Waiter:
    """Receives one result and wakes the task waiting for it (used by `ApnsPool.send`)."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: StreamResult | None = None

    def __call__(self, result: StreamResult) -> None:
        self.result = result
        self.event.set()


class ApnsPool:
    """Up to `size` HTTP/2 connections to APNs, opened as load needs (see the module docstring).

    Run it with `await nursery.start(pool.run)`. Callers push with `try_send(request, on_done)`
    (no task per push; `on_done` gets exactly one `StreamResult`) and, when it returns False,
    `await wait_for_slot()`. `send()` does both and waits for the result.
    """

    def __init__(
        self,
        connector: Connector,
        provider_tokens: TokenSource,
        *,
        authority: str,
        size: int,
        config: DeliveryConfig,
        rng: random.Random | None = None,
        listener: PoolListener | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._connector = connector
        self._provider_tokens = provider_tokens
        self._authority = authority
        self._config = config
        self._rng = rng if rng is not None else random.Random()
        self._listener = listener if listener is not None else PoolListener()
        self._slots = [_Slot() for _ in range(size)]
        self._live: list[ApnsConnection] = []  # usable connections, in their slots
        self._slot_of: dict[ApnsConnection, int] = {}
        self._all: set[ApnsConnection] = set()  # live and draining
        self._failing_slot: int | None = None
        self._demand = False
        self._closing = False
        self._nursery: trio.Nursery | None = None
        self._slot_event = trio.Event()
        self._manager_event = trio.Event()
        self.last_connect_error: Exception | None = None
        """Why the latest connect attempt failed; None once a connection came up."""
        self.connects = 0
        """Connections opened so far."""

    # -- state ---------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The most connections taking pushes at once."""
        return len(self._slots)

    @property
    def free_slots(self) -> int:
        """Pushes the pool would take right now without waiting."""
        return sum(c.available_slots for c in self._live)

    @property
    def connections(self) -> int:
        """Open connections, draining ones included."""
        return len(self._all)

    @property
    def open_streams(self) -> int:
        """Pushes in flight on every connection."""
        return sum(c.open_streams for c in self._all)

    @property
    def live_connections(self) -> tuple[ApnsConnection, ...]:
        """The connections taking pushes now (for inspection and metrics)."""
        return tuple(self._live)

    # -- pushing -------------------------------------------------------------------------------

    def try_send(self, request: PushRequest, on_done: OnDone) -> bool:
        """Send on the least-loaded connection; False if no slot is free right now.

        A False also tells the pool more capacity is wanted: it opens another connection if it
        may (lazily, within `size` and backoff).
        """
        if self._closing:
            return False
        live = self._live
        index = choose_connection(live)
        if index is not None and live[index].try_send(request, on_done):
            return True
        self._want_capacity()
        return False

    async def wait_for_slot(self) -> None:
        """Return when a slot may be free: an answer came, a connection came up, limits rose.

        Raises `PoolClosedError` once the pool is closing. Bound it with the caller's own timeout:
        while APNs is unreachable this waits (see `last_connect_error`).
        """
        if self._closing:
            raise PoolClosedError("the APNs connection pool is closed")
        if self.free_slots > 0:
            await trio.lowlevel.checkpoint()
            return
        self._want_capacity()
        await self._slot_event.wait()
        if self._closing:
            raise PoolClosedError("the APNs connection pool is closed")

    async def send(self, request: PushRequest) -> StreamResult:
        """Wait for a slot, send, and wait for the result (no retries: that is the caller's)."""
        waiter = _Waiter()
        while not self.try_send(request, waiter):
            await self.wait_for_slot()
        await waiter.event.wait()
        assert waiter.result is not None
        return waiter.result

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connections until cancelled or closed with `aclose`."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._manage()
        finally:
            self._closing = True
            self._wake_waiters()

    async def aclose(self, deadline: float = 5.0) -> None:
        """Stop taking pushes and drain every connection (GOAWAY, answers up to `deadline` s)."""
        self._closing = True
        self._wake_waiters()
        self._wake_manager()
        async with trio.open_nursery() as nursery:
            for conn in list(self._all):
                nursery.start_soon(conn.aclose, deadline)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- connection management -----------------------------------------------------------------

    async def _manage(self) -> None:
        while not self._closing:
            self._manager_event = trio.Event()
            plan = self._next_connect()
            if plan is None:
                await self._manager_event.wait()
                continue
            index, at = plan
            if at > trio.current_time():
                with trio.move_on_at(at):
                    await self._manager_event.wait()
                continue
            await self._connect(index)

    def _next_connect(self) -> tuple[int, float] | None:
        """(slot, earliest time) of the next connect the load calls for, or None."""
        if self._closing or not self._demand:
            return None
        if self.free_slots > 0:
            self._demand = False  # the waiters were woken when those slots appeared
            return None
        empty = [i for i, s in enumerate(self._slots) if s.conn is None and not s.connecting]
        if not empty or any(s.connecting for s in self._slots):
            return None
        if self._failing_slot in empty:
            index = self._failing_slot
        else:
            index = min(empty, key=lambda i: self._slots[i].retry_at)
        return index, self._slots[index].retry_at

    async def _connect(self, index: int) -> None:
        slot = self._slots[index]
        slot.connecting = True
        try:
            stream = await self._open_stream()
        except _CONNECT_ERRORS as exc:
            error = exc if isinstance(exc, ConnectError) else ConnectError(str(exc))
            self.last_connect_error = error
            self._failing_slot = index
            self._record_failure(slot)
            self._listener.connect_failed(error)
            return
        finally:
            slot.connecting = False
        conn = ApnsConnection(
            stream,
            self._provider_tokens,
            authority=self._authority,
            config=self._config,
            on_change=self._on_change,
            on_result=self._on_result,
        )
        assert self._nursery is not None
        await self._nursery.start(self._run_connection, conn)
        self.connects += 1
        self.last_connect_error = None
        self._failing_slot = None
        slot.conn = conn
        self._slot_of[conn] = index
        self._live.append(conn)
        self._all.add(conn)
        self._demand = False
        self._listener.connection_opened()
        self._wake_waiters()

    async def _open_stream(self) -> trio.abc.Stream:
        timeout = self._config.connect_timeout
        with trio.move_on_after(timeout):
            return await self._connector()
        raise ConnectError(f"connecting to APNs timed out after {timeout:g} s")

    async def _run_connection(
        self, conn: ApnsConnection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await conn.run(task_status=task_status)
        except Exception:
            # Every push it took was settled in its `finally`; one broken connection must not
            # take the pool (and every other connection's pushes) down with it.
            log.exception("APNs connection failed unexpectedly")
        finally:
            self._detach(conn)
            self._all.discard(conn)
            self._listener.connection_closed(conn.close_reason)
            self._wake_waiters()

    def _detach(self, conn: ApnsConnection) -> None:
        """Take a connection that stopped taking pushes out of its slot (once)."""
        index = self._slot_of.pop(conn, None)
        if index is None:
            return
        self._live.remove(conn)
        slot = self._slots[index]
        slot.conn = None
        if conn.answered > 0:
            slot.failures, slot.retry_at = 0, -math.inf
        else:  # closed before APNs answered anything: treat like a failed connect
            self._failing_slot = index
            self._record_failure(slot)
        if conn.goaway is not None:
            event = conn.goaway
            what = event.reason.value if event.reason is not None else event.debug_text
            self._listener.goaway(what or f"error code {event.error_code}")
        self._wake_manager()

    def _record_failure(self, slot: _Slot) -> None:
        slot.failures += 1
        delay = backoff_delay(slot.failures, self._config.backoff_cap, self._rng)
        slot.retry_at = trio.current_time() + delay

    # -- callbacks from connections --------------------------------------------------------------

    def _on_change(self, conn: ApnsConnection) -> None:
        if not conn.is_usable:
            self._detach(conn)
        self._wake_waiters()

    def _on_result(self, result: StreamResult) -> None:
        # Before the caller's callback, so its immediate resend already carries the new token.
        if type(result) is Answered and result.answer.reason in _REFRESH_REASONS:
            self._provider_tokens.on_expired(result.provider_token)

    # -- wake-ups --------------------------------------------------------------------------------

    def _want_capacity(self) -> None:
        if not self._demand:
            self._demand = True
            self._wake_manager()

    def _wake_waiters(self) -> None:
        event, self._slot_event = self._slot_event, trio.Event()
        event.set()

    def _wake_manager(self) -> None:
        self._manager_event.set()
