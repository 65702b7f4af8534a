"""`lockstep push` and `lockstep badge`: push notifications and the app badge from the shell.

    lockstep push --title "Deploy" --message "v2 is live" --channels ops,deploys
    lockstep push --title "Backup" --message "done" --replace pn_0123...   (replace in place)
    lockstep push --title "Incident" --interruption-level time-sensitive --action Open=https://...
    lockstep badge 3 --channels ops
    lockstep badge 0                                                        (clear it)

`push` sends `POST /push-notification` (or `PUT /push-notification/{id}` with `--replace`),
`badge` sends `POST /badge`. Server and key are found as for the other client commands
(`engine.cli.common`: `--url`, `--config`, `$LOCKSTEP_URL`; `--key`, `$LOCKSTEP_API_KEY`, the
config's key, ./lockstep-data/api-key). A short summary goes to stdout, or the whole JSON answer
with `--json`; any non-2xx answer exits 1 with the server's message on stderr, a usage error
exits 2.

Request building is pure (`build_push`, `build_badge`); only `run` touches the network.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from engine.cli.common import (
    CONNECTION_HELP,
    ApiRequest,
    UsageError,
    add_connection,
    parse_json_object,
    run,
)
from engine.cli.content import parse_count, parse_scalar

__all__ = ["build_badge", "build_push", "register", "summary"]

LEVELS: Final = ("passive", "active", "time-sensitive")
"""The contract's `interruption_level` values."""


# -- argument types ------------------------------------------------------------------------------


def parse_list(text: str) -> list[str]:
    """A comma-separated list: `ops, deploys` -> `["ops", "deploys"]` (blanks dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_pair(text: str) -> tuple[str, str]:
    """`NAME=VALUE` -> `(NAME, VALUE)`; the value may itself contain `=`."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def json_object(flag: str) -> Callable[[str], dict[str, Any]]:
    """An argparse type: a JSON object given for `flag` (a usage error names the flag)."""

    def parse(text: str) -> dict[str, Any]:
        try:
            return parse_json_object(text, flag)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


# -- request building (pure) ---------------------------------------------------------------------


