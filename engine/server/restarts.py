"""When the `lockstep serve --workers N` supervisor restarts a worker that died, and when it stops.

Pure bookkeeping, no clock reads and no I/O (the supervisor, engine/server/workers.py, passes
`now`, a monotonic time in seconds), so the rules are tested without processes:

* A worker that dies is restarted after a delay that doubles with each death since it last
  reached "ready" (`base_delay`, 2x, 4x, ... at most `max_delay`): a worker that crashes once
  after hours comes back at once; one that cannot start backs off instead of spinning.
* More than `max_restarts` deaths of one worker within `window` seconds means it will not stay
  up: the supervisor gives up on the whole server (and says so) rather than flap forever; a
  service manager (systemd's `Restart=on-failure`) then sees the failure.
* A worker that dies before it was ever ready, during the first start, is a start-up failure:
  no restart (its own message says what is wrong, e.g. the database does not answer).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["GiveUp", "Restart", "RestartPolicy"]


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the worker again after `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop every worker and exit non-zero; `reason` says why, in words."""

    reason: str


@dataclass(slots=True)
class _History:
    deaths: deque[float] = field(default_factory=deque)  # times of deaths within the window
    since_ready: int = 0  # deaths since the worker last reported ready
    ever_ready: bool = False


class RestartPolicy:
    """The restart rules of the module docstring, per worker index."""

    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        max_restarts: int = 5,
        window: float = 60.0,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if max_restarts < 0 or window <= 0:
            raise ValueError("need max_restarts >= 0 and window > 0")
        self._base = base_delay
        self._max = max_delay
        self._max_restarts = max_restarts
        self._window = window
        self._workers: dict[int, _History] = {}

    def ready(self, index: int) -> None:
        """Worker `index` started serving: its next death restarts it after `base_delay`."""
        history = self._history(index)
        history.ever_ready = True
        history.since_ready = 0

    def died(self, index: int, now: float, how: str) -> Restart | GiveUp:
        """Worker `index` exited at `now` (`how`: "exit status 1", "signal SIGKILL"...)."""
        history = self._history(index)
        name = f"worker {index}"
        if not history.ever_ready:
            return GiveUp(f"{name} failed to start ({how})")
        deaths = history.deaths
        deaths.append(now)
        while deaths and deaths[0] <= now - self._window:
            deaths.popleft()
        if len(deaths) > self._max_restarts:
            return GiveUp(
                f"{name} died {len(deaths)} times within {self._window:g} s (last: {how}); "
                "giving up"
            )
        delay = min(self._base * 2**history.since_ready, self._max)
        history.since_ready += 1
        return Restart(delay)

    def _history(self, index: int) -> _History:
        history = self._workers.get(index)
        if history is None:
            history = self._workers[index] = _History()
        return history
