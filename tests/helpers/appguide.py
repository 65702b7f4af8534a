"""The generated parts of the iOS app guide (`docs/ios-app.md`): the exact pushes an app receives.

The guide's JSON is not written by hand. This module runs the real service, engine and fake APNs
in memory (the same code as `lockstep serve`, on trio's MockClock and a fixed wall clock), sends a
stream of each content type through the service's own calls (start, update, end) and records
every push the first simulated iPhone accepts, headers and payload, as an app would receive it.
Activity ids and tokens, random per run, are replaced by fixed placeholders.

    python -m tests.helpers.appguide --write   # regenerate the blocks in docs/ios-app.md
    python -m tests.helpers.appguide --check   # exit 1 if the guide is out of date

Each block sits between `<!-- generated:NAME -->` and `<!-- /generated -->`;
`tests/integration/test_app_guide.py` fails while the guide differs from what the server sends.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import trio
import trio.testing

from engine.server.contract import metrics, models, push
from simulator.validation import DevicePush
from tests.helpers.servicekit import open_harness
from tests.helpers.simkit import make_kit

GUIDE: Final = Path(__file__).resolve().parents[2] / "docs" / "ios-app.md"
DEVICE: Final = "iphone-1"
_BLOCK = re.compile(r"(<!-- generated:(\w+) -->\n)(.*?)(<!-- /generated -->)", re.DOTALL)

# One stream per content type: (start, update, end) content states, as a backend sends them.
EXAMPLES: Final[dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]] = {
    "segmented_progress": (
        {"title": "Deploy web", "number_of_steps": 4, "current_step": 1, "color": "blue"},
        {
            "title": "Deploy web",
            "number_of_steps": 4,
            "current_step": 3,
            "color": "blue",
            "step_colors": ["green", "green", "green"],
        },
        {
            "title": "Deployed",
            "number_of_steps": 4,
            "current_step": 4,
            "color": "green",
            "auto_dismiss_minutes": 2,
        },
    ),
    "progress": (
        {"title": "Backup", "percentage": 10, "subtitle": "db-1"},
        {"title": "Backup", "percentage": 64.5, "subtitle": "db-1"},
        {"title": "Backup done", "percentage": 100, "color": "green"},
    ),
    "metrics": (
        {
            "title": "web-1",
            "metrics": [
                {"label": "CPU", "value": 9, "unit": "%"},
                {"label": "MEM", "value": "1.2 GB"},
            ],
        },
        {
            "title": "web-1",
            "metrics": [
                {"label": "CPU", "value": 73, "unit": "%", "color": "red"},
                {"label": "MEM", "value": "1.4 GB"},
            ],
        },
        {"title": "web-1 drained", "metrics": [{"label": "CPU", "value": 0, "unit": "%"}]},
    ),
    "stats": (
        {
            "title": "Match",
            "metrics": [{"label": "Home", "value": 0}, {"label": "Away", "value": 0}],
        },
        {
            "title": "Match",
            "metrics": [{"label": "Home", "value": 1}, {"label": "Away", "value": 0}],
        },
        {
            "title": "Full time",
            "metrics": [{"label": "Home", "value": 2}, {"label": "Away", "value": 1}],
        },
    ),
    "value": (
        {"title": "Revenue", "value": "$1,200", "badge": {"title": "LIVE", "color": "red"}},
        {"title": "Revenue", "value": 1350},
        {"title": "Revenue (final)", "value": "$1,500.00"},
    ),
    "alert": (
        {
            "title": "Incident",
            "message": "Database unreachable",
            "color": "red",
            "icon": {"symbol": "exclamationmark.triangle", "color": "red"},
        },
        {"title": "Incident", "message": "Failover in progress", "color": "orange"},
        {"title": "Resolved", "message": "All systems normal", "color": "green"},
    ),
    "timer": (
        {"title": "Pizza", "duration_seconds": 600},
        {"title": "Pizza", "duration_seconds": 600, "is_running": False},
        {"title": "Pizza ready", "duration_seconds": 0},
    ),
}
ACTION: Final = {"title": "Open", "type": "open_url", "url": "https://example.com/deploys/42"}
DEEP_LINK: Final = "https://example.com/deploys/42"


def _decode(cls: type[Any], body: dict[str, Any]) -> Any:
    """A request as the HTTP layer decodes and checks it."""
    return models.decode(cls, json.dumps(body).encode())


class _Catch:
    """A fake-APNs listener keeping what one device accepted."""

    def __init__(self) -> None:
        self.pushes: list[DevicePush] = []

    def on_accepted(self, push: DevicePush, device: str | None) -> None:
        if device == DEVICE:
            self.pushes.append(push)


async def _record() -> dict[str, list[DevicePush]]:
    kit = make_kit(devices=1)
    catch = _Catch()
    kit.apns.listeners.append(catch)
    got: dict[str, list[DevicePush]] = {}
    with tempfile.TemporaryDirectory() as tmp, trio.fail_after(600):
        async with open_harness(kit, Path(tmp) / "db") as h:
            for type_, (start, update, end) in EXAMPLES.items():
                key = f"deploy-42-{type_}"
                first = {**start, "type": type_}
                action = ACTION if type_ == "segmented_progress" else None
                body = {"content_state": first, **({"action": action} if action else {})}
                await h.service.live.stream(key, _decode(models.StreamRequest, body))
                await trio.sleep(5)  # the update token comes back; pacing lets the next go
                body = {"content_state": update}
                await h.service.live.stream(key, _decode(models.StreamRequest, body))
                await trio.sleep(5)
                end_req = _decode(models.StreamDeleteRequest, {"content_state": end})
                await h.service.live.end_stream(key, end_req)
                await trio.sleep(5)
                got[type_] = catch.pushes[:]
                catch.pushes.clear()
            note = {"title": "Deploy web", "message": "v42 is live", "redirection": DEEP_LINK}
            await h.service.notifications.send(_decode(push.PushRequest, note))
            await trio.sleep(5)
            await h.service.badge.update(_decode(push.BadgeRequest, {"badge": 3}))
            await trio.sleep(5)
            metric = _decode(metrics.MetricValueRequest, {"value": 1234.5})
            await h.service.metrics.set_value("revenue.today", metric)
            await trio.sleep(65)  # widget reloads are paced (`[widgets] min_interval`)
            got["app"] = catch.pushes[:]
    return got


def _placeholders(value: Any, ids: dict[str, str]) -> Any:
    """The value with activity ids replaced by stable placeholders."""
    if isinstance(value, dict):
        return {k: _placeholders(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, ids) for v in value]
    if isinstance(value, str) and value[:3] in ("la_", "pn_"):
        same = sum(1 for made in ids.values() if made.startswith(value[:3]))
        return ids.setdefault(value, f"{value[:3]}EXAMPLE{same + 1}")
    return value


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _push(push: DevicePush, ids: dict[str, str]) -> str:
    kind = {"start": "push-to-start token", "update": "update token", "end": "update token"}
    event = push.payload["aps"]["event"]
    head = (
        f"POST /3/device/<{kind[event]}>\napns-push-type: {push.push_type}\n"
        f"apns-topic: {push.topic}\napns-priority: {push.priority}\n\n"
    )
    return head + _dump(_placeholders(push.payload, ids))


def _app_push(push: DevicePush, ids: dict[str, str]) -> str:
    """One push to an app token or widget token, as the request APNs gets (ids as placeholders)."""
    token = "widget token" if push.push_type == "widgets" else "app token"
    head = (
        f"POST /3/device/<{token}>\napns-push-type: {push.push_type}\n"
        f"apns-topic: {push.topic}\napns-priority: {push.priority}\n"
    )
    if push.collapse_id:
        head += f"apns-collapse-id: {_placeholders(push.collapse_id, ids)}\n"
    return head + "\n" + _dump(_placeholders(push.payload, ids))


def blocks() -> dict[str, str]:
    """Every generated block of the guide, by name (fenced, ending in a newline)."""
    recorded = trio.run(_record, clock=trio.testing.MockClock(autojump_threshold=0))
    out: dict[str, str] = {}
    ids: dict[str, str] = {}
    lifecycle = recorded["segmented_progress"]
    events = [p.payload["aps"]["event"] for p in lifecycle]
    assert events[0] == "start" and events[-1] == "end", events
    parts = []
    for n, one in enumerate(lifecycle, 1):
        parts.append(f"{n}. `{one.payload['aps']['event']}`\n\n```http\n{_push(one, ids)}\n```\n")
    out["lifecycle"] = "\n".join(parts)
    app = recorded.pop("app")
    kinds = [(p.push_type, "badge" in p.payload.get("aps", {})) for p in app]
    assert [k for k, _ in kinds] == ["alert", "alert", "widgets"], kinds
    names = ("notification", "badge", "widgets")
    for name, one in zip(names, app, strict=True):
        out[name] = f"```http\n{_app_push(one, ids)}\n```\n"
    states = []
    for type_, pushes in recorded.items():
        shown: list[Any] = []
        for one in pushes:  # the state re-sent to a new update token is shown once
            state = _placeholders(one.payload["aps"]["content-state"], ids)
            if not shown or shown[-1] != state:
                shown.append(state)
        states.append(f"// {type_}: start, update, end\n" + "\n".join(map(_compact, shown)))
    out["content_states"] = "```jsonc\n" + "\n\n".join(states) + "\n```\n"
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def render(text: str, generated: dict[str, str]) -> str:
    """`text` with every generated block replaced by its current content."""

    def swap(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in generated:
            raise KeyError(f"docs/ios-app.md names an unknown generated block {name!r}")
        return match.group(1) + generated[name] + match.group(4)

    return _BLOCK.sub(swap, text)


def main(argv: list[str] | None = None) -> int:
    """`--write` regenerates the guide's blocks; `--check` says whether it is up to date."""
    p = argparse.ArgumentParser(prog="python -m tests.helpers.appguide")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the blocks in place")
    mode.add_argument("--check", action="store_true", help="exit 1 when the guide is stale")
    args = p.parse_args(argv)
    text = GUIDE.read_text()
    fresh = render(text, blocks())
    if args.write:
        GUIDE.write_text(fresh)
        return 0
    if fresh != text:
        print("docs/ios-app.md is out of date: python -m tests.helpers.appguide --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
