"""The outbox: turns durable activity rows into engine submissions and follows their results.

The service never keeps a queue of its own. What each device still needs is implied by two
numbers: the activity's `version` (bumped by every accepted start / update / end) and the
recipient's `sent_version` (the newest version APNs accepted for that device). Whatever is behind
is pushed as the activity's *current* row: the newest state, as an update, or as the end once the
activity has ended. That is exactly "latest wins", and it makes recovery after a restart the same
code path as a live update (architecture.md, invariant 2: the newest state and every end are
delivered, intermediate states may be coalesced away).

A start goes to the device's push-to-start token; updates and the end go to the per-activity
update token the device reports through the device API. Until that report arrives the recipient is
*held*: nothing is sent, and the report releases the newest state (`release`).

A recipient whose token is dead (a 410, BadDeviceToken, or the engine's own refusal of a token
APNs killed before, all `Outcome.DROP_TOKEN`) is marked dead once and written once; nothing is
submitted to it again, before or after a restart, until the app reports a fresh token.

Results come back through `PushHandle.add_done_callback` (no task per push). Progress
(`started`, `sent_version`, `dead`) is written behind in small batches by `run()`; losing the last
few of those writes in a crash only means a state is pushed once more after the restart, with a
newer timestamp, which the device treats as a plain update. A batch the store refuses (disk
full, read-only) stays dirty and is written again every `retry_interval` until the store takes it;
that retry is also what clears `/healthz` once the disk is freed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import trio

from engine.apns.reasons import Outcome
from engine.delivery.dispatch import PushHandle
from engine.delivery.items import LaneError
from engine.engine import Engine
from engine.payload import Alert, EventKind, LiveActivityContent, PreparedPayload, prepare
from engine.results import DeliveryResult, DeliveryStatus
from engine.server.service.state import Activity, Recipient, Registry
from engine.server.service.undo import StoreGuard
from engine.server.store.base import StoreError
from engine.server.store.records import DeviceRow, PutRecipient, unpack_state

log = logging.getLogger("lockstep.service")


def alert_of(alert: dict[str, Any] | None) -> Alert | None:
    """The engine `Alert` for a stored `{title, body}` alert."""
    if not alert:
        return None
    return Alert(title=alert.get("title") or "", body=alert.get("body") or "")


def start_content(act: Activity, attributes_type: str) -> LiveActivityContent:
    """The push-to-start for an activity's current state (apns.md §6: an alert is required)."""
    row = act.row
    state = unpack_state(row.state)
    alert = alert_of(row.alert) or Alert(title=str(state.get("title", "")), body="")
    attributes: dict[str, Any] = {"activity_id": row.activity_id}
    if row.stream_key is not None:
        attributes["stream_key"] = row.stream_key
    return LiveActivityContent(
        EventKind.START,
        state,
        alert=alert,
        attributes_type=attributes_type,
        attributes=attributes,
        input_push_token=True,
    )


def latest_content(act: Activity) -> LiveActivityContent:
    """The activity's newest state as an update, or as its end once it has ended."""
    row = act.row
    if row.ended:
        return LiveActivityContent(
            EventKind.END,
            unpack_state(row.state),
            alert=alert_of(row.alert),
            dismissal_date=row.dismissal_date,
        )
    return LiveActivityContent(EventKind.UPDATE, unpack_state(row.state), alert=alert_of(row.alert))


def durable_payload(act: Activity) -> PreparedPayload:
    """The push of the activity's newest durable state (`Activity.durable`)."""
    if act.durable is None:
        return prepare(latest_content(act))
    if act.durable_prepared is None:
        act.durable_prepared = prepare(latest_content(Activity(act.durable)))
    return act.durable_prepared


