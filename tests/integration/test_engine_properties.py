"""Property tests: random start / update / end interleavings through the real engine against the
fake APNs in memory, under a seeded fault plan, on trio's MockClock.

For every (activity, device): the device never applies an older state after a newer one (its
`order_violations` stay 0), its final state equals the last state submitted, a start came first and
an end last, and no push ever exceeded 4096 bytes (no 413 in the push log).
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.engine import open_engine
from simulator.devices import TokenReport
from simulator.faults import FaultPlan
from tests.helpers.lanes import LaneScript, Scenario, check_lanes, drive_lane
from tests.helpers.simkit import Kit, engine_config, make_kit, memory_connector


def _plans() -> st.SearchStrategy[str]:
    faults = st.lists(
        st.sampled_from(
            [
                "burst=ServiceUnavailable:0.1:2",
                "burst=TooManyRequests:0.05:3",
                "burst=InternalServerError:0.05:1",
                "goaway_after=7",
                "reset=0.05",
                "drop=0.03",
                "swing=0.1:1/5/1000",
            ]
        ),
        max_size=3,
        unique=True,
    )
    latency = st.sampled_from(["", "latency=uniform:1:400", "latency=lognormal:20:900"])
    return st.tuples(faults, latency).map(lambda p: ",".join([*p[0], p[1]] if p[1] else p[0]))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    lanes = []
    for device in ("iphone-1", "iphone-2"):
        for n in range(draw(st.integers(1, 3))):
            steps = draw(
                st.lists(
                    st.tuples(
                        st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0]), st.integers(0, 10**6)
                    ),
                    max_size=12,
                )
            )
            lanes.append(
                LaneScript(
                    f"act-{device}-{n}",
                    device,
                    steps,
                    draw(st.booleans()),
                    draw(st.sampled_from([0.0, 0.2, 2.0])),
                )
            )
    return Scenario(lanes, draw(_plans()), draw(st.integers(0, 2**16)))


async def _run(scenario: Scenario) -> Kit:
    plan = FaultPlan.from_flags(f"seed={scenario.seed}," + scenario.plan) if scenario.plan else None
    kit = make_kit(plan=plan)
    reports: list[TokenReport] = []
    kit.apns.token_sinks.append(reports.append)
    with trio.fail_after(24 * 3600):
        async with trio.open_nursery() as nursery:
            config = engine_config(kit, connections=2, max_attempts=30)
            async with open_engine(
                config,
                connector=memory_connector(kit, nursery),
                signing_key=kit.key,
                wall_clock=kit.now,
                drain_timeout=3600,
            ) as engine:
                async with trio.open_nursery() as lanes:
                    for script in scenario.lanes:
                        submitted = scenario.submitted.setdefault(
                            (script.activity, script.device), []
                        )
                        lanes.start_soon(drive_lane, engine, kit, script, reports, submitted)
                with trio.move_on_after(6 * 3600) as waiting:
                    await engine.drain()
                d = engine.dispatcher
                assert not waiting.cancelled_caught, (
                    f"not drained: {d.coalescer.stats} in flight {d._in_flight} "
                    f"pool free {d.pool.free_slots} connections {d.pool.connections}"
                )
            check_lanes(kit, scenario)
            nursery.cancel_scope.cancel()
    return kit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_interleavings_keep_order_and_deliver_final_states(scenario: Scenario) -> None:
    trio.run(_run, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
