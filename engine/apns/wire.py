"""The APNs wire vocabulary: limits, header names, push types and paths (apns.md §1, §2, §5).

Plain constants shared by the engine and the simulator, so both sides speak the same dialect.
"""

from __future__ import annotations

from typing import Final

MAX_DEVICE_PAYLOAD: Final = 4096
"""Largest body of a device push, Live Activity pushes included (apns.md §5)."""

MAX_BROADCAST_PAYLOAD: Final = 5120
"""Largest body of a broadcast (channel) push (apns.md §5, §7)."""

MAX_VOIP_PAYLOAD: Final = 5120
"""Largest body of a VoIP push (apns.md §5)."""

MAX_PAYLOAD: Final = max(MAX_DEVICE_PAYLOAD, MAX_BROADCAST_PAYLOAD, MAX_VOIP_PAYLOAD)
"""The largest body any push type may have: a receiver buffers this much to judge every type."""

MAX_COLLAPSE_ID: Final = 64
"""`apns-collapse-id` longer than this many bytes is `BadCollapseId` (apns.md §1)."""

DEVICE_PATH_PREFIX: Final = "/3/device/"
BROADCAST_PATH_PREFIX: Final = "/4/broadcasts/apps/"

LIVE_ACTIVITY_PUSH_TYPE: Final = "liveactivity"
LIVE_ACTIVITY_TOPIC_SUFFIX: Final = ".push-type.liveactivity"

PUSH_TYPES: Final = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
        "controls",
        "widgets",
    }
)
"""Every value `apns-push-type` may take (apns.md §1)."""

TOPIC_SUFFIXES: Final = {
    "liveactivity": ".push-type.liveactivity",
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",  # iOS 26 widget pushes
}
"""The topic suffix each push type requires; types absent here use the bare bundle id."""

LIVE_ACTIVITY_PRIORITIES: Final = frozenset({5, 10})
"""The only `apns-priority` values a Live Activity push may carry (apns.md §1)."""

TOKEN_MAX_AGE: Final = 3600
"""A provider token older than this (seconds since `iat`) is `ExpiredProviderToken` (apns.md §2)."""

TOKEN_MIN_REFRESH: Final = 1200
"""A connection may switch provider tokens at most once per this many seconds (apns.md §2)."""

H_AUTHORIZATION: Final = "authorization"
H_PUSH_TYPE: Final = "apns-push-type"
H_TOPIC: Final = "apns-topic"
H_PRIORITY: Final = "apns-priority"
H_EXPIRATION: Final = "apns-expiration"
H_ID: Final = "apns-id"
H_COLLAPSE_ID: Final = "apns-collapse-id"
