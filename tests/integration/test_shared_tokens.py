"""One provider token for every node on one PostgreSQL schema (engine/server/store/pgtokens.py).

Three engines, each with its own `SharedTokens` on one fresh schema (tests/helpers/pgkit.py:
skipped with a loud reason without a server, failed under CI), push to the simulator through a
mocked hour and more: APNs sees one token at a time for the team, changed once, never a
`TooManyProviderTokenUpdates`; when APNs calls the token expired for all of them, one node
refreshes it for the three; without the shared row the same three nodes show APNs three tokens at
once. Then the row lock itself: a forced refresh reported by every node is done once, nodes
syncing at once in real threads issue once, and a node that cannot reach the database keeps
pushing with a token of its own, never logging it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

import simulator.apns
from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.reasons import Reason
from engine.apns.tokens import TokenSource
from engine.engine import open_engine
from engine.payload import Alert
from engine.results import DeliveryStatus
from engine.server.store.pgtokens import TABLE, SharedTokens
from simulator.auth import ConnectionAuth
from simulator.devices import TokenReport
from tests.helpers import pgkit
from tests.helpers.simkit import Kit, engine_config, make_kit, memory_connector

NODES = 3
MINUTES = 70  # past the 50-minute refresh, and then some


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pgkit.schemas() as made:
        yield made.new()


class Recording(TokenSource):
    """A `TokenSource` that notes when each token first went out on a request (team-wide)."""

    __slots__ = ("_first_use", "_now")

    def __init__(
        self, key: SigningKey, first_use: dict[str, float], now: Callable[[], float], **kw: Any
    ) -> None:
        super().__init__(key, wall_clock=now, **kw)
        self._first_use = first_use
        self._now = now

    def current(self) -> ProviderToken:
        token = super().current()
        self._first_use.setdefault(token.value, self._now())
        return token


async def _push_for_an_hour(
    kit: Kit, url: str | None
) -> tuple[dict[str, float], list[Recording], list[SharedTokens]]:
    """Three nodes (shared through `url`, or each on its own when None) start one activity each
    and update it every minute for `MINUTES`; the tokens' first uses, the sources, the shells."""
    reports: list[TokenReport] = []
    kit.apns.token_sinks.append(reports.append)
    first_use: dict[str, float] = {}
    sources: list[Recording] = []
    shells: list[SharedTokens] = []
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        engines = []
        for i in range(NODES):
            tokens = Recording(kit.key, first_use, kit.now, coordinated=url is not None)
            if url is not None:
                shell = SharedTokens(
                    url, tokens, node_id=f"node-{i}", wall_clock=kit.now, threads=False
                )
                await nursery.start(shell.run)
                shells.append(shell)
            sources.append(tokens)
            engines.append(
                await stack.enter_async_context(
                    open_engine(
                        engine_config(kit),
                        connector=memory_connector(kit, nursery),
                        signing_key=kit.key,
                        wall_clock=kit.now,
                        provider_tokens=tokens,
                    )
                )
            )
        for i, engine in enumerate(engines):
            device = f"iphone-{i + 1}"
            started = await engine.start(
                f"act-{i}",
                kit.push_to_start_token(device),
                {"minute": 0},
                attributes_type="LockstepActivityAttributes",
                attributes={"activity_id": f"act-{i}"},
                alert=Alert("Node", "started"),
                lane=device,
            )
            assert (await started.result()).status is DeliveryStatus.ACCEPTED
        await trio.sleep(1)
        update_tokens = {r.device: r.activity_token for r in reports}
        for minute in range(1, MINUTES + 1):
            await trio.sleep(60)
            handles = [
                await engine.update(
                    f"act-{i}",
                    update_tokens[f"iphone-{i + 1}"],
                    {"minute": minute},
                    lane=f"iphone-{i + 1}",
                )
                for i, engine in enumerate(engines)
            ]
            for handle in handles:
                result = await handle.result()
                assert result.status is DeliveryStatus.ACCEPTED, (minute, result)
        await stack.aclose()
        nursery.cancel_scope.cancel()
    return first_use, sources, shells


async def test_three_nodes_show_apns_one_token_at_a_time_for_an_hour(
    autojump_clock: trio.testing.MockClock, pg_url: str
) -> None:
    kit = make_kit(devices=NODES)
    with trio.fail_after(2 * 3600):  # mocked seconds
        first_use, sources, shells = await _push_for_an_hour(kit, pg_url)
    reasons = {r.reason for r in kit.apns.log if r.status != 200}
    assert reasons == set(), reasons
    assert Reason.TOO_MANY_PROVIDER_TOKEN_UPDATES.value not in reasons
    # Two tokens in all: the first, and one refresh at 50 minutes, issued once for every node.
    assert len(first_use) == 2
    first, second = sorted(first_use.values())
    assert second - first >= 20 * 60  # APNs' floor between token changes (apns.md §2)
    assert sum(s.issued for s in shells) == 2
    assert len({s.cached for s in sources}) == 1
    assert all(s.local_fallbacks == 0 and s.refreshes == 1 for s in sources)
    with psycopg.connect(pg_url) as conn:
        (row,) = conn.execute(f"SELECT token, issued_by FROM {TABLE}").fetchall()
    assert sources[0].cached is not None and row[0] == sources[0].cached.value
    assert row[1] in {f"node-{i}" for i in range(NODES)}


