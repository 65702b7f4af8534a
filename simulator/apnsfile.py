"""Accepted pushes saved as `.apns` files, the format `xcrun simctl push` reads (apns.md §8).

A `.apns` file is the push's JSON object with one extra top-level key, `"Simulator Target Bundle"`,
naming the app; it can be passed to `xcrun simctl push booted <file>` or dropped on a Simulator
window. `render_apns` builds those bytes; `ApnsFileWriter` stores one file per accepted push under
`<root>/<device>/NNNNNN-<tag>.apns`, numbered per device so a folder lists in arrival order. The
tag is a Live Activity push's `aps.event` (`start`, `update`, `end`) and an app push's type
(`alert`, `background`). simctl takes only ordinary app notifications, not VoIP, widget and
"other types" (apns.md §8), so pushes of those types get no file and are counted
(`skipped_type`).

The payload bytes are kept exactly as APNs accepted them: the bundle key is spliced in after the
opening brace instead of re-encoding the JSON, so numbers and key order stay as the sender wrote
them. simctl refuses files over 4096 bytes (apns.md §8), so a push that the extra key would take
over the limit is not written; `write` returns None and `skipped_oversize` counts it.

Whether simctl can drive a Live Activity from such a file is not confirmed (apns.md §8, "could not
confirm" 6): the files are a faithful record of what was delivered, replayable where supported.

`ApnsFileWriter` does blocking file I/O; a trio caller runs it in a worker thread.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any, Final

from engine.apns.wire import LIVE_ACTIVITY_PUSH_TYPE, MAX_DEVICE_PAYLOAD
from simulator.validation import DevicePush

BUNDLE_KEY: Final = "Simulator Target Bundle"
MAX_APNS_FILE: Final = MAX_DEVICE_PAYLOAD
"""simctl refuses a push file larger than this many bytes (apns.md §8)."""

log = logging.getLogger("lockstep.simulator.apnsfile")

_EVENTS: Final = frozenset({"start", "update", "end"})
_FILE_TYPES: Final = frozenset({"alert", "background", LIVE_ACTIVITY_PUSH_TYPE})
"""Push types written as files: simctl's ordinary notifications, and Live Activities as a record."""
_MAX_NAME: Final = 200  # stay well under the usual 255-byte file-name limit


def render_apns(payload_bytes: bytes, bundle_id: str) -> bytes:
    """The `.apns` bytes for a push: its JSON object plus the `Simulator Target Bundle` key.

    Raises ValueError when the payload is not a JSON object. A payload that already names a target
    bundle is re-encoded (compact) with that key replaced, so the file never holds it twice.
    """
    return _render(payload_bytes, _decode(payload_bytes), bundle_id)


def device_folder(name: str) -> str:
    """A safe single path component for a device name (percent-escaped, never `.` or `..`).

    "/", "\\" and every other character outside letters, digits and `_-.~` are percent-escaped, so
    two different names never share a folder. A leading dot is escaped too, which rules out `.`,
    `..` and hidden folders. Raises ValueError for an empty or overlong name.
    """
    if not name:
        raise ValueError("device name must not be empty")
    safe = urllib.parse.quote(name, safe="")
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    if len(safe.encode()) > _MAX_NAME:
        raise ValueError(f"device name too long for a folder name: {name[:40]!r}...")
    return safe


class ApnsFileWriter:
    """Writes accepted pushes as `.apns` files, one folder per device."""

    def __init__(self, root: Path, *, bundle_id: str) -> None:
        """Write under `root` (created on first write) for the app `bundle_id`."""
        self.root = Path(root)
        self.bundle_id = bundle_id
        self.written = 0
        self.skipped_oversize = 0
        self.skipped_type = 0
        self._seq: dict[str, int] = {}

    def write(
        self, device: str, payload_bytes: bytes, *, seq: int | None = None, tag: str | None = None
    ) -> Path | None:
        """Store one push for `device`; the file's path, or None when it would exceed 4096 bytes.

        `seq` numbers the file (default: the device's previous number plus one); `tag` ends its
        name (default: the `aps.event`, else `push`). Raises ValueError for a payload that is not
        a JSON object or an unusable device name.
        """
        folder = self.root / device_folder(device)
        payload = _decode(payload_bytes)
        data = _render(payload_bytes, payload, self.bundle_id)
        if len(data) > MAX_APNS_FILE:
            # APNs took it, but `simctl push` refuses a file over 4096 bytes, and the bundle key
            # this file adds is what tipped it over: say so, rather than leave a silent gap.
            self.skipped_oversize += 1
            log.warning(
                "no .apns file for %s's push: %d bytes with the %r key, over simctl's %d",
                device,
                len(data),
                BUNDLE_KEY,
                MAX_APNS_FILE,
            )
            return None
        number = self._seq.get(device, 0) + 1 if seq is None else seq
        self._seq[device] = max(number, self._seq.get(device, 0))
        path = folder / f"{number:06d}-{tag or _event_of(payload)}.apns"
        folder.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_bytes(data)
        temp.replace(path)  # readers never see a half-written file
        self.written += 1
        return path

    def counts(self) -> dict[str, int]:
        """Files written, and pushes left without one: over 4096 bytes, or a type simctl lacks."""
        return {
            "written": self.written,
            "skipped_oversize": self.skipped_oversize,
            "skipped_type": self.skipped_type,
        }

    def on_accepted(self, push: DevicePush, device: str | None) -> None:
        """Listener hook of the fake APNs: store every push that reached a device."""
        if not device:
            return
        if push.push_type not in _FILE_TYPES:
            self.skipped_type += 1  # a VoIP or widgets push: simctl cannot deliver it
            if self.skipped_type == 1:  # once: every such push would say the same
                log.info(
                    "no .apns file for %s pushes (xcrun simctl push cannot deliver them); "
                    "counted in /info as apns_files.skipped_type",
                    push.push_type,
                )
            return
        live = push.push_type == LIVE_ACTIVITY_PUSH_TYPE
        self.write(device, push.body, tag=None if live else push.push_type)


def _decode(payload_bytes: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or ValueError."""
    try:
        payload = json.loads(payload_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    return payload


def _render(payload_bytes: bytes, payload: dict[str, Any], bundle_id: str) -> bytes:
    """Splice the bundle key into the exact payload bytes (re-encode only when that cannot work)."""
    body = payload_bytes.strip()
    if BUNDLE_KEY in payload or not (body.startswith(b"{") and body.endswith(b"}")):
        # Already names a bundle (replace it, never write the key twice), or the bytes carry a
        # BOM or a non-UTF-8 encoding: fall back to compact UTF-8 JSON.
        others = {key: value for key, value in payload.items() if key != BUNDLE_KEY}
        return _compact({BUNDLE_KEY: bundle_id, **others})
    inner = body[1:-1].strip()
    key = b'"' + BUNDLE_KEY.encode() + b'":' + json.dumps(bundle_id, ensure_ascii=False).encode()
    return b"{" + key + (b"," + inner if inner else b"") + b"}"


def _compact(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _event_of(payload: dict[str, Any]) -> str:
    """The file-name tag: the `aps.event` (start, update, end), else `push`."""
    aps = payload.get("aps")
    event = aps.get("event") if isinstance(aps, dict) else None
    return event if event in _EVENTS else "push"
