"""`lockstep serve --workers N`: N worker processes on one port, under a supervising parent.

    lockstep serve --workers 4 --config lockstep.toml    # [store] url = "postgresql://..."

The parent (`supervise`) serves nothing itself. It:

1. refuses a SQLite store (`check_workers`): one SQLite file cannot be shared by several
   processes with the durability the server promises (each call committed by the one writer that
   holds the rows in memory, before it is answered); the workers share a PostgreSQL database;
2. makes the keys (so workers never race to generate different ones) and binds the port once,
   for all workers (engine/server/listen.py says why the parent binds);
3. in simulate mode, runs ONE simulator (`open_simulator`) as every worker's APNs, so all workers
   push to one set of simulated iPhones, which register once, through the shared port, after
   every worker is ready;
4. starts each worker as `lockstep serve` with the same flags plus its `WorkerLink`
   (engine/server/workerlink.py: its socket, a readiness pipe, a lifeline) and its node id in
   `LOCKSTEP_NODE_ID`: `<[cluster] node_id, else the hostname>-w<i>`, the same across restarts of
   worker i, so later cluster code can tell the workers apart;
5. prints one banner naming the workers, then supervises: a worker that dies is logged with its
   exit status or signal and restarted with a backoff (engine/server/restarts.py); a worker that
   fails its first start, or keeps dying, stops everything with a non-zero status and a message;
6. forwards SIGINT/SIGTERM to every worker and waits for them to drain (at most `stop_timeout`
   seconds, then SIGKILL).

Workers run in their own session, so a Ctrl-C in the terminal reaches the parent only, which
forwards it once (under systemd's default `KillMode=control-group` they also get the unit's
SIGTERM directly; the second one changes nothing). Their stdout and stderr are the parent's (one
log stream).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from engine.config import ConfigError
from engine.server.http.server import bind_address
from engine.server.listen import listening_sockets
from engine.server.restarts import GiveUp, RestartPolicy
from engine.server.serve import open_simulator, serving_banner
from engine.server.settings import NODE_ID_ENV, Settings, default_node_id, ensure_keys
from engine.server.startup import check_state_dir, listen_failure
from engine.server.workerlink import READY, WORKER_ENV, SimulatorLink, WorkerLink

__all__ = ["STOP_TIMEOUT", "Supervisor", "check_workers", "supervise", "worker_node_ids"]

log = logging.getLogger("lockstep.workers")

STOP_TIMEOUT: Final = 30.0
"""Seconds a worker may take to drain after SIGTERM (the engine drains for 10 s, the HTTP front
for 5) before it is killed."""


def check_workers(settings: Settings) -> None:
    """`ConfigError` for settings several workers cannot share (see the module docstring)."""
    n = settings.workers
    if settings.store_url is None:
        raise ConfigError(
            f"--workers {n} needs a PostgreSQL store: one SQLite file cannot be shared by "
            "several processes with the durability the server promises (each call committed "
            "before it is answered, by the one writer holding the rows); set [store] url = "
            '"postgresql://..." in lockstep.toml, or run one worker'
        )
    if settings.record is not None:
        raise ConfigError(f"--record writes one file: it needs one worker, not {n}")


def worker_node_ids(settings: Settings) -> list[str]:
    """Each worker's node id: `<base>-w<i>`, base the configured node id (`[cluster] node_id` or
    LOCKSTEP_NODE_ID) or, when none is, the hostname (the default's pid is the parent's)."""
    configured = settings.node_id != default_node_id()
    base = settings.node_id if configured else socket.gethostname()
    return [f"{base}-w{i}" for i in range(settings.workers)]


def describe_exit(code: int) -> str:
    """ "exit status 1" or "signal SIGKILL", for the log."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


@dataclass
class _Worker:
    index: int
    node_id: str
    sock: socket.socket
    process: trio.Process | None = None
    ready: trio.Event = field(default_factory=trio.Event)  # its first start reached "ready"


