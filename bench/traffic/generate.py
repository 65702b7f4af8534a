"""Generate the shipped traffic files of `bench/traffic/` (seeded: the same seed, the same bytes).

    python -m bench.traffic.generate [--out bench/traffic] [--seed 5] [--check]

- `ci-pipeline.jsonl`: CI runs of three repositories as streams of `segmented_progress`: a burst of
  PUTs at each step (step started, sub-step progress, step done), some runs failing; every run
  ends with a DELETE carrying its final state. Developers' phones subscribe to their repository.
- `fleet-metrics.jsonl`: twenty servers in five groups PUT `metrics` every second for a minute;
  one has an incident (its stream turns into an `alert`, then back, each a rotation); at the end
  half of them are drained (DELETE). One on-call phone per group.
- `agent-runs.jsonl`: AI-agent runs started, updated and ended by id (segmented progress, an
  `alert`-type state while a run waits for approval or has failed, request-level alerts at the
  moments that matter), next to streams: an overview (`stats`), a research timer and a spend
  readout (`value`).

Each file starts with a header line naming the devices and their channels (see
`bench.traffic.format`). No device gets more than five activities in a file (iOS shows five live
ones at most), so compressing a file in a fast replay cannot push starts over that limit, and every
body is checked with the API's own decoder: a replay must end with every final state shown.
`--check` verifies that the files on disk are what this script generates.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.traffic.format import (
    DeviceSpec,
    Route,
    call_line,
    dump_lines,
    header_line,
    parse_traffic,
)
from engine.server.contract import models

__all__ = ["FILES", "build_all", "main"]

API: Final = "/api/live-activity"
DEFAULT_SEED: Final = 5
MAX_ACTIVITIES: Final = 5  # activities a device gets in one file: never over iOS's 5 live ones


@dataclass(slots=True)
class _Builder:
    """Collects call lines and checks the per-device activity budget."""

    devices: tuple[DeviceSpec, ...]
    lines: list[dict[str, Any]] = field(default_factory=list)
    activities: dict[str, int] = field(default_factory=dict)  # device -> activities started
    _ids: int = 0

    def _count(self, channels: Sequence[str]) -> None:
        wanted = set(channels)
        for d in self.devices:
            if not wanted or wanted & set(d.channels):
                self.activities[d.name] = self.activities.get(d.name, 0) + 1

    def put(self, t: float, key: str, body: dict[str, Any], *, starts: bool = False) -> None:
        if starts:
            self._count(body.get("channels") or ())
        self.lines.append(
            call_line(t, "PUT", f"{API}/stream/{key}", body, self._new_id() if starts else None)
        )

    def delete(self, t: float, key: str, body: dict[str, Any] | None) -> None:
        self.lines.append(call_line(t, "DELETE", f"{API}/stream/{key}", body))

    def start(self, t: float, body: dict[str, Any]) -> str:
        self._count(body.get("target", {}).get("channels") or ())
        activity_id = self._new_id()
        self.lines.append(call_line(t, "POST", f"{API}/start", body, activity_id))
        return activity_id

    def by_id(self, t: float, route: str, activity_id: str, body: dict[str, Any]) -> None:
        self.lines.append(
            call_line(t, "POST", f"{API}/{route}", {"activity_id": activity_id, **body})
        )

    def _new_id(self) -> str:
        self._ids += 1
        return f"la_rec{self._ids:05d}"


# -- CI pipeline ------------------------------------------------------------------------------

_REPOS: Final = (
    (
        "api",
        (
            "checkout",
            "install",
            "lint",
            "unit tests",
            "integration tests",
            "build image",
            "deploy staging",
        ),
    ),
    ("web", ("checkout", "install", "typecheck", "unit tests", "bundle", "deploy preview")),
    (
        "mobile",
        ("checkout", "pods", "lint", "unit tests", "ui tests", "archive", "testflight", "notify"),
    ),
)
_BRANCHES: Final = ("main", "fix/login-timeout", "feat/dark-mode", "chore/deps", "release/2.4")


def _ci_state(title: str, steps: int, current: int, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "type": "segmented_progress",
        "number_of_steps": steps,
        "current_step": current,
        **extra,
    }


def _ci_run(
    b: _Builder, rng: random.Random, repo: str, steps: Sequence[str], run: int, t: float
) -> float:
    """One pipeline run from `t`; returns when it ended."""
    key, title, n = f"ci-{repo}-{run}", f"{repo} #{run}", len(steps)
    branch = rng.choice(_BRANCHES)
    b.put(
        t,
        key,
        {
            "content_state": _ci_state(title, n, 0, subtitle=f"{branch}: queued", color="blue"),
            "channels": [repo],
            "alert": {"title": f"{title} started", "body": branch},
        },
        starts=True,
    )
    fails_at = rng.randrange(2, n) if rng.random() < 0.25 else None
    begun = t
    for i, step in enumerate(steps):
        t += rng.uniform(1.0, 3.0)
        done = ["green"] * i
        b.put(
            t,
            key,
            {
                "content_state": _ci_state(
                    title, n, i, subtitle=step, color="blue", step_color="yellow", step_colors=done
                )
            },
        )
        for k in range(rng.randrange(0, 3)):  # sub-step progress, a burst within a second
            t += rng.uniform(0.1, 0.4)
            state = _ci_state(title, n, i, subtitle=f"{step} {k + 1}/3", step_colors=done)
            if rng.random() < 0.5:
                del state["type"]  # the stream keeps its type
            b.put(t, key, {"content_state": state})
        t += rng.uniform(5.0, 40.0)
        if i == fails_at:
            b.put(
                t,
                key,
                {
                    "content_state": _ci_state(
                        title,
                        n,
                        i,
                        subtitle=f"{step} failed",
                        color="red",
                        step_color="red",
                        step_colors=done,
                    )
                },
            )
            t += rng.uniform(0.2, 0.8)
            b.delete(
                t,
                key,
                {
                    "content_state": _ci_state(
                        title,
                        n,
                        i,
                        subtitle=f"failed at {step}",
                        color="red",
                        step_color="red",
                        step_colors=done,
                        auto_dismiss_minutes=30,
                    )
                },
            )
            return t
        b.put(
            t,
            key,
            {
                "content_state": _ci_state(
                    title,
                    n,
                    i + 1,
                    subtitle=f"{step} done",
                    color="blue",
                    step_colors=[*done, "green"],
                )
            },
        )
    t += rng.uniform(0.2, 1.0)
    minutes, seconds = divmod(int(t - begun), 60)
    b.delete(
        t,
        key,
        {
            "content_state": _ci_state(
                title,
                n,
                n,
                subtitle=f"passed in {minutes}m {seconds}s",
                color="green",
                step_colors=["green"] * n,
                auto_dismiss_minutes=rng.choice([0, 5, 60]),
            )
        },
    )
    return t


def ci_pipeline(rng: random.Random) -> tuple[dict[str, Any], _Builder]:
    """CI runs: four per repository (so a device never has more than four live)."""
    devices = (
        DeviceSpec("dev-api", ("api",)),
        DeviceSpec("oncall", ("api",)),
        DeviceSpec("dev-web", ("web",)),
        DeviceSpec("dev-mobile", ("mobile",)),
    )
    b = _Builder(devices)
    for r, (repo, steps) in enumerate(_REPOS):
        t = 5.0 + 20.0 * r
        for run in range(1, 5):
            end = _ci_run(b, rng, repo, steps, 100 + 10 * r + run, t)
            t = max(t + rng.uniform(40.0, 120.0), end - rng.uniform(0.0, 60.0))
    header = header_line(
        "ci-pipeline",
        "CI runs of three repositories: segmented_progress "
        "streams with bursts of step updates, some failing, all ending",
        devices,
    )
    return header, b


# -- fleet metrics ----------------------------------------------------------------------------

_GROUPS: Final = ("web", "api", "db", "cache", "queue")


def _metrics(name: str, cpu: int, mem: int, rps: int, **extra: Any) -> dict[str, Any]:
    cpu_color = "red" if cpu >= 85 else "orange" if cpu >= 70 else "green"
    return {
        "title": name,
        "type": "metrics",
        "metrics": [
            {"label": "CPU", "value": cpu, "unit": "%", "color": cpu_color},
            {"label": "MEM", "value": mem, "unit": "%"},
            {"label": "RPS", "value": rps},
        ],
        **extra,
    }


def fleet_metrics(rng: random.Random) -> tuple[dict[str, Any], _Builder]:
    """Twenty servers report every second for a minute; one incident; half drained at the end."""
    devices = tuple(DeviceSpec(f"oncall-{g}", (g,)) for g in _GROUPS)
    b = _Builder(devices)
    servers = [(f"{g}-{i}", g) for g in _GROUPS for i in range(1, 5)]
    load = {
        name: [rng.randint(15, 60), rng.randint(30, 70), rng.randint(200, 2000)]
        for name, _ in servers
    }
    offset = {name: rng.uniform(0.0, 1.0) for name, _ in servers}
    incident, alert_from, alert_to = "cache-2", 20, 40
    for second in range(60):
        for name, group in servers:
            t = second + offset[name]
            cpu, mem, rps = load[name]
            load[name] = [
                min(99, max(1, cpu + rng.randint(-6, 6))),
                min(99, max(5, mem + rng.randint(-2, 2))),
                max(0, rps + rng.randint(-150, 150)),
            ]
            if name == incident and alert_from <= second < alert_to:
                if second == alert_from:
                    b.put(
                        t,
                        name,
                        {
                            "content_state": {
                                "title": name,
                                "type": "alert",
                                "color": "red",
                                "message": "evictions spiking: memory 97%",
                            },
                            "channels": [group],
                            "alert": {"title": f"{name} incident", "body": "memory pressure"},
                        },
                        starts=True,
                    )
                continue
            body: dict[str, Any] = {"content_state": _metrics(name, cpu, mem, rps)}
            if second == 0 or (name == incident and second == alert_to):
                body["channels"] = [group]
            b.put(t, name, body, starts=second == 0 or (name == incident and second == alert_to))
    for name, _ in servers:
        if name[-1] in "12":
            _, mem, _ = load[name]
            b.delete(
                60.5 + offset[name],
                name,
                {
                    "content_state": _metrics(
                        name, 0, mem, 0, subtitle="drained", auto_dismiss_minutes=10
                    )
                },
            )
    header = header_line(
        "fleet-metrics",
        "twenty servers sending metrics every second for a "
        "minute, one incident (alert rotation), half drained at the end",
        devices,
    )
    return header, b


# -- agent runs -------------------------------------------------------------------------------

_TASKS: Final = (
    "fix flaky checkout test",
    "upgrade ORM to 3.x",
    "add rate limiting",
    "triage nightly failures",
    "write migration for invoices",
    "refactor auth",
    "summarise incident 4471",
    "port CLI to typer",
    "reduce bundle size",
    "backfill search index",
)
_PHASES: Final = ("plan", "read code", "edit", "run tests", "open PR")


def _agent_run(b: _Builder, rng: random.Random, owner: str, task: str, t: float) -> float:
    title, n = f"Agent: {task}", len(_PHASES)
    aid = b.start(
        t,
        {
            "content_state": {
                "title": title,
                "subtitle": "planning",
                "type": "segmented_progress",
                "number_of_steps": n,
                "current_step": 0,
                "color": "purple",
            },
            "target": {"channels": [owner]},
            "alert": {"title": "Agent started", "body": task},
            "metadata": {"owner": owner},
            "tags": ["agent"],
        },
    )
    approval = rng.random() < 0.4
    fails = rng.random() < 0.2
    for i, phase in enumerate(_PHASES):
        for call in range(rng.randrange(1, 4)):  # tool calls: partial updates by id
            t += rng.uniform(2.0, 12.0)
            b.by_id(
                t,
                "update",
                aid,
                {
                    "content_state": {
                        "title": title,
                        "subtitle": f"{phase}: step {call + 1}",
                        "current_step": i,
                    }
                },
            )
        if approval and phase == "edit":
            t += rng.uniform(1.0, 4.0)
            b.by_id(
                t,
                "update",
                aid,
                {
                    "content_state": {
                        "title": title,
                        "type": "alert",
                        "color": "orange",
                        "message": "needs approval: apply the schema change?",
                    },
                    "alert": {"title": "Approval needed", "body": task},
                },
            )
            t += rng.uniform(10.0, 40.0)
            b.by_id(
                t,
                "update",
                aid,
                {
                    "content_state": {
                        "title": title,
                        "type": "segmented_progress",
                        "number_of_steps": n,
                        "current_step": i,
                        "subtitle": "approved",
                        "color": "purple",
                    },
                    "alert": {"title": "Approved", "body": task},
                },
            )
        if fails and phase == "run tests":
            t += rng.uniform(2.0, 6.0)
            b.by_id(
                t,
                "end",
                aid,
                {
                    "content_state": {
                        "title": title,
                        "type": "alert",
                        "color": "red",
                        "message": f"tests failed in phase {phase}",
                        "auto_dismiss_minutes": 15,
                    },
                    "alert": {"title": "Agent failed", "body": task},
                },
            )
            return t
    t += rng.uniform(2.0, 8.0)
    b.by_id(
        t,
        "end",
        aid,
        {
            "content_state": {
                "title": title,
                "subtitle": f"PR #{rng.randint(1000, 9999)} opened",
                "current_step": n,
                "color": "green",
                "auto_dismiss_minutes": rng.choice([0, 5]),
            },
            "alert": {"title": "Agent finished", "body": task},
        },
    )
    return t


def agent_runs(rng: random.Random) -> tuple[dict[str, Any], _Builder]:
    """Agent runs by id per owner, beside an overview, a research timer and a spend readout."""
    devices = (
        DeviceSpec("alice", ("alice", "research")),
        DeviceSpec("bob", ("bob",)),
        DeviceSpec("carol", ("carol", "finance")),
    )
    b = _Builder(devices)
    runs: list[tuple[float, float]] = []
    tasks = iter(_TASKS)
    for owner, count in (("alice", 3), ("bob", 4), ("carol", 3)):
        t = rng.uniform(2.0, 30.0)
        for _ in range(count):
            end = _agent_run(b, rng, owner, next(tasks), t)
            runs.append((t, end))
            t += rng.uniform(30.0, 150.0)
    horizon = max(end for _, end in runs)
    b.put(0.5, "agents-overview", {"content_state": _overview(runs, 0.5)}, starts=True)
    for moment in sorted({s for s, _ in runs} | {e for _, e in runs}):
        b.put(moment + 0.05, "agents-overview", {"content_state": _overview(runs, moment + 0.05)})
    b.delete(horizon + 2.0, "agents-overview", {"content_state": _overview(runs, horizon + 2.0)})
    research = {
        "title": "Deep research: vector DB options",
        "type": "timer",
        "duration_seconds": 1800,
        "counts_down": True,
    }
    b.put(
        1.0,
        "research-deep-dive",
        {"content_state": {**research, "is_running": True}, "channels": ["research"]},
        starts=True,
    )
    b.put(
        180.0,
        "research-deep-dive",
        {"content_state": {**research, "is_running": False, "subtitle": "waiting for sources"}},
    )
    b.put(
        260.0,
        "research-deep-dive",
        {"content_state": {**research, "is_running": True, "subtitle": "reading 14 papers"}},
    )
    spend = 0.0
    for k, moment in enumerate(range(3, int(horizon), 30)):
        spend += rng.uniform(0.2, 2.5)
        b.put(
            float(moment),
            "agents-spend",
            {
                "content_state": {
                    "title": "Agent spend today",
                    "type": "value",
                    "value": f"${spend:,.2f}",
                    "color": "orange" if spend > 20 else "green",
                },
                "channels": ["finance"],
            },
            starts=k == 0,
        )
    b.lines.sort(key=lambda line: line["t"])
    header = header_line(
        "agent-runs",
        "AI-agent runs by id (progress, approvals as alert "
        "states, request-level alerts) beside overview, timer and spend streams",
        devices,
    )
    return header, b


def _overview(runs: Sequence[tuple[float, float]], at: float) -> dict[str, Any]:
    running = sum(1 for s, e in runs if s <= at < e)
    done = sum(1 for _, e in runs if e <= at)
    return {
        "title": "Agents",
        "type": "stats",
        "metrics": [
            {"label": "running", "value": running},
            {"label": "done", "value": done},
            {"label": "queued", "value": len(runs) - running - done},
        ],
    }


# -- files ------------------------------------------------------------------------------------

FILES: Final[dict[str, Callable[[random.Random], tuple[dict[str, Any], _Builder]]]] = {
    "ci-pipeline.jsonl": ci_pipeline,
    "fleet-metrics.jsonl": fleet_metrics,
    "agent-runs.jsonl": agent_runs,
}


def _validate(name: str, header: dict[str, Any], b: _Builder) -> None:
    """Every body decodes as the API would; no device gets more activities than it can show."""
    kinds: dict[Route, type[Any]] = {
        Route.STREAM_PUT: models.StreamRequest,
        Route.STREAM_END: models.StreamDeleteRequest,
        Route.START: models.StartRequest,
        Route.UPDATE: models.UpdateRequest,
        Route.END: models.EndRequest,
    }
    traffic = parse_traffic([json.dumps(header)] + [json.dumps(x) for x in b.lines], name=name)
    for call in traffic.calls:
        models.decode(kinds[call.route], json.dumps(call.body).encode())
    # The fleet's incident adds two rotations 20 s apart on one device: each rotation ends the
    # activity it replaces, so at most five are live at once unless a replay runs the file more
    # than about 10x faster than recorded.
    allowed = MAX_ACTIVITIES + (2 if name == "fleet-metrics.jsonl" else 0)
    busiest = max(b.activities.values(), default=0)
    if busiest > allowed:
        raise AssertionError(f"{name}: a device gets {busiest} activities, more than {allowed}")


def _renumber(lines: list[dict[str, Any]]) -> None:
    """Recorded ids in order of first appearance (files read better that way)."""
    names: dict[str, str] = {}

    def rename(old: str) -> str:
        return names.setdefault(old, f"la_rec{len(names) + 1:05d}")

    for line in lines:
        if "activity_id" in line:
            line["activity_id"] = rename(line["activity_id"])
        body = line["body"]
        if isinstance(body, dict) and "activity_id" in body:
            line["body"] = {**body, "activity_id": rename(body["activity_id"])}


def build_all(seed: int = DEFAULT_SEED) -> dict[str, str]:
    """Every file's text, by file name."""
    out = {}
    for index, (name, build) in enumerate(FILES.items()):
        header, b = build(random.Random(f"{seed}:{index}"))
        b.lines.sort(key=lambda line: line["t"])
        _renumber(b.lines)
        _validate(name, header, b)
        out[name] = dump_lines([header, *b.lines])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or `--check`) the traffic files."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.traffic.generate",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    stale = []
    for name, text in build_all(args.seed).items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.write_text(text, encoding="utf-8")
        print(f"{path}: {text.count(chr(10)) - 1} calls, {len(text.encode()) // 1024} KB")
    if stale:
        print(
            f"out of date: {', '.join(stale)} (run python -m bench.traffic.generate)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
