"""The pieces of `lockstep serve --workers N` that need no process: the restart rules, the
listening sockets, the worker link, the node ids and the SQLite refusal."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from engine.config import ConfigError
from engine.server import listen
from engine.server.linkedphones import LinkedPhones
from engine.server.listen import balanced, listening_sockets
from engine.server.restarts import GiveUp, Restart, RestartPolicy
from engine.server.settings import Settings, load_settings
from engine.server.workerlink import READY, SimulatorLink, WorkerLink, report_ready
from engine.server.workers import check_workers, describe_exit, worker_node_ids

PG = "postgresql://lockstep@db.example/lockstep"


def test_a_worker_that_never_started_is_not_restarted() -> None:
    policy = RestartPolicy()
    decision = policy.died(1, 0.0, "exit status 2")
    assert decision == GiveUp("worker 1 failed to start (exit status 2)")


def test_restart_delays_double_until_the_worker_is_ready_again() -> None:
    policy = RestartPolicy(base_delay=0.5, max_delay=3.0, max_restarts=10)
    policy.ready(0)
    delays = [policy.died(0, float(t), "signal SIGKILL") for t in range(5)]
    assert delays == [Restart(0.5), Restart(1.0), Restart(2.0), Restart(3.0), Restart(3.0)]
    policy.ready(0)
    assert policy.died(0, 5.0, "exit status 1") == Restart(0.5)


def test_too_many_deaths_within_the_window_give_up_and_old_ones_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=2, window=60.0)
    policy.ready(3)
    assert isinstance(policy.died(3, 0.0, "exit status 1"), Restart)
    assert isinstance(policy.died(3, 30.0, "exit status 1"), Restart)
    assert isinstance(policy.died(3, 61.0, "exit status 1"), Restart)  # the first is 61 s old
    given_up = policy.died(3, 62.0, "signal SIGSEGV")
    assert given_up == GiveUp("worker 3 died 3 times within 60 s (last: signal SIGSEGV); giving up")
    policy.ready(4)  # another worker has a history of its own
    assert isinstance(policy.died(4, 62.0, "exit status 1"), Restart)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"base_delay": 0.0}, "base_delay"),
        ({"base_delay": 5.0, "max_delay": 1.0}, "base_delay"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"window": 0.0}, "window"),
    ],
)
def test_bad_restart_rules_are_refused(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestartPolicy(**kw)  # type: ignore[arg-type]


def test_exit_statuses_and_signals_are_described() -> None:
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(2) == "exit status 2"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(-200) == "signal 200"


def test_sockets_for_workers_share_one_port_picked_once() -> None:
    socks = listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1 and ports != {0}
        assert all(s.get_inheritable() for s in socks)
        # One socket per worker where the kernel balances (Linux), else one shared by all.
        assert len({id(s) for s in socks}) == (3 if balanced() else 1)
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # the kernel queues it on one of them: the port answers
    finally:
        for s in socks:
            s.close()


def test_a_port_in_use_fails_and_leaves_nothing_open() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            listening_sockets("127.0.0.1", port, 2)
    assert info.value.errno is not None
    with pytest.raises(ValueError):
        listening_sockets("127.0.0.1", 0, 0)


def test_the_worker_link_round_trips_and_garbage_is_refused() -> None:
    sim = SimulatorLink("127.0.0.1", 4443, "/ca.pem", "/k.p8", "KEY", "TEAM", "com.x", None)
    link = WorkerLink(index=1, listen_fd=5, ready_fd=6, lifeline_fd=7, simulator=sim)
    assert WorkerLink.decode(link.encode()) == link
    plain = WorkerLink(index=0, listen_fd=5, ready_fd=6, lifeline_fd=7)
    assert WorkerLink.from_env({"LOCKSTEP_WORKER": plain.encode()}) == plain
    assert WorkerLink.from_env({}) is None
    for junk in ("{", "[]", '{"index": 1}'):
        with pytest.raises(ValueError, match="LOCKSTEP_WORKER is not a worker description"):
            WorkerLink.decode(junk)


def test_report_ready_writes_one_line_and_closes_the_pipe() -> None:
    read, write = os.pipe()
    report_ready(WorkerLink(index=0, listen_fd=-1, ready_fd=write, lifeline_fd=-1))
    assert os.read(read, 100) == READY
    assert os.read(read, 100) == b""  # closed: the supervisor sees end-of-file after it
    os.close(read)


def test_node_ids_are_the_configured_id_or_the_hostname_with_the_worker_index() -> None:
    default = replace(load_settings(None, env={}), workers=2)
    assert worker_node_ids(default) == [f"{socket.gethostname()}-w{i}" for i in range(2)]
    named = load_settings(None, env={"LOCKSTEP_NODE_ID": "web-1"}, workers=3)
    assert worker_node_ids(named) == ["web-1-w0", "web-1-w1", "web-1-w2"]


def test_several_workers_on_sqlite_is_a_configuration_error_saying_why() -> None:
    with pytest.raises(ConfigError) as info:
        check_workers(Settings(workers=2))
    message = str(info.value)
    assert "--workers 2 needs a PostgreSQL store" in message
    assert "one SQLite file cannot be shared" in message
    assert '[store] url = "postgresql://..."' in message
    check_workers(Settings(workers=2, store_url=PG))  # fine
    with pytest.raises(ConfigError, match="--record writes one file"):
        check_workers(Settings(workers=2, store_url=PG, record=Path("r.jsonl")))


def test_linked_phones_fetch_only_while_the_page_is_looked_at() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    fetched: list[str] = []

    async def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        if len(fetched) == 2:
            raise OSError("connection refused")  # the supervisor restarting: tried again
        return {"now": 1.0, "devices": [{"name": "iphone-1"}], "pushes": []}

    phones = LinkedPhones("http://127.0.0.1:9/", refresh=1.0, idle=30.0, fetch=fetch)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(phones.run)
            await trio.sleep(100)
            assert fetched == []  # nobody looked: no traffic
            assert phones.page_state() == {}  # the first look answers at once, empty
            await trio.sleep(0.5)
            assert phones.page_state()["devices"] == [{"name": "iphone-1"}]
            await trio.sleep(120)
            assert 25 <= len(fetched) <= 35  # about once a second for `idle` s, then it rests
            assert set(fetched) == {"http://127.0.0.1:9/api/dashboard"}
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


def test_without_a_balancing_kernel_the_workers_share_one_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listen, "balanced", lambda: False)  # as on macOS and the BSDs
    socks = listening_sockets("127.0.0.1", 0, 3)
    try:
        assert socks[0] is socks[1] is socks[2]
        assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    finally:
        socks[0].close()


def test_an_ipv6_host_gets_an_ipv6_only_socket() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        socks = listening_sockets("::1", 0, 2)
    except OSError as exc:  # an IPv6 stack without a loopback address
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        assert socks[0].family == socket.AF_INET6
        assert socks[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    finally:
        for s in socks:
            s.close()
