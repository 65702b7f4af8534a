"""`lockstep stream|end|start|update|end-activity`: drive a Lockstep server from the shell.

    lockstep stream build-42 --type segmented_progress --title "Deploy" --steps 5 --step 2
    lockstep stream web-1 --type metrics --title "web-1" --metric CPU=9% --metric MEM=45%
    lockstep end build-42 --title "Deployed" --type segmented_progress --steps 5 --step 5
    lockstep start --type progress --title "Backup" --percentage 10 --channel ops
    lockstep update ACTIVITY_ID --title "Backup" --percentage 55
    lockstep end-activity ACTIVITY_ID --title "Backup done" --percentage 100 \
        --auto-dismiss-minutes 0

Each command sends one request to the HTTP API (http-api.md: `PUT`/`DELETE
/live-activity/stream/{key}`, `POST /live-activity/start|update|end`) and prints the JSON answer.

Server: `--url`, else `$LOCKSTEP_URL`, else http://127.0.0.1:8787/api. API key: `--key`, else
`$LOCKSTEP_API_KEY`, else the first line of ./lockstep-data/api-key. The key is sent only in the
`Authorization` header and never printed.

Exit status: 0 on a 2xx answer (pretty JSON on stdout); 1 when the server answers with an error or
cannot be reached (its message on stderr); 2 for usage errors.

Request building is pure (`content_state`, `build_request`, `resolve_key`, ...); only `send` and
the handler touch the network, the environment and the working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DEFAULT_URL: Final = "http://127.0.0.1:8787/api"
"""Where a locally started `lockstep serve` listens (its API base path)."""

KEY_FILE: Final = Path("lockstep-data") / "api-key"
"""The API key file a local server writes, relative to the working directory."""

COLORS: Final = (
    "lime",
    "green",
    "cyan",
    "blue",
    "purple",
    "magenta",
    "red",
    "orange",
    "yellow",
    "gray",
)
"""The contract's colors (http-api.md, content state)."""

TYPES: Final = ("segmented_progress", "progress", "metrics", "stats", "value", "alert", "timer")
"""The contract's Live Activity types."""

_STREAM_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A plain decimal number; anything else ("1e3", "0x10", "nan") stays a string, so a value is
# never silently reinterpreted.
_NUMBER: Final = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_METRIC_VALUE: Final = re.compile(r"\s*([-+]?(?:\d+(?:\.\d+)?|\.\d+))\s*(.*)", re.DOTALL)
_NOT_A_UNIT: Final = re.compile(r"[\d.]|[eE][-+]?\d")

# Request-level flags, by subcommand: which ones each route accepts (http-api.md).
_CHANNELS: Final = frozenset({"stream", "start"})
_DISMISS: Final = frozenset({"end", "end-activity"})
_NEEDS_TITLE: Final = frozenset({"stream", "start", "update"})


class UsageError(Exception):
    """The command line cannot make a valid request (exit status 2)."""


