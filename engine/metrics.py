"""Metrics through a listener with a no-op default; metrics never drive behaviour.

Subclass `EngineListener` and override what you need (the HTTP front's Prometheus exporter is one
such listener). Calls happen on the engine's trio thread, synchronously, so keep them cheap.
"""

from __future__ import annotations

from engine.apns.pool import PoolListener
from engine.apns.reasons import Reason
from engine.results import DeliveryResult


class EngineListener(PoolListener):
    """Engine events, the connection pool's included; every method is a no-op here."""

    def submitted(self, kind: str) -> None:
        """An event was accepted into the engine (after its size check)."""

    def dispatched(self, kind: str, attempt: int) -> None:
        """A push attempt left for APNs."""

    def answered(self, status: int, reason: Reason | None, latency: float) -> None:
        """APNs answered an attempt after `latency` seconds."""

    def unanswered(self, outcome: str, detail: str) -> None:
        """An attempt got no answer (`Outcome.TRANSPORT`) or was not processed
        (`Outcome.UNPROCESSED`); `outcome` is the member's value, ready to be a metric label."""

    def settled(self, result: DeliveryResult) -> None:
        """A submitted event reached its end (`result.status`, a `DeliveryStatus`)."""
