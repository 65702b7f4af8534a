"""Measure the accept-all sink's capacity: `python -m bench.sink_probe --seconds 5 --tls`.

Two processes on two cores of 127.0.0.1: the sink (trio shell + `FastSinkProtocol`) pinned to one
core, and a deliberately cheap load generator pinned to another. The generator hand-rolls its
HTTP/2 frames: constant headers go into the HPACK dynamic table once and are then one indexed byte
each, nothing is Huffman-coded, and a batch of requests leaves in one socket write. Requests are
Live-Activity sized (~300-byte JSON body, apns.md §1, §6).

The sink measures itself (process CPU time and wall time over the measured interval). If one
Python client cannot saturate it, the in-process figure (request bytes fed straight into
`receive_data`) shows the core's pure cost per request.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import socket
import ssl
import struct
import tempfile
import time
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness.core import pin
from engine.apns.h2wire import (
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FRAME_HEAD_SIZE,
    GOAWAY,
    GOAWAY_HEAD,
    HEADERS,
    NO_ERROR,
    PING,
    PREFACE,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    STREAM_ID_MASK,
    U32,
    WINDOW_UPDATE,
    frame,
    hpack_int,
    hpack_string,
    unpack_frame_head,
)
from simulator.fastsink import FastSinkProtocol

_LAST_STREAM_ID = STREAM_ID_MASK  # the highest stream id (RFC 9113 §5.1.1)


def _placeholder_jwt() -> str:
    """A JWT-shaped string of realistic length; it is not signed and grants nothing."""

    def part(obj: object) -> str:
        return urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head = part({"alg": "ES256", "kid": "ABCDEFGHIJ"})
    claims = part({"iss": "TEAMID1234", "iat": 1_700_000_000})
    return f"{head}.{claims}.{'A' * 86}"


def live_activity_body() -> bytes:
    """A Live Activity update of about 300 bytes (apns.md §6)."""
    state = {"home": 2, "away": 1, "clock": "67:12", "period": "2nd half", "last": "Goal by #9"}
    aps = {
        "timestamp": 1_700_000_000,
        "event": "update",
        "content-state": state,
        "stale-date": 1_700_003_600,
        "relevance-score": 50,
        "alert": {"title": "Score update", "body": "Home 2 - 1 Away", "sound": "default"},
    }
    body = json.dumps({"aps": aps, "match": "m-000123"}, separators=(",", ":")).encode()
    return body + b" " * max(0, 300 - len(body))


@dataclass
class RequestEncoder:
    """Pre-encoded APNs requests (HEADERS + DATA); only stream id and device token vary."""

    tokens: int = 256
    body: bytes = field(default_factory=live_activity_body)
    next_sid: int = 1

    def __post_init__(self) -> None:
        constant = [
            (1, None, b"api.sandbox.push.apple.com"),  # :authority
            (23, None, b"bearer " + _placeholder_jwt().encode()),  # authorization
            (0, b"apns-push-type", b"liveactivity"),
            (0, b"apns-topic", b"com.example.lockstep.push-type.liveactivity"),
            (0, b"apns-priority", b"10"),
            (0, b"apns-expiration", b"0"),
            (28, None, str(len(self.body)).encode()),  # content-length
        ]
        # First request: literals with incremental indexing fill the peer's dynamic table.
        first = b""
        for index, name, value in constant:
            name_part = hpack_int(index, 6, 0x40) if name is None else b"\x40" + hpack_string(name)
            first += name_part + hpack_string(value)
        # Later requests: the newest entry is index 62, so entry j of k sits at 62 + k - 1 - j.
        k = len(constant)
        later = b"".join(hpack_int(62 + k - 1 - j, 7, 0x80) for j in range(k))
        self._first_blocks, self._blocks = [], []
        for i in range(self.tokens):
            token = hashlib.sha256(i.to_bytes(4, "big")).hexdigest()
            # :method POST, :scheme https (static 3, 7), then :path as a literal without indexing
            # (static name 4, as Apple's guidance has it); pseudo-headers come first.
            pseudo = b"\x83\x87\x04" + hpack_string(f"/3/device/{token}".encode())
            self._first_blocks.append(pseudo + first)
            self._blocks.append(pseudo + later)
        head_len = len(self._blocks[0])
        self._data_head = frame(DATA, FLAG_END_STREAM, 0, self.body)[:5]
        self._head = frame(HEADERS, FLAG_END_HEADERS, 0, self._blocks[0])[:5]
        self._pack = struct.Struct(f">5sL{head_len}s5sL{len(self.body)}s").pack
        self.sent = 0

    def preface(self) -> bytes:
        """Client connection preface plus SETTINGS (push disabled)."""
        return PREFACE + frame(SETTINGS, 0, 0, SETTING.pack(SETTINGS_ENABLE_PUSH, 0))

    def encode(self, n: int) -> bytes:
        """The next `n` requests as one byte string."""
        parts = []
        sid, start = self.next_sid, self.sent
        if start == 0 and n > 0:
            block = self._first_blocks[0]
            parts.append(frame(HEADERS, FLAG_END_HEADERS, sid, block))
            parts.append(frame(DATA, FLAG_END_STREAM, sid, self.body))
            sid, start, n = sid + 2, 1, n - 1
        pack, head, data_head, body = self._pack, self._head, self._data_head, self.body
        blocks, count = self._blocks, self.tokens
        for i in range(start, start + n):
            parts.append(pack(head, sid, blocks[i % count], data_head, sid, body))
            sid += 2
        self.next_sid, self.sent = sid, start + n
        return b"".join(parts)


@dataclass
class ResponseReader:
    """Client-side frame reader: counts answers, follows the server's window and settings."""

    answered: int = 0
    not_ok: int = 0
    window: int = 65535
    max_streams: int = 100
    settings_seen: bool = False
    goaway: bool = False
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes | bytearray) -> bytes:
        """Consume server bytes; return frames the client must send back (ACKs)."""
        buf = self._buf
        buf += data
        pos, end, reply = 0, len(buf), bytearray()
        while end - pos >= FRAME_HEAD_SIZE:
            length, ftype, flags, sid = unpack_frame_head(buf, pos)
            start = pos + FRAME_HEAD_SIZE
            stop = start + length
            if stop > end:
                break
            if ftype == HEADERS and flags & FLAG_END_STREAM:
                self.answered += 1
                if buf[start] != 0x88 and buf[start : start + 2] != b"\x20\x88":  # :status 200
                    self.not_ok += 1
            elif ftype == WINDOW_UPDATE and sid == 0:
                self.window += U32.unpack_from(buf, start)[0] & STREAM_ID_MASK
            elif ftype == SETTINGS and not flags & FLAG_ACK:
                for ident, value in SETTING.iter_unpack(bytes(buf[start:stop])):
                    if ident == SETTINGS_MAX_CONCURRENT_STREAMS:
                        self.max_streams = value
                self.settings_seen = True
                reply += frame(SETTINGS, FLAG_ACK, 0)
            elif ftype == PING and not flags & FLAG_ACK:
                reply += frame(PING, FLAG_ACK, 0, bytes(buf[start:stop]))
            elif ftype == GOAWAY:
                self.goaway = True
            pos = stop
        del buf[:pos]
        return bytes(reply)


