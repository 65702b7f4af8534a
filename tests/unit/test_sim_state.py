"""Simulated iPhones survive a restart: the registry saved to a file and read back."""

from __future__ import annotations

import random
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from simulator.activity import ActivityOutcome
from simulator.devices import DeviceRegistry
from simulator.profile import AllowPrompt, DeviceProfile
from simulator.runner import Simulator, SimulatorOptions
from simulator.state import STATE_FILE, StateError, StateKeeper, load, save
from simulator.validation import TokenKind

BUNDLE = "com.example.app"
T0 = 1_700_000_000.0


def new_registry(seed: int = 3) -> DeviceRegistry:
    return DeviceRegistry(bundle_id=BUNDLE, rng=random.Random(seed))


def aps(event: str, ts: float, v: object, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "timestamp": ts, "content-state": {"v": v}, **extra}
    if event == "start":
        body |= {
            "attributes-type": "A",
            "attributes": {"activity_id": f"x{v}"},
            "alert": {"title": "t", "body": "b"},
        }
    return {"aps": body}


def lived_in() -> tuple[DeviceRegistry, dict[str, str]]:
    """A registry with a bit of everything: budgets spent, a held update, a dismissed activity,
    an activity waiting for Allow, an offline device with a kept push."""
    reg = new_registry()
    reg.add_device("phone", profile=DeviceProfile(update_budget=1), now=T0)
    reg.add_device("tablet", profile=DeviceProfile(allow_prompt=AllowPrompt.MANUAL), now=T0)
    phone = reg.devices["phone"].push_to_start_token
    first = reg.deliver(phone, aps("start", T0, 1), now=T0, priority=10, apns_id="s1")
    second = reg.deliver(phone, aps("start", T0, 2), now=T0, priority=10, apns_id="s2")
    live, gone = first.issued_token, second.issued_token
    assert live and gone
    reg.deliver(live, aps("update", T0 + 1, 10), now=T0 + 1, priority=10, apns_id="u1")
    held = reg.deliver(live, aps("update", T0 + 2, 11), now=T0 + 2, priority=10, apns_id="u2")
    assert held.outcome is ActivityOutcome.HELD
    reg.dismiss("phone", "phone-2", now=T0 + 3)
    reg.expire_token(reg.devices["phone"].app_tokens[TokenKind.VOIP], int(T0 * 1000))
    app = reg.devices["phone"].app_tokens[TokenKind.DEVICE]
    alert = {"aps": {"alert": {"title": "Deploy done"}, "badge": 3}}
    reg.deliver(app, alert, now=T0 + 3, priority=10, apns_id="a1", push_type="alert")
    tablet = reg.devices["tablet"].push_to_start_token
    reg.deliver(tablet, aps("start", T0, 3), now=T0 + 3, priority=10, apns_id="s3")
    reg.set_online("phone", False, now=T0 + 4)
    reg.deliver(live, aps("update", T0 + 5, 12), now=T0 + 5, priority=5, apns_id="u3")
    reg.token_reports()
    return reg, {"live": live, "gone": gone}


def test_a_restored_registry_is_the_same_phones(tmp_path: Path) -> None:
    reg, tokens = lived_in()
    path = tmp_path / STATE_FILE
    save(reg, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + ".tmp").exists()
    back = new_registry(seed=99)  # another seed: everything must come from the file
    assert load(back, path)
    # The apps report their live activities' tokens again on launch (only the live one has one).
    assert [r.activity_token for r in back.token_reports()] == [tokens["live"]]
    assert back.snapshot(T0 + 6) == reg.snapshot(T0 + 6)
    assert back.lookup(tokens["gone"]) == reg.lookup(tokens["gone"])  # still 410, same time
    assert back.lookup(tokens["gone"]).unregistered_at_ms == int((T0 + 3) * 1000)  # type: ignore[union-attr]
    app = back.devices["phone"].app_tokens[TokenKind.DEVICE]
    assert back.lookup(app) == reg.lookup(app)
    voip = back.lookup(back.devices["phone"].app_tokens[TokenKind.VOIP])
    assert voip is not None and voip.expired_at_ms == int(T0 * 1000)
    # It goes on as the original would: the kept push arrives, the held update falls due.
    for r in (reg, back):
        r.set_online("phone", True, now=T0 + 7)
    later = T0 + 2 * 3600
    assert back.snapshot(later) == reg.snapshot(later)
    [act, _] = back.device_snapshot("phone", later)["activities"]  # type: ignore[index]
    assert act["content_state"] == {"v": 12}
    phone = back.device_snapshot("phone", later)
    assert phone is not None and phone["badge"] == 3 and len(phone["notifications"]) == 1
    # The token generator continues: the next token is the one the original would have drawn.
    assert back.allow("tablet", "tablet-1", now=later) == reg.allow("tablet", "tablet-1", now=later)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": 7}', "version-1"),
        (b"[1, 2]", "version-1"),
        (b'{"version": 1, "bundle_id": "com.other"}', "com.other"),
        (b'{"version": 1, "bundle_id": "com.example.app", "devices": [{}]}', "damaged"),
    ],
)
def test_a_damaged_file_is_refused_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(content)
    with pytest.raises(StateError, match=message) as caught:
        load(new_registry(), path)
    assert str(path) in str(caught.value) and path.read_bytes() == content  # left alone


