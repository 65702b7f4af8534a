"""Coalescer invariants under random interleavings (hypothesis state machines).

A fake dispatcher offers starts, updates and ends on a few lanes, moves time (and sometimes steps
the wall clock), takes ready dispatches and completes them with random outcomes. Each lane has a
simulated device that applies a push only if its `aps.timestamp` is newer than the last one it
applied (apns.md §6); a TRANSPORT outcome may or may not have reached the device, possibly late.
At teardown everything drains with ACCEPTED outcomes and the end state is checked. The abandon
machines also hand activities over to another node (`Coalescer.abandon`) at random and take them
back: nothing offered before an abandon is ever sent after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.apns.reasons import Outcome
from engine.delivery.coalescer import ABANDONED, Coalescer
from engine.delivery.items import Dispatch, Item, LaneError, LaneKey, Settled
from engine.payload import Alert, EventKind, LiveActivityContent, PreparedPayload, prepare
from engine.results import DeliveryStatus

W0 = 1_800_000_000
INTERVAL = 1.0
LANES: list[LaneKey] = [(f"act-{i}", f"dev-{i % 2}") for i in range(6)]
START, UPDATE, END = EventKind.START, EventKind.UPDATE, EventKind.END
# Outcomes after which the coalescer may resend at once (APNs did not process the push).
IMMEDIATE = {Outcome.UNPROCESSED, Outcome.NEW_CONNECTION, Outcome.REFRESH_AUTH}
# The two ends of an item that was given up on (REJECTED when APNs named a reason never to retry).
GAVE_UP = {DeliveryStatus.FAILED, DeliveryStatus.REJECTED}

_ALERT = Alert("Kick-off", "A vs B")


def make_payload(kind: EventKind, seq: int) -> PreparedPayload:
    """The content of submission `seq` is `{"seq": seq}`: what a device applies names it."""
    if kind is START:
        content = LiveActivityContent(
            kind, {"seq": seq}, alert=_ALERT, attributes_type="Match", attributes={"m": 1}
        )
    else:
        content = LiveActivityContent(kind, {"seq": seq})
    return prepare(content)


@dataclass
class Device:
    """One simulated iPhone per lane: applies only strictly newer timestamps."""

    last_ts: int = 0
    applied: list[Item] = field(default_factory=list)

    def receive(self, d: Dispatch) -> None:
        if d.timestamp <= self.last_ts:
            return
        if self.applied:
            # never an older submission after a newer one
            assert d.item.seq >= self.applied[-1].seq, (d.item.seq, self.applied[-1].seq)
        self.last_ts = d.timestamp
        self.applied.append(d.item)


@dataclass
class LaneModel:
    """What the fake dispatcher knows about one lane."""

    index: int
    submitted: list[Item] = field(default_factory=list)
    end_submitted: bool = False
    closed: bool = False
    token_gen: int = 0
    in_flight: Dispatch | None = None
    last_ts: int = 0
    last_sent_at: float | None = None
    last_outcome: Outcome | None = None
    dispatched_any: bool = False
    device: Device = field(default_factory=Device)
    abandoned_upto: int = 0  # seq of the last item offered before the activity was abandoned

    @property
    def start_token(self) -> str:
        return f"p2s-{self.index}"

    @property
    def update_token(self) -> str:
        return f"upd-{self.index}-{self.token_gen}"


class CoalescerMachine(RuleBasedStateMachine):
    """Fake dispatcher + devices around one coalescer."""

    MAX_ATTEMPTS = 1000  # so no item gives up: every live lane must end in its last state
    OUTCOMES: tuple[Outcome, ...] = (
        (Outcome.ACCEPTED,) * 8
        + (Outcome.RETRY, Outcome.RETRY, Outcome.TRANSPORT, Outcome.TRANSPORT)
        + (Outcome.UNPROCESSED, Outcome.UNPROCESSED, Outcome.REFRESH_AUTH, Outcome.DROP_TOKEN)
    )

    def __init__(self) -> None:
        super().__init__()
        self.co = Coalescer(
            pacing_interval=INTERVAL, max_attempts=self.MAX_ATTEMPTS, rng=random.Random(1)
        )
        self.now = 0.0
        self.skew = 0.0
        self.seq = 0
        self.lanes = {key: LaneModel(i) for i, key in enumerate(LANES)}
        self.in_flight: list[Dispatch] = []
        self.limbo: list[Dispatch] = []  # TRANSPORT pushes that reach the device later
        self.settled: dict[int, Settled] = {}
        self.items: dict[int, tuple[LaneKey, Item]] = {}
        self.dead: set[str] = set()

    @property
    def wall(self) -> float:
        return W0 + self.now + self.skew

    # ----------------------------------------------------------------------------------------------
    # Rules

    @rule(
        lane=st.sampled_from(LANES),
        kind=st.sampled_from([START, *[UPDATE] * 6, END]),
        rotate=st.sampled_from([False] * 7 + [True]),
    )
    def offer(self, lane: LaneKey, kind: EventKind, rotate: bool) -> None:
        model = self.lanes[lane]
        model.token_gen += rotate  # the activity's update token rotated
        token = model.start_token if kind is START else model.update_token
        if token in self.dead:
            return  # the dispatcher fails these fast; they never reach the coalescer
        self.seq += 1
        item = Item.build(make_payload(kind, self.seq), token, self.seq, waiter=self.seq)
        refused = self.expect_refused(model, kind)
        # Taking an abandoned activity back, the caller seeds the lane with its last timestamp.
        floor = model.last_ts if model.abandoned_upto else 0
        try:
            superseded = self.co.offer(lane, item, now=self.now, min_timestamp=floor)
        except LaneError:
            assert refused is not False, f"{kind} refused on {lane} without cause"
            return
        assert not refused, f"{kind} accepted on {lane} though it should be refused"
        model.submitted.append(item)
        model.end_submitted |= kind is END
        self.items[item.seq] = (lane, item)
        self.settle(superseded)

    @rule(
        dt=st.sampled_from([0.0, 0.2, 0.5, 1.0, 1.0, 2.0, 7.5, 61.0]),
        wall_step=st.sampled_from([0.0] * 6 + [-3.0, -0.4, 0.7, 2.0]),
    )
    def advance(self, dt: float, wall_step: float) -> None:
        self.now += dt
        self.skew += wall_step  # the wall clock is sometimes stepped (NTP), either way

    @rule(limit=st.integers(1, 6))
    def take(self, limit: int) -> None:
        for d in self.co.take_ready(now=self.now, wall_now=self.wall, limit=limit):
            self.check_dispatch(d)

    @rule(data=st.data(), count=st.integers(1, 3))
    def complete(self, data: st.DataObject, count: int) -> None:
        for _ in range(min(count, len(self.in_flight))):
            d = self.in_flight[data.draw(st.integers(0, len(self.in_flight) - 1))]
            outcome = data.draw(st.sampled_from(self.OUTCOMES))
            delivery = "never"
            if outcome is Outcome.TRANSPORT:
                delivery = data.draw(st.sampled_from(["never", "now", "later"]))
            self.finish(d, outcome, delivery)

    @rule(data=st.data())
    def deliver_late(self, data: st.DataObject) -> None:
        if self.limbo:
            d = self.limbo.pop(data.draw(st.integers(0, len(self.limbo) - 1)))
            self.lanes[d.lane].device.receive(d)

    # ----------------------------------------------------------------------------------------------
    # The fake dispatcher

    def expect_refused(self, model: LaneModel, kind: EventKind) -> bool | None:
        """Whether the coalescer must refuse `kind` on the lane (None: either is right)."""
        return model.closed or (
            (kind is START and bool(model.submitted)) or (kind is UPDATE and model.end_submitted)
        )

    def check_dispatch(self, d: Dispatch) -> None:
        model = self.lanes[d.lane]
        assert model.in_flight is None, "two pushes in flight on one lane"
        assert d.item.seq not in self.settled, "a settled item was dispatched"
        assert d.item.seq > model.abandoned_upto, "an item offered before an abandon was sent"
        assert d.item.token not in self.dead, "a push went to a token known to be dead"
        assert d.timestamp > model.last_ts, "timestamps must strictly increase per lane"
        assert d.timestamp <= self.wall + INTERVAL, "timestamp too far ahead of the wall clock"
        # A lane taken back after an abandon may be a fresh one: pacing and the order of its
        # first pushes start over (timestamps still increase: the offer passes the last one).
        sent_at = model.last_sent_at
        if sent_at is not None and model.last_outcome not in IMMEDIATE and not model.abandoned_upto:
            assert self.now - sent_at >= INTERVAL - 1e-9, "pacing violated"
        first = model.submitted[0]
        if first.kind is START and not model.abandoned_upto:
            if not model.dispatched_any:
                assert d.item is first, "the start must go first"
            elif d.item is not first:
                assert self.settled[first.seq].status is DeliveryStatus.ACCEPTED
        assert d.body == d.item.payload.render(d.timestamp)
        model.in_flight = d
        model.last_ts = d.timestamp
        model.last_sent_at = self.now
        model.dispatched_any = True
        self.in_flight.append(d)

    def finish(self, d: Dispatch, outcome: Outcome, delivery: str) -> None:
        model = self.lanes[d.lane]
        self.in_flight.remove(d)
        model.in_flight = None
        model.last_outcome = outcome
        if outcome is Outcome.ACCEPTED or delivery == "now":
            model.device.receive(d)
        elif delivery == "later":
            self.limbo.append(d)
        if outcome is Outcome.DROP_TOKEN:
            self.dead.add(d.item.token)
        self.settle(self.co.complete(d, outcome, now=self.now))
        if d.item.seq <= model.abandoned_upto:
            assert d.item.seq in self.settled, "a push in flight when abandoned was kept to retry"

    def settle(self, settled: list[Settled]) -> None:
        for s in settled:
            seq = s.item.seq
            assert seq not in self.settled, f"item {seq} settled twice"
            assert s.item.waiter == seq
            self.settled[seq] = s
            lane, _ = self.items[seq]
            model = self.lanes[lane]
            kind, status = s.item.kind, s.status
            if (kind is END and status is DeliveryStatus.ACCEPTED) or (
                kind is START and status in GAVE_UP
            ):
                model.closed = True
            elif kind is END and status in GAVE_UP:
                # a failed end closes the lane unless a newer end is still pending
                model.closed |= not any(
                    later.kind is END and later.seq > seq and later.seq not in self.settled
                    for later in model.submitted
                )

    # ----------------------------------------------------------------------------------------------
    # Invariants

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        stats = self.co.stats
        assert stats.in_flight == len(self.in_flight)
        unsettled = len(self.items) - len(self.settled)
        assert stats.pending + stats.in_flight == unsettled
        for model in self.lanes.values():
            open_items = [i for i in model.submitted if i.seq not in self.settled]
            assert len(open_items) - (model.in_flight is not None) <= 3

    def teardown(self) -> None:
        # Drain: from here on every push is accepted and time moves to the next ready lane.
        for _ in range(10_000):
            for d in list(self.in_flight):
                self.finish(d, Outcome.ACCEPTED, "never")
            ready = self.co.take_ready(now=self.now, wall_now=self.wall, limit=1_000)
            for d in ready:
                self.check_dispatch(d)
            if not ready and not self.in_flight:
                at = self.co.next_ready_at()
                if at is None:
                    break
                self.now = max(self.now, at)
        for d in self.limbo:
            self.lanes[d.lane].device.receive(d)
        stats = self.co.stats
        assert (stats.pending, stats.in_flight) == (0, 0)
        assert set(self.settled) == set(self.items), "an item was never settled"
        for model in self.lanes.values():
            self.check_drained_lane(model)

    def check_drained_lane(self, model: LaneModel) -> None:
        if not model.submitted or any(i.token in self.dead for i in model.submitted):
            return  # a dead token failed items on purpose
        applied = model.device.applied
        last = model.submitted[-1]
        outcome = self.settled[last.seq]
        if outcome.status in GAVE_UP:
            # an end offered while an earlier end was in flight: the activity had already ended
            assert last.kind is END and "already ended" in outcome.detail, outcome
            ended = [i for i in model.submitted if i.kind is END]
            assert applied[-1].kind is END and applied[-1] in ended[:-1]
        else:
            assert outcome.status is DeliveryStatus.ACCEPTED, outcome
            assert applied[-1] is last, "the device does not show the last state"
        first = model.submitted[0]
        if first.kind is START:
            assert applied[0] is first, "the start was not applied first"
        if model.end_submitted:
            assert applied[-1].kind is END, "the end was not applied last"


class GivingUpMachine(CoalescerMachine):
    """Low `max_attempts` and every outcome kind: checks bookkeeping, not final content."""

    MAX_ATTEMPTS = 2
    OUTCOMES = (
        *(Outcome.ACCEPTED,) * 4,
        Outcome.RETRY,
        Outcome.TRANSPORT,
        Outcome.UNPROCESSED,
        Outcome.NEW_CONNECTION,
        Outcome.REFRESH_AUTH,
        Outcome.DROP_TOKEN,
        Outcome.FIX_REQUEST,
    )

    def check_drained_lane(self, model: LaneModel) -> None:
        for item in model.submitted:
            s = self.settled[item.seq]
            if s.status in GAVE_UP and "already ended" not in s.detail:
                return  # something gave up or APNs refused it: the device may show older state
        super().check_drained_lane(model)


class AbandonMachine(CoalescerMachine):
    """Activities are abandoned (another node delivers them now) and taken back at random."""

    @rule(lane=st.sampled_from(LANES))
    def abandon(self, lane: LaneKey) -> None:
        activity = lane[0]
        lanes = [key for key in LANES if key[0] == activity]
        flying = {model.in_flight.item.seq for key in lanes if (model := self.lanes[key]).in_flight}
        pending = {
            item.seq
            for key in lanes
            for item in self.lanes[key].submitted
            if item.seq not in self.settled and item.seq not in flying
        }
        settled = self.co.abandon(activity)
        assert {s.item.seq for s in settled} == pending, "abandon must settle exactly the pending"
        assert all(s.status is DeliveryStatus.FAILED and s.detail == ABANDONED for s in settled)
        self.settle(settled)
        for key in lanes:
            self.lanes[key].abandoned_upto = self.seq
            assert self.co.holds(key, now=self.now, wall_now=self.wall) == []
            if self.lanes[key].in_flight is None:
                assert self.co.hold(key, now=self.now, wall_now=self.wall) is None

    def expect_refused(self, model: LaneModel, kind: EventKind) -> bool | None:
        if model.abandoned_upto:
            return None  # a fresh lane, or the old one behind its push in flight
        return super().expect_refused(model, kind)

    def check_drained_lane(self, model: LaneModel) -> None:
        if model.abandoned_upto:
            return  # another node delivered it meanwhile; `Device` still checked the order
        super().check_drained_lane(model)


class AbandonGivingUpMachine(AbandonMachine, GivingUpMachine):
    """Abandons, with every outcome kind and low `max_attempts`."""


_SETTINGS = settings(max_examples=200, stateful_step_count=100, deadline=None, derandomize=True)

TestCoalescerMachine = CoalescerMachine.TestCase
TestCoalescerMachine.settings = _SETTINGS
TestGivingUpMachine = GivingUpMachine.TestCase
TestGivingUpMachine.settings = _SETTINGS
TestAbandonMachine = AbandonMachine.TestCase
TestAbandonMachine.settings = _SETTINGS
TestAbandonGivingUpMachine = AbandonGivingUpMachine.TestCase
TestAbandonGivingUpMachine.settings = _SETTINGS
