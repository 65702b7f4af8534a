"""The embedded engine: `async with open_engine(config) as engine:` and push Live Activities.

    async with open_engine(config) as engine:
        handle = await engine.start("deploy-42", push_to_start_token, content_state={...},
                                    attributes_type="DeployAttributes", attributes={...},
                                    alert=Alert("Deploy", "started"), lane="iphone-1")
        await engine.update("deploy-42", update_token, {...}, lane="iphone-1")  # fire and forget
        ended = await engine.end("deploy-42", update_token, {...}, lane="iphone-1")
        result = await ended.result()

Each call checks the payload size on the exact bytes (raising `PayloadTooLarge` before anything is
queued), offers the event to the coalescer (latest wins per lane; `LaneError` for a misuse such as
an update after the end) and returns a `PushHandle` to await or ignore; the handle's `held` says at
once when the push cannot go out now (paced, behind another push of its lane, backing off) and
the earliest time it can, so a caller never waits for an answer that cannot come yet. When
`max_lanes` lanes are open, `submit` waits for room and `submit_nowait` raises `Busy`. The engine
owns its nursery: leaving the block drains what is queued (bounded by `drain_timeout`) and closes
the connections.

`abandon(activity_id)` stops delivering an activity another node delivers now (in a cluster, one
node delivers an activity at a time): its pending pushes resolve FAILED at once ("abandoned:
another node delivers this activity now"), a push of it already in flight completes but is never
retried, so this node cannot send a state after the new owner's newer one. Submitting for the
activity again later (after owning it again) opens its lanes afresh: pass `min_timestamp` from
the stored state. App pushes (`send_app_push`) belong to no activity and are not affected.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from engine.apns.auth import SigningKey
from engine.apns.pool import ApnsPool
from engine.apns.protocol import PushRequest
from engine.apns.reasons import Outcome
from engine.apns.tokens import TokenSource
from engine.apns.transport import Connector, tcp_connector
from engine.apppush import AppPushResult, app_topic, send_app_push
from engine.config import EngineConfig
from engine.delivery.budget import BudgetState, PriorityBudget
from engine.delivery.coalescer import Coalescer
from engine.delivery.dispatch import Dispatcher, PushHandle
from engine.delivery.items import Busy, Hold, Item
from engine.metrics import EngineListener
from engine.payload import Alert, EventKind, LiveActivityContent, PreparedPayload, prepare
from engine.results import DeliveryResult, DeliveryStatus


class Engine:
    """Submit Live Activity events; see the module docstring."""

    def __init__(
        self,
        config: EngineConfig,
        dispatcher: Dispatcher,
        wall_clock: Callable[[], float],
        listener: EngineListener,
        budget: PriorityBudget | None = None,
    ) -> None:
        self.config = config
        self._dispatcher = dispatcher
        self._coalescer = dispatcher.coalescer
        self._wall = wall_clock
        self._listener = listener
        self._budget = budget  # the coalescer's priority-10 budget, to share out (`share_budget`)
        self._seq = 0

    def share_budget(self, parts: int) -> None:
        """Spend only `1 / parts` of each device's priority-10 budget: `parts` engines push to
        the same devices (the nodes of a cluster) and together must stay within it
        (`PriorityBudget.divide`). Nothing to do without a budget."""
        if self._budget is not None:
            self._budget.divide(parts)

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher (stats, dead tokens)."""
        return self._dispatcher

    async def start(
        self,
        activity_id: str,
        device_token: str,
        content_state: Mapping[str, Any],
        *,
        attributes_type: str,
        attributes: Mapping[str, Any],
        alert: Alert,
        lane: str | None = None,
        **options: Any,
    ) -> PushHandle:
        """Push-to-start an activity on the device owning `device_token` (apns.md §6)."""
        content = LiveActivityContent(
            EventKind.START,
            dict(content_state),
            alert=alert,
            attributes_type=attributes_type,
            attributes=dict(attributes),
            input_push_token=options.pop("input_push_token", True),
            **options,
        )
        return await self.submit(activity_id, device_token, content, lane=lane)

    async def update(
        self,
        activity_id: str,
        device_token: str,
        content_state: Mapping[str, Any],
        *,
        lane: str | None = None,
        **options: Any,
    ) -> PushHandle:
        """Update an activity; newer updates replace pending ones (latest wins)."""
        content = LiveActivityContent(EventKind.UPDATE, dict(content_state), **options)
        return await self.submit(activity_id, device_token, content, lane=lane)

    async def end(
        self,
        activity_id: str,
        device_token: str,
        content_state: Mapping[str, Any],
        *,
        lane: str | None = None,
        **options: Any,
    ) -> PushHandle:
        """End an activity with its final state; never coalesced away."""
        content = LiveActivityContent(EventKind.END, dict(content_state), **options)
        return await self.submit(activity_id, device_token, content, lane=lane)

    async def submit(
        self,
        activity_id: str,
        device_token: str,
        content: LiveActivityContent | PreparedPayload,
        *,
        lane: str | None = None,
        priority: int | None = None,
        min_timestamp: int = 0,
    ) -> PushHandle:
        """Queue one event, waiting while the engine is at capacity."""
        prepared = content if isinstance(content, PreparedPayload) else prepare(content)
        while True:
            try:
                return self.submit_nowait(
                    activity_id,
                    device_token,
                    prepared,
                    lane=lane,
                    priority=priority,
                    min_timestamp=min_timestamp,
                )
            except Busy:
                # Room comes back when a lane settles, or when an idle lane becomes evictable
                # (one pacing interval plus a second after it went idle), which no event marks.
                with trio.move_on_after(self.config.delivery.pacing_interval + 1.0):
                    await self._dispatcher.wait_capacity()

    def submit_nowait(
        self,
        activity_id: str,
        device_token: str,
        content: LiveActivityContent | PreparedPayload,
        *,
        lane: str | None = None,
        priority: int | None = None,
        min_timestamp: int = 0,
    ) -> PushHandle:
        """Queue one event now; raises `Busy` at capacity, `PayloadTooLarge` if too big."""
        prepared = content if isinstance(content, PreparedPayload) else prepare(content)
        handle = PushHandle(device_token, trio.current_time())
        dead = self._dispatcher.dead_tokens
        if device_token in dead:
            # Refused here, in the same words as the 410 / BadDeviceToken that killed the token
            # (apns.md §3): a caller that drops dead tokens on DROP_TOKEN drops this one too.
            handle.settle(
                DeliveryResult(
                    DeliveryStatus.REJECTED,
                    device_token,
                    reason=dead[device_token],
                    outcome=Outcome.DROP_TOKEN,
                    detail="the device token is dead (APNs said so before)",
                )
            )
            return handle
        self._seq += 1
        # apns-expiration 0 means one attempt and no storage at APNs (apns.md §1).
        keep = self.config.delivery.expiration
        wall_now = self._wall()
        expiration = int(wall_now) + keep if keep else 0
        item = Item.build(
            prepared,
            device_token,
            self._seq,
            priority=priority,
            expiration=expiration,
            waiter=handle,
        )
        key, now = (activity_id, lane or device_token), trio.current_time()
        superseded = self._coalescer.offer(key, item, now=now, min_timestamp=min_timestamp)
        handle.held = self._coalescer.hold(key, now=now, wall_now=wall_now, item=item)
        self._listener.submitted(prepared.event.value)
        self._dispatcher.settle_all(superseded)
        self._dispatcher.wake()
        return handle

    async def send_app_push(
        self,
        device_token: str,
        body: bytes,
        *,
        push_type: str,
        priority: int = 10,
        expiration: int | None = None,
    ) -> AppPushResult:
        """Send one app push (not a Live Activity: e.g. `widgets`) once, on the push type's
        topic, and return what APNs said; retries are the caller's (`engine.apppush`)."""
        request = PushRequest(
            token=device_token,
            topic=app_topic(self.config.credentials.bundle_id, push_type),
            body=body,
            push_type=push_type,
            priority=priority,
            expiration=expiration,
        )
        self._listener.submitted(push_type)
        sent_at = trio.current_time()
        result = await send_app_push(
            self._dispatcher.pool,
            request,
            dead=self._dispatcher.dead_tokens,
            mark_dead=self._dispatcher.mark_dead,
        )
        if result.http_status is not None:  # the same metrics as a Live Activity push's answer
            self._listener.answered(
                result.http_status, result.reason, trio.current_time() - sent_at
            )
        elif result.outcome in (Outcome.TRANSPORT, Outcome.UNPROCESSED):
            self._listener.unanswered(result.outcome.value, result.detail)
        return result

    def abandon(self, activity_id: str) -> int:
        """Stop delivering `activity_id` on every lane: another node delivers it now.

        Returns how many pending pushes were resolved (FAILED, detail "abandoned: ..."); a push
        already in flight completes with APNs' answer and is never retried. The pushes never
        sent say nothing of their tokens (no `Outcome.DROP_TOKEN`), and nothing is sent for the
        activity until it is submitted again (module docstring).
        """
        return self._dispatcher.abandon(activity_id)

    def hold(self, activity_id: str, lane: str) -> Hold | None:
        """Why the newest push pending on the lane is not sent now, and until when at the
        earliest; None when nothing is pending there or it goes out now."""
        return self._coalescer.hold(
            (activity_id, lane), now=trio.current_time(), wall_now=self._wall()
        )

    def budget(self, activity_id: str, lane: str) -> BudgetState | None:
        """Where the priority-10 budget of the lane's device stands now (None when
        `hourly_budget` is 0)."""
        return self._coalescer.budget((activity_id, lane), now=trio.current_time())

    def stats(self) -> dict[str, float]:
        """Queue depths and counters for metrics (`delivery_*`), plus free stream slots."""
        counts = self._coalescer.stats
        out = {f"delivery_{name}": float(getattr(counts, name)) for name in counts.__slots__}
        out["delivery_free_slots"] = float(self._dispatcher.pool.free_slots)
        out["delivery_dead_tokens"] = float(len(self._dispatcher.dead_tokens))
        return out

    async def drain(self) -> None:
        """Wait until nothing is queued or in flight (pacing and retries included)."""
        await self._dispatcher.wait_idle()


