"""The fake APNs server end to end over in-memory streams, with trio's MockClock (autojump)."""

from __future__ import annotations

import json

import h2.settings
import pytest
import trio
import trio.testing
from h2.errors import ErrorCodes

from simulator.faults import FaultPlan
from tests.helpers.h2client import H2TestClient
from tests.helpers.simkit import BUNDLE, TOPIC, Kit, make_kit, start_body, update_body


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def _connect(kit: Kit, nursery: trio.Nursery) -> H2TestClient:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(kit.server.handle, server_stream)
    client = H2TestClient(client_stream)
    await client.start()
    await client.pump()  # server preface
    return client


async def test_push_to_start_then_update_reaches_the_device(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            jwt = kit.jwt()
            r = await client.request(
                client.headers(kit.push_to_start_token(), jwt, TOPIC), start_body()
            )
            assert r.status == 200 and r.body == b"" and r.headers["apns-id"]
            (activity,) = kit.device("iphone-1")["activities"]
            token = activity["token"]
            r = await client.request(
                client.headers(token, jwt, TOPIC, apns_id="0a2e1d4c-1f5b-4c47-9d3f-2a6b8f0e9c11"),
                update_body({"title": "Deploy", "step": 2}, int(kit.now()) + 1),
            )
            assert r.status == 200
            assert r.headers["apns-id"] == "0a2e1d4c-1f5b-4c47-9d3f-2a6b8f0e9c11"
            activity = kit.device("iphone-1")["activities"][0]
            assert activity["content_state"] == {"title": "Deploy", "step": 2}
            assert [p.status for p in kit.apns.log] == [200, 200]
            nursery.cancel_scope.cancel()


async def test_stream_limit_is_one_until_a_valid_token_then_warm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(warm_max_streams=1000)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            assert client.max_streams == 1
            bad = await client.request(
                client.headers(kit.push_to_start_token(), None, TOPIC), start_body()
            )
            assert (bad.status, bad.reason) == (403, "MissingProviderToken")
            assert client.max_streams == 1
            ok = await client.request(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            assert ok.status == 200
            await client.until(lambda: client.max_streams == 1000)
            assert client.max_streams == 1000
            nursery.cancel_scope.cancel()


async def test_streams_over_the_limit_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            # Ignore the advertised limit of 1 on purpose: open three streams at once.
            client.conn.remote_settings = h2.settings.Settings(  # as a misbehaving client would
                client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
            )
            hs = client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC)
            first = await client.send(hs, None, flush=False)
            second = await client.send(hs, None, flush=False)
            third = await client.send(hs, None, flush=True)
            await client.until(
                lambda: all(
                    client.responses[s].ended or client.responses[s].reset_code is not None
                    for s in (first, second, third)
                )
            )
            assert client.responses[first].status == 400  # headers-only body: PayloadEmpty
            assert client.responses[second].reset_code == ErrorCodes.REFUSED_STREAM
            assert client.responses[third].reset_code == ErrorCodes.REFUSED_STREAM
            nursery.cancel_scope.cancel()


async def test_garbage_json_and_expired_token(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            stale = kit.jwt(issued_at=kit.now() - 3601)
            r = await client.request(
                client.headers(kit.push_to_start_token(), stale, TOPIC), start_body()
            )
            assert (r.status, r.reason) == (403, "ExpiredProviderToken")
            r = await client.request(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), b"{not json"
            )
            assert r.status == 400 and r.headers["content-type"] == "application/json"
            nursery.cancel_scope.cancel()


async def test_token_expires_after_an_hour_on_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(7200):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            jwt = kit.jwt()
            hs = client.headers(kit.push_to_start_token(), jwt, TOPIC)
            assert (await client.request(hs, start_body())).status == 200
            await trio.sleep(3601)
            r = await client.request(hs, start_body())
            assert (r.status, r.reason) == (403, "ExpiredProviderToken")
            nursery.cancel_scope.cancel()


async def test_goaway_drains_in_flight_streams(autojump_clock: trio.testing.MockClock) -> None:
    plan = FaultPlan.from_flags("latency=fixed:500")
    kit = make_kit(plan=plan)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            sid = await client.send(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            await trio.sleep(0.1)  # the request is in flight (answer delayed 500 ms)
            nursery.start_soon(kit.server.drain, 5.0)
            await client.until(lambda: client.goaway is not None)
            assert client.goaway is not None and client.goaway.additional_data is not None
            assert json.loads(client.goaway.additional_data) == {"reason": "Shutdown"}
            assert client.goaway.last_stream_id == sid
            await client.until(lambda: client.closed)
            assert client.responses[sid].status == 200  # answered after the GOAWAY
            assert client.closed


async def test_fault_plan_goaway_after_n_streams(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("goaway_after=2"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            hs = client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC)
            assert (await client.request(hs, start_body())).status == 200
            assert (await client.request(hs, start_body())).status == 200
            await client.until(lambda: client.goaway is not None)
            assert client.goaway is not None and client.goaway.last_stream_id == 3
            nursery.cancel_scope.cancel()


async def test_garbage_bytes_end_the_connection_not_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client_stream, server_stream = trio.testing.memory_stream_pair()
            nursery.start_soon(kit.server.handle, server_stream)
            await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
            received = b""
            while chunk := await client_stream.receive_some(65536):
                received += chunk
            assert received  # the server wrote its preface and a GOAWAY before closing
            client = await _connect(kit, nursery)  # and still serves new connections
            r = await client.request(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            assert r.status == 200
            nursery.cancel_scope.cancel()


async def test_client_disconnecting_mid_stream(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(
                sid, client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC)
            )
            client.conn.send_data(sid, start_body()[:20])  # no END_STREAM
            await client.flush()
            await client.stream.aclose()
            await trio.sleep(1)
            client = await _connect(kit, nursery)
            r = await client.request(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            assert r.status == 200
            nursery.cancel_scope.cancel()


async def test_fault_bursts_reset_and_unregister(autojump_clock: trio.testing.MockClock) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("burst=ServiceUnavailable:1:1"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            hs = client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC)
            r = await client.request(hs, start_body())
            assert (r.status, r.reason) == (503, "ServiceUnavailable")
            nursery.cancel_scope.cancel()
    kit = make_kit(plan=FaultPlan.from_flags("unregister=1"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            hs = client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC)
            assert (await client.request(hs, start_body())).status == 200
            r = await client.request(hs, start_body())
            assert (r.status, r.reason) == (410, "Unregistered")
            assert r.json()["timestamp"] == int(kit.now() * 1000)
            nursery.cancel_scope.cancel()
    kit = make_kit(plan=FaultPlan.from_flags("reset=1"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            hs = client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC)
            r = await client.request(hs, start_body())
            assert r.reset_code == ErrorCodes.INTERNAL_ERROR
            nursery.cancel_scope.cancel()


async def test_fault_drop_closes_the_connection_mid_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("drop=1"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            sid = await client.send(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            await client.until(lambda: client.closed)
            assert client.closed and client.responses[sid].status is None
            assert kit.apns.counters.faults == {"drop": 1}


async def test_malformed_frame_after_a_valid_preface(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            # A HEADERS frame on stream 0 is a connection error (RFC 9113 §6.2).
            await client.stream.send_all(b"\x00\x00\x01\x01\x05\x00\x00\x00\x00\x88")
            await client.until(lambda: client.closed or client.goaway is not None)
            assert client.goaway is not None
            assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
            client = await _connect(kit, nursery)
            r = await client.request(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            assert r.status == 200
            nursery.cancel_scope.cancel()


async def test_answers_still_flow_after_a_client_goaway(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kit = make_kit(plan=FaultPlan.from_flags("latency=fixed:300"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            sid = await client.send(
                client.headers(kit.push_to_start_token(), kit.jwt(), TOPIC), start_body()
            )
            await trio.sleep(0.1)
            client.conn.close_connection(last_stream_id=0)  # the client's own GOAWAY
            await client.flush()
            r = client.responses[sid]
            await client.until(lambda: r.ended)
            assert r.status == 200
            nursery.cancel_scope.cancel()


def _voip_headers(client: H2TestClient, token: str, jwt: str) -> list[tuple[str, str]]:
    headers = [
        (k, v) for k, v in client.headers(token, jwt, BUNDLE + ".voip") if k != "apns-push-type"
    ]
    return [*headers, ("apns-push-type", "voip")]


def _json_of_size(size: int) -> bytes:
    base = b'{"aps":{},"pad":""}'
    return base[:-2] + b"x" * (size - len(base)) + b'"}'


@pytest.mark.parametrize(
    ("push_type", "size", "reason"),
    [
        ("liveactivity", 4096, None),
        ("liveactivity", 4097, "PayloadTooLarge"),
        ("liveactivity", 4500, "PayloadTooLarge"),
        # A VoIP body up to 5,120 bytes is read whole and judged on: the next rule that applies
        # here is the unknown token, never a body cut short at the device-push limit.
        ("voip", 4500, "BadDeviceToken"),
        ("voip", 5120, "BadDeviceToken"),
        ("voip", 5121, "PayloadTooLarge"),
    ],
)
async def test_bodies_are_judged_on_their_true_size_at_each_limit(
    autojump_clock: trio.testing.MockClock, push_type: str, size: int, reason: str | None
) -> None:
    kit = make_kit()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            client = await _connect(kit, nursery)
            jwt = kit.jwt()
            if push_type == "voip":
                headers = _voip_headers(client, "ab" * 32, jwt)
                body = _json_of_size(size)
            else:
                headers = client.headers(kit.push_to_start_token(), jwt, TOPIC)
                body = start_body()
                body = body[:-1] + b',"pad":"' + b"x" * (size - len(body) - 9) + b'"}'
            assert len(body) == size
            r = await client.request(headers, body)
            if reason is None:
                assert r.status == 200
            else:
                assert r.reason == reason, (r.status, r.reason)
            nursery.cancel_scope.cancel()