class Supervisor:
    """The running parent: its workers, their restarts and the stop (module docstring)."""

    def __init__(
        self,
        command: Sequence[str],
        sockets: Sequence[socket.socket],
        nodes: Sequence[str],
        *,
        simulator: SimulatorLink | None = None,
        policy: RestartPolicy | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._command = list(command)
        self._simulator = simulator
        self._policy = policy or RestartPolicy()
        self._stop_timeout = stop_timeout
        self._workers = [
            _Worker(i, n, s) for i, (n, s) in enumerate(zip(nodes, sockets, strict=True))
        ]
        self._stopping = False
        self._failed = trio.Event()
        self.failure: str | None = None  # why the supervisor gave up
        self.status = 0  # the parent's exit status
        # Only the parent holds the write end: workers see end-of-file when it is gone.
        self._lifeline_r, self._lifeline_w = os.pipe()
        os.set_inheritable(self._lifeline_r, True)

    @property
    def failed(self) -> trio.Event:
        """Set once the supervisor gave up (`failure` says why)."""
        return self._failed

    async def keep_all(self) -> None:
        """Run every worker, restarting those that die, until cancelled or given up."""
        async with trio.open_nursery() as nursery:
            for worker in self._workers:
                nursery.start_soon(self._keep, worker)

    async def wait_ready(self) -> bool:
        """True once every worker served (its first start); False if the supervisor gave up."""
        for worker in self._workers:
            await worker.ready.wait()
        return self.failure is None

    async def _keep(self, worker: _Worker) -> None:
        """Run `worker` until the stop: restart it when it dies (restarts.py)."""
        while not self._stopping:
            code = await self._run_once(worker)
            if self._stopping:
                return
            how = describe_exit(code)
            decision = self._policy.died(worker.index, trio.current_time(), how)
            if isinstance(decision, GiveUp):
                log.error("worker %d (node %s): %s", worker.index, worker.node_id, decision.reason)
                self._give_up(decision.reason, code if not worker.ready.is_set() else 1)
                return
            log.warning(
                "worker %d (node %s) died (%s); restarting it in %.1f s",
                worker.index,
                worker.node_id,
                how,
                decision.delay,
            )
            await trio.sleep(decision.delay)

    async def _run_once(self, worker: _Worker) -> int:
        """Start the worker, note when it is ready, return its exit status when it ends."""
        ready_r, ready_w = os.pipe()
        try:
            link = WorkerLink(
                index=worker.index,
                listen_fd=worker.sock.fileno(),
                ready_fd=ready_w,
                lifeline_fd=self._lifeline_r,
                simulator=self._simulator,
            )
            env = {**os.environ, WORKER_ENV: link.encode(), NODE_ID_ENV: worker.node_id}
            process = await trio.lowlevel.open_process(
                self._command,
                env=env,
                pass_fds=(worker.sock.fileno(), ready_w, self._lifeline_r),
                start_new_session=True,  # a terminal's Ctrl-C reaches the parent, who forwards
            )
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)  # the worker's copy is the only one left: EOF when it dies
        worker.process = process
        log.info("worker %d (node %s) started: pid %d", worker.index, worker.node_id, process.pid)
        ready = trio.lowlevel.FdStream(ready_r)  # owns ready_r from here
        try:
            line = await _read_line(ready)
        finally:
            await ready.aclose()
        if line == READY:
            self._policy.ready(worker.index)
            worker.ready.set()
        code = await process.wait()
        worker.process = None
        return code

    def _give_up(self, reason: str, status: int) -> None:
        if self.failure is None:
            self.failure = reason
            self.status = status if status > 0 else 1
        self._failed.set()
        for worker in self._workers:
            worker.ready.set()  # `wait_ready` returns (False) instead of waiting forever

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        """Forward `signum` to every worker and wait for them (bounded, then SIGKILL)."""
        self._stopping = True
        running = [w.process for w in self._workers if w.process is not None]
        for process in running:
            if process.returncode is None:
                process.send_signal(signum)
        with trio.move_on_after(self._stop_timeout):
            for process in running:
                await process.wait()
        for process in running:
            if process.returncode is None:
                log.error(
                    "worker pid %d did not stop within %g s: killed",
                    process.pid,
                    self._stop_timeout,
                )
                process.kill()
        with trio.CancelScope(shield=True):
            for process in running:
                await process.wait()
        for process in running:
            if process.returncode not in (0, -signum) and self.status == 0:
                self.status = 1  # a worker that failed its drain fails the stop

    def kill_all(self) -> None:
        """Last resort on an error: no worker outlives the supervisor."""
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.kill()

    def close(self) -> None:
        """Drop the lifeline (workers still running stop on their own) and the sockets."""
        for fd in (self._lifeline_r, self._lifeline_w):
            with suppress(OSError):
                os.close(fd)
        for worker in self._workers:
            worker.sock.close()


