"""The readable side of the results: one rich table per scenario, the machine, the verdicts.

`headline(record)` picks the figures a reader looks for first (the JSON line keeps them all);
`invariant_failures(records)` lists what must be zero and is not (lost final states, order
violations); `render(records, console)` prints it all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(summary: dict[str, Any], key: str) -> str:
    value = summary.get(key)
    return "-" if value is None else f"{value:.2f}"


def _raw(f: dict[str, Any]) -> dict[str, str]:
    if "pushes_per_s_ratio" in f:
        return {
            "pushes/s": f"{f['pushes_per_s_ratio']:.2f}x",
            "client µs/push": f"{f['client_cpu_per_push_ratio']:.3f}x",
            "sink µs/push": "",
        }
    return {
        "pushes/s": f"{f['pushes_per_s']:,.0f}",
        "client µs/push": f"{f['client_cpu_us_per_push']:.1f}",
        "sink µs/push": f"{f['sink_cpu_us_per_push']:.2f}",
    }


def _latency(f: dict[str, Any]) -> dict[str, str]:
    lat = f["latency_ms"]
    return {
        "offered/s": f"{f['offered_rate']:,.0f}",
        "achieved/s": f"{f['achieved_rate']:,.0f}",
        "p50 ms": _ms(lat, "p50"),
        "p90 ms": _ms(lat, "p90"),
        "p99 ms": _ms(lat, "p99"),
        "max ms": _ms(lat, "max"),
        "p99 from due ms": _ms(f["latency_from_due_ms"], "p99"),
        "unanswered": str(f.get("calls_unanswered", "-")),
        "failed": str(f["calls_failed"] - f.get("calls_unanswered", 0)),
        "no push": str(f["calls_without_push"]),
        "server µs/call": f"{f['server_cpu_us_per_call']:.0f}",
    }


def _sequential(f: dict[str, Any]) -> dict[str, str]:
    reply = f["reply_ms"]
    return {
        "calls": f"{f['calls_ok']}/{f['calls']}",
        "calls/s": f"{f['calls_per_s']:,.1f}",
        "p50 ms": _ms(reply, "p50"),
        "p99 ms": _ms(reply, "p99"),
        "max ms": _ms(reply, "max"),
        "pushes": str(f["pushes"]),
        "lost": str(f["lost_final_states"]),
        "order viol.": str(f["order_violations"]),
    }


def _burst(f: dict[str, Any]) -> dict[str, str]:
    reply = f["reply_ms"]
    return {
        "calls/s": f"{f['calls_per_s']:,.0f}",
        "p50 ms": _ms(reply, "p50"),
        "p99 ms": _ms(reply, "p99"),
        "server µs/call": f"{f['server_cpu_us_per_call']:.0f}",
        "calls/commit": str(f["calls_per_commit"]),
        "failed": str(f["calls_failed"]),
        "lost": str(f["lost_final_states"]),
        "order viol.": str(f["order_violations"]),
    }


def _storm(f: dict[str, Any]) -> dict[str, str]:
    d = f["last_update_to_device_s"]
    return {
        "streams": f"{f['streams']:,}",
        "offered upd/s": f"{f['offered_updates_per_s']:,.0f}",
        "achieved upd/s": f"{f['achieved_updates_per_s']:,.0f}",
        "pushes": f"{f['pushes']:,}",
        "coalescing": f"x{f['coalescing_ratio']}",
        "max push/s/act": str(f["max_pushes_per_s_per_activity"]),
        "last→device p99 s": str(d["p99"]),
        "max s": str(d["max"]),
        "lost": str(f["devices"]["lost"]),
        "order viol.": str(f["devices"]["order_violations"]),
        "RSS max MB": str(f["rss_mb"]["max"]),
    }


def _scale(f: dict[str, Any]) -> dict[str, str]:
    return {
        "activities": f"{f['activities']:,}",
        "B/activity": str(f["bytes_per_activity"]),
        "start-up s": str(f["startup_s"]),
        "recovery s": str(f.get("recovery_s", "-")),
        "re-queued": f"{f['recovered_pushes']:,}",
        "B/activity + lanes": str(f.get("bytes_per_activity_with_lanes", "-")),
    }


def _soak(f: dict[str, Any]) -> dict[str, str]:
    u = f["updates"]
    return {
        "calls/s": f"{u['achieved_rate']:,.0f}/{u['offered_rate']:,.0f}",
        "p99 ms": _ms(u["latency_ms"], "p99"),
        "finals": f"{f['finals_delivered']}/{f['finals_expected']}",
        "lost": str(f["lost_final_states"]),
        "order viol.": str(f["order_violations"]),
        "unregistered": str(f["finals_unregistered"]),
        "faults": str(sum(f["faults_injected"].values())),
        "settle s": str(f["settle_s"]),
    }


def _scale_out(f: dict[str, Any]) -> dict[str, str]:
    if "ratio" in f:  # the summary line: calls/s per process count and their ratio
        return {"calls/s": str(f["calls_per_s"]), "ratio": f"x{f['ratio']}"}
    if "calls_per_s" in f:
        busy = f["cpu_cores_busy"]
        return {
            "workers": str(f["workers"]),
            "calls/s": f"{f['calls_per_s']:,.0f}",
            "p50 ms": _ms(f["reply_ms"], "p50"),
            "p99 ms": _ms(f["reply_ms"], "p99"),
            "cores: workers/sim/pg/gen/all": (
                f"{busy['workers']}/{busy['supervisor']}/{busy['postgres']}/"
                f"{busy['generator']}/{busy['machine']}"
            ),
            "lost": str(f["lost_final_states"]),
            "order viol.": str(f["order_violations"]),
        }
    d = f["last_update_to_device_ms"]
    return {
        "workers": str(f["workers"]),
        "upd/s": f"{f['updates_per_s']:,.0f}/{f['updates_offered_per_s']:,.0f}",
        "last→device p99 ms": str(d["p99"]),
        "max ms": str(d["max"]),
        "lost": str(f["lost_final_states"]),
        "order viol.": str(f["order_violations"]),
    }


_HEADLINES = {
    "raw": _raw,
    "latency": _latency,
    "sequential": _sequential,
    "burst": _burst,
    "storm": _storm,
    "scale": _scale,
    "soak": _soak,
    "scale-out": _scale_out,
}


def headline(rec: dict[str, Any]) -> dict[str, str]:
    """The columns shown for one result line."""
    pick = _HEADLINES.get(rec["scenario"])
    if pick is None:
        return {"figures": str(rec["figures"])[:80]}
    return pick(rec["figures"])


def invariant_failures(records: Iterable[dict[str, Any]]) -> list[str]:
    """What must be zero and is not: lost final states and order violations."""
    out = []
    for rec in records:
        f = rec["figures"]
        scale_out = rec["scenario"] == "scale-out" and "lost_final_states" in f  # not the ratio
        if rec["scenario"] in ("soak", "sequential", "burst") or scale_out:
            lost, bad = f["lost_final_states"], f["order_violations"]
        elif rec["scenario"] == "storm":
            lost, bad = f["devices"]["lost"], f["devices"]["order_violations"]
        else:
            continue
        if lost or bad:
            out.append(
                f"{rec['scenario']} ({rec['measurement']}): {lost} lost final states, "
                f"{bad} order violations"
            )
    return out


def render(records: list[dict[str, Any]], console: Console) -> None:
    """Machine line, then one table per scenario, then what each measured and the notes."""
    if not records:
        return
    m = records[0]["machine"]
    cores = records[0]["cores"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    console.print(
        f"[bold]machine[/]: {m['cores']} cores ({m['cpu_model']}), Python {m['python']}"
        f", {versions}; commit {(m['commit'] or 'unknown')[:12]}"
    )
    console.print(
        f"[bold]pinning[/]: engine core {cores['engine_core']}, simulator core "
        f"{cores['simulator_core']}, load generator core {cores['generator_core']}"
    )
    for scenario in dict.fromkeys(r["scenario"] for r in records):
        rows = [r for r in records if r["scenario"] == scenario]
        heads = [headline(r) for r in rows]
        columns = list(dict.fromkeys(k for h in heads for k in h))
        table = Table(title=f"{scenario} ({rows[0]['settings'].get('size', '?')})")
        table.add_column("measurement")
        for col in columns:
            table.add_column(col, justify="right")
        for rec, head in zip(rows, heads, strict=True):
            table.add_row(rec["measurement"], *(head.get(c, "") for c in columns))
        console.print(table)
        console.print(f"  measured: {rows[0]['measured']}")
        for note in dict.fromkeys(n for r in rows for n in r["notes"]):
            console.print(f"  note: {note}")
    for failure in invariant_failures(records):
        console.print(f"[bold red]INVARIANT BROKEN[/]: {failure}")
