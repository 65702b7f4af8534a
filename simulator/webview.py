"""What the lock screens page (webui) reads from a simulator: phones and push log.

`page_state(apns, now)` is the simulator's half of `GET /api/dashboard`, on the control port of
`lockstep simulator` and, through the embedded simulator, on the API port of `lockstep serve`:

    {"now": number,                  # the simulator's wall time (unix seconds)
     "devices": [device snapshot],   # simulator/devices.py's shape, without logs and tokens
     "pushes": [push record]}        # the newest PUSHES_SHOWN of the push log, oldest first,
                                     # without their tokens

The per-activity and per-device event logs are left out: the page polls about once a second and
draws the push timeline from the push log instead (`GET /devices` still has the logs). So are the
device tokens: the page draws none, and what it is not given cannot leak from a browser.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

from simulator.apns import FakeApns

__all__ = ["PUSHES_SHOWN", "page_state"]

PUSHES_SHOWN: Final = 200
"""How many of the newest pushes the page gets (it groups them by device)."""

_HEAVY: Final = frozenset({"events", "app_events", "calls", "stored"})
_TOKENS: Final = frozenset({"token", "push_to_start_token", "tokens"})


def _light(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without its logs (their lengths stay, as `<key>_count`) and tokens."""
    out = {k: v for k, v in item.items() if k not in _HEAVY and k not in _TOKENS}
    for key in _HEAVY & item.keys():
        value = item[key]
        out[key + "_count"] = len(value) if isinstance(value, list) else 0
    return out


def page_state(apns: FakeApns, now: float, *, pushes: int = PUSHES_SHOWN) -> dict[str, Any]:
    """The simulator's part of the page's view as of `now` (time-based transitions applied)."""
    apns.tick(now)
    devices = []
    for device in apns.registry.snapshot(now):
        light = _light(device)
        light["activities"] = [_light(a) for a in device.get("activities", ())]
        devices.append(light)
    newest = list(itertools.islice(reversed(apns.log), pushes))
    return {
        "now": now,
        "devices": devices,
        "pushes": [_light(record.to_json()) for record in reversed(newest)],
    }
