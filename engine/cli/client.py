"""`lockstep stream|end|start|update|end-activity|status`: drive Live Activities from the shell.

    lockstep stream build-42 --type segmented_progress --title "Deploy" --steps 5 --step 2
    lockstep stream web-1 --type metrics --title "web-1" --metric CPU=9% --metric MEM=45%
    lockstep end build-42 --step 5 --auto-dismiss-seconds 30
    ID=$(lockstep start --type progress --title "Backup" --percentage 10 --channels ops --id-only)
    lockstep update "$ID" --percentage 55
    lockstep end-activity "$ID" --title "Backup done" --percentage 100 --auto-dismiss-minutes 0

Each command sends one request to the HTTP API (http-api.md: `PUT`/`DELETE
/live-activity/stream/{key}`, `POST /live-activity/start|update|end`) and prints a summary of the
answer (`--json`: the answer itself; `--id-only`: the activity id). Server, key, output and exit
status are `engine.cli.common`'s.

The contract needs a `title` in every content state. When `stream`, `end`, `update` or
`end-activity` is given no title, the command first reads the activity's last state (`GET
/live-activity/stream/{key}` or `/live-activity/{id}`) and reuses it: its title for an update or
end by id (the server keeps every field such a call leaves out), its whole state under the given
flags for a stream call (which carries the stream's whole state), so `lockstep stream deploy-42
--step 3` moves one step. `lockstep end KEY` with no content flags at all sends no content state:
the stream ends with its last state.

Request building is pure (`build_request`, `fill_from`); only `perform` talks to the server.
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from typing import Any, Final

from engine.cli import common
from engine.cli.common import ApiRequest, ApiResponse, Session, UsageError
from engine.cli.content import add_content, content_state, parse_count

__all__ = ["build_request", "fill_from", "needs_last_state", "perform", "register", "summarize"]

_STREAM_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")

# Request-level options, by subcommand: which ones each route accepts (http-api.md).
_CHANNELS: Final = frozenset({"stream", "start"})
_DISMISS: Final = frozenset({"end", "end-activity"})
_CLEARABLE: Final = frozenset({"stream", "end", "update", "end-activity"})
_REUSES: Final = frozenset({"stream", "end", "update", "end-activity"})
_BY_KEY: Final = frozenset({"stream", "end"})
_BUTTONS: Final = ("action", "secondary_action")


def build_request(
    command: str, args: argparse.Namespace, last: dict[str, Any] | None = None
) -> ApiRequest:
    """The API call for one subcommand; `last` is the activity's last state (`needs_last_state`)."""
    if command == "status":
        return status_request(args)
    state = content_state(args)
    if last is not None:
        state = fill_from(command, state, last)
    if not state.get("title"):
        if command == "start" or (command == "stream" and last is None):
            raise UsageError('--title is required (or a "title" in --content-state)')
        if command in _REUSES and (state or command == "stream"):
            raise UsageError("--title is required (and the activity's last state has none)")
    if command == "start" and not state.get("type"):
        raise UsageError("--type is required to start an activity")
    body = _request_fields(command, args)
    if state:
        body = {"content_state": state, **body}
    channels = common.channels_of(args)
    if command == "stream":
        return ApiRequest("PUT", _stream_path(args.key_or_id), _with_channels(body, channels))
    if command == "end":
        return ApiRequest("DELETE", _stream_path(args.key_or_id), body or None)
    if command == "start":
        if channels:
            body["target"] = {"channels": channels}
        return ApiRequest("POST", "/live-activity/start", body)
    if command in ("update", "end-activity"):
        route = "update" if command == "update" else "end"
        return ApiRequest(
            "POST", f"/live-activity/{route}", {"activity_id": args.key_or_id, **body}
        )
    raise UsageError(f"unknown command {command!r}")


