"""Lockstep's embeddable engine: Live Activity pushes to APNs, coalesced, ordered, paced.

    from engine import Alert, ApnsEndpoint, Credentials, EngineConfig, open_engine

    config = EngineConfig(credentials=Credentials(team_id, key_id, Path("AuthKey.p8"), bundle_id),
                          endpoint=ApnsEndpoint.apple(sandbox=True))
    async with open_engine(config) as engine:
        handle = await engine.update("deploy-42", update_token, {"step": 3}, lane="iphone-1")
        result = await handle.result()   # a DeliveryResult, never an exception

This package is the front door: every name a service embedding the engine needs is importable
from here. The engine depends on trio, h2, cryptography and msgspec only; the HTTP server built on
it lives in `engine.server` and the command line in `engine.cli`, and neither is imported here.
"""

from engine.apns.auth import ProviderToken, SigningKey
from engine.apns.reasons import REASONS, Disposition, Reason, disposition_for
from engine.apns.transport import ConnectError, Connector, tcp_connector
from engine.config import ApnsEndpoint, ConfigError, Credentials, DeliveryConfig, EngineConfig
from engine.delivery.dispatch import PushHandle
from engine.delivery.items import Busy, DeliveryError, LaneError
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
    "Disposition",
    "Engine",
    "EngineConfig",
    "EngineListener",
    "EventKind",
    "InvalidContent",
    "LaneError",
    "LiveActivityContent",
    "LocalizedText",
    "PayloadError",
    "PayloadTooLarge",
    "PreparedPayload",
    "ProviderToken",
    "PushHandle",
    "Reason",
    "SigningKey",
    "disposition_for",
    "open_engine",
    "prepare",
    "tcp_connector",
]
