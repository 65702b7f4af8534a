"""One provider token per team for every node on a PostgreSQL database (apns.md §2).

N Lockstep processes (workers of `lockstep serve --workers N`, or nodes on many machines) pushing
with one APNs key must look like one client: APNs wants one token reused across servers and
connections, changed at most once per 20 minutes, or it answers `429 TooManyProviderTokenUpdates`.
Each process's `TokenSource` runs in coordinated mode (engine/apns/tokens.py) and `SharedTokens`,
a trio task beside the engine, keeps it on the token stored in the table `lockstep_provider_tokens`:
one row per (team_id, key_id) with the token, its `iat` and the node that issued it.

**When.** It syncs once before the engine starts (so the first push already carries the shared
token), then when the token reaches `max_age` (`TokenSource.due_at`), when APNs calls the current
token expired (`TokenSource.on_refresh_wanted`), and every `poll_interval` seconds (so a node
follows a refresh another node forced).

**How.** One transaction: the row is created if missing (`INSERT ... ON CONFLICT DO NOTHING`),
then read `FOR UPDATE`, which makes every other node wait on it until this one commits; the pure
rule `engine.apns.sharedtoken.plan` says adopt the stored token, publish ours, or issue one, and
the new token is written before the lock is released. So exactly one node issues per generation,
the others adopt it, and a forced refresh replaces the stored token only while it is still the
failed one.

**When the database cannot be reached**, the node keeps its token, retries every
`retry_interval` seconds, refreshes a token APNs called expired by itself
(`TokenSource.refresh_locally`) and issues one by itself once its token is `fallback_age` old:
pushes keep going; once the database is back, the nodes converge on one token again.

The table lives beside the store's tables but outside its migrations (`pg.MIGRATIONS` stays in
step with SQLite's, which has no such table): it is created here, `CREATE TABLE IF NOT EXISTS`
under a per-schema advisory lock, as `lockstep_schema` is. The token is a credential (a signed
JWT, not the key): it is never logged, and errors name only the SQLSTATE and the server's
condition (`pg.describe`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import psycopg
import trio

from engine.apns.auth import ProviderToken
from engine.apns.sharedtoken import Adopt, Issue, Publish, StoredToken, plan
from engine.apns.tokens import TokenSource
from engine.server.store.pg import describe, where

__all__ = ["TABLE", "SharedTokens", "ensure_table"]

log = logging.getLogger("lockstep.tokens")

Connection: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

TABLE: Final = "lockstep_provider_tokens"
_CREATE: Final = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        team_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        token TEXT NOT NULL,
        issued_at BIGINT NOT NULL,
        issued_by TEXT NOT NULL,
        PRIMARY KEY (team_id, key_id)
    )
"""
# An empty token with iat 0 stands for "none yet": stale for every node, so the first issues.
_CLAIM: Final = f"""
    INSERT INTO {TABLE} (team_id, key_id, token, issued_at, issued_by)
    VALUES (%s, %s, '', 0, '') ON CONFLICT DO NOTHING
"""
_LOCK: Final = f"SELECT token, issued_at FROM {TABLE} WHERE team_id = %s AND key_id = %s FOR UPDATE"
_STORE: Final = (
    f"UPDATE {TABLE} SET token = %s, issued_at = %s, issued_by = %s "
    "WHERE team_id = %s AND key_id = %s"
)


def ensure_table(conn: Connection) -> None:
    """Create the table if it is missing (`conn` in autocommit mode); two nodes creating it at
    once wait on a per-schema lock instead of failing on the catalog."""
    exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
    if exists is not None and exists[0] is not None:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || %s))", (TABLE,))
        conn.execute(_CREATE)


