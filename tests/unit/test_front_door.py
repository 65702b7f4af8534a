"""The engine's front door: `from engine import ...` gives an embedder everything the README uses.

The README's embedding example, run against the simulator's accept-all sink in memory: the names
come from `engine` alone, and a push ends in a `DeliveryResult` (a value, never an exception).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import trio
import trio.testing

import engine
from engine import (
    Alert,
    ApnsEndpoint,
    Credentials,
    DeliveryResult,
    DeliveryStatus,
    EngineConfig,
    SigningKey,
    open_engine,
)
from simulator.fastsink import FastSinkProtocol

TIMEOUT = 10.0


def test_every_exported_name_is_defined_and_documented() -> None:
    assert len(engine.__all__) == len(set(engine.__all__))
    for name in engine.__all__:
        value = getattr(engine, name)  # AttributeError: exported but not defined
        if inspect.isclass(value) or inspect.isfunction(value):  # not aliases or constants
            # Defined under its own name in an engine module, the one place it lives.
            assert value.__module__.startswith("engine.") and value.__name__ == name, name
            assert getattr(importlib.import_module(value.__module__), name) is value, name
            assert inspect.getdoc(value), f"{name} has no docstring"


async def _sink(stream: trio.abc.Stream) -> None:
    sink = FastSinkProtocol()
    try:
        await stream.send_all(sink.data_to_send())
        while data := await stream.receive_some(65536):
            sink.receive_data(data)
            if out := sink.data_to_send():
                await stream.send_all(out)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_the_readme_example_runs_on_the_front_door_alone() -> None:
    key = SigningKey.generate("KEYID12345", "TEAMID1234")
    config = EngineConfig(
        credentials=Credentials("TEAMID1234", "KEYID12345", Path("AuthKey.p8"), "com.example.app"),
        endpoint=ApnsEndpoint.apple(sandbox=True),
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def connect() -> trio.abc.Stream:
                client, server = trio.testing.memory_stream_pair()
                nursery.start_soon(_sink, server)
                return client

            async with open_engine(config, connector=connect, signing_key=key) as lockstep:
                handle = await lockstep.start(
                    "deploy-42",
                    "ab" * 32,
                    {"step": 0},
                    attributes_type="DeployAttributes",
                    attributes={"activity_id": "deploy-42"},
                    alert=Alert("Deploy", "started"),
                    lane="iphone-1",
                )
                result = await handle.result()
            nursery.cancel_scope.cancel()
    assert isinstance(result, DeliveryResult)
    assert result.status is DeliveryStatus.ACCEPTED and result.apns_id
