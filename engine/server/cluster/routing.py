"""Which partition an API call belongs to, from its route, path parameters and body.

- A stream's calls (`/api/live-activity/stream/{stream_key}`): the stream key's partition, so
  one node orders every version of a stream.
- Calls naming an activity id (update, end, a status read, an update token report): the
  partition the id carries (`partitions.id_partition`).
- A plain start (`POST /api/live-activity/start`): `ANY_HELD`, any partition the answering node
  holds; it draws the new id inside it.
- The listing of activities (`GET /api/live-activities`) and the dashboard's activities: `ALL`,
  every node answers for the partitions it holds and the answers are merged.
- The rest of the API (devices, notifications, the badge, metrics, webhooks): `GLOBAL`, whose
  owner is the single writer of those rows.
- Pages, the OpenAPI document, `/healthz` and `/metrics`: None, answered by whichever node is
  asked (each reports itself).

Pure: no I/O, used by the router of `cluster.node`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from engine.server.cluster.partitions import GLOBAL, id_partition, key_partition

__all__ = ["ALL", "ANY_HELD", "route_partition"]

ANY_HELD: Final = -1
"""A call any node holding some partition may take (a plain start)."""

ALL: Final = -2
"""A call every partition's owner answers a part of (the listings of activities)."""

_STREAM: Final = "/api/live-activity/stream/{stream_key}"
_BY_ID_IN_PATH: Final = "/api/live-activity/{activity_id}"
_BY_ID_IN_BODY: Final = frozenset(
    {"/api/live-activity/update", "/api/live-activity/end", "/api/activity-tokens"}
)
_START: Final = "/api/live-activity/start"
_LISTINGS: Final = frozenset({"/api/live-activities", "/api/dashboard"})


class _Named(msgspec.Struct):
    """The one field routing reads from a body; everything else is the handler's to check."""

    activity_id: str


_decode_named = msgspec.json.Decoder(_Named).decode


def route_partition(
    template: str, params: Mapping[str, str], body: bytes, partitions: int
) -> int | None:
    """The partition of a call (see the module docstring); None for a node-local call, and
    None too for a body without a readable `activity_id` (the handler answers it with its 400)."""
    if template == _STREAM:
        return key_partition(params["stream_key"], partitions)
    if template == _BY_ID_IN_PATH:
        return id_partition(params["activity_id"], partitions)
    if template in _BY_ID_IN_BODY:
        try:
            named = _decode_named(body)
        except msgspec.DecodeError:
            return None
        return id_partition(named.activity_id, partitions)
    if template == _START:
        return ANY_HELD
    if template in _LISTINGS:
        return ALL
    if template.startswith("/api/") and template != "/api/openapi.json":
        return GLOBAL
    return None
