"""The APNs connection pool against the fake APNs over memory streams, on trio's MockClock.

Covers the pure policy (`choose_connection`, `backoff_delay`) and the runner: warm-up from one
stream to 1000, pipelining, one token refresh for a burst of ExpiredProviderToken, GOAWAY and
REFUSED_STREAM without losing a push, reconnect backoff, dead idle connections and request timeouts.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import struct
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from h2.errors import ErrorCodes
from hypothesis import given
from hypothesis import strategies as st

from engine.apns.connection import Answered, ApnsConnection, NoAnswer, StreamResult, Unprocessed
from engine.apns.h2wire import PREFACE
from engine.apns.pool import (
    ApnsPool,
    PoolClosedError,
    PoolListener,
    backoff_delay,
    choose_connection,
)
from engine.apns.protocol import PushRequest
from engine.apns.reasons import Reason
from engine.apns.tokens import TokenSource
from engine.apns.transport import ConnectError
from engine.config import DeliveryConfig
from simulator.faults import FaultPlan
from tests.helpers.simkit import TOPIC, Kit, start_body
from tests.helpers.simkit import make_kit as make_sim_kit

AUTHORITY = "api.push.apple.com"
_PING, _RST_STREAM = 0x6, 0x3


def make_kit(**config: Any) -> Kit:
    """A kit without APNs's per-token limit: these tests load one token with up to a thousand
    pushes to exercise streams and connections; the 429 rule has its own tests (test_sim_budgets).
    """
    config.setdefault("token_rate_limit", None)
    return make_sim_kit(**config)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# --------------------------------------------------------------------------------------------
# Pure policy


@dataclass
class _Load:
    is_usable: bool
    available_slots: int
    open_streams: int


@pytest.mark.parametrize(
    ("conns", "expected"),
    [
        ([], None),
        ([_Load(True, 0, 1)], None),
        ([_Load(False, 5, 0)], None),
        ([_Load(True, 1, 0)], 0),
        ([_Load(True, 1, 0), _Load(True, 999, 1)], 1),
        ([_Load(True, 10, 5), _Load(True, 10, 2)], 1),  # same free slots: fewer open streams
        ([_Load(True, 10, 2), _Load(True, 10, 2)], 0),  # full tie: lowest index
        ([_Load(False, 1000, 0), _Load(True, 3, 997)], 1),  # draining never chosen
        ([_Load(True, 0, 1000), _Load(True, 0, 1), _Load(True, 2, 0)], 2),
    ],
)
def test_choose_connection(conns: list[_Load], expected: int | None) -> None:
    assert choose_connection(conns) == expected


@given(
    st.lists(
        st.builds(_Load, st.booleans(), st.integers(-2, 1000), st.integers(0, 1000)), max_size=8
    )
)
def test_choose_connection_picks_a_usable_one_with_the_most_free_slots(conns: list[_Load]) -> None:
    index = choose_connection(conns)
    candidates = [c for c in conns if c.is_usable and c.available_slots > 0]
    if not candidates:
        assert index is None
        return
    assert index is not None
    chosen = conns[index]
    assert chosen.is_usable and chosen.available_slots > 0
    assert chosen.available_slots == max(c.available_slots for c in candidates)


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        (0, 0.0, 0.0),
        (1, 0.8, 1.2),
        (2, 1.6, 2.4),
        (3, 3.2, 4.8),
        (6, 25.6, 38.4),
        (7, 48.0, 60.0),
        (8, 48.0, 60.0),
        (10_000, 48.0, 60.0),
    ],
)
def test_backoff_delay_doubles_with_jitter_and_caps(failures: int, low: float, high: float) -> None:
    rng = random.Random(42)
    for _ in range(200):
        assert low <= backoff_delay(failures, 60.0, rng) <= high


@given(st.integers(0, 200), st.floats(1.0, 600.0), st.integers(0, 2**32))
def test_backoff_delay_never_exceeds_the_cap(failures: int, cap: float, seed: int) -> None:
    delay = backoff_delay(failures, cap, random.Random(seed))
    assert 0.0 <= delay <= cap
    assert (delay == 0.0) == (failures == 0)


def test_backoff_delay_is_reproducible_from_the_seed() -> None:
    a, b = random.Random(5), random.Random(5)
    assert [backoff_delay(n, 60, a) for n in range(1, 9)] == [
        backoff_delay(n, 60, b) for n in range(1, 9)
    ]


# --------------------------------------------------------------------------------------------
# Harness


class WireStream(trio.abc.Stream):
    """Wraps the engine's side of a memory stream: counts writes, keeps the bytes, can freeze.

    Frozen, it behaves like a peer that vanished without closing: writes are swallowed and reads
    never return.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes = 0
        self.written = bytearray()
        self.frozen = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        self.written += data
        if self.frozen:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.frozen:
            await trio.sleep_forever()
        data = await self.inner.receive_some(max_bytes)
        if self.frozen:
            await trio.sleep_forever()
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()

    def frames(self) -> list[tuple[int, int, bytes]]:
        """(type, stream id, payload) of every frame written so far."""
        data = bytes(self.written)
        assert data.startswith(PREFACE)
        pos, out = len(PREFACE), []
        while pos + 9 <= len(data):
            length = int.from_bytes(data[pos : pos + 3], "big")
            kind = data[pos + 3]
            sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
            out.append((kind, sid, data[pos + 9 : pos + 9 + length]))
            pos += 9 + length
        return out


