"""The aioapns peer of `bench.throughput`: the same pushes, sent the way aioapns users send them.

aioapns (asyncio + h2) has no host setting, so its connection pool is pointed at the sink the way
one points it at any test server: its protocol class names the host and port. Everything else is
what an application would write: token auth from the `.p8` file, a TLS context that trusts the
simulator's CA, `max_connections` set to the connection count, and the pushes started together
with `asyncio.gather`, bounded by a semaphore of 1000 per connection (the stream limit the sink
advertises, and the channel pool aioapns keeps per connection).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STREAMS_PER_CONNECTION = 1000
"""In-flight bound per connection: what the sink advertises and what aioapns allows itself."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    """Token-auth identity for a client: the `.p8` file and its key and team ids."""

    path: Path
    key_id: str
    team_id: str


def run_aioapns(
    port: int,
    ca: str,
    key: KeyFile,
    topic: str,
    pushes: int,
    connections: int,
    content: Callable[[int], dict[str, Any]],
    token: Callable[[int], str],
    mark: Callable[[str], None],
) -> dict[str, Any]:
    """Warm up, then time `pushes` Live Activity updates; `mark("measure")` / `mark("done")`
    bracket the timed part. Returns accepted, wall_s, cpu_s and the failures seen."""
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsDevelopmentClientProtocol

    class Local(APNsDevelopmentClientProtocol):
        APNS_SERVER = "127.0.0.1"  # the simulator's certificate names 127.0.0.1 too
        APNS_PORT = port

    async def main() -> dict[str, Any]:
        client = APNs(
            key=key.path.read_text(),
            key_id=key.key_id,
            team_id=key.team_id,
            topic=topic,
            use_sandbox=True,
            max_connections=connections,
            ssl_context=ssl.create_default_context(cafile=ca),
        )
        client.pool.protocol_class = Local
        limit = asyncio.BoundedSemaphore(STREAMS_PER_CONNECTION * connections)
        failures: list[str] = []

        async def one(i: int) -> bool:
            async with limit:
                body = {
                    "aps": {
                        "timestamp": int(time.time()),
                        "event": "update",
                        "content-state": content(i),
                    }
                }
                request = NotificationRequest(
                    device_token=token(i),
                    message=body,
                    push_type=PushType.LIVEACTIVITY,
                    priority=5,
                )
                try:
                    result = await client.send_notification(request)
                except Exception as exc:  # noqa: BLE001 - counted, as an application would log it
                    failures.append(type(exc).__name__)
                    return False
                if not result.is_successful:
                    failures.append(f"{result.status} {result.description}")
                return bool(result.is_successful)

        try:
            # Warm-up: enough pushes at once that aioapns opens every connection it may (it opens
            # another only when the ones it has are full), so no TLS handshake is timed.
            warm = STREAMS_PER_CONNECTION * connections
            if not any(await asyncio.gather(*(one(10**9 + i) for i in range(warm)))):
                raise RuntimeError(f"aioapns warm-up failed: {failures[0]}")
            failures.clear()
            mark("measure")
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(*(one(i) for i in range(pushes)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            mark("done")
        finally:
            client.pool.close()
        return {
            "accepted": sum(results),
            "wall_s": wall,
            "cpu_s": cpu,
            "failures": len(failures),
            "first_failure": failures[0] if failures else None,
        }

    return asyncio.run(main())
