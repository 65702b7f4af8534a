"""`lockstep serve --workers N` as an operator runs it: real processes on one loopback port.

Two workers on a fresh PostgreSQL schema (tests/helpers/pgkit.py; skipped with a loud reason
without a server, failed under CI) both answer on the one port (`/healthz` names the node that
answered), a worker killed with SIGKILL is logged and restarted, SIGTERM stops them all; SQLite
with several workers, and workers that cannot start, end with a clear message. Every wait is
bounded (`TIMEOUT`).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psycopg
import pytest

from tests.helpers import pgkit
from tests.helpers.serverkit import http_json, wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0  # seconds for any one wait: a start, a restart, a stop
NODE = "wtest"  # LOCKSTEP_NODE_ID: the workers are wtest-w0 and wtest-w1


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
    return env | {"LOCKSTEP_NODE_ID": NODE}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "serve", "--state-dir", "sd", *args]


class Supervised:
    """A `lockstep serve --workers` parent and everything it printed so far."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            _command(*args),
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        self.err_lines: list[str] = []
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=_pump, args=(stream, into), daemon=True).start()

    def banner(self) -> str:
        """The banner, once the whole of it is out."""
        lines: list[str] = []
        while not lines or not lines[-1].startswith("    -d "):
            line = self.out.get(timeout=TIMEOUT)
            assert line is not None, f"exited {self.proc.wait(TIMEOUT)}: {self.stderr_now()}"
            lines.append(line)
        return "".join(lines)

    def stderr_until(self, pattern: str) -> re.Match[str]:
        """Read stderr until a line matches `pattern` (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for seen in self.err_lines:
                found = re.search(pattern, seen)
                if found:
                    self.err_lines.remove(seen)
                    return found
            line = self.err.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"stderr ended before {pattern!r}: {self.err_lines}"
            self.err_lines.append(line)

    def stderr_now(self) -> str:
        while True:
            try:
                line = self.err.get(timeout=1.0)
            except queue.Empty:
                break
            if line is None:
                break
            self.err_lines.append(line)
        return "".join(self.err_lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pgkit.schemas() as made:
        yield made.new()


def _nodes_answering(base: str, tries: int = 60) -> set[str]:
    """The node ids `/healthz` names over `tries` fresh connections."""
    seen: set[str] = set()
    for _ in range(tries):
        status, health = http_json("GET", f"{base}/healthz")
        assert status == 200, health
        seen.add(health["node"])
    return seen


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie nobody reaped yet has stopped running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: signal 0 is all there is
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_two_workers_share_the_port_survive_a_kill_and_stop_together(
    tmp_path: Path, pg_url: str
) -> None:
    (tmp_path / "lockstep.toml").write_text(f'[store]\nurl = "{pg_url}"\n')
    run = Supervised(
        tmp_path,
        *("--config", "lockstep.toml", "--workers", "2", "--port", "0", "-v"),
        *("--devices", "2", "--sim-control-port", "0", "--no-access-log"),
    )
    try:
        banner = run.banner()
        assert f"  workers: 2 processes on this port ({NODE}-w0, {NODE}-w1)\n" in banner
        assert "APNs: the built-in simulator (simulate mode), 2 simulated iPhones" in banner
        found = re.search(r"http://127\.0\.0\.1:(\d+)/api", banner)
        assert found is not None, banner
        base = f"http://127.0.0.1:{found.group(1)}"
        pids = {
            int(run.stderr_until(rf"worker {i} \(node {NODE}-w{i}\) started: pid (\d+)")[1])
            for i in range(2)
        }
        assert _nodes_answering(base) == {f"{NODE}-w0", f"{NODE}-w1"}

        # The simulated iPhones registered once, through the port, into the one database.
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM devices").fetchone() == (2,)
            # One provider token for both workers, issued by one of them (pgtokens.py).
            issuers = conn.execute("SELECT issued_by FROM lockstep_provider_tokens").fetchall()
        assert issuers in ([(f"{NODE}-w0",)], [(f"{NODE}-w1",)])
        # Whichever worker answers, the lock screens page draws the supervisor's phones.
        key = (tmp_path / "sd" / "api-key").read_text().strip()
        wait_until(
            lambda: [
                len(http_json("GET", f"{base}/api/dashboard", key=key)[1]["devices"])
                for _ in range(20)
            ],
            lambda counts: counts == [2] * 20,
            timeout=TIMEOUT,
            what="both workers drawing the two simulated iPhones",
        )

        victim = max(pids)
        os.kill(victim, signal.SIGKILL)
        died = run.stderr_until(r"worker (\d) \(node (\S+)\) died \(signal SIGKILL\); restarting")
        index = died[1]
        restarted = int(
            run.stderr_until(rf"worker {index} \(node {died[2]}\) started: pid (\d+)")[1]
        )
        assert restarted not in pids
        deadline = time.monotonic() + TIMEOUT
        while _nodes_answering(base, tries=20) != {f"{NODE}-w0", f"{NODE}-w1"}:
            assert time.monotonic() < deadline, "the restarted worker never answered"
        workers = (pids - {victim}) | {restarted}

        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(TIMEOUT) == 0, run.stderr_now()
        assert not any(_alive(pid) for pid in workers)
    finally:
        run.close()


def test_several_workers_on_sqlite_is_a_clear_start_up_error(tmp_path: Path) -> None:
    done = subprocess.run(
        _command("--workers", "2", "--port", "0"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("lockstep serve: --workers 2 needs a PostgreSQL store: one SQLite file")
    assert '[store] url = "postgresql://..."' in line


def test_workers_that_cannot_start_stop_the_supervisor_with_a_message(tmp_path: Path) -> None:
    # Nothing listens on port 1: every worker fails to connect, the first failure stops it all.
    (tmp_path / "lockstep.toml").write_text(
        '[store]\nurl = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=3"\n'
    )
    done = subprocess.run(
        _command("--config", "lockstep.toml", "--workers", "2", "--port", "0", "--devices", "0"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Lockstep is serving" not in done.stdout
    lines = done.stderr.splitlines()
    assert any("cannot connect to the store database 127.0.0.1:1/test" in ln for ln in lines)
    assert lines[-1].startswith("lockstep serve: worker ")
    assert lines[-1].endswith("failed to start (exit status 1); stopped")


def test_workers_whose_supervisor_is_killed_stop_by_themselves(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "lockstep.toml").write_text(f'[store]\nurl = "{pg_url}"\n')
    run = Supervised(
        tmp_path,
        *("--config", "lockstep.toml", "--workers", "2", "--port", "0", "-v"),
        *("--devices", "0", "--sim-control-port", "-1", "--no-access-log"),
    )
    try:
        run.banner()
        pids = [
            int(run.stderr_until(rf"worker {i} \(node {NODE}-w{i}\) started: pid (\d+)")[1])
            for i in range(2)
        ]
        run.proc.kill()  # no chance to forward anything: the lifeline reads end-of-file
        run.stderr_until(r"the supervising lockstep serve is gone: stopping")
        deadline = time.monotonic() + TIMEOUT
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "an orphaned worker kept running"
            time.sleep(0.1)
    finally:
        run.close()
