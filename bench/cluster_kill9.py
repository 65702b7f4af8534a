"""A node killed under load: `lockstep serve --workers N` on PostgreSQL (simulate mode), one worker
killed with SIGKILL while streams are updated through the shared port; then no new call: what the
phones show, against what the API accepted, and how long the takeover took.

`python -m bench.cluster_kill9 --workers 3 --streams 12 --run 5 --settle 60` makes a fresh schema
in the PostgreSQL database `--pg` (default the local `test` database), starts the server with N
workers (one simulator, three phones), waits until every partition has an owner, and updates
`--streams` streams in turn from this process (each value one more than the last), any worker
answering any call. `--run` seconds in, the worker holding the most partitions is killed with
SIGKILL (no drain, no release); its partitions stay leased until their leases run out, then the
others take them over (**takeover**: from the kill until every partition it held is held again,
by the lease table, under a higher epoch). The supervisor starts the worker again, and the
partitions are rebalanced onto it: some move a second time, under load. After another `--run`
seconds the load stops; up to `--settle` seconds for the phones. One JSON line on stdout: the
calls and their statuses, the takeover time, the partitions moved twice, the **lost final states**
(a phone showing less than the last value accepted for a stream, or not showing it), the **order
violations** (the phones' own count), the machine and commit. Loopback only; bounded by
`2 x --run + --settle` plus start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from bench.harness.core import machine_info
from bench.kill9 import API_KEY, DEVICE_KEY, PHONES, Load, settle
from bench.slowclients import free_port, wait_up

PG = os.environ.get("LOCKSTEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def leases(url: str) -> dict[int, tuple[str | None, int, bool]]:
    """partition -> (owner, epoch, unexpired) as the database sees it now."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT partition, owner, epoch, expires_at > now() FROM lockstep_leases"
        ).fetchall()
    return {int(p): (owner, int(epoch), bool(live)) for p, owner, epoch, live in rows}


def wait_owned(url: str, timeout: float, owners: int) -> dict[int, tuple[str | None, int, bool]]:
    """Wait until every partition is held by one of `owners` distinct live nodes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            table = leases(url)
        except psycopg.Error:
            table = {}
        held = {o for o, _, live in table.values() if live and o}
        if table and all(live and o for o, _, live in table.values()) and len(held) >= owners:
            return table
        if time.monotonic() > deadline:
            raise SystemExit(f"the partitions were not all held by {owners} nodes in time")
        time.sleep(0.1)


def worker_pid(supervisor: int, node_id: str) -> int:
    """The pid of the worker child of `supervisor` whose LOCKSTEP_NODE_ID is `node_id`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != supervisor:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"LOCKSTEP_NODE_ID={node_id}".encode() in env:
            return int(entry.name)
    raise SystemExit(f"no worker process named {node_id}")


def lost_detail(control: int, load: Load) -> list[dict[str, Any]]:
    """What the phones say about each stream they show below its last accepted value."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{control}/devices", timeout=5.0) as answer:
        devices = json.loads(answer.read())["devices"]
    out = []
    for device in devices:
        for act in device["activities"]:
            key = act["content_state"].get("title")
            value = act["content_state"].get("value")
            if key in load.accepted and (value or 0) < load.accepted[key]:
                keep = ("state", "applied", "ignored", "throttled", "delayed", "superseded", "held")
                out.append(
                    {
                        "device": device["name"],
                        "stream": key,
                        "value": value,
                        **{k: act.get(k) for k in keep},
                        "events": act.get("events", [])[-6:],
                    }
                )
    return out


def start(folder: Path, url: str, port: int, control: int, workers: int) -> subprocess.Popen[bytes]:
    """`lockstep serve --workers N` on the PostgreSQL schema `url`, its output in a log file."""
    config = folder / "lockstep.toml"
    config.write_text(
        f'[server]\napi_keys = ["{API_KEY}"]\ndevice_keys = ["{DEVICE_KEY}"]\n'
        f"workers = {workers}\n"
        f'[store]\nurl = "{url}"\n'
        f"[simulate]\ndevices = {PHONES}\ncontrol_port = {control}\n"
        '[cluster]\nnode_id = "bench"\n'
    )
    cmd = [sys.executable, "-m", "engine.cli.main", "serve", "--config", str(config)]
    cmd += ["--port", str(port), "--state-dir", str(folder / "state"), "--verbose"]
    log = (folder / "server.log").open("ab")
    return subprocess.Popen(cmd, stdout=log, stderr=log)


def measure(url: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The run itself (see the module docstring)."""
    port, control = free_port(), free_port()
    proc = start(folder, url, port, control, args.workers)
    load = Load(f"http://127.0.0.1:{port}/api", args.streams)
    thread = threading.Thread(target=load.run, daemon=True)
    result: dict[str, Any] = {}
    lost = violations = 0
    try:
        wait_up(port, proc)
        before = wait_owned(url, 60, args.workers)
        thread.start()
        time.sleep(args.run)
        counts: dict[str, int] = {}
        for owner, _, _ in before.values():
            counts[str(owner)] = counts.get(str(owner), 0) + 1
        table = leases(url)
        victim = max(counts, key=lambda o: counts[o])
        held = {p: epoch for p, (o, epoch, _) in table.items() if o == victim}
        pid = worker_pid(proc.pid, victim)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        takeover = None
        while time.monotonic() - killed_at < 60:
            now = leases(url)
            if all(now[p][1] > e and now[p][0] and now[p][2] for p, e in held.items()):
                takeover = time.monotonic() - killed_at
                break
            time.sleep(0.02)
        time.sleep(args.run)
        load.stop.set()
        thread.join(30)
        lost, violations, shown = settle(control, load, args.settle)
        after = leases(url)
        result["lost_detail"] = lost_detail(control, load) if lost else []
        result = {
            **result,
            "victim": victim,
            "victim_partitions": len(held),
            "takeover_s": None if takeover is None else round(takeover, 3),
            "moved_twice": sum(1 for p, e in held.items() if after[p][1] >= e + 2),
            "lost_final_states": lost,
            "order_violations": violations,
            "shown": shown,
        }
    finally:
        load.stop.set()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if args.log is not None:
        args.log.write_bytes((folder / "server.log").read_bytes())
    return {**result, "calls": load.calls, "statuses": load.statuses, "accepted": load.accepted}


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; print its JSON line; exit 1 if a final state was lost or out of
    order, or the takeover did not finish."""
    p = argparse.ArgumentParser(prog="python -m bench.cluster_kill9", description=__doc__)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--streams", type=int, default=12)
    p.add_argument("--run", type=float, default=5.0, help="seconds of load before and after")
    p.add_argument("--settle", type=float, default=60.0, help="seconds to wait for the phones")
    p.add_argument("--pg", default=PG, help="the PostgreSQL database (a fresh schema is made)")
    p.add_argument("--log", type=Path, help="keep the server's log in this file")
    args = p.parse_args(argv)
    schema = f"lockstep_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{args.pg}?options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(url, args, Path(tmp))
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    line = {"bench": "cluster_kill9", "workers": args.workers, "streams": args.streams}
    print(json.dumps({**line, **result, "machine": machine_info()}))
    ok = result.get("lost_final_states") == 0 and result.get("order_violations") == 0
    return 0 if ok and result.get("takeover_s") is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
