"""`lockstep metrics set KEY VALUE`: set a widget metric's value from the shell.

    lockstep metrics set revenue.today 1234.5
    lockstep metrics set build.status "3 of 5" --timestamp 2027-01-15T08:00:00Z
    lockstep metrics set build.number 007 --text       (sent as the string "007")

One `POST /metrics/{key}/value` (the ActivitySmith contract's `MetricValueUpdateRequest`): VALUE
is sent as a number when it is a plain decimal number, else as a string (`--text` always sends
the string). The JSON answer is printed: whether the value was stored (an older timestamp never
overwrites a newer value) and how many devices' widgets are told to reload.

Server, key and exit status as for the other client commands (`engine.cli.client`): `--url`, else
`$LOCKSTEP_URL`, else the local default; `--key`, else `$LOCKSTEP_API_KEY`, else
./lockstep-data/api-key; 0 on a 2xx answer, 1 on an error answer or an unreachable server (the
server's message on stderr), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Final

from engine.cli.client import (
    DEFAULT_URL,
    KEY_FILE,
    ApiRequest,
    ClientError,
    UsageError,
    error_text,
    parse_scalar,
    resolve_key,
    resolve_url,
    send,
)

__all__ = ["build_request", "register", "run"]

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


def run(args: argparse.Namespace) -> int:
    """Handler of `lockstep metrics set`: build, send, print; returns the exit status."""
    prog = "lockstep metrics set"
    try:
        request = build_request(args)
        url = resolve_url(args.url, os.environ)
        key = resolve_key(args.key, os.environ, Path.cwd())
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        response = send(request, url=url, key=key, timeout=args.timeout)
    except ClientError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    if not response.ok:
        print(f"{prog}: {error_text(response)}", file=sys.stderr)
        return 1
    if response.body is not None:
        print(json.dumps(response.body, indent=2, ensure_ascii=False))
    return 0


_EPILOG: Final = """\
examples:
  lockstep metrics set revenue.today 1234.5
  lockstep metrics set build.status "3 of 5" --timestamp 2027-01-15T08:00:00Z
  lockstep metrics set build.number 007 --text

server: --url, else $LOCKSTEP_URL, else http://127.0.0.1:8787/api
API key: --key, else $LOCKSTEP_API_KEY, else the first line of ./lockstep-data/api-key
exit status: 0 success (JSON answer on stdout), 1 server error or unreachable, 2 usage error
"""


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
    g = p.add_argument_group("server")
    g.add_argument("--url", help=f"API base URL (default $LOCKSTEP_URL or {DEFAULT_URL})")
    g.add_argument("--key", help=f"API key (default $LOCKSTEP_API_KEY, else the file ./{KEY_FILE})")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    p.set_defaults(handler=run)