def _request_fields(command: str, args: argparse.Namespace) -> dict[str, Any]:
    """Alert, buttons, tags and metadata: the request-level fields besides the recipients."""
    body: dict[str, Any] = {}
    alert = {k: v for k, v in (("title", args.alert_title), ("body", args.alert_body)) if v}
    if alert:
        body["alert"] = alert
    for name in _BUTTONS:
        text = getattr(args, name)
        if text is not None:
            body[name] = common.parse_json_object(text, "--" + name.replace("_", "-"))
    tags = common.tags_of(args)
    if tags is not None:
        body["tags"] = tags
    metadata = common.metadata_of(args)
    if metadata is not None:
        body["metadata"] = metadata
    return body


def _with_channels(body: dict[str, Any], channels: list[str]) -> dict[str, Any]:
    return {**body, "channels": channels} if channels else body


def status_request(args: argparse.Namespace) -> ApiRequest:
    """`lockstep status KEY` or `lockstep status --activity ID`."""
    if args.activity is not None:
        if args.key_or_id is not None:
            raise UsageError("give a stream KEY or --activity ID, not both")
        return ApiRequest("GET", _activity_path(args.activity), None)
    if args.key_or_id is None:
        raise UsageError("give a stream KEY, or --activity ID")
    return ApiRequest("GET", _stream_path(args.key_or_id), None)


def _stream_path(key: str) -> str:
    if _STREAM_KEY.fullmatch(key) is None:
        raise UsageError(f"invalid stream key {key!r}: 1-255 letters, digits, '_' or '-'")
    return "/live-activity/stream/" + urllib.parse.quote(key, safe="")


def _activity_path(activity_id: str) -> str:
    return "/live-activity/" + urllib.parse.quote(activity_id, safe="")


def needs_last_state(command: str, args: argparse.Namespace) -> ApiRequest | None:
    """The status call that reads the activity's last state, when `command` has content flags
    but no title (module docstring); None when the request stands on its own."""
    if command not in _REUSES:
        return None
    state = content_state(args)
    if not state or state.get("title"):
        return None
    if command in _BY_KEY:
        return ApiRequest("GET", _stream_path(args.key_or_id), None)
    return ApiRequest("GET", _activity_path(args.key_or_id), None)


