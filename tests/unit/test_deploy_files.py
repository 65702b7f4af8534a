"""The files an operator copies (`deploy/`): the example `lockstep.toml` names every setting
with its true default and loads as is; the systemd unit runs a command line that parses."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

from engine.cli.main import build_parser
from engine.config import DeliveryConfig
from engine.server.cluster.config import ClusterSettings
from engine.server.service.live import LiveConfig
from engine.server.service.widgets import WidgetConfig
from engine.server.settings import (
    _SERVER_KEYS,
    _STORE_KEYS,
    WEBHOOK_KEYS,
    SimulateSettings,
    load_settings,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
APNS_KEYS = ("team_id", "key_id", "key_path", "bundle_id", "environment", "port")


def _keys_in(text: str, section: str) -> set[str]:
    """The keys written (set or commented out) under `[section]` of the example."""
    block = re.split(r"^#? ?\[", text, flags=re.MULTILINE)
    body = next(b for b in block if b.startswith(section + "]"))
    return set(re.findall(r"^#? ?(\w+) =", body, flags=re.MULTILINE))


def test_the_example_config_names_every_setting() -> None:
    text = (DEPLOY / "lockstep.toml").read_text()
    expected = {
        "server": set(_SERVER_KEYS),
        "apns": set(APNS_KEYS),
        "delivery": {f.name for f in dataclasses.fields(DeliveryConfig)},
        "live": {f.name for f in dataclasses.fields(LiveConfig)},
        "simulate": {f.name for f in dataclasses.fields(SimulateSettings)},
        "widgets": {f.name for f in dataclasses.fields(WidgetConfig)},
        "store": set(_STORE_KEYS),
        "cluster": {f.name for f in dataclasses.fields(ClusterSettings)},
    }
    for section, keys in expected.items():
        assert _keys_in(text, section) == keys, section


def test_the_example_config_loads_and_holds_the_defaults(tmp_path: Path) -> None:
    loaded = load_settings(DEPLOY / "lockstep.toml", env={})
    default = load_settings(None, env={})
    assert loaded.simulated  # [apns] is commented out: simulate mode
    for name in ("delivery", "live", "simulate", "widgets", "http", "host", "port", "state_dir"):
        assert getattr(loaded, name) == getattr(default, name), name
    for name in ("db", "store_url", "max_body", "storage_retry_after", "access_log", "log_format"):
        assert getattr(loaded, name) == getattr(default, name), name
    for name in ("workers", "cluster"):
        assert getattr(loaded, name) == getattr(default, name), name


def _webhooks_example(text: str) -> str:
    """The commented-out `[[webhooks]]` entries of the example, uncommented."""
    start = text.index("# [[webhooks]]")
    return "\n".join(line.removeprefix("#").removeprefix(" ") for line in text[start:].splitlines())


def test_the_example_config_names_every_webhook_setting(tmp_path: Path) -> None:
    example = _webhooks_example((DEPLOY / "lockstep.toml").read_text())
    named = set(re.findall(r"^(\w+) =", example, flags=re.MULTILINE))
    tables = set(re.findall(r"^\[webhooks\.(\w+)\]", example, flags=re.MULTILINE))
    assert named | tables >= WEBHOOK_KEYS
    # Uncommented (without `secret_env`, which stands in for `secret`), the example loads as is.
    path = tmp_path / "lockstep.toml"
    path.write_text(re.sub(r"^secret_env = .*$", "", example, flags=re.MULTILINE))
    github, deploys = load_settings(path, env={}).webhooks
    assert (github.kind, deploys.kind) == ("github", "generic")
    assert deploys.map == {"title": "/deploy/name", "percentage": "/deploy/progress"}


def test_the_systemd_unit_runs_a_command_line_lockstep_accepts() -> None:
    unit = (DEPLOY / "lockstep.service").read_text()
    [line] = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/bin/lockstep")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == Path("/etc/lockstep/lockstep.toml")
    assert "UMask=0077" in unit  # files it creates stay private