class DelayedUplink(trio.abc.Stream):
    """Delivers the engine's writes `delay` seconds late, in order: a network path with latency.

    Memory streams deliver instantly, so the server could never see a request the engine sent
    before a lowered stream limit reached it; with transit time it can, as on the internet.
    """

    def __init__(self, inner: trio.abc.Stream, delay: float, nursery: trio.Nursery) -> None:
        self.inner = inner
        self.delay = delay
        self._send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        nursery.start_soon(self._pump, receive)

    async def _pump(self, receive: trio.MemoryReceiveChannel[tuple[float, bytes]]) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for at, data in receive:
                await trio.sleep_until(at)
                await self.inner.send_all(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._send.send_nowait((trio.current_time() + self.delay, bytes(data)))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self._send.close()
        await self.inner.aclose()


@dataclass
class SimConnector:
    """Opens memory streams to the simulator; optionally fails the first `fail` attempts."""

    kit: Kit
    nursery: trio.Nursery
    fail: int = 0
    uplink_delay: float = 0.0
    attempts: list[float] = field(default_factory=list)
    streams: list[WireStream] = field(default_factory=list)

    async def __call__(self) -> trio.abc.Stream:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.attempts) <= self.fail:
            raise ConnectError("cannot reach APNs at 127.0.0.1:1: Connection refused")
        client: trio.abc.Stream
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.kit.server.handle, server)
        if self.uplink_delay:
            client = DelayedUplink(client, self.uplink_delay, self.nursery)
        stream = WireStream(client)
        self.streams.append(stream)
        return stream


class RecordingListener(PoolListener):
    """Keeps every pool event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def connection_opened(self) -> None:
        self.events.append(("opened", None))

    def connection_closed(self, reason: str | None) -> None:
        self.events.append(("closed", reason))

    def connect_failed(self, error: Exception) -> None:
        self.events.append(("connect_failed", error))

    def goaway(self, reason: str) -> None:
        self.events.append(("goaway", reason))


@dataclass
class Harness:
    kit: Kit
    pool: ApnsPool
    connector: SimConnector
    tokens: TokenSource
    listener: RecordingListener


@asynccontextmanager
async def running_pool(
    kit: Kit,
    *,
    size: int = 4,
    config: DeliveryConfig | None = None,
    fail: int = 0,
    tokens: TokenSource | None = None,
    uplink_delay: float = 0.0,
) -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        connector = SimConnector(kit, nursery, fail=fail, uplink_delay=uplink_delay)
        tokens = tokens or TokenSource(kit.key, wall_clock=kit.now)
        listener = RecordingListener()
        pool = ApnsPool(
            connector,
            tokens,
            authority=AUTHORITY,
            size=size,
            config=config or DeliveryConfig(),
            rng=random.Random(1),
            listener=listener,
        )
        await nursery.start(pool.run)
        yield Harness(kit, pool, connector, tokens, listener)
        nursery.cancel_scope.cancel()


def start_request(kit: Kit, token: str | None = None) -> PushRequest:
    return PushRequest(token or kit.push_to_start_token(), TOPIC, start_body())


@dataclass
class PushRun:
    results: list[StreamResult]
    unprocessed: Counter[str]  # Unprocessed reasons seen along the way (then resent)


class Collected:
    """Results handed to `try_send` callbacks; `all_in` is set once `expected` have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.results: list[StreamResult] = []
        self.all_in = trio.Event()

    def add(self, result: StreamResult) -> None:
        self.results.append(result)
        if len(self.results) >= self.expected:
            self.all_in.set()


