"""Seeded fault plans: how the fake APNs server misbehaves, reproducibly.

A `FaultPlan` is a frozen description of APNs misbehaviour: answer latency, bursts of 429/500/503
(apns.md §3), GOAWAY after a number of streams, dropped connections, RST_STREAM, swings of
MAX_CONCURRENT_STREAMS (apns.md §4, peers.md §4) and device tokens that turn `Unregistered`.
The server asks `plan.for_connection(i)` for a `ConnectionFaults` per accepted connection and calls
its `next(token)` once per request, in arrival order. The connection's random generator is seeded
from the text ``f"{seed}:{i}"`` (string seeds are hashed with SHA-512, not the salted `hash()`), so
connection *i* always sees the same faults for the same seed and the same number of requests (the
tokens matter only to the once-per-token rule of `unregister_token` below).

Every configured fault draws the same number of random values on every request, whether it fires or
not, so one fault's outcome never shifts the sequence of another within a plan.

Precedence when several fire on one request: **drop > reset > reject**. A drop closes the TCP
connection without answering, so it clears everything else except the latency before it; a reset
answers RST_STREAM (INTERNAL_ERROR) instead of a response; a reject answers the burst's reason.
A burst keeps counting its requests while a higher-precedence fault wins one of them. GOAWAY and a
stream-limit swing ride along with a reset or a reject; `unregister_token` only comes with a request
the plan lets through, fires at most once per token per connection, and means: answer this request
normally, then treat the token as `Unregistered` (410, timestamp = now) for every later request.

Plans come from a TOML file (keys as the `FaultPlan` fields, ``[latency_ms]`` with a ``kind``,
``[[bursts]]``), from a dict, or from the compact command-line form of `FaultPlan.from_flags`
(``seed=7,latency=uniform:1:20,burst=ServiceUnavailable:0.01:5,...``; its grammar is in
`simulator.faults.flags`). All three are converted by msgspec into the same records. Every error is
a `FaultPlanError` (a `ValueError`) naming the field, and for flags the item, at fault.

The package, one concept per module:

    schema.py   FaultPlanError, the bounded field types, and `Checked`: msgspec checks the records,
                and its errors are restated with the dotted name of the field at fault
    parts.py    the latency distributions (tagged by ``kind``) and `ErrorBurst`
    flags.py    the command-line form, split into the dict form
    plan.py     `FaultPlan` and its dict / TOML / flag loading; `ConnectionFaults`, its draws
    actions.py  `FaultAction`, what the draws decide for one request, and `FaultStats`, their count
"""

from simulator.faults.actions import NO_FAULT, FaultAction, FaultStats
from simulator.faults.parts import (
    BURST_STATUSES,
    ErrorBurst,
    FixedLatency,
    Latency,
    LognormalLatency,
    UniformLatency,
)
from simulator.faults.plan import ConnectionFaults, FaultPlan
from simulator.faults.schema import MAX_SETTINGS_VALUE, FaultPlanError

__all__ = [
    "BURST_STATUSES",
    "MAX_SETTINGS_VALUE",
    "NO_FAULT",
    "ConnectionFaults",
    "ErrorBurst",
    "FaultAction",
    "FaultPlan",
    "FaultPlanError",
    "FaultStats",
    "FixedLatency",
    "Latency",
    "LognormalLatency",
    "UniformLatency",
]