def _client_socket(port: int, ca_file: str | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ca_file is None:
        return sock
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["h2"])
    tls = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    if tls.selected_alpn_protocol() != "h2":
        raise RuntimeError("server did not negotiate h2")
    return tls


def client_main(conn: Connection, port: int, ca_file: str | None, opts: dict[str, Any]) -> None:
    """Load generator process: warm up, measure for `seconds`, drain, report over `conn`."""
    pinned = pin(opts["client_core"])
    sock = _client_socket(port, ca_file)
    enc, rd = RequestEncoder(), ResponseReader()
    sock.sendall(enc.preface())
    while not rd.settings_seen:  # bounded by the socket timeout
        sock.sendall(rd.feed(sock.recv(65536)) or b"")
    limit = min(opts["depth"], rd.max_streams)
    body_len = len(enc.body)
    t0 = time.perf_counter()
    measure_at, deadline = t0 + opts["warmup"], t0 + opts["warmup"] + opts["seconds"]
    base = t_measure = None
    while not rd.goaway and enc.next_sid < _LAST_STREAM_ID - 2 * (limit + 1):
        now = time.perf_counter()
        if base is None and now >= measure_at:
            conn.send("measure")
            base, t_measure = rd.answered, now
        if now >= deadline:
            break
        # Fill every free stream slot before reading, one write per batch: with a small --batch
        # this models a client that writes each request on its own but keeps many in flight.
        room = min(limit - (enc.sent - rd.answered), rd.window // body_len)
        while room > 0:
            n = min(room, opts["batch"])
            sock.sendall(enc.encode(n))
            rd.window -= n * body_len
            room -= n
        data = sock.recv(1 << 18)
        if not data:
            break
        reply = rd.feed(data)
        if reply:
            sock.sendall(reply)
    t_end, answered_end = time.perf_counter(), rd.answered
    conn.send("done")
    drain_deadline = t_end + 3.0
    while rd.answered < enc.sent and time.perf_counter() < drain_deadline and not rd.goaway:
        data = sock.recv(1 << 18)
        if not data:
            break
        rd.feed(data)
    sock.sendall(frame(GOAWAY, 0, 0, GOAWAY_HEAD.pack(0, NO_ERROR)))
    sock.close()
    measured = (answered_end - (base or 0), t_end - (t_measure or t_end))
    conn.send(
        {
            "requests": measured[0],
            "wall_s": measured[1],
            "rps": measured[0] / measured[1] if measured[1] > 0 else 0.0,
            "sent_total": enc.sent,
            "answered_total": rd.answered,
            "not_200": rd.not_ok,
            "pinned": pinned,
        }
    )


def sink_main(
    conn: Connection, cert_file: str | None, key_file: str | None, core: int | None
) -> None:
    """Sink process: serve on 127.0.0.1:0, obey 'restart' / 'report' / 'stop' from `conn`."""
    import trio

    from simulator.fastserve import SinkStats, serve_fast_sink

    pinned = pin(core)
    ctx = None
    if cert_file is not None and key_file is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_file, key_file)
        ctx.set_alpn_protocols(["h2"])

    async def run() -> None:
        stats = SinkStats()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_fast_sink, ssl_context=ctx, stats=stats))
            conn.send(port)
            while True:
                msg = await trio.to_thread.run_sync(conn.recv, abandon_on_cancel=True)
                if msg == "restart":
                    stats.restart()
                elif msg == "report":
                    conn.send({**stats.report(), "pinned": pinned})
                else:
                    break
            nursery.cancel_scope.cancel()

    trio.run(run)


