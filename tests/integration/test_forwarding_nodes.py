"""Two API nodes on 127.0.0.1 (port 0, the real HTTP fronts), each with a router: calls that
belong to the other node are forwarded to it and its answer comes back as it was given."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import msgspec
import trio

from engine.server.cluster.forward import Forwarder
from engine.server.contract import models
from engine.server.http import PromMetrics, build_openapi, create_app, serve_http
from engine.server.http.h11server import H11Limits
from engine.server.http.placement import internal
from engine.server.http.seam import LOCAL, Forward, Gather, Placement, RouteInfo, Router
from tests.helpers.fakeservice import SEND_KEY, STREAM_BODY, FakeService, sample_status

TIMEOUT = 30.0
STREAM = msgspec.json.encode(STREAM_BODY)


@dataclass
class FakeRouter:
    """Answers `placement` (set once both nodes listen); counts the questions."""

    node_id: str
    placement: Placement = LOCAL
    asked: int = 0

    def place(self, endpoint: RouteInfo, params: Mapping[str, str], body: bytes, /) -> Placement:
        self.asked += 1
        return self.placement


@dataclass
class Node:
    """One node: its fake service, metrics, router, forwarder and where it listens."""

    name: str
    service: FakeService = field(default_factory=FakeService)
    metrics: PromMetrics = field(default_factory=PromMetrics)
    router: FakeRouter = field(init=False)
    forwarder: Forwarder = field(init=False)
    port: int = 0

    def __post_init__(self) -> None:
        self.router = FakeRouter(self.name)
        self.forwarder = Forwarder(self.name, timeout=10.0)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def nodes(
    front: str, *, router_wait: float = 5.0, public_a: bool = False
) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes "a" and "b", both serving (both routers say LOCAL until a test says otherwise),
    each on one listener that is its internal one too (`placement.internal`), unless
    `public_a`: then a's is only a public port."""
    a, b = Node("node-a"), Node("node-b")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for n in (a, b):
            router: Router = n.router
            app = create_app(
                n.service,
                api_keys=[SEND_KEY],
                device_keys=[],
                metrics=n.metrics,
                openapi=build_openapi(),
                router=router,
                forwarder=n.forwarder,
                router_wait=router_wait,
            )
            served = app if (public_a and n is a) else internal(app)
            n.port = await nursery.start(
                partial(
                    serve_http,
                    served,
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    graceful_timeout=1.0,
                    limits=H11Limits(parser=front),
                )
            )
        yield a, b
        for n in (a, b):
            await n.forwarder.aclose()
        stop.set()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    names: list[str]  # every header name, repeats included, in order