class Outbox:
    """Submits what recipients are missing and records what APNs accepted."""

    def __init__(
        self,
        engine: Engine,
        store: StoreGuard,
        registry: Registry,
        *,
        attributes_type: str,
        wall_clock: Callable[[], float],
        pacing_interval: float = 1.0,
        flush_interval: float = 0.05,
        retry_interval: float = 5.0,
    ) -> None:
        self._engine = engine
        self._store = store
        self._reg = registry
        self._attributes_type = attributes_type
        self._wall = wall_clock
        self._pacing = pacing_interval
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._dirty: dict[tuple[str, str], Recipient] = {}
        # A previous run may have sent timestamps up to one pacing interval past its clock: every
        # lane starts above this, so a push after a quick restart is never equal to one sent
        # before it (the phone would ignore it, apns.md §6).
        self._restart_floor = int(wall_clock()) + math.ceil(pacing_interval)
        self._wake = trio.Event()
        self.accepted = 0
        self.rejected = 0
        self.failed = 0
        self.marked_dead = 0  # recipients this outbox marked dead (each once)

    @property
    def engine(self) -> Engine:
        """The engine pushes go through (its priority budget feeds the responses' warning)."""
        return self._engine

    @property
    def dirty(self) -> int:
        """Recipient rows waiting to be written."""
        return len(self._dirty)

    # -- submitting ------------------------------------------------------------------------------
    async def send_start(
        self,
        act: Activity,
        rec: Recipient,
        device: DeviceRow,
        prepared: PreparedPayload,
        version: int | None = None,
    ) -> PushHandle:
        """Push-to-start `act` on `device` (the payload was size-checked by the caller).

        `version`: the version `prepared` carries (the start's, when later calls have changed
        the activity since; default the current one)."""
        if not self._holds(act):
            return _moved(device.push_to_start_token)
        version = act.row.version if version is None else version
        rec.queued_version = version
        handle = await self._engine.submit(
            act.row.activity_id, device.push_to_start_token, prepared, lane=device.device_id
        )
        self._follow(handle, act, rec, version, start=True)
        return handle

    async def send_latest(
        self,
        act: Activity,
        rec: Recipient,
        *,
        min_timestamp: int = 0,
        prepared: PreparedPayload | None = None,
        version: int | None = None,
    ) -> PushHandle | None:
        """Push the newest durable state to `rec` if it lacks it; None when held or already
        queued (a newer call's change that is not durable yet is never pushed).

        `prepared` is a state already encoded (the caller size-checked it) and `version` the
        version it carries (default the current one): used when that is the newest durable
        one, so a call that reaches many devices encodes it once.
        """
        row = rec.row
        newest = act.durable_version
        if row.dead or row.update_token is None or rec.queued_version >= newest:
            return None
        if not self._holds(act):
            return None  # another node delivers it now (a cluster's partition moved)
        if prepared is None or (act.row.version if version is None else version) != newest:
            prepared = durable_payload(act)
        rec.queued_version = newest
        try:
            handle = await self._engine.submit(
                act.row.activity_id,
                row.update_token,
                prepared,
                lane=row.device_id,
                min_timestamp=max(min_timestamp, self._restart_floor, act.floor),
            )
        except LaneError as exc:
            # The engine has closed this activity's lane to the device (its end went out, or its
            # start or end failed for good): nothing more can be sent on it. A late token report
            # for it is no server error; the recipient stays queued at this version, so the same
            # report does not try again (a newer state or token does). The caller has still
            # stored what it was given.
            log.warning("nothing more for %s on %s: %s", act.row.activity_id, row.device_id, exc)
            return None
        self._follow(handle, act, rec, newest, start=False)
        return handle

    async def recover(self, activities: Iterable[Activity] | None = None) -> int:
        """After a restart (or, in a cluster, on taking over `activities` from another node):
        push what each recipient is missing; returns the pushes queued.

        Timestamps sent before the restart are at most one pacing interval ahead of the wall
        clock of that time, so starting the lane above `now + interval` keeps them strictly
        increasing on every device (apns.md §6, timestamp rule). A node taking a partition over
        starts above its own clock the same way: the previous owner's clock was at most the
        cluster's clock skew away, which the pacing interval plus a second covers.
        """
        floor = int(self._wall()) + math.ceil(self._pacing)
        queued = 0
        if activities is not None:
            activities = list(activities)
            for act in activities:
                act.floor = floor  # also for a later update on a lane opened after this one
        pending = self._reg.pending() if activities is None else _pending_of(activities)
        for act, rec in list(pending):
            device = self._reg.devices.get(rec.row.device_id)
            if not rec.row.started and rec.row.update_token is None:
                if act.row.ended or device is None:
                    continue  # never shown on the device: nothing to update or end
                if not self._holds(act):
                    continue  # given to another node while this loop waited (a cluster)
                rec.queued_version = act.row.version
                try:
                    handle = await self._engine.submit(
                        act.row.activity_id,
                        rec.row.start_token,
                        prepare(start_content(act, self._attributes_type)),
                        lane=rec.row.device_id,
                        min_timestamp=floor,
                    )
                except LaneError as exc:  # as in `send_latest`: nothing more goes on that lane
                    log.warning(
                        "no start for %s on %s: %s", act.row.activity_id, device.device_id, exc
                    )
                    continue
                self._follow(handle, act, rec, act.row.version, start=True)
                queued += 1
            elif await self.send_latest(act, rec, min_timestamp=floor) is not None:
                queued += 1
        return queued

    def _current(self, rec: Recipient) -> bool:
        """Whether `rec` is still the registry's (not of an activity forgotten, swept or given
        to another node since): only then is its progress this node's to write."""
        act = self._reg.activities.get(rec.row.activity_id)
        return act is not None and act.recipients.get(rec.row.device_id) is rec

    def _holds(self, act: Activity) -> bool:
        """Whether `act` is still this node's to deliver: in a cluster, a call that began before
        its partition moved away must not hand the engine anything more for it."""
        return self._reg.activities.get(act.row.activity_id) is act

    # -- results ---------------------------------------------------------------------------------
    def _follow(
        self, handle: PushHandle, act: Activity, rec: Recipient, version: int, *, start: bool
    ) -> None:
        def done(result: DeliveryResult) -> None:
            self._settled(act, rec, version, start, result)

        handle.add_done_callback(done)

    def _settled(
        self, act: Activity, rec: Recipient, version: int, start: bool, result: DeliveryResult
    ) -> None:
        if not self._holds(act):
            return  # another node delivers it now: its progress is that node's to record
        row = rec.row
        if result.status is not DeliveryStatus.SUPERSEDED:  # the status reads the last answer
            rec.last_status = result.http_status
            rec.last_reason = None if result.reason is None else result.reason.value
            if rec.last_reason is None and result.http_status is None:
                rec.last_reason = result.detail or result.status.value
            rec.last_at = self._wall()
        if result.status is DeliveryStatus.ACCEPTED:
            self.accepted += 1
            row.started = row.started or start
            row.sent_version = max(row.sent_version, version)
        elif result.status is DeliveryStatus.SUPERSEDED:
            return  # a newer state carries on in the same lane
        elif result.outcome is Outcome.DROP_TOKEN:
            # A 410, a BadDeviceToken, or the engine refusing a token it already knows is dead:
            # one outcome, one rule (apns.md §3).
            self.rejected += 1
            # A dead push-to-start token does not kill an activity the device already runs: a
            # retried start can meet a 410 after an earlier attempt got through and the app
            # reported the activity's own update token (apns.md §6, "Tokens").
            if row.dead or (start and row.update_token is not None):
                return  # nothing changes: marked once, written once
            row.dead = True
            self.marked_dead += 1
            log.info(
                "%s no longer reaches %s (%s): nothing more is sent to it for this activity",
                row.device_id,
                act.row.activity_id,
                result.reason or result.detail,
            )
        else:
            # Failed after every retry, or a request APNs refuses: allow a later call (or the next
            # restart) to queue the newest state again.
            self.failed += 1
            rec.queued_version = min(rec.queued_version, version - 1)
            log.warning(
                "push for %s to %s ended %s: %s",
                act.row.activity_id,
                row.device_id,
                result.status.value,
                result.reason or result.detail,
            )
        self._dirty[(row.activity_id, row.device_id)] = rec
        self._wake.set()

    # -- write-behind ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write recipient progress in batches until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self._flush_interval)
            if not await self.flush():
                await trio.sleep(self._retry_interval)
                self._wake.set()

    def forget(self, activity_ids: Collection[str]) -> None:
        """Drop the unwritten progress of `activity_ids` (this node no longer holds them: their
        new owner resends what it cannot see as sent, which never goes backwards)."""
        gone = set(activity_ids)
        self._dirty = {k: r for k, r in self._dirty.items() if k[0] not in gone}

    async def flush(self) -> bool:
        """Write every dirty recipient row now; False when the store refused them (they stay
        dirty, behind any newer change of the same recipient)."""
        if not self._dirty:
            return True
        batch, self._dirty = self._dirty, {}
        batch = {k: rec for k, rec in batch.items() if self._current(rec)}
        ops = [PutRecipient(rec.row) for rec in batch.values()]
        try:
            await self._store.write(ops)
        except StoreError as exc:
            log.warning("recipient progress not written (%d rows), retrying: %s", len(ops), exc)
            self._dirty = {**batch, **self._dirty}
            return False
        return True


def _pending_of(activities: Iterable[Activity]) -> Iterator[tuple[Activity, Recipient]]:
    """`Registry.pending` for some activities only."""
    for act in activities:
        for rec in act.recipients.values():
            if not rec.row.dead and rec.row.sent_version < act.row.version:
                yield act, rec


def _moved(device_token: str) -> PushHandle:
    """A handle already settled: the activity's partition moved to another node mid-call."""
    handle = PushHandle(device_token, trio.current_time())
    handle.settle(
        DeliveryResult(
            DeliveryStatus.FAILED,
            device_token,
            detail="another node delivers this activity now",
        )
    )
    return handle