def fill_from(command: str, state: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """`state` completed from the activity's `last` state (as the status call shows it).

    By id only the title is needed: the server keeps what an update or end leaves out. A stream
    call replaces the stream's state, so it gets the whole last state under `state`, less the
    buttons (request fields, sent as title/type/url only) and a countdown's window (the server
    keeps it; sending it again would restart the timer, and an end without one freezes the timer
    where it stands).
    """
    if command not in _BY_KEY:
        return {"title": last.get("title"), **state} if last.get("title") else state
    base = {k: v for k, v in last.items() if k not in _BUTTONS}
    if base.get("counts_down") is not False:
        base.pop("duration_seconds", None)
    return {**base, **state}


def perform(args: argparse.Namespace, session: Session) -> ApiResponse:
    """Read the last state when needed, then send the command's request."""
    last: dict[str, Any] | None = None
    lookup = needs_last_state(args.command, args)
    if lookup is not None:
        found = session.call(lookup)
        if found.status == 404 and args.command == "stream":
            raise UsageError("--title and --type are required: the stream has no activity yet")
        if not found.ok:
            return found  # an unknown stream or activity: its 404 is the answer
        body = found.body if isinstance(found.body, dict) else {}
        last = body.get("content_state") if isinstance(body.get("content_state"), dict) else {}
    return session.call(build_request(args.command, args, last))


def run(args: argparse.Namespace) -> int:
    """Handler of every subcommand here."""
    return common.run(args, lambda session: perform(args, session), summarize)


# -- output --------------------------------------------------------------------------------------


def summarize(body: Any) -> str:
    """A few lines for a person: what happened, to which activity, on how many devices."""
    if not isinstance(body, dict):
        return str(body)
    if "devices" in body and "version" in body:
        return _summarize_status(body)
    what = str(body.get("operation") or ("ignored" if body.get("ignored") else "done"))
    subject = f"stream {body['stream_key']}: " if body.get("stream_key") else ""
    line = f"{subject}{what}"
    if body.get("activity_id"):
        line += f", activity {body['activity_id']}"
    for name, label in (
        ("previous_activity_id", "replaces"),
        ("ended_activity_id", "ended to make room"),
    ):
        if body.get(name):
            line += f" ({label} {body[name]})"
    lines = [line]
    if "devices_notified" in body or "devices_queued" in body:
        notified, queued = body.get("devices_notified", 0), body.get("devices_queued", 0)
        lines.append(f"  devices: {notified} notified, {queued} queued")
    lines.extend(f"  {name}: {body[name]}" for name in ("message", "warning") if body.get(name))
    lines.extend(f"  error: {error}" for error in body.get("errors") or ())
    return "\n".join(lines)


def _summarize_status(body: dict[str, Any]) -> str:
    head = f"activity {body.get('activity_id')}"
    if body.get("stream_key"):
        head += f" (stream {body['stream_key']})"
    head += f": version {body.get('version')}, {'ended' if body.get('ended') else 'live'}"
    lines = [head]
    for device in body.get("devices") or ():
        row = (
            f"  {device.get('device_id')}: {device.get('state')}, "
            f"confirmed v{device.get('confirmed_version')}"
        )
        if device.get("last_status") is not None:
            row += f", last APNs answer {device['last_status']}"
            row += f" {device['last_reason']}" if device.get("last_reason") else ""
        if device.get("overdue"):
            row += " (overdue)"
        lines.append(row)
    return "\n".join(lines)


# -- argparse ------------------------------------------------------------------------------------

_EPILOG: Final = (
    """\
examples:
  lockstep stream build-42 --type segmented_progress --title Deploy --steps 5 --step 2
  lockstep stream web-1 --type metrics --title web-1 --metric CPU=9% --metric MEM=45% \\
      --channels ops,web --tags infra --metadata '{"host": "web-1"}'
  lockstep stream build-42 --step 3         (no --title: the stream's last state, one step on)
  lockstep end build-42                     (ends with the stream's last state)
  lockstep end build-42 --step 5 --auto-dismiss-seconds 30
  lockstep start --type progress --title Backup --percentage 10 --id-only
  lockstep update ACTIVITY_ID --percentage 55 --clear-tags
  lockstep end-activity ACTIVITY_ID --title "Backup done" --percentage 100
  lockstep status build-42 --json           (or: lockstep status --activity ACTIVITY_ID)

"""
    + common.CONNECTION_HELP
)

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
        p = _parser(sub, name, help_text)
        if positional is not None:
            p.add_argument("key_or_id", metavar=positional)
        common.add_connection(p)
        add_content(p)
        _add_request_level(p, name)
        p.set_defaults(handler=run)
    help_text = "where each targeted device stands with a stream's (or an activity's) activity"
    p = _parser(sub, "status", help_text + ": starting, awaiting_token, live, ended or dead")
    p.add_argument("key_or_id", metavar="KEY", nargs="?", help="the stream key")
    p.add_argument("--activity", metavar="ID", help="an activity id instead of a stream key")
    common.add_connection(p)
    p.set_defaults(handler=run)


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text.split(":")[0],
        description=help_text,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_request_level(p: argparse.ArgumentParser, name: str) -> None:
    g = p.add_argument_group("request")
    g.add_argument("--alert-title", help="visible alert title sent with the push")
    g.add_argument("--alert-body", help="visible alert body sent with the push")
    g.add_argument("--action", metavar="OBJECT", help="primary button as JSON {title,type,url}")
    g.add_argument("--secondary-action", metavar="OBJECT", help="secondary button as JSON")
    common.add_tags(g, clearable=name in _CLEARABLE)
    common.add_metadata(g)
    if name in _CHANNELS:
        common.add_channels(g)
    if name in ("start", "stream"):
        g.add_argument(
            "--id-only",
            action="store_const",
            const="activity_id",
            help="print only the activity id (for scripts)",
        )
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
