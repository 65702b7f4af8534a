"""What the `lockstep serve --workers N` supervisor tells each worker, and what a worker answers.

The supervisor (engine/server/workers.py) starts each worker as `lockstep serve` with the same
flags and one extra variable, `LOCKSTEP_WORKER`: a JSON object (`WorkerLink`) naming the worker's
index, the descriptors it inherited and, in simulate mode, the simulator the supervisor runs for
all workers (`SimulatorLink`). Its node id comes the ordinary way, in `LOCKSTEP_NODE_ID`
(`Settings.node_id`). Descriptors travel by number because they are inherited (`pass_fds`):

* `listen_fd`: the listening socket to serve (engine/server/listen.py).
* `ready_fd`: the write end of a pipe; the worker writes one line once it serves and closes it,
  so the supervisor knows it started (an exit before that line is a start-up failure).
* `lifeline_fd`: the read end of a pipe whose write end only the supervisor holds: it reads as
  end-of-file once the supervisor is gone, however it went (even SIGKILL), and the worker then
  stops as on SIGTERM instead of serving on as an orphan.

No key or token travels here: the workers read the keys from the same state directory the
supervisor made them in, and the simulator's signing key is a file path.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = ["WORKER_ENV", "SimulatorLink", "WorkerLink", "report_ready"]

WORKER_ENV: Final = "LOCKSTEP_WORKER"
"""The variable holding a worker's `WorkerLink` (JSON); set only by the supervisor."""

READY: Final = b"ready\n"


@dataclass(frozen=True, slots=True)
class SimulatorLink:
    """The simulator the supervisor runs in simulate mode: an APNs every worker connects to."""

    host: str
    port: int
    ca_file: str
    key_path: str
    key_id: str
    team_id: str
    bundle_id: str
    control_url: str | None


@dataclass(frozen=True, slots=True)
class WorkerLink:
    """One worker's part: see the module docstring."""

    index: int
    listen_fd: int
    ready_fd: int
    lifeline_fd: int
    simulator: SimulatorLink | None = None

    def encode(self) -> str:
        """The value of `LOCKSTEP_WORKER`."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> WorkerLink:
        """Parse `LOCKSTEP_WORKER`; ValueError when it is not one (set by hand, or garbled)."""
        try:
            data: Any = json.loads(text)
            sim = data.pop("simulator", None)
            return cls(**data, simulator=SimulatorLink(**sim) if sim is not None else None)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{WORKER_ENV} is not a worker description: {exc}") from None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerLink | None:
        """This process's link, or None when it is not a supervised worker."""
        text = (os.environ if env is None else env).get(WORKER_ENV)
        return cls.decode(text) if text else None


def report_ready(link: WorkerLink) -> None:
    """Tell the supervisor this worker serves (once; the pipe is closed after)."""
    try:
        os.write(link.ready_fd, READY)
    finally:
        os.close(link.ready_fd)
