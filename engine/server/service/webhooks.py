"""Inbound webhooks, the shell: authenticate, map (sans-IO), run the stream calls, log.

A delivery to `POST /api/webhooks/{name}` goes:

1. the webhook by name (404 for an unknown name, before anything is read from the body);
2. authentication with its secret (`webhooks.auth`, constant time): 401 and nothing stored;
3. one at a time per webhook (a lock), so a run's events are applied in the order they came;
4. a redelivery (a delivery id already in the log as applied or ignored) answers `duplicate`
   and changes nothing; one that was rejected runs again (the cause may be fixed by now);
5. the mapping (`webhooks.github`, `webhooks.generic`) gives a `Plan`, run through the Live
   Activities calls (`stream`, `end_stream`) exactly as the HTTP routes call them;
6. the delivery, with its outcome, is written to the log (table `deliveries`), which keeps the
   webhook's `keep` newest entries: the oldest are deleted in the same write.

A 4xx (malformed payload, unsupported event, content the contract refuses) is logged as
`rejected` and re-raised; a 5xx (the store failing) is raised without a log entry, so a retry
runs it again. The log is written after the calls: when that write fails the answer is 503, and
a redelivery applies the same state again (a stream PUT of unchanged content is a `noop`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import msgspec
import trio

from engine.server.contract import errors, models
from engine.server.contract import webhooks as hooks
from engine.server.service.undo import StoreGuard
from engine.server.store.base import StoreError
from engine.server.store.records import DeleteDelivery, DeliveryRow, Op, PutDelivery
from engine.server.webhooks import auth, generic, github
from engine.server.webhooks.config import GITHUB, WebhookConfig
from engine.server.webhooks.plan import Finish, Plan, Put, malformed

__all__ = ["StreamCalls", "Webhooks"]

log = logging.getLogger("lockstep.webhooks")

_DELIVERY_ID: Final = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces


class StreamCalls(Protocol):
    """The two Live Activities calls a plan makes (`LiveActivities` has them)."""

    async def stream(
        self, stream_key: str, req: models.StreamRequest, /
    ) -> models.StreamPutResponse:
        """Start or update the stream's activity."""
        ...

    async def end_stream(
        self, stream_key: str, req: models.StreamDeleteRequest | None, /
    ) -> models.StreamDeleteResponse:
        """End the stream's activity."""
        ...