class ClientError(Exception):
    """The server could not be reached or answered with something that is not HTTP."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP API call: method, path below the base URL, and the JSON body (None: no body)."""

    method: str
    path: str
    body: dict[str, Any] | None

    def data(self) -> bytes | None:
        """The encoded body."""
        return None if self.body is None else json.dumps(self.body).encode()


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A server answer: status and the decoded JSON body (the raw text if it is not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300


# -- argument types (argparse `type=` callables raise ArgumentTypeError -> exit 2) -------------


def parse_number(text: str) -> int | float:
    """A plain decimal number: int when it has no decimal point, else float."""
    text = text.strip()
    if _NUMBER.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return float(text) if "." in text else int(text)


def parse_count(text: str) -> int:
    """A non-negative integer."""
    value = parse_number(text)
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return value


def parse_scalar(text: str) -> int | float | str:
    """A number when `text` is a plain decimal number, else the string unchanged."""
    try:
        return parse_number(text)
    except argparse.ArgumentTypeError:
        return text


def parse_metric(text: str) -> dict[str, Any]:
    """`LABEL=VALUE[UNIT]` -> `{label, value, unit?}`: `CPU=9%` -> `{CPU, 9, "%"}`.

    A value starting with a number is split into the number and the unit after it (`12.5 ms`,
    `45%`); anything else (`OK`, `v1.2`, `1.2.3`) is kept whole as a string value.
    """
    label, sep, rest = text.partition("=")
    label = label.strip()
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=VALUE[UNIT], got {text!r}")
    if not rest.strip():
        raise argparse.ArgumentTypeError(f"metric {label!r} has no value")
    match = _METRIC_VALUE.fullmatch(rest)
    unit = match.group(2).strip() if match else ""
    # A "unit" that continues the number ("1.2.3", "12 34", "1e3") means this was not number+unit.
    if match is None or _NOT_A_UNIT.match(unit):
        return {"label": label, "value": rest.strip()}
    metric: dict[str, Any] = {"label": label, "value": parse_number(match.group(1))}
    if unit:
        metric["unit"] = unit
    return metric


def parse_json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--json is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--json must be a JSON object")
    return value


# -- request building (pure) ---------------------------------------------------------------------


def content_state(args: argparse.Namespace) -> dict[str, Any]:
    """The `content_state` the flags describe: `--json` first, then every given flag over it."""
    state: dict[str, Any] = dict(args.json or {})
    simple = {
        "title": args.title,
        "subtitle": args.subtitle,
        "type": args.type,
        "color": args.color,
        "number_of_steps": args.steps,
        "current_step": args.step,
        "step_color": args.step_color,
        "percentage": args.percentage,
        "value": args.value,
        "upper_limit": args.upper_limit,
        "duration_seconds": args.duration,
        "message": args.message,
        "auto_dismiss_seconds": getattr(args, "auto_dismiss_seconds", None),
        "auto_dismiss_minutes": getattr(args, "auto_dismiss_minutes", None),
    }
    state.update({k: v for k, v in simple.items() if v is not None})
    if args.metric:
        state["metrics"] = list(args.metric)
    if args.count_up:
        state["counts_down"] = False
    if args.paused:
        state["is_running"] = False
    if args.icon is not None:
        state["icon"] = _with_color({"symbol": args.icon}, args.icon_color)
    if args.badge is not None:
        state["badge"] = _with_color({"title": args.badge}, args.badge_color)
    return state


def _with_color(obj: dict[str, Any], color: str | None) -> dict[str, Any]:
    return obj if color is None else {**obj, "color": color}


def build_request(command: str, args: argparse.Namespace) -> ApiRequest:
    """The API call for one subcommand (`stream`, `end`, `start`, `update`, `end-activity`,
    `status`)."""
    if command == "status":
        if args.activity is not None:
            if args.key_or_id is not None:
                raise UsageError("give a stream KEY or --activity ID, not both")
            path = "/live-activity/" + urllib.parse.quote(args.activity, safe="")
            return ApiRequest("GET", path, None)
        if args.key_or_id is None:
            raise UsageError("give a stream KEY, or --activity ID")
        return ApiRequest("GET", _stream_path(args.key_or_id), None)
    state = content_state(args)
    if command in _NEEDS_TITLE and not state.get("title"):
        raise UsageError('--title is required (or a "title" in --json)')
    if command == "start" and not state.get("type"):
        raise UsageError("--type is required to start an activity")
    body: dict[str, Any] = {}
    if state:
        body["content_state"] = state
    alert = {k: v for k, v in (("title", args.alert_title), ("body", args.alert_body)) if v}
    if alert:
        body["alert"] = alert
    if args.tag:
        body["tags"] = list(args.tag)
    channels = list(getattr(args, "channel", None) or [])
    if command == "stream":
        if channels:
            body["channels"] = channels
        return ApiRequest("PUT", _stream_path(args.key_or_id), body)
    if command == "end":
        return ApiRequest("DELETE", _stream_path(args.key_or_id), body or None)
    if command == "start":
        if channels:
            body["target"] = {"channels": channels}
        return ApiRequest("POST", "/live-activity/start", body)
    if command in ("update", "end-activity"):
        route = "update" if command == "update" else "end"
        body = {"activity_id": args.key_or_id, **body}
        return ApiRequest("POST", f"/live-activity/{route}", body)
    raise UsageError(f"unknown command {command!r}")


def _stream_path(key: str) -> str:
    if _STREAM_KEY.fullmatch(key) is None:
        raise UsageError(f"invalid stream key {key!r}: 1-128 letters, digits, '_' or '-'")
    return "/live-activity/stream/" + urllib.parse.quote(key, safe="")


def resolve_url(flag: str | None, env: Mapping[str, str]) -> str:
    """`--url`, else `$LOCKSTEP_URL`, else the local default; without a trailing slash."""
    url = flag or env.get("LOCKSTEP_URL") or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"--url must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def resolve_key(flag: str | None, env: Mapping[str, str], cwd: Path) -> str:
    """`--key`, else `$LOCKSTEP_API_KEY`, else the first line of `lockstep-data/api-key`."""
    if flag:
        return flag.strip()
    if env.get("LOCKSTEP_API_KEY", "").strip():
        return env["LOCKSTEP_API_KEY"].strip()
    path = cwd / KEY_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise UsageError(f"cannot read the API key file {path}: {exc.strerror}") from None
    key = next((line.strip() for line in lines if line.strip()), "")
    if not key:
        raise UsageError(
            f"no API key: pass --key, set LOCKSTEP_API_KEY, or run where {KEY_FILE} exists"
        )
    return key


def error_text(response: ApiResponse) -> str:
    """One line for stderr from an error answer: the server's message and code."""
    body = response.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error") or body.get("code") or ""
        extra = {k: v for k, v in body.items() if k not in ("error", "message", "code")}
        text = f"{body['message']} (HTTP {response.status}{', ' + code if code else ''})"
        return text + (f" {json.dumps(extra, sort_keys=True)}" if extra else "")
    snippet = str(body).strip()[:200] if body else ""
    return f"HTTP {response.status}" + (f": {snippet}" if snippet else "")


# -- I/O -----------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: they would carry the Authorization header to another place."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect())


def send(request: ApiRequest, *, url: str, key: str, timeout: float) -> ApiResponse:
    """Send one request; any HTTP status is a response, a transport failure a `ClientError`."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    data = request.data()
    if data is not None:
        headers["Content-Type"] = "application/json"
    http_request = urllib.request.Request(
        url + request.path, data=data, headers=headers, method=request.method
    )
    try:
        with _OPENER.open(http_request, timeout=timeout) as answer:
            return ApiResponse(answer.status, _decode(answer.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return ApiResponse(exc.code, _decode(exc.read()))
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise ClientError(f"request to {url} failed: {exc}") from None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def run(args: argparse.Namespace) -> int:
    """Handler of every client subcommand: build, send, print; returns the exit status."""
    prog = f"lockstep {args.client_command}"
    try:
        request = build_request(args.client_command, args)
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


# -- argparse --------------------------------------------------------------------------------------

_EPILOG: Final = """\
examples:
  lockstep stream build-42 --type segmented_progress --title Deploy --steps 5 --step 2
  lockstep stream web-1 --type metrics --title web-1 --metric CPU=9% --metric MEM=45%
  lockstep end build-42 --title Deployed --steps 5 --step 5 --auto-dismiss-seconds 30
  lockstep start --type progress --title Backup --percentage 10 --channel ops
  lockstep update ACTIVITY_ID --title Backup --percentage 55
  lockstep end-activity ACTIVITY_ID --title "Backup done" --percentage 100
  lockstep status build-42        (or: lockstep status --activity ACTIVITY_ID)

server: --url, else $LOCKSTEP_URL, else http://127.0.0.1:8787/api
API key: --key, else $LOCKSTEP_API_KEY, else the first line of ./lockstep-data/api-key
exit status: 0 success (JSON answer on stdout), 1 server error or unreachable, 2 usage error
"""

_COMMANDS: Final = (
    ("stream", "KEY", "start or update the stream KEY's Live Activity (PUT)"),
    ("end", "KEY", "end the stream KEY's Live Activity (DELETE)"),
    ("start", None, "start a Live Activity (POST /live-activity/start)"),
    ("update", "ACTIVITY_ID", "update a Live Activity by id"),
    ("end-activity", "ACTIVITY_ID", "end a Live Activity by id"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `stream`, `end`, `start`, `update`, `end-activity` and `status` to the parser."""
    for name, positional, help_text in _COMMANDS:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if positional is not None:
            p.add_argument("key_or_id", metavar=positional)
        _add_connection(p)
        _add_content(p)
        _add_request_level(p, name)
        p.set_defaults(handler=run, client_command=name)
    help_text = "where each targeted device stands with a stream's (or an activity's) activity"
    p = sub.add_parser(
        "status",
        help=help_text,
        description=help_text + ": starting, awaiting_token, live, ended or dead",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("key_or_id", metavar="KEY", nargs="?", help="the stream key")
    p.add_argument("--activity", metavar="ID", help="an activity id instead of a stream key")
    _add_connection(p)
    p.set_defaults(handler=run, client_command="status")


def _add_connection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--url", help=f"API base URL (default $LOCKSTEP_URL or {DEFAULT_URL})")
    g.add_argument("--key", help=f"API key (default $LOCKSTEP_API_KEY, else the file ./{KEY_FILE})")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


_COLOR_HELP: Final = "accent color: " + ", ".join(COLORS)


def _add_content(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("content state")
    g.add_argument(
        "--type",
        choices=TYPES,
        metavar="TYPE",
        help="required to start: " + ", ".join(TYPES),
    )
    g.add_argument("--title")
    g.add_argument("--subtitle")
    g.add_argument("--color", choices=COLORS, metavar="COLOR", help=_COLOR_HELP)
    g.add_argument(
        "--steps", type=parse_count, metavar="N", help="segmented_progress: number of steps"
    )
    g.add_argument(
        "--step", type=parse_count, metavar="K", help="segmented_progress: completed steps"
    )
    g.add_argument(
        "--step-color",
        choices=COLORS,
        metavar="COLOR",
        help="segmented_progress: current step color",
    )
    g.add_argument("--percentage", type=parse_number, help="progress: 0-100")
    g.add_argument(
        "--value", type=parse_scalar, help="value: the readout; progress: with --upper-limit"
    )
    g.add_argument("--upper-limit", type=parse_number, help="progress: maximum of --value")
    g.add_argument("--duration", type=parse_number, help="timer: duration in seconds")
    g.add_argument("--count-up", action="store_true", help="timer: elapsed, not a countdown")
    g.add_argument("--paused", action="store_true", help="timer: frozen (is_running false)")
    g.add_argument(
        "--metric",
        action="append",
        type=parse_metric,
        metavar="LABEL=VALUE[UNIT]",
        help="metrics/stats: e.g. CPU=9%% (repeatable, at most 8)",
    )
    g.add_argument("--message", help="alert: the message")
    g.add_argument("--icon", metavar="SYMBOL", help="SF Symbol name")
    g.add_argument("--icon-color", choices=COLORS, metavar="COLOR")
    g.add_argument("--badge", metavar="TEXT")
    g.add_argument("--badge-color", choices=COLORS, metavar="COLOR")
    g.add_argument(
        "--json",
        type=parse_json_object,
        metavar="OBJECT",
        help="raw content_state JSON; the other flags are applied over it",
    )


def _add_request_level(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("request")
    g.add_argument("--alert-title", help="visible alert title sent with the push")
    g.add_argument("--alert-body", help="visible alert body sent with the push")
    g.add_argument("--tag", action="append", help="tag for the history (repeatable)")
    if name in _CHANNELS:
        g.add_argument("--channel", action="append", help="recipient channel slug (repeatable)")
    if name in _DISMISS:
        g.add_argument(
            "--auto-dismiss-minutes",
            type=parse_count,
            metavar="N",
            help="remove after N minutes (0: now)",
        )
        g.add_argument(
            "--auto-dismiss-seconds",
            type=parse_count,
            metavar="N",
            help="remove after N seconds (wins)",
        )
