"""`lockstep metrics set KEY VALUE`: set a widget metric's value from the shell.

    lockstep metrics set revenue.today 1234.5
    lockstep metrics set build.status "3 of 5" --timestamp 2027-01-15T08:00:00Z
    lockstep metrics set build.number 007 --text       (sent as the string "007")

One `POST /metrics/{key}/value` (the ActivitySmith contract's `MetricValueUpdateRequest`): VALUE
is sent as a number when it is a plain decimal number, else as a string (`--text` always sends
the string). The answer is summed up on one line (`--json`: the JSON answer): whether the value
was stored (an older timestamp never overwrites a newer value) and how many devices' widgets are
told to reload.

Server, key, `--config` and exit status as for the other client commands (`engine.cli.common`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import urllib.parse
from typing import Any, Final

from engine.cli.common import (
    CONNECTION_HELP,
    ApiRequest,
    Session,
    UsageError,
    add_connection,
    run,
)
from engine.cli.content import parse_scalar

__all__ = ["build_request", "register", "set_value"]

_KEY: Final = re.compile(r"[a-z0-9._-]{1,64}")


def build_request(args: argparse.Namespace) -> ApiRequest:
    """The `POST /metrics/{key}/value` call for `metrics set` (pure)."""
    key: str = args.metric_key
    if _KEY.fullmatch(key) is None:
        raise UsageError(f"invalid metric key {key!r}: 1-64 lowercase letters, digits, . _ or -")
    raw: str = args.value
    value = raw if args.text else parse_scalar(raw)
    if isinstance(value, str) and not 1 <= len(value) <= 64:
        raise UsageError(f"a text value must be 1-64 characters, got {len(value)}")
    body: dict[str, Any] = {"value": value}
    if args.timestamp is not None:
        body["timestamp"] = _timestamp(args.timestamp)
    return ApiRequest("POST", f"/metrics/{urllib.parse.quote(key, safe='')}/value", body)


def _timestamp(text: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--timestamp must be an ISO-8601 date-time, got {text!r}") from None
    return moment.isoformat()


def set_value(args: argparse.Namespace) -> int:
    """Handler of `lockstep metrics set`: build, send, print; returns the exit status."""
    request = None
    try:
        request = build_request(args)
    except UsageError as exc:
        print(f"lockstep metrics set: error: {exc}", file=sys.stderr)
        return 2
    return run(args, lambda session: _call(session, request), _summary)


def _call(session: Session, request: ApiRequest) -> Any:
    return session.call(request)


def _summary(body: Any) -> str:
    """`revenue.today = 1234.5 (stored; 3 devices' widgets told to reload)`."""
    if not isinstance(body, dict) or "key" not in body:
        return json.dumps(body, ensure_ascii=False)
    stored = "stored" if body.get("stored", True) else f"not stored: {body.get('message', '')}"
    devices = body.get("devices_targeted", 0)
    return (
        f"{body['key']} = {json.dumps(body.get('value'), ensure_ascii=False)} "
        f"({stored}; {devices} devices' widgets told to reload)"
    )


_EPILOG: Final = (
    """\
examples:
  lockstep metrics set revenue.today 1234.5
  lockstep metrics set build.status "3 of 5" --timestamp 2027-01-15T08:00:00Z
  lockstep metrics set build.number 007 --text

"""
    + CONNECTION_HELP
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `metrics` (with its `set` subcommand) to the parser."""
    parser = sub.add_parser(
        "metrics", help="widget metrics", description="Widget metrics (shown in the app's widgets)."
    )
    actions = parser.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    help_text = "set a widget metric's value; the devices' widgets are told to reload"
    p = actions.add_parser(
        "set",
        help=help_text,
        description=help_text,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("metric_key", metavar="KEY", help="1-64 lowercase letters, digits, . _ -")
    p.add_argument("value", metavar="VALUE", help="a number, or a text of 1-64 characters")
    p.add_argument("--text", action="store_true", help="send VALUE as text even if it is a number")
    p.add_argument(
        "--timestamp", help="when the value was measured, ISO-8601 (default: when it arrives)"
    )
    add_connection(p)
    p.set_defaults(handler=set_value)
