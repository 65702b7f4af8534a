"""The dispatcher: one trio task that moves ready pushes from the coalescer into the pool.

It is the only place where the pure `Coalescer` meets I/O. The loop: ask the coalescer for as many
ready dispatches as the pool has free stream slots, hand each to `ApnsPool.try_send` with a
callback, then sleep until something changes (a submission, an answer, a lane's pacing or backoff
time). Answers come back through the callback, synchronously from the connection's reader task:
each `StreamResult` becomes an `Outcome` (`outcome_for`, the shared reason table, for an answer;
`UNPROCESSED` or `TRANSPORT` for none), is reported to the coalescer, and every item that settled
resolves its `PushHandle` with a `DeliveryResult`. No task per push, no busy polling.

`abandon` stops delivering an activity another node now owns: its pending pushes resolve at once
(FAILED, `coalescer.ABANDONED`), and a push of it in flight resolves with APNs' answer but is
never retried (`Coalescer.abandon`). A dead token is only ever learnt from APNs' own answer: the
abandoned pushes were never sent, so they mark no token dead and none of their results says
`Outcome.DROP_TOKEN`, not even for a token already known dead.

Holds follow the pushes: a handle's `held` is cleared when its push is sent, and when a push
completes, the items still pending on its lane get their new `Coalescer.hold` (a failure that
backs the lane off holds them longer; an acceptance leaves them paced).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import trio

from engine.apns.connection import Answered, NoAnswer, StreamResult
from engine.apns.pool import ApnsPool, PoolClosedError
from engine.apns.protocol import PushRequest
from engine.apns.reasons import REASONS, Outcome, Reason, outcome_for
from engine.apns.wire import LIVE_ACTIVITY_PUSH_TYPE, LIVE_ACTIVITY_TOPIC_SUFFIX
from engine.delivery.coalescer import Coalescer
from engine.delivery.items import Dispatch, Hold, Settled
from engine.metrics import EngineListener
from engine.results import DeliveryResult, DeliveryStatus

log = logging.getLogger("lockstep.engine")

_MAX_DEAD_TOKENS = 100_000


class PushHandle:
    """The future of one submitted event: `await handle.result()` or ignore it.

    While it waits to be sent, `held` says why and until when at the earliest (a `Hold`: paced,
    behind another push of its lane, backing off), as of the last change the engine knows of:
    set when it is submitted, updated when a push of its lane completes, cleared when it is sent.
    `answered_unless_held()` waits for the result only while the push is not held.
    """

    __slots__ = ("_callbacks", "_event", "_result", "device_token", "held", "submitted_at")

    def __init__(self, device_token: str, submitted_at: float) -> None:
        self.device_token = device_token
        self.submitted_at = submitted_at
        self.held: Hold | None = None
        # Made by the first waiter that has to wait, set and dropped on every change (a result,
        # a new hold): most handles settle before anyone awaits them (or nobody ever does), and
        # an Event is three objects to allocate and garbage-collect per push.
        self._event: trio.Event | None = None
        self._result: DeliveryResult | None = None
        self._callbacks: list[Callable[[DeliveryResult], None]] | None = None

    @property
    def done(self) -> bool:
        """True once the result is known."""
        return self._result is not None

    def result_nowait(self) -> DeliveryResult | None:
        """The result if known, else None."""
        return self._result

    async def result(self) -> DeliveryResult:
        """Wait for the result (a checkpoint even when it is already known)."""
        if self._result is None:
            while self._result is None:
                await self._changed()
        else:
            await trio.lowlevel.checkpoint()  # what waiting on a set Event does
        return self._result

    async def answered_unless_held(self) -> bool:
        """Wait for the result while the push is not held; True when the result is known,
        False as soon as the push is held (at once if it already is). Bound the wait with the
        caller's own timeout: a push sent now may still be answered late."""
        if self._result is not None:
            await trio.lowlevel.checkpoint()
            return True
        while self._result is None:
            if self.held is not None:
                return False
            await self._changed()
        return True

    async def _changed(self) -> None:
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    def _notify(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def hold(self, held: Hold | None) -> None:
        """Record why the push waits and until when (None: it is ready or sent)."""
        if self._result is None and held != self.held:
            self.held = held
            self._notify()

    def add_done_callback(self, callback: Callable[[DeliveryResult], None]) -> None:
        """Call `callback(result)` when the handle settles (at once if it already has).

        Callbacks run synchronously on the engine's trio thread (from the dispatcher or a
        connection's reader), so they must be cheap and must not block; this lets a service
        follow thousands of pushes without a task per push.
        """
        if self._result is not None:
            callback(self._result)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def settle(self, result: DeliveryResult) -> None:
        """Resolve the handle (once; later calls are ignored)."""
        if self._result is None:
            self._result = result
            self.held = None
            self._notify()
            callbacks, self._callbacks = self._callbacks, None
            for callback in callbacks or ():
                try:
                    callback(result)
                except Exception:  # one bad follower must not leave other handles unsettled
                    log.exception("a push result callback failed")


class Dispatcher:
    """Drives a `Coalescer` into an `ApnsPool`."""

    def __init__(
        self,
        coalescer: Coalescer,
        pool: ApnsPool,
        *,
        topic: str,
        wall_clock: Callable[[], float],
        listener: EngineListener,
    ) -> None:
        self.coalescer = coalescer
        self.pool = pool
        self.topic = topic
        # Notifications go to the app's own topic, the bare bundle id (apns.md §1); `topic` is
        # the Live Activity one, `<bundle id>.push-type.liveactivity`.
        self.app_topic = topic.removesuffix(LIVE_ACTIVITY_TOPIC_SUFFIX)
        self.wall_clock = wall_clock
        self.listener = listener
        self.dead_tokens: OrderedDict[str, Reason | None] = OrderedDict()
        self._wake = trio.Event()
        self._capacity = trio.Event()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    # -- called by the engine ----------------------------------------------------------------
    def wake(self) -> None:
        """Something was offered: look at the ready queue again."""
        self._wake.set()

    def settle_all(
        self,
        settled: list[Settled],
        answered: Dispatch | None = None,
        apns_id: str | None = None,
        status: int | None = None,
        timestamp_ms: int | None = None,
        *,
        tell_dead: bool = True,
    ) -> None:
        """Resolve the handles of settled items; `tell_dead`: say `Outcome.DROP_TOKEN` of those
        addressed to a token known dead."""
        for s in settled:
            handle = s.item.waiter
            result = _result_of(
                s,
                apns_id if answered is not None and s.item is answered.item else None,
                status,
                timestamp_ms,
                dead=tell_dead and s.item.token in self.dead_tokens,
            )
            self.listener.settled(result)
            if isinstance(handle, PushHandle):
                handle.settle(result)

    def abandon(self, activity_id: str) -> int:
        """Stop delivering `activity_id` (another node delivers it now); returns how many
        pending pushes were resolved, FAILED (see `Coalescer.abandon`)."""
        settled = self.coalescer.abandon(activity_id)
        # Never sent, so nothing said about their tokens: even one known dead is not told again,
        # and a caller that drops recipients on DROP_TOKEN leaves these alone.
        self.settle_all(settled, tell_dead=False)
        self._capacity.set()  # its idle lanes were dropped: room for a waiting `submit`
        self._wake.set()  # the loop re-reads the queue, and `wait_idle` ends if it emptied
        return len(settled)

    async def wait_capacity(self) -> None:
        """Wait until some lane closed (after a `Busy`)."""
        self._capacity = trio.Event() if self._capacity.is_set() else self._capacity
        await self._capacity.wait()

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or in flight."""
        while self.coalescer.stats.pending or self._in_flight:
            self._idle = trio.Event()
            await self._idle.wait()

    # -- the loop ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until cancelled."""
        task_status.started()
        while True:
            now = trio.current_time()
            next_at = self.coalescer.next_ready_at()
            if next_at is not None and next_at <= now:
                free = self.pool.free_slots
                if free <= 0:
                    try:
                        await self.pool.wait_for_slot()
                    except PoolClosedError:
                        return  # the engine is shutting down; what is queued stays unsent
                    continue
                self._send_batch(now, free)
                await trio.lowlevel.checkpoint()  # let connection writers flush the batch
                continue
            self._check_idle()
            self._wake = trio.Event()
            with trio.move_on_at(next_at if next_at is not None else math.inf):
                await self._wake.wait()

    def _send_batch(self, now: float, limit: int) -> None:
        for dispatch in self.coalescer.take_ready(now=now, wall_now=self.wall_clock(), limit=limit):
            item = dispatch.item
            payload = item.payload
            live = payload.push_type == LIVE_ACTIVITY_PUSH_TYPE
            request = PushRequest(
                token=item.token,
                topic=self.topic if live else self.app_topic,
                body=dispatch.body,
                push_type=payload.push_type,
                priority=dispatch.priority,
                expiration=item.expiration,
                collapse_id=payload.collapse_id,
            )
            self.listener.dispatched(item.kind.value, dispatch.attempt)
            if isinstance(item.waiter, PushHandle):
                item.waiter.hold(None)  # sent: its answer may come at any time now
            if self.pool.try_send(request, partial(self._on_done, dispatch, now)):
                self._in_flight += 1
            else:  # a slot vanished between free_slots and now (a limit swing): not an attempt
                self.settle_all(self.coalescer.complete(dispatch, Outcome.UNPROCESSED, now=now))

    def _on_done(self, dispatch: Dispatch, sent_at: float, result: StreamResult) -> None:
        self._in_flight -= 1
        now = trio.current_time()
        apns_id = status = timestamp_ms = None
        reason: Reason | None = None
        retry_after: float | None = None
        if isinstance(result, Answered):
            answer = result.answer
            status, reason, retry_after = answer.status, answer.reason, answer.retry_after
            apns_id, timestamp_ms = answer.apns_id, answer.timestamp_ms
            outcome = outcome_for(answer.status, answer.reason)
            self.listener.answered(answer.status, answer.reason, now - sent_at)
        else:
            outcome = Outcome.TRANSPORT if isinstance(result, NoAnswer) else Outcome.UNPROCESSED
            self.listener.unanswered(outcome.value, result.reason)
        if outcome is Outcome.DROP_TOKEN:
            self._mark_dead(dispatch.item.token, reason)
        settled = self.coalescer.complete(
            dispatch, outcome, now=now, retry_after=retry_after, reason=reason
        )
        self.settle_all(settled, dispatch, apns_id, status, timestamp_ms)
        self._rehold(dispatch, now)
        if settled:
            self._capacity.set()
        self._wake.set()

    def mark_dead(self, device_token: str, reason: Reason | None) -> None:
        """Remember a token APNs killed (410, BadDeviceToken): nothing more is sent to it."""
        self._mark_dead(device_token, reason)

    def _rehold(self, dispatch: Dispatch, now: float) -> None:
        """Tell the handles still pending on the completed dispatch's lane why they wait."""
        for item, held in self.coalescer.holds(dispatch.lane, now=now, wall_now=self.wall_clock()):
            if isinstance(item.waiter, PushHandle):
                item.waiter.hold(held)

    def _mark_dead(self, device_token: str, reason: Reason | None) -> None:
        # 410 / BadDeviceToken: stop sending to it (bounded memory of dead tokens).
        self.dead_tokens[device_token] = reason
        self.dead_tokens.move_to_end(device_token)
        while len(self.dead_tokens) > _MAX_DEAD_TOKENS:
            self.dead_tokens.popitem(last=False)

    def _check_idle(self) -> None:
        if not self.coalescer.stats.pending and not self._in_flight:
            self._idle.set()


def _result_of(
    settled: Settled,
    apns_id: str | None,
    status: int | None,
    timestamp_ms: int | None,
    *,
    dead: bool = False,
) -> DeliveryResult:
    """The caller's result for a settled item; `dead`: the engine holds its token dead.

    `Outcome.DROP_TOKEN` is said of exactly the items addressed to a dead token: a bare 410
    (no reason string) kills the token too (apns.md §3), while an item to another token that
    its lane's dead start took down with it says nothing about its own token.
    """
    device_token = settled.item.token
    if settled.status is DeliveryStatus.ACCEPTED:
        return DeliveryResult(
            settled.status, device_token, apns_id=apns_id, http_status=200, detail=settled.detail
        )
    if settled.status is DeliveryStatus.SUPERSEDED:
        return DeliveryResult(settled.status, device_token, detail=settled.detail)
    reason = settled.reason
    outcome = REASONS[reason].outcome if reason is not None else None
    if dead:
        outcome = Outcome.DROP_TOKEN
    elif outcome is Outcome.DROP_TOKEN:
        outcome = None
    return DeliveryResult(
        settled.status,  # REJECTED or FAILED, as the coalescer decided from the reason
        device_token,
        reason=reason,
        outcome=outcome,
        http_status=status,
        timestamp_ms=timestamp_ms,
        detail=settled.detail,
    )
