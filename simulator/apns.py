"""The fake APNs's decisions: what to answer to each request, and what it does to the devices.

`FakeApns` is shared by every connection. For each complete request it runs the pure validator
(`simulator.validation`), applies the connection's seeded fault plan (`simulator.faults`), delivers
accepted pushes to the simulated iPhones (`simulator.devices`), records the outcome in a bounded
push log and tells listeners (the `.apns` writer is one). It reads no clock of its own: the wall
time comes from an injected callable, so tests can run hours of token and activity lifetimes in ms.

`ConnectionState` is the per-connection half: the environment of the listener it came in on, the
client certificate it presented (if any), token-auth state, fault sequence and the stream-limit
policy (1 until the first valid token, then `warm_max_streams`; apns.md §4; a connection with a
client certificate is warm from the start, apns.md §9).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.apns import wire
from engine.apns.reasons import Reason, status_of
from simulator.auth import ConnectionAuth, KeyRing
from simulator.budget import PerTokenLimit
from simulator.devices import DeliveryOutcome, DeviceRegistry, TokenReport
from simulator.faults import ConnectionFaults, FaultAction, FaultPlan
from simulator.faults.devices import DeviceEvents
from simulator.profile import SANDBOX
from simulator.protocol import Request
from simulator.validation import (
    ClientCertificate,
    DevicePush,
    IncomingRequest,
    Rejection,
    ValidationConfig,
    validate,
)

WallClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything that shapes the fake APNs's behaviour (ports and folders live in the CLI)."""

    bundle_id: str = "com.example.lockstep"
    team_id: str = "LOCKSTEP01"
    key_id: str = "SIMKEY0001"
    initial_max_streams: int = 1  # apns.md §4: one stream until a valid token is posted
    warm_max_streams: int = 1000  # the value seen on the wire since 2021 (apns.md §4)
    drop_to_one_after_rejection: bool = False  # openradar 27870881 / pushy#732
    accept_der_signatures: bool = False  # apns.md §2: require raw R||S, DER optional
    max_active_activities: int = 5
    push_log_size: int = 10_000
    seed: int = 0
    token_rate_limit: int | None = 100  # pushes per token per window, then 429 (None: no limit)
    token_rate_window: float = 10.0  # seconds
    idle_timeout: float | None = 7200.0
    """Seconds without a frame from the client before GOAWAY `IdleTimeout` (None: never).

    Apple documents the reason but not its trigger (apns.md §4, "Could not confirm" 2); it does
    call a PING after one hour of inactivity acceptable, so a connection must survive an idle
    hour. Two hours leave a client that pings "after an hour" on a coarse timer a whole hour of
    slack, and still close connections a client forgot.
    """
    disabled_key_ids: frozenset[str] = frozenset()
    """Signing keys the account has disabled: their tokens are answered 403 `Forbidden`."""


@dataclass(frozen=True, slots=True)
class PushRecord:
    """One line of the push log: what arrived and how it was answered."""

    seq: int
    at: float
    connection: int
    stream_id: int
    token: str
    status: int
    reason: str | None
    apns_id: str
    event: str | None
    device: str | None
    outcome: str | None
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        """The control API's shape of a push record."""
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(frozen=True, slots=True)
class Answer:
    """What the connection should do with one request."""

    status: int = 200
    apns_id: str = ""
    body: bytes = b""
    reset: bool = False  # answer with RST_STREAM instead of a response (fault plan)
    drop_connection: bool = False  # close the socket without answering (fault plan)
    goaway: Reason | None = None  # after answering, send GOAWAY and drain (fault plan)
    latency: float = 0.0  # seconds to wait before answering (fault plan)


class PushListener(Protocol):
    """Told about every push APNs accepted (the `.apns` writer implements this)."""

    def on_accepted(self, push: DevicePush, device: str | None) -> None:
        """Called once per accepted push, after it was delivered to its device."""


@dataclass(slots=True)
class ConnectionState:
    """Per-connection state kept by the fake APNs."""

    index: int
    auth: ConnectionAuth
    faults: ConnectionFaults
    max_streams: int
    warmed: bool = False
    environment: str = SANDBOX
    """The APNs environment of the listener the connection came in on (apns.md §1)."""
    certificate: ClientCertificate | None = None
    """The client certificate presented at the TLS handshake (None: token auth)."""


@dataclass(slots=True)
class Counters:
    """Totals for the control API."""

    requests: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    connections: int = 0


