"""A failed write changes nothing (store + engine + fake APNs in memory, on MockClock).

With the database full (SQLite's own SQLITE_FULL, `PRAGMA max_page_count`) or read-only (SQLite's
`query_only`: root ignores file modes), a call answers 503 `storage_unavailable` naming the cause,
memory stays exactly as the store has it, nothing is pushed, and `/healthz` says why until writes
succeed again; then the identical retry does the whole call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.server.contract import errors, models
from engine.server.service import LiveConfig, Service
from engine.server.store.sqlite import SqliteStore
from simulator.devices import TokenReport
from tests.helpers.servicekit import Harness, open_harness
from tests.helpers.simkit import make_kit

TIMEOUT = 600.0  # MockClock seconds; autojump makes them instant


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def req(cls: type[Any], value: int, **extra: Any) -> Any:
    state = {"title": "Queue", "type": "value", "value": value}
    return models.decode(cls, msgspec.json.encode({"content_state": state, **extra}))


def set_full(store: SqliteStore, full: bool) -> None:
    """Cap the database at its current size (or lift the cap): new pages fail with SQLITE_FULL."""
    conn = store._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0] if full else 1073741823
    conn.execute(f"PRAGMA max_page_count = {pages}")


def set_read_only(store: SqliteStore, read_only: bool) -> None:
    conn = store._conn
    assert conn is not None
    conn.execute(f"PRAGMA query_only = {'ON' if read_only else 'OFF'}")


def plain(row: Any) -> Any:
    """A row as plain JSON values (its packed state included)."""
    return msgspec.json.decode(msgspec.json.encode(row))


def memory_view(service: Service) -> dict[str, Any]:
    """What the calls own in memory (the outbox's write-behind progress is left out: it is
    memory-first by design, outbox.py)."""
    reg = service.registry
    return {
        "devices": {k: plain(v) for k, v in reg.devices.items()},
        "activities": {k: plain(a.row) for k, a in reg.activities.items()},
        "streams": {k: plain(v) for k, v in reg.streams.items()},
        "recipients": {
            (k, d): (r.row.start_token, r.row.update_token)
            for k, a in reg.activities.items()
            for d, r in a.recipients.items()
        },
    }


async def stored_view(service: Service) -> dict[str, Any]:
    snap = await service.store.load()
    return {
        "devices": {d.device_id: plain(d) for d in snap.devices},
        "activities": {a.activity_id: plain(a) for a in snap.activities},
        "streams": {s.stream_key: plain(s) for s in snap.streams},
        "recipients": {
            (r.activity_id, r.device_id): (r.start_token, r.update_token) for r in snap.recipients
        },
    }


async def attempt(h: Harness, call: Callable[[], Awaitable[Any]], cause: str) -> Any:
    """Run `call`; when it answers 503 storage_unavailable, check that it named `cause`, changed
    nothing, pushed nothing and shows in `/healthz`, and return None; else its reply."""
    before = memory_view(h.service)
    offered = h.service.stats()["delivery_offered"]
    try:
        return await call()
    except errors.StorageUnavailable as exc:
        assert exc.body()["cause"] == cause and f"({cause})" in exc.message
        assert exc.retry_after == h.service.config.storage_retry_after
    assert memory_view(h.service) == before == await stored_view(h.service)
    assert h.service.stats()["delivery_offered"] == offered
    health = h.service.health()
    assert health["ok"] is False and health["storage"].startswith(cause)
    assert h.service.stats()["store_failing"] == 1.0
    return None


def shown_value(h: Harness, device: str, activity_id: str | None) -> Any:
    shown = h.shown(device, activity_id)
    return None if shown is None else shown["content_state"].get("value")


async def test_a_full_database_changes_nothing_and_the_retry_does_the_whole_call(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    db = tmp_path / "db"
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, db, forward_reports=False) as h:
            first = await h.service.live.stream("queue", req(models.StreamRequest, 1))
            set_full(h.store, True)
            # Each new stream needs new rows: the first that needs a page past the cap fails.
            for n in range(2, 500):  # pragma: no branch - a page holds a few dozen at most
                key = f"s{n}"
                put = partial(h.service.live.stream, key, req(models.StreamRequest, n))
                reply = await attempt(h, put, "disk full")
                if reply is None:
                    break
            assert key not in h.service.registry.streams
            # The identical retry, still full: the same answer (not "noop").
            assert await attempt(h, put, "disk full") is None
            await trio.sleep(30)
            assert h.service.health()["ok"] is False  # the probe still fails
            set_full(h.store, False)  # space freed
            await trio.sleep(h.service.config.storage_retry_after + 1)
            assert h.service.health()["ok"] is True  # the probe noticed by itself
            retried = await h.service.live.stream(key, req(models.StreamRequest, n))
            assert retried.operation == "started"
            assert retried.devices_notified == 2  # pushed this time (APNs accepted both starts)
            assert memory_view(h.service) == await stored_view(h.service)
        async with open_harness(kit, db, register=False, forward_reports=False) as h2:
            assert h2.service.registry.current_of_stream(key) is not None
            again = await h2.service.live.stream(key, req(models.StreamRequest, n))
            assert again.operation == "noop" and again.activity_id == retried.activity_id
            assert first.activity_id == h2.service.registry.streams["queue"].activity_id


async def test_a_read_only_database_changes_nothing_for_any_call(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=2)
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", forward_reports=False) as h:
            live, devices = h.service.live, h.service.devices
            streamed = await live.stream("queue", req(models.StreamRequest, 1))
            started = await live.start(req(models.StartRequest, 1))
            await trio.sleep(5)
            reports = list(h.reports)
            assert reports
            set_read_only(h.store, True)
            ro = "read-only"
            phone = kit.apns.registry.snapshot(kit.now())[0]
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: live.stream("queue", req(models.StreamRequest, 2)),
                lambda: live.stream("other", req(models.StreamRequest, 2)),
                lambda: live.stream("queue", req(models.StreamRequest, 2, channels=["x"])),
                lambda: live.end_stream("queue", None),
                lambda: live.start(req(models.StartRequest, 2)),
                lambda: live.update(req(models.UpdateRequest, 2, activity_id=started.activity_id)),
                lambda: live.end(req(models.EndRequest, 2, activity_id=started.activity_id)),
                lambda: devices.register(
                    "new-phone", models.DeviceRegistration(push_to_start_token="ab" * 32)
                ),
                lambda: devices.register(
                    phone["name"],
                    models.DeviceRegistration(
                        push_to_start_token=phone["push_to_start_token"], channels=["x"]
                    ),
                ),
                lambda: devices.unregister(phone["name"]),
                lambda: h.forward(reports[0]),
            ]
            for call in calls:
                assert await attempt(h, call, ro) is None
            await trio.sleep(30)
            assert shown_value(h, "iphone-1", streamed.activity_id) == 1
            set_read_only(h.store, False)
            for report in h.reports:  # the app reports its tokens again after a 503
                await h.forward(report)
            again = await live.stream("queue", req(models.StreamRequest, 2))
            assert again.operation == "updated"  # the identical retry: not "noop"
            await trio.sleep(1)  # the write woke the probe
            assert h.service.health()["ok"] is True
            await trio.sleep(10)
            assert shown_value(h, "iphone-1", streamed.activity_id) == 2
            assert memory_view(h.service) == await stored_view(h.service)


async def test_a_failed_rotation_keeps_the_old_activity_running(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(TIMEOUT):
        async with open_harness(kit, tmp_path / "db", forward_reports=False) as h:
            first = await h.service.live.stream("queue", req(models.StreamRequest, 1))
            set_read_only(h.store, True)
            text = {"title": "Queue", "type": "progress", "percentage": 10}
            rotate = models.decode(
                models.StreamRequest, msgspec.json.encode({"content_state": text})
            )
            assert (
                await attempt(h, lambda: h.service.live.stream("queue", rotate), "read-only")
                is None
            )
            current = h.service.registry.current_of_stream("queue")
            assert current is not None and current.row.activity_id == first.activity_id


async def test_a_failing_write_behind_is_retried_and_the_sweep_waits(
    autojump_clock: Any, tmp_path: Path
) -> None:
    kit = make_kit(devices=1)
    with trio.fail_after(2 * 3600):  # MockClock seconds: past the sweep's hour of retention
        async with open_harness(
            kit, tmp_path / "db", forward_reports=False, live=LiveConfig(notify_wait=0)
        ) as h:
            started = await h.service.live.start(req(models.StartRequest, 1))
            set_read_only(h.store, True)  # before APNs answers: their write-behind fails
            await trio.sleep(10)
            assert h.service.outbox.dirty == 1
            assert h.service.health()["ok"] is False
            set_read_only(h.store, False)
            await trio.sleep(h.service.config.storage_retry_after + 1)
            assert h.service.outbox.dirty == 0 and h.service.health()["ok"] is True
            for report in h.reports:
                await h.forward(report)
            await h.service.live.end(req(models.EndRequest, 1, activity_id=started.activity_id))
            await trio.sleep(10)  # the end is delivered and written
            set_read_only(h.store, True)
            await trio.sleep(h.service.config.retention + 2 * h.service.config.sweep_interval)
            assert started.activity_id in h.service.registry.activities  # not forgotten unwritten
            assert h.service.health()["ok"] is False
            set_read_only(h.store, False)
            await trio.sleep(h.service.config.sweep_interval + 10)
            assert started.activity_id not in h.service.registry.activities
            assert h.service.health()["ok"] is True


# -- interleavings ---------------------------------------------------------------------------

Step = tuple[str, int, int]
STEPS = st.tuples(
    st.sampled_from(
        [
            "full",
            "read_only",
            "heal",
            "stream",
            "end_stream",
            "start",
            "update",
            "end",
            "register",
            "unregister",
            "report",
            "wait",
        ]
    ),
    st.integers(0, 2),
    st.integers(0, 3),
)


async def play(steps: list[Step]) -> None:
    kit = make_kit(devices=2)
    with tempfile.TemporaryDirectory() as tmp, trio.fail_after(TIMEOUT):
        async with open_harness(kit, Path(tmp) / "db", forward_reports=False) as h:
            live, devices = h.service.live, h.service.devices
            phones = kit.apns.registry.snapshot(kit.now())
            ids: list[str] = []
            pending: list[TokenReport] = []
            full = read_only = False
            for n, (kind, i, v) in enumerate(steps):
                value = n * 10 + v
                call: Callable[[], Awaitable[Any]] | None = None
                if kind == "full":
                    set_full(h.store, True)
                    full = True
                elif kind == "read_only":
                    set_read_only(h.store, True)
                    read_only = True
                elif kind == "heal":
                    set_full(h.store, False)
                    set_read_only(h.store, False)
                    full = read_only = False
                elif kind == "stream":
                    call = partial(live.stream, f"k{i}", req(models.StreamRequest, value))
                elif kind == "end_stream":
                    call = partial(live.end_stream, f"k{i}", None)
                elif kind == "start":
                    call = partial(live.start, req(models.StartRequest, value))
                elif kind in ("update", "end") and ids:
                    cls = models.UpdateRequest if kind == "update" else models.EndRequest
                    fn = live.update if kind == "update" else live.end
                    call = partial(fn, req(cls, value, activity_id=ids[i % len(ids)]))
                elif kind == "register":
                    phone = phones[i % len(phones)]
                    reg = models.DeviceRegistration(
                        push_to_start_token=phone["push_to_start_token"], channels=["c"] * (v % 2)
                    )
                    call = partial(devices.register, phone["name"], reg)
                elif kind == "unregister":
                    call = partial(devices.unregister, phones[i % len(phones)]["name"])
                elif kind == "report":
                    pending.extend(h.reports)
                    h.reports.clear()
                    if pending:
                        report = pending.pop(0)
                        call = partial(h.forward, report)
                elif kind == "wait":
                    await trio.sleep(v * 3)
                if call is not None:
                    # A read-only database refuses a write before it needs a page: that cause wins.
                    cause = "read-only" if read_only or not full else "disk full"
                    try:
                        reply = await attempt(h, call, cause)
                    except errors.ApiError as exc:
                        assert not isinstance(exc, errors.StorageUnavailable)
                        reply = None  # 404 / 409 / 422 / 429: refused before anything changed
                    if reply is None and kind == "report":
                        pending.insert(0, report)
                    if kind == "start" and reply is not None:
                        ids.append(reply.activity_id)
                assert memory_view(h.service) == await stored_view(h.service)
            set_full(h.store, False)
            set_read_only(h.store, False)
            await trio.sleep(h.service.config.storage_retry_after + 1)
            assert h.service.health()["ok"] is True


@settings(max_examples=40)
@given(st.lists(STEPS, min_size=1, max_size=25))
def test_failing_writes_interleaved_with_calls_keep_memory_equal_to_the_store(
    steps: list[Step],
) -> None:
    trio.run(play, steps, clock=trio.testing.MockClock(autojump_threshold=0))
