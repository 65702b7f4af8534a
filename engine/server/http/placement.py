"""Where an API call runs in a cluster: here, on the node that owns its partition, or nowhere yet.

The app (`http.app`) hands each authenticated call, body read and checked, to a `Placer`, which
asks the cluster's `seam.Router`:

- `LOCAL`: the app serves the call as usual;
- `Gather(parts)`: a listing every node answers a part of: this node's part (the app's
  handler, run here first, so a bad parameter is refused before any other node is asked),
  then the same call to each other node at once, as a forwarded call naming the partitions it
  is expected to answer for (`x-lockstep-partitions`; a node that no longer holds one of them
  answers 503, so a partition changing hands is never missing); the 200 bodies are merged by
  the endpoint's `merge`, and the first answer that is not a 200 is relayed instead;
- `Forward(address)`: the call goes to its owner (`engine.server.cluster.forward`: same method,
  raw path and query, headers, body, one `x-request-id` for both nodes, plus
  `x-lockstep-forwarded`) and the owner's answer is relayed as it came (`Reply.relayed`);
- `Unavailable`: the router is asked again every `PLACE_EVERY` seconds for up to `wait` seconds
  (a partition changing hands usually settles within that), then the answer is a 503
  `partition_unavailable` with `Retry-After`.

An owner that cannot be reached, or does not answer, is the same 503. The call is never sent
again from here: it may have run on the owner, and only the caller can know whether it must run
again (a stream PUT is idempotent by content). A call that was forwarded here is never forwarded
again: it runs here, or after the same wait is answered with that 503, so two nodes that
disagree about an owner for a moment cannot pass a call back and forth.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Final

import trio

from engine.server.cluster.forward import FORWARDED_HEADER, Forwarder, ForwardError
from engine.server.contract.errors import BadRequest, PartitionUnavailable
from engine.server.http.endpoint import Endpoint, Reply
from engine.server.http.prom import PromMetrics
from engine.server.http.seam import Forward, Gather, Local, Placement, Router

__all__ = ["INTERNAL", "PARTITIONS_HEADER", "PLACE_EVERY", "Placer", "internal"]

log = logging.getLogger("lockstep.http")

INTERNAL: Final = "lockstep.internal"
"""Set (True) in the scope of a call that came in on a node's internal listener (`internal`):
only there does `x-lockstep-forwarded` mean another node sent it. A client's own
`x-lockstep-forwarded` on the public port is ignored (it is replaced when the call is sent on)."""

PARTITIONS_HEADER: Final = b"x-lockstep-partitions"
"""On a part of a listing asked by another node: the partitions it expects this node to answer
for (comma-separated)."""

PLACE_EVERY: Final = 0.05
"""Seconds between two questions to the router while no node can take a call."""

# After an owner failed to answer: when to try again (a dead owner's lease moves on).
_RETRY_OWNER: Final = 1.0
# Headers of a relayed answer that this node's HTTP front writes itself.
_FRONT_HEADERS: Final = frozenset({b"date", b"server"})
_UNREACHABLE: Final = (
    "the node that owns this call's partition cannot be reached; nothing was done: "
    "send it again shortly"
)
_NO_ANSWER: Final = (
    "the node that owns this call's partition did not answer; the call may have been carried "
    "out, and this node does not send it again: send it again if it must happen (a stream PUT "
    "is idempotent by content)"
)

Scope = MutableMapping[str, Any]


class Placer:
    """Places calls with `router`, forwards with `forwarder`, counts in `metrics`."""

    def __init__(
        self,
        router: Router,
        forwarder: Forwarder,
        metrics: PromMetrics,
        *,
        wait: float = 5.0,
        owns_forwarder: bool = False,
    ) -> None:
        self.router = router
        self.forwarder = forwarder
        self.metrics = metrics
        self.wait = wait
        self._owns_forwarder = owns_forwarder

    async def aclose(self) -> None:
        """Close the forwarder's connections if it was made for this placer."""
        if self._owns_forwarder:
            await self.forwarder.aclose()

    async def elsewhere(
        self,
        endpoint: Endpoint,
        params: Mapping[str, str],
        scope: Scope,
        body: bytes,
        rid: str,
        local: Callable[[], Awaitable[Reply]],
    ) -> Reply | None:
        """None: the call runs here. Else the owner's answer, relayed, or the merged parts of
        a listing (`local` answers this node's part); or a 503 (`PartitionUnavailable`)."""
        forwarded = scope.get(INTERNAL) is True and _header(scope, FORWARDED_HEADER) is not None
        placement = await self.place(endpoint, params, body, forwarded=forwarded)
        if isinstance(placement, Local):
            return None
        if isinstance(placement, Gather):
            if forwarded:  # a part asked by another node: ours, if we hold what it expects
                _check_part(placement, _header(scope, PARTITIONS_HEADER))
                return None
            if endpoint.merge is None:
                return None
            return await self.gather(placement, endpoint, params, scope, body, rid, local)
        if isinstance(placement, Forward) and not forwarded:
            return await self.forward(placement.address, scope, body, rid)
        self.metrics.forward_failed("no_owner")
        if isinstance(placement, Forward):  # forwarded here, and owned elsewhere: never again
            reason, retry_after = "its partition is changing hands", _RETRY_OWNER
        else:
            reason, retry_after = placement.reason, placement.retry_after
        raise PartitionUnavailable(
            f"no node can take this call right now ({reason}); nothing was done: "
            "send it again later",
            retry_after=retry_after,
        )

    async def place(
        self, endpoint: Endpoint, params: Mapping[str, str], body: bytes, *, forwarded: bool
    ) -> Placement:
        """The router's answer, asked again every `PLACE_EVERY` s for up to `wait` s while the
        call cannot run (for a forwarded call: until it runs here)."""
        deadline: float | None = None  # read the clock only when there is a wait
        while True:
            placement = self.router.place(endpoint, params, body)
            if isinstance(placement, (Local, Gather)) or (
                isinstance(placement, Forward) and not forwarded
            ):
                return placement
            now = trio.current_time()
            deadline = now + self.wait if deadline is None else deadline
            if now + PLACE_EVERY > deadline:
                return placement
            await trio.sleep(PLACE_EVERY)

    async def gather(
        self,
        placement: Gather,
        endpoint: Endpoint,
        params: Mapping[str, str],
        scope: Scope,
        body: bytes,
        rid: str,
        local: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        """This node's part, then every other node's at once; one merged answer (see the
        module docstring). A node that cannot answer makes the whole call a 503."""
        assert endpoint.merge is not None
        mine = await local()
        if mine.status != 200 or not placement.parts:
            return mine
        parts: list[Reply | PartitionUnavailable | None] = [None] * len(placement.parts)

        async def ask(i: int, address: str, partitions: tuple[int, ...]) -> None:
            expect = (PARTITIONS_HEADER, ",".join(map(str, partitions)).encode())
            try:
                parts[i] = await self.forward(address, scope, body, rid, extra=(expect,))
            except PartitionUnavailable as exc:  # kept: the others still answer
                parts[i] = exc

        async with trio.open_nursery() as nursery:
            for i, (address, partitions) in enumerate(placement.parts):
                nursery.start_soon(ask, i, address, partitions)
        theirs: list[Reply] = []
        for part in parts:
            if isinstance(part, PartitionUnavailable):
                raise part
            assert part is not None
            if part.status != 200:
                return part
            theirs.append(part)
        merged = endpoint.merge([mine.body, *(p.body for p in theirs)], params)
        return Reply(200, merged, content_type=mine.content_type, headers=mine.headers)

    async def forward(
        self,
        address: str,
        scope: Scope,
        body: bytes,
        rid: str,
        *,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> Reply:
        """Send the call to its owner at `address` (with the `extra` headers, which replace the
        caller's of those names): its answer, or a 503."""
        replaced = {b"x-request-id", *(name for name, _ in extra)}
        headers = [(bytes(k), bytes(v)) for k, v in scope.get("headers", ()) if k not in replaced]
        headers.append((b"x-request-id", rid.encode()))  # one id for the call on both nodes
        headers.extend(extra)
        try:
            answer = await self.forwarder.forward(
                address, scope["method"], _target(scope), headers, body
            )
        except ForwardError as exc:
            log.warning("%s", exc)  # the address and what failed: never a header or the body
            self.metrics.forward_failed("no_answer" if exc.sent else "unreachable")
            raise PartitionUnavailable(
                _NO_ANSWER if exc.sent else _UNREACHABLE, retry_after=_RETRY_OWNER
            ) from None
        self.metrics.forwarded(answer.status)
        kept = tuple((k, v) for k, v in answer.headers if k not in _FRONT_HEADERS)
        return Reply(answer.status, answer.body, headers=kept, relayed=True)


def internal(app: Callable[[Scope, Any, Any], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """`app` as served on a node's internal listener: its calls' scopes carry `INTERNAL`."""

    async def marked(scope: Scope, receive: Any, send: Any) -> None:
        scope[INTERNAL] = True
        await app(scope, receive, send)

    return marked


def _check_part(placement: Gather, expected: bytes | None) -> None:
    """A part of a listing asked by another node: 503 unless this node holds every partition
    the asking node expects it to answer for (one may have changed hands since it asked)."""
    if expected is None:
        return
    try:
        wanted = {int(p) for p in expected.split(b",") if p.strip()}
    except ValueError:
        raise BadRequest(f"{PARTITIONS_HEADER.decode()}: partition numbers expected") from None
    missing = wanted - set(placement.here)
    if missing:
        raise PartitionUnavailable(
            f"partition {min(missing)} is changing hands; nothing was done: send it again",
            retry_after=_RETRY_OWNER,
        )


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _target(scope: Scope) -> str:
    """The request target as received: the raw path and the query string."""
    raw = scope.get("raw_path")
    path = bytes(raw).decode("latin-1") if raw else urllib.parse.quote(scope["path"])
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return f"{path}?{query}" if query else path
