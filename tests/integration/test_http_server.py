"""The HTTP API served on 127.0.0.1 (port 0): HTTP/1.1 and h2c, over a fake service.

Each test runs with both HTTP/1.1 parsers (`[server] http_parser`: h11, httptools).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from functools import partial
from typing import Any

import trio

from engine.server.http import PromMetrics, build_openapi, create_app, serve_http
from engine.server.http.app import ApiApp
from engine.server.http.h11server import H11Limits
from engine.server.http.server import bind_address
from tests.helpers.fakeservice import (
    DEVICE_BODY,
    DEVICE_KEY,
    SEND_KEY,
    STREAM_BODY,
    FakeService,
)
from tests.helpers.h2client import H2TestClient


def _request(
    method: str, url: str, body: Any = None, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP/1.1 request (run in a worker thread)."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers.items()), err.read()


async def request(
    method: str, url: str, body: Any = None, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """`_request` off the trio thread."""
    return await trio.to_thread.run_sync(partial(_request, method, url, body, key))


def _app(service: FakeService, max_body: int = 65536) -> ApiApp:
    return create_app(
        service,
        api_keys=[SEND_KEY],
        device_keys=[DEVICE_KEY],
        metrics=PromMetrics(),
        max_body=max_body,
        openapi=build_openapi(),
    )


async def test_http11_requests_through_serve_http(front: str) -> None:
    service = FakeService()
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_http,
                    _app(service, 4096),
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    limits=H11Limits(parser=front),
                )
            )
            assert port > 0
            base = f"http://127.0.0.1:{port}"

            status, headers, body = await request(
                "PUT", base + "/api/live-activity/stream/web-1", STREAM_BODY, SEND_KEY
            )
            assert status == 200 and headers["content-type"] == "application/json"
            assert json.loads(body)["operation"] == "started"
            assert service.calls[0][:2] == ("stream", "web-1")

            status, _, body = await request("PUT", base + "/api/devices/iphone-1", DEVICE_BODY)
            assert status == 401 and json.loads(body)["error"] == "unauthorized"
            status, _, body = await request(
                "PUT", base + "/api/devices/iphone-1", DEVICE_BODY, SEND_KEY
            )
            assert status == 403 and json.loads(body)["error"] == "forbidden"

            big = b'{"content_state": {"title": "' + b"x" * 5000 + b'"}}'
            status, _, body = await request(
                "PUT", base + "/api/live-activity/stream/web-1", big, SEND_KEY
            )
            assert status == 413 and json.loads(body)["limit"] == 4096

            status, headers, _ = await request("GET", base + "/api/live-activity/start")
            assert status == 405 and headers["allow"] == "POST"
            status, _, body = await request("GET", base + "/nope")
            assert status == 404 and json.loads(body)["error"] == "not_found"

            status, _, body = await request("GET", base + "/api/openapi.json")
            assert status == 200 and json.loads(body)["openapi"].startswith("3.1")
            status, _, body = await request("GET", base + "/healthz")
            assert status == 200 and json.loads(body)["ok"] is True
            status, headers, body = await request("GET", base + "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain")
            assert b'status="413"' in body and b"lockstep_devices 2" in body

            stop.set()
    assert len(service.calls) == 1


async def test_h2c_prior_knowledge_through_serve_http(front: str) -> None:
    service = FakeService()
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_http,
                    _app(service),
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    limits=H11Limits(parser=front),
                )
            )
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = H2TestClient(stream, authority=f"127.0.0.1:{port}")
            await client.start()

            def headers(method: str, path: str, key: str | None) -> list[tuple[str, str]]:
                hs = [(":method", method), (":scheme", "http")]
                hs += [(":authority", client.authority), (":path", path)]
                hs += [("content-type", "application/json")]
                return hs + ([("authorization", f"Bearer {key}")] if key else [])

            put = await client.request(
                headers("PUT", "/api/live-activity/stream/h2", SEND_KEY),
                json.dumps(STREAM_BODY).encode(),
            )
            assert put.status == 200 and put.json()["stream_key"] == "h2"
            listing = await client.request(headers("GET", "/api/devices", SEND_KEY), None)
            assert listing.status == 200 and listing.json()["devices"][0]["device_id"]
            denied = await client.request(headers("GET", "/api/devices", DEVICE_KEY), None)
            assert denied.status == 403 and denied.json()["error"] == "forbidden"
            await stream.aclose()
            stop.set()
    assert [c[0] for c in service.calls] == ["stream", "list"]


def test_bind_address_brackets_ipv6() -> None:
    assert bind_address("127.0.0.1", 0) == "127.0.0.1:0"
    assert bind_address("::1", 8787) == "[::1]:8787"
    assert bind_address("[::1]", 8787) == "[::1]:8787"


async def test_the_parser_setting_picks_the_front(front: str) -> None:
    """llhttp refuses a lower-case method that h11 passes on: the answer shows which parsed."""
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_http,
                    _app(FakeService()),
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    limits=H11Limits(parser=front),
                )
            )
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"get /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := await stream.receive_some(65536):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 " if front == "h11" else b"HTTP/1.1 400 ")
            await stream.aclose()
            stop.set()
