"""Simulate mode: the embedded simulator, attached to a recording device API on 127.0.0.1.

A real engine (`open_engine`, TLS with the embedded CA) sends a push-to-start; the simulated app
then reports its update token to the device API in the `ActivityTokenReport` shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from engine.config import ApnsEndpoint, Credentials, DeliveryConfig, EngineConfig
from engine.engine import open_engine
from engine.payload import Alert
from engine.results import DeliveryStatus
from simulator.devices import TokenReport
from simulator.embed import AttachError, EmbeddedSimulator, open_embedded
from simulator.reporting import report_body
from tests.helpers.httpget import request_json

DEVICE_KEY = "dk_test_0123456789abcdef"


@dataclass
class Seen:
    """One request the fake device API received."""

    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeDeviceApi:
    """An ASGI app that records every request and answers the next scripted status (else 200)."""

    statuses: list[int] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]  # startup / shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        raw = b"".join(chunks)
        self.seen.append(
            Seen(
                scope["method"],
                scope["path"],
                headers.get("authorization"),
                json.loads(raw) if raw else None,
            )
        )
        self._changed.set()
        self._changed = trio.Event()
        status = self.statuses.pop(0) if self.statuses else 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        """Wait (no polling) until `ready()` holds after some request."""
        while not ready():
            await self._changed.wait()


@asynccontextmanager
async def device_api(statuses: list[int] | None = None) -> AsyncIterator[tuple[str, FakeDeviceApi]]:
    """Serve a `FakeDeviceApi` on 127.0.0.1:0; yield its `/api` base URL and the app."""
    app = FakeDeviceApi(statuses=list(statuses or []))
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        asgi: Any = app  # hypercorn's ASGI types are narrower than a plain class
        serve: Any = partial(hypercorn_serve, asgi, config, shutdown_trigger=stop.wait)
        bound: list[str] = await nursery.start(serve)
        port = int(bound[0].rsplit(":", 1)[1])
        yield f"http://127.0.0.1:{port}/api", app
        stop.set()


def push_to_start_tokens(emb: EmbeddedSimulator) -> dict[str, str]:
    """Each simulated device's push-to-start token, by device name."""
    devices = emb.simulator.apns.registry.snapshot(emb.simulator.apns.wall_clock())
    return {d["name"]: d["push_to_start_token"] for d in devices}


def app_tokens(emb: EmbeddedSimulator) -> dict[str, str]:
    """Each simulated device's app token (the `device` token: notifications), by device name."""
    devices = emb.simulator.apns.registry.snapshot(emb.simulator.apns.wall_clock())
    return {d["name"]: d["tokens"]["device"] for d in devices}


def engine_config(emb: EmbeddedSimulator) -> EngineConfig:
    """An engine configured only from what the embedded simulator exposes."""
    creds = Credentials(
        team_id=emb.team_id, key_id=emb.key_id, key_path=emb.key_path, bundle_id=emb.bundle_id
    )
    endpoint = ApnsEndpoint(host=emb.host, port=emb.port, ca_file=emb.ca_file)
    return EngineConfig(
        credentials=creds, endpoint=endpoint, delivery=DeliveryConfig(connections=1)
    )


async def test_attach_registers_devices_and_reports_the_update_token(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            device_api() as (api_base, api),
            open_embedded(state_dir=tmp_path, devices=2, control_port=0, seed=5) as emb,
        ):
            assert emb.host == "127.0.0.1" and emb.port > 0
            assert emb.ca_file.is_file() and emb.key_path.is_file()
            folder = Path(await trio.Path(tmp_path).resolve())
            assert emb.ca_file.parent == emb.key_path.parent == folder
            assert emb.control_url is not None
            assert await request_json("GET", emb.control_url + "/healthz") == (200, {"ok": True})

            await emb.attach(api_base + "/", DEVICE_KEY)  # a trailing slash is harmless
            tokens = push_to_start_tokens(emb)
            now = emb.simulator.apns.wall_clock()
            widgets = {
                d["name"]: d["tokens"]["widgets"] for d in emb.simulator.apns.registry.snapshot(now)
            }
            apps = app_tokens(emb)
            assert [(s.method, s.path, s.authorization, s.body) for s in api.seen] == [
                (
                    "PUT",
                    f"/api/devices/{name}",
                    f"Bearer {DEVICE_KEY}",
                    {
                        "push_to_start_token": tokens[name],
                        "name": name,
                        "channels": [],
                        "app_token": apps[name],
                        "widget_token": widgets[name],
                    },
                )
                for name in ("iphone-1", "iphone-2")
            ]
            reader = emb.simulator.widget_reader
            assert reader is not None and reader.api_base == api_base
            assert DEVICE_KEY not in repr(reader)
            assert apps["iphone-1"] != tokens["iphone-1"]
            reporter = emb.simulator.reporter
            assert reporter is not None and reporter.url == api_base + "/activity-tokens"
            assert DEVICE_KEY not in repr(reporter) and DEVICE_KEY not in repr(emb)
            info = emb.simulator.info()
            assert info["token_report_url"] == api_base + "/activity-tokens"

            async with open_engine(engine_config(emb), drain_timeout=5.0) as engine:
                handle = await engine.start(
                    "deploy-1",
                    tokens["iphone-1"],
                    {"title": "Deploy"},
                    attributes_type="LockstepAttributes",
                    attributes={"activity_id": "deploy-1"},
                    alert=Alert("Deploy", "started"),
                )
                result = await handle.result()
                assert result.status is DeliveryStatus.ACCEPTED

            await api.wait_for(lambda: len(api.seen) == 3)
            report = api.seen[2]
            device = emb.simulator.apns.registry.device_snapshot(
                "iphone-1", emb.simulator.apns.wall_clock()
            )
            assert device is not None
            (activity,) = device["activities"]
            assert (report.method, report.path, report.authorization) == (
                "POST",
                "/api/activity-tokens",
                f"Bearer {DEVICE_KEY}",
            )
            assert report.body == {
                "device_id": "iphone-1",
                "activity_id": "deploy-1",
                "activity_token": activity["token"],
            }


