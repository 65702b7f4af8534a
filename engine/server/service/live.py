"""Live Activities: the use cases behind both front doors (HTTP API and embedded Python).

Two lifecycles share one implementation:
- by id: `start` -> `update`* -> `end`, the caller keeps the `activity_id`;
- by stream key: `stream(key, ...)` starts, updates, skips (`noop`) or rotates the key's current
  activity, and `end_stream(key)` ends it (http-api.md, "Stream semantics").

Every call follows the same steps: validate against the activity's type, build the exact APNs
payload and check its size (413 before anything is stored or queued, architecture.md invariant 4),
apply the change to the in-memory rows, make it durable (`Store.write`, group-committed), and only
then hand it to the outbox, which submits what each recipient lacks. When the write fails, the
in-memory changes are rolled back (`undo.Undo`) and the call answers 503 `storage_unavailable`:
nothing changed, nothing pushed. A stream PUT is pipelined: under the stream's lock it applies its
change and queues its write (`StoreGuard.enqueue`, in arrival order), then waits for durability
without the lock, so a burst to one stream shares commits instead of waiting for one commit per
call; the hand-off then pushes the newest durable version under the lock again (latest wins:
an older state never follows a newer one). A failed write rolls back every call queued after it
too (a later call may have built on it), and each of them answers 503.

Every call takes the calling API key's `KeyScope` (default scope `all`, contract/scope.py): a
call that picks recipients resolves its channels with it (403 for a channel outside a restricted
key's list; no target means the key's channels), and a call that changes an activity first
checks, under the activity's lock, that the key reaches every channel it was sent to. The reply
waits a short, configurable moment (`notify_wait`) for APNs answers so that `devices_notified` is
meaningful; what is not answered by then is reported in `devices_queued`. It waits only for pushes
that go out now: a push the engine holds (its lane's pacing, a push of the lane in flight, a
backoff) or a recipient waiting for its update token is counted in `devices_queued` at once, so a
call whose pushes are all held is answered without waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import trio

from engine.config import ConfigError
from engine.delivery.dispatch import PushHandle
from engine.payload import (
    EventKind,
    LiveActivityContent,
    PayloadTooLarge,
    PreparedPayload,
    prepare,
)
from engine.results import DeliveryStatus
from engine.server.contract import errors, models
from engine.server.contract.carry import carry_all, carry_needed, may_carry
from engine.server.contract.content import timer_defaults
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.service.outbox import Outbox, alert_of, start_content
from engine.server.service.state import Activity, Recipient, Registry
from engine.server.service.undo import StoreGuard, Ticket, Undo
from engine.server.store.records import (
    ActivityRow,
    DeviceRow,
    Op,
    PutActivity,
    PutRecipient,
    PutStream,
    RecipientRow,
    StreamRow,
    pack_state,
    unpack_state,
)

# iOS ends a Live Activity after 8 hours (apns.md §6); a stream rotates a little before that.
IOS_ACTIVITY_LIMIT = 8 * 3600.0
# The `errors` entry for a device skipped because its token for the activity is dead.
DEAD_TOKEN_ERROR = (
    "dead token: nothing more is sent to this device for this activity "
    "(dismissed, or the app is gone; a stream starts afresh once the device registers again)"
)

END_OLDEST = "end_oldest"
"""Limit policy: a start on a full device ends that device's least recently updated activity."""
REFUSE = "refuse"
"""Limit policy: a start on a full device is refused whole (429 `live_activity_limit`)."""

