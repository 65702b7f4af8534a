"""`lockstep push` and `lockstep badge`: request building, summaries and usage errors.

The commands against a real server are in tests/e2e/test_sdk_notifications.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import push as cli
from engine.cli.common import ApiRequest, UsageError


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lockstep")
    cli.register(p.add_subparsers(dest="command"))
    return p.parse_args(list(argv))


def build(*argv: str) -> ApiRequest:
    args = parse(*argv)
    return cli.build_push(args) if args.push_command == "push" else cli.build_badge(args)


def test_push_with_every_flag(tmp_path: Path) -> None:
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"build": 41, "env": "prod"}))
    req = build(
        "push",
        "--title",
        "Deploy",
        "-m",
        "v2 is live",
        "--subtitle",
        "prod",
        "--interruption-level",
        "time-sensitive",
        "--sound",
        "default",
        "--badge",
        "2",
        "--icon",
        "https://e.com/i.png",
        "--redirection",
        "https://e.com/d/2",
        "--action",
        "Open=https://e.com/x?a=1",
        "--webhook",
        "Ack=https://hooks.e.com/ack",
        "--payload",
        '{"deploy": 2}',
        "--channels",
        "ops, deploys",
        "--channel",
        "ops",
        "--tags",
        "deploy,prod",
        "--metadata-file",
        str(meta),
        "--metadata",
        "build=42",
    )
    assert (req.method, req.path) == ("POST", "/push-notification")
    assert req.body == {
        "title": "Deploy",
        "message": "v2 is live",
        "subtitle": "prod",
        "icon": "https://e.com/i.png",
        "redirection": "https://e.com/d/2",
        "badge": 2,
        "payload": {"deploy": 2},
        "actions": [
            {"title": "Open", "type": "open_url", "url": "https://e.com/x?a=1"},
            {"title": "Ack", "type": "webhook", "url": "https://hooks.e.com/ack"},
        ],
        "tags": ["deploy", "prod"],
        "metadata": {"build": 42, "env": "prod"},
        "sound": "default",
        "interruption_level": "time-sensitive",
        "target": {"channels": ["ops", "deploys"]},
    }


def test_replace_and_clearing_history() -> None:
    req = build("push", "--replace", "pn_1", "--title", "Done", "--clear-tags", "--clear-metadata")
    assert (req.method, req.path) == ("PUT", "/push-notification/pn_1")
    assert req.body == {"title": "Done", "tags": [], "metadata": {}}


def test_body_flag_is_the_base() -> None:
    req = build("push", "--body", '{"title": "Raw", "message": "m"}', "--message", "over")
    assert req.body == {"title": "Raw", "message": "over"}


@pytest.mark.parametrize(
    "argv",
    [
        ("push", "--message", "no title"),
        ("push", "--replace", "pn_1", "--title", "x", "--channels", "ops"),
        ("push", "--replace", "pn_1", "--title", "x", "--sound", "default"),
    ],
)
def test_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(UsageError):
        build(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ("badge", "-1"),
        ("badge", "x"),
        ("push", "--action", "no-equals"),
        ("push", "--badge", "1.5"),
    ],
)
def test_bad_arguments_exit_2(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_badge_requests() -> None:
    assert build("badge", "0").body == {"badge": 0}
    req = build("badge", "5", "--channels", "ops")
    assert (req.method, req.path, req.body) == (
        "POST",
        "/badge",
        {"badge": 5, "target": {"channels": ["ops"]}},
    )


@pytest.mark.parametrize(
    ("kind", "body", "text"),
    [
        (
            "push",
            {"notification_id": "pn_1", "devices_notified": 2, "devices_targeted": 2},
            "Sent notification pn_1: APNs accepted it for 2 of 2 device(s)",
        ),
        (
            "replace",
            {"notification_id": "pn_1", "devices_notified": 1, "devices_targeted": 2,
             "devices_queued": 1},
            "Replaced notification pn_1: APNs accepted it for 1 of 2 device(s), 1 queued",
        ),
        (
            "badge",
            {"badge": 3, "devices_updated": 2, "devices_targeted": 2},
            "Badge set to 3 on 2 of 2 device(s)",
        ),
    ],
)  # fmt: skip
def test_summaries(kind: str, body: dict[str, Any], text: str) -> None:
    assert cli.summary(kind, body) == text