def _request(url: str, method: str, body: bytes | None, headers: dict[str, str]) -> Answer:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return _answer(resp.status, resp.headers.items(), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return _answer(err.code, err.headers.items(), err.read())


def _answer(status: int, items: list[tuple[str, str]], body: bytes) -> Answer:
    return Answer(status, {k.lower(): v for k, v in items}, body, [k.lower() for k, _ in items])


async def send(
    n: Node,
    path: str,
    *,
    method: str = "PUT",
    body: bytes | None = STREAM,
    key: str | None = SEND_KEY,
    request_id: str | None = None,
) -> Answer:
    """One request to node `n`, from a worker thread (an ordinary blocking client)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    url = f"http://{n.address}{path}"
    return await trio.to_thread.run_sync(_request, url, method, body, headers)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_stream_put_sent_to_a_runs_on_b_and_comes_back_as_b_answered(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Forward(b.address)
            via_a = await send(a, "/api/live-activity/stream/web-1", request_id="trace-1")
            direct = await send(b, "/api/live-activity/stream/web-1", request_id="trace-1")
    assert via_a.status == direct.status == 200
    assert via_a.body == direct.body and msgspec.json.decode(via_a.body)["operation"] == "started"
    for name in ("content-type", "content-length", "cache-control", "x-request-id"):
        assert via_a.headers[name] == direct.headers[name], name
    assert via_a.headers["x-request-id"] == "trace-1"
    assert sorted(via_a.names) == sorted(direct.names)  # the same, none twice (date: a's)
    assert [c[:2] for c in b.service.calls] == [("stream", "web-1")] * 2
    assert a.service.calls == [] and b.router.asked == 2
    assert a.metrics.forwarded_total.get("200") == 1


async def test_queries_reach_the_owner(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Forward(b.address)
            got = await send(
                a, "/api/live-activities?state=active&limit=5&after=x%2Fy", method="GET", body=None
            )
    assert got.status == 200
    assert b.service.calls == [("status_page", "active", 5, "x/y")] and a.service.calls == []


async def test_a_missing_key_is_a_401_from_the_first_node(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Forward(b.address)
            got = await send(a, "/api/live-activity/stream/web-1", key=None)
    assert got.status == 401 and msgspec.json.decode(got.body)["error"] == "unauthorized"
    assert (a.router.asked, b.router.asked, a.forwarder.opened) == (0, 0, 0)
    assert b.service.calls == []


async def test_a_forwarded_call_is_never_forwarded_back(front: str) -> None:
    # Each node thinks the other owns the partition (a lease changing hands).
    with trio.fail_after(TIMEOUT):
        async with nodes(front, router_wait=0.2) as (a, b):
            a.router.placement = Forward(b.address)
            b.router.placement = Forward(a.address)
            got = await send(a, "/api/live-activity/stream/web-1")
    assert got.status == 503 and got.headers["retry-after"] == "1"
    assert msgspec.json.decode(got.body)["error"] == "partition_unavailable"
    assert a.router.asked == 1 and b.router.asked > 1  # b waited for the partition, then gave up
    assert (a.forwarder.opened, b.forwarder.opened) == (1, 0)
    assert a.metrics.forwarded_total.get("503") == 1
    assert b.metrics.forward_failures_total.get("no_owner") == 1
    assert a.service.calls == [] and b.service.calls == []


async def test_an_owner_that_is_down_is_a_503(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, _):
            a.router.placement = Forward(f"127.0.0.1:{closed_port()}")
            got = await send(a, "/api/live-activity/stream/web-1")
    assert got.status == 503 and got.headers["retry-after"] == "1"
    body = msgspec.json.decode(got.body)
    assert body["error"] == "partition_unavailable" and "nothing was done" in body["message"]
    assert a.service.calls == [] and a.metrics.forward_failures_total.get("unreachable") == 1


async def test_calls_to_the_owner_share_one_kept_alive_connection(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Forward(b.address)
            statuses = [
                (await send(a, f"/api/live-activity/stream/web-{i}")).status for i in range(5)
            ]
    assert statuses == [200] * 5 and len(b.service.calls) == 5
    assert (a.forwarder.opened, a.forwarder.retried) == (1, 0)


def _statuses(*ids: str, version: int = 1) -> list[models.ActivityStatus]:
    return [msgspec.structs.replace(sample_status(), activity_id=i, version=version) for i in ids]


def _pages(n: Node, ids: tuple[str, ...], *, version: int = 1) -> None:
    """Node `n` holds the activities `ids`: its page is the first `limit` after `after`."""

    def page(
        state: str | None, limit: int, after: str | None, scope: object = None, /
    ) -> models.ActivityStatusList:
        n.service.called("status_page", state, limit, after)
        left = [i for i in sorted(ids) if after is None or i > after]
        more = len(left) > limit
        return models.ActivityStatusList(
            activities=_statuses(*left[:limit], version=version),
            next=left[limit - 1] if more else None,
        )

    n.service.status.page = page  # type: ignore[method-assign]


async def test_the_listing_merges_every_nodes_part_in_id_order(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Gather(((b.address, (1,)),), (0,))
            b.router.placement = Gather(((a.address, (0,)),), (1,))  # asked by a: its own only
            _pages(a, ("la_1", "la_4", "la_5"))
            _pages(b, ("la_2", "la_3", "la_6"))
            first = await send(a, "/api/live-activities?limit=4", method="GET", body=None)
            page1 = msgspec.json.decode(first.body)
            second = await send(
                a, f"/api/live-activities?limit=4&after={page1['next']}", method="GET", body=None
            )
            page2 = msgspec.json.decode(second.body)
    assert first.status == second.status == 200
    assert [x["activity_id"] for x in page1["activities"]] == ["la_1", "la_2", "la_3", "la_4"]
    assert page1["next"] == "la_4"
    assert [x["activity_id"] for x in page2["activities"]] == ["la_5", "la_6"]
    assert "next" not in page2 or page2["next"] is None
    assert [c[0] for c in a.service.calls] == [c[0] for c in b.service.calls] == ["status_page"] * 2
    assert b.router.asked == 2 and a.metrics.forwarded_total.get("200") == 2


async def test_a_bad_listing_is_refused_here_before_any_node_is_asked(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Gather(((b.address, (1,)),), (0,))
            got = await send(a, "/api/live-activities?limit=x", method="GET", body=None)
    assert got.status == 400 and a.forwarder.opened == 0 and b.service.calls == []


async def test_a_listing_with_a_node_down_is_a_503_not_a_partial_page(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Gather(
                ((b.address, (1,)), (f"127.0.0.1:{closed_port()}", (2,))), (0,)
            )
            b.router.placement = Gather(((a.address, (0, 2)),), (1,))
            got = await send(a, "/api/live-activities", method="GET", body=None)
    assert got.status == 503
    assert msgspec.json.decode(got.body)["error"] == "partition_unavailable"


async def test_a_node_asked_for_a_partition_it_no_longer_holds_refuses_its_part(
    front: str,
) -> None:
    # a still sees b as partition 1's owner; b has just given it up.
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Gather(((b.address, (1,)),), (0,))
            b.router.placement = Gather(((a.address, (0,)),), (3,))
            _pages(a, ("la_1",))
            _pages(b, ("la_2",))
            got = await send(a, "/api/live-activities", method="GET", body=None)
    assert got.status == 503, got.body
    assert b"partition 1 is changing hands" in got.body
    assert [c[0] for c in b.service.calls] == []  # b read nothing for a page it cannot make


async def test_an_activity_two_nodes_list_is_shown_once_at_its_newer_version(front: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with nodes(front) as (a, b):
            a.router.placement = Gather(((b.address, (1,)),), (0,))
            b.router.placement = Gather(((a.address, (0,)),), (1,))
            _pages(a, ("la_1", "la_2"))
            _pages(b, ("la_2", "la_3"), version=7)
            got = await send(a, "/api/live-activities", method="GET", body=None)
    acts = msgspec.json.decode(got.body)["activities"]
    assert [(x["activity_id"], x["version"]) for x in acts] == [
        ("la_1", 1),
        ("la_2", 7),
        ("la_3", 7),
    ]


async def test_a_clients_own_forwarded_header_on_the_public_port_is_not_believed(
    front: str,
) -> None:
    # Only a node's internal listener takes x-lockstep-forwarded as a node's word: on the
    # public port the call is placed as any other (here: sent on to its owner), not answered
    # with a 503 as a call another node misplaced.
    with trio.fail_after(TIMEOUT):
        async with nodes(front, public_a=True) as (a, b):
            a.router.placement = Forward(b.address)
            url = f"http://{a.address}/api/live-activity/stream/web-1"
            headers = {
                "Authorization": f"Bearer {SEND_KEY}",
                "Content-Type": "application/json",
                "X-Lockstep-Forwarded": "node-z",
            }
            got = await trio.to_thread.run_sync(_request, url, "PUT", STREAM, headers)
    assert got.status == 200, got.body
    assert [c[:2] for c in b.service.calls] == [("stream", "web-1")]
    assert a.forwarder.opened == 1