@dataclass
class _Progress:
    """`push_many`'s shared counters: results still due, and the event that wakes the loop."""

    remaining: int
    kick: trio.Event


async def push_many(
    pool: ApnsPool, requests: Sequence[PushRequest], *, resend_unprocessed: bool = True
) -> PushRun:
    """Push everything through `try_send` / `wait_for_slot` (callbacks, no task per push).

    Unprocessed results are resent (bounded), as a dispatcher would; the final result of each
    request is returned in order.
    """
    results: list[StreamResult | None] = [None] * len(requests)
    queue = deque(range(len(requests)))
    unprocessed: Counter[str] = Counter()
    state = _Progress(len(requests), trio.Event())

    def callback(i: int) -> Callable[[StreamResult], None]:
        def on_done(result: StreamResult) -> None:
            if resend_unprocessed and isinstance(result, Unprocessed):
                key = "GOAWAY" if result.reason.startswith("above GOAWAY") else result.reason
                unprocessed[key] += 1
                assert sum(unprocessed.values()) < 20 * len(requests), "unbounded resends"
                queue.append(i)
            else:
                results[i] = result
                state.remaining -= 1
            state.kick.set()

        return on_done

    callbacks = [callback(i) for i in range(len(requests))]
    while state.remaining:
        while queue and pool.try_send(requests[queue[0]], callbacks[queue[0]]):
            queue.popleft()
        if queue:
            await pool.wait_for_slot()
        elif state.remaining:
            state.kick = trio.Event()
            await state.kick.wait()
    assert all(r is not None for r in results)
    return PushRun(results, unprocessed)  # type: ignore[arg-type]


def statuses(results: Sequence[StreamResult]) -> Counter[object]:
    return Counter(
        r.answer.status if isinstance(r, Answered) else type(r).__name__ for r in results
    )


def the_connection(pool: ApnsPool) -> ApnsConnection:
    (conn,) = pool.live_connections
    return conn


# --------------------------------------------------------------------------------------------
# Warm-up and pipelining


async def test_nothing_connects_until_the_first_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with running_pool(kit) as h:
            await trio.sleep(5)
            assert h.connector.attempts == [] and h.pool.connections == 0
            assert h.pool.free_slots == 0
            result = await h.pool.send(start_request(kit))
            assert isinstance(result, Answered) and result.answer.status == 200
            assert len(h.connector.attempts) == 1


async def test_warm_up_from_one_stream_to_a_thousand(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(warm_max_streams=1000)
    with trio.fail_after(60):
        async with running_pool(kit, size=4) as h:
            pool = h.pool
            first = Collected(1)
            while not pool.try_send(start_request(kit), first.add):
                await pool.wait_for_slot()
            # APNs allows one stream until a request with a valid token went through (apns.md §4).
            conn = the_connection(pool)
            assert conn.open_streams == 1 and conn.available_slots == 0
            await first.all_in.wait()
            (result,) = first.results
            assert isinstance(result, Answered) and result.answer.status == 200
            await trio.sleep(0.01)  # the SETTINGS that raised the limit came with the answer
            assert pool.free_slots == 1000
            outcome = await push_many(pool, [start_request(kit)] * 500)
            assert statuses(outcome.results) == {200: 500}
            assert not outcome.unprocessed
            assert pool.connections == 1 and kit.apns.counters.connections == 1


async def test_a_cold_burst_opens_more_connections_but_never_more_than_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("latency=fixed:50"))
    with trio.fail_after(60):
        async with running_pool(kit, size=3) as h:
            outcome = await push_many(h.pool, [start_request(kit)] * 500)
            assert statuses(outcome.results) == {200: 500}
            assert not outcome.unprocessed
            # Each cold connection took one stream; then the warm ones carried the rest.
            assert kit.apns.counters.connections == 3
            assert len(h.connector.attempts) == 3


