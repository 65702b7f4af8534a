"""The HTTP front's own cost per request, h11 against httptools, side by side in one run.

    python -m bench.front [--requests 60000] [--connections 8] [--rounds 3] [--out PATH]

Each front (`H11Server`, `HttptoolsServer`: `[server] http_parser`) serves a hello-world ASGI
app (one `http.response.start`, one 13-byte body) in a process of its own pinned to the first
core, so what it costs is the front alone: accept, read, parse, scope, app call, encode, write.
This process, pinned to the second core, is the load generator: `--connections` keep-alive
connections, each sending a small GET (the headers a typical client sends) when its previous
answer is whole, over epoll and non-blocking sockets (a few µs per request, so the server is
the busy side). The figure is the server process's CPU time (user + system) over the requests
it answered: µs per request, and the h11/httptools ratio. Rounds alternate the fronts (h11,
httptools, h11, ...) and each front's median round is reported, so drift of the machine between
rounds hits both. One JSON line on stdout (and appended to `--out` when given), machine and
commit included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import socket
import statistics
import sys
import time
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from bench.harness.core import append_results, cpu_seconds, machine_info, pin, usable_cores
from bench.harness.procs import Child, report_failure, serve_commands

FRONTS: Final = ("h11", "httptools")
HOST: Final = "127.0.0.1"
BODY: Final = b"Hello, world!"
REQUEST: Final = (
    b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-front/1\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n\r\n"
)


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """The hello-world ASGI app: what is left of a request's cost is the front's."""
    await receive()
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def server_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """Server process: serve `hello` with the front `opts["front"]`; command `cpu`."""
    import trio

    logging.basicConfig(level=logging.ERROR)
    try:
        pin(core)
        trio.run(_serve, conn, opts["front"])
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


async def _serve(conn: Connection, front: str) -> None:
    import trio

    from engine.server.http.h11server import H11Server
    from engine.server.http.httptoolsserver import HttptoolsServer

    kind = HttptoolsServer if front == "httptools" else H11Server
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: kind(hello).serve(
                HOST, 0, task_status=task_status, shutdown_trigger=stop.wait
            )
        )

        async def cpu() -> float:
            return cpu_seconds()

        await serve_commands(conn, {"cpu": cpu}, port)
        stop.set()


def drive(port: int, requests: int, connections: int) -> float:
    """Send `requests` GETs over `connections` keep-alive connections; the seconds it took."""
    selector = selectors.DefaultSelector()
    pending: dict[int, bytearray] = {}
    socks: dict[int, socket.socket] = {}
    for _ in range(connections):
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        pending[sock.fileno()] = bytearray()
        socks[sock.fileno()] = sock
    sent = answered = 0
    began = time.perf_counter()
    for sock in socks.values():
        sock.send(REQUEST)
        sent += 1
    while answered < requests:
        for key, _ in selector.select(timeout=10.0) or _stalled():
            sock = socks[key.fd]
            buf = pending[key.fd]
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            buf += chunk
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                length = _content_length(bytes(buf[:end]))
                if len(buf) < end + 4 + length:
                    break
                del buf[: end + 4 + length]
                answered += 1
                if sent < requests:
                    sock.send(REQUEST)
                    sent += 1
    elapsed = time.perf_counter() - began
    for sock in socks.values():
        selector.unregister(sock)
        sock.close()
    return elapsed


def _stalled() -> list[Any]:
    raise RuntimeError("no answer within 10 s")


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without content-length: {head[:200]!r}")


def one_round(front: str, requests: int, connections: int, core: int | None) -> dict[str, Any]:
    """One front's cost over `requests` requests (after a warm-up of a tenth of them)."""
    child = Child.spawn(f"front-{front}", server_main, core, {"front": front})
    try:
        port = int(child.ready(30))
        drive(port, max(requests // 10, 100), connections)  # warm-up: imports, caches, buffers
        cpu0 = float(child.ask("cpu", timeout=10))
        elapsed = drive(port, requests, connections)
        cpu1 = float(child.ask("cpu", timeout=10))
    finally:
        child.stop()
    return {
        "front": front,
        "requests": requests,
        "us_per_request": round((cpu1 - cpu0) / requests * 1e6, 2),
        "requests_per_s": round(requests / elapsed),
    }


def run(requests: int, connections: int, rounds: int) -> dict[str, Any]:
    """Every round of every front, each front's median round and the h11/httptools ratio."""
    machine = machine_info()  # before this process is pinned to one core
    machine["versions"]["httptools"] = version("httptools")
    cores = usable_cores()
    server_core = cores[0] if len(cores) > 1 else None
    pinned = pin(cores[1]) if len(cores) > 1 else False
    try:
        rows = [
            one_round(front, requests, connections, server_core)
            for _ in range(rounds)
            for front in FRONTS
        ]
    finally:
        if pinned:  # the caller's process gets its cores back
            os.sched_setaffinity(0, set(cores))
    median = {
        front: statistics.median(r["us_per_request"] for r in rows if r["front"] == front)
        for front in FRONTS
    }
    return {
        "scenario": "front",
        "measured": (
            "server process CPU (user + system) per hello-world GET, keep-alive, no pipelining; "
            "median of the rounds"
        ),
        "settings": {"requests": requests, "connections": connections, "rounds": rounds},
        "pinned": {"server_core": server_core, "generator_core": cores[1] if pinned else None},
        "us_per_request": median,
        "ratio_h11_over_httptools": round(median["h11"] / median["httptools"], 2),
        "rounds": rows,
        "machine": machine,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.front", description=__doc__)
    parser.add_argument("--requests", type=int, default=60000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.requests, args.connections, args.rounds)
    print(json.dumps(result))
    if args.out is not None:
        append_results(args.out, [result])
    for front in FRONTS:
        print(f"{front}: {result['us_per_request'][front]} µs per request", file=sys.stderr)
    print(f"ratio h11/httptools: {result['ratio_h11_over_httptools']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
