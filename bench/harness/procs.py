"""Benchmark processes: spawned children that answer commands over a pipe.

Every measured party (engine server, simulator, load generator, scale probe) runs in its own
process so that each can be pinned to a core and its CPU time read on its own. The parent holds
a `Child`; the child runs a trio program that calls `serve_commands` with its handlers:

    parent                                  child (trio)
    child = Child.spawn(main, core, opts)   pin(core); set up; serve_commands(conn, handlers, ready)
    info = child.ready(30)          <----   ("ok", ready)
    child.ask("check", timeout=5, x=1) ->   handlers["check"](x=1)
                                    <----   ("ok", result) | ("error", "TypeName: message")
    child.stop()                    ---->   ("stop", {}) ends serve_commands

Every wait is bounded: a child that dies or stays silent raises `ChildError` in the parent, and
`stop()` terminates a child that does not leave on its own.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

Handler = Callable[..., Awaitable[Any]]
ChildMain = Callable[[Connection, int | None, dict[str, Any]], None]
STOP = "stop"


class ChildError(RuntimeError):
    """A benchmark process failed, died, or did not answer in time."""


class Child:
    """The parent's handle on one spawned benchmark process."""

    def __init__(self, name: str, process: mp.process.BaseProcess, conn: Connection) -> None:
        self.name = name
        self._process = process
        self._conn = conn

    @classmethod
    def spawn(cls, name: str, main: ChildMain, core: int | None, opts: dict[str, Any]) -> Child:
        """Start `main(conn, core, opts)` in a fresh interpreter (spawn: nothing inherited)."""
        ctx = mp.get_context("spawn")
        here, there = ctx.Pipe()
        process = ctx.Process(target=main, args=(there, core, opts), name=name, daemon=True)
        process.start()
        there.close()
        return cls(name, process, here)

    def _receive(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self._conn.poll(0.2):
                try:
                    kind, value = self._conn.recv()
                except EOFError:
                    raise ChildError(f"{self.name} closed its pipe") from None
                if kind == "error":
                    raise ChildError(f"{self.name}: {value}")
                return value
            if not self._process.is_alive() and not self._conn.poll(0):
                raise ChildError(f"{self.name} exited ({self._process.exitcode}) without answering")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} did not answer within {timeout:.0f} s")

    def ready(self, timeout: float) -> Any:
        """Wait for the child's start-up message (what `serve_commands` got as `ready`)."""
        return self._receive(timeout)

    def ask(self, command: str, *, timeout: float, **kwargs: Any) -> Any:
        """Run one command in the child and return its result."""
        try:
            self._conn.send((command, kwargs))
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"{self.name} is gone: {exc}") from None
        return self._receive(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ask the child to leave, wait (bounded), terminate it if needed; its exit code."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send((STOP, {}))
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()
        return self._process.exitcode


async def serve_commands(conn: Connection, handlers: dict[str, Handler], ready: Any) -> None:
    """Child side: report `ready`, then run commands from the parent until "stop"."""
    import trio

    conn.send(("ok", ready))
    while True:
        try:
            command, kwargs = await trio.to_thread.run_sync(conn.recv, abandon_on_cancel=True)
        except EOFError:
            return  # the parent is gone: leave
        if command == STOP:
            return
        handler = handlers.get(command)
        if handler is None:
            conn.send(("error", f"unknown command {command!r}"))
            continue
        try:
            result = await handler(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any handler failure is the parent's answer
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
            continue
        conn.send(("ok", result))


def report_failure(conn: Connection, exc: BaseException) -> None:
    """Child side: tell the parent why start-up failed (it is waiting in `ready`)."""
    with contextlib.suppress(OSError):
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"))