async def test_many_sends_in_one_tick_go_out_in_few_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(60):
        async with running_pool(kit, size=1) as h:
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            await trio.sleep(0.01)
            (stream,) = h.connector.streams
            before = stream.writes
            done = Collected(500)
            request = start_request(kit)
            go = trio.Event()

            async def sender() -> None:
                await go.wait()
                assert h.pool.try_send(request, done.add)

            async with trio.open_nursery() as senders:
                for _ in range(500):  # 500 tasks, each pushing once, all in the same tick
                    senders.start_soon(sender)
                await trio.sleep(0.001)
                go.set()
            with trio.fail_after(10):
                await done.all_in.wait()
            assert statuses(done.results) == {200: 500}
            writes = stream.writes - before
            assert 1 <= writes <= 3, writes  # 500 requests, one batch (plus SETTINGS/PING acks)


# --------------------------------------------------------------------------------------------
# Provider tokens


async def test_a_burst_of_expired_token_answers_refreshes_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    tokens = TokenSource(kit.key, wall_clock=kit.now, max_age=3599)
    with trio.fail_after(120):
        async with running_pool(kit, size=1, tokens=tokens) as h:
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            await trio.sleep(0.01)
            old = tokens.cached
            assert old is not None and tokens.generation == 1
            done = Collected(300)
            for _ in range(300):
                assert h.pool.try_send(start_request(kit), done.add)
            # Before APNs reads them, an hour passes on its clock and ours: the 300 requests in
            # flight all carry a token APNs now calls expired (apns.md §2).
            kit.offset += 3700
            await done.all_in.wait()
            assert all(
                isinstance(r, Answered)
                and r.answer.status == 403
                and r.answer.reason is Reason.EXPIRED_PROVIDER_TOKEN
                and r.provider_token == old
                for r in done.results
            )
            assert tokens.refreshes == 1 and tokens.forced_refreshes == 1
            outcome = await push_many(h.pool, [start_request(kit)] * 300)
            assert statuses(outcome.results) == {200: 300}
            assert tokens.refreshes == 1
            sent = {r.provider_token for r in outcome.results if isinstance(r, Answered)}
            assert sent == {tokens.cached}


# --------------------------------------------------------------------------------------------
# GOAWAY, REFUSED_STREAM


@pytest.mark.parametrize("uplink_delay", [0.0, 0.01])
async def test_goaway_loses_no_push_and_a_new_connection_takes_the_rest(
    autojump_clock: trio.testing.MockClock, uplink_delay: float
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("goaway_after=500,latency=fixed:200"))
    n = 3000
    with trio.fail_after(300):
        async with running_pool(kit, size=2, uplink_delay=uplink_delay) as h:
            outcome = await push_many(h.pool, [start_request(kit)] * n)
            assert statuses(outcome.results) == {200: n}  # no NoAnswer, nothing failed
            if uplink_delay:
                # Requests on their way when the GOAWAY left APNs: above its last stream id,
                # unprocessed, resent on the new connection.
                assert outcome.unprocessed["GOAWAY"] > 0
            assert set(outcome.unprocessed) <= {"GOAWAY", "REFUSED_STREAM"}
            # Every push APNs processed was answered exactly once: none lost, none doubled.
            assert Counter(p.status for p in kit.apns.log) == {200: n}
            assert kit.apns.counters.connections >= 3
            assert ("goaway", "Shutdown") in h.listener.events
            closed = [reason for kind, reason in h.listener.events if kind == "closed"]
            assert closed and all(reason is None for reason in closed)  # clean drains


