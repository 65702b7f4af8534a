"""A real Lockstep server (`engine.server.serve.open_server`, simulate mode) in a background thread.

End-to-end tests drive it the way users do, from ordinary blocking code: the official SDK, plain
HTTP, schemathesis. The server runs `trio.run` in a daemon thread on 127.0.0.1 (port 0 for the
API and for the simulator's control API) with keys fixed here, so tests know them.

- `LiveServer.start(settings)` returns once the API answers and the simulated iPhones have
  registered; a failure while starting is raised in the caller's thread.
- `LiveServer.stop()` asks the trio thread (through its trio token) to leave `open_server`, which
  drains the engine and closes the store; if that does not finish in time the server is
  cancelled outright.
- Every server carries a hard deadline (`trio.fail_after` in its thread): a hung server closes
  its sockets and ends the blocked clients rather than hang the suite.
- `server_fixture(...)` makes a module-scoped pytest fixture of it.

The control API helpers (`devices`, `shown`, `wait_until`) read the simulated lock screens.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from engine.server.serve import Running, open_server
from engine.server.settings import Settings, SimulateSettings
from engine.server.webhooks.config import WebhookConfig

__all__ = [
    "API_KEY",
    "DEVICE_KEY",
    "LiveServer",
    "http_json",
    "http_raw",
    "server_fixture",
    "simulate_settings",
    "wait_until",
]

API_KEY = "lsk_e2e_send_key_0123456789abcdef"
DEVICE_KEY = "lsd_e2e_device_key_0123456789abcdef"

START_TIMEOUT = 30.0  # starting: store, simulator (TLS certificates), engine, HTTP, device sign-up
STOP_TIMEOUT = 20.0  # leaving open_server: drain the engine, GOAWAY the simulator, close the store
HTTP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05

T = TypeVar("T")


def simulate_settings(
    state_dir: Path,
    *,
    devices: int = 2,
    seed: int = 0,
    profile: dict[str, Any] | None = None,
    webhooks: tuple[WebhookConfig, ...] = (),
) -> Settings:
    """Settings for a simulate-mode server on free ports with the known test keys."""
    return Settings(
        webhooks=webhooks,
        host="127.0.0.1",
        port=0,
        state_dir=state_dir,
        api_keys=(API_KEY,),
        device_keys=(DEVICE_KEY,),
        simulate=SimulateSettings(
            devices=devices, control_port=0, seed=seed, profile=dict(profile or {})
        ),
    )


@dataclass
class LiveServer:
    """A server running in its own thread; see the module docstring."""

    settings: Settings
    hard_timeout: float
    running: Running | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)
    _error: BaseException | None = field(default=None, repr=False)
    _token: trio.lowlevel.TrioToken | None = field(default=None, repr=False)
    _stop: trio.Event | None = field(default=None, repr=False)
    _scope: trio.CancelScope | None = field(default=None, repr=False)

    @classmethod
    def start(cls, settings: Settings, *, hard_timeout: float = 180.0) -> LiveServer:
        """Start a server and wait until it serves (raises what made it fail to start)."""
        server = cls(settings, hard_timeout)
        server._thread = threading.Thread(target=server._main, name="lockstep-e2e", daemon=True)
        server._thread.start()
        if not server._ready.wait(START_TIMEOUT):
            server.stop()
            raise TimeoutError(f"the server did not start within {START_TIMEOUT} s")
        if server._error is not None:
            server._thread.join(STOP_TIMEOUT)
            raise RuntimeError("the server failed to start") from server._error
        return server

    # -- where it listens --------------------------------------------------------------------------
    @property
    def api_base(self) -> str:
        """`http://127.0.0.1:<port>/api`."""
        return self._running.api_base

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>` (for /healthz, /metrics and schemathesis)."""
        return self.api_base.removesuffix("/api")

    @property
    def control_url(self) -> str:
        """The simulator's control API."""
        sim = self._running.simulator
        assert sim is not None and sim.control_url is not None
        return str(sim.control_url)

    @property
    def _running(self) -> Running:
        assert self.running is not None, "the server is not running"
        return self.running

    # -- the control API ---------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        """Every simulated iPhone as the control API shows it."""
        status, body = http_json("GET", self.control_url + "/devices")
        assert status == 200, (status, body)
        return list(body["devices"])

    def shown(self, activity_id: str) -> dict[str, dict[str, Any]]:
        """Per device name, the device's Live Activity for the server's `activity_id`."""
        out: dict[str, dict[str, Any]] = {}
        for device in self.devices():
            for act in device["activities"]:
                if act["attributes"].get("activity_id") == activity_id:
                    out[device["name"]] = act
        return out

    # -- life cycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Leave `open_server` (draining), or cancel it when that takes too long; then raise
        what ended the server if it failed (e.g. it hit its hard deadline)."""
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            self._call_soon(lambda: self._stop.set() if self._stop is not None else None)
            thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            self._call_soon(lambda: self._scope.cancel() if self._scope is not None else None)
            thread.join(STOP_TIMEOUT)
        assert not thread.is_alive(), "the server thread did not stop"
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("the server failed while running") from error

    def _call_soon(self, fn: Callable[[], object]) -> None:
        if self._token is None:
            return
        # RunFinishedError: it ended on its own meanwhile (e.g. at its hard deadline).
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(fn, trio_token=self._token)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread, never lost here
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        with trio.CancelScope() as scope, trio.fail_after(self.hard_timeout):
            self._scope = scope
            async with open_server(self.settings) as running:
                self.running = running
                self._ready.set()
                await self._stop.wait()


def server_fixture(
    *,
    seed: int,
    devices: int = 2,
    hard_timeout: float = 180.0,
    profile: dict[str, Any] | None = None,
    webhooks: tuple[WebhookConfig, ...] = (),
) -> Any:
    """A module-scoped pytest fixture yielding a started `LiveServer` (stopped at teardown);
    `profile`: the simulated iPhones' profile (simulator/profile.py fields); `webhooks`: the
    inbound webhooks it serves."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
        state_dir = tmp_path_factory.mktemp("lockstep")
        live = LiveServer.start(
            simulate_settings(
                state_dir, devices=devices, seed=seed, profile=profile, webhooks=webhooks
            ),
            hard_timeout=hard_timeout,
        )
        try:
            yield live
        finally:
            live.stop()

    return server


def http_json(
    method: str, url: str, body: Any = None, *, key: str | None = None
) -> tuple[int, Any]:
    """One blocking JSON request: (status, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            status, raw = err.code, err.read()
    return status, json.loads(raw) if raw else None


def http_raw(method: str, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """One blocking request with a raw body and exactly `headers`: (status, parsed JSON body)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            status, raw = err.code, err.read()
    return status, json.loads(raw) if raw else None


def wait_until(
    observe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
) -> T:
    """Poll `observe()` until `done(value)`; fail with the last value after `timeout` seconds.

    The server delivers asynchronously (APNs answers, pacing at 1 push/s per activity, token
    reports), and the simulated devices are only observable through the control API, so a
    bounded poll is the way to see the end state from another process's point of view.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = observe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s; last seen: {value!r}")
        time.sleep(POLL_INTERVAL)