async def _read_line(stream: trio.lowlevel.FdStream) -> bytes:
    """The readiness line, or b"" when the worker closed the pipe (died) before writing it."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(64)
        if not chunk:
            return b""
        data += chunk
    return data


async def supervise(settings: Settings, command: Sequence[str]) -> int:
    """Run `settings.workers` workers of `command` (`lockstep serve` with the user's flags) until
    SIGINT/SIGTERM; the exit status. Start-up failures raise, as `open_server`'s do."""
    check_workers(settings)
    check_state_dir(settings.state_dir)
    settings = ensure_keys(settings)  # once, here: workers read them from the state dir
    nodes = worker_node_ids(settings)
    try:
        sockets = listening_sockets(settings.host, settings.port, settings.workers)
    except OSError as exc:
        address = bind_address(settings.host, settings.port)
        raise listen_failure("the HTTP API", address, exc, hint="choose one with --port") from None
    port = int(sockets[0].getsockname()[1])
    api_base = f"http://{bind_address(settings.host, port)}/api"
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncExitStack() as stack:
            for sock in sockets:
                stack.callback(sock.close)  # closed last (closing twice is harmless)
            sim: Any = None
            if settings.credentials is None:
                _, sim = await stack.enter_async_context(open_simulator(settings))
            supervisor = Supervisor(command, sockets, nodes, simulator=_link_of(sim))
            stack.callback(supervisor.close)
            try:
                return await _supervised(supervisor, settings, api_base, sim, nodes, signals)
            except BaseException:
                supervisor.kill_all()
                raise


async def _supervised(
    supervisor: Supervisor,
    settings: Settings,
    api_base: str,
    sim: Any,
    nodes: Sequence[str],
    signals: Any,
) -> int:
    """Start, announce, wait for a signal or a failure, stop; the exit status."""
    received: list[int] = []
    async with trio.open_nursery() as nursery:

        async def until_signal() -> None:
            async for signum in signals:
                received.append(signum)
                break
            nursery.cancel_scope.cancel()

        async def until_failed() -> None:
            await supervisor.failed.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_signal)
        nursery.start_soon(until_failed)
        nursery.start_soon(supervisor.keep_all)
        if await supervisor.wait_ready():
            if sim is not None:
                # The simulated iPhones register once, through the shared port: whichever worker
                # answers stores them in the one database.
                await sim.attach(api_base, settings.device_keys[0])
            control = sim.control_url if sim is not None else None
            banner = serving_banner(
                api_base, settings, simulated=sim is not None, control=control, nodes=nodes
            )
            print(banner, flush=True)
    if received:
        print(f"stopping: {len(nodes)} workers draining pushes", flush=True)
    await supervisor.stop(received[0] if received else signal.SIGTERM)
    if supervisor.failure is not None:
        print(f"lockstep serve: {supervisor.failure}; stopped", file=sys.stderr, flush=True)
    return supervisor.status


def _link_of(sim: Any) -> SimulatorLink | None:
    """What a worker needs to push to the supervisor's simulator."""
    if sim is None:
        return None
    return SimulatorLink(
        host=sim.host,
        port=sim.port,
        ca_file=str(sim.ca_file),
        key_path=str(sim.key_path),
        key_id=sim.key_id,
        team_id=sim.team_id,
        bundle_id=sim.bundle_id,
        control_url=sim.control_url,
    )
