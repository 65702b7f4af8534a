"""`lockstep metrics set KEY VALUE`: the request it builds and its usage errors."""

from __future__ import annotations

import pytest

from engine.cli import metrics as cli
from engine.cli.common import ApiRequest, UsageError
from engine.cli.main import build_parser


def request(*argv: str) -> ApiRequest:
    args = build_parser().parse_args(["metrics", "set", *argv])
    return cli.build_request(args)


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        (["revenue", "1234.5"], {"value": 1234.5}),
        (["users", "42"], {"value": 42}),
        (["delta", "-3"], {"value": -3}),
        (["status", "3 of 5"], {"value": "3 of 5"}),
        (["big", "1e3"], {"value": "1e3"}),  # not a plain decimal: kept as text
        (["build.number", "007", "--text"], {"value": "007"}),
        (
            ["q", "7", "--timestamp", "2027-01-15T08:00:00Z"],
            {"value": 7, "timestamp": "2027-01-15T08:00:00+00:00"},
        ),
    ],
)
def test_build_request(argv: list[str], body: dict[str, object]) -> None:
    key = argv[0]
    assert request(*argv) == ApiRequest("POST", f"/metrics/{key}/value", body)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["Revenue", "1"], "invalid metric key 'Revenue'"),
        (["a/b", "1"], "invalid metric key"),
        (["k", "x" * 65], "1-64 characters"),
        (["k", "1", "--timestamp", "yesterday"], "--timestamp must be an ISO-8601"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request(*argv)


def test_metrics_set_is_registered() -> None:
    args = build_parser().parse_args(["metrics", "set", "k", "1"])
    assert args.handler is cli.set_value
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["metrics"])  # an action is required
    assert exited.value.code == 2
