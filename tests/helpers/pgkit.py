"""PostgreSQL for tests: the server on 127.0.0.1:5432 (trust auth, user `postgres`, database
`test`), one fresh schema per store, dropped afterwards.

`schemas()` checks the server answers first: when none does, the test is skipped with a loud
reason, except under `CI` (set and not "false"/"0"), where it fails: CI must test PostgreSQL.
`LOCKSTEP_TEST_PG` names another server. `Stores` makes the stores a store contract test runs on:
SQLite (in memory or a file) or PostgreSQL (a fresh schema each).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.server.store.pg import PgStore
from engine.server.store.sqlite import SqliteStore

PG_URL = os.environ.get("LOCKSTEP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def in_ci() -> bool:
    """Whether this is a CI run, where a missing PostgreSQL fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require_server() -> None:
    """Skip (fail under CI) unless PostgreSQL answers at `PG_URL`."""
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = (
            f"!!! PostgreSQL does not answer at {PG_URL} ({str(exc).strip()}): the PostgreSQL "
            "store is NOT tested; start one (trust auth, user postgres, database test) !!!"
        )
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


class Schemas:
    """Fresh schemas in the test database: `new()` makes one and returns a URL whose
    connections use it; every one made is dropped by `drop_all()`."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self._run = uuid.uuid4().hex[:8]  # unique per run: runs side by side never collide
        self._numbers = itertools.count()

    def new(self) -> str:
        """A URL on a new, empty schema."""
        name = f"lockstep_test_{self._run}_{next(self._numbers)}"
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.made.append(name)
        return f"{PG_URL}?options=-csearch_path%3D{name}"

    def drop_all(self) -> None:
        """Drop every schema made, with what is in it."""
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        self.made.clear()


@contextmanager
def schemas() -> Iterator[Schemas]:
    """`Schemas` for the block, all dropped at its end; skips or fails when no server answers."""
    require_server()
    made = Schemas()
    try:
        yield made
    finally:
        made.drop_all()


class Stores:
    """The stores a contract test runs on: `kind` "sqlite" or "postgresql"."""

    def __init__(self, kind: str, tmp_path: Path, pg: Schemas | None = None) -> None:
        self.kind = kind
        self._tmp = tmp_path
        self._pg = pg
        self._numbers = itertools.count()
        # Closed at the end even when a test fails before closing them: a failing Hypothesis
        # example keeps its store alive, and leaked connections would exhaust the server's.
        self.made: list[SqliteStore] = []

    def fresh(self, *, file: bool = False, **kw: Any) -> SqliteStore:
        """A store on an empty database: SQLite in memory (or a file when `file`), or a new
        PostgreSQL schema. `kw` as for `SqliteStore` (commit_interval, max_batch, queue)."""
        if self._pg is not None:
            store: SqliteStore = PgStore(self._pg.new(), **kw)
        elif not file:
            store = SqliteStore(":memory:", **kw)
        else:
            store = SqliteStore(self._tmp / f"store-{next(self._numbers)}.db", **kw)
        self.made.append(store)
        return store

    def again(self, store: SqliteStore) -> SqliteStore:
        """A second store on `store`'s database (a file or a schema), as after a restart."""
        if isinstance(store, PgStore):
            again: SqliteStore = PgStore(store.url)
        else:
            assert store.path is not None, "an in-memory store cannot be opened again"
            again = SqliteStore(store.path)
        self.made.append(again)
        return again

    def close_all(self) -> None:
        """Close every store made (closing twice is harmless)."""
        for store in self.made:
            store.close()


@contextmanager
def stores(kind: str, tmp_path: Path) -> Iterator[Stores]:
    """`Stores` of `kind` for the block (PostgreSQL schemas dropped at its end)."""
    if kind == "sqlite":
        made = Stores(kind, tmp_path)
        try:
            yield made
        finally:
            made.close_all()
        return
    with schemas() as pg:
        made = Stores(kind, tmp_path, pg)
        try:
            yield made
        finally:
            made.close_all()
