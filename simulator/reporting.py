"""Simulated apps reporting their Live Activity update tokens, as an iOS app does.

(`registration_body` is the other thing an app tells its server: the device registration with
its push-to-start token and its app token, which `simulator.embed` PUTs at attach time.)

After a push-to-start, iOS wakes the app and hands it the new activity's update token; the app
then sends it to its server (apns.md §6, "Tokens"). The simulated devices do the same: each
`TokenReport` is POSTed to a configured URL (the engine's device API, `POST /activity-tokens`),
with `Authorization: Bearer <device key>` when one is configured. The body is the device API's
`ActivityTokenReport`, the only report format:

    {"device_id": <device name>, "activity_id": <the start's attributes["activity_id"], else the
     simulator's own activity id>, "activity_token": <hex update token>}

Reports wait in a bounded channel; when it is full the report is dropped and counted, so a dead
server never grows memory. Failed POSTs are retried a few times with backoff. The target URL and
credential can be changed while the reporter runs (`retarget`), so a simulator can be pointed at
a server that starts after it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

import h11
import msgspec
import trio

from simulator.devices import TokenReport
from simulator.validation import TokenKind

log = logging.getLogger("lockstep.simulator.reporting")

_encoder = msgspec.json.Encoder()
REQUEST_TIMEOUT = 5.0
TRANSIENT: Final = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,  # a reset mid-request (the server going down): trio's own type
    h11.ProtocolError,
    ConnectionError,
)
"""What a backend that is starting, stopping or briefly overloaded looks like from here."""
"""Seconds for one report POST, connecting included."""


@dataclass(slots=True)
class ReporterStats:
    """How reporting went, for the control API."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_status: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def report_body(report: TokenReport) -> bytes:
    """The JSON body a simulated app sends for one update token (an `ActivityTokenReport`).

    The activity is named by the `activity_id` attribute of the push-to-start when it has one
    (that is the sender's id for it); otherwise by the simulator's own activity id.
    """
    wanted = report.attributes.get("activity_id")
    activity_id = wanted if isinstance(wanted, str) and wanted else report.activity_id
    return _encoder.encode(
        {
            "device_id": report.device,
            "activity_id": activity_id,
            "activity_token": report.activity_token,
        }
    )


def registration_body(device: Mapping[str, Any]) -> bytes:
    """The JSON body a simulated app registers its device with (a `DeviceRegistration`).

    `device` is the device's snapshot: its push-to-start token, name and channels, its app token
    (the `device` token, which takes `alert` pushes: notifications and the badge) and its widget
    token (`widgets` pushes), so the server can send the simulated iPhone push notifications and
    widget reloads as well as Live Activities.
    """
    body: dict[str, Any] = {
        "push_to_start_token": device["push_to_start_token"],
        "name": str(device["name"]),
        "channels": list(device["channels"]),
    }
    app_token = (device.get("tokens") or {}).get(TokenKind.DEVICE.value)
    if app_token:
        body["app_token"] = app_token
    widget_token = (device.get("tokens") or {}).get(TokenKind.WIDGETS.value)
    if widget_token:
        body["widget_token"] = widget_token
    return _encoder.encode(body)


def check_http_url(url: str) -> SplitResult:
    """Split an `http://host[:port]/path` URL; raise ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"URL must be http://host[:port]/path, got {url!r}")
    return parts


async def send_json(method: str, url: str, body: bytes, *, bearer: str | None) -> int:
    """Send `body` as JSON with `method` to an `http://` URL; return the status code.

    HTTP/1.1 over trio + h11, one connection per request; callers bound it with
    `trio.fail_after`. The bearer credential goes only into the Authorization header, never into
    an exception message.
    """
    parts = check_http_url(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [
        ("host", parts.netloc),
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    if bearer:
        headers.append(("authorization", f"Bearer {bearer}"))
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(parts.hostname or "", parts.port or 80)
    async with stream:
        await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                return int(event.status_code)
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection without answering")


MAX_ANSWER = 1 << 20
"""Bytes of an answer body `get_json` reads at most (a widget's metrics are far smaller)."""


async def get_json(url: str, *, bearer: str | None) -> tuple[int, bytes]:
    """GET an `http://` URL; return the status code and the body (at most `MAX_ANSWER` bytes).

    Same transport as `send_json` (trio + h11, one connection); callers bound it with
    `trio.fail_after`. The bearer credential goes only into the Authorization header.
    """
    parts = check_http_url(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [("host", parts.netloc), ("accept", "application/json"), ("connection", "close")]
    if bearer:
        headers.append(("authorization", f"Bearer {bearer}"))
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(parts.hostname or "", parts.port or 80)
    async with stream:
        request = h11.Request(method="GET", target=target, headers=headers)
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = int(event.status_code)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_ANSWER:
                    raise h11.ProtocolError(f"answer over {MAX_ANSWER} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection before the answer ended")


class TokenReporter:
    """Sends `TokenReport`s to the engine's device API in the background."""

    def __init__(
        self, url: str, *, bearer: str | None = None, capacity: int = 1000, attempts: int = 3
    ) -> None:
        check_http_url(url)
        self.url = url
        self._bearer = bearer
        self._attempts = attempts
        self._send, self._receive = trio.open_memory_channel[TokenReport](capacity)
        self.stats = ReporterStats()

    def __repr__(self) -> str:
        return f"TokenReporter(url={self.url!r})"  # never the bearer credential

    def retarget(self, url: str, *, bearer: str | None = None) -> None:
        """Send later reports (and retries of the current one) to `url` with `bearer`."""
        check_http_url(url)
        self.url = url
        self._bearer = bearer

    def submit(self, report: TokenReport) -> None:
        """Queue a report without waiting; drop (and count) it when the queue is full."""
        try:
            self._send.send_nowait(report)
        except trio.WouldBlock:
            self.stats.dropped += 1

    async def run(self) -> None:
        """Deliver queued reports until cancelled."""
        async for report in self._receive:
            await self._deliver(report)

    async def _deliver(self, report: TokenReport) -> None:
        body = report_body(report)
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    status = await send_json("POST", self.url, body, bearer=self._bearer)
            except TRANSIENT as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            else:
                self.stats.last_status = status
                if 200 <= status < 300:
                    self.stats.delivered += 1
                    return
                self.stats.last_error = f"HTTP {status}"
                if 400 <= status < 500 and status != 429:
                    break  # the server refuses this report; retrying will not help
            if attempt < self._attempts:
                await trio.sleep(delay)
                delay *= 2
        self.stats.failed += 1
        log.warning("token report for %s failed: %s", report.device, self.stats.last_error)