NewRequest = models.StartRequest | models.StreamRequest
"""A call that may start an activity: it names its recipients (`channels` / `target`)."""
ChangeRequest = (
    models.UpdateRequest | models.EndRequest | models.StreamRequest | models.StreamDeleteRequest
)
"""A call that changes an activity; only a stream DELETE may leave `content_state` out."""


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Knobs of the Live Activities service."""

    attributes_type: str = "LockstepActivityAttributes"
    rotate_after: float = IOS_ACTIVITY_LIMIT - 30 * 60  # rotate streams at 7 h 30 min
    notify_wait: float = 0.25  # how long a reply waits for APNs answers (s)
    default_dismiss_minutes: int = 3  # the contract's default for `auto_dismiss_minutes`
    device_limit: int = 5  # Live Activities one iPhone shows at once (apns.md §6 simulator model)
    limit_policy: str = END_OLDEST  # or REFUSE: what a start does on a device at its limit
    # How long a started activity may wait for its update token before the status calls it
    # overdue and the server reports it (the user never tapped Allow, apns.md §6) (s).
    token_timeout: float = 120.0

    def __post_init__(self) -> None:
        """Refuse a limit, policy or timeout that cannot work, naming the key."""
        if self.device_limit < 1:
            raise ConfigError(f"[live].device_limit must be at least 1, not {self.device_limit}")
        if not 0 < self.token_timeout < float("inf"):
            raise ConfigError(
                f"[live].token_timeout must be a positive number of seconds, "
                f"not {self.token_timeout!r}"
            )
        if self.limit_policy not in (END_OLDEST, REFUSE):
            raise ConfigError(
                f"[live].limit_policy must be {END_OLDEST!r} or {REFUSE!r}, "
                f"not {self.limit_policy!r}"
            )


@dataclass(slots=True)
class _Sent:
    """What one call pushed: handles to wait for, recipients held for their token, and devices
    skipped because their token for the activity is dead (reported in `errors`)."""

    handles: list[tuple[str, PushHandle]]
    held: int = 0
    dead: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Step:
    """A pipelined call between its change and its hand-off: the queued write, the pushes to
    make once it is durable (activity, its encoded push or None, the version that carries), and
    the start to launch."""

    ticket: Ticket
    pushes: list[tuple[Activity, PreparedPayload | None, int]]
    start: tuple[Activity, PreparedPayload, int] | None = None


class LiveActivities:
    """start / update / end / stream / end_stream (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        store: StoreGuard,
        outbox: Outbox,
        *,
        config: LiveConfig,
        wall_clock: Callable[[], float],
        new_id: Callable[[str | None], str] | None = None,
    ) -> None:
        self._reg = registry
        self._store = store
        self._outbox = outbox
        self._cfg = config
        self._wall = wall_clock
        # Called with the stream key (None for a plain start): a cluster node draws the id in
        # the activity's partition (engine/server/cluster/partitions.py).
        self._new_id = new_id or (lambda _stream_key: "la_" + uuid.uuid4().hex)

    # -- by id -----------------------------------------------------------------------------------
    async def start(
        self, req: models.StartRequest, scope: KeyScope = FULL_ACCESS
    ) -> models.StartResponse:
        """Start an activity on the targeted devices (push-to-start)."""
        channels = scope.targets(_channels(req))
        state = req.content_state
        if state.type is None:
            raise errors.BadRequest("content_state.type is required to start an activity")
        now = self._wall()
        undo = Undo()
        act, prepared, ops, ended = self._begin(
            req, state.type, channels, None, now, undo, scope=scope
        )
        version = act.row.version
        await self._store.commit(ops, undo)
        for old in ended:
            await self._push_all(old)
        sent = await self._launch(act, prepared, version)
        notified, queued, errs = await self._settle(sent)
        return models.StartResponse(
            success=True,
            activity_id=act.row.activity_id,
            ended_activity_id=ended[0].row.activity_id if ended else None,
            devices_notified=notified,
            devices_queued=queued,
            effective_channel_slugs=list(channels) or None,
            tags=req.tags,
            timestamp=models.iso(now),
            errors=errs or None,
        )

    async def update(
        self, req: models.UpdateRequest, scope: KeyScope = FULL_ACCESS
    ) -> models.UpdateResponse:
        """Replace an activity's state (latest wins per device)."""
        act = self._find(req.activity_id)
        async with self._reg.locks.hold(self._reg.lock_key(act)):
            scope.check_reach(act.row.channels, f"activity {req.activity_id}")
            if act.row.ended:
                raise errors.ApiError(
                    409, "activity_ended", f"activity {req.activity_id} has ended; start a new one"
                )
            now = self._wall()
            undo = Undo()
            ops, prepared = self._apply(act, req, EventKind.UPDATE, now, undo, carry=True)
            version = act.row.version
            await self._store.commit(ops, undo)
            sent = await self._push_all(act, prepared, version)
        notified, queued, errs = await self._settle(sent)
        return models.UpdateResponse(
            success=True,
            activity_id=act.row.activity_id,
            devices_notified=notified,
            devices_queued=queued,
            timestamp=models.iso(now),
            operation="updated",
            warning=self._warning(act),
            errors=errs or None,
        )

    async def end(
        self, req: models.EndRequest, scope: KeyScope = FULL_ACCESS
    ) -> models.EndResponse:
        """End an activity with its final state (never coalesced away)."""
        act = self._find(req.activity_id)
        async with self._reg.locks.hold(self._reg.lock_key(act)):
            scope.check_reach(act.row.channels, f"activity {req.activity_id}")
            now = self._wall()
            if act.row.ended:
                return models.EndResponse(
                    success=True,
                    activity_id=act.row.activity_id,
                    ignored=True,
                    message="the activity had already ended",
                    timestamp=models.iso(now),
                )
            undo = Undo()
            freeze = _freezes(req.content_state)
            ops, prepared = self._apply(
                act, req, EventKind.END, now, undo, carry=True, freeze=freeze
            )
            version = act.row.version
            await self._store.commit(ops, undo)
            sent = await self._push_all(act, prepared, version)
        notified, queued, errs = await self._settle(sent)
        return models.EndResponse(
            success=True,
            activity_id=act.row.activity_id,
            devices_notified=notified,
            devices_queued=queued,
            timestamp=models.iso(now),
            errors=errs or None,
        )

    # -- by stream key ---------------------------------------------------------------------------
    async def stream(
        self, stream_key: str, req: models.StreamRequest, scope: KeyScope = FULL_ACCESS
    ) -> models.StreamPutResponse:
        """Start, update, skip or rotate the stream's activity (http-api.md, stream semantics).

        The stream's lock covers validation, the change in memory and queueing its write; the
        call waits for durability without it (the next call to the stream goes on meanwhile and
        shares the commit), then takes it again to hand the newest durable version to the
        engine. Waiting for APNs answers happens after it is released, so a stream held back by
        pacing still takes the next call at once.
        """
        models.check_stream_key(stream_key)
        lock = "stream:" + stream_key
        if self._reg.locks.free(lock):
            # Nobody holds or waits for it: the change and its queueing run without a pause,
            # so nothing can come between them; taking the lock would only cost time.
            step, reply = self._stream_locked(stream_key, req, scope)
        else:
            async with self._reg.locks.hold(lock):
                step, reply = self._stream_locked(stream_key, req, scope)
        if step is None:
            return reply
        await self._store.settle(step.ticket)  # durable, or 503 with the change rolled back
        async with self._reg.locks.hold(lock):
            sent = await self._hand_off(step)
        if sent is not None:
            notified, queued, errs = await self._settle(sent)
            reply.devices_notified, reply.devices_queued = notified, queued
            reply.errors = errs or None
            # As of the answer, like the counts (the push may have spent budget meanwhile).
            act = self._reg.activities.get(reply.activity_id or "")
            if act is not None:
                reply.warning = self._warning(act)
        return reply

    def _stream_locked(
        self, stream_key: str, req: models.StreamRequest, scope: KeyScope
    ) -> tuple[_Step | None, models.StreamPutResponse]:
        """Validate and apply a stream PUT and queue its write: no await, so nothing else runs
        between the change and its place in the store's queue (`StoreGuard.enqueue`)."""
        channels = scope.targets(_channels(req))  # 403 before anything else for a foreign target
        now = self._wall()
        act = self._reg.current_of_stream(stream_key)
        if act is not None:
            scope.check_reach(act.row.channels, f"stream {stream_key!r}")
        type_ = req.content_state.type or (act.row.type if act is not None else None)
        if type_ is None:
            raise errors.BadRequest(
                f"content_state.type is required: stream {stream_key!r} has no running activity"
            )
        decoded = req.content_state
        if act is not None:
            req = _completed(req, act.row, type_)
        previous: Activity | None = None
        if act is not None and (
            type_ != act.row.type
            or now - act.row.started_at >= self._cfg.rotate_after
            or _unreachable(act, self._reg)
        ):
            previous, act = act, None
        if act is not None:
            new_state = models.push_state(
                req.content_state, models.as_content_type(type_), req.action, req.secondary_action
            )
            packed = pack_state(new_state)
            if bytes(packed) == bytes(act.row.state) and req.alert is None:
                return None, models.StreamPutResponse(
                    success=True,
                    operation="noop",
                    stream_key=stream_key,
                    ignored=True,
                    activity_id=act.row.activity_id,
                    devices_notified=0,
                    devices_queued=0,
                    message="content unchanged; nothing sent",
                    timestamp=models.iso(now),
                )
            undo = Undo()
            ops, prepared = self._apply(
                act,
                req,
                EventKind.UPDATE,
                now,
                undo,
                type_=type_,
                pushed=(new_state, packed, req.content_state is decoded),
            )
            ticket = self._store.enqueue(ops, undo)
            step = _Step(ticket, pushes=[(act, prepared, act.row.version)])
            return step, models.StreamPutResponse(
                success=True,
                operation="updated",
                stream_key=stream_key,
                activity_id=act.row.activity_id,
                timestamp=models.iso(now),
            )
        undo = Undo()
        new, prepared, ops, ended = self._begin(
            req, type_, channels, stream_key, now, undo, previous, scope=scope
        )
        if previous is not None:
            # Rotation: end the old activity at once with its last state, then start afresh.
            _ahead(previous, undo)
            _end_now(previous, now)
            _mark_durable(previous, undo)
            ops.append(PutActivity(previous.row))
        ticket = self._store.enqueue(ops, undo)
        olds = [previous, *ended] if previous is not None else ended
        step = _Step(ticket, pushes=[(old, None, old.row.version) for old in olds])
        step.start = (new, prepared, new.row.version)
        return step, models.StreamPutResponse(
            success=True,
            operation="rotated" if previous else "started",
            stream_key=stream_key,
            activity_id=new.row.activity_id,
            previous_activity_id=previous.row.activity_id if previous else None,
            ended_activity_id=ended[0].row.activity_id if ended else None,
            effective_channel_slugs=list(channels) or None,
            tags=req.tags,
            timestamp=models.iso(now),
        )

    async def end_stream(
        self,
        stream_key: str,
        req: models.StreamDeleteRequest | None,
        scope: KeyScope = FULL_ACCESS,
    ) -> models.StreamDeleteResponse:
        """End the stream's activity; ignored when it has already ended; 404 for an unknown key."""
        models.check_stream_key(stream_key)
        async with self._reg.locks.hold("stream:" + stream_key):
            now = self._wall()
            stream = self._reg.streams.get(stream_key)
            if stream is None:
                raise errors.NotFound(f"no stream with key {stream_key!r}")
            last = self._reg.activities.get(stream.activity_id or "")
            if last is not None:
                scope.check_reach(last.row.channels, f"stream {stream_key!r}")
            act = self._reg.current_of_stream(stream_key)
            if act is None:
                return models.StreamDeleteResponse(
                    success=True,
                    operation="ended",
                    stream_key=stream_key,
                    activity_id=stream.activity_id,
                    ignored=True,
                    message="the stream's activity had already ended",
                    timestamp=models.iso(now),
                )
            freeze = req is None or _freezes(req.content_state)
            if req is not None and req.content_state is not None:
                req = _completed(req, act.row, req.content_state.type)
            undo = Undo()
            ops, prepared = self._apply(act, req, EventKind.END, now, undo, freeze=freeze)
            version = act.row.version
            await self._store.commit(ops, undo)
            sent = await self._push_all(act, prepared, version)
        notified, queued, errs = await self._settle(sent)
        return models.StreamDeleteResponse(
            success=True,
            operation="ended",
            stream_key=stream_key,
            activity_id=act.row.activity_id,
            devices_notified=notified,
            devices_queued=queued,
            timestamp=models.iso(now),
            errors=errs or None,
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _find(self, activity_id: str) -> Activity:
        act = self._reg.activities.get(activity_id)
        if act is None:
            raise errors.NotFound(f"no activity with id {activity_id!r}")
        return act

    def _begin(
        self,
        req: NewRequest,
        type_: str,
        channels: Sequence[str],
        stream_key: str | None,
        now: float,
        undo: Undo,
        replacing: Activity | None = None,
        *,
        scope: KeyScope = FULL_ACCESS,
    ) -> tuple[Activity, PreparedPayload, list[Op], list[Activity]]:
        """A new activity for the selected devices, its start payload (size-checked), ops, and
        the activities ended to make room for it (`_make_room`); `replacing` is a stream's
        activity this one rotates out, which the caller ends. Every change is recorded in
        `undo` (the index `Registry.track` fills forgets an activity that is not registered)."""
        ctype = models.as_content_type(type_)
        models.check_content(req.content_state, ctype)
        devices = self._reg.select_devices(channels)
        if not devices:
            raise errors.NoRecipients(
                "no registered device matches the target"
                + (f" (channels: {', '.join(channels)})" if channels else ""),
                effective_channel_slugs=list(channels) or self._reg.all_channels(),
            )
        ended, crowded = self._make_room(devices, replacing, scope)
        row = ActivityRow(
            activity_id=self._new_id(stream_key),
            stream_key=stream_key,
            type=type_,
            state=pack_state(
                models.push_state(req.content_state, ctype, req.action, req.secondary_action)
            ),
            alert=_alert_dict(req.alert),
            version=1,
            ended=False,
            started_at=now,
            updated_at=now,
            ended_at=None,
            dismissal_date=None,
            update_count=0,
            channels=list(channels),
            metadata=_metadata(req),
            tags=req.tags,
        )
        act = Activity(row)
        prepared = _checked(lambda: prepare(start_content(act, self._cfg.attributes_type)))
        ops: list[Op] = [PutActivity(row)]
        for old in ended:  # to make room: ended now, with their last state (as a rotation)
            _ahead(old, undo)
            _end_now(old, now)
            _mark_durable(old, undo)
            ops.append(PutActivity(old.row))
        # A device whose room was made by ending older activities may still show them when the
        # start reaches it (their ends travel on other lanes): iOS then ignores the start
        # (apns.md §6). Remembered so an update token that never comes reads `refused_limit`.
        for device in devices:
            rec = RecipientRow(
                activity_id=row.activity_id,
                device_id=device.device_id,
                start_token=device.push_to_start_token,
                update_token=None,
                started=False,
                sent_version=0,
                dead=False,
            )
            act.recipients[device.device_id] = Recipient(rec, crowded=device.device_id in crowded)
            ops.append(PutRecipient(rec))
        undo.entry(self._reg.activities, row.activity_id)
        self._reg.activities[row.activity_id] = act
        self._reg.track(act)
        if stream_key is not None:
            stream = StreamRow(stream_key=stream_key, activity_id=row.activity_id)
            undo.entry(self._reg.streams, stream_key)
            self._reg.streams[stream_key] = stream
            ops.append(PutStream(stream))
        return act, prepared, ops, ended

    def _make_room(
        self, devices: Sequence[DeviceRow], replacing: Activity | None, scope: KeyScope
    ) -> tuple[list[Activity], set[str]]:
        """Apply the limit policy to the devices a start targets (iOS shows at most
        `device_limit` Live Activities per device and ignores a start past it, apns.md §6).

        `refuse`: 429 `live_activity_limit` before anything is stored. `end_oldest`: the
        activities to end, each full device's least recently updated ones, so that every device
        shows the new one, and the devices that were full. A channel-restricted key ends only
        activities it reaches itself (`KeyScope.reaches`); a device it cannot make room on is
        answered as `refuse` would. Nothing is changed here.
        """
        limit = self._cfg.device_limit
        full: dict[str, list[Activity]] = {}
        for device in devices:
            live = [a for a in self._reg.live_on(device.device_id) if a is not replacing]
            if len(live) >= limit:
                full[device.device_id] = live
        if not full:
            return [], set()
        if self._cfg.limit_policy != REFUSE:
            ended = self._oldest(full, limit, scope)
            if ended is not None:
                return ended, set(full)
        raise errors.ActivityLimit(
            f"{len(full)} of the {len(devices)} targeted devices already show {limit} Live "
            "Activities, the most iOS shows; end one first",
            limit=limit,
            active=max(len(live) for live in full.values()),
            blocked_devices=len(full),
            targeted_devices=len(devices),
        )

    @staticmethod
    def _oldest(
        full: dict[str, list[Activity]], limit: int, scope: KeyScope
    ) -> list[Activity] | None:
        """Each full device's least recently updated activities that `scope` may end, enough to
        leave room for one more; None when some device has too few of those."""
        ended: dict[str, Activity] = {}
        for live in full.values():
            mine = [a for a in live if scope.reaches(a.row.channels)]
            if len(mine) < len(live) - limit + 1:
                return None
            oldest = sorted(mine, key=lambda a: (a.row.updated_at, a.row.activity_id))
            for act in oldest[: len(live) - limit + 1]:
                ended[act.row.activity_id] = act
        return list(ended.values())

    def _apply(
        self,
        act: Activity,
        req: ChangeRequest | None,
        kind: EventKind,
        now: float,
        undo: Undo,
        *,
        type_: str | None = None,
        carry: bool = False,
        freeze: bool = False,
        pushed: tuple[dict[str, Any], msgspec.Raw, bool] | None = None,
    ) -> tuple[list[Op], PreparedPayload]:
        """Apply an update or end to `act` (size-checked first; the change recorded in `undo`).

        Returns the ops to persist and the encoded push, which every recipient then shares.

        A stream PUT or DELETE carries the stream's whole state, completed beforehand with what
        its type needs (`_completed`); an update or end by id may carry only what changed, and the
        fields it leaves out keep their values (`carry=True`, `carry.carry_all`). Either way the
        resulting state is checked in full against the activity's type. `req` is None for a
        stream DELETE without a body: the activity ends with its latest state. Metadata and tags
        left out are kept; `{}` and `[]` clear them (the SDK models' descriptions). `freeze`: an
        end that gave no new timer window stops a timer where it stands (`_freezes`).
        `pushed`: a stream PUT's content-state for the push, already built (and encoded) from
        `req` by the caller, not yet checked against the type.
        """
        row = act.row
        state_in = req.content_state if req is not None else None
        type_ = type_ or (state_in.type if state_in is not None and state_in.type else row.type)
        packed: msgspec.Raw | None = None
        if pushed is not None and state_in is not None:
            # The request's own state is the pushed one (no carry): checked as it came, which is
            # the same as checking the built state (`_check_whole`) without converting it back;
            # `decode` ran the type-independent rules on it already, unless `_completed` made it.
            state, packed, decoded = pushed
            models.check_content(state_in, models.as_content_type(type_), common=not decoded)
        elif req is None or state_in is None:
            state = unpack_state(row.state)
        else:
            state = models.push_state(
                state_in,
                models.as_content_type(type_),
                req.action,
                req.secondary_action,
                defaults=not carry,
            )
            if carry:
                state = carry_all(state, unpack_state(row.state), type_)
                if type_ == "timer":
                    timer_defaults(state)
            _check_whole(state, type_)
        if freeze and type_ == "timer":
            state, packed = {**state, "is_running": False}, None
        alert = _alert_dict(req.alert if req is not None else None)
        dismissal = None
        if kind is EventKind.END:
            dismissal = int(now + _dismiss_after(state_in, self._cfg.default_dismiss_minutes))
        if packed is None:
            packed = pack_state(state)
        # What `latest_content` makes of the changed row, built from the state at hand instead
        # of decoding the packed one again.
        prepared = _checked(
            lambda: prepare(
                LiveActivityContent(kind, state, alert=alert_of(alert), dismissal_date=dismissal)
            )
        )
        _ahead(act, undo)
        row.state, row.alert, row.type = packed, alert, type_
        row.version += 1
        row.updated_at = now
        if kind is EventKind.END:
            row.ended, row.ended_at, row.dismissal_date = True, now, dismissal
        else:
            row.update_count += 1
        if req is not None and req.metadata is not None:
            row.metadata = dict(req.metadata) or None
        if req is not None and req.tags is not None:
            row.tags = list(req.tags) or None
        _mark_durable(act, undo, prepared)
        return [PutActivity(row)], prepared

    async def _hand_off(self, step: _Step) -> _Sent:
        """A durable pipelined call's pushes: what the ended activities and the updated one
        lack (the newest durable version, maybe a later call's), then the start. The last
        push's handles answer the call."""
        sent = _Sent([])
        for act, prepared, version in step.pushes:
            sent = await self._push_all(act, prepared, version)
        if step.start is not None:
            act, prepared, version = step.start
            sent = await self._launch(act, prepared, version)
        return sent

    async def _launch(
        self, act: Activity, prepared: PreparedPayload, version: int | None = None
    ) -> _Sent:
        sent = _Sent([])
        for device_id, rec in act.recipients.items():
            device = self._reg.devices.get(device_id)
            if device is None:
                continue
            handle = await self._outbox.send_start(act, rec, device, prepared, version)
            sent.handles.append((device_id, handle))
        return sent

    async def _push_all(
        self, act: Activity, prepared: PreparedPayload | None = None, version: int | None = None
    ) -> _Sent:
        """Hand `act`'s newest durable version to every recipient lacking it; `prepared` is
        the push of `version` (used when that is still the newest durable one)."""
        mine = act.row.version if version is None else version
        sent = _Sent([])
        for device_id, rec in act.recipients.items():
            if rec.row.dead:
                sent.dead.append(device_id)
                continue
            handle = await self._outbox.send_latest(act, rec, prepared=prepared, version=version)
            if handle is not None:
                sent.handles.append((device_id, handle))
            elif rec.row.update_token is None or rec.queued_version >= mine:
                # Held for its token, or this version (or a newer one) already went to the
                # engine by another hand (a token report, a later call): queued all the same.
                sent.held += 1
        return sent

    async def _settle(self, sent: _Sent) -> tuple[int, int, list[str]]:
        """(notified, queued, errors) after waiting up to `notify_wait` for APNs answers.

        Only for pushes that go out now: one the engine holds (paced, behind another push of
        its lane, backing off), when submitted or later, is counted in `queued` without waiting
        further, so a call whose pushes are all held is answered at once.
        """
        # Only when some push is neither answered nor held: a cancel scope costs a few µs.
        if any(h.held is None and h.result_nowait() is None for _, h in sent.handles):
            with trio.move_on_after(self._cfg.notify_wait):
                for _, handle in sent.handles:
                    await handle.answered_unless_held()
        notified, queued = 0, sent.held
        errs = [f"{device_id}: {DEAD_TOKEN_ERROR}" for device_id in sent.dead]
        for device_id, handle in sent.handles:
            result = handle.result_nowait()
            if result is None or result.status is DeliveryStatus.SUPERSEDED:
                queued += 1
            elif result.status is DeliveryStatus.ACCEPTED:
                notified += 1
            else:
                errs.append(
                    f"{device_id}: {result.reason or result.status.value}"
                    + (f" ({result.detail})" if result.detail else "")
                )
        return notified, queued, errs

    def _warning(self, act: Activity) -> str | None:
        """Say when the activity's priority-10 budget runs low on a device, or is spent.

        The engine counts each device's priority-10 pushes against `delivery.hourly_budget`
        (apns.md §1, Budget rules): once low, routine updates go at priority 5 (shown after the
        phone's short delay); once spent, a start, alert or end past it may be held by iOS.
        """
        low = spent = 0
        for device_id in act.recipients:
            state = self._outbox.engine.budget(act.row.activity_id, device_id)
            if state is not None and state.low:
                low += 1
                spent += state.spent
        if spent:
            return (
                f"priority-10 budget spent on {spent} device(s): iOS throttles further alerts "
                "until it refills; routine updates go at priority 5 and are shown after a delay"
            )
        if low:
            return (
                f"priority-10 budget low on {low} device(s): routine updates now go at priority 5 "
                "(shown after a short delay); alerts and the end keep priority 10"
            )
        return None


_ACTION_KEYS = ("action", "secondary_action")


def _ahead(act: Activity, undo: Undo) -> None:
    """Record `act`'s row in `undo` before the call changes it; the first change that is not
    durable yet keeps a copy of the durable row (`Activity.durable`: what pushes may carry
    meanwhile). A rollback undoes every change not yet durable (`StoreGuard`), so memory is
    then durable again."""
    saved = undo.row(act.row)
    if act.durable is None:
        act.durable = saved
        act.durable_prepared = None

        def caught_up() -> None:
            act.durable = act.durable_prepared = None

        undo.step(caught_up)


def _mark_durable(act: Activity, undo: Undo, prepared: PreparedPayload | None = None) -> None:
    """Once the call's write is durable, its version of `act` (as changed now) is the newest
    durable one; memory is durable again when no later call has changed `act` since."""
    version = act.row.version
    row = msgspec.structs.replace(act.row)

    def durable() -> None:
        if act.row.version == version:
            act.durable = act.durable_prepared = None
        elif act.durable is None or act.durable.version < version:
            act.durable, act.durable_prepared = row, prepared

    undo.on_commit(durable)


def _end_now(act: Activity, now: float) -> None:
    """End an activity at once with its last state, dismissed at once (rotation, limit)."""
    act.row.ended, act.row.ended_at = True, now
    act.row.dismissal_date = int(now)
    act.row.version += 1
    act.row.alert = None


def _unreachable(act: Activity, reg: Registry) -> bool:
    """Whether a stream's next call starts a fresh activity instead of updating `act`.

    When every device's token for it is dead (410 / BadDeviceToken / the engine's refusal), it
    cannot be updated any more (push-to-start tokens may still work). When one device's tokens
    died and it has since registered a new push-to-start token (the app was reinstalled, the
    phone restored), only a fresh start reaches it again; updates would be held for a token
    report that never comes. A device that merely dismissed the activity keeps its start token
    and is left alone.
    """
    recs = act.recipients.values()
    if not recs:
        return False
    if all(r.row.dead for r in recs):
        return True
    for r in recs:
        device = reg.devices.get(r.row.device_id)
        if r.row.dead and device is not None and device.push_to_start_token != r.row.start_token:
            return True
    return False


_R = TypeVar("_R", models.StreamRequest, models.StreamDeleteRequest)


def _completed(req: _R, row: ActivityRow, type_: str | None) -> _R:
    """`req` with the fields its type needs and its state leaves out taken from `row`'s last
    accepted state (`carry.carry_needed`): a timer paused without `duration_seconds`, a
    segmented_progress ended without `number_of_steps`. Unchanged when it has no state."""
    state = req.content_state
    if state is None or not may_carry(
        lambda name: getattr(state, name) is not None, type_ or row.type
    ):
        return req
    fields = msgspec.to_builtins(state)
    carried = carry_needed(fields, unpack_state(row.state), type_ or row.type)
    if carried == fields:
        return req
    try:
        completed = msgspec.convert(carried, models.ContentState)
    except msgspec.ValidationError:
        # A stored state from before a rule changed: the call is then checked as it came, and
        # its 400 names what it lacks.
        return req
    return msgspec.structs.replace(req, content_state=completed)


def _freezes(state: models.ContentState | None) -> bool:
    """Whether an end stops its timer: the SDK's end "omits duration_seconds to preserve and
    freeze the latest timer state" (its `ContentStateEnd`). Without that, an ended activity's
    timer would keep counting on the lock screen until iOS removes it. Only timers are frozen."""
    return state is None or state.duration_seconds is None


def _check_whole(state: dict[str, Any], type_: str) -> None:
    """Check a complete pushed state against its type (after merging an update into it)."""
    fields = {k: v for k, v in state.items() if k not in _ACTION_KEYS}
    try:
        whole = msgspec.convert(fields, models.ContentState)
    except msgspec.ValidationError as exc:
        raise errors.BadRequest(f"content_state: {exc}") from None
    models.check_content(whole, models.as_content_type(type_))


def _checked(build: Callable[[], PreparedPayload]) -> PreparedPayload:
    try:
        return build()
    except PayloadTooLarge as exc:
        raise errors.TooLarge(str(exc), size=exc.size, limit=exc.limit) from None


def _channels(req: NewRequest) -> list[str]:
    """The channels a start targets (`channels`, else `target.channels`); empty: every device."""
    target = req.target
    channels = req.channels or (target.channels if target is not None else None)
    return list(channels or [])


def _alert_dict(alert: models.AlertPayload | None) -> dict[str, Any] | None:
    if alert is None or (not alert.title and not alert.body):
        return None
    return {"title": alert.title or "", "body": alert.body or ""}


def _metadata(req: NewRequest | ChangeRequest) -> dict[str, Any] | None:
    return dict(req.metadata) if req.metadata else None


def _dismiss_after(state: models.ContentState | None, default_minutes: int) -> float:
    """Seconds until an ended activity leaves the lock screen (its `dismissal-date`, apns.md §6);
    `auto_dismiss_seconds` wins over `auto_dismiss_minutes`, and no state means the default."""
    if state is None:
        return 60.0 * default_minutes
    if state.auto_dismiss_seconds is not None:
        seconds = float(state.auto_dismiss_seconds)
    else:
        minutes = state.auto_dismiss_minutes
        seconds = 60.0 * (default_minutes if minutes is None else minutes)
    # The contract has no upper bound; iOS removes an ended activity after 4 h anyway (apns.md §6).
    return min(seconds, float(models.MAX_DISMISS_SECONDS))


__all__ = ["ChangeRequest", "LiveActivities", "LiveConfig", "NewRequest", "alert_of"]
