"""The inbound webhooks' stream calls in a cluster: each runs on the node holding its stream.

A webhook delivery is received by the owner of partition 0 (it writes the delivery log) and may
touch streams of any partition. `ClusterStreams` is the `StreamCalls` the webhooks service calls
(engine/server/service/webhooks.py): a stream whose partition this node holds runs here, as on
a single node; any other is sent to its owner as the same API call (`PUT` or `DELETE
/api/live-activity/stream/{key}`, with a send key of scope `all`), and the owner's answer comes
back as the same value or `ApiError` a local call gives. While the stream's partition has no
owner (a takeover), the call waits up to `wait` seconds, then fails with 503
`partition_unavailable` (the delivery is answered 503 and its sender delivers it again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar
from urllib.parse import quote

import msgspec
import trio

from engine.server.cluster.forward import Forwarder, ForwardError
from engine.server.contract import errors, models
from engine.server.http.seam import LOCAL, Forward, RouteInfo
from engine.server.service.webhooks import StreamCalls

__all__ = ["ClusterStreams"]

R = TypeVar("R")

_POLL: Final = 0.05  # seconds between two looks at a partition that has no owner yet


class _StreamRoute:
    """The stream route as the router sees it."""

    method = "PUT"
    template = "/api/live-activity/stream/{stream_key}"
    operation_id = "reconcileLiveActivityStream"


class ClusterStreams:
    """`StreamCalls` that run each call on its stream's node (see the module docstring)."""

    def __init__(
        self,
        local: StreamCalls,
        router: Callable[[RouteInfo, dict[str, str], bytes], object],
        forwarder: Forwarder,
        api_key: str,
        *,
        wait: float = 5.0,
    ) -> None:
        self._local = local
        self._place = router
        self._forwarder = forwarder
        self._headers = (
            (b"authorization", b"Bearer " + api_key.encode()),
            (b"content-type", b"application/json"),
        )
        self._wait = wait

    def __repr__(self) -> str:  # the send key stays out of reprs
        return "ClusterStreams()"

    async def stream(
        self, stream_key: str, req: models.StreamRequest, /
    ) -> models.StreamPutResponse:
        """Start, update, skip or rotate the stream's activity, wherever it lives."""
        return await self._call(
            "PUT",
            stream_key,
            msgspec.json.encode(req),
            models.StreamPutResponse,
            lambda: self._local.stream(stream_key, req),
        )

    async def end_stream(
        self, stream_key: str, req: models.StreamDeleteRequest | None, /
    ) -> models.StreamDeleteResponse:
        """End the stream's activity, wherever it lives."""
        return await self._call(
            "DELETE",
            stream_key,
            b"" if req is None else msgspec.json.encode(req),
            models.StreamDeleteResponse,
            lambda: self._local.end_stream(stream_key, req),
        )

    async def _call(
        self,
        method: str,
        key: str,
        body: bytes,
        answer: type[R],
        here: Callable[[], Awaitable[R]],
    ) -> R:
        deadline = trio.current_time() + self._wait
        while True:
            placement = self._place(_StreamRoute(), {"stream_key": key}, b"")
            if placement is LOCAL:
                return await here()
            if isinstance(placement, Forward):
                return await self._remote(placement.address, method, key, body, answer)
            if trio.current_time() >= deadline:
                raise errors.PartitionUnavailable(
                    f"stream {key!r}: its partition has no owner yet; deliver the webhook again",
                    retry_after=1.0,
                )
            await trio.sleep(_POLL)

    async def _remote(self, address: str, method: str, key: str, body: bytes, answer: type[R]) -> R:
        target = "/api/live-activity/stream/" + quote(key, safe="")
        headers = self._headers if body else self._headers[:1]
        try:
            got = await self._forwarder.forward(address, method, target, headers, body)
        except ForwardError as exc:
            raise errors.PartitionUnavailable(
                f"stream {key!r}: its node did not answer ({exc}); deliver the webhook again",
                retry_after=1.0,
            ) from None
        if 200 <= got.status < 300:
            return msgspec.json.decode(got.body, type=answer)
        try:
            failed = msgspec.json.decode(got.body, type=dict[str, object])
        except msgspec.DecodeError:
            failed = {}
        code, message = str(failed.get("error", "error")), str(failed.get("message", ""))
        raise errors.ApiError(got.status, code, message or f"stream {key!r}: {got.status}")
