"""The fake APNs server's trio shell: sockets, TLS, timing and graceful drain.

Each accepted connection runs one `ServerConnection`: over TLS it first completes the handshake
and reads the client certificate, if one was presented (certificate auth, apns.md §9), then a
reader loop feeds the sans-IO `ApnsServerProtocol`, with answers decided by the shared `FakeApns`.
Answers the fault plan delays run in their own tasks; every write goes through one lock so frames
never interleave. On shutdown every connection sends GOAWAY `{"reason":"Shutdown"}`, answers what
it already received, then closes (apns.md §4); a deadline bounds the drain. A connection that
receives nothing from its client (a PING counts) for `SimulatorConfig.idle_timeout` seconds gets
GOAWAY `{"reason":"IdleTimeout"}` and is closed after the same drain.

Each `ApnsServer` serves one APNs environment (`sandbox` or `production`, apns.md §1); a simulator
with both runs two servers over one `FakeApns`.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from engine.apns.reasons import Reason
from simulator.apns import Answer, ConnectionState, FakeApns
from simulator.clientcert import read_client_certificate
from simulator.profile import SANDBOX
from simulator.protocol import ApnsServerProtocol, ConnectionEnded, RequestReady
from simulator.validation import ClientCertificate

log = logging.getLogger("lockstep.simulator")

_READ_SIZE = 65536
_IO_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


class _Dropped(Exception):
    """The fault plan asked to drop the connection mid-stream."""


class ServerConnection:
    """One client connection to the fake APNs."""

    # Set by `_open`, once the TLS handshake has told whether a client certificate was presented.
    state: ConnectionState
    proto: ApnsServerProtocol

    def __init__(
        self,
        apns: FakeApns,
        stream: trio.abc.Stream,
        shutdown: trio.Event,
        *,
        environment: str = SANDBOX,
    ) -> None:
        self.apns = apns
        self.stream = stream
        self.shutdown = shutdown
        self.environment = environment
        self.name = "connection (handshake)"
        self._send_lock = trio.Lock()
        self._scope = trio.CancelScope()
        self._idle = trio.CancelScope()  # its deadline: when the connection counts as idle

    async def run(self) -> None:
        """Serve the connection until the client leaves, a fault drops it, or it drains."""
        idle = self.apns.config.idle_timeout
        try:
            with self._scope:
                # The handshake counts as idle time too: a client that never finishes it is
                # closed after the same timeout.
                with trio.move_on_after(math.inf if idle is None else idle) as handshake:
                    certificate = await self._handshake()
                if handshake.cancelled_caught:
                    return
                self._open(certificate)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_shutdown)
                    if idle is not None:
                        nursery.start_soon(self._watch_idle)
                    self.proto.initiate()
                    await self._flush()
                    await self._read_loop(nursery)
                    nursery.cancel_scope.cancel()
        except* _Dropped:
            log.debug("%s dropped by the fault plan", self.name)
        except* _IO_ERRORS as group:
            log.debug("%s ended: %r", self.name, group.exceptions[0])
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _handshake(self) -> ClientCertificate | None:
        """Complete TLS (when it is TLS) and read the client certificate, if one was presented.

        The server context verifies it against the simulator's CA (`certs.server_ssl_context`), so
        what arrives here was issued by the simulator; a client with no certificate does token auth.
        """
        if not isinstance(self.stream, trio.SSLStream):
            return None
        await self.stream.do_handshake()
        der = self.stream.getpeercert(binary_form=True)
        if der is None:
            return None
        try:
            return read_client_certificate(der)
        except ValueError:  # OpenSSL took it, cryptography cannot read it: it names nothing
            return ClientCertificate(None, frozenset(), frozenset())

    def _open(self, certificate: ClientCertificate | None) -> None:
        self.state = self.apns.open_connection(
            environment=self.environment, certificate=certificate
        )
        self.proto = ApnsServerProtocol(initial_max_streams=self.state.max_streams)
        self.name = f"connection {self.state.index}"
        self._touch()

    def _touch(self) -> None:
        """The client was heard from: the idle time starts again."""
        idle = self.apns.config.idle_timeout
        if idle is not None:
            self._idle.deadline = trio.current_time() + idle

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            data = await self.stream.receive_some(_READ_SIZE)
            if not data:
                return
            self._touch()  # any frame is activity, a PING included
            for event in self.proto.receive_data(data):
                if isinstance(event, RequestReady):
                    self._on_request(event, nursery)
                elif isinstance(event, ConnectionEnded) and event.error:
                    log.debug("%s: %s", self.name, event.error)
            await self._flush()
            if self.proto.closed or self.proto.drained:
                return

    def _on_request(self, event: RequestReady, nursery: trio.Nursery) -> None:
        answer = self.apns.handle(self.state, event.request)
        if answer.drop_connection:
            raise _Dropped
        if answer.latency > 0:
            nursery.start_soon(self._answer_later, event.request.stream_id, answer)
        else:
            self._apply(event.request.stream_id, answer)

    def _apply(self, stream_id: int, answer: Answer) -> None:
        if answer.reset:
            self.proto.reset(stream_id)
        else:
            self.proto.respond(stream_id, answer.status, answer.apns_id, answer.body)
        self.proto.set_max_streams(self.state.max_streams)
        if answer.goaway is not None:
            self.proto.goaway(answer.goaway)

    async def _answer_later(self, stream_id: int, answer: Answer) -> None:
        await trio.sleep(answer.latency)
        self._apply(stream_id, answer)
        await self._flush()
        self._finish_if_drained()

    async def _watch_shutdown(self) -> None:
        await self.shutdown.wait()
        self.proto.goaway(Reason.SHUTDOWN)
        await self._flush()
        self._finish_if_drained()

    async def _watch_idle(self) -> None:
        """GOAWAY `IdleTimeout` once the client has sent nothing for the idle time (apns.md §4).

        The read loop pushes the scope's deadline on with every read, so this wakes only once.
        """
        with self._idle:
            await trio.sleep_forever()
        log.debug("%s idle: GOAWAY IdleTimeout", self.name)
        self.proto.goaway(Reason.IDLE_TIMEOUT)
        await self._flush()
        self._finish_if_drained()

    def _finish_if_drained(self) -> None:
        if self.proto.drained or self.proto.closed:
            self._scope.cancel()

    async def _flush(self) -> None:
        # One writer at a time, so frames from delayed answers never interleave (pattern 6).
        async with self._send_lock:
            data = self.proto.data_to_send()
            if data:
                await self.stream.send_all(data)


class ApnsServer:
    """Accepts connections for a `FakeApns` and shuts them down gracefully."""

    def __init__(
        self,
        apns: FakeApns,
        *,
        ssl_context: ssl.SSLContext | None = None,
        environment: str = SANDBOX,
    ) -> None:
        self.apns = apns
        self.ssl_context = ssl_context
        self.environment = environment
        """The APNs environment this listener serves (`sandbox` or `production`)."""
        self.shutdown = trio.Event()
        self._active = 0
        self._idle = trio.Event()
        self._idle.set()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (plain or TLS stream); usable with a memory stream in tests."""
        if self.shutdown.is_set():
            await trio.aclose_forcefully(stream)
            return
        self._active += 1
        self._idle = trio.Event() if self._active == 1 else self._idle
        try:
            connection = ServerConnection(
                self.apns, stream, self.shutdown, environment=self.environment
            )
            await connection.run()
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on `host:port` (0 picks a free port, reported through `task_status`)."""
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]
        tcp = await trio.open_tcp_listeners(port, host=host)
        bound = tcp[0].socket.getsockname()[1]
        if self.ssl_context is not None:
            listeners = [trio.SSLListener(t, self.ssl_context, https_compatible=True) for t in tcp]
        else:
            listeners = tcp
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                serve: Any = partial(
                    trio.serve_listeners,  # type: ignore[misc]
                    self.handle,
                    listeners,
                    handler_nursery=connections,
                )
                await accepting.start(serve)
                task_status.started(bound)
                await self.shutdown.wait()
                accepting.cancel_scope.cancel()  # stop accepting; live connections drain on
            for listener in listeners:
                await listener.aclose()

    async def drain(self, deadline: float = 5.0) -> bool:
        """Send GOAWAY everywhere and wait (at most `deadline` s) for connections to finish."""
        self.shutdown.set()
        with trio.move_on_after(deadline if math.isfinite(deadline) else 3600.0):
            await self._idle.wait()
            return True
        return False
