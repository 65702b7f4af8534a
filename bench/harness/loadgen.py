"""An open-loop HTTP/1.1 load generator (trio + httptools) in its own process.

The parent hands it a list of calls, each with the offset (seconds from the start) at which it is
due. A scheduler releases each call at its due time into one queue; `connections` keep-alive
connections take calls from that queue and send them one at a time each. The schedule never waits
for answers (open loop), so a slow server shows up as latency and as a lower achieved rate, not as
a politely slower generator. Offsets of 0 make a closed loop of `connections` concurrent callers
(used to set streams up).

Per call it records, on `time.monotonic()` (the machine-wide clock the simulator stamps pushes
with): when it was due, when its bytes were handed to the socket, when the answer was complete,
the HTTP status, and — when asked — the `activity_id` of the JSON answer.

Bounded: a run stops at `deadline` seconds after its start whatever happens; calls not answered
by then are reported with status 0 (with their send time when they were on their way, else
0.0), transport failures with status -1.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from bench.harness.core import cpu_seconds, pin
from bench.harness.procs import Child, report_failure, serve_commands

Call = tuple[float, str, str, bytes, bool]
"""(due offset in s, method, path under the API base, JSON body, want the answer's activity_id)."""

LEAD = 0.2  # seconds between receiving a run and its first due call (all connections are open)


@dataclass(frozen=True, slots=True)
class CallResult:
    """What happened to one call (times on `time.monotonic()`; 0.0 when it did not happen)."""

    due: float
    sent: float
    done: float
    status: int
    activity_id: str | None


def gen_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """Generator process: `run` executes one list of calls and returns their results."""
    import trio

    logging.basicConfig(level=logging.ERROR)
    try:
        pinned = pin(core)

        async def main() -> None:
            async def run(calls: list[Call], connections: int, deadline: float) -> dict[str, Any]:
                return await run_calls(
                    opts["api_base"],
                    opts["api_key"],
                    calls,
                    connections=connections,
                    deadline=deadline,
                )

            await serve_commands(conn, {"run": run}, {"pinned": pinned})

        trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


class _Answer:
    """httptools callbacks for one answer at a time: its body chunks, completeness, status and
    whether the connection stays open (read at completion: the parser resets after it)."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.chunks: list[bytes] = []
        self.complete = False
        self.status = 0
        self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.status = int(self.parser.get_status_code())
        self.keep_alive = bool(self.parser.should_keep_alive())


class _Conn:
    """One keep-alive HTTP/1.1 connection (reconnects after the server closes it).

    The request is written as bytes in one send and the answer parsed by httptools (llhttp, in
    C): the generator shares a core with the simulator, so its own cost per call is kept small.
    """

    def __init__(self, host: str, port: int, headers: list[tuple[str, str]]) -> None:
        self._host, self._port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1")
        self._stream: Any = None  # the trio SocketStream that owns the socket
        self._sock: Any = None
        self._parser: Any = None
        self._answer = _Answer()

    async def call(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        import httptools
        import trio

        if self._sock is None:
            self._stream = await trio.open_tcp_stream(self._host, self._port)
            self._sock = self._stream.socket
            self._answer = _Answer()
            self._parser = self._answer.parser = httptools.HttpResponseParser(self._answer)
        sock, answer, parser = self._sock, self._answer, self._parser
        request = b"%s %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (
            method.encode("ascii"),
            target.encode("latin-1"),
            self._head,
            len(body),
            body,
        )
        view = memoryview(request)
        while view:
            view = view[await sock.send(view) :]
        answer.chunks, answer.complete = [], False
        while not answer.complete:
            data = await sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            parser.feed_data(data)  # HttpParserError on a malformed answer
        if not answer.keep_alive:
            await self.close()
        return answer.status, b"".join(answer.chunks)

    async def close(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._sock = self._stream, None, None
            await stream.aclose()


async def run_calls(
    api_base: str, api_key: str, calls: Sequence[Call], *, connections: int, deadline: float
) -> dict[str, Any]:
    """Run `calls` on their schedule (see the module docstring); results in call order."""
    import httptools
    import msgspec
    import trio

    # What one call can run into; counted by type, and the connection is opened afresh.
    failures = (
        OSError,
        ConnectionError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        httptools.HttpParserError,
        httptools.HttpParserUpgrade,  # not a subclass of HttpParserError
    )
    parts = urlsplit(api_base)
    host, port, prefix = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")
    headers = [
        ("host", parts.netloc),
        ("authorization", f"Bearer {api_key}"),
        ("content-type", "application/json"),
    ]
    results: list[CallResult | None] = [None] * len(calls)
    errors: dict[str, int] = {}
    send, receive = trio.open_memory_channel[tuple[int, float]](math.inf)
    decoder = msgspec.json.Decoder()
    cpu0 = cpu_seconds()
    start = time.monotonic() + LEAD

    async def worker() -> None:
        conn = _Conn(host, port, headers)
        try:
            async for index, due in receive:
                _, method, path, body, want_id = calls[index]
                sent = time.monotonic()
                # Until answered: cut off at the deadline after its bytes may have gone out.
                results[index] = CallResult(due, sent, 0.0, 0, None)
                try:
                    status, answer = await conn.call(method, prefix + path, body)
                except failures as exc:
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    await conn.close()
                    results[index] = CallResult(due, sent, time.monotonic(), -1, None)
                    continue
                done = time.monotonic()
                aid = None
                if want_id and status == 200:
                    try:
                        aid = decoder.decode(answer).get("activity_id")
                    except (msgspec.DecodeError, AttributeError):
                        errors["bad answer"] = errors.get("bad answer", 0) + 1
                results[index] = CallResult(due, sent, done, status, aid)
        finally:
            await conn.close()

    async def schedule() -> None:
        async with send:
            index = 0
            while index < len(calls):
                due = start + calls[index][0]
                now = time.monotonic()
                if due > now:
                    await trio.sleep(due - now)
                    now = time.monotonic()
                # Every call due by now goes at once: one wake-up for all of them, not one each.
                while index < len(calls) and start + calls[index][0] <= now:
                    send.send_nowait((index, start + calls[index][0]))
                    index += 1
                await trio.lowlevel.checkpoint()  # the workers run before the next release

    with trio.move_on_after(LEAD + deadline):
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
            nursery.start_soon(schedule)
    return {
        "results": [r if r is not None else CallResult(0.0, 0.0, 0.0, 0, None) for r in results],
        "errors": errors,
        "start": start,
        "cpu_s": cpu_seconds() - cpu0,
    }


class Generator:
    """The parent's handle on a generator process."""

    def __init__(self, child: Child) -> None:
        self._child = child

    @classmethod
    def spawn(cls, core: int | None, api_base: str, api_key: str) -> Generator:
        """Start a generator process for `api_base`, pinned to `core`."""
        child = Child.spawn("generator", gen_main, core, {"api_base": api_base, "api_key": api_key})
        child.ready(60)
        return cls(child)

    def run(self, calls: list[Call], *, connections: int, deadline: float) -> dict[str, Any]:
        """Run `calls`; returns {"results": [CallResult...], "errors", "start", "cpu_s"}."""
        timeout = LEAD + deadline + 60 + len(calls) * 1e-4  # + transfer of the results
        result: dict[str, Any] = self._child.ask(
            "run", timeout=timeout, calls=calls, connections=connections, deadline=deadline
        )
        return result

    def stop(self) -> None:
        """Stop the process."""
        self._child.stop()
