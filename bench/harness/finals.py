"""Which final states a run lost: every call's outcome per stream, and what the phones show.

`Ledger` keeps, per stream, each call's value (the values of one stream increase), send and
answer times and status. A call may be a stream's last unless an accepted call of the same
stream began after it was answered (calls of one stream overlap when the server falls behind);
a call cut off at the deadline after its bytes went out may have been stored, so it may be last
too. `verdict` reads the phones through the simulator's control API: a stream not shown, or
shown with a value that cannot be its last, is a **lost final state**; the phones count their
own **order violations**. Both come with a description of the first few cases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench.harness.cluster import Cluster
from bench.harness.loadgen import CallResult

LOST_DETAIL = 10  # cases described in a verdict


@dataclass(slots=True)
class Ledger:
    """Every call of a run per stream: value, sent, done (monotonic), status."""

    calls: dict[str, list[tuple[int, float, float, int]]] = field(default_factory=dict)
    value: int = 0

    def next_value(self) -> int:
        """A value above every earlier one (the values of one stream increase)."""
        self.value += 1
        return self.value

    def add(self, key: str, value: int, result: CallResult) -> None:
        """Remember one call's outcome."""
        self.calls.setdefault(key, []).append((value, result.sent, result.done, result.status))

    def finals(self, key: str) -> dict[int, float]:
        """value -> sent of every call that may be the stream's last (module docstring)."""
        rows = self.calls.get(key, [])
        began = [sent for _, sent, _, status in rows if status == 200]
        out = {}
        for value, sent, done, status in rows:
            maybe = status in (0, -1) and sent > 0  # unanswered: it may have been stored
            if maybe or (status == 200 and not any(done < b for b in began)):
                out[value] = sent
        return out


def verdict(cluster: Cluster, ledger: Ledger, keys: list[str], settle: float) -> dict[str, Any]:
    """Lost final states and order violations, waiting up to `settle` s for the phones; and per
    stream (value shown, wall time its update was applied)."""
    deadline = time.monotonic() + settle
    while True:
        lost, violations = 0, 0
        detail: list[dict[str, Any]] = []
        disorder: list[dict[str, Any]] = []
        applied: dict[str, tuple[int, float | None]] = {}
        live: dict[str, dict[str, Any]] = {}
        for device in cluster.devices():
            for act in device["activities"]:
                if act["state"] in ("active", "stale"):
                    live[act["content_state"].get("title")] = act
                    violations += int(act["order_violations"])
                    if act["order_violations"]:
                        keep = ("title", "subtitle")
                        disorder.append(
                            {
                                "device": device["name"],
                                **{k: act["content_state"].get(k) for k in keep},
                                "order_violations": act["order_violations"],
                                "events": act.get("events", [])[-8:],
                            }
                        )
        for key in keys:
            act = live.get(key)
            finals = ledger.finals(key)
            if act is None:
                lost += 1  # not shown at all
                detail.append({"stream": key, "shown": None, "finals": sorted(finals)})
                continue
            value = int(act["content_state"].get("subtitle") or 0)
            if finals and value not in finals:
                lost += 1
                detail.append(_lost(key, value, finals, ledger, act))
                continue
            applied[key] = (value, _applied_at(act))
        if lost == 0 or time.monotonic() > deadline:
            return {
                "lost": lost,
                "violations": violations,
                "applied": applied,
                "detail": detail[:LOST_DETAIL],
                "disorder": disorder[:LOST_DETAIL],
            }
        time.sleep(0.5)


def _lost(
    key: str, value: int, finals: dict[int, float], ledger: Ledger, act: dict[str, Any]
) -> dict[str, Any]:
    """What is known of one lost final state: shown, possible finals, the stream's last calls
    (value, sent, done, status) and the phone's last events."""
    keep = ("state", "held", "throttled", "delayed", "superseded", "applied", "ignored")
    return {
        "stream": key,
        "shown": value,
        "finals": sorted(finals),
        "calls": ledger.calls.get(key, [])[-4:],
        **{k: act.get(k) for k in keep},
        "events": act.get("events", [])[-4:],
    }


def _applied_at(act: dict[str, Any]) -> float | None:
    """Wall time the shown state was applied: the last `update` event with its timestamp."""
    for event in reversed(act.get("events", [])):
        if event["event"] == "update" and event["timestamp"] == act["last_timestamp"]:
            return float(event["at"])
    return None
