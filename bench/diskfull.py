"""A full disk under load: `lockstep serve` (simulate mode) with its state directory on a small
filesystem that fills up while streams are updated, then gets room again; then a restart.

`python -m bench.diskfull --size 8m --streams 3 --run 3 --full 5 --settle 30` mounts a tmpfs of
`--size` (needs root; Linux), starts `lockstep serve` with its state directory (database, WAL,
simulated phones) on it, updates `--streams` streams in turn from this process (each value one
more than the last) and after `--run` seconds fills every free byte of the filesystem with a
filler file (right after truncating the database's write-ahead log, so that the next commits
need new space whatever the machine's speed). The calls go on for `--full` seconds against the
full disk and stop; the phones are checked (`full_disk`); the filler is deleted and the calls go
on for `--run` more seconds; then the server is stopped and started again on the same state
directory and nothing more is called.
One JSON line: the answers by status (200 accepted, 503 `storage_unavailable` refused),
`/healthz` while full and after, and for each check **lost final states** (a phone showing less
than the last value the API accepted for a stream, or not showing it) and **shown but refused**
(a phone showing a value above the last accepted one; on the full disk every such value was
answered 503, so it is a refused state that reached a phone), before and after the restart, and
the machine. Loopback only; bounded by `2 × --run + --full + 3 × --settle` plus start-ups.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness.core import machine_info
from bench.kill9 import HOST, Load, start_server, verdict
from bench.slowclients import free_port, wait_up


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block's duration."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path])
    if done.returncode != 0:
        raise SystemExit("bench.diskfull: cannot mount a tmpfs here (it needs root on Linux)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def truncate_wal(db: Path) -> bool:
    """Checkpoint the server's database from here and truncate its write-ahead log.

    SQLite reuses a log's space once a checkpoint has copied it back: a log grown past its
    checkpoint size before the disk fills lets writes go on for ever on the full disk, and
    whether it has grown that far depends on how fast the machine ran the first seconds. With
    the log truncated right before the filler takes every free byte, the next commits need new
    space on any machine. True when the log was truncated (a busy checkpoint is tried again).
    """
    conn = sqlite3.connect(db, timeout=10.0)
    try:
        for _ in range(50):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            time.sleep(0.02)
        return False
    finally:
        conn.close()


def fill(disk: Path) -> int:
    """Write a filler file until the filesystem has no byte left; returns its size."""
    written = 0
    chunk = b"\0" * 65536
    with (disk / "filler").open("wb", buffering=0) as out:
        while len(chunk) >= 512:
            try:
                written += out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]  # fill the last partial blocks too
    return written


def health(port: int) -> tuple[int, Any]:
    """`GET /healthz`: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=5.0) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def settle(control: int, load: Load, seconds: float) -> dict[str, Any]:
    """Wait up to `seconds` for every phone to show every accepted final state; the verdict."""
    deadline = time.monotonic() + seconds
    while True:
        lost, violations, shown = verdict(control, load)
        if lost == 0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    above = sum(
        1
        for where, value in shown.items()
        if value is not None and value > load.accepted.get(where.split("/", 1)[1], 0)
    )
    return {
        "lost_final_states": lost,
        "shown_but_refused": above,
        "order_violations": violations,
        "shown": shown,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; print its JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.diskfull", description=__doc__)
    p.add_argument("--size", default="8m", help="the filesystem's size (tmpfs size=)")
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--run", type=float, default=3.0, help="seconds of load before and after")
    p.add_argument("--full", type=float, default=5.0, help="seconds of load on the full disk")
    p.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the phones")
    args = p.parse_args(argv)
    port, control = free_port(), free_port()
    report: dict[str, Any] = {"bench": "diskfull", "size": args.size, "streams": args.streams}
    with tempfile.TemporaryDirectory() as tmp, small_disk(Path(tmp) / "disk", args.size) as disk:
        folder, state = Path(tmp), disk / "state"
        proc = start_server(folder, port, control, state)
        load = Load(f"http://{HOST}:{port}/api", args.streams)
        thread = threading.Thread(target=load.run, daemon=True)
        try:
            wait_up(port, proc)
            thread.start()
            time.sleep(args.run)
            report["wal_truncated"] = truncate_wal(state / "lockstep.db")
            report["filler_bytes"] = fill(disk)
            before = dict(load.statuses)
            time.sleep(args.full)
            report["healthz_full"] = health(port)
            load.stop.set()
            thread.join(30)
            report["while_full"] = {
                str(s): n - before.get(s, 0) for s, n in sorted(load.statuses.items())
            }
            # The calls stopped on a refusal: every value above the last accepted one was
            # answered 503, so a phone showing one means a refused state reached it.
            report["full_disk"] = settle(control, load, args.settle)
            (disk / "filler").unlink()
            freed = time.monotonic()
            while health(port)[0] != 200 and time.monotonic() - freed < 30.0:
                time.sleep(0.1)
            report["healthz_recovered_after_s"] = round(time.monotonic() - freed, 2)
            load.stop.clear()
            thread = threading.Thread(target=load.run, daemon=True)
            thread.start()
            time.sleep(args.run)
            load.stop.set()
            thread.join(30)
            report["answers"] = {str(s): n for s, n in sorted(load.statuses.items())}
            report["accepted"] = load.accepted
            report["before_restart"] = settle(control, load, args.settle)
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            proc = start_server(folder, port, control, state)
            wait_up(port, proc)
            report["after_restart"] = settle(control, load, args.settle)
        finally:
            load.stop.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    report["machine"] = machine_info()
    print(json.dumps(report))
    bad = [
        report[part][k]
        for part in ("full_disk", "before_restart", "after_restart")
        for k in ("lost_final_states", "shown_but_refused", "order_violations")
    ]
    return 0 if not any(bad) else 1


if __name__ == "__main__":
    raise SystemExit(main())
