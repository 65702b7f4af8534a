"""`lockstep serve` as a user runs it: private files, a banner without keys, one-line failures.

Each test starts `python -m engine.cli serve` in a fresh directory under a umask of 0 (so only
the server's own modes can keep a file private), on 127.0.0.1 with free ports, under an absolute
timeout. A failing start must end with exactly one line on stderr naming the port or the file,
a non-zero status and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.helpers.serverkit import http_json

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0  # seconds for a whole `lockstep serve` run, start to exit
CPU = {"label": "CPU", "value": 9, "unit": "%"}
QUIET = ["--devices", "0", "--sim-control-port", "-1"]  # nothing else listening, nothing to attach


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "serve", "--state-dir", "sd", *args]


def clean_env() -> dict[str, str]:
    """The caller's environment without Lockstep's own variables (keys, HTTP server choice)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}


def failed_start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a `lockstep serve` that must fail; its one stderr line (checked: no traceback)."""
    done = subprocess.run(
        serve_command(*args),
        cwd=cwd,
        env=clean_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        umask=0,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_the_api_port_in_use_is_one_line_naming_it(tmp_path: Path, taken_port: int) -> None:
    line = failed_start(tmp_path, "--port", str(taken_port), *QUIET)
    assert line == (
        f"lockstep serve: cannot listen on 127.0.0.1:{taken_port} for the HTTP API: "
        "the port is already in use (choose one with --port)"
    )


def test_the_api_port_in_use_under_hypercorn_too(tmp_path: Path, taken_port: int) -> None:
    env = {"LOCKSTEP_HTTP_SERVER": "hypercorn"}  # its listener fails inside a nursery of its own
    line = failed_start(tmp_path, "--port", str(taken_port), *QUIET, env=env)
    assert line == (
        f"lockstep serve: cannot listen on 127.0.0.1:{taken_port} for the HTTP API: "
        "the port is already in use (choose one with --port)"
    )


def test_the_simulator_control_port_in_use_is_one_line_naming_it(
    tmp_path: Path, taken_port: int
) -> None:
    line = failed_start(
        tmp_path, "--port", "0", "--devices", "0", "--sim-control-port", str(taken_port)
    )
    assert line == (
        f"lockstep serve: cannot listen on 127.0.0.1:{taken_port} for the simulator's control "
        "API: the port is already in use (--sim-control-port 0 picks a free port, -1 turns it off)"
    )


def test_junk_bytes_as_the_database_is_one_line_naming_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(bytes(range(256)) * 64)
    line = failed_start(tmp_path, "--port", "0", "--db", "junk.db", *QUIET)
    assert line == "lockstep serve: cannot open store junk.db: file is not a database"
    assert junk.read_bytes() == bytes(range(256)) * 64


def test_a_state_dir_that_is_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "sd").write_text("not a directory")
    line = failed_start(tmp_path, "--port", "0", *QUIET)
    assert line == "lockstep serve: state dir sd is not a directory"


def test_a_record_file_that_cannot_be_written_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "traffic").mkdir()
    line = failed_start(tmp_path, "--port", "0", "--record", "traffic", *QUIET)
    assert line == "lockstep serve: --record file traffic: is a directory"


def _read_lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Serving:
    """A `lockstep serve` child process, past its banner."""

    def __init__(self, proc: subprocess.Popen[str], banner: list[str]) -> None:
        self.proc, self.banner = proc, banner
        self.stderr = ""  # all of it, once the server stopped
        self.code: int | None = None


@contextlib.contextmanager
def serving(cwd: Path, *args: str) -> Iterator[Serving]:
    """Run `lockstep serve *args` in `cwd` under a umask of 0 until its banner is out; stop it
    with SIGINT after the block (its exit status and stderr are then on the `Serving`)."""
    proc = subprocess.Popen(
        serve_command(*args),
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + TIMEOUT
    run = Serving(proc, [])
    try:
        while not any(line.startswith("    -d ") for line in run.banner):
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"serve exited: {proc.wait(TIMEOUT)} {proc.stderr}"
            run.banner.append(line)
        yield run
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            run.code = proc.wait(TIMEOUT)
        finally:
            proc.kill()
            proc.wait(TIMEOUT)
            if proc.stderr is not None:
                run.stderr = proc.stderr.read()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def test_a_served_run_keeps_its_files_private_and_its_banner_free_of_keys(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, "--port", "0", "--record", "traffic.jsonl", "--devices", "1") as run:
        banner = run.banner
        text = "".join(banner)
        key = (tmp_path / "sd" / "api-key").read_text().strip()
        device_key = (tmp_path / "sd" / "device-key").read_text().strip()
        assert key not in text and device_key not in text
        assert "  API key: in sd/api-key\n" in text
        assert "  device key (the iOS app's): in sd/device-key\n" in text

        # The example's header, pasted into a shell in the same directory, carries the key.
        header_line = next(line for line in banner if "Authorization" in line)
        header = re.search(r'-H ("Authorization: [^"]*")', header_line)
        assert header is not None, header_line
        shown = subprocess.run(
            ["sh", "-c", f"printf '%s' {header.group(1)}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout
        assert shown == f"Authorization: Bearer {key}"

        base = re.search(r"http://127\.0\.0\.1:\d+/api", text)
        assert base is not None, text
        status, answer = http_json(
            "PUT",
            f"{base.group(0)}/live-activity/stream/prod-web-1",
            {"content_state": {"title": "Health", "type": "metrics", "metrics": [CPU]}},
            key=shown.split()[-1],
        )
        assert status == 200 and answer["operation"] == "started", answer

        data = tmp_path / "sd"
        assert mode(data) == 0o700
        for name in ("api-key", "device-key", "lockstep.db", "lockstep.db-wal", "lockstep.db-shm"):
            assert mode(data / name) == 0o600, name
        assert mode(tmp_path / "traffic.jsonl") == 0o600
    assert run.code == 0


def test_json_logs_have_one_access_line_per_request_and_no_key(tmp_path: Path) -> None:
    with serving(tmp_path, "--port", "0", "--log-format", "json", *QUIET) as run:
        base = re.search(r"http://127\.0\.0\.1:\d+/api", "".join(run.banner))
        assert base is not None, run.banner
        key = (tmp_path / "sd" / "api-key").read_text().strip()
        assert http_json("GET", f"{base.group(0)}/devices", key=key)[0] == 200
        assert http_json("GET", f"{base.group(0)}/devices", key="lsk_not_a_key")[0] == 403
        status, _ = http_json("GET", f"{base.group(0)}/live-activity/secret-customer", key=key)
        assert status == 404
    assert run.code == 0
    assert key not in run.stderr and "lsk_not_a_key" not in run.stderr
    assert "secret-customer" not in run.stderr  # a route template, never the path
    records = [json.loads(line) for line in run.stderr.splitlines()]
    access = [r for r in records if r["logger"] == "lockstep.access"]
    assert [(r["method"], r["route"], r["status"]) for r in access] == [
        ("GET", "/api/devices", 200),
        ("GET", "/api/devices", 403),
        ("GET", "/api/live-activity/{activity_id}", 404),
    ]
    assert all(r["duration_ms"] >= 0 and len(r["request_id"]) == 16 for r in access)


def test_no_access_log_means_no_line_per_request(tmp_path: Path) -> None:
    with serving(tmp_path, "--port", "0", "--no-access-log", *QUIET) as run:
        base = re.search(r"http://127\.0\.0\.1:\d+/api", "".join(run.banner))
        assert base is not None, run.banner
        assert http_json("GET", f"{base.group(0)}/openapi.json")[0] == 200
    assert run.code == 0 and "lockstep.access" not in run.stderr, run.stderr


def _as_unprivileged() -> list[str] | None:
    """A command prefix that drops root (permissions do not stop root), or None if unavailable."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import engine.cli.serve"],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    return prefix if probe.returncode == 0 else None  # e.g. a checkout only root can read


def test_a_state_dir_this_user_cannot_read_is_one_line_naming_it() -> None:
    prefix = _as_unprivileged()
    if prefix is None:
        pytest.skip("as root, a mode-000 directory needs setpriv and a checkout others can read")
    # Not under pytest's tmp_path: that is private to the user running the tests.
    place = Path(tempfile.mkdtemp(prefix="lockstep-locked-"))
    try:
        place.chmod(0o777)
        (place / "sd").mkdir(mode=0o000)
        (place / "sd").chmod(0o000)
        done = subprocess.run(
            [*prefix, *serve_command("--port", "0", *QUIET)],
            cwd=place,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        (place / "sd").chmod(0o700)
        shutil.rmtree(place)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [
        "lockstep serve: state dir sd: not readable and writable by this user"
    ]
