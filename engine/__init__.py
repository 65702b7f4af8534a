"""Lockstep's embeddable engine: Live Activity pushes to APNs, coalesced, ordered, paced.

    from engine import Alert, ApnsEndpoint, Credentials, EngineConfig, open_engine

    config = EngineConfig(credentials=Credentials(team_id, key_id, Path("AuthKey.p8"), bundle_id),
                          endpoint=ApnsEndpoint.apple(sandbox=True))
    async with open_engine(config) as engine:
        handle = await engine.update("deploy-42", update_token, {"step": 3}, lane="iphone-1")
        result = await handle.result()   # a DeliveryResult, never an exception

This package is the front door: every name a service embedding the engine needs is importable
from here. The engine depends on trio, h2 (with hpack and hyperframe), cryptography and msgspec
only; the HTTP server built on it lives in `engine.server` and the command line in `engine.cli`,
and neither is imported here.

What became of a push has one vocabulary: a `DeliveryResult` carries its `DeliveryStatus` (the end
of the whole push: accepted, superseded, rejected, failed) and, when APNs gave a reason, the
`Outcome` the `REASONS` table assigns to that `Reason` (what a sender does next: retry, drop the
token, fix the request...). `outcome_for` classifies any APNs answer the same way.
"""

from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.reasons import REASONS, Outcome, Reason, ReasonInfo, outcome_for
from engine.apns.transport import ConnectError, Connector, tcp_connector
from engine.config import ApnsEndpoint, ConfigError, Credentials, DeliveryConfig, EngineConfig
from engine.delivery.dispatch import PushHandle
from engine.delivery.items import Busy, DeliveryError, Hold, HoldReason, LaneError
from engine.engine import Engine, open_engine
from engine.metrics import EngineListener
from engine.payload import (
    Alert,
    EventKind,
    InvalidContent,
    LiveActivityContent,
    LocalizedText,
    PayloadError,
    PayloadTooLarge,
    PreparedPayload,
    prepare,
)
from engine.results import DeliveryResult, DeliveryStatus

__all__ = [
    "REASONS",
    "Alert",
    "ApnsEndpoint",
    "Busy",
    "ConfigError",
    "ConnectError",
    "Connector",
    "Credentials",
    "DeliveryConfig",
    "DeliveryError",
    "DeliveryResult",
    "DeliveryStatus",
    "Engine",
    "EngineConfig",
    "EngineListener",
    "EventKind",
    "Hold",
    "HoldReason",
    "InvalidContent",
    "LaneError",
    "LiveActivityContent",
    "LocalizedText",
    "Outcome",
    "PayloadError",
    "PayloadTooLarge",
    "PreparedPayload",
    "ProviderToken",
    "PushHandle",
    "Reason",
    "ReasonInfo",
    "SigningKey",
    "open_engine",
    "outcome_for",
    "prepare",
    "tcp_connector",
]
