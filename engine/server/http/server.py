"""Serve the HTTP API: HTTP/1.1 and cleartext HTTP/2 (h2c) on a plain socket.

Three servers, one signature:
- "h11": `engine.server.http.h11server`, a lean HTTP/1.1 server on trio + h11 that
  hands h2c prior-knowledge connections (those that open with the HTTP/2 preface) to
  hypercorn's connection handler. `Upgrade: h2c` on HTTP/1.1 is answered over HTTP/1.1.
- "httptools" (the default): the same server parsing HTTP/1.1 with httptools (a C parser), same
  rules and answers at a fraction of the CPU (`engine.server.http.httptoolsserver`); h11 stays
  as the fallback (`[server] http_parser = "h11"`).
- "hypercorn": hypercorn's trio worker for everything (h2c both ways: prior knowledge and the
  HTTP/1.1 `Upgrade: h2c` dance).

The choice is the `server` argument, else the `LOCKSTEP_HTTP_SERVER` environment variable
(how a benchmark picks the server of a process it spawns), else `limits.parser` (`[server]
http_parser`, "httptools" unless set). TLS is left to a reverse proxy.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from engine.apns.h2compat import hypercorn_h2c
from engine.server.http.h11server import H11Limits, H11Server
from engine.server.http.httptoolsserver import HttptoolsServer

__all__ = ["SERVERS", "bind_address", "hypercorn_config", "serve_http"]

log = logging.getLogger("lockstep.http")

SERVERS: Final = ("h11", "httptools", "hypercorn")
SERVER_ENV: Final = "LOCKSTEP_HTTP_SERVER"
DEFAULT_LIMITS: Final = H11Limits()


def bind_address(host: str, port: int) -> str:
    """hypercorn's `host:port` form; IPv6 literals go in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def hypercorn_config(
    host: str, port: int, *, graceful_timeout: float = 5.0, limits: H11Limits = DEFAULT_LIMITS
) -> Config:
    """The server's hypercorn configuration (no access log: requests are counted, not logged).

    Of `limits`, hypercorn takes the idle keep-alive bound (for h2c connections too); the cap,
    the whole-head and whole-body bounds and giving up the longest-idle connection are the h11
    front's.
    """
    config = Config()
    config.keep_alive_timeout = limits.idle_timeout
    config.bind = [bind_address(host, port)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = graceful_timeout
    return config


async def serve_http(
    app: Callable[..., Awaitable[None]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 5.0,
    server: str | None = None,
    limits: H11Limits = DEFAULT_LIMITS,
    sock: socket.socket | None = None,
) -> None:
    """Serve the ASGI `app` on host:port until `shutdown_trigger` returns (or cancelled).

    `task_status.started(port)` reports the bound port (useful with port 0). `server` is one of
    `SERVERS` (None: `$LOCKSTEP_HTTP_SERVER`, else `limits.parser`). On shutdown, accepting stops,
    requests in flight get up to `graceful_timeout` seconds, idle connections close. `limits`
    bounds connections and the waits on slow or idle clients (`H11Limits`). `sock` is a socket
    already bound and listening to serve instead of host:port (a worker's, see
    engine/server/workers.py).
    """
    choice = server or os.environ.get(SERVER_ENV) or limits.parser
    if choice not in SERVERS:
        raise ValueError(f"unknown HTTP server {choice!r}; choose one of {', '.join(SERVERS)}")
    config = hypercorn_config(host, port, graceful_timeout=graceful_timeout, limits=limits)
    if sock is not None:
        config.bind = [f"fd://{sock.fileno()}"]  # hypercorn adopts a listening descriptor
    asgi: Any = app  # an ASGI callable; hypercorn's own type is narrower than it needs to be
    if choice != "hypercorn":
        h2c, stop_h2c = hypercorn_h2c(asgi, config)
        kind = HttptoolsServer if choice == "httptools" else H11Server
        front = kind(asgi, limits=limits, h2c=h2c, on_shutdown=stop_h2c)
        await front.serve(
            host,
            port,
            task_status=task_status,
            shutdown_trigger=shutdown_trigger,
            graceful_timeout=graceful_timeout,
            sock=sock,
        )
        return
    async with trio.open_nursery() as nursery:
        bound: list[str] = await nursery.start(
            lambda task_status: serve(
                asgi, config, shutdown_trigger=shutdown_trigger, task_status=task_status
            )
        )
        task_status.started(int(bound[0].rsplit(":", 1)[1]))
