"""Re-issuing a traffic file against a server, then checking what the simulated iPhones show.

`replay_traffic(traffic, options)`:
1. against `options.target` (a running server; `options.control` is its simulator's control API,
   needed for the final-state check), or by default a fresh in-process server + simulator
   (`engine.server.serve.open_server`, simulate mode, a temporary state directory, free ports, the
   traffic file's devices or `options.devices` plain ones);
2. issues the calls open-loop: call *i* is due `t_i / speed` seconds after the start, whatever
   the earlier calls are doing, over a pool of keep-alive connections. Only the calls of one lane
   (one stream, or one activity by id) wait for each other, so that the server sees them in the
   recorded order; how late a call went out is reported as lag. Recorded activity ids in update /
   end bodies are replaced by the ids this run's starts were given;
3. waits, bounded, for deliveries to settle (the engine paces pushes to one per second per
   activity, latest wins): it polls the control API until every expectation holds, or until the
   simulator has accepted no push for `quiet_period` seconds, or `settle_timeout`;
4. reports latency percentiles, calls/s, errors by status, coalescing (API calls against pushes
   the simulator accepted) and every final-state mismatch (`bench.replay.check`).
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from bench.replay.check import (
    Expectation,
    LatencySummary,
    Mismatch,
    check_final,
    expectations,
    recipients,
    resolve_ids,
    summarize,
)
from bench.replay.http import HttpError, HttpPool
from bench.traffic.format import Call, Route, Traffic, lane_of

__all__ = ["CallResult", "ReplayOptions", "ReplayReport", "replay_traffic"]

_POLL = 0.25


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay (see `lockstep replay --help`)."""

    speed: float = 1.0  # recorded spacing divided by this
    target: str | None = None  # a running server's URL (origin or API base); None: in-process
    key: str | None = field(default=None, repr=False)  # API key for `target`
    control: str | None = None  # the target's simulator control API (final-state check)
    connections: int = 16
    devices: int = 3  # plain simulated iPhones when the file names none (in-process only)
    settle_timeout: float = 30.0
    quiet_period: float = 3.0
    request_timeout: float = 30.0
    state_dir: Path | None = None  # in-process server state (default: a temporary directory)
    record_pushes: Path | None = None  # in-process: record the simulator's pushes here


@dataclass(frozen=True, slots=True)
class CallResult:
    """What happened to one replayed call."""

    index: int
    status: int  # 0: no answer
    latency: float  # seconds from sending to the complete answer
    lag: float  # seconds the call went out after its due time
    activity_id: str | None = None  # the answer's activity_id
    skipped: bool = False  # answered `noop` / `ignored`: nothing to push
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of one replay."""

    traffic: str
    target: str
    speed: float
    calls: int
    duration: float  # seconds from the first call out to the last answer in
    latency: LatencySummary
    max_lag: float
    errors: Mapping[str, int]  # by status ("no answer" when none came)
    error_samples: tuple[str, ...]
    pushes: int | None  # pushes the simulator accepted during the replay
    wanted: int | None  # pushes the calls asked for (call x recipient, noop calls excluded)
    devices: int | None
    checked: int | None  # expectations checked; None: no control API, no check
    mismatches: tuple[Mismatch, ...]
    settle: float  # seconds spent waiting for deliveries after the last answer
    expected: Mapping[str, Expectation] = field(default_factory=dict, repr=False)
    resolved: Mapping[str, str] = field(default_factory=dict, repr=False)
    final_devices: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """No mismatch and no failed call."""
        return not self.mismatches and not self.errors

    @property
    def calls_per_second(self) -> float:
        """Achieved call rate."""
        return self.calls / self.duration if self.duration > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (one line of `lockstep replay --json`)."""
        lat = self.latency
        return {
            "traffic": self.traffic,
            "target": self.target,
            "speed": self.speed,
            "calls": self.calls,
            "duration_s": round(self.duration, 3),
            "calls_per_s": round(self.calls_per_second, 1),
            "latency_ms": {
                name: round(getattr(lat, name) * 1000, 2) for name in ("p50", "p90", "p99", "max")
            },
            "max_lag_ms": round(self.max_lag * 1000, 2),
            "errors": dict(self.errors),
            "pushes": self.pushes,
            "pushes_wanted": self.wanted,
            "devices": self.devices,
            "checked": self.checked,
            "mismatches": [str(m) for m in self.mismatches],
            "settle_s": round(self.settle, 3),
        }


