"""The `--workers` supervisor (engine/server/workers.py) over stand-in workers: small Python
processes that read their `LOCKSTEP_WORKER` link, report ready and then crash, ignore SIGTERM or
stop politely, so the restart, give-up and stop rules run in seconds, without a database. Every
test runs under an absolute timeout."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator

import pytest
import trio

from engine.server.listen import listening_sockets
from engine.server.restarts import RestartPolicy
from engine.server.workers import Supervisor

WORKER = """
import json, os, signal, sys, time
link = json.loads(os.environ["LOCKSTEP_WORKER"])
assert os.environ["LOCKSTEP_NODE_ID"] == f"t-w{link['index']}"
os.fstat(link["listen_fd"])  # inherited
os.write(link["ready_fd"], b"ready\\n")
os.close(link["ready_fd"])
mode = sys.argv[1]
if mode == "crash":
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(60)
"""


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made = listening_sockets("127.0.0.1", 0, 2)
    yield list(made)
    for sock in made:
        sock.close()


def supervisor(mode: str, sockets: list[socket.socket], stop_timeout: float = 30.0) -> Supervisor:
    return Supervisor(
        [sys.executable, "-c", WORKER, mode],
        sockets,
        ["t-w0", "t-w1"],
        policy=RestartPolicy(base_delay=0.05, max_delay=0.2, max_restarts=2, window=60.0),
        stop_timeout=stop_timeout,
    )


async def test_workers_that_keep_dying_are_given_up_on(sockets: list[socket.socket]) -> None:
    sup = supervisor("crash", sockets)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.keep_all)
            await sup.failed.wait()
            nursery.cancel_scope.cancel()
        await sup.stop()
    sup.close()
    assert sup.failure is not None and sup.status == 1
    assert sup.failure.endswith("died 3 times within 60 s (last: exit status 3); giving up")


async def test_a_stop_forwards_the_signal_and_waits(sockets: list[socket.socket]) -> None:
    sup = supervisor("polite", sockets)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.keep_all)
            assert await sup.wait_ready()
            nursery.cancel_scope.cancel()
        await sup.stop(signal.SIGTERM)  # forwarded: each worker exits 0
    sup.close()
    assert sup.failure is None and sup.status == 0


async def test_a_worker_ignoring_sigterm_is_killed_after_the_stop_timeout(
    sockets: list[socket.socket],
) -> None:
    sup = supervisor("stubborn", sockets, stop_timeout=0.5)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.keep_all)
            assert await sup.wait_ready()
            nursery.cancel_scope.cancel()
        before = trio.current_time()
        await sup.stop()
        assert trio.current_time() - before < 10
    sup.close()
    assert sup.status == 1  # killed: the stop did not go cleanly