async def test_attach_retries_while_the_server_is_unavailable(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            device_api(statuses=[503, 503]) as (api_base, api),
            open_embedded(state_dir=tmp_path, devices=1, control_port=None) as emb,
        ):
            await emb.attach(api_base, DEVICE_KEY, attempts=3, backoff=0.01)
            assert [s.path for s in api.seen] == ["/api/devices/iphone-1"] * 3


async def test_attach_gives_up_at_once_when_refused(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            device_api(statuses=[403]) as (api_base, api),
            open_embedded(state_dir=tmp_path, devices=2, control_port=None) as emb,
        ):
            with pytest.raises(AttachError, match="HTTP 403") as caught:
                await emb.attach(api_base, DEVICE_KEY, attempts=5, backoff=0.01)
            assert f"{api_base}/devices/iphone-1" in str(caught.value)
            assert DEVICE_KEY not in str(caught.value)
            assert len(api.seen) == 1 and emb.simulator.reporter is None


async def test_attach_to_nothing_names_the_url_not_the_key(tmp_path: Path) -> None:
    with trio.fail_after(30):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        for listener in listeners:
            await listener.aclose()  # the port is now closed
        async with open_embedded(state_dir=tmp_path, devices=1, control_port=None) as emb:
            base = f"http://127.0.0.1:{port}/api"
            with pytest.raises(AttachError, match="after 2 attempts") as caught:
                await emb.attach(base, DEVICE_KEY, attempts=2, backoff=0.01)
            assert f"PUT {base}/devices/iphone-1" in str(caught.value)
            assert DEVICE_KEY not in str(caught.value)
            with pytest.raises(ValueError, match="http://"):
                await emb.attach("https://example.org/api", DEVICE_KEY)


async def test_without_control_api_and_clean_shutdown(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_embedded(state_dir=tmp_path, devices=0, control_port=None) as emb:
            assert emb.control_url is None
            assert push_to_start_tokens(emb) == {}
            stream = await trio.open_tcp_stream(emb.host, emb.port)
            await stream.aclose()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(emb.host, emb.port)  # the listener is closed


async def test_errors_reach_the_caller_unwrapped(tmp_path: Path) -> None:
    with trio.fail_after(30):
        with pytest.raises(KeyError, match="boom"):
            async with open_embedded(state_dir=tmp_path, devices=1, control_port=None):
                raise KeyError("boom")
        taken = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        busy = taken.socket.getsockname()[1]
        with pytest.raises(OSError):
            async with open_embedded(state_dir=tmp_path, control_port=busy):
                pass
        await taken.aclose()


def _report(attributes: dict[str, Any]) -> TokenReport:
    return TokenReport("iphone-2", "ab" * 32, "iphone-2-1", "cd" * 32, "Attrs", attributes, 1.0)


@pytest.mark.parametrize(
    ("attributes", "activity_id"),
    [
        ({"activity_id": "deploy-7", "stream_key": "s"}, "deploy-7"),
        ({}, "iphone-2-1"),  # no sender id: the simulator's own
        ({"activity_id": 42}, "iphone-2-1"),  # not a string: not an id the sender gave
        ({"activity_id": ""}, "iphone-2-1"),
    ],
)
def test_report_body_is_an_activity_token_report(
    attributes: dict[str, Any], activity_id: str
) -> None:
    assert json.loads(report_body(_report(attributes))) == {
        "device_id": "iphone-2",
        "activity_id": activity_id,
        "activity_token": "cd" * 32,
    }


async def test_a_backend_resetting_connections_fails_a_report_but_not_the_reporter() -> None:
    """A backend going down resets connections mid-request (trio raises BrokenResourceError, not
    an OSError): the report is retried, then counted as failed, and the reporter keeps running."""
    import socket
    import struct

    from simulator.devices import TokenReport
    from simulator.reporting import TokenReporter

    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(1)  # the request has started to arrive
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()  # SO_LINGER 0: the close is a reset

    report = TokenReport("iphone-1", "ab" * 32, "a1", "cd" * 32, "T", {"activity_id": "a1"}, 0.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(partial(trio.serve_tcp, reset, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            reporter = TokenReporter(f"http://127.0.0.1:{port}/api/activity-tokens", attempts=2)
            nursery.start_soon(reporter.run)
            reporter.submit(report)
            await _until(lambda: reporter.stats.failed == 1)
            assert reporter.stats.delivered == 0
            assert reporter.stats.last_error is not None
            assert reporter.stats.last_error.startswith(("BrokenResourceError", "ConnectionError"))
            reporter.submit(report)  # still running: the next report is tried too
            await _until(lambda: reporter.stats.failed == 2)
            nursery.cancel_scope.cancel()


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a counter another task moves (the reporter has no event to wait on)."""
    for _ in range(600):
        if condition():
            return
        await trio.sleep(0.1)
    raise AssertionError("the condition did not happen within 60 s")
