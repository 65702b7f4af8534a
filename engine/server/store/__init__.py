"""Durable storage for the service's rows: the `Store` interface and its SQLite implementation.

`records` holds the row types, the write ops and `Snapshot`; `base` the `Store` protocol and
`StoreError`; `sqlite` the default `SqliteStore` (WAL, group commit, schema migrations); `pg`
the `PgStore` on PostgreSQL (imported on its own: psycopg is the optional `pg` extra).
"""

from __future__ import annotations

from engine.server.store.base import Store, StoreError
from engine.server.store.records import (
    ActivityRow,
    DeleteActivity,
    DeleteDevice,
    DeleteNotification,
    DeviceRow,
    MetricRow,
    NotificationRow,
    Op,
    PutActivity,
    PutDevice,
    PutMetric,
    PutNotification,
    PutRecipient,
    PutStream,
    RecipientRow,
    Snapshot,
    StreamRow,
)
from engine.server.store.sqlite import SCHEMA_VERSION, SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "ActivityRow",
    "DeleteActivity",
    "DeleteDevice",
    "DeleteNotification",
    "DeviceRow",
    "MetricRow",
    "NotificationRow",
    "Op",
    "PutActivity",
    "PutDevice",
    "PutMetric",
    "PutNotification",
    "PutRecipient",
    "PutStream",
    "RecipientRow",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoreError",
    "StreamRow",
]