def test_no_file_means_new_phones(tmp_path: Path) -> None:
    assert not load(new_registry(), tmp_path / STATE_FILE)


async def test_the_keeper_saves_only_after_changes_and_once_more_at_the_end(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    reg = new_registry()

    async def in_place(write: Any, path: Path, data: bytes) -> None:
        write(path, data)  # no worker thread: the mock clock cannot jump past the write

    keeper = StateKeeper(reg, tmp_path / STATE_FILE, interval=1.0, off_loop=in_place)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            await trio.sleep(1.5)
            assert keeper.saves == 1  # the first save records the empty registry
            await trio.sleep(3)
            assert keeper.saves == 1  # nothing changed
            reg.add_device("phone", now=T0)
            await trio.sleep(1)
            assert keeper.saves == 2
            reg.set_online("phone", False, now=T0)
            nursery.cancel_scope.cancel()
    assert keeper.saves == 3
    back = new_registry()
    assert load(back, keeper.path) and not back.devices["phone"].online


def test_a_disk_error_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = StateKeeper(new_registry(), tmp_path / "missing-dir" / STATE_FILE)
    keeper._save_logged()
    assert "could not save" in caplog.text and keeper.saves == 0


def test_a_restarted_simulator_finds_its_phones_and_fresh_forgets_them(tmp_path: Path) -> None:
    options = SimulatorOptions(port=0, control_port=None, devices=2, state_dir=tmp_path, tls=False)
    first = Simulator.build(options)
    reg = first.apns.registry
    pts = reg.devices["iphone-1"].push_to_start_token
    started = reg.deliver(pts, aps("start", T0, 1), now=T0, priority=10, apns_id="s")
    assert first.state_keeper is not None and first.state_keeper.save_if_changed()
    again = Simulator.build(options)
    act = again.apns.registry.device_snapshot("iphone-1", T0)["activities"][0]  # type: ignore[index]
    assert act["token"] == started.issued_token
    assert again.info()["state_file"] == str((tmp_path / STATE_FILE).resolve())
    bigger = Simulator.build(SimulatorOptions(**{**_fields(options), "devices": 3}))
    assert list(bigger.apns.registry.devices) == ["iphone-1", "iphone-2", "iphone-3"]
    fresh = Simulator.build(SimulatorOptions(**{**_fields(options), "fresh": True}))
    assert fresh.apns.registry.device_snapshot("iphone-1", T0)["activities"] == []  # type: ignore[index]
    off = Simulator.build(SimulatorOptions(**{**_fields(options), "keep_state": False}))
    assert off.state_keeper is None and off.info()["state_file"] is None


def _fields(options: SimulatorOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__slots__}


def test_a_kept_push_to_a_rotated_token_still_reaches_its_activity_after_a_restart(
    tmp_path: Path,
) -> None:
    reg = new_registry()
    reg.add_device("phone", profile=DeviceProfile(budgets=False), now=T0)
    pts = reg.devices["phone"].push_to_start_token
    token = reg.deliver(pts, aps("start", T0, 0), now=T0, priority=10, apns_id="s").issued_token
    assert token is not None
    reg.set_online("phone", False, now=T0 + 1)
    reg.deliver(token, aps("update", T0 + 2, 5), now=T0 + 2, priority=10, apns_id="kept")
    reg.rotate("phone", "phone-1", now=T0 + 3)
    save(reg, tmp_path / STATE_FILE)
    back = new_registry()
    assert load(back, tmp_path / STATE_FILE)
    [result] = back.set_online("phone", True, now=T0 + 4)
    assert result.outcome is ActivityOutcome.APPLIED
    assert back.device_snapshot("phone", T0 + 4)["activities"][0]["content_state"] == {"v": 5}  # type: ignore[index]


def test_a_planned_outage_survives_a_restart_and_ends_on_time(tmp_path: Path) -> None:
    reg = new_registry()
    reg.add_device("phone", now=T0)
    reg.take_offline("phone", now=T0, until=T0 + 30)
    save(reg, tmp_path / STATE_FILE)
    back = new_registry()
    assert load(back, tmp_path / STATE_FILE)
    back.advance(T0 + 29)
    assert not back.devices["phone"].online
    back.advance(T0 + 100)
    snap = back.device_snapshot("phone", T0 + 100)
    assert snap is not None and snap["online"] and snap["back_online_at"] is None
    assert [e["at"] for e in snap["events"] if e["event"] == "online"] == [T0 + 30]
