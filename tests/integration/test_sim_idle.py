"""IdleTimeout: the fake APNs closes connections its client has left silent (apns.md §4).

Through the real server over memory streams, on trio's MockClock (autojump): a GOAWAY with
`{"reason":"IdleTimeout"}` after `idle_timeout` seconds without a frame, PINGs keeping a
connection alive, answers still owed delivered before the close, and the engine reconnecting and
delivering the next push afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from h2.errors import ErrorCodes

from engine.config import EngineConfig
from engine.engine import Engine, open_engine
from engine.metrics import EngineListener
from engine.payload import Alert
from engine.results import DeliveryStatus
from simulator.devices import TokenReport
from simulator.faults import FaultPlan
from tests.helpers.h2client import H2TestClient
from tests.helpers.lanes import settle
from tests.helpers.simkit import (
    TOPIC,
    Kit,
    engine_config,
    make_kit,
    memory_connector,
    open_h2_client,
    start_body,
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _ping(client: H2TestClient) -> None:
    client.conn.ping(b"idle-ok?")
    await client.flush()


def _goaway_reason(client: H2TestClient) -> str:
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.NO_ERROR
    data = client.goaway.additional_data or b""
    return str(json.loads(data)["reason"])


async def test_a_silent_connection_gets_goaway_idle_timeout_and_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(idle_timeout=600.0)
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            client = await open_h2_client(kit, nursery)
            r = await client.request(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            assert r.status == 200
            # PINGs are activity: three of them, 500 s apart, keep the connection open.
            for _ in range(3):
                await trio.sleep(500)
                await _ping(client)
            last_frame = trio.current_time()
            await client.until(lambda: client.goaway is not None)
            assert trio.current_time() - last_frame == pytest.approx(600.0)
            assert _goaway_reason(client) == "IdleTimeout"
            await client.until(lambda: client.closed)
            assert client.closed  # nothing was owed: closed right after the GOAWAY
            nursery.cancel_scope.cancel()


async def test_answers_still_owed_are_sent_before_the_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The answer takes 900 s (a fault-plan latency); the connection goes idle at 600 s.
    kit = make_kit(idle_timeout=600.0, plan=FaultPlan.from_flags("latency=fixed:900000"))
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            client = await open_h2_client(kit, nursery)
            sent_at = trio.current_time()
            sid = await client.send(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            await client.until(lambda: client.goaway is not None)
            assert _goaway_reason(client) == "IdleTimeout"
            assert client.goaway is not None and client.goaway.last_stream_id == sid
            assert client.responses[sid].status is None  # still owed
            await client.until(lambda: client.closed)
            assert client.responses[sid].status == 200
            assert trio.current_time() - sent_at == pytest.approx(900.0)
            nursery.cancel_scope.cancel()


async def test_no_idle_timeout_when_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit(idle_timeout=None)
    with trio.fail_after(100_000):
        async with trio.open_nursery() as nursery:
            client = await open_h2_client(kit, nursery)
            with trio.move_on_after(10 * 3600):
                await client.until(lambda: client.goaway is not None)
            assert client.goaway is None and not client.closed
            nursery.cancel_scope.cancel()


class _Goaways(EngineListener):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def goaway(self, reason: str) -> None:
        self.reasons.append(reason)


@asynccontextmanager
async def _engine_that_started_deploy_1(
    kit: Kit, nursery: trio.Nursery, config: EngineConfig, listener: EngineListener
) -> AsyncIterator[Engine]:
    """An engine on the kit's server whose push-to-start of "deploy-1" to iphone-1 was accepted."""
    async with open_engine(
        config,
        connector=memory_connector(kit, nursery),
        signing_key=kit.key,
        wall_clock=kit.now,
        listener=listener,
    ) as engine:
        started = await engine.start(
            "deploy-1",
            kit.push_to_start_token("iphone-1"),
            {"step": 0},
            attributes_type="DeployAttributes",
            attributes={"activity_id": "deploy-1"},
            alert=Alert("Deploy", "started"),
            lane="iphone-1",
        )
        assert (await started.result()).status is DeliveryStatus.ACCEPTED
        yield engine


async def test_the_engine_reconnects_after_idle_timeout_and_delivers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()  # the default idle timeout, two hours
    reports: list[TokenReport] = []
    kit.apns.token_sinks.append(reports.append)
    listener = _Goaways()
    # An engine that never pings: its idle connection meets the simulator's idle timeout.
    config = engine_config(kit, idle_ping=10 * 3600.0, connections=1)
    with trio.fail_after(100_000):
        async with trio.open_nursery() as nursery:
            async with _engine_that_started_deploy_1(kit, nursery, config, listener) as engine:
                await trio.sleep(2 * 3600 + 60)
                assert listener.reasons == ["IdleTimeout"]
                (report,) = reports
                update = await engine.update(
                    "deploy-1", report.activity_token, {"step": 1}, lane="iphone-1"
                )
                result = await update.result()
                assert result.status is DeliveryStatus.ACCEPTED
            assert kit.apns.counters.connections == 2
            assert [p.status for p in kit.apns.log] == [200, 200]
            settle(kit)  # the update went at priority 5: the phone shows it after its delay
            assert kit.device("iphone-1")["activities"][0]["content_state"] == {"step": 1}
            nursery.cancel_scope.cancel()


async def test_an_engine_that_pings_keeps_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(idle_timeout=600.0)
    listener = _Goaways()
    config = engine_config(kit, idle_ping=300.0, connections=1)  # the engine's default PING
    with trio.fail_after(100_000):
        async with trio.open_nursery() as nursery:
            async with _engine_that_started_deploy_1(kit, nursery, config, listener):
                await trio.sleep(3 * 3600)
                assert listener.reasons == []
            assert kit.apns.counters.connections == 1
            nursery.cancel_scope.cancel()