async def test_refused_streams_are_unprocessed_and_resent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # APNs lowers MAX_CONCURRENT_STREAMS while requests are on their way; it refuses those with
    # RST_STREAM(REFUSED_STREAM) (apns.md §4, pushy#486).
    kit = make_kit(plan=FaultPlan.from_flags("seed=3,latency=uniform:5:50,swing=0.05:1/1000"))
    n = 3000
    with trio.fail_after(600):
        async with running_pool(kit, size=1, uplink_delay=0.01) as h:
            outcome = await push_many(h.pool, [start_request(kit)] * n)
            assert statuses(outcome.results) == {200: n}
            assert outcome.unprocessed["REFUSED_STREAM"] > 0
            assert Counter(p.status for p in kit.apns.log) == {200: n}
            assert kit.apns.counters.connections == 1  # a refusal is no reason to reconnect


async def test_stream_limit_drop_after_a_rejection(autojump_clock: trio.testing.MockClock) -> None:
    # APNs drops MAX_CONCURRENT_STREAMS to 1 after a rejected push (apns.md §4, openradar 27870881).
    kit = make_kit(drop_to_one_after_rejection=True, plan=FaultPlan.from_flags("latency=fixed:20"))
    good, bad = start_request(kit), start_request(kit, token="ab" * 32)
    requests = [bad if i % 50 == 7 else good for i in range(1000)]
    with trio.fail_after(600):
        async with running_pool(kit, size=1) as h:
            outcome = await push_many(h.pool, requests)
            assert statuses(outcome.results) == {200: 980, 400: 20}
            assert not [r for r in outcome.results if isinstance(r, NoAnswer)]


# --------------------------------------------------------------------------------------------
# Connect failures


