"""`lockstep serve --workers N` on a fresh PostgreSQL schema, as the scale-out scenario drives it.

- `fresh_schema(pg)`: a new schema in the database `pg` (dropped on the way out), and the URL
  whose connections use it.
- `Cluster.start(...)`: the server as an operator runs it — one supervisor, N worker processes
  sharing the API port, the simulator in the supervisor (simulate mode, no phones of its own) —
  then waits until every partition is held by N live nodes (bench/cluster_kill9.py's
  `wait_owned`) and they hold equal shares (`wait_balanced`: nothing moves while measuring).
- `Cluster.add_phones(n)`: simulated iPhones created through the simulator's control API, the i-th
  subscribed to channel `ch<i>` only (bench.harness.stack.channel_of), so that a benchmark stream
  started on that channel is shown on exactly one phone; the simulator registers each with the
  server through the device API, as the app on a new phone would.
- `Cluster.devices()`: what the phones show; `cpu()`: CPU seconds used so far by the supervisor
  (the simulator lives there), by the workers, by PostgreSQL, and by the whole machine;
  `epochs()`: each partition's lease epoch (it grows when a lease changes hands).
- `LeaseProbe`: the least time any lease had left while it ran (a stalled lease round).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.cluster_kill9 import PG, leases, wait_owned
from bench.harness.stack import channel_of, device_name
from bench.kill9 import API_KEY, DEVICE_KEY, HOST, call
from bench.slowclients import free_port, wait_up

__all__ = ["PG", "Cluster", "LeaseProbe", "fresh_schema", "process_cpu"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PHONE_BATCH = 50
"""Phones created per batch: below the simulator's registration queue (100 places)."""


@contextlib.contextmanager
def fresh_schema(pg: str = PG) -> Iterator[str]:
    """A URL on a new schema of the database `pg`; the schema is dropped afterwards."""
    schema = f"lockstep_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None (gone, not Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) process `pid` has used; 0.0 when it cannot be read."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 13:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None and len(fields) > 1 and fields[1] == str(pid):
                out.append(int(entry.name))
    return out


def postgres_cpu() -> float:
    """CPU seconds used by every process named `postgres` on this machine (server + backends);
    a backend that ended meanwhile is no longer counted, so this is a lower bound."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name == "postgres":
                total += process_cpu(entry.name)
    return total


def machine_busy() -> float:
    """CPU seconds all cores have spent busy (not idle, not waiting for I/O) since boot."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(v) for v in first[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS  # minus idle and iowait


def wait_balanced(url: str, timeout: float, owners: int) -> None:
    """Wait until `owners` live nodes hold the partitions evenly (at most one apart), so that no
    partition moves during a measurement (they rebalance a batch at a time after start-up)."""
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, int] = {}
        for owner, _, live in leases(url).values():
            if live and owner:
                counts[owner] = counts.get(owner, 0) + 1
        if len(counts) == owners and max(counts.values()) - min(counts.values()) <= 1:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the partitions were not balanced in time: {counts}")
        time.sleep(0.2)


class LeaseProbe:
    """Samples, every `every` s on a thread of its own, the least time any lease has left before
    it expires (by the database's clock): a node whose lease rounds stall lets it run down."""

    def __init__(self, url: str, every: float = 0.25) -> None:
        self._url, self._every = url, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.least: float | None = None
        self.samples = 0

    def _run(self) -> None:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT min(extract(epoch FROM expires_at - now())) FROM lockstep_leases"
                ).fetchone()
                if row is not None and row[0] is not None:
                    left = float(row[0])
                    self.least = left if self.least is None else min(self.least, left)
                    self.samples += 1
                self._stop.wait(self._every)

    def __enter__(self) -> LeaseProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass(slots=True)
class Cluster:
    """A running `lockstep serve --workers N` (see the module docstring)."""

    proc: subprocess.Popen[bytes]
    folder: Path
    url: str
    port: int
    control: int
    workers: int

    @property
    def api(self) -> str:
        """The API base URL (any worker answers)."""
        return f"http://{HOST}:{self.port}/api"

    @classmethod
    def start(cls, folder: Path, url: str, workers: int, *, timeout: float = 90.0) -> Cluster:
        """Start the server on schema `url`; return once all partitions have N owners."""
        folder.mkdir(parents=True, exist_ok=True)
        port, control = free_port(), free_port()
        config = folder / "lockstep.toml"
        config.write_text(
            f'[server]\napi_keys = ["{API_KEY}"]\ndevice_keys = ["{DEVICE_KEY}"]\n'
            f"workers = {workers}\n"
            f'[store]\nurl = "{url}"\n'
            f"[simulate]\ndevices = 0\nfresh = true\ncontrol_port = {control}\n"
            '[cluster]\nnode_id = "bench"\n'
        )
        config.chmod(0o600)  # it holds the keys
        cmd = [sys.executable, "-m", "engine.cli.main", "serve", "--config", str(config)]
        cmd += ["--port", str(port), "--state-dir", str(folder / "state")]
        log = (folder / "server.log").open("ab")  # a file, not a pipe nobody drains
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        cluster = cls(proc, folder, url, port, control, workers)
        try:
            wait_up(port, proc, timeout)
            wait_owned(url, timeout, workers)
            wait_balanced(url, timeout, workers)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        """SIGINT (a clean stop), then SIGKILL if it takes longer than 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{HOST}:{self.control}{path}", data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10.0) as answer:
            return json.loads(answer.read())

    def registered(self) -> int:
        """How many devices the server knows (`GET /api/devices`)."""
        status, body = call("GET", f"{self.api}/devices")
        if status != 200:
            return 0
        listed = body.get("devices", body) if isinstance(body, dict) else body
        return len(listed) if isinstance(listed, list) else 0

    def add_phones(self, n: int, timeout: float = 60.0) -> None:
        """Create phones 1..n (phone i on channel `ch<i>` only) and wait until the server knows
        them all."""
        deadline = time.monotonic() + timeout
        for first in range(1, n + 1, PHONE_BATCH):
            last = min(n, first + PHONE_BATCH - 1)
            for i in range(first, last + 1):
                self._control(
                    "POST", "/devices", {"name": device_name(i), "channels": [channel_of(i)]}
                )
            while self.registered() < last:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {self.registered()} of {last} phones registered")
                time.sleep(0.1)

    def devices(self) -> list[dict[str, Any]]:
        """Every phone with its Live Activities (the simulator's control API)."""
        listed: list[dict[str, Any]] = self._control("GET", "/devices")["devices"]
        return listed

    def pushes_accepted(self) -> int:
        """Pushes the simulated APNs has accepted so far."""
        counters = self._control("GET", "/info")
        return int(counters.get("accepted", 0))

    def epochs(self) -> dict[int, int]:
        """partition -> lease epoch now: one whose epoch grew was taken again meanwhile."""
        return {p: epoch for p, (_, epoch, _) in leases(self.url).items()}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far: supervisor (with the simulator), workers, PostgreSQL, and
        the machine as a whole (every process, this one and the load generator included)."""
        return {
            "supervisor": process_cpu(self.proc.pid),
            "workers": sum(process_cpu(pid) for pid in children(self.proc.pid)),
            "postgres": postgres_cpu(),
            "machine": machine_busy(),
        }