def _channels(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for group in args.channels or ():
        out += group
    out += args.channel or []
    return list(dict.fromkeys(out))


def _tags(args: argparse.Namespace) -> list[str] | None:
    if args.clear_tags:
        return []
    tags = [t for group in args.tags or () for t in group] + list(args.tag or [])
    return list(dict.fromkeys(tags)) or None


def _metadata(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.clear_metadata:
        return {}
    meta: dict[str, Any] = {}
    if args.metadata_file is not None:
        meta.update(_read_json_object(args.metadata_file, "--metadata-file"))
    meta.update((name, parse_scalar(value)) for name, value in args.metadata or ())
    return meta or None


def _read_json_object(path: Path, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{flag}: {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: {path} must hold a JSON object")
    return value


def build_push(args: argparse.Namespace) -> ApiRequest:
    """The send (or, with `--replace ID`, the replace) request the flags describe: `--body`
    first, then every given flag over it."""
    body: dict[str, Any] = dict(args.body or {})
    simple = {
        "title": args.title,
        "message": args.message,
        "subtitle": args.subtitle,
        "icon": args.icon,
        "media": args.media,
        "redirection": args.redirection,
        "badge": args.badge,
        "payload": args.payload,
    }
    body.update({k: v for k, v in simple.items() if v is not None})
    actions = [{"title": t, "type": "open_url", "url": u} for t, u in args.action or ()]
    actions += [{"title": t, "type": "webhook", "url": u} for t, u in args.webhook or ()]
    if actions:
        body["actions"] = actions
    tags, metadata = _tags(args), _metadata(args)
    if tags is not None:
        body["tags"] = tags
    if metadata is not None:
        body["metadata"] = metadata
    if not body.get("title"):
        raise UsageError('--title is required (or a "title" in --body)')
    channels = _channels(args)
    if args.replace is not None:
        if channels or args.sound or args.interruption_level:
            raise UsageError(
                "--replace goes to the devices of the original notification, silently: "
                "--channels, --sound and --interruption-level do not apply"
            )
        path = "/push-notification/" + urllib.parse.quote(args.replace, safe="")
        return ApiRequest("PUT", path, body)
    if args.sound is not None:
        body["sound"] = args.sound
    if args.interruption_level is not None:
        body["interruption_level"] = args.interruption_level
    if channels:
        body["target"] = {"channels": channels}
    return ApiRequest("POST", "/push-notification", body)


def build_badge(args: argparse.Namespace) -> ApiRequest:
    """`POST /badge` with the count (0 clears) and the channels, if any."""
    body: dict[str, Any] = {"badge": args.count}
    channels = _channels(args)
    if channels:
        body["target"] = {"channels": channels}
    return ApiRequest("POST", "/badge", body)


def summary(command: str, body: Any) -> str:
    """One human line for a successful answer."""
    if not isinstance(body, dict):
        return str(body)
    queued = body.get("devices_queued") or 0
    tail = f", {queued} queued" if queued else ""
    if command == "badge":
        return (
            f"Badge set to {body.get('badge')} on {body.get('devices_updated', 0)} "
            f"of {body.get('devices_targeted', 0)} device(s){tail}"
        )
    verb = "Replaced" if command == "replace" else "Sent"
    return (
        f"{verb} notification {body.get('notification_id')}: APNs accepted it for "
        f"{body.get('devices_notified', 0)} of {body.get('devices_targeted', 0)} device(s){tail}"
    )


# -- I/O -----------------------------------------------------------------------------------------


def _run(args: argparse.Namespace, build: Callable[[argparse.Namespace], ApiRequest]) -> int:
    try:
        request = build(args)
    except UsageError as exc:
        print(f"lockstep {args.push_command}: error: {exc}", file=sys.stderr)
        return 2
    kind = "replace" if request.method == "PUT" else args.push_command
    return run(args, lambda session: session.call(request), lambda body: summary(kind, body))


def run_push(args: argparse.Namespace) -> int:
    """Handler of `lockstep push`."""
    return _run(args, build_push)


def run_badge(args: argparse.Namespace) -> int:
    """Handler of `lockstep badge`."""
    return _run(args, build_badge)


# -- argparse --------------------------------------------------------------------------------------

_EPILOG: Final = (
    """\
examples:
  lockstep push --title Deploy --message "v2 is live" --channels ops,deploys
  lockstep push --title Deploy --subtitle prod --interruption-level time-sensitive \\
      --action "Open=https://ci.example.com/42" --tags deploy --metadata build=42
  lockstep push --replace pn_0123abcd... --title Deploy --message "v2 rolled back"
  lockstep badge 3 --channels ops
  lockstep badge 0

"""
    + CONNECTION_HELP
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `push` and `badge` to the parser."""
    help_text = "send (or --replace) a push notification to the devices' apps"
    p = sub.add_parser(
        "push",
        help=help_text,
        description=help_text,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("notification")
    g.add_argument("--title", "-t", help="required")
    g.add_argument("--message", "-m", help="the body text")
    g.add_argument("--subtitle", "-s")
    g.add_argument("--interruption-level", choices=LEVELS, help=", ".join(LEVELS))
    g.add_argument("--sound", help="a sound name, e.g. default")
    g.add_argument("--badge", type=parse_count, metavar="N", help="set the app badge with it")
    g.add_argument("--icon", metavar="HTTPS_URL", help="an image URL for the icon")
    g.add_argument("--media", metavar="HTTPS_URL", help="image, audio or video; not with actions")
    g.add_argument("--redirection", metavar="URL", help="opened when the notification is tapped")
    g.add_argument(
        "--action",
        action="append",
        type=parse_pair,
        metavar="TITLE=URL",
        help="a button opening URL (repeatable, at most 4 with --webhook)",
    )
    g.add_argument(
        "--webhook",
        action="append",
        type=parse_pair,
        metavar="TITLE=HTTPS_URL",
        help="a button the server calls back (repeatable)",
    )
    g.add_argument(
        "--payload", type=json_object("--payload"), metavar="OBJECT", help="app data (JSON)"
    )
    g.add_argument(
        "--body",
        type=json_object("--body"),
        metavar="OBJECT",
        help="the raw request JSON; the other flags are applied over it",
    )
    g.add_argument("--replace", metavar="NOTIFICATION_ID", help="replace this notification")
    _add_history(p)
    _add_targets(p)
    add_connection(p)
    p.set_defaults(handler=run_push, push_command="push")

    help_text = "set the app icon badge count on the devices (0 clears it)"
    p = sub.add_parser(
        "badge",
        help=help_text,
        description=help_text,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("count", type=parse_count, metavar="N")
    _add_targets(p)
    add_connection(p)
    p.set_defaults(handler=run_badge, push_command="badge")


def _add_targets(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recipients (default: every device)")
    g.add_argument(
        "--channels", action="append", type=parse_list, metavar="A,B", help="channel slugs"
    )
    g.add_argument("--channel", action="append", help="one channel slug (repeatable)")


def _add_history(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("history (server-side only, never pushed)")
    g.add_argument("--tags", action="append", type=parse_list, metavar="A,B")
    g.add_argument("--tag", action="append", help="one tag (repeatable)")
    g.add_argument("--clear-tags", action="store_true", help="replace: clear the stored tags")
    g.add_argument("--metadata", action="append", type=parse_pair, metavar="KEY=VALUE")
    g.add_argument("--metadata-file", type=Path, metavar="FILE", help="a JSON object of metadata")
    g.add_argument(
        "--clear-metadata", action="store_true", help="replace: clear the stored metadata"
    )
