"""`lockstep stream|end|start|update|end-activity`: request building, key lookup and exit codes."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.cli import client as cli
from engine.cli import common, content
from engine.cli.common import ApiRequest, UsageError

SECRET = "sk-test-0123456789abcdef"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lockstep")
    cli.register(p.add_subparsers(dest="command"))
    return p


def request(*argv: str) -> ApiRequest:
    args = parser().parse_args(list(argv))
    return cli.build_request(args.command, args)


# -- argument parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CPU=9%", {"label": "CPU", "value": 9, "unit": "%"}),
        ("MEM=45%", {"label": "MEM", "value": 45, "unit": "%"}),
        ("MEM=45.5%", {"label": "MEM", "value": 45.5, "unit": "%"}),
        ("Latency=12 ms", {"label": "Latency", "value": 12, "unit": "ms"}),
        ("Disk = 1.5GB", {"label": "Disk", "value": 1.5, "unit": "GB"}),
        ("Delta=-3", {"label": "Delta", "value": -3}),
        ("Ratio=.5", {"label": "Ratio", "value": 0.5}),
        ("Status=OK", {"label": "Status", "value": "OK"}),
        ("Version=v1.2", {"label": "Version", "value": "v1.2"}),
        ("Version=1.2.3", {"label": "Version", "value": "1.2.3"}),
        ("Phone=555 1234", {"label": "Phone", "value": "555 1234"}),
        ("Big=1e3", {"label": "Big", "value": "1e3"}),
        ("Rate=3 eps", {"label": "Rate", "value": 3, "unit": "eps"}),
        ("Eq=a=b", {"label": "Eq", "value": "a=b"}),
        ("Free space=12 GB", {"label": "Free space", "value": 12, "unit": "GB"}),
    ],
)
def test_parse_metric(text: str, expected: dict[str, Any]) -> None:
    assert content.parse_metric(text) == expected


@pytest.mark.parametrize("text", ["CPU", "=5", "CPU=", "CPU=  ", ""])
def test_parse_metric_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        content.parse_metric(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("2.50", 2.5),
        ("100.", 100.0),
        (" 3 ", 3),
        ("1,024", "1,024"),
        ("1e3", "1e3"),
        ("nan", "nan"),
        ("$9", "$9"),
        ("", ""),
    ],
)
def test_parse_scalar(text: str, expected: object) -> None:
    value = content.parse_scalar(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["x", "1e3", "inf", "", "1.2.3"])
def test_parse_number_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        content.parse_number(text)


# -- request building ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [
                "stream",
                "build-42",
                "--type",
                "segmented_progress",
                "--title",
                "Deploy",
                "--steps",
                "5",
                "--step",
                "2",
                "--color",
                "blue",
                "--step-color",
                "lime",
            ],
            ApiRequest(
                "PUT",
                "/live-activity/stream/build-42",
                {
                    "content_state": {
                        "title": "Deploy",
                        "type": "segmented_progress",
                        "color": "blue",
                        "number_of_steps": 5,
                        "current_step": 2,
                        "step_color": "lime",
                    }
                },
            ),
        ),
        (
            ["stream", "backup", "--type", "progress", "--title", "Backup", "--percentage", "42.5"],
            ApiRequest(
                "PUT",
                "/live-activity/stream/backup",
                {"content_state": {"title": "Backup", "type": "progress", "percentage": 42.5}},
            ),
        ),
        (
            [
                "stream",
                "copy",
                "--type",
                "progress",
                "--title",
                "Copy",
                "--value",
                "30",
                "--upper-limit",
                "120",
            ],
            ApiRequest(
                "PUT",
                "/live-activity/stream/copy",
                {
                    "content_state": {
                        "title": "Copy",
                        "type": "progress",
                        "value": 30,
                        "upper_limit": 120,
                    }
                },
            ),
        ),
        (
            [
                "stream",
                "web-1",
                "--type",
                "metrics",
                "--title",
                "web-1",
                "--metric",
                "CPU=9%",
                "--metric",
                "MEM=45%",
                "--channel",
                "ops",
                "--channel",
                "web",
            ],
            ApiRequest(
                "PUT",
                "/live-activity/stream/web-1",
                {
                    "content_state": {
                        "title": "web-1",
                        "type": "metrics",
                        "metrics": [
                            {"label": "CPU", "value": 9, "unit": "%"},
                            {"label": "MEM", "value": 45, "unit": "%"},
                        ],
                    },
                    "channels": ["ops", "web"],
                },
            ),
        ),
        (
            [
                "start",
                "--type",
                "stats",
                "--title",
                "Sales",
                "--metric",
                "orders=128",
                "--channel",
                "sales",
            ],
            ApiRequest(
                "POST",
                "/live-activity/start",
                {
                    "content_state": {
                        "title": "Sales",
                        "type": "stats",
                        "metrics": [{"label": "orders", "value": 128}],
                    },
                    "target": {"channels": ["sales"]},
                },
            ),
        ),
        (
            [
                "start",
                "--type",
                "value",
                "--title",
                "Queue",
                "--value",
                "1,024",
                "--icon",
                "tray",
                "--icon-color",
                "gray",
                "--badge",
                "LIVE",
            ],
            ApiRequest(
                "POST",
                "/live-activity/start",
                {
                    "content_state": {
                        "title": "Queue",
                        "type": "value",
                        "value": "1,024",
                        "icon": {"symbol": "tray", "color": "gray"},
                        "badge": {"title": "LIVE"},
                    }
                },
            ),
        ),
        (
            [
                "start",
                "--type",
                "alert",
                "--title",
                "Disk",
                "--message",
                "almost full",
                "--alert-title",
                "Disk",
                "--alert-body",
                "92% used",
                "--tag",
                "infra",
            ],
            ApiRequest(
                "POST",
                "/live-activity/start",
                {
                    "content_state": {"title": "Disk", "type": "alert", "message": "almost full"},
                    "alert": {"title": "Disk", "body": "92% used"},
                    "tags": ["infra"],
                },
            ),
        ),
        (
            [
                "start",
                "--type",
                "timer",
                "--title",
                "Pizza",
                "--duration",
                "600",
                "--subtitle",
                "oven",
                "--badge",
                "hot",
                "--badge-color",
                "red",
            ],
            ApiRequest(
                "POST",
                "/live-activity/start",
                {
                    "content_state": {
                        "title": "Pizza",
                        "subtitle": "oven",
                        "type": "timer",
                        "duration_seconds": 600,
                        "badge": {"title": "hot", "color": "red"},
                    }
                },
            ),
        ),
        (
            ["update", "act-1", "--title", "Uptime", "--count-up", "--paused"],
            ApiRequest(
                "POST",
                "/live-activity/update",
                {
                    "activity_id": "act-1",
                    "content_state": {"title": "Uptime", "counts_down": False, "is_running": False},
                },
            ),
        ),
        (
            [
                "end-activity",
                "act-1",
                "--title",
                "Done",
                "--percentage",
                "100",
                "--auto-dismiss-minutes",
                "0",
            ],
            ApiRequest(
                "POST",
                "/live-activity/end",
                {
                    "activity_id": "act-1",
                    "content_state": {
                        "title": "Done",
                        "percentage": 100,
                        "auto_dismiss_minutes": 0,
                    },
                },
            ),
        ),
        (
            ["end-activity", "act-1"],
            ApiRequest("POST", "/live-activity/end", {"activity_id": "act-1"}),
        ),
        (
            ["end", "build-42"],
            ApiRequest("DELETE", "/live-activity/stream/build-42", None),
        ),
        (
            [
                "end",
                "build-42",
                "--title",
                "Deployed",
                "--auto-dismiss-seconds",
                "30",
                "--auto-dismiss-minutes",
                "1",
            ],
            ApiRequest(
                "DELETE",
                "/live-activity/stream/build-42",
                {
                    "content_state": {
                        "title": "Deployed",
                        "auto_dismiss_seconds": 30,
                        "auto_dismiss_minutes": 1,
                    }
                },
            ),
        ),
    ],
)
def test_build_request(argv: list[str], expected: ApiRequest) -> None:
    assert request(*argv) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status", "build-42"], ApiRequest("GET", "/live-activity/stream/build-42", None)),
        (["status", "--activity", "la_1/x"], ApiRequest("GET", "/live-activity/la_1%2Fx", None)),
    ],
)
def test_status_reads_a_stream_or_an_activity(argv: list[str], expected: ApiRequest) -> None:
    assert request(*argv) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status"], "give a stream KEY"),
        (["status", "k", "--activity", "a"], "not both"),
        (["status", "bad key"], "invalid stream key"),
    ],
)
def test_status_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request(*argv)


def test_json_is_the_base_and_flags_win() -> None:
    req = request(
        "stream",
        "k",
        "--content-state",
        '{"title": "raw", "type": "value", "value": "007"}',
        "--title",
        "flag",
    )
    assert req.body == {"content_state": {"title": "flag", "type": "value", "value": "007"}}


def test_json_alone_can_carry_the_title() -> None:
    req = request("update", "a1", "--content-state", '{"title": "t", "percentage": 5}')
    assert req.body == {"activity_id": "a1", "content_state": {"title": "t", "percentage": 5}}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stream", "k", "--type", "value", "--value", "1"], "--title is required"),
        (["update", "a1", "--percentage", "3"], "--title is required"),
        (["start", "--title", "t"], "--type is required"),
        (["stream", "bad key", "--title", "t"], "invalid stream key"),
        (["end", "a/b"], "invalid stream key"),
        (["stream", "x" * 256, "--title", "t"], "invalid stream key"),
        (["stream", "k", "--title", "t", "--content-state", "[1]"], "must be a JSON object"),
        (["stream", "k", "--title", "t", "--content-state", "{"], "not valid JSON"),
        (["stream", "k", "--title", "t", "--tags", "a", "--clear-tags"], "cannot be used together"),
        (["stream", "k", "--title", "t", "--metadata", "{}", "--metadata-file", "m"], "together"),
        (["stream", "k", "--title", "t", "--metadata", "[]"], "--metadata must be a JSON object"),
        (["stream", "k", "--title", "t", "--action", "x"], "--action is not valid JSON"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        request(*argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["stream", "k", "--title", "t", "--metric", "CPU"],
        ["stream", "k", "--title", "t", "--color", "pink"],
        ["stream", "k", "--title", "t", "--type", "chart"],
        ["stream", "k", "--title", "t", "--steps", "-1"],
        ["stream", "k", "--title", "t", "--percentage", "9%"],
        ["update", "a1", "--title", "t", "--channel", "ops"],  # update has no recipients
        ["start", "--title", "t", "--auto-dismiss-minutes", "1"],  # end-only
        ["update"],
    ],
)
def test_argparse_rejects_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(argv)
    assert exc.value.code == 2


def test_every_subcommand_is_registered() -> None:
    for argv in (
        ["stream", "k"],
        ["end", "k"],
        ["start"],
        ["update", "a"],
        ["end-activity", "a"],
        ["status", "k"],
    ):
        args = parser().parse_args(argv)
        assert args.handler is cli.run
        assert args.command == argv[0]


# -- URL and key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, "http://127.0.0.1:8787/api"),
        (None, {"LOCKSTEP_URL": "https://push.example.com/api/"}, "https://push.example.com/api"),
        ("http://h:1/api", {"LOCKSTEP_URL": "https://other/api"}, "http://h:1/api"),
    ],
)
def test_resolve_url(flag: str | None, env: dict[str, str], expected: str) -> None:
    assert common.resolve_url(flag, None, env) == expected


def test_resolve_url_rejects_other_schemes() -> None:
    with pytest.raises(UsageError):
        common.resolve_url("ftp://h/api", None, {})


def write_key_file(root: Path, text: str) -> None:
    (root / "lockstep-data").mkdir(exist_ok=True)
    (root / "lockstep-data" / "api-key").write_text(text)


def test_key_resolution_order(tmp_path: Path) -> None:
    write_key_file(tmp_path, "\n  from-file  \nsecond\n")
    env = {"LOCKSTEP_API_KEY": "from-env"}
    assert common.resolve_key("from-flag", env, tmp_path) == "from-flag"
    assert common.resolve_key(None, env, tmp_path) == "from-env"
    assert common.resolve_key(None, {"LOCKSTEP_API_KEY": "  "}, tmp_path) == "from-file"
    assert common.resolve_key(None, {}, tmp_path) == "from-file"


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_missing_key_is_a_clear_error(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        write_key_file(tmp_path, content)
    with pytest.raises(UsageError, match="no API key: pass --key, set LOCKSTEP_API_KEY"):
        common.resolve_key(None, {}, tmp_path)


# -- against a local server ------------------------------------------------------------------------


@dataclass
class Canned:
    """What the fake server answers, and what it saw."""

    status: int = 200
    body: bytes = b'{"success": true, "operation": "started", "activity_id": "act-1"}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    seen: list[dict[str, Any]] = field(default_factory=list)
    # Answers for the first requests, in order, before `status` and `body` take over.
    first: list[tuple[int, bytes]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    canned: Canned

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.canned.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(size) if size else b"",
            }
        )
        status, body = (
            self.canned.first.pop(0)
            if self.canned.first
            else (self.canned.status, self.canned.body)
        )
        self.send_response(status)
        for name, value in self.canned.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _answer  # noqa: N815 - names http.server dispatches to

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Canned]]:
    canned = Canned()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"canned": canned}))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api", canned
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCKSTEP_URL", raising=False)
    monkeypatch.delenv("LOCKSTEP_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./lockstep-data/api-key


def run(*argv: str) -> int:
    args = parser().parse_args([*argv, "--timeout", "5"])
    return int(args.handler(args))


def test_success_prints_pretty_json(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    status = run(
        "stream",
        "web-1",
        "--json",
        "--url",
        url,
        "--key",
        SECRET,
        "--type",
        "metrics",
        "--title",
        "web-1",
        "--metric",
        "CPU=9%",
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert json.loads(out) == {"success": True, "operation": "started", "activity_id": "act-1"}
    assert out.startswith("{\n  ")
    assert SECRET not in out + err
    [seen] = canned.seen
    assert (seen["method"], seen["path"]) == ("PUT", "/api/live-activity/stream/web-1")
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert json.loads(seen["body"])["content_state"]["metrics"] == [
        {"label": "CPU", "value": 9, "unit": "%"}
    ]


def test_key_and_url_from_environment_and_file(
    server: tuple[str, Canned], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, canned = server
    monkeypatch.setenv("LOCKSTEP_URL", url)
    write_key_file(tmp_path, SECRET + "\n")
    assert run("end", "build-42") == 0
    monkeypatch.setenv("LOCKSTEP_API_KEY", "env-key")
    assert run("end", "build-42") == 0
    first, second = canned.seen
    assert (first["method"], first["path"], first["body"]) == (
        "DELETE",
        "/api/live-activity/stream/build-42",
        b"",
    )
    assert "Content-Type" not in first["headers"]
    assert first["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert second["headers"]["Authorization"] == "Bearer env-key"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b'{"error": "bad_request", "message": "content_state.current_step: above steps"}',
            "content_state.current_step: above steps (HTTP 400, bad_request)",
        ),
        (
            403,
            b'{"error": "forbidden", "message": "unknown API key"}',
            "unknown API key (HTTP 403, forbidden)",
        ),
        (
            404,
            b'{"error": "no_recipients", "message": "nobody", "effective_channel_slugs": []}',
            'nobody (HTTP 404, no_recipients) {"effective_channel_slugs": []}',
        ),
        (
            429,
            b'{"code": "rate_limited", "error": "rate_limited", "message": "slow down"}',
            "slow down (HTTP 429, rate_limited)",
        ),
        (502, b"<html>bad gateway</html>", "HTTP 502: <html>bad gateway</html>"),
        (500, b"", "HTTP 500"),
    ],
)
def test_error_answers_exit_1_with_the_server_message(
    server: tuple[str, Canned],
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: bytes,
    expected: str,
) -> None:
    url, canned = server
    canned.status, canned.body = status, body
    assert run("update", "act-1", "--url", url, "--key", SECRET, "--title", "t") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"lockstep update: {expected}"
    assert SECRET not in err


def test_redirects_are_not_followed(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    canned.status, canned.body = 302, b""  # urllib would follow a 302 POST as a GET
    canned.headers = {"Location": url + "/elsewhere"}
    assert (
        run(
            "start",
            "--url",
            url,
            "--key",
            SECRET,
            "--type",
            "value",
            "--title",
            "t",
            "--value",
            "1",
        )
        == 1
    )
    assert len(canned.seen) == 1  # the Authorization header went nowhere else
    assert "HTTP 302" in capsys.readouterr().err


def test_usage_errors_exit_2_before_any_request(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    assert run("end", "k", "--url", url) == 2  # no key anywhere
    assert "no API key" in capsys.readouterr().err
    assert run("start", "--url", url, "--key", SECRET, "--title", "t") == 2
    assert "--type is required" in capsys.readouterr().err
    assert canned.seen == []


def test_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run("end", "k", "--url", f"http://127.0.0.1:{port}/api", "--key", SECRET) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and SECRET not in err


def test_silent_server_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        args = parser().parse_args(
            [
                "end",
                "k",
                "--url",
                f"http://127.0.0.1:{port}/api",
                "--key",
                SECRET,
                "--timeout",
                "0.2",
            ]
        )
        assert cli.run(args) == 1
    assert "timed out" in capsys.readouterr().err


# -- options shared with the hosted service's CLI --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["stream", "k", "--title", "t", "--channels", "ops,web", "--channels", "db"],
            {"content_state": {"title": "t"}, "channels": ["ops", "web", "db"]},
        ),
        (
            ["start", "--type", "alert", "--title", "t", "--message", "m", "--channel", "ops"],
            {
                "content_state": {"title": "t", "type": "alert", "message": "m"},
                "target": {"channels": ["ops"]},
            },
        ),
        (
            ["stream", "k", "--title", "t", "--tags", "user:382,billing", "--tag", "x"],
            {"content_state": {"title": "t"}, "tags": ["user:382", "billing", "x"]},
        ),
        (
            ["update", "a1", "--title", "t", "--clear-tags", "--metadata", "{}"],
            {"activity_id": "a1", "content_state": {"title": "t"}, "tags": [], "metadata": {}},
        ),
        (["end", "k", "--clear-tags"], {"tags": []}),
        (
            ["end", "k", "--metadata", '{"job": "import-382", "records": 1200, "ok": true}'],
            {"metadata": {"job": "import-382", "records": 1200, "ok": True}},
        ),
        (
            [
                "stream",
                "k",
                "--content-state",
                (
                    '{"title": "Deploy", "type": "segmented_progress", "numberOfSteps": 4, '
                    '"currentStep": 1, "autoDismissSeconds": 5, "step_color": "lime"}'
                ),
            ],
            {
                "content_state": {
                    "title": "Deploy",
                    "type": "segmented_progress",
                    "number_of_steps": 4,
                    "current_step": 1,
                    "auto_dismiss_seconds": 5,
                    "step_color": "lime",
                }
            },
        ),
        (
            [
                "stream",
                "k",
                "--title",
                "t",
                "--action",
                '{"title": "Open", "type": "open_url", "url": "https://e.com"}',
            ],
            {
                "content_state": {"title": "t"},
                "action": {"title": "Open", "type": "open_url", "url": "https://e.com"},
            },
        ),
    ],
)
def test_request_level_options(argv: list[str], expected: dict[str, Any]) -> None:
    assert request(*argv).body == expected


def test_metadata_and_content_state_from_files(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"customer_id": "382", "amount": 29}')
    (tmp_path / "state.json").write_text('{"title": "Sales", "type": "stats", "metrics": []}')
    req = request(
        "stream",
        "k",
        "--metadata-file",
        str(tmp_path / "meta.json"),
        "--content-state-file",
        str(tmp_path / "state.json"),
        "--metric",
        "orders=3",
    )
    assert req.body == {
        "content_state": {
            "title": "Sales",
            "type": "stats",
            "metrics": [{"label": "orders", "value": 3}],
        },
        "metadata": {"customer_id": "382", "amount": 29},
    }
    with pytest.raises(UsageError, match="cannot read"):
        request("end", "k", "--metadata-file", str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    "argv",
    [
        ["start", "--type", "value", "--title", "t", "--clear-tags"],  # nothing to clear yet
        ["update", "a1", "--title", "t", "--id-only"],
        ["end", "k", "--channels", "ops"],
    ],
)
def test_options_only_where_the_route_takes_them(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(argv)
    assert exc.value.code == 2


# -- reusing the last state ------------------------------------------------------------------------

LAST = {
    "type": "timer",
    "title": "Pizza",
    "subtitle": "oven 2",
    "duration_seconds": 600.0,
    "counts_down": True,
    "is_running": True,
    "action": {"title": "Open", "type": "open_url", "url": "https://e.com"},
}


def test_fill_from_a_stream_end_keeps_the_whole_state_but_buttons_and_window() -> None:
    assert cli.fill_from("end", {"auto_dismiss_seconds": 30}, LAST) == {
        "type": "timer",
        "title": "Pizza",
        "subtitle": "oven 2",
        "counts_down": True,
        "is_running": True,
        "auto_dismiss_seconds": 30,
    }
    elapsed = {**LAST, "counts_down": False}
    assert cli.fill_from("end", {"title": "t"}, elapsed)["duration_seconds"] == 600.0


def test_fill_from_by_id_takes_only_the_title() -> None:
    assert cli.fill_from("update", {"percentage": 5}, LAST) == {"title": "Pizza", "percentage": 5}
    assert cli.fill_from("end-activity", {"title": "Mine"}, LAST) == {"title": "Mine"}


def test_end_without_content_flags_sends_no_state(server: tuple[str, Canned]) -> None:
    url, canned = server
    assert run("end", "build-42", "--url", url, "--key", SECRET, "--tags", "done") == 0
    [seen] = canned.seen  # no lookup: the server ends the stream with its last state
    assert (seen["method"], json.loads(seen["body"])) == ("DELETE", {"tags": ["done"]})


def test_end_with_some_fields_reuses_the_streams_last_state(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    status = {"activity_id": "la_1", "version": 3, "devices": [], "content_state": LAST}
    canned.first = [(200, json.dumps(status).encode())]
    canned.body = (
        b'{"success": true, "operation": "ended", "stream_key": "oven", "activity_id": "la_1"}'
    )
    assert run("end", "oven", "--url", url, "--key", SECRET, "--paused") == 0
    lookup, delete = canned.seen
    assert (lookup["method"], lookup["path"]) == ("GET", "/api/live-activity/stream/oven")
    assert delete["method"] == "DELETE"
    assert json.loads(delete["body"])["content_state"] == {
        "type": "timer",
        "title": "Pizza",
        "subtitle": "oven 2",
        "counts_down": True,
        "is_running": False,
    }
    assert capsys.readouterr().out == "stream oven: ended, activity la_1\n"


def test_update_without_title_reads_the_activity(server: tuple[str, Canned]) -> None:
    url, canned = server
    status = {"activity_id": "la/1", "version": 1, "devices": [], "content_state": LAST}
    canned.first = [(200, json.dumps(status).encode())]
    assert run("update", "la/1", "--url", url, "--key", SECRET, "--subtitle", "oven 3") == 0
    lookup, update = canned.seen
    assert lookup["path"] == "/api/live-activity/la%2F1"
    assert json.loads(update["body"]) == {
        "activity_id": "la/1",
        "content_state": {"title": "Pizza", "subtitle": "oven 3"},
    }


def test_a_failed_lookup_is_the_answer(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    canned.first = [(404, b'{"error": "not_found", "message": "no stream with key \'k\'"}')]
    assert run("end", "k", "--url", url, "--key", SECRET, "--step", "3") == 1
    assert len(canned.seen) == 1
    assert "no stream with key 'k' (HTTP 404, not_found)" in capsys.readouterr().err


# -- output ----------------------------------------------------------------------------------------


def test_id_only_prints_just_the_activity_id(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    argv = ["start", "--url", url, "--key", SECRET, "--type", "value", "--title", "t"]
    assert run(*argv, "--value", "1", "--id-only") == 0
    assert capsys.readouterr().out == "act-1\n"


def test_errors_with_json_print_the_body_on_stdout(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    canned.status = 413
    canned.body = (
        b'{"error": "payload_too_large", "message": "too big", "size": 5000, "limit": 4096}'
    )
    assert run("end", "k", "--url", url, "--key", SECRET, "--json") == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "error": "payload_too_large",
        "message": "too big",
        "size": 5000,
        "limit": 4096,
    }
    assert err.startswith("lockstep end: too big (HTTP 413, payload_too_large)")


def test_summaries() -> None:
    assert cli.summarize(
        {
            "success": True,
            "operation": "rotated",
            "stream_key": "job",
            "activity_id": "la_2",
            "previous_activity_id": "la_1",
            "devices_notified": 2,
            "devices_queued": 1,
            "warning": "budget low",
            "errors": ["iphone-3: dead token"],
        }
    ) == (
        "stream job: rotated, activity la_2 (replaces la_1)\n"
        "  devices: 2 notified, 1 queued\n"
        "  warning: budget low\n"
        "  error: iphone-3: dead token"
    )
    status = {
        "activity_id": "la_1",
        "stream_key": "job",
        "version": 3,
        "ended": False,
        "devices": [
            {"device_id": "iphone-1", "state": "live", "confirmed_version": 3, "last_status": 200},
            {
                "device_id": "iphone-2",
                "state": "awaiting_token",
                "confirmed_version": 0,
                "overdue": True,
            },
        ],
    }
    assert cli.summarize(status) == (
        "activity la_1 (stream job): version 3, live\n"
        "  iphone-1: live, confirmed v3, last APNs answer 200\n"
        "  iphone-2: awaiting_token, confirmed v0 (overdue)"
    )


# -- --config lockstep.toml ------------------------------------------------------------------------


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("server_table", "url"),
    [
        ('host = "0.0.0.0"\nport = 9001', "http://127.0.0.1:9001/api"),
        ('host = "::"\nport = 9002', "http://[::1]:9002/api"),
        ('host = "::1"', "http://[::1]:8787/api"),
        ('host = "push.internal"\nport = 80', "http://push.internal:80/api"),
        ("", "http://127.0.0.1:8787/api"),
    ],
)
def test_config_gives_the_server(tmp_path: Path, server_table: str, url: str) -> None:
    path = write_config(tmp_path / "lockstep.toml", f"[server]\n{server_table}\n")
    assert common.load_config(path, tmp_path).url == url


def test_config_key_order(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "api-key").write_text("from-state-dir\n")
    bare = common.load_config(
        write_config(tmp_path / "a.toml", '[server]\nstate_dir = "data"\n'), tmp_path
    )
    keyed = common.load_config(
        write_config(tmp_path / "b.toml", '[server]\napi_keys = ["from-config", "second"]\n'),
        tmp_path,
    )
    assert common.resolve_key(None, {}, tmp_path, bare) == "from-state-dir"
    assert common.resolve_key(None, {}, tmp_path, keyed) == "from-config"
    assert common.resolve_key(None, {"LOCKSTEP_API_KEY": "env"}, tmp_path, keyed) == "env"
    assert common.resolve_key("flag", {"LOCKSTEP_API_KEY": "env"}, tmp_path, keyed) == "flag"
    assert common.resolve_url(None, keyed, {"LOCKSTEP_URL": "http://other/api"}) == (
        "http://127.0.0.1:8787/api"
    )
    assert common.resolve_url("http://flag/api", keyed, {}) == "http://flag/api"


def test_config_state_dir_beside_the_config(tmp_path: Path) -> None:
    home = tmp_path / "etc"
    (home / "data").mkdir(parents=True)
    (home / "data" / "api-key").write_text("beside\n")
    config = common.load_config(
        write_config(home / "lockstep.toml", '[server]\nstate_dir = "data"\n'), tmp_path
    )
    assert common.resolve_key(None, {}, tmp_path, config) == "beside"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "does not exist"),
        ("[server\n", "not valid TOML"),
        ('[server]\nport = "80"\n', "port an integer"),
        ("server = 1\n", "must be a table"),
    ],
)
def test_bad_configs_are_usage_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "lockstep.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=message):
        common.load_config(path, tmp_path)


def test_config_finds_server_and_key(
    server: tuple[str, Canned], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, canned = server
    port = urllib.parse.urlsplit(url).port
    path = write_config(
        tmp_path / "lockstep.toml", f'[server]\nport = {port}\napi_keys = ["{SECRET}"]\n'
    )
    assert run("end", "k", "--config", str(path)) == 0
    monkeypatch.setenv("LOCKSTEP_CONFIG", str(path))
    assert run("end", "k") == 0
    assert [seen["headers"]["Authorization"] for seen in canned.seen] == [f"Bearer {SECRET}"] * 2
    assert run("end", "k", "--config", str(tmp_path / "nope.toml")) == 2


def test_summarize_fields_is_one_line_per_field() -> None:
    assert common.summarize_fields({"success": True, "badge": 3, "note": "ok"}) == (
        "success: true\nbadge: 3\nnote: ok"
    )
    assert common.summarize_fields("plain") == "plain"


def test_stream_without_title_moves_the_streams_last_state(server: tuple[str, Canned]) -> None:
    url, canned = server
    last = {
        "type": "segmented_progress",
        "title": "Deploy",
        "number_of_steps": 5,
        "current_step": 2,
        "badge": {"title": "prod"},
        "action": {"title": "Open", "type": "open_url", "url": "https://e.com"},
    }
    status = {"activity_id": "la_1", "version": 2, "devices": [], "content_state": last}
    canned.first = [(200, json.dumps(status).encode())]
    assert run("stream", "deploy-42", "--url", url, "--key", SECRET, "--step", "3") == 0
    lookup, put = canned.seen
    assert (lookup["method"], lookup["path"]) == ("GET", "/api/live-activity/stream/deploy-42")
    assert put["method"] == "PUT"
    assert json.loads(put["body"]) == {
        "content_state": {
            "type": "segmented_progress",
            "title": "Deploy",
            "number_of_steps": 5,
            "current_step": 3,
            "badge": {"title": "prod"},
        }
    }


def test_stream_without_title_on_a_new_key_is_a_usage_error(
    server: tuple[str, Canned], capsys: pytest.CaptureFixture[str]
) -> None:
    url, canned = server
    canned.first = [(404, b'{"error": "not_found", "message": "no stream with key \'new\'"}')]
    assert run("stream", "new", "--url", url, "--key", SECRET, "--step", "3") == 2
    assert len(canned.seen) == 1
    assert "--title and --type are required: the stream has no activity yet" in (
        capsys.readouterr().err
    )


def test_a_session_never_shows_its_key() -> None:
    from engine.cli.common import Session

    session = Session(url="http://127.0.0.1:8787/api", key="lsk_secret_0123456789", timeout=5.0)
    assert "lsk_secret" not in repr(session) and "127.0.0.1" in repr(session)
