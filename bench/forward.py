"""What a forwarding hop costs: a node that relays every call to the node that owns it.

    python -m bench.forward [--requests 20000] [--connections 8] [--rounds 3] [--out PATH]

Two server processes. The owner serves a stand-in for the API (it reads each stream PUT and
answers a fixed 200 JSON body the size of a real `StreamPutResponse`) on the httptools front.
The forwarding node is the real API app (`engine.server.http.app`, httptools front) with a router
that places every call on the owner, so each request is authenticated, read, forwarded over the
pooled keep-alive connections of `engine.server.cluster.forward` and its answer relayed. The
forwarding node runs alone on the first core; the owner and this process (the load generator:
`--connections` keep-alive connections, a new PUT as soon as the previous answer is whole)
share the second. Rounds alternate a direct run (generator -> owner) and a forwarded run
(generator -> node -> owner). Reported: the forwarding node's CPU time per request (user and
system apart), the owner's in the direct run (an HTTP front and a trivial app: a yardstick taken
under the same machine load) and their ratio, and the requests per second of both runs (median
rounds). One JSON line on stdout (appended to `--out` when given), machine and commit included.
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
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from bench.harness.core import append_results, machine_info, pin, usable_cores
from bench.harness.procs import Child, report_failure, serve_commands

HOST: Final = "127.0.0.1"
KEY: Final = "lsk_bench_forward_0123456789abcdef"
BODY: Final = b'{"content_state":{"title":"Deploy","type":"progress","percentage":40}}'
ANSWER: Final = (
    b'{"success":true,"operation":"updated","stream_key":"bench-1","activity_id":'
    b'"act_0123456789abcdef","devices_queued":2,"timestamp":"2026-12-07T17:00:00.000Z"}'
)
REQUEST: Final = (
    b"PUT /api/live-activity/stream/bench-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


async def owner_app(scope: Any, receive: Any, send: Any) -> None:
    """The owner's stand-in: read the body, answer the fixed JSON."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class Everywhere:
    """A router that places every call on the owner."""

    node_id = "bench-node"

    def __init__(self, address: str) -> None:
        from engine.server.http.seam import Forward

        self.address = address
        self.placement = Forward(address)

    def place(self, endpoint: Any, params: Mapping[str, str], body: bytes, /) -> Any:
        """Always the owner (decided once: the router's own cost is not what is measured)."""
        return self.placement


def server_main(conn: Connection, core: int | None, opts: dict[str, Any]) -> None:
    """A server process: the owner (`opts["owner"]` None) or the forwarding node."""
    import trio

    logging.basicConfig(level=logging.ERROR)
    try:
        pin(core)
        trio.run(_serve, conn, opts.get("owner"))
    except BaseException as exc:  # noqa: BLE001 - the parent waits on the pipe: tell it why
        report_failure(conn, exc)


async def _serve(conn: Connection, owner: str | None) -> None:
    import trio

    from engine.server.http import PromMetrics, build_openapi, create_app, serve_http

    app: Any = owner_app
    if owner is not None:
        service: Any = object()  # never called: every call is forwarded
        app = create_app(
            service,
            api_keys=[KEY],
            device_keys=[],
            metrics=PromMetrics(),
            openapi=build_openapi(),
            router=Everywhere(owner),
        )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_http(
                app, HOST, 0, task_status=task_status, shutdown_trigger=stop.wait
            )
        )

        async def cpu() -> tuple[float, float]:
            times = os.times()
            return times.user, times.system

        await serve_commands(conn, {"cpu": cpu}, port)
        stop.set()


