"""Micro-benchmarks for the APNs client protocol: encoding a request, decoding an answer.

Measured with `make bench-micro` (`--benchmark-enable`); under `make test` each body runs once as
an ordinary test, so the assertions keep them honest.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
from h2.settings import SettingCodes, Settings
from pytest_benchmark.fixture import BenchmarkFixture

from engine.apns.h2wire import frame
from engine.apns.protocol import ApnsClientProtocol, PushAnswered, PushRequest
from simulator.fastsink import response_block

TOPIC = "com.example.app.push-type.liveactivity"
JWT = b"bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ." + b"x" * 140
BODY = b'{"aps":{"timestamp":1700000000,"event":"update","content-state":{"score":"1-0"}}}'
TOKEN = "ab" * 32
APNS_ID = "0BA3C3D4-1111-2222-3333-444455556666"


class _Server:
    """Just enough of an h2 server to complete the handshake and answer 200."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.conn.local_settings = Settings(
            client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 2**31 - 1}
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**31 - 1 - 65_535)
        self.ended: list[int] = []

    def feed(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.append(event.stream_id)

    def answer(self, stream_id: int) -> bytes:
        self.conn.send_headers(
            stream_id,
            [(b":status", b"200"), (b"apns-id", b"0BA3C3D4-1111-2222-3333-444455556666")],
            end_stream=True,
        )
        return self.conn.data_to_send()


def _connected() -> tuple[ApnsClientProtocol, _Server]:
    client = ApnsClientProtocol("api.push.apple.com")
    client.initiate()
    client.set_authorization(JWT)
    server = _Server()
    server.feed(client.data_to_send())
    client.receive_data(server.conn.data_to_send())
    server.feed(client.data_to_send())
    # Warm the HPACK table: steady state is what a long-lived connection sees.
    for _ in range(2):
        server.feed(_encode_one(client))
        client.receive_data(server.answer(server.ended.pop()))
    return client, server


REQUEST = PushRequest(TOKEN, TOPIC, BODY, apns_id="0ba3c3d4-1111-2222-3333-444455556666")


def _encode_one(client: ApnsClientProtocol) -> bytes:
    client.send(REQUEST)
    return client.data_to_send()


def test_encode_one_request(benchmark: BenchmarkFixture) -> None:
    client, _ = _connected()
    wire = benchmark(_encode_one, client)
    assert BODY in wire and TOKEN.encode() in wire
    assert len(wire) < 2 * 9 + len(BODY) + 120  # two frame headers, body, compact headers


def test_decode_one_200(benchmark: BenchmarkFixture) -> None:
    client, server = _connected()

    def setup() -> tuple[tuple[bytes], dict[str, object]]:
        server.feed(_encode_one(client))
        return (server.answer(server.ended.pop()),), {}

    events = benchmark.pedantic(  # type: ignore[no-untyped-call]
        client.receive_data, setup=setup, rounds=2000, iterations=1
    )
    assert len(events) == 1 and isinstance(events[0], PushAnswered)
    assert events[0].status == 200


def test_decode_one_200_without_indexing(benchmark: BenchmarkFixture) -> None:
    # The answer as the simulator's sink sends it: `apns-id` a literal without indexing, no
    # Huffman (the decoding h2's own server encoder above does not exercise).
    client, server = _connected()

    def setup() -> tuple[tuple[bytes], dict[str, object]]:
        server.feed(_encode_one(client))
        stream_id = server.ended.pop()
        return (frame(0x1, 0x5, stream_id, response_block(APNS_ID)),), {}

    events = benchmark.pedantic(  # type: ignore[no-untyped-call]
        client.receive_data, setup=setup, rounds=2000, iterations=1
    )
    assert events == [PushAnswered(events[0].stream_id, 200, APNS_ID, *[None] * 4)]
