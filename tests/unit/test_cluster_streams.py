"""The webhooks' stream calls in a cluster: run here, sent to the stream's owner, or refused
after a bounded wait (a fake router and forwarder; mock clock)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from engine.server.cluster.forward import Forwarded, ForwardError
from engine.server.cluster.streams import ClusterStreams
from engine.server.contract import errors, models
from engine.server.http.seam import LOCAL, Forward, Unavailable

KEY = "lsk_cluster_streams_key_0123456789"


def request(value: int) -> models.StreamRequest:
    body = {"content_state": {"title": "Deploy", "type": "value", "value": value}}
    return models.decode(models.StreamRequest, msgspec.json.encode(body))


class Local:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def stream(self, key: str, req: models.StreamRequest, /) -> models.StreamPutResponse:
        self.calls.append(("stream", key))
        return models.StreamPutResponse(
            success=True, operation="started", stream_key=key, timestamp="2026-12-07T00:00:00Z"
        )

    async def end_stream(
        self, key: str, req: models.StreamDeleteRequest | None, /
    ) -> models.StreamDeleteResponse:
        self.calls.append(("end", key))
        raise errors.NotFound(f"no stream {key!r}")


class Peer:
    def __init__(self, answers: list[Forwarded | Exception]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, str, dict[bytes, bytes], bytes]] = []

    async def forward(
        self, address: str, method: str, target: str, headers: Any, body: bytes
    ) -> Forwarded:
        self.sent.append((address, method, target, dict(headers), body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def streams(placements: list[Any], peer: Peer, local: Local) -> ClusterStreams:
    def place(route: Any, params: dict[str, str], body: bytes) -> Any:
        assert route.template == "/api/live-activity/stream/{stream_key}"
        return placements.pop(0) if len(placements) > 1 else placements[0]

    return ClusterStreams(local, place, peer, KEY, wait=2.0)  # type: ignore[arg-type]


async def test_a_stream_held_here_runs_here() -> None:
    local = Local()
    got = await streams([LOCAL], Peer([]), local).stream("deploys", request(1))
    assert got.operation == "started" and local.calls == [("stream", "deploys")]


async def test_a_stream_held_elsewhere_is_sent_to_its_owner_and_its_answer_comes_back() -> None:
    reply = models.StreamPutResponse(
        success=True, operation="updated", stream_key="a b", timestamp="2026-12-07T00:00:00Z"
    )
    peer = Peer([Forwarded(200, (), msgspec.json.encode(reply))])
    local = Local()
    got = await streams([Forward("10.0.0.2:8788")], peer, local).stream("a b", request(2))
    assert got == reply and local.calls == []
    address, method, target, headers, body = peer.sent[0]
    assert (address, method, target) == ("10.0.0.2:8788", "PUT", "/api/live-activity/stream/a%20b")
    assert headers[b"authorization"] == b"Bearer " + KEY.encode()
    assert models.decode(models.StreamRequest, body) == request(2)


async def test_the_owners_refusal_is_the_same_error_as_a_local_one() -> None:
    body = b'{"error":"not_found","message":"no activity on stream \'x\'"}'
    peer = Peer([Forwarded(404, (), body)])
    with pytest.raises(errors.ApiError) as refused:
        await streams([Forward("n2:1")], peer, Local()).end_stream("x", None)
    assert (refused.value.status, refused.value.code) == (404, "not_found")
    assert peer.sent[0][1] == "DELETE" and peer.sent[0][4] == b""
    assert b"content-type" not in peer.sent[0][3]


async def test_a_partition_without_owner_waits_then_runs(autojump_clock: Any) -> None:
    local = Local()
    wait = Unavailable(0.25, "taking over")
    await streams([wait, wait, LOCAL], Peer([]), local).stream("s", request(3))
    assert local.calls == [("stream", "s")]


async def test_no_owner_for_too_long_or_no_answer_is_503(autojump_clock: Any) -> None:
    with pytest.raises(errors.PartitionUnavailable, match="no owner yet"):
        await streams([Unavailable(0.25, "x")], Peer([]), Local()).stream("s", request(4))
    down = Peer([ForwardError("n2:1", "connection refused", sent=False)])
    with pytest.raises(errors.PartitionUnavailable, match="did not answer"):
        await streams([Forward("n2:1")], down, Local()).stream("s", request(5))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
