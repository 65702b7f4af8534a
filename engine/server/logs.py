"""How `lockstep serve` logs: one line per record, as text or as JSON, and an access log.

The access log is one record per HTTP request on the logger `lockstep.access` (`ACCESS`), at
INFO, written by the HTTP app (`engine.server.http.app`) only while that logger is enabled, so
an embedding program that never configures logging pays one level check per request. It names
the method, the route *template* (`/api/live-activity/stream/{stream_key}`, never the path: a
stream key or device id may be a customer's name), the status, the duration and the request id
(the client's `X-Request-Id` when it is a sane token, else one the server made; the answer
carries it back). It never holds a header, a key, a token or a body.

`configure(verbose=..., fmt=..., access=...)` sets up the root logger for the command line:
`text` lines are `2026-12-07T14:30:00.123Z INFO lockstep.access: PUT /api/... 200 1.84ms
id=...`; `json` lines are one object each (`time`, `level`, `logger`, `message`, and for an
access record `method`, `route`, `status`, `duration_ms`, `request_id`, `client`), for log
shippers that parse JSON.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import sys
import time
from typing import Any, Final, Literal

__all__ = [
    "ACCESS",
    "FORMATS",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "access",
    "configure",
    "request_id",
]

ACCESS: Final = logging.getLogger("lockstep.access")
"""The access log's logger."""

LogFormat = Literal["text", "json"]
FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")

# What a client may choose as its request id: a short token, nothing a log line could be forged
# with (no spaces, quotes or newlines).
_SANE_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_FIELDS: Final = ("method", "route", "status", "duration_ms", "request_id", "client")
# Request ids only tell log lines apart: they need to be unique, not unguessable, so a generator
# seeded once from the OS stands in for a system call per request.
_IDS: Final = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)  # a forked worker must not repeat its parent's ids


def request_id(given: bytes | None) -> str:
    """The client's `X-Request-Id` when it is a sane token, else a new random one."""
    if given is not None and _SANE_ID.fullmatch(given):
        return given.decode()
    return f"{_IDS.getrandbits(64):016x}"


def access(
    method: str, route: str, status: int, seconds: float, rid: str, client: str | None
) -> None:
    """Log one request (the caller checks `ACCESS.isEnabledFor(logging.INFO)` first)."""
    ms = round(seconds * 1000, 3)
    ACCESS.info(
        "%s %s %d %.2fms id=%s",
        method,
        route,
        status,
        ms,
        rid,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": ms,
            "request_id": rid,
            "client": client,
        },
    )


def _when(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger>: <message>` (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        """One record as one text line."""
        line = f"{_when(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record; an access record adds its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """One record as one JSON line (a traceback goes in `exc`, newlines escaped)."""
        out: dict[str, Any] = {
            "time": _when(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def configure(*, verbose: bool, fmt: LogFormat, access: bool) -> None:
    """Log to stderr in `fmt`: WARNING and up (INFO with `verbose`), the access log at INFO
    unless `access` is False, and the cluster's partition changes at INFO. Replaces handlers set
    up before (a second call reconfigures)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    ACCESS.setLevel(logging.INFO if access else logging.WARNING)
    # A partition changing hands is what an operator of a cluster looks for first.
    logging.getLogger("lockstep.cluster").setLevel(logging.INFO)
