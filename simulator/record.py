"""Recording the pushes the fake APNs accepts (`lockstep simulator --record-pushes pushes.jsonl`).

`PushRecorder` is a `FakeApns` listener: every accepted push becomes one JSON line

    {"t": 0.412, "at": 1767225600.412, "token": "9f3c...", "device": "iphone-1",
     "push_type": "liveactivity", "topic": "com.example.lockstep.push-type.liveactivity",
     "priority": 10, "expiration": null, "apns_id": "...", "payload": {"aps": {...}},
     "status": 200, "reason": null}

`t` is seconds since the first recorded push, `at` the simulator's wall time (unix seconds, the
time the device saw it: replays use it so that timestamps, stale and dismissal dates keep their
meaning). Listeners hear only accepted pushes, so `status` is 200 and `reason` null on every line;
rejected requests are in the control API's push log. A push-to-start line also carries
`activity_token`, the update token the device issued for the activity it started (learnt from the
token report that follows the start), so that `lockstep replay --pushes` can map the recorded
update tokens onto the ones a fresh simulator issues.

Writes go to a buffered file (created, empty, with the recorder), flushed at most every
`flush_interval` seconds of simulator time and on `close()`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Final

from simulator.apns import FakeApns, WallClock
from simulator.devices import TokenReport
from simulator.validation import DevicePush

__all__ = ["PushRecorder", "push_line"]

_FLUSH_BYTES: Final = 1 << 16


def push_line(push: DevicePush, device: str | None, *, t: float, at: float) -> dict[str, Any]:
    """The JSON-ready record of one accepted push (pure)."""
    return {
        "t": round(t, 6),
        "at": round(at, 6),
        "token": push.token,
        "device": device,
        "push_type": push.push_type,
        "topic": push.topic,
        "priority": push.priority,
        "expiration": push.expiration,
        "apns_id": push.apns_id,
        "payload": push.payload,
        "status": 200,
        "reason": None,
    }


def _is_start(push: DevicePush) -> bool:
    aps = push.payload.get("aps")
    return isinstance(aps, dict) and aps.get("event") == "start"


class PushRecorder:
    """Writes every push a `FakeApns` accepts to a JSON-lines file (see the module docstring)."""

    def __init__(self, path: Path, *, wall_clock: WallClock, flush_interval: float = 0.5) -> None:
        """Record into `path` (created or truncated now), timing lines with `wall_clock`."""
        self.path = Path(path)
        self.written = 0
        self._wall_clock = wall_clock
        self._flush_interval = flush_interval
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Device tokens are in every line: the file is its owner's only, whatever the umask.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC
        self._file: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8", buffering=_FLUSH_BYTES)
        self._t0: float | None = None
        self._last_flush = 0.0
        self._pending: dict[str, Any] | None = None  # a start waiting for its token report
        self._closed = False

    @classmethod
    def attach(cls, apns: FakeApns, path: Path) -> PushRecorder:
        """A recorder listening to `apns` (pushes and token reports)."""
        recorder = cls(path, wall_clock=apns.wall_clock)
        apns.listeners.append(recorder)
        apns.token_sinks.append(recorder.on_token)
        return recorder

    def on_accepted(self, push: DevicePush, device: str | None) -> None:
        """Listener hook: record one accepted push."""
        if self._closed:
            return
        self._emit_pending()
        at = self._wall_clock()
        if self._t0 is None:
            self._t0 = at
        line = push_line(push, device, t=at - self._t0, at=at)
        if _is_start(push) and device:
            self._pending = line  # completed by on_token if the device started an activity
        else:
            self._write(line)

    def on_token(self, report: TokenReport) -> None:
        """Token-sink hook: the update token a start issued goes on that start's line."""
        pending = self._pending
        if pending is not None and pending["device"] == report.device:
            pending["activity_token"] = report.activity_token
            self._emit_pending()

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def close(self) -> None:
        """Write what is pending and close the file."""
        if self._closed:
            return
        self._emit_pending()
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None

    def _emit_pending(self) -> None:
        if self._pending is not None:
            line, self._pending = self._pending, None
            self._write(line)

    def _write(self, line: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.written += 1
        at = float(line["at"])
        if at - self._last_flush >= self._flush_interval:
            self._file.flush()
            self._last_flush = at