@dataclass(frozen=True, slots=True)
class _Env:
    """Where the calls go."""

    label: str
    origin: str  # http://host:port
    prefix: str  # put before the recorded /api/... paths
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    control: str | None


def _answer(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _Runner:
    """Issues the calls on schedule (see the module docstring, step 2)."""

    def __init__(
        self,
        traffic: Traffic,
        env: _Env,
        pool: HttpPool,
        speed: float,
        on_result: Callable[[CallResult], None] | None,
    ) -> None:
        self.traffic, self.env, self.pool, self.speed = traffic, env, pool, speed
        self.on_result = on_result
        self.id_map: dict[str, str] = {}
        self.results: list[CallResult | None] = [None] * len(traffic.calls)

    async def run(self) -> None:
        start = trio.current_time()
        last: dict[str, trio.Event] = {}
        async with trio.open_nursery() as nursery:
            for call in self.traffic.calls:
                due = start + call.t / self.speed
                await trio.sleep_until(due)
                lane, done = lane_of(call), trio.Event()
                nursery.start_soon(self._issue, call, due, last.get(lane), done)
                last[lane] = done

    def _body(self, call: Call) -> bytes:
        if call.body is None:
            return b""
        body = call.body
        if call.route in (Route.UPDATE, Route.END):
            old = call.body_activity_id()
            if old is not None and old in self.id_map:
                body = {**body, "activity_id": self.id_map[old]}
        return json.dumps(body, separators=(",", ":")).encode()

    async def _issue(
        self, call: Call, due: float, before: trio.Event | None, done: trio.Event
    ) -> None:
        try:
            if before is not None:
                await before.wait()
            body = self._body(call)
            sent = trio.current_time()
            try:
                reply = await self.pool.request(call.method, self.env.prefix + call.path, body)
            except HttpError as exc:
                result = CallResult(
                    call.index, 0, trio.current_time() - sent, sent - due, error=str(exc)
                )
            else:
                answer = _answer(reply.body)
                new_id = answer.get("activity_id")
                new_id = new_id if isinstance(new_id, str) else None
                ok = 200 <= reply.status < 300
                if ok and new_id and call.activity_id:
                    self.id_map[call.activity_id] = new_id
                result = CallResult(
                    call.index,
                    reply.status,
                    trio.current_time() - sent,
                    sent - due,
                    activity_id=new_id if ok else None,
                    skipped=answer.get("operation") == "noop" or answer.get("ignored") is True,
                    error=None
                    if ok
                    else f"{call.method} {call.path}: {reply.status} "
                    f"{answer.get('message', reply.body[:200])!r}",
                )
            self.results[call.index] = result
            if self.on_result is not None:
                self.on_result(result)
        finally:
            done.set()


def _target_parts(url: str) -> tuple[str, str]:
    """(origin, path prefix) of a server URL given as its origin or its API base."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.netloc:
        raise ValueError(f"--target must be an http:// URL, got {url!r}")
    prefix = parts.path.rstrip("/").removesuffix("/api")
    return f"http://{parts.netloc}", prefix


@asynccontextmanager
async def _fresh_server(traffic: Traffic, options: ReplayOptions) -> AsyncIterator[_Env]:
    """A new in-process server + simulator with the traffic's devices, for one replay."""
    from engine.server.serve import open_server
    from engine.server.settings import Settings, SimulateSettings
    from simulator.record import PushRecorder

    api_key, device_key = "lsk_" + secrets.token_urlsafe(24), "lsd_" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lockstep-replay-") as tmp:
        settings = Settings(
            host="127.0.0.1",
            port=0,
            state_dir=options.state_dir or Path(tmp),
            api_keys=(api_key,),
            device_keys=(device_key,),
            simulate=SimulateSettings(
                devices=0 if traffic.devices else options.devices, control_port=0
            ),
        )
        async with open_server(settings) as running:
            sim = running.simulator
            assert sim is not None and sim.control_url is not None
            apns = sim.simulator.apns
            if traffic.devices:
                now = apns.wall_clock()
                for spec in traffic.devices:
                    apns.registry.add_device(spec.name, channels=spec.channels, now=now)
                await sim.attach(running.api_base, device_key)  # register them as apps would
            recorder = (
                PushRecorder.attach(apns, options.record_pushes) if options.record_pushes else None
            )
            try:
                yield _Env(
                    "in-process",
                    f"http://127.0.0.1:{running.port}",
                    "",
                    (("authorization", f"Bearer {api_key}"),),
                    sim.control_url,
                )
            finally:
                if recorder is not None:
                    recorder.close()


@asynccontextmanager
async def _environment(traffic: Traffic, options: ReplayOptions) -> AsyncIterator[_Env]:
    if options.target is None:
        async with _fresh_server(traffic, options) as env:
            yield env
        return
    if not options.key:
        raise ValueError("an API key is needed for --target (--key or LOCKSTEP_API_KEY)")
    origin, prefix = _target_parts(options.target)
    yield _Env(
        options.target,
        origin,
        prefix,
        (("authorization", f"Bearer {options.key}"),),
        options.control.rstrip("/") if options.control else None,
    )


async def _get(pool: HttpPool, path: str) -> dict[str, Any]:
    reply = await pool.request("GET", path)
    if reply.status != 200:
        raise HttpError(f"control API GET {path} answered {reply.status}")
    return _answer(reply.body)


async def _accepted(control: HttpPool | None) -> int | None:
    if control is None:
        return None
    value = (await _get(control, "/info")).get("accepted")
    return value if isinstance(value, int) else None


async def _settle(
    control: HttpPool,
    expected: Mapping[str, Expectation],
    resolved: Mapping[str, str],
    options: ReplayOptions,
) -> tuple[list[Mismatch], list[dict[str, Any]]]:
    """Poll until the expectations hold, deliveries have stopped, or the deadline passes."""
    start = trio.current_time()
    last_count, last_change = -1, start
    while True:
        devices = list((await _get(control, "/devices")).get("devices") or [])
        mismatches = check_final(expected, resolved, devices)
        now = trio.current_time()
        if not mismatches:
            return mismatches, devices
        count = await _accepted(control) or 0
        if count != last_count:
            last_count, last_change = count, now
        if now - last_change >= options.quiet_period or now - start >= options.settle_timeout:
            return mismatches, devices
        await trio.sleep(_POLL)


def _wanted(
    traffic: Traffic,
    results: list[CallResult],
    expected: Mapping[str, Expectation],
    devices: list[dict[str, Any]],
) -> int:
    """Pushes the answered calls asked for: one per recipient device, none for noop calls."""
    total = 0
    for call, result in zip(traffic.calls, results, strict=True):
        if result.ok and not result.skipped:
            exp = expected.get(lane_of(call))
            total += len(recipients(exp.channels if exp else (), devices))
    return total


async def replay_traffic(
    traffic: Traffic,
    options: ReplayOptions | None = None,
    *,
    on_result: Callable[[CallResult], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Replay `traffic` and check the final states (see the module docstring)."""
    options = options or ReplayOptions()
    if not options.speed > 0:
        raise ValueError(f"speed must be > 0, got {options.speed}")
    expected = expectations(traffic.calls)
    async with _environment(traffic, options) as env:
        control = (
            HttpPool(env.control, size=1, timeout=options.request_timeout) if env.control else None
        )
        before = await _accepted(control)
        async with HttpPool(
            env.origin,
            size=options.connections,
            headers=env.headers,
            timeout=options.request_timeout,
        ) as pool:
            runner = _Runner(traffic, env, pool, options.speed, on_result)
            began = trio.current_time()
            await runner.run()
            duration = trio.current_time() - began
        results = [r for r in runner.results if r is not None]
        resolved = resolve_ids(
            (c, r.activity_id) for c, r in zip(traffic.calls, results, strict=True) if r.ok
        )
        if on_phase is not None:
            on_phase("settling")
        mismatches: list[Mismatch] = []
        devices: list[dict[str, Any]] = []
        settled_at = trio.current_time()
        if control is not None:
            mismatches, devices = await _settle(control, expected, resolved, options)
        settle = trio.current_time() - settled_at
        after = await _accepted(control)
        if control is not None:
            await control.aclose()
    errors = Counter(str(r.status) if r.status else "no answer" for r in results if not r.ok)
    return ReplayReport(
        traffic=traffic.name,
        target=env.label,
        speed=options.speed,
        calls=len(results),
        duration=duration,
        latency=summarize(r.latency for r in results if r.status),
        max_lag=max((r.lag for r in results), default=0.0),
        errors=dict(errors),
        error_samples=tuple(r.error for r in results if r.error)[:5],
        pushes=after - before if after is not None and before is not None else None,
        wanted=_wanted(traffic, results, expected, devices) if devices else None,
        devices=len(devices) if devices else None,
        checked=len(expected) if control is not None else None,
        mismatches=tuple(mismatches),
        settle=settle,
        expected=expected,
        resolved=resolved,
        final_devices=tuple(devices),
    )
