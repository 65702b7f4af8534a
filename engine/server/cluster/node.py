"""A cluster node: holds leases, takes partitions over, gives them up, and routes calls.

    async with open_node(service, store, table, settings...) as node:
        app = create_app(..., router=node)

Every `interval` seconds one round (`pgleases.LeaseTable.round`) renews this node's leases,
reads every lease and the live nodes, and then, by `leases.LeaseBook.plan`:

- takes free or expired partitions up to its share: for each taken, the stored activities and
  streams of the partition (only those: `Store.load_partitions`) are loaded and handed to the
  service (`Service.attach`), which pushes what each device lacks above the stored timestamps,
  so a device never sees an older state after a newer one; calls for the partition wait
  (`Unavailable`) until that is done. The load and the hand-over run in a task of their own
  (one takeover at a time), so the next rounds renew every lease, those being loaded included,
  on time however long the load takes;
- gives partitions up while another live node is below its share: the partition stops taking
  calls, the service stops delivering it (`Service.detach`: nothing queued for it is sent any
  more), then the lease is released and the next owner may take it at once.

A lease this node could not renew is dropped at its local deadline (`LeaseBook`), by a watchdog
that does not wait for the database: a node cut off from the database stops delivering its
partitions before any other node may take them, and its writes are refused by the fence.

Devices are written by the owner of partition 0; every node reloads them when the database
signals a change (a trigger and LISTEN, `pgleases`) and at least every `device_refresh` seconds.

The node is the HTTP front's router (`place`): a call for a partition this node holds and has
loaded is handled here, one for a partition another live node holds is forwarded to that node's
internal address, and while a partition has no owner (a takeover in progress) the call waits.
The listing of activities is answered by every owner for its own partitions and merged.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import psycopg
import trio

from engine.server.cluster.leases import LeaseBook, LeaseView
from engine.server.cluster.partitions import (
    GLOBAL,
    activity_partition,
    key_partition,
    new_activity_id,
)
from engine.server.cluster.pgleases import LeaseTable, devices_channel
from engine.server.cluster.routing import ALL, ANY_HELD, route_partition
from engine.server.http.seam import LOCAL, Forward, Gather, Placement, RouteInfo, Unavailable
from engine.server.service import Service
from engine.server.store.base import FENCED, Store, StoreError
from engine.server.store.records import (
    DeleteActivity,
    Fence,
    Op,
    PutActivity,
    PutRecipient,
    PutStream,
    Snapshot,
)
from engine.server.store.sqlite import TABLES, keep_partitions

log = logging.getLogger("lockstep.cluster")

T = TypeVar("T")

__all__ = ["ClusterNode", "FencedStore", "LeaseBook", "LeaseTable", "open_node"]


class FencedStore:
    """A `Store` whose every batch is fenced by the leases of the partitions it writes.

    A batch touching a partition this node does not hold (or may no longer act on) fails at
    once with cause `FENCED`; otherwise a `Fence` op per partition goes first, and the database
    refuses the batch if a lease moved on meanwhile (`pgleases`).
    """

    def __init__(
        self,
        inner: Store,
        book: LeaseBook,
        partition_of: Callable[[Op], int],
        clock: Callable[[], float],
    ) -> None:
        self.inner = inner
        self._book = book
        self._partition_of = partition_of
        self._clock = clock

    async def load(self) -> Snapshot:
        """`Store.load` of the inner store."""
        return await self.inner.load()

    async def load_partitions(self, partitions: Collection[int], count: int) -> Snapshot:
        """`Store.load_partitions` of the inner store."""
        return await self.inner.load_partitions(partitions, count)

    async def write(self, ops: Sequence[Op]) -> None:
        """`Store.write`, fenced (see the class docstring)."""
        if not ops:
            await self.inner.write(ops)
            return
        now = self._clock()
        fences: list[Op] = []
        for partition in sorted({self._partition_of(op) for op in ops}):
            epoch = self._book.epoch(partition, now)
            if epoch is None:
                raise StoreError(f"partition {partition} is held by another node now", cause=FENCED)
            fences.append(Fence(partition, epoch, self._book.node_id))
        await self.inner.write([*fences, *ops])

    async def probe(self) -> None:
        """`Store.probe` of the inner store."""
        await self.inner.probe()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """`Store.run` of the inner store."""
        await self.inner.run(task_status=task_status)

    def close(self) -> None:
        """`Store.close` of the inner store."""
        self.inner.close()

    def stats(self) -> dict[str, float]:
        """`Store.stats` of the inner store."""
        return self.inner.stats()


class ClusterNode:
    """Leases, takeover and routing for one node (see the module docstring)."""

    def __init__(
        self,
        table: LeaseTable,
        book: LeaseBook,
        *,
        interval: float,
        wait: float = 0.25,
        device_refresh: float = 30.0,
        clock: Callable[[], float] = trio.current_time,
        follow_devices: bool = True,
        threads: bool = True,
    ) -> None:
        self.table = table
        self.book = book
        self.node_id = book.node_id
        self.partitions = book.partitions
        self.interval = interval
        self.wait = wait  # the Retry-After hint while a partition has no owner
        self.device_refresh = device_refresh
        self.follow_devices = follow_devices  # reload devices on the database's signal
        # Blocking table calls run on a worker thread; inline when `threads` is False (a mock
        # clock's autojump would run ahead of a thread).
        self._threads = threads
        self._clock = clock
        self._service: Service | None = None
        self._ready: set[int] = set()  # held partitions whose activities are loaded
        self._loading: set[int] = set()  # held partitions a takeover in flight is loading
        self._taking: trio.Event | None = None  # set when the takeover in flight is done
        self._tasks: trio.Nursery | None = None  # where takeovers run
        self._owners: dict[int, str] = {}  # partition -> address of the live node holding it
        self._nodes = 1  # live nodes at the last round
        self._devices_changed = trio.Event()
        self._rearm = trio.Event()  # set on a new grant: the watchdog looks at the deadlines again
        self._stop = threading.Event()
        self.takeovers = 0  # partitions taken over (attached) since start
        self.releases = 0  # partitions given up cleanly
        self.losses = 0  # partitions lost without giving them up (a lease not renewed in time)
        self.last_takeover_s = 0.0  # how long the last attach took (load + hand to the service)

    def fenced(self, store: Store) -> FencedStore:
        """`store` with every batch fenced by this node's leases."""
        return FencedStore(store, self.book, self.op_partition, self._clock)

    # -- what the service and the store ask ---
    def op_partition(self, op: Op) -> int:
        """The partition a store op writes (devices, metrics and the like: `GLOBAL`)."""
        match op:
            case PutActivity(row=row):
                return activity_partition(row.activity_id, row.stream_key, self.partitions)
            case PutRecipient(row=row):
                return self._partition_of_id(row.activity_id)
            case DeleteActivity(activity_id=activity_id):
                return self._partition_of_id(activity_id)
            case PutStream(row=row):
                return key_partition(row.stream_key, self.partitions)
            case _:
                return GLOBAL

    def new_activity_id(self, stream_key: str | None) -> str:
        """A new activity's id, inside its stream's partition or one this node holds."""
        if stream_key is not None:
            return new_activity_id(key_partition(stream_key, self.partitions), self.partitions)
        ready = self._startable() or [GLOBAL]
        return new_activity_id(random.choice(ready), self.partitions)

    def _startable(self) -> list[int]:
        """The partitions a plain start may be drawn in here: loaded and still held."""
        now = self._clock()
        return sorted(p for p in self._ready if self.book.epoch(p, now) is not None)

    def _partition_of_id(self, activity_id: str) -> int:
        act = None if self._service is None else self._service.registry.activities.get(activity_id)
        stream_key = None if act is None else act.row.stream_key
        return activity_partition(activity_id, stream_key, self.partitions)

    # -- the router ---
    def place(self, endpoint: RouteInfo, params: Mapping[str, str], body: bytes, /) -> Placement:
        """Where a call is handled: here, at another node, or nowhere yet (see the docstring)."""
        partition = route_partition(endpoint.template, params, body, self.partitions)
        if partition is None:
            return LOCAL
        if partition == ALL:
            return self._gather()
        if partition == ANY_HELD:
            if self._startable():
                return LOCAL
            partition = GLOBAL
        if partition in self._ready and self.book.epoch(partition, self._clock()) is not None:
            return LOCAL
        owner = self._owners.get(partition)
        if owner is not None:
            return Forward(owner)
        return Unavailable(self.wait, f"partition {partition} is being taken over")

    def _gather(self) -> Placement:
        """A listing: this node answers for what it holds and has loaded, each other owner for
        its partitions; while a partition has no owner its rows would be missing, so it waits.
        An owner at this node's own address is an earlier instance of it (restarted under a new
        id) whose leases have not run out: it cannot be asked either."""
        now = self._clock()
        here: list[int] = []
        others: dict[str, list[int]] = {}
        for partition in range(self.partitions):
            if partition in self._ready and self.book.epoch(partition, now) is not None:
                here.append(partition)
                continue
            owner = self._owners.get(partition)
            if owner is None or owner == self.table.address:
                return Unavailable(self.wait, f"partition {partition} is being taken over")
            others.setdefault(owner, []).append(partition)
        parts = tuple((a, tuple(ps)) for a, ps in sorted(others.items()))
        return Gather(parts, tuple(here))

    def stats(self) -> dict[str, float]:
        """Gauges for `/metrics`."""
        return {
            "cluster_partitions_held": float(len(self._ready)),
            "cluster_takeovers": float(self.takeovers),
            "cluster_releases": float(self.releases),
            "cluster_losses": float(self.losses),
            "cluster_last_takeover_seconds": self.last_takeover_s,
        }

    # -- the rounds ---
    async def run(
        self, service: Service, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Take part in the cluster until cancelled; leave it cleanly then."""
        self._service = service
        await self._off_loop(self.table.setup)
        try:
            async with trio.open_nursery() as nursery:
                self._tasks = nursery
                nursery.start_soon(self._watchdog)
                if self.follow_devices:
                    nursery.start_soon(self._listen_devices)
                    nursery.start_soon(self._refresh_devices_forever)
                first = trio.Event()
                nursery.start_soon(self._rounds, first)
                # The first partitions loaded before the node says it is ready.
                await first.wait()
                await self.settled()
                task_status.started()
        finally:
            self._stop.set()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._leave()

    async def _rounds(self, first: trio.Event) -> None:
        """A round every `interval` seconds (a takeover runs beside them, never inside)."""
        while True:
            await self._round()
            first.set()
            await trio.sleep(self.interval)

    async def settled(self) -> None:
        """Return once no takeover is in flight (at once when none is)."""
        while self._taking is not None:
            await self._taking.wait()

    async def _round(self) -> None:
        service = self._service
        assert service is not None
        asked_at = self._clock()
        try:
            result = await self._off_loop(self.table.round, self.book.held())
        except StoreError as exc:
            log.warning("lease round failed (leases run out at their deadline): %s", exc)
            return
        lost = [p for p in self.book.held() if p not in result.renewed]
        for partition, epoch in result.renewed.items():
            if asked_at + self.book.ttl - self.book.margin > self._clock():
                self.book.granted(partition, epoch, asked_at)
            else:  # the round took too long: the renewal came too late to act on
                lost.append(partition)
        lost = sorted(set(lost))
        if lost:
            self.losses += len(lost)
            log.warning("lost partitions %s to other nodes", _ranges(lost))
            for partition in lost:
                self.book.dropped(partition)
            self._detach(lost)
        self._owners = _owners(result.rows, result.live, self.node_id)
        nodes = len(set(result.live) | {self.node_id})
        if nodes != self._nodes:
            # Every node pushes to the same phones: each spends its share of their budget.
            self._nodes = nodes
            service.outbox.engine.share_budget(nodes)
        # Renewed but not loaded (the watchdog dropped it while a round hung): give it back and
        # take it again under a new epoch, which waits for any write of the old one in flight.
        # A partition a takeover is still loading is not such a one.
        unloaded = {
            p: e
            for p, e in result.renewed.items()
            if p not in self._ready and p not in lost and p not in self._loading
        }
        for partition, epoch in unloaded.items():
            await self._give_back(partition, epoch)
        plan = self.book.plan(result.rows, result.live)
        release = [p for p in plan.release if p not in self._loading]
        if release:
            await self._release(release)
        if plan.acquire and self._taking is None:  # one takeover at a time
            await self._acquire(plan.acquire)

    async def _acquire(self, wanted: Sequence[int]) -> None:
        asked_at = self._clock()
        try:
            got = await self._off_loop(self.table.acquire, wanted)
        except StoreError as exc:
            log.warning("could not take partitions: %s", exc)
            return
        if not got:
            return
        # Held from now on, so the next rounds renew them while they load.
        for partition, epoch in got.items():
            self.book.granted(partition, epoch, asked_at)
        self._rearm.set()
        self._loading.update(got)
        done = self._taking = trio.Event()
        assert self._tasks is not None
        self._tasks.start_soon(self._takeover, got, asked_at, done)

    async def _takeover(self, got: Mapping[int, int], asked_at: float, done: trio.Event) -> None:
        """Load and attach `got`, beside the rounds; then let the next takeover start."""
        try:
            await self._attach(got, asked_at)
        finally:
            self._loading.difference_update(got)
            self._taking = None
            done.set()

    async def _attach(self, got: Mapping[int, int], asked_at: float) -> None:
        """Hand the stored activities of `got` (partition -> epoch, held) to the service."""
        service = self._service
        assert service is not None
        try:
            snapshot = await service.store.load_partitions(list(got), self.partitions)
        except StoreError as exc:  # held but not loaded: calls wait; the next round retries
            log.warning("could not load partitions %s: %s", _ranges(got), exc)
            for partition, epoch in got.items():
                await self._give_back(partition, epoch)
            return
        # A lease may have run out (or been lost in a round) while the rows loaded: not ours
        # any more. Only what is still held is handed over.
        now = self._clock()
        late = [p for p in got if self.book.epoch(p, now) is None]
        got = {p: e for p, e in got.items() if p not in late}
        for partition in late:
            self.book.dropped(partition)
        part = keep_partitions(snapshot, got, self.partitions)  # not those that ran out
        try:
            if GLOBAL in got:
                # The single writer of devices, notifications and metrics now: it starts from
                # what is stored, and sends what the last owner left unsent.
                await service.take_global(snapshot)
            else:
                self._devices_changed.set()  # in step with the writer before delivering
            await service.attach(part)
        except Exception:  # a defect must not stop the node: give the partitions back
            log.exception("could not take partitions %s over; giving them back", _ranges(got))
            self._detach(list(got))
            for partition, epoch in got.items():
                await self._give_back(partition, epoch)
            return
        gone = [p for p in got if self.book.epoch(p, self._clock()) is None]
        if gone:  # ran out while the service took them: stop delivering them again
            self._detach(gone)
        self._ready.update(p for p in got if p not in gone)
        self.takeovers += len(got)
        self.last_takeover_s = self._clock() - asked_at
        log.info(
            "took partitions %s (%d activities) in %.3f s",
            _ranges(got),
            len(part.activities),
            self.last_takeover_s,
        )

    async def _release(self, partitions: Sequence[int]) -> None:
        held = self.book.held()
        service = self._service
        assert service is not None
        self._ready.difference_update(partitions)  # no more calls here for them
        # What the devices were sent, written while the leases still hold: the next owner
        # must not send a start (or a state) again that already went out.
        await service.outbox.flush()
        for partition in partitions:
            self.book.dropped(partition)  # no more writes here for them
        self._detach(partitions)
        for partition in partitions:
            await self._give_back(partition, held[partition])
        self.releases += len(partitions)
        log.info("gave partitions %s up", _ranges(partitions))

    async def _give_back(self, partition: int, epoch: int) -> None:
        self.book.dropped(partition)
        try:
            await self._off_loop(self.table.release, partition, epoch)
        except StoreError as exc:  # it expires by itself then
            log.warning("could not release partition %d: %s", partition, exc)

    def _detach(self, partitions: Collection[int]) -> None:
        """Stop delivering `partitions` (and forget them)."""
        service = self._service
        assert service is not None
        wanted = set(partitions)
        self._ready.difference_update(wanted)
        if GLOBAL in wanted:
            service.drop_global()
        reg = service.registry
        acts = [
            a.row.activity_id
            for a in reg.activities.values()
            if activity_partition(a.row.activity_id, a.row.stream_key, self.partitions) in wanted
        ]
        keys = [k for k in reg.streams if key_partition(k, self.partitions) in wanted]
        service.detach(acts, keys)

    async def _watchdog(self) -> None:
        """Drop leases at their local deadline even while a round hangs on the database."""
        while True:
            deadlines = [d for p in self.book.held() if (d := self.book.deadline(p)) is not None]
            self._rearm = trio.Event()
            with trio.move_on_at(min(deadlines) if deadlines else self._clock() + self.interval):
                await self._rearm.wait()  # a new grant may come due sooner
            expired = self.book.expire(self._clock())
            if expired:
                self.losses += len(expired)
                log.warning(
                    "leases on partitions %s ran out before they were renewed: this node stops "
                    "delivering them",
                    _ranges(expired),
                )
                self._detach(expired)

    async def _leave(self) -> None:
        service = self._service
        assert service is not None
        await service.outbox.flush()  # what was sent, written while the leases still hold
        held = self.book.held()
        self._detach(list(held))
        for partition in held:
            self.book.dropped(partition)
        try:
            await self._off_loop(self.table.leave, held)
        except StoreError as exc:
            log.warning(
                "could not leave the cluster cleanly (leases expire by themselves): %s", exc
            )
        self.table.close()

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        if self._threads:
            return await trio.to_thread.run_sync(fn, *args)
        await trio.lowlevel.checkpoint()
        return fn(*args)

    # -- devices ---
    async def _refresh_devices_forever(self) -> None:
        while True:
            with trio.move_on_after(self.device_refresh):
                await self._devices_changed.wait()
            self._devices_changed = trio.Event()
            try:
                rows = await trio.to_thread.run_sync(self._load_devices)
            except (StoreError, msgspec.DecodeError) as exc:  # the next signal tries again
                log.warning("could not reload devices: %s", exc)
                continue
            assert self._service is not None
            if GLOBAL in self.book.held():
                # This node writes the devices: its memory is newer than any read of the table
                # (a registration may be committing while the rows are read).
                continue
            await self._service.refresh_devices(rows)

    def _load_devices(self) -> list[Any]:
        table = TABLES["devices"]
        conn = self.table.connect()
        try:
            return [table.decode(r) for r in conn.execute(table.select_sql)]
        except psycopg.Error as exc:
            raise StoreError(f"device reload failed: {exc.sqlstate or 'no answer'}") from exc
        finally:
            conn.close()

    async def _listen_devices(self) -> None:
        token = trio.lowlevel.current_trio_token()

        def changed() -> None:
            self._devices_changed.set()

        def listen() -> None:
            while not self._stop.is_set():
                try:
                    with self.table.connect() as conn:
                        conn.execute(f'LISTEN "{devices_channel(conn)}"')
                        while not self._stop.is_set():
                            for _ in conn.notifies(timeout=1.0, stop_after=1):
                                trio.from_thread.run_sync(changed, trio_token=token)
                except (psycopg.Error, StoreError) as exc:
                    log.warning("device change signals lost, listening again: %s", exc)
                    self._stop.wait(self.interval)
                except trio.RunFinishedError:
                    return

        await trio.to_thread.run_sync(listen, abandon_on_cancel=True)


@asynccontextmanager
async def open_node(service: Service, node: ClusterNode) -> AsyncIterator[ClusterNode]:
    """Run `node` for `service` for the duration of the block (its first round done)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, service)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


def _owners(rows: Sequence[LeaseView], live: Mapping[str, str], me: str) -> dict[int, str]:
    return {
        r.partition: live[r.owner]
        for r in rows
        if not r.free() and r.owner is not None and r.owner != me and r.owner in live
    }


def _ranges(partitions: Collection[int]) -> str:
    """`0-3,7` for a log line."""
    out: list[str] = []
    for p in sorted(partitions):
        if out and out[-1].split("-")[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)