async def test_expiries_seen_by_every_node_are_refreshed_once_for_all(
    autojump_clock: trio.testing.MockClock, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This APNs calls tokens expired after 25 minutes (as under clock skew), before the nodes'
    # own 50-minute refresh: every node's pushes come back ExpiredProviderToken at once.
    monkeypatch.setattr(simulator.apns, "ConnectionAuth", partial(ConnectionAuth, max_age=1500))
    kit = make_kit(devices=NODES)
    with trio.fail_after(2 * 3600):
        first_use, sources, shells = await _push_for_an_hour(kit, pg_url)
    expired = [r for r in kit.apns.log if r.reason == Reason.EXPIRED_PROVIDER_TOKEN.value]
    assert expired and {r.status for r in kit.apns.log} == {200, 403}
    # Expired at 25 and 50 minutes: two forced refreshes, each done once for the three nodes.
    assert sum(s.issued for s in shells) == len(first_use) == 3
    times = sorted(first_use.values())
    assert all(b - a >= 20 * 60 for a, b in itertools.pairwise(times))
    assert len({s.cached for s in sources}) == 1
    assert all(s.forced_refreshes == 0 and s.local_fallbacks == 0 for s in sources)


async def test_without_the_shared_row_three_nodes_show_apns_three_tokens_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(devices=NODES)
    with trio.fail_after(2 * 3600):
        first_use, sources, _ = await _push_for_an_hour(kit, None)
    first_minute = [at for at in first_use.values() if at < min(first_use.values()) + 60]
    assert len(first_minute) == NODES  # the hazard the shared token removes
    assert len({s.cached for s in sources}) == NODES


def _shared(url: str, key: SigningKey, clock: Callable[[], float], i: int, **kw: Any) -> Any:
    tokens = TokenSource(key, wall_clock=clock, coordinated=True)
    return tokens, SharedTokens(url, tokens, node_id=f"node-{i}", wall_clock=clock, **kw)


async def test_an_expired_token_reported_by_every_node_is_refreshed_once(
    autojump_clock: trio.testing.MockClock, pg_url: str
) -> None:
    kit = make_kit(devices=0)
    nodes = [_shared(pg_url, kit.key, kit.now, i, threads=False) for i in range(NODES)]
    for _, shell in nodes:
        await shell.sync()
    failed = nodes[0][0].cached
    assert failed is not None and all(t.cached == failed for t, _ in nodes)
    await trio.sleep(60)
    for tokens, _ in nodes:
        assert tokens.on_expired(failed) is failed  # marked for the shell, not refreshed here
    for _, shell in nodes:
        await shell.sync()
    assert sum(shell.issued for _, shell in nodes) == 2  # the first token, and one refresh
    fresh = {t.cached for t, _ in nodes}
    assert len(fresh) == 1 and failed not in fresh
    assert all(t.refresh_wanted is None for t, _ in nodes)


async def test_nodes_syncing_at_once_in_threads_issue_one_token(pg_url: str) -> None:
    key = SigningKey.generate("THREADKEY1", "THREADTEAM")
    now = [1_800_000_000.0]  # one wall time every node agrees on, moved by hand
    nodes = [_shared(pg_url, key, lambda: now[0], i) for i in range(8)]
    with trio.fail_after(30):
        # The first round creates the row; the second finds it stale: each round, the row lock
        # lets one node issue and makes the seven others wait and adopt its token.
        for round_ in (1, 2):
            async with trio.open_nursery() as nursery:
                for _, shell in nodes:
                    nursery.start_soon(shell.sync)
            assert sum(shell.issued for _, shell in nodes) == round_
            assert len({t.cached for t, _ in nodes}) == 1
            now[0] += 3000
    assert all(shell.failures == 0 for _, shell in nodes)


async def test_a_node_without_its_database_keeps_pushing_with_its_own_token(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    kit = make_kit(devices=0)
    url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2"  # nothing listens there
    tokens, shell = _shared(url, kit.key, kit.now, 0, threads=False, retry_interval=5.0)
    caplog.set_level(logging.WARNING, logger="lockstep.tokens")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(shell.run)  # started, though the database did not answer
            first = tokens.current()  # nothing shared: its own
            tokens.on_expired(first)
            await trio.sleep(6)  # the retry fails again: the wanted refresh is done locally
            assert tokens.cached != first and tokens.refresh_wanted is None
            nursery.cancel_scope.cancel()
    assert shell.failures >= 2 and shell.issued == 0
    text = caplog.text
    assert "cannot share it through 127.0.0.1:1/test" in text
    assert first.value not in text and str(tokens.cached) not in text
    assert text.count("cannot share it") == 1  # said once, not at every retry
