"""The service over the PostgreSQL store: stream updates, registrations and a restart on the same
database, every phone showing the latest state in order; a lost database answers 503 `database
unreachable`, changes nothing and is noticed again by the probe (fake APNs in memory, MockClock).

PostgreSQL on 127.0.0.1:5432 (tests/helpers/pgkit.py: skipped with a loud reason when no server
answers, failed under CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
import trio
import trio.testing

from engine.server.contract import errors, models
from engine.server.store.pg import PgStore
from tests.helpers import pgkit
from tests.helpers.servicekit import open_harness
from tests.helpers.simkit import make_kit


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pgkit.schemas() as made:
        yield made.new()


def stream_req(value: int) -> models.StreamRequest:
    body: dict[str, Any] = {"content_state": {"title": "Queue", "type": "value", "value": value}}
    return models.decode(models.StreamRequest, msgspec.json.encode(body))


async def test_streams_survive_a_restart_on_postgresql(
    autojump_clock: Any, tmp_path: Path, pg_url: str
) -> None:
    kit = make_kit(devices=2)

    def make_store() -> PgStore:
        # Inline SQL (no worker thread): MockClock's autojump would run ahead of a thread.
        return PgStore(pg_url, threads=False)

    with trio.fail_after(600):
        async with open_harness(kit, tmp_path / "unused", make_store=make_store) as h:
            first = await h.service.live.stream("queue", stream_req(1))
            for value in range(2, 6):
                await trio.sleep(1.5)
                await h.service.live.stream("queue", stream_req(value))
            await trio.sleep(3)
            stored = await h.store.load()
            assert h.store.stats()["failed_batches"] == 0
        assert isinstance(h.store, PgStore)
        assert [d.device_id for d in stored.devices] == ["iphone-1", "iphone-2"]
        assert [s.activity_id for s in stored.streams] == [first.activity_id]
        # Restarted on the same database: the devices and the stream come back from it.
        async with open_harness(
            kit, tmp_path / "unused", register=False, make_store=make_store
        ) as h2:
            again = await h2.service.live.stream("queue", stream_req(6))
            await trio.sleep(5)
            assert again.activity_id == first.activity_id
            for name in ("iphone-1", "iphone-2"):
                shown = h2.shown(name, first.activity_id)
                assert shown is not None, name
                assert shown["content_state"]["value"] == 6
                assert shown["order_violations"] == 0


async def test_a_lost_database_answers_503_unreachable_and_the_retry_does_the_whole_call(
    autojump_clock: Any, tmp_path: Path, pg_url: str
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(600):
        store = PgStore(pg_url, threads=False, connect_timeout=2)
        async with open_harness(
            kit, tmp_path / "unused", forward_reports=False, make_store=lambda: store
        ) as h:
            await h.service.live.stream("queue", stream_req(1))
            # The network to the database is cut: the connection dies, reconnecting is refused.
            with trio.socket.socket() as sock:
                await sock.bind(("127.0.0.1", 0))
                dead = f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/test"
            assert store._pg is not None
            with psycopg.connect(pgkit.PG_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (store._pg.info.backend_pid,))
            store.url = dead
            before = dict(h.service.registry.streams)
            with pytest.raises(errors.StorageUnavailable) as caught:
                await h.service.live.stream("other", stream_req(2))
            assert caught.value.body()["cause"] == "database unreachable"
            assert dict(h.service.registry.streams) == before  # nothing changed
            await trio.sleep(30)
            health = h.service.health()
            assert health["ok"] is False and health["storage"].startswith("database unreachable")
            store.url = pg_url  # the network is back: the probe reconnects by itself
            await trio.sleep(h.service.config.storage_retry_after + 1)
            assert h.service.health()["ok"] is True
            retried = await h.service.live.stream("other", stream_req(2))
            assert retried.operation == "started"
            stored = await h.store.load()
            assert sorted(s.stream_key for s in stored.streams) == ["other", "queue"]
