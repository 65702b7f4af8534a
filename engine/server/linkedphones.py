"""A worker's view of the supervisor's simulated iPhones, for the lock screens page.

With `lockstep serve --workers N` in simulate mode the simulator runs once, in the supervisor
(engine/server/workers.py), so a worker has no phones of its own to draw on `GET /api/dashboard`.
`LinkedPhones` is its `PhonesView` (engine/server/http/seam.py): the phones and the push log as the
simulator's control API serves them (`GET {control_url}/api/dashboard`), fetched in the
background about once a second while the page is being looked at, and not at all when nobody
has asked for `idle` seconds. `page_state` itself never waits: it answers what was last fetched
(nothing at first; the page asks again within seconds).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

__all__ = ["LinkedPhones"]

log = logging.getLogger("lockstep.phones")

_TIMEOUT = 5.0  # seconds for one fetch from the control API (loopback)


class LinkedPhones:
    """The supervisor's simulated iPhones, fetched from `control_url` (module docstring)."""

    def __init__(
        self,
        control_url: str,
        *,
        refresh: float = 1.0,
        idle: float = 30.0,
        fetch: Callable[[str], Awaitable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._url = control_url.rstrip("/") + "/api/dashboard"
        self._fetch = fetch or _fetch_in_thread  # injected by tests
        self._refresh = refresh
        self._idle = idle
        self._state: Mapping[str, Any] = {}
        self._asked = -math.inf
        self._wanted = trio.Event()
        self.fetches = 0

    def page_state(self) -> Mapping[str, Any]:
        """`{"now", "devices", "pushes"}` as last fetched; wakes the fetcher up."""
        self._asked = trio.current_time()
        self._wanted.set()
        return self._state

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch while the page is being looked at, until cancelled."""
        task_status.started()
        while True:
            if trio.current_time() - self._asked > self._idle:
                self._wanted = trio.Event()
                await self._wanted.wait()
            try:
                self._state = await self._fetch(self._url)
                self.fetches += 1
            except (OSError, ValueError) as exc:  # the supervisor stopping, or restarting it
                log.debug("simulated phones unavailable at %s: %s", self._url, exc)
            await trio.sleep(self._refresh)


async def _fetch_in_thread(url: str) -> Mapping[str, Any]:
    """GET `url` as a JSON object, in a worker thread (a blocking loopback request)."""
    return await trio.to_thread.run_sync(_get_json, url, abandon_on_cancel=True)


def _get_json(url: str) -> Mapping[str, Any]:
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as answer:
        state = json.loads(answer.read())
    if not isinstance(state, dict):
        raise ValueError("the control API's dashboard is not a JSON object")
    return state