async def test_reconnect_attempts_back_off_exponentially_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    failures = 9
    with trio.fail_after(1000):
        async with running_pool(kit, size=4, fail=failures) as h:
            results: list[StreamResult] = []

            async def push() -> None:
                results.append(await h.pool.send(start_request(kit)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(push)
                await trio.sleep(0.5)
                # Failing connects do not fail the push: it waits, and the pool says why.
                assert results == []
                assert isinstance(h.pool.last_connect_error, ConnectError)
                assert "Connection refused" in str(h.pool.last_connect_error)
            assert isinstance(results[0], Answered) and results[0].answer.status == 200
            assert h.pool.last_connect_error is None
    attempts = h.connector.attempts
    assert len(attempts) == failures + 1
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected_rng = random.Random(1)
    expected = [backoff_delay(n, 60.0, expected_rng) for n in range(1, failures + 1)]
    assert gaps == pytest.approx(expected, abs=1e-6)
    for n, gap in enumerate(gaps, start=1):
        base = min(60.0, 2.0 ** (n - 1))
        assert 0.8 * base - 1e-9 <= gap <= min(60.0, 1.2 * base) + 1e-9
    assert max(gaps) <= 60.0 + 1e-9 and gaps[-1] >= 48.0  # capped, not still doubling
    kinds = [kind for kind, _ in h.listener.events]
    assert kinds.count("connect_failed") == failures and kinds.count("opened") == 1


async def test_a_connector_that_hangs_times_out(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit()

    async def hang() -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    config = DeliveryConfig(connect_timeout=3.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            tokens = TokenSource(kit.key, wall_clock=kit.now)
            pool = ApnsPool(hang, tokens, authority=AUTHORITY, size=1, config=config)
            await nursery.start(pool.run)
            assert not pool.try_send(start_request(kit), lambda r: None)
            await trio.sleep(3.5)
            assert isinstance(pool.last_connect_error, ConnectError)
            assert "timed out after 3 s" in str(pool.last_connect_error)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------
# Liveness


async def test_a_silent_connection_is_pinged_declared_dead_and_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    config = DeliveryConfig(idle_ping=60.0, ping_timeout=10.0, request_timeout=1000.0)
    with trio.fail_after(600):
        async with running_pool(kit, size=1, config=config) as h:
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            await trio.sleep(0.01)
            (stream,) = h.connector.streams
            stream.frozen = True  # the peer vanishes without a FIN (half-open TCP)
            frozen_at = trio.current_time()
            result = await h.pool.send(start_request(kit))
            dead_after = trio.current_time() - frozen_at
            assert isinstance(result, NoAnswer) and "PING" in result.reason
            assert 60.0 <= dead_after <= 70.0 + 1e-6
            pings = [f for f in stream.frames() if f[0] == _PING]
            assert len(pings) == 1
            # The next push gets a fresh connection.
            again = await h.pool.send(start_request(kit))
            assert isinstance(again, Answered) and again.answer.status == 200
            assert len(h.connector.attempts) == 2
            assert any(
                kind == "closed" and "PING" in str(reason) for kind, reason in h.listener.events
            )


async def test_an_idle_healthy_connection_is_pinged_and_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    config = DeliveryConfig(idle_ping=60.0, ping_timeout=10.0)
    with trio.fail_after(1000):
        async with running_pool(kit, size=1, config=config) as h:
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            await trio.sleep(600)
            conn = the_connection(h.pool)
            assert 9 <= conn.pings_sent <= 10  # one per idle minute, each acknowledged
            assert conn.is_usable
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            assert len(h.connector.attempts) == 1


async def test_request_timeout_gives_no_answer_and_cancels_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("latency=fixed:45000"))
    config = DeliveryConfig(request_timeout=30.0, idle_ping=1000.0)
    with trio.fail_after(600):
        async with running_pool(kit, size=1, config=config) as h:
            started = trio.current_time()
            result = await h.pool.send(start_request(kit))
            assert isinstance(result, NoAnswer) and "30 s" in result.reason
            assert trio.current_time() - started == pytest.approx(30.0)
            conn = the_connection(h.pool)
            assert conn.open_streams == 0 and conn.available_slots == 1  # the slot came back
            await trio.sleep(0.01)  # the writer's next batch
            (stream,) = h.connector.streams
            resets = [f for f in stream.frames() if f[0] == _RST_STREAM]
            assert resets == [(_RST_STREAM, 1, struct.pack(">I", ErrorCodes.CANCEL))]
            await trio.sleep(30)  # APNs answers the cancelled stream late: ignored, no harm
            assert conn.is_usable and conn.close_reason is None
            assert h.pool.connections == 1


# --------------------------------------------------------------------------------------------
# Closing


async def test_aclose_drains_in_flight_pushes(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("latency=fixed:500"))
    with trio.fail_after(60):
        async with running_pool(kit, size=1) as h:
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            done: list[StreamResult] = []
            for _ in range(100):
                assert h.pool.try_send(start_request(kit), done.append)
            await trio.sleep(0.1)
            await h.pool.aclose(deadline=5.0)
            assert statuses(done) == {200: 100}
            assert h.pool.connections == 0
            assert not h.pool.try_send(start_request(kit), done.append)
            with pytest.raises(PoolClosedError):
                await h.pool.wait_for_slot()
            closed = [reason for kind, reason in h.listener.events if kind == "closed"]
            assert closed == [None]


async def test_aclose_deadline_settles_what_never_got_an_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("latency=fixed:20000"))
    config = DeliveryConfig(request_timeout=60.0)
    with trio.fail_after(120):
        async with running_pool(kit, size=1, config=config) as h:
            done: list[StreamResult] = []
            while not h.pool.try_send(start_request(kit), done.append):
                await h.pool.wait_for_slot()
            await trio.sleep(1)
            closing = trio.current_time()
            await h.pool.aclose(deadline=2.0)
            assert len(done) == 1 and isinstance(done[0], NoAnswer)
            assert trio.current_time() - closing == pytest.approx(2.0)


async def test_a_callback_that_raises_does_not_break_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with running_pool(kit, size=1) as h:
            assert isinstance(await h.pool.send(start_request(kit)), Answered)

            def boom(result: StreamResult) -> None:
                raise RuntimeError("caller bug")

            assert h.pool.try_send(start_request(kit), boom)
            assert isinstance(await h.pool.send(start_request(kit)), Answered)
            assert len(h.connector.attempts) == 1