def drive(port: int, requests: int, connections: int) -> float:
    """Send `requests` PUTs over `connections` keep-alive connections; the seconds it took."""
    selector = selectors.DefaultSelector()
    socks: dict[int, socket.socket] = {}
    pending: dict[int, bytearray] = {}
    for _ in range(connections):
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        socks[sock.fileno()], pending[sock.fileno()] = sock, bytearray()
    began = time.perf_counter()
    for sock in socks.values():
        sock.send(REQUEST)
    sent, answered = connections, 0
    while answered < requests:
        events = selector.select(timeout=10.0)
        if not events:
            raise RuntimeError("no answer within 10 s")
        for key, _ in events:
            buf = pending[key.fd]
            chunk = socks[key.fd].recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            buf += chunk
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                head = bytes(buf[:end])
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected answer {head[:100]!r}")
                length = _content_length(head)
                if len(buf) < end + 4 + length:
                    break
                del buf[: end + 4 + length]
                answered += 1
                if sent < requests:
                    socks[key.fd].send(REQUEST)
                    sent += 1
    elapsed = time.perf_counter() - began
    for sock in socks.values():
        selector.unregister(sock)
        sock.close()
    return elapsed


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without content-length: {head[:200]!r}")


def one_round(
    requests: int, connections: int, node_core: int | None, owner_core: int | None
) -> list[dict[str, Any]]:
    """A direct run and a forwarded run against fresh processes."""
    owner = Child.spawn("owner", server_main, owner_core, {})
    try:
        owner_port = int(owner.ready(30))
        node = Child.spawn("node", server_main, node_core, {"owner": f"{HOST}:{owner_port}"})
        try:
            node_port = int(node.ready(30))
            rows = []
            for mode, port in (("direct", owner_port), ("forwarded", node_port)):
                drive(port, max(requests // 10, 100), connections)  # warm-up
                # The forwarding node, or in the direct run the owner: a front and a trivial app.
                measured = node if mode == "forwarded" else owner
                user0, system0 = measured.ask("cpu", timeout=10)
                elapsed = drive(port, requests, connections)
                user1, system1 = measured.ask("cpu", timeout=10)
                user, system = (user1 - user0) / requests, (system1 - system0) / requests
                rows.append(
                    {
                        "mode": mode,
                        "requests_per_s": round(requests / elapsed),
                        "us_per_request": round((user + system) * 1e6, 1),
                        "user_us": round(user * 1e6, 1),
                        "system_us": round(system * 1e6, 1),
                    }
                )
        finally:
            node.stop()
    finally:
        owner.stop()
    return rows


def run(requests: int, connections: int, rounds: int) -> dict[str, Any]:
    """Every round, and the medians."""
    machine = machine_info()  # before this process is pinned
    cores = usable_cores()
    two = len(cores) > 1 and hasattr(os, "sched_setaffinity")
    node_core, other_core = (cores[0], cores[1]) if two else (None, None)
    pinned = pin(other_core)
    try:
        rows = [
            r
            for _ in range(rounds)
            for r in one_round(requests, connections, node_core, other_core)
        ]
    finally:
        if pinned:
            os.sched_setaffinity(0, set(cores))

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rows if r["mode"] == mode))

    return {
        "scenario": "forward",
        "measured": (
            "forwarding node CPU (user + system) per stream PUT relayed to its owner over pooled "
            "keep-alive HTTP/1.1; requests/s direct to the owner and through the node; medians"
        ),
        "settings": {"requests": requests, "connections": connections, "rounds": rounds},
        "pinned": {"node_core": node_core, "owner_and_generator_core": other_core},
        "node_us_per_request": median("forwarded", "us_per_request"),
        "node_user_us": median("forwarded", "user_us"),
        "node_system_us": median("forwarded", "system_us"),
        "owner_us_per_request": median("direct", "us_per_request"),
        "node_over_owner": round(
            median("forwarded", "us_per_request") / median("direct", "us_per_request"), 2
        ),
        "requests_per_s": {
            mode: median(mode, "requests_per_s") for mode in ("direct", "forwarded")
        },
        "load_average": os.getloadavg(),
        "rounds": rows,
        "machine": machine,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.forward", description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.requests, args.connections, args.rounds)
    print(json.dumps(result))
    if args.out is not None:
        append_results(args.out, [result])
    print(
        f"forwarding node: {result['node_us_per_request']} µs CPU per request "
        f"({result['node_user_us']} user, {result['node_system_us']} system), "
        f"{result['node_over_owner']}x the owner's (a front and a trivial app); requests/s "
        f"direct {result['requests_per_s']['direct']}, "
        f"forwarded {result['requests_per_s']['forwarded']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
