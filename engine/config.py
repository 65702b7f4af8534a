"""The engine's configuration: one frozen record with embedded defaults.

`ApnsEndpoint` says where pushes go (Apple's production or sandbox host on 443, or a local
simulator with its own CA, or plaintext h2c in tests); `Credentials` holds the token-auth identity
(the `.p8` path, never its contents); `DeliveryConfig` the knobs of coalescing, pacing, retries and
bounds; `EngineConfig` bundles them. Every value is checked on construction and a bad one raises
`ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.apns import wire

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"


class ConfigError(ValueError):
    """A configuration value is missing or out of range; the message names the field."""


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True, slots=True)
class ApnsEndpoint:
    """Where the engine connects (apns.md §1, Hosts)."""

    host: str = PRODUCTION_HOST
    port: int = 443
    tls: bool = True
    ca_file: Path | None = None  # trust this CA instead of the system store (the simulator's)
    server_hostname: str | None = None  # SNI / certificate name, when it differs from `host`

    def __post_init__(self) -> None:
        _require(bool(self.host), "apns.host", "must not be empty")
        _require(0 < self.port < 65536, "apns.port", f"must be 1..65535, got {self.port}")

    @classmethod
    def apple(cls, *, sandbox: bool = False, port: int = 443) -> ApnsEndpoint:
        """Apple's APNs; port 2197 is the documented alternative to 443."""
        return cls(host=SANDBOX_HOST if sandbox else PRODUCTION_HOST, port=port)

    @property
    def authority(self) -> str:
        """The `:authority` pseudo-header."""
        name = self.server_hostname or self.host
        return name if self.port == 443 else f"{name}:{self.port}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Token-auth identity: team id, key id, the `.p8` file and the app's bundle id."""

    team_id: str
    key_id: str
    key_path: Path
    bundle_id: str

    def __post_init__(self) -> None:
        _require(bool(self.team_id), "credentials.team_id", "must not be empty")
        _require(bool(self.key_id), "credentials.key_id", "must not be empty")
        _require(bool(self.bundle_id), "credentials.bundle_id", "must not be empty")

    @property
    def topic(self) -> str:
        """The Live Activity topic: `<bundle id>.push-type.liveactivity` (apns.md §1)."""
        return self.bundle_id + wire.LIVE_ACTIVITY_TOPIC_SUFFIX


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Coalescing, pacing, retries, connections and bounds."""

    connections: int = 4  # HTTP/2 connections in the pool
    pacing_interval: float = 1.0  # at most one push per activity lane per interval (s)
    max_attempts: int = 10  # failed attempts before an item is reported failed
    backoff_cap: float = 60.0  # seconds, for retries and reconnects (1 s → 60 s)
    max_lanes: int = 200_000  # tracked (activity, device) lanes; a new one beyond → busy
    submit_queue: int = 10_000  # submissions waiting for the dispatcher
    token_max_age: float = 3000.0  # refresh the provider token after 50 min (apns.md §2)
    idle_ping: float = 300.0  # PING an idle connection after this many seconds
    ping_timeout: float = 10.0  # no PING ack by then: the connection is dead
    request_timeout: float = 30.0  # no answer by then: transport failure, retried
    connect_timeout: float = 10.0
    expiration: int = 3600  # apns-expiration = now + this (s); 0 = one attempt, no storage
    # Priority-10 pushes per lane (activity on one device) per hour before iOS throttles; Apple
    # publishes no number (apns.md §1, Budget rules). 0: no budget, every push at its own priority.
    hourly_budget: int = 30
    # Routine (silent) updates go at 10 only while more than this many are left, else at 5.
    budget_reserve: int = 10

    def __post_init__(self) -> None:
        _require(1 <= self.connections <= 64, "delivery.connections", "must be 1..64")
        # aps.timestamp has one-second resolution: two pushes within a second could carry the
        # same timestamp and the second would be dropped on the device (apns.md §6).
        _require(
            self.pacing_interval >= 1.0,
            "delivery.pacing_interval",
            f"must be >= 1.0 s (aps.timestamp is in seconds), got {self.pacing_interval}",
        )
        _require(self.max_attempts >= 1, "delivery.max_attempts", "must be >= 1")
        _require(self.backoff_cap >= 1.0, "delivery.backoff_cap", "must be >= 1 s")
        _require(self.max_lanes >= 1, "delivery.max_lanes", "must be >= 1")
        _require(self.submit_queue >= 1, "delivery.submit_queue", "must be >= 1")
        # Apple: refresh no more than every 20 min and no less than every 60 (apns.md §2).
        _require(
            wire.TOKEN_MIN_REFRESH <= self.token_max_age < wire.TOKEN_MAX_AGE,
            "delivery.token_max_age",
            "must be within [1200, 3600) seconds",
        )
        for name in ("idle_ping", "ping_timeout", "request_timeout", "connect_timeout"):
            _require(getattr(self, name) > 0, f"delivery.{name}", "must be > 0")
        _require(self.expiration >= 0, "delivery.expiration", "must be >= 0")
        _require(self.hourly_budget >= 0, "delivery.hourly_budget", "must be >= 0 (0: off)")
        _require(
            0 <= self.budget_reserve <= max(self.hourly_budget, 0),
            "delivery.budget_reserve",
            f"must be within 0..hourly_budget ({self.hourly_budget})",
        )


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything `open_engine` needs."""

    credentials: Credentials
    endpoint: ApnsEndpoint = field(default_factory=ApnsEndpoint)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
