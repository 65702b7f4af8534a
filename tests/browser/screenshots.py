"""The README's screenshots, taken with the headless browser: `python -m tests.browser.screenshots`.

Starts a simulate-mode server with three simulated iPhones (free ports, a temporary state
directory), sends a few calls through the API as a backend would (a deploy, a backup, a server's
metrics, an alert with buttons, a timer, and a job that ended), takes one phone offline, and
writes into docs/screenshots/ (or `--out DIR`):

- `lock-screens.png`: the page of `lockstep serve` (phones and the server's view);
- `terminal-80x24.png`: `lockstep devices` in an 80×24 terminal (rich's SVG export, drawn by the
  same browser).

Needs the system Chromium (tests/helpers/browserkit.py).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from rich.console import Console

from simulator.viewfit import fit
from tests.helpers.browserkit import log_in, open_page, require_chromium, send
from tests.helpers.serverkit import LiveServer, http_json, simulate_settings, wait_until

BUTTONS = {
    "action": {"title": "Open logs", "type": "open_url", "url": "https://example.com/deploys/42"},
    "secondary_action": {"title": "Roll back", "type": "webhook", "url": "https://example.com/rb"},
}
SCENE: list[tuple[str, dict[str, object]]] = [
    (
        "nightly-etl",
        {
            "content_state": {
                "title": "Nightly ETL",
                "type": "value",
                "value": "done",
                "color": "gray",
            }
        },
    ),
    (
        "prod-web-1",
        {
            "content_state": {
                "title": "Server Health",
                "subtitle": "prod-web-1",
                "type": "metrics",
                "icon": {"symbol": "server.rack", "color": "cyan"},
                "color": "cyan",
                "metrics": [
                    {"label": "CPU", "value": 38, "unit": "%"},
                    {"label": "MEM", "value": 71, "unit": "%", "color": "yellow"},
                    {"label": "p95", "value": 212, "unit": "ms", "color": "red"},
                ],
            }
        },
    ),
    (
        "backup",
        {
            "content_state": {
                "title": "Backup",
                "type": "progress",
                "percentage": 64,
                "color": "green",
            }
        },
    ),
    (
        "oven",
        {
            "content_state": {
                "title": "Pizza",
                "type": "timer",
                "duration_seconds": 720,
                "color": "orange",
                "icon": {"symbol": "timer"},
            }
        },
    ),
    (
        "disk",
        {
            "content_state": {
                "title": "Disk almost full",
                "type": "alert",
                "message": "db-2: /var at 91%",
                "color": "red",
                "icon": {"symbol": "exclamationmark.triangle", "color": "red"},
                "badge": {"title": "P1", "color": "red"},
            },
            "secondary_action": {"title": "Ack", "type": "webhook", "url": "https://example.com/a"},
        },
    ),
    (
        "deploy-42",
        {
            "content_state": {
                "title": "Deploy web",
                "subtitle": "v2.4 to prod-eu",
                "type": "segmented_progress",
                "number_of_steps": 5,
                "current_step": 3,
                "color": "blue",
                "icon": {"symbol": "shippingbox", "color": "blue"},
                "badge": {"title": "v2.4", "color": "green"},
            },
            **BUTTONS,
        },
    ),
]


def stage(server: LiveServer) -> None:
    """Send the scene's calls, end one job, and wait until every phone shows them."""
    for key, body in SCENE:
        send(server, "PUT", f"/live-activity/stream/{key}", body)
        time.sleep(0.3)  # distinct start times: the newest is drawn first
    send(server, "DELETE", "/live-activity/stream/nightly-etl")

    def settled(devices: list[dict[str, object]]) -> bool:
        def states(d: dict[str, object]) -> list[object]:
            acts = d["activities"]
            assert isinstance(acts, list)
            return [a["state"] for a in acts]

        return all(sorted(map(str, states(d))).count("active") == 5 for d in devices)

    wait_until(server.devices, settled, timeout=30, what="every phone showing the scene")
    url = f"{server.control_url}/devices/iphone-3/actions"
    assert http_json("POST", url, {"action": "offline"})[0] == 200


def shoot(out: Path) -> list[Path]:
    """Take the screenshots into `out`; returns their paths."""
    chromium = require_chromium()
    out.mkdir(parents=True, exist_ok=True)
    page_png, terminal_png = out / "lock-screens.png", out / "terminal-80x24.png"
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer.start(simulate_settings(Path(tmp), devices=3, seed=2024))
        try:
            stage(server)
            with open_page(server.origin + "/", executable=chromium) as page:
                log_in(page)
                page.locator('section.phone.offline[data-device="iphone-3"]').wait_for()
                page.wait_for_timeout(1_500)  # a poll or two: the push timeline has settled
                page.screenshot(path=str(page_png), full_page=True)
            console = Console(
                file=io.StringIO(), record=True, width=80, height=24, force_terminal=True
            )
            console.print(fit({"devices": server.devices()}, now=time.time(), console=console))
            svg = Path(tmp) / "terminal.svg"
            svg.write_text(console.export_svg(title="lockstep devices (80×24)"), encoding="utf-8")
            with open_page(svg.as_uri(), executable=chromium) as page:
                page.locator("svg").screenshot(path=str(terminal_png))
        finally:
            server.stop()
    return [page_png, terminal_png]


def main() -> None:
    """Command line: `--out DIR` (default docs/screenshots)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    for path in shoot(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
