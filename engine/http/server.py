"""Serve the HTTP API with hypercorn's trio worker: HTTP/1.1 and cleartext HTTP/2 (h2c).

hypercorn speaks h2c both ways on a plain socket: prior knowledge (a client that opens with the
HTTP/2 preface) and the HTTP/1.1 `Upgrade: h2c` dance. TLS is left to a reverse proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["bind_address", "hypercorn_config", "serve_http"]

log = logging.getLogger("lockstep.http")


def bind_address(host: str, port: int) -> str:
    """hypercorn's `host:port` form; IPv6 literals go in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def hypercorn_config(host: str, port: int, *, graceful_timeout: float = 5.0) -> Config:
    """The server's hypercorn configuration (no access log: requests are counted, not logged)."""
    config = Config()
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
) -> None:
    """Serve the ASGI `app` on host:port until `shutdown_trigger` returns (or cancelled).

    `task_status.started(port)` reports the bound port (useful with port 0).
    """
    config = hypercorn_config(host, port, graceful_timeout=graceful_timeout)
    asgi: Any = app  # an ASGI callable; hypercorn's own type is narrower than it needs to be
    async with trio.open_nursery() as nursery:
        bound: list[str] = await nursery.start(
            lambda task_status: serve(
                asgi, config, shutdown_trigger=shutdown_trigger, task_status=task_status
            )
        )
        task_status.started(int(bound[0].rsplit(":", 1)[1]))