def measure_in_process(requests: int = 20000, rounds: int = 5) -> dict[str, float]:
    """Pure core cost: pre-encoded requests in 64 KiB chunks fed to `receive_data`."""
    enc = RequestEncoder()
    preface = enc.preface()
    blob = enc.encode(requests)
    chunks = [blob[i : i + 65536] for i in range(0, len(blob), 65536)]
    best = float("inf")
    for _ in range(rounds):
        sink = FastSinkProtocol()
        sink.receive_data(preface)
        sink.data_to_send()
        t = time.process_time()
        for chunk in chunks:
            sink.receive_data(chunk)
            sink.data_to_send()
        best = min(best, time.process_time() - t)
        if sink.requests != requests or sink.closed:
            raise RuntimeError(f"sink answered {sink.requests}/{requests}, closed={sink.closed}")
    return {
        "requests": requests,
        "cpu_s": best,
        "cpu_us_per_request": best * 1e6 / requests,
        "rps_per_cpu_s": requests / best,
        "request_bytes": len(blob) / requests,
    }


def _write_certs(folder: Path) -> tuple[str, str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.cert_chain_pems[0].write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return str(paths[0]), str(paths[1]), str(paths[2])


def _stop(process: mp.process.BaseProcess) -> None:
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)


def run_pair(opts: dict[str, Any]) -> dict[str, Any]:
    """Sink and client in two pinned processes; returns both sides' figures."""
    ctx = mp.get_context("spawn")
    budget = 30 + opts["warmup"] + opts["seconds"]
    with tempfile.TemporaryDirectory() as tmp:
        ca = cert = key = None
        if opts["tls"]:
            ca, cert, key = _write_certs(Path(tmp))
        sink_end, sink_conn = ctx.Pipe()
        client_end, client_conn = ctx.Pipe()
        sink = ctx.Process(target=sink_main, args=(sink_conn, cert, key, opts["sink_core"]))
        client: mp.process.BaseProcess | None = None
        sink.start()
        try:
            if not sink_end.poll(20):
                raise RuntimeError("sink did not start")
            port = sink_end.recv()
            client = ctx.Process(target=client_main, args=(client_conn, port, ca, opts))
            client.start()
            for expected in ("measure", "done"):
                if not client_end.poll(budget) or client_end.recv() != expected:
                    raise RuntimeError(f"client never said {expected!r}")
                sink_end.send("restart" if expected == "measure" else "report")
            if not (sink_end.poll(10) and client_end.poll(10)):
                raise RuntimeError("no report from the sink or the client")
            result = {"sink": sink_end.recv(), "client": client_end.recv()}
        finally:
            if client is not None:
                _stop(client)
            with contextlib.suppress(OSError):
                sink_end.send("stop")
            _stop(sink)
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; prints a summary, or JSON with --json."""
    parser = argparse.ArgumentParser(prog="python -m bench.sink_probe", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--tls", action="store_true", help="TLS + ALPN h2 instead of h2c")
    parser.add_argument("--depth", type=int, default=1000, help="requests in flight")
    parser.add_argument("--batch", type=int, default=200, help="requests per socket write")
    parser.add_argument("--sink-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--mode", choices=("pair", "inprocess", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    opts = vars(parser.parse_args(argv))
    result: dict[str, Any] = {"tls": opts["tls"]}
    if opts["mode"] in ("pair", "both"):
        result.update(run_pair(opts))
    if opts["mode"] in ("inprocess", "both"):
        result["in_process"] = measure_in_process()
    if opts["json"]:
        print(json.dumps(result, indent=2))
        return
    if "sink" in result:
        s, c = result["sink"], result["client"]
        print(f"transport      : {'TLS (ALPN h2)' if opts['tls'] else 'h2c'}")
        print(
            f"sink           : {s['rps']:,.0f} req/s, {s['cpu_us_per_request']:.2f} us CPU/req, "
            f"cpu/wall {s['cpu_load']:.2f} ({s['requests']:,} req in {s['wall_s']:.2f} s)"
        )
        print(
            f"client         : {c['rps']:,.0f} req/s answered, non-200: {c['not_200']}, "
            f"pinned sink/client: {s['pinned']}/{c['pinned']}"
        )
    if "in_process" in result:
        p = result["in_process"]
        print(
            f"core in-process: {p['rps_per_cpu_s']:,.0f} req per CPU-second, "
            f"{p['cpu_us_per_request']:.2f} us/req ({p['request_bytes']:.0f} B/request)"
        )


if __name__ == "__main__":
    main()
