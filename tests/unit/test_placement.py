"""The API app with a cluster router (`http.placement`), driven without sockets on a mock clock:
what runs here, what is forwarded and relayed, the bounded wait and its 503s."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from engine.server.cluster.forward import FORWARDED_HEADER, Forwarded, Forwarder, ForwardError
from engine.server.http.app import ApiApp, create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.placement import PLACE_EVERY, internal
from engine.server.http.prom import PromMetrics
from engine.server.http.seam import LOCAL, Forward, Placement, RouteInfo, Router, Unavailable
from tests.helpers.asgicall import Reply, call
from tests.helpers.asgikit import assert_error
from tests.helpers.fakeservice import DEVICE_BODY, DEVICE_KEY, SEND_KEY, STREAM_BODY, FakeService

OWNER = "10.0.0.2:8080"
STREAM = "/api/live-activity/stream/s-1"
WAIT = 5.0


@dataclass
class FakeRouter:
    """Answers `decide(now)`; records every question."""

    decide: Callable[[float], Placement]
    node_id: str = "node-a"
    asked: list[tuple[str, dict[str, str], bytes, float]] = field(default_factory=list)

    def place(self, endpoint: RouteInfo, params: Mapping[str, str], body: bytes, /) -> Placement:
        now = trio.current_time()
        self.asked.append((endpoint.operation_id, dict(params), body, now))
        return self.decide(now)


class FakeForwarder(Forwarder):
    """Records calls; answers `answer`, or raises `fail`."""

    def __init__(self, answer: Forwarded | None = None, fail: ForwardError | None = None) -> None:
        super().__init__("node-a")
        self.answer = answer or Forwarded(
            200,
            (
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-store"),
                (b"x-request-id", b"rid-7"),
                (b"date", b"Mon, 07 Dec 2026 17:00:00 GMT"),
                (b"x-owner", b"node-b"),
            ),
            b'{"operation":"updated","on":"node-b"}',
        )
        self.fail = fail
        self.calls: list[tuple[str, str, str, list[tuple[bytes, bytes]], bytes]] = []

    async def forward(
        self,
        address: str,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> Forwarded:
        self.calls.append((address, method, target, list(headers), body))
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        return self.answer


@dataclass
class Node:
    app: ApiApp
    service: FakeService
    metrics: PromMetrics
    router: FakeRouter
    forwarder: FakeForwarder
    recorded: list[tuple[str, str, bytes]]


def node(decide: Callable[[float], Placement], forwarder: FakeForwarder | None = None) -> Node:
    service, metrics, router = FakeService(), PromMetrics(), FakeRouter(decide)
    forwarder = forwarder or FakeForwarder()
    recorded: list[tuple[str, str, bytes]] = []
    the_router: Router = router  # the fake satisfies the protocol
    app = create_app(
        service,
        api_keys=[SEND_KEY],
        device_keys=[DEVICE_KEY],
        metrics=metrics,
        openapi=build_openapi(),
        record=lambda m, p, b: recorded.append((m, p, b)),
        router=the_router,
        forwarder=forwarder,
        router_wait=WAIT,
    )
    return Node(app, service, metrics, router, forwarder, recorded)


async def put(
    n: Node,
    *,
    headers: Sequence[tuple[str, str]] = (),
    key: str = SEND_KEY,
    listener: str = "internal",
) -> Reply:
    """A stream PUT to node `n` on its internal listener (where another node's calls come in)
    or, with `listener="public"`, on its public port."""
    app = internal(n.app) if listener == "internal" else n.app
    reply = await call(app, "PUT", STREAM + "?dry=1", STREAM_BODY, key=key, headers=headers)
    assert reply is not None
    return reply


def always(placement: Placement) -> Callable[[float], Placement]:
    return lambda now: placement


# -- here or there -------------------------------------------------------------------------------


async def test_a_local_call_is_served_here_and_the_router_sees_it() -> None:
    n = node(always(LOCAL))
    reply = await put(n)
    assert reply.status == 200 and reply.json()["operation"] == "started"
    assert [c[0] for c in n.service.calls] == ["stream"]
    [(operation, params, body, _)] = n.router.asked
    assert (operation, params) == ("reconcileLiveActivityStream", {"stream_key": "s-1"})
    assert json.loads(body) == STREAM_BODY
    assert n.forwarder.calls == [] and len(n.recorded) == 1


async def test_a_call_of_another_node_is_forwarded_and_its_answer_relayed() -> None:
    n = node(always(Forward(OWNER)))
    reply = await put(n, headers=[("X-Request-Id", "rid-7"), ("Content-Type", "application/json")])
    [(address, method, target, headers, body)] = n.forwarder.calls
    assert (address, method, target) == (OWNER, "PUT", STREAM + "?dry=1")
    assert json.loads(body) == STREAM_BODY
    assert (b"authorization", f"Bearer {SEND_KEY}".encode()) in headers
    assert [v for k, v in headers if k == b"x-request-id"] == [b"rid-7"]
    # As the owner answered, but for its date (this node's front writes its own).
    assert reply.status == 200 and reply.body == b'{"operation":"updated","on":"node-b"}'
    assert reply.headers == {
        "content-length": str(len(reply.body)),
        "content-type": "application/json",
        "cache-control": "no-store",
        "x-request-id": "rid-7",
        "x-owner": "node-b",
    }
    assert n.service.calls == [] and n.recorded == []  # the owner runs and records it
    assert n.metrics.forwarded_total.get("200") == 1


async def test_one_request_id_for_both_nodes_when_the_client_sends_none() -> None:
    n = node(always(Forward(OWNER)))
    reply = await put(n)
    [(*_, headers, _)] = n.forwarder.calls
    [sent] = [v for k, v in headers if k == b"x-request-id"]
    assert reply.headers["x-request-id"] == "rid-7"  # the owner's echo, relayed
    assert sent and sent.decode() != "rid-7"  # this node made one up and sent it on


async def test_an_owner_answer_without_a_request_id_gets_this_nodes() -> None:
    owner = Forwarded(404, ((b"content-type", b"application/json"),), b'{"error":"not_found"}')
    n = node(always(Forward(OWNER)), FakeForwarder(answer=owner))
    reply = await put(n, headers=[("x-request-id", "abc-1")])
    assert reply.status == 404 and reply.headers["x-request-id"] == "abc-1"
    assert n.metrics.forwarded_total.get("404") == 1


@pytest.mark.parametrize(
    ("key", "headers", "body", "status"),
    [
        (None, (), STREAM_BODY, 401),
        ("nope", (), STREAM_BODY, 403),
        (DEVICE_KEY, (), STREAM_BODY, 403),
        (SEND_KEY, (("content-type", "text/plain"),), STREAM_BODY, 415),
        (SEND_KEY, (), {"content_state": {"title": "x" * 70000}}, 413),
    ],
)
async def test_refusals_are_answered_here_before_the_router_is_asked(
    key: str | None, headers: Sequence[tuple[str, str]], body: Any, status: int
) -> None:
    n = node(always(Forward(OWNER)))
    reply = await call(n.app, "PUT", STREAM, body, key=key, headers=headers)
    assert reply is not None and reply.status == status, reply
    assert n.router.asked == [] and n.forwarder.calls == []


async def test_a_device_route_is_placed_too() -> None:
    n = node(always(Forward(OWNER)))
    reply = await call(n.app, "PUT", "/api/devices/iphone-1", DEVICE_BODY, key=DEVICE_KEY)
    assert reply is not None and reply.status == 200
    assert n.router.asked[0][:2] == ("registerDevice", {"device_id": "iphone-1"})
    assert n.forwarder.calls[0][2] == "/api/devices/iphone-1"


# -- a forwarded call is never forwarded again ---------------------------------------------------


async def test_a_forwarded_call_runs_here_when_this_node_owns_it() -> None:
    n = node(always(LOCAL))
    reply = await put(n, headers=[(FORWARDED_HEADER.decode(), "node-b")])
    assert reply.status == 200 and [c[0] for c in n.service.calls] == ["stream"]


async def test_a_forwarded_header_on_the_public_port_is_a_clients_and_not_believed() -> None:
    n = node(always(Forward(OWNER)))
    reply = await put(n, headers=[(FORWARDED_HEADER.decode(), "node-b")], listener="public")
    assert reply.status == 200 and len(n.forwarder.calls) == 1  # sent on as any call


async def test_a_forwarded_call_owned_elsewhere_waits_then_503s_without_forwarding(
    autojump_clock: trio.abc.Clock,
) -> None:
    n = node(always(Forward("10.0.0.3:8080")))
    started = trio.current_time()
    reply = await put(n, headers=[(FORWARDED_HEADER.decode(), "node-b")])
    waited = trio.current_time() - started
    body = assert_error(reply, 503, "partition_unavailable")
    assert "changing hands" in body["message"] and reply.headers["retry-after"] == "1"
    assert n.forwarder.calls == [] and n.service.calls == []
    assert WAIT - PLACE_EVERY <= waited <= WAIT
    assert len(n.router.asked) == pytest.approx(WAIT / PLACE_EVERY, abs=1)
    assert n.metrics.forward_failures_total.get("no_owner") == 1


async def test_a_forwarded_call_runs_here_once_the_partition_settles_here(
    autojump_clock: trio.abc.Clock,
) -> None:
    settled = trio.current_time() + 0.4
    n = node(lambda now: LOCAL if now >= settled else Forward("10.0.0.3:8080"))
    reply = await put(n, headers=[(FORWARDED_HEADER.decode(), "node-b")])
    assert reply.status == 200 and [c[0] for c in n.service.calls] == ["stream"]
    assert n.forwarder.calls == [] and settled <= trio.current_time() < settled + PLACE_EVERY * 2


# -- no owner for a while --------------------------------------------------------------------------


async def test_a_call_waits_while_no_node_can_take_it(autojump_clock: trio.abc.Clock) -> None:
    moved = trio.current_time() + 1.0
    n = node(lambda now: LOCAL if now >= moved else Unavailable(2.0, "lease moving"))
    reply = await put(n)
    assert reply.status == 200 and [c[0] for c in n.service.calls] == ["stream"]
    times = [asked[3] for asked in n.router.asked]
    assert moved <= times[-1] < moved + PLACE_EVERY * 2
    assert all(b - a == pytest.approx(PLACE_EVERY) for a, b in itertools.pairwise(times))


async def test_a_call_waits_then_goes_to_the_new_owner(autojump_clock: trio.abc.Clock) -> None:
    moved = trio.current_time() + 0.2
    n = node(lambda now: Forward(OWNER) if now >= moved else Unavailable(2.0, "lease moving"))
    reply = await put(n)
    assert reply.status == 200 and len(n.forwarder.calls) == 1 and n.service.calls == []


@pytest.mark.parametrize("retry_after", [0.2, 2.5, 30.0])
async def test_no_owner_for_the_whole_wait_is_a_503_with_retry_after(
    autojump_clock: trio.abc.Clock, retry_after: float
) -> None:
    n = node(always(Unavailable(retry_after, "no lease holder for partition 7")))
    started = trio.current_time()
    reply = await put(n)
    body = assert_error(reply, 503, "partition_unavailable")
    assert "no lease holder for partition 7" in body["message"]
    assert reply.headers["retry-after"] == str(max(1, math.ceil(retry_after)))
    assert WAIT - PLACE_EVERY <= trio.current_time() - started <= WAIT
    assert n.service.calls == [] and n.forwarder.calls == []


async def test_no_wait_at_all_asks_once(autojump_clock: trio.abc.Clock) -> None:
    n = node(always(Unavailable(1.0, "starting")))
    n.app.placer.wait = 0.0  # type: ignore[union-attr]
    reply = await put(n)
    assert reply.status == 503 and len(n.router.asked) == 1


# -- an owner that does not answer ---------------------------------------------------------------


async def test_an_unreachable_owner_is_a_503_and_nothing_was_done() -> None:
    fail = ForwardError(OWNER, "cannot connect (Connection refused)", sent=False)
    n = node(always(Forward(OWNER)), FakeForwarder(fail=fail))
    reply = await put(n)
    body = assert_error(reply, 503, "partition_unavailable")
    assert "nothing was done" in body["message"] and OWNER not in body["message"]
    assert reply.headers["retry-after"] == "1"
    assert len(n.forwarder.calls) == 1 and n.service.calls == []
    assert n.metrics.forward_failures_total.get("unreachable") == 1


async def test_an_owner_silent_after_the_call_went_is_a_503_never_resent() -> None:
    fail = ForwardError(OWNER, "no answer within 30 s", sent=True)
    n = node(always(Forward(OWNER)), FakeForwarder(fail=fail))
    reply = await put(n)
    body = assert_error(reply, 503, "partition_unavailable")
    assert "may have been carried out" in body["message"]
    assert "idempotent" in body["message"]
    assert len(n.forwarder.calls) == 1 and n.service.calls == []  # not resent, not run here
    assert n.metrics.forward_failures_total.get("no_answer") == 1


@pytest.mark.parametrize("path", ["/healthz", "/api/openapi.json", "/metrics"])
async def test_public_routes_are_this_nodes_own(path: str) -> None:
    n = node(always(Forward(OWNER)))
    reply = await call(n.app, "GET", path)
    assert reply is not None and reply.status == 200
    assert n.router.asked == [] and n.forwarder.calls == []


async def test_the_forward_counters_are_in_metrics() -> None:
    n = node(always(Forward(OWNER)))
    await put(n)
    reply = await call(n.app, "GET", "/metrics")
    assert reply is not None and n.router.asked[-1][0] == "reconcileLiveActivityStream"
    text = reply.body.decode()
    assert 'lockstep_forwarded_requests_total{status="200"} 1' in text
    assert "# TYPE lockstep_forward_failures_total counter" in text


async def test_an_app_closes_the_forwarder_it_made() -> None:
    router: Router = FakeRouter(always(LOCAL))
    app = create_app(
        FakeService(),
        api_keys=[SEND_KEY],
        device_keys=[],
        metrics=PromMetrics(),
        openapi=build_openapi(),
        router=router,
    )
    assert app.placer is not None and app.placer.forwarder.node_id == "node-a"
    await app.aclose()