class FakeApns:
    """The shared brain of the fake APNs server."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        keyring: KeyRing,
        registry: DeviceRegistry,
        plan: FaultPlan | None = None,
        wall_clock: WallClock = time.time,
    ) -> None:
        self.config = config
        self.keyring = keyring
        self.registry = registry
        self.plan = plan or FaultPlan()
        self.wall_clock = wall_clock
        for key_id in sorted(config.disabled_key_ids):
            if key_id not in keyring:
                raise ValueError(f"cannot disable key {key_id!r}: the account has no such key")
            keyring.disable(key_id)
        self.validation = ValidationConfig(bundle_ids=frozenset({config.bundle_id}))
        self.log: deque[PushRecord] = deque(maxlen=config.push_log_size)
        self.listeners: list[PushListener] = []
        self.token_sinks: list[Callable[[TokenReport], None]] = []
        # Told about every device the control API creates (its snapshot), so an embedding
        # server learns it as it learns the devices it started with (simulator/embed.py).
        self.device_sinks: list[Callable[[dict[str, Any]], None]] = []
        self.counters = Counters()
        self.token_limit = (
            None
            if config.token_rate_limit is None
            else PerTokenLimit(config.token_rate_limit, config.token_rate_window)
        )
        self._seq = itertools.count(1)
        self._conn_index = itertools.count()
        self._rng = random.Random(f"apns-id:{config.seed}")
        self._device_events = DeviceEvents(self.plan) if self.plan.has_device_events else None

    def open_connection(
        self, *, environment: str = SANDBOX, certificate: ClientCertificate | None = None
    ) -> ConnectionState:
        """State for a new connection to the `environment` listener, which presented
        `certificate` (None: none). Its fault sequence depends only on the seed and its index."""
        index = next(self._conn_index)
        self.counters.connections += 1
        auth = ConnectionAuth(self.keyring, accept_der=self.config.accept_der_signatures)
        state = ConnectionState(
            index,
            auth,
            self.plan.for_connection(index),
            self.config.initial_max_streams,
            environment=environment,
            certificate=certificate,
        )
        if certificate is not None:
            # Observed in 2016: with a certificate, the full stream limit applies at once (§9).
            state.warmed = True
            state.max_streams = self.config.warm_max_streams
        return state

    def _new_apns_id(self) -> str:
        # APNs-generated ids come back upper-case (apns.md §1, observed).
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4)).upper()

    def tick(self, now: float) -> None:
        """Bring time to `now` (due transitions, held updates, plan outages that are over) and
        hand on the token reports that produced; the runner calls it about once a second."""
        self.registry.advance(now)
        self.forward_token_reports()

    def handle(self, conn: ConnectionState, request: Request) -> Answer:
        """Decide the answer to one complete request (validation, faults, delivery, logging)."""
        now = self.wall_clock()
        self.counters.requests += 1
        self.tick(now)
        token = request.path.rsplit("/", 1)[-1]
        action = conn.faults.next(token)
        if action.drop_connection or action.reset:
            self._count_fault("drop" if action.drop_connection else "reset")
            return Answer(reset=action.reset, drop_connection=action.drop_connection)
        verdict = validate(
            IncomingRequest(
                request.method, request.path, request.headers, request.body, request.body_size
            ),
            auth=conn.auth,
            config=self.validation,
            directory=self.registry,
            now=now,
            environment=conn.environment,
            certificate=conn.certificate,
        )
        if verdict.auth_ok and not conn.warmed:
            conn.warmed = True
            conn.max_streams = self.config.warm_max_streams
        # APNs echoes the request's apns-id, or generates one when absent or malformed (apns.md §1).
        bad_id = verdict.rejection is not None and verdict.rejection.reason is Reason.BAD_MESSAGE_ID
        apns_id = None if bad_id else _header(request, wire.H_ID)
        apns_id = apns_id or self._new_apns_id()
        if verdict.push is not None and action.reject is not None:
            self._count_fault(action.reject.value)
            verdict_rejection: Rejection | None = Rejection(action.reject, status_of(action.reject))
            push: DevicePush | None = None
        elif (
            verdict.push is not None
            and self.token_limit is not None
            and not self.token_limit.take(verdict.push.token, now)
        ):
            # Too many pushes to one device token in a row (apns.md §3): 429, nothing delivered.
            verdict_rejection, push = Rejection.of(Reason.TOO_MANY_REQUESTS), None
        else:
            verdict_rejection, push = verdict.rejection, verdict.push
        answer = self._answer(conn, request, push, verdict_rejection, apns_id, now)
        return self._with_faults(conn, answer, action, push, now)

    def _answer(
        self,
        conn: ConnectionState,
        request: Request,
        push: DevicePush | None,
        rejection: Rejection | None,
        apns_id: str,
        now: float,
    ) -> Answer:
        outcome: DeliveryOutcome | None = None
        if push is not None:
            outcome = self.registry.deliver(
                push.token,
                push.payload,
                now=now,
                priority=push.priority,
                apns_id=apns_id,
                push_type=push.push_type,
                expiration=push.expiration,
                collapse_id=push.collapse_id,
            )
            self.counters.accepted += 1
            for listener in self.listeners:
                listener.on_accepted(push, outcome.device)
            if self._device_events is not None and outcome.device:
                self._device_event(outcome, now)
            self.forward_token_reports()
            self._stream_policy(conn, ok=True)
            status, body, reason = 200, b"", None
        else:
            assert rejection is not None
            status, body, reason = rejection.status, rejection.body(), rejection.reason.value
            self.counters.rejected[reason] = self.counters.rejected.get(reason, 0) + 1
            self._stream_policy(conn, ok=False)
        self._record(conn, request, status, reason, apns_id, push, outcome, now)
        return Answer(status=status, apns_id=apns_id, body=body)

    def _device_event(self, outcome: DeliveryOutcome, now: float) -> None:
        """Apply the plan's device events after a delivery (simulator/faults/devices.py)."""
        assert self._device_events is not None
        event = self._device_events.next()
        if not event.any:
            return
        name, activity = outcome.device, outcome.activity_id
        if activity is not None and event.rotate:
            with contextlib.suppress(LookupError):  # ended meanwhile, or waiting for Allow
                self.registry.rotate(name, activity, now=now)
                self._count_fault("rotate")
        if activity is not None and event.dismiss:
            with contextlib.suppress(LookupError):  # already dismissed
                self.registry.dismiss(name, activity, now=now)
                self._count_fault("dismiss")
        if event.offline_for is not None and self.registry.devices[name].online:
            self.registry.take_offline(name, now=now, until=now + event.offline_for)
            self._count_fault("offline")

    def forward_token_reports(self) -> None:
        """Hand queued update-token reports to the sinks (after a push, a tick, an action).

        Drained on every push so the registry's queue never fills; with no sink yet they wait
        there (bounded: past `report_limit` the oldest are dropped and counted), so a backend
        attached later still hears of the activities restored from disk.
        """
        if not self.token_sinks:
            return
        for report in self.registry.token_reports():
            for sink in self.token_sinks:
                sink(report)

    def _stream_policy(self, conn: ConnectionState, *, ok: bool) -> None:
        # Observed: MAX_CONCURRENT_STREAMS drops to 1 after a rejection and comes back after the
        # next accepted push (apns.md §4, openradar 27870881). Opt-in.
        if not (self.config.drop_to_one_after_rejection and conn.warmed):
            return
        conn.max_streams = self.config.warm_max_streams if ok else 1

    def _with_faults(
        self,
        conn: ConnectionState,
        answer: Answer,
        action: FaultAction,
        push: DevicePush | None,
        now: float,
    ) -> Answer:
        if action.set_max_streams is not None:
            self._count_fault("limit_swing")
            conn.max_streams = action.set_max_streams
        if action.unregister_token and push is not None:
            self._count_fault("unregister")
            self.registry.unregister(push.token, int(now * 1000))
        if action.goaway is not None:
            self._count_fault("goaway")
        if action.latency or action.goaway is not None:
            return Answer(
                answer.status,
                answer.apns_id,
                answer.body,
                goaway=action.goaway,
                latency=action.latency,
            )
        return answer

    def _count_fault(self, name: str) -> None:
        self.counters.faults[name] = self.counters.faults.get(name, 0) + 1

    def _record(
        self,
        conn: ConnectionState,
        request: Request,
        status: int,
        reason: str | None,
        apns_id: str,
        push: DevicePush | None,
        outcome: DeliveryOutcome | None,
        now: float,
    ) -> None:
        aps = push.payload.get("aps") if push is not None else None
        event = aps.get("event") if isinstance(aps, dict) else None
        self.log.append(
            PushRecord(
                seq=next(self._seq),
                at=now,
                connection=conn.index,
                stream_id=request.stream_id,
                token=request.path.rsplit("/", 1)[-1],
                status=status,
                reason=reason,
                apns_id=apns_id,
                event=event if isinstance(event, str) else None,
                device=outcome.device if outcome else None,
                outcome=outcome.outcome.value if outcome else None,
                detail=outcome.detail if outcome else None,
            )
        )

    def snapshot(self) -> dict[str, Any]:
        """Counters and configuration summary for the control API."""
        c = self.counters
        return {
            "bundle_id": self.config.bundle_id,
            "topic": self.config.bundle_id + wire.LIVE_ACTIVITY_TOPIC_SUFFIX,
            "team_id": self.config.team_id,
            "key_id": self.config.key_id,
            "requests": c.requests,
            "accepted": c.accepted,
            "rejected": dict(c.rejected),
            "faults": dict(c.faults),
            "connections": c.connections,
        }


def _header(request: Request, name: str) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value
    return None