@asynccontextmanager
async def open_engine(
    config: EngineConfig,
    *,
    connector: Connector | None = None,
    signing_key: SigningKey | None = None,
    wall_clock: Callable[[], float] = time.time,
    listener: EngineListener | None = None,
    rng: random.Random | None = None,
    drain_timeout: float = 10.0,
    provider_tokens: TokenSource | None = None,
) -> AsyncIterator[Engine]:
    """Run an engine for the duration of the block (see the module docstring).

    `provider_tokens` replaces the engine's own provider-token cache: one shared with other
    processes (coordinated mode, engine/apns/tokens.py), kept by the caller.
    """
    creds, delivery = config.credentials, config.delivery
    if provider_tokens is None:
        key = signing_key or SigningKey.from_file(creds.key_path, creds.key_id, creds.team_id)
        provider_tokens = TokenSource(key, wall_clock=wall_clock, max_age=delivery.token_max_age)
    rng = rng or random.Random()
    listener = listener or EngineListener()
    pool = ApnsPool(
        connector or tcp_connector(config.endpoint, connect_timeout=delivery.connect_timeout),
        provider_tokens,
        authority=config.endpoint.authority,
        size=delivery.connections,
        config=delivery,
        rng=rng,
        listener=listener,  # connections opened / closed / failed, GOAWAYs
    )
    budget = None
    if delivery.hourly_budget:
        budget = PriorityBudget(
            delivery.hourly_budget, delivery.budget_reserve, max_devices=delivery.max_lanes
        )
    coalescer = Coalescer(
        pacing_interval=delivery.pacing_interval,
        max_lanes=delivery.max_lanes,
        max_attempts=delivery.max_attempts,
        rng=rng,
        budget=budget,
    )
    dispatcher = Dispatcher(
        coalescer, pool, topic=creds.topic, wall_clock=wall_clock, listener=listener
    )
    engine = Engine(config, dispatcher, wall_clock, listener, budget)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await nursery.start(dispatcher.run)
        try:
            yield engine
            with trio.move_on_after(drain_timeout):
                await engine.drain()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(drain_timeout):
                await pool.aclose(min(drain_timeout, 5.0))
            nursery.cancel_scope.cancel()
