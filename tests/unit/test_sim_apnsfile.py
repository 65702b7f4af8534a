"""`.apns` files for `xcrun simctl push` (apns.md §8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulator.apnsfile import (
    BUNDLE_KEY,
    MAX_APNS_FILE,
    ApnsFileWriter,
    device_folder,
    render_apns,
)
from simulator.validation import DevicePush, TokenInfo, TokenKind

BUNDLE = "com.example.app"


def body(aps: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"aps": aps, **extra}, separators=(",", ":")).encode()


def padded(total: int) -> bytes:
    """A compact payload of exactly `total` bytes."""
    base = body({"event": "update", "timestamp": 1, "content-state": {"p": ""}})
    fill = "x" * (total - len(base))
    data = body({"event": "update", "timestamp": 1, "content-state": {"p": fill}})
    assert len(data) == total
    return data


# -- render_apns -------------------------------------------------------------------------------


def test_render_adds_bundle_key_and_keeps_payload_bytes() -> None:
    payload = b'{"aps":{"event":"update","timestamp":1.50,"content-state":{"a":1}},"x":[1,2]}'
    out = render_apns(payload, BUNDLE)
    assert out == b'{"Simulator Target Bundle":"com.example.app",' + payload[1:]
    decoded = json.loads(out)
    assert decoded[BUNDLE_KEY] == BUNDLE
    assert {k: v for k, v in decoded.items() if k != BUNDLE_KEY} == json.loads(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{}", b'{"Simulator Target Bundle":"b"}'),
        (b'  { "aps" : {} }\n', b'{"Simulator Target Bundle":"b","aps" : {}}'),
        (b'{"aps":{},"Simulator Target Bundle":"x"}', b'{"Simulator Target Bundle":"b","aps":{}}'),
        ('\ufeff{"aps":{}}'.encode(), b'{"Simulator Target Bundle":"b","aps":{}}'),
    ],
)
def test_render_edge_cases(payload: bytes, expected: bytes) -> None:
    assert render_apns(payload, "b") == expected


@pytest.mark.parametrize("payload", [b"[1]", b"not json", b"\xff\xfe", b'"aps"'])
def test_render_rejects_non_objects(payload: bytes) -> None:
    with pytest.raises(ValueError):
        render_apns(payload, BUNDLE)


def test_render_escapes_bundle_id() -> None:
    assert json.loads(render_apns(b"{}", 'a"b'))[BUNDLE_KEY] == 'a"b'


# -- device folders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("iphone-1", "iphone-1"),
        ("../etc", "%2E.%2Fetc"),
        ("..", "%2E."),
        (".", "%2E"),
        ("a/b", "a%2Fb"),
        ("a_b", "a_b"),
        ("a\\b", "a%5Cb"),
        ("Zoë's phone", "Zo%C3%AB%27s%20phone"),
    ],
)
def test_device_folder_is_one_safe_component(name: str, folder: str) -> None:
    assert device_folder(name) == folder
    assert "/" not in folder and folder not in {".", ".."}


@pytest.mark.parametrize("name", ["", "x" * 300])
def test_device_folder_rejects_unusable_names(name: str) -> None:
    with pytest.raises(ValueError):
        device_folder(name)


# -- writer ------------------------------------------------------------------------------------


def test_writer_names_files_in_order(tmp_path: Path) -> None:
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    events = ["start", "update", "update", "end"]
    paths = [
        writer.write("phone", body({"event": e, "timestamp": n})) for n, e in enumerate(events)
    ]
    assert [p.name for p in paths if p] == [
        "000001-start.apns",
        "000002-update.apns",
        "000003-update.apns",
        "000004-end.apns",
    ]
    assert sorted(p.name for p in (tmp_path / "phone").iterdir()) == [p.name for p in paths if p]
    first = json.loads((tmp_path / "phone" / "000001-start.apns").read_bytes())
    assert first == {BUNDLE_KEY: BUNDLE, "aps": {"event": "start", "timestamp": 0}}
    assert writer.written == 4 and writer.skipped_oversize == 0


def test_writer_counts_per_device_and_honours_seq(tmp_path: Path) -> None:
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    a = writer.write("a", body({"event": "update"}), seq=41)
    b = writer.write("b", body({"alert": "plain"}))
    a2 = writer.write("a", body({"event": "bogus"}))
    assert a is not None and b is not None and a2 is not None
    assert (a.name, b.name, a2.name) == (
        "000041-update.apns",
        "000001-push.apns",
        "000042-push.apns",
    )


def test_writer_sanitises_device_folder(tmp_path: Path) -> None:
    writer = ApnsFileWriter(tmp_path / "out", bundle_id=BUNDLE)
    path = writer.write("../../escape", body({"event": "end"}))
    assert path is not None
    assert path.resolve().parent.parent == (tmp_path / "out").resolve()
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("size", [MAX_APNS_FILE - 1 - 44, MAX_APNS_FILE - 44])
def test_writer_keeps_files_within_4096_bytes(tmp_path: Path, size: int) -> None:
    # The bundle key adds len('"Simulator Target Bundle":"com.example.app",') == 44 bytes.
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    path = writer.write("phone", padded(size))
    assert path is not None
    assert len(path.read_bytes()) == size + 44 <= MAX_APNS_FILE


@pytest.mark.parametrize("size", [MAX_APNS_FILE - 43, MAX_APNS_FILE])
def test_writer_skips_files_over_4096_bytes(
    tmp_path: Path, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    with caplog.at_level("WARNING", logger="lockstep.simulator.apnsfile"):
        assert writer.write("phone", padded(size)) is None
    assert (writer.written, writer.skipped_oversize) == (0, 1)
    assert writer.counts() == {"written": 0, "skipped_oversize": 1, "skipped_type": 0}
    (record,) = caplog.records
    assert "phone" in record.getMessage() and f"{size + 44} bytes" in record.getMessage()
    assert not (tmp_path / "phone").exists() or not any((tmp_path / "phone").iterdir())


def test_writer_leaves_no_temp_files(tmp_path: Path) -> None:
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    for i in range(3):
        writer.write("phone", body({"event": "update", "timestamp": i}))
    assert all(p.suffix == ".apns" for p in (tmp_path / "phone").iterdir())


def test_on_accepted_listener(tmp_path: Path) -> None:
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    payload = body({"event": "update", "timestamp": 3, "content-state": {}})
    push = DevicePush(
        token="ab",
        push_type="liveactivity",
        topic=BUNDLE + ".push-type.liveactivity",
        bundle_id=BUNDLE,
        priority=10,
        expiration=None,
        apns_id=None,
        collapse_id=None,
        payload=json.loads(payload),
        body=payload,
        token_info=TokenInfo(BUNDLE, TokenKind.ACTIVITY),
    )
    writer.on_accepted(push, "phone")
    writer.on_accepted(push, None)  # unknown device: nothing to store
    writer.on_accepted(push, "")
    assert writer.written == 1
    assert (tmp_path / "phone" / "000001-update.apns").read_bytes() == render_apns(payload, BUNDLE)


@pytest.mark.parametrize(
    ("push_type", "kind", "aps", "name"),
    [
        ("alert", TokenKind.DEVICE, {"alert": {"title": "T", "body": "B"}, "badge": 1}, "alert"),
        ("background", TokenKind.DEVICE, {"content-available": 1}, "background"),
        ("voip", TokenKind.VOIP, {}, None),
        ("widgets", TokenKind.WIDGETS, {"content-changed": True}, None),
    ],
)
def test_app_pushes_are_written_as_simctl_takes_them(
    tmp_path: Path, push_type: str, kind: TokenKind, aps: dict[str, object], name: str | None
) -> None:
    writer = ApnsFileWriter(tmp_path, bundle_id=BUNDLE)
    payload = body(aps)
    push = DevicePush(
        token="ab",
        push_type=push_type,
        topic=BUNDLE,
        bundle_id=BUNDLE,
        priority=5,
        expiration=None,
        apns_id=None,
        collapse_id=None,
        payload=json.loads(payload),
        body=payload,
        token_info=TokenInfo(BUNDLE, kind),
    )
    writer.on_accepted(push, "phone")
    if name is None:  # simctl takes no VoIP or widget pushes (apns.md §8)
        assert writer.counts() == {"written": 0, "skipped_oversize": 0, "skipped_type": 1}
        assert not (tmp_path / "phone").exists()
        return
    path = tmp_path / "phone" / f"000001-{name}.apns"
    assert json.loads(path.read_bytes()) == {BUNDLE_KEY: BUNDLE, "aps": aps}
    assert writer.counts() == {"written": 1, "skipped_oversize": 0, "skipped_type": 0}