class Webhooks:
    """`receive`, `deliveries` and `replay` for the configured webhooks (module docstring)."""

    def __init__(
        self,
        configs: Sequence[WebhookConfig],
        live: StreamCalls,
        store: StoreGuard,
        logged: Sequence[DeliveryRow],
        *,
        wall_clock: Callable[[], float],
    ) -> None:
        self._configs = {c.name: c for c in configs}
        self.live = live  # replaced in a cluster (engine/server/cluster/streams.py)
        self._store = store
        self._wall = wall_clock
        self._locks = {name: trio.Lock() for name in self._configs}
        # Per webhook, oldest first; rows of webhooks no longer configured stay in the store only.
        self._log: dict[str, dict[str, DeliveryRow]] = {name: {} for name in self._configs}
        for row in sorted(logged, key=lambda r: r.seq):
            if row.webhook in self._log:
                self._log[row.webhook][row.delivery_id] = row

    def __repr__(self) -> str:  # the configs' secrets stay out of reprs anyway
        return f"Webhooks({', '.join(self._configs)})"

    # -- the three calls -------------------------------------------------------------------------
    async def receive(
        self, name: str, headers: Mapping[str, str], body: bytes
    ) -> hooks.WebhookReply:
        """One delivery to webhook `name`; `headers` by lower-case name."""
        cfg = self._config(name)
        if cfg.kind == GITHUB:
            auth.check_signature(cfg.secret, body, headers.get(auth.GITHUB_SIGNATURE))
            event = _required(headers, "x-github-event")
            delivery_id = _delivery_id(_required(headers, "x-github-delivery"))
        else:
            auth.check_secret(cfg.secret, headers.get(auth.SECRET_HEADER))
            event = generic.EVENT
            given = headers.get("x-delivery-id")
            delivery_id = _delivery_id(given) if given else str(uuid.uuid4())
        async with self._locks[name]:
            prior = self._log[name].get(delivery_id)
            if prior is not None and prior.outcome in (hooks.APPLIED, hooks.IGNORED):
                return self._reply(
                    prior,
                    hooks.DUPLICATE,
                    f"delivery {delivery_id} was already {prior.outcome} at "
                    f"{models.iso(prior.received_at)}; nothing changed",
                    streams=[],
                )
            row = DeliveryRow(
                webhook=name,
                delivery_id=delivery_id,
                seq=self._next_seq(name),
                received_at=self._wall(),
                event=event[:100],
                status=0,
                outcome="",
                message="",
                streams=[],
                body=body.decode("utf-8", "replace"),
                replays=0,
            )
            return await self._run(cfg, row, body)

    def deliveries(self, name: str) -> hooks.WebhookDeliveryList:
        """The webhook's delivery log, newest first."""
        self._config(name)
        rows = reversed(self._log[name].values())
        return hooks.WebhookDeliveryList(webhook=name, deliveries=[_entry(r) for r in rows])

    async def replay(self, name: str, delivery_id: str) -> hooks.WebhookReply:
        """Run a logged delivery again, as it was received (no redelivery check)."""
        cfg = self._config(name)
        async with self._locks[name]:
            prior = self._log[name].get(delivery_id)
            if prior is None:
                raise errors.NotFound(
                    f"no delivery {delivery_id[:128]!r} in the log of webhook {name!r}"
                )
            row = msgspec.structs.replace(prior, replays=prior.replays + 1)
            return await self._run(cfg, row, prior.body.encode())

    # -- running a delivery ----------------------------------------------------------------------
    async def _run(self, cfg: WebhookConfig, row: DeliveryRow, body: bytes) -> hooks.WebhookReply:
        try:
            plan = _plan(cfg, row.event, body)
            streams = await self._apply(plan)
        except errors.ApiError as exc:
            if exc.status >= 500:
                raise
            row.status, row.outcome, row.message = exc.status, hooks.REJECTED, exc.message
            # The rejection is what the sender needs to hear; a log write failure is a warning.
            with contextlib.suppress(errors.StorageUnavailable):
                await self._keep(row)
            raise
        row.status, row.message, row.streams = 200, plan.summary, streams
        row.outcome = hooks.APPLIED if plan.actions else hooks.IGNORED
        await self._keep(row)
        return self._reply(row, row.outcome, row.message, streams=streams)

    async def _apply(self, plan: Plan) -> list[str]:
        for action in plan.actions:
            if isinstance(action, Put):
                await self.live.stream(action.key, action.request)
            elif isinstance(action, Finish):
                try:
                    await self.live.end_stream(action.key, action.end_request())
                except errors.NotFound:
                    # Its first events were missed (or selected later): show the outcome anyway.
                    await self.live.stream(action.key, action.request)
                    await self.live.end_stream(action.key, action.end_request())
        return [a.key for a in plan.actions]

    async def _keep(self, row: DeliveryRow) -> None:
        """Write `row` to the log and drop the oldest beyond `keep`; memory follows the store."""
        entries = self._log[row.webhook]
        others = [k for k in entries if k != row.delivery_id]
        drop = others[: max(0, len(others) + 1 - self._configs[row.webhook].keep)]
        ops: list[Op] = [PutDelivery(row)]
        ops += [DeleteDelivery(row.webhook, k) for k in drop]
        try:
            await self._store.write(ops)
        except StoreError as exc:
            log.warning("webhook %s: delivery %s not logged: %s", row.webhook, row.delivery_id, exc)
            raise errors.StorageUnavailable(
                f"storage unavailable ({exc.cause}): the delivery was processed but not logged; "
                "delivering it again is safe",
                cause=exc.cause,
                retry_after=self._store.retry_after,
            ) from None
        for key in drop:
            del entries[key]
        old = entries.get(row.delivery_id)
        if old is not None and old.seq != row.seq:
            del entries[row.delivery_id]  # a redelivery of a rejected one: now the newest
        entries[row.delivery_id] = row  # a replay keeps its place

    # -- helpers ---------------------------------------------------------------------------------
    def _next_seq(self, name: str) -> int:
        entries = self._log[name]
        return max((r.seq for r in entries.values()), default=0) + 1

    def _config(self, name: str) -> WebhookConfig:
        cfg = self._configs.get(name)
        if cfg is None:
            raise errors.NotFound(f"no webhook named {name[:64]!r} is configured")
        return cfg

    def _reply(
        self, row: DeliveryRow, outcome: str, message: str, *, streams: list[str]
    ) -> hooks.WebhookReply:
        return hooks.WebhookReply(
            success=True,
            webhook=row.webhook,
            delivery_id=row.delivery_id,
            event=row.event,
            outcome=_outcome(outcome),
            message=message,
            streams=streams,
            timestamp=models.iso(self._wall()),
        )


def _plan(cfg: WebhookConfig, event: str, body: bytes) -> Plan:
    """The delivery's plan: its body decoded, then mapped by kind."""
    payload = _decode(body, cfg)
    if cfg.kind == GITHUB:
        return github.plan(event, payload, _target(cfg))
    return generic.plan(payload, cfg)


def _decode(body: bytes, cfg: WebhookConfig) -> object:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        hint = ""
        if cfg.kind == GITHUB and body.startswith(b"payload="):
            hint = " (choose Content type application/json in GitHub's webhook settings)"
        raise malformed("", f"the body is not valid JSON{hint}") from None


def _target(cfg: WebhookConfig) -> github.Target:
    return github.Target(cfg.name, cfg.channels, cfg.auto_dismiss_minutes)


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise errors.BadRequest(f"missing {name} header", field=name)
    return value


def _delivery_id(value: str) -> str:
    if _DELIVERY_ID.fullmatch(value) is None:
        raise errors.BadRequest(
            "the delivery id must be 1 to 128 printable ASCII characters without spaces",
            field="delivery_id",
        )
    return value


def _outcome(value: str) -> hooks.Outcome:
    for known in ("applied", "ignored", "duplicate", "rejected"):
        if value == known:
            return known
    raise ValueError(f"not an outcome: {value!r}")


def _entry(row: DeliveryRow) -> hooks.WebhookDelivery:
    return hooks.WebhookDelivery(
        delivery_id=row.delivery_id,
        event=row.event,
        received_at=models.iso(row.received_at),
        status=row.status,
        outcome=_outcome(row.outcome),
        message=row.message,
        streams=row.streams,
        replays=row.replays,
    )
