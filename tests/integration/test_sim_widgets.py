"""The simulated widget extension: a `widgets` push that reloads a phone's widgets makes it read
the values from the device route (a real HTTP server on 127.0.0.1), and the widget shows them."""

from __future__ import annotations

import random
import socket
from typing import Any

import trio

from simulator.devices import DeviceRegistry
from simulator.notifications import WIDGETS_BODY
from simulator.profile import DeviceProfile
from simulator.validation import DevicePush, TokenInfo, TokenKind
from simulator.widgets import WidgetReader
from tests.helpers.fakeservice import DEVICE_KEY, FakeService
from tests.helpers.h11kit import api_app, running

BUNDLE = "com.example.app"
NOW = 1_800_000_000.0
TIMEOUT = 10.0


def registry(*names: str, budget: int = 40) -> DeviceRegistry:
    reg = DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(3))
    for name in names:
        reg.add_device(name, now=NOW, profile=DeviceProfile(widget_reload_budget=budget))
    return reg


def widgets_push(reg: DeviceRegistry, name: str, payload: dict[str, Any]) -> DevicePush:
    """Deliver a `widgets` push to the phone's widget token, as the fake APNs does."""
    token = reg.devices[name].app_tokens[TokenKind.WIDGETS]
    reg.deliver(token, payload, now=NOW, priority=5, apns_id="id", push_type="widgets")
    return DevicePush(
        token=token,
        push_type="widgets",
        topic=BUNDLE + ".push-type.widgets",
        bundle_id=BUNDLE,
        priority=5,
        expiration=None,
        apns_id="id",
        collapse_id=None,
        payload=payload,
        body=b"",
        token_info=TokenInfo(BUNDLE, TokenKind.WIDGETS),
    )


async def read_all(reader: WidgetReader) -> None:
    """Serve what is queued, then stop."""
    with trio.move_on_after(0.5):
        await reader.run()


async def test_a_reload_reads_the_values_and_the_widget_shows_them() -> None:
    reg = registry("iphone-1", "iphone-2")
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService())) as (port, _, _):
            base = f"http://127.0.0.1:{port}/api"
            reader = WidgetReader(reg, base, bearer=DEVICE_KEY, wall_clock=lambda: NOW + 1)
            for name in ("iphone-1", "iphone-2"):
                push = widgets_push(reg, name, dict(WIDGETS_BODY))
                reader.on_accepted(push, name)
                reader.on_accepted(push, name)  # the same reload twice: one read
            await read_all(reader)
    one = reg.devices["iphone-1"].app.snapshot()["widget"]
    assert one == {"metrics": {"revenue": 12.5, "status": "green"}, "shown_at": NOW + 1,
                   "error": None}  # fmt: skip
    two = reg.devices["iphone-2"].app.snapshot()["widget"]  # unknown to the server: 404
    assert two["metrics"] == {} and two["error"].startswith("HTTP 404")
    assert (reader.stats.read, reader.stats.failed, reader.stats.dropped) == (1, 1, 0)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_reload_no_read() -> None:
    reg = registry("iphone-1", budget=1)
    base = f"http://127.0.0.1:{closed_port()}/api"
    reader = WidgetReader(reg, base, bearer=None, wall_clock=lambda: NOW)
    reader.on_accepted(widgets_push(reg, "iphone-1", {"aps": {"content-changed": 1}}), "iphone-1")
    assert reg.devices["iphone-1"].app.widget_reloads == 0  # a wrong body reloads nothing
    with trio.fail_after(TIMEOUT):
        await read_all(reader)
        assert reader.stats.failed == 0  # nothing was read
        reader.on_accepted(widgets_push(reg, "iphone-1", dict(WIDGETS_BODY)), "iphone-1")
        await read_all(reader)  # nothing listens: the read fails
        assert reader.stats.failed == 1
        over = widgets_push(reg, "iphone-1", dict(WIDGETS_BODY))  # past the phone's budget of 1
        reader.on_accepted(over, "iphone-1")
        await read_all(reader)
    assert (reader.stats.read, reader.stats.failed) == (0, 1)
    assert reg.devices["iphone-1"].app.snapshot()["widget"]["error"].startswith("OSError")


async def test_a_bad_key_is_a_failed_read() -> None:
    reg = registry("iphone-1")
    with trio.fail_after(TIMEOUT):
        async with running(api_app(FakeService())) as (port, _, _):
            reader = WidgetReader(
                reg, f"http://127.0.0.1:{port}/api", bearer="wrong", wall_clock=lambda: NOW
            )
            reader.on_accepted(widgets_push(reg, "iphone-1", dict(WIDGETS_BODY)), "iphone-1")
            await read_all(reader)
    assert reg.devices["iphone-1"].app.snapshot()["widget"]["error"].startswith("HTTP 403")
    assert "wrong" not in repr(reader)
