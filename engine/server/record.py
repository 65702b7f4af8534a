"""Recording the API traffic of a running server (`lockstep serve --record traffic.jsonl`).

Every accepted Live Activity call that carries a body (the calls that change something: stream
PUT/DELETE, start, update, end; notifications, badges and metric values are not recorded)
becomes one JSON line:

    {"t": 12.034, "method": "PUT", "path": "/api/live-activity/stream/prod-web-1",
     "body": {...}, "activity_id": "la_..."}

`t` is seconds since the first recorded call (monotonic clock), `body` the request's JSON (null
for an empty DELETE body), and `activity_id`, on `start` and stream `PUT` lines only, the id the
server answered with, so that `lockstep replay` can map the recorded ids of later update / end
calls to the ids a new run hands out. Headers are never seen here, so API keys are never recorded.

The HTTP front calls `TrafficRecorder.record` synchronously on its event loop; that only stamps
the time and puts the raw bytes into a bounded queue (a full queue drops the call and counts it,
rather than slow the API down). A small writer thread decodes, encodes and appends the lines,
flushing after every batch, so a file being recorded can be read (or tailed) at any time.
`traffic_line` is the pure part: raw call -> JSON line. The file holds request bodies (device
names, metadata, webhook bodies): it is written owner-only (0600), even when it existed before.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import msgspec

from engine.server.files import open_private

__all__ = ["ID_ROUTES", "TrafficRecorder", "traffic_line"]

log = logging.getLogger("lockstep.record")

ID_ROUTES: Final = ("/live-activity/start", "/live-activity/stream/")
"""Routes whose answer's `activity_id` is recorded (the ids later calls may refer to)."""

_BATCH: Final = 512  # lines per write + flush
_STOP: Final = object()
_encoder = msgspec.json.Encoder()

_Item = tuple[float, str, str, bytes, bytes]


def _json_or_none(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None  # the server accepted it, so this cannot happen; never fail a line for it


def traffic_line(t: float, method: str, path: str, body: bytes, reply: bytes = b"") -> bytes:
    """One recorded call as a JSON line (with the trailing newline)."""
    line: dict[str, Any] = {
        "t": round(t, 6),
        "method": method,
        "path": path,
        "body": _json_or_none(body),
    }
    if reply and (path.endswith(ID_ROUTES[0]) or (method == "PUT" and ID_ROUTES[1] in path)):
        answer = _json_or_none(reply)
        if isinstance(answer, dict) and isinstance(answer.get("activity_id"), str):
            line["activity_id"] = answer["activity_id"]
    return _encoder.encode(line) + b"\n"


class TrafficRecorder:
    """Appends recorded calls to a JSON-lines file from a writer thread (see the module doc).

    Use it as a context manager (or `start()` / `close()`); `record` is the `create_app` hook
    (`record_reply=`). The file is truncated when the recorder starts.
    """

    def __init__(
        self,
        path: Path,
        *,
        capacity: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Record into `path`, buffering at most `capacity` calls not yet written."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.path = Path(path)
        self.written = 0
        self.dropped = 0
        self._clock = clock
        self._t0: float | None = None
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"TrafficRecorder({str(self.path)!r}, written={self.written})"

    def start(self) -> TrafficRecorder:
        """Open (truncate) the file and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open_private(self.path)
        self._thread = threading.Thread(
            target=self._write_loop, args=(handle,), name="lockstep-record", daemon=True
        )
        self._thread.start()
        return self

    def record(self, method: str, path: str, body: bytes, reply: bytes = b"") -> None:
        """Queue one accepted call (never blocks; a full buffer drops it and counts it)."""
        if self._closed:
            self.dropped += 1
            return
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        try:
            self._queue.put_nowait((now - self._t0, method, path, bytes(body), bytes(reply)))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered, close the file and stop the thread (waits at most `timeout`)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("traffic recorder: buffer still full at shutdown; stopping anyway")
        self._thread.join(timeout)
        if self.dropped:
            log.warning("traffic recorder: %d calls were not recorded (buffer full)", self.dropped)

    def __enter__(self) -> TrafficRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _write_loop(self, handle: Any) -> None:
        with handle:
            while True:
                item = self._queue.get()
                batch = [item]
                while item is not _STOP and len(batch) < _BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    batch.append(item)
                lines = [traffic_line(*i) for i in batch if isinstance(i, tuple)]
                try:
                    handle.write(b"".join(lines))
                    handle.flush()
                except OSError:
                    log.exception("traffic recorder: writing %s failed; recording stops", self.path)
                    self._closed = True
                    return
                self.written += len(lines)
                if item is _STOP:
                    return
