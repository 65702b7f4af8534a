"""Burst: stream updates as fast as the server answers them, to a few keys or to many.

The processes of scenario 2 (`bench.harness.stack`: the server with its SQLite store, WAL and
synchronous=FULL, and engine, pinned to one core; the simulator on the other). For each entry of
`keys` (how many streams the burst goes to), that many streams are started, one per simulated
iPhone channel, and every device reports its update token. Then a closed loop runs for `seconds`:
`connections` keep-alive HTTP/1.1 connections, connection *i* bound to stream *i mod keys*, each
sending its next stream PUT (a new state every time: a stored update) the moment the previous
one is answered. With 5 keys and 64 connections about 13 calls to each stream are in flight at
once: calls to one stream wait for each other unless they share commits (the five-key burst);
with hundreds of keys each connection has its own streams (stored updates per second).

The load generator (`drive`) is a plain non-blocking socket loop in its own process (a few µs of
CPU per call, with the simulator on the second core), so the server is the busy side. Reported:
calls answered per second (200s over the time the loop ran), reply time percentiles (request
bytes sent -> answer complete), the server process's CPU per call, the store's writes per commit,
and, `settle` seconds after the last call, whether every stream's newest stored state is the one
on its phone (0 lost) with no order violation.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from bench.harness.core import RunEnv, pin, record, summarize
from bench.harness.loadgen import Generator
from bench.harness.procs import Child, report_failure, serve_commands
from bench.harness.stack import API_KEY, Stack, open_stack
from bench.harness.streams import device_for, devices_for, setup_streams, stream_keys

SCENARIO = "burst"
MEASURED = (
    "HTTP/1.1 PUT /api/live-activity/stream/{key} (a new state each call: stored, durable before "
    "the answer), closed loop on keep-alive connections bound round-robin to `keys` streams, "
    "through the full server: HTTP front, service, SQLite (WAL, synchronous=FULL), engine; "
    "the pushes to the fake APNs (TLS, 127.0.0.1) follow the engine's pacing"
)
BODY = (
    b'{"content_state":{"title":"%s","subtitle":"%s","type":"metrics","metrics":'
    b'[{"label":"CPU","value":%d,"unit":"%%"},{"label":"MEM","value":45,"unit":"%%"}]}}'
)


def run(cfg: dict[str, Any], env: RunEnv) -> list[dict[str, Any]]:
    """One record per entry of `cfg["keys"]`, each on a fresh server."""
    # A worktree's `.git` is a file `machine_info` does not read: ask git for the commit.
    records = []
    for keys in [int(k) for k in cfg["keys"]]:
        figures = one_burst(cfg, env, keys)
        env.progress(_line(keys, figures))
        records.append(
            record(
                SCENARIO,
                f"{keys} keys",
                settings={**cfg, "keys": keys},
                figures=figures,
                machine=env.machine,
                cores=env.cores,
                measured=MEASURED,
            )
        )
    return records


def one_burst(cfg: dict[str, Any], env: RunEnv, keys: int) -> dict[str, Any]:
    """Start `keys` streams, run the closed loop, wait `settle`, check the phones."""
    per_device = int(cfg.get("streams_per_device", 5))
    names = stream_keys(keys, prefix="b")
    with open_stack(
        cores=env.cores,
        folder=env.folder / f"k{keys}",
        devices=devices_for(keys, per_device),
        max_active=per_device,
        seed=int(cfg.get("seed", 0)),
    ) as stack:
        gen = Generator.spawn(env.cores.generator, stack.api_base, API_KEY)
        try:
            setup = setup_streams(stack, gen, names, per_device, connections=16, timeout=60.0)
        finally:
            gen.stop()
        driver = Child.spawn("burst", driver_main, env.cores.generator, {})
        try:
            driver.ready(60)
            before = stack.server.ask("stats", timeout=30)
            seconds = float(cfg["seconds"])
            out = driver.ask(
                "run",
                timeout=seconds + 120,
                api_base=stack.api_base,
                keys=names,
                connections=int(cfg["connections"]),
                seconds=seconds,
            )
            after = stack.server.ask("stats", timeout=30)
        finally:
            driver.stop()
        time.sleep(float(cfg.get("settle", 2.5)))
        check = final_states(stack, setup["activity_ids"], names, per_device)
    return burst_figures(out, before, after, check, setup)


def final_states(
    stack: Stack, ids: dict[str, str], names: list[str], per_device: int
) -> dict[str, Any]:
    """Every stream's newest stored state (the server's) against what its phone shows."""
    views = stack.server.ask("explain", timeout=60, activity_ids=[ids[k] for k in names])
    expected = {
        view["activity_id"]: (view["subtitle"], device_for(i, per_device))
        for i, view in enumerate(views)
        if view.get("known")
    }
    result: dict[str, Any] = stack.sim.ask("check", timeout=60, expected=expected, ended=False)
    return result


def burst_figures(
    out: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    check: dict[str, Any],
    setup: dict[str, Any],
) -> dict[str, Any]:
    """Calls per second, reply percentiles (ms), server CPU per call, commits, the phones."""
    ok = out["ok"]
    writes = after["store_writes"] - before["store_writes"]
    batches = after["store_batches"] - before["store_batches"]
    return {
        "calls_ok": ok,
        "calls_failed": out["failed"],
        "statuses": out["statuses"],
        "calls_per_s": round(ok / out["elapsed"], 1) if out["elapsed"] > 0 else 0.0,
        "reply_ms": summarize(out["latencies"], scale=1000),
        "server_cpu_us_per_call": round((after["cpu_s"] - before["cpu_s"]) / max(ok, 1) * 1e6, 1),
        "store_commits": batches,
        "calls_per_commit": round(ok / batches, 1) if batches else 0.0,
        "store_writes_per_commit": round(writes / batches, 1) if batches else 0.0,
        "final_delivered": check["delivered"] == check["expected"],
        "lost_final_states": check["lost"],
        "order_violations": check["order_violations"],
        "setup_failed": setup["failed"],
        "setup_held": setup["held"],
        "duration_s": round(out["elapsed"], 3),
    }


# -- the driver process ----------------------------------------------------------------------------


def driver_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """Driver process: `run` executes one closed loop and returns its counts and latencies."""
    import trio

    logging.basicConfig(level=logging.ERROR)
    try:
        pinned = pin(core)

        async def main() -> None:
            async def run_burst(
                api_base: str, keys: list[str], connections: int, seconds: float
            ) -> dict[str, Any]:
                return drive(api_base, keys, connections, seconds)

            await serve_commands(conn, {"run": run_burst}, {"pinned": pinned})

        trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


class _Line:
    """One keep-alive connection bound to one stream: its socket, buffer and call in flight."""

    def __init__(self, host: str, port: int, prefix: str, key: str, index: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.key = key.encode()
        self.head = (
            f"PUT {prefix}/live-activity/stream/{key} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.tag = b"c%d-" % index
        self.count = 0
        self.sent_at = 0.0

    def send_next(self) -> None:
        self.count += 1
        body = BODY % (self.key, self.tag + b"%d" % self.count, self.count)
        self.sent_at = time.monotonic()
        self.sock.sendall(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def drive(api_base: str, keys: list[str], connections: int, seconds: float) -> dict[str, Any]:
    """The closed loop (module docstring); returns counts, statuses and reply latencies (s)."""
    parts = urlsplit(api_base)
    host, port, prefix = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")
    selector = selectors.DefaultSelector()
    lines = {}
    for i in range(connections):
        line = _Line(host, port, prefix, keys[i % len(keys)], i)
        selector.register(line.sock, selectors.EVENT_READ, line)
        lines[line.sock.fileno()] = line
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    began = time.monotonic()
    stop_at = began + seconds
    for line in lines.values():
        line.send_next()
    open_calls = len(lines)
    last = began
    while open_calls:
        events = selector.select(timeout=10.0)
        if not events:
            raise RuntimeError("no answer within 10 s")
        for key, _ in events:
            line = key.data
            chunk = line.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            line.buf += chunk
            while (end := line.buf.find(b"\r\n\r\n")) >= 0:
                head = bytes(line.buf[:end])
                length = _content_length(head)
                if len(line.buf) < end + 4 + length:
                    break
                del line.buf[: end + 4 + length]
                now = time.monotonic()
                status = int(head[9:12])
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(now - line.sent_at)
                    last = now
                if now < stop_at:
                    line.send_next()
                else:
                    open_calls -= 1
    for line in lines.values():
        selector.unregister(line.sock)
        line.sock.close()
    ok = statuses.get(200, 0)
    return {
        "ok": ok,
        "failed": sum(statuses.values()) - ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latencies": latencies,
        "elapsed": last - began,
    }


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without content-length: {head[:200]!r}")


def _line(keys: int, f: dict[str, Any]) -> str:
    reply = f["reply_ms"]
    return (
        f"burst to {keys} keys: {f['calls_per_s']:g} calls/s, p50 {reply['p50']} ms, "
        f"p99 {reply['p99']} ms, {f['server_cpu_us_per_call']} µs server CPU per call, "
        f"{f['calls_per_commit']:g} calls per commit, {f['calls_failed']} failed, "
        f"last states {'on the phones' if f['final_delivered'] else 'LOST'}"
    )