class SharedTokens:
    """Keeps `tokens` (coordinated) on the token shared through the database at `url`."""

    def __init__(
        self,
        url: str,
        tokens: TokenSource,
        *,
        node_id: str,
        wall_clock: Callable[[], float],
        poll_interval: float = 60.0,
        retry_interval: float = 5.0,
        threads: bool = True,
        connect_timeout: int = 5,
    ) -> None:
        if not tokens.coordinated:
            raise ValueError("SharedTokens needs a TokenSource made with coordinated=True")
        self._url = url
        self._where = where(url)
        self._tokens = tokens
        self._node_id = node_id
        self._wall_clock = wall_clock
        self._poll = poll_interval
        self._retry = retry_interval
        self._threads = threads
        self._connect_timeout = connect_timeout
        self._conn: Connection | None = None
        self._wake = trio.Event()
        self._healthy = False
        self.issued = 0  # tokens this node issued and stored for everyone
        self.published = 0  # tokens of this node's own stored for everyone
        self.failures = 0  # syncs that could not reach the database
        tokens.on_refresh_wanted = self._wanted

    def __repr__(self) -> str:  # never the token, never the URL's password
        return f"SharedTokens(node_id={self._node_id!r}, database={self._where!r})"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync once, report started, then keep syncing (module docstring) until cancelled."""
        try:
            await self.sync()
            task_status.started()
            while True:
                with trio.move_on_after(self._next_delay()):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self.sync()
        finally:
            self._close()

    async def sync(self) -> None:
        """One round with the database: adopt, publish or issue the shared token."""
        tokens = self._tokens
        ours, failed = tokens.cached, tokens.refresh_wanted
        try:
            token, what = await self._off_loop(self._sync_blocking, ours, failed)
        except psycopg.Error as exc:
            self._drop_connection()
            self.failures += 1
            if self._healthy or self.failures == 1:
                log.warning(
                    "provider token: cannot share it through %s (%s); this node keeps its own "
                    "until the database answers",
                    self._where,
                    describe(exc),
                )
            self._healthy = False
            if failed is not None:
                tokens.refresh_locally(failed)
            return
        if not self._healthy and self.failures:
            log.warning("provider token: shared through %s again", self._where)
        self._healthy = True
        self.issued += what == "issued"
        self.published += what == "published"
        if tokens.adopt(token) or what != "adopted":
            log.info(
                "provider token: %s (iat %d, generation %d)",
                what,
                token.issued_at,
                tokens.generation,
            )

    def _wanted(self) -> None:
        self._wake.set()  # called on the trio thread, by `TokenSource.on_expired`

    def _next_delay(self) -> float:
        if not self._healthy:
            return self._retry
        if self._tokens.refresh_wanted is not None:
            return 0.0
        due = self._tokens.due_at
        delay = self._poll
        if due is not None:
            delay = min(delay, due - self._wall_clock())
        # Never a busy loop: a token due "now" by a coarse clock is looked at again shortly.
        return max(delay, 0.5)

    # -- blocking side (a worker thread, or inline with threads=False) ----------------------------

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._threads:
            return await trio.to_thread.run_sync(fn, *args)
        await trio.lowlevel.checkpoint()
        return fn(*args)

    def _sync_blocking(
        self, ours: ProviderToken | None, failed: ProviderToken | None
    ) -> tuple[ProviderToken, str]:
        """The locked read-decide-write of the module docstring; (the token, what was done)."""
        conn = self._connected()
        team, kid = self._tokens.team_id, self._tokens.key_id
        with conn.transaction():
            conn.execute(_CLAIM, (team, kid))
            row = conn.execute(_LOCK, (team, kid)).fetchone()
            stored = StoredToken(str(row[0]), int(row[1])) if row and row[0] else None
            decision = plan(
                stored, ours, now=self._wall_clock(), max_age=self._tokens.max_age, failed=failed
            )
            if isinstance(decision, Adopt):
                return decision.stored.token(kid, team), "adopted"
            if isinstance(decision, Publish):
                token, what = decision.token, "published"
            else:
                assert isinstance(decision, Issue)
                token, what = self._tokens.issue_new(), "issued"
            conn.execute(_STORE, (token.value, token.issued_at, self._node_id, team, kid))
        return token, what

    def _connected(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout)
        try:
            ensure_table(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
