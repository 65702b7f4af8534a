"""`lockstep simulator` options for environments, idle timeout and disabled keys; its banner."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from simulator.apns import SimulatorConfig
from simulator.cli import _print_banner, options_from_args, register
from simulator.runner import Simulator, SimulatorOptions


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["simulator", *argv])


def test_defaults_serve_the_sandbox_alone_and_time_out_after_two_hours() -> None:
    options = options_from_args(_parse())
    assert options.environment == "sandbox" and options.other_environment_port is None
    assert options.config.idle_timeout == 7200.0
    assert options.config.disabled_key_ids == frozenset()


def test_environment_options() -> None:
    options = options_from_args(
        _parse(
            "--environment",
            "production",
            "--other-environment-port",
            "0",
            "--idle-timeout",
            "0",
            "--disable-key-id",
            "OLDKEY0001",
            "--disable-key-id",
            "OLDKEY0002",
        )
    )
    assert options.environment == "production" and options.other_environment == "sandbox"
    assert options.other_environment_port == 0
    assert options.config.idle_timeout is None  # 0 turns it off
    assert options.config.disabled_key_ids == {"OLDKEY0001", "OLDKEY0002"}
    assert options_from_args(_parse("--idle-timeout", "90")).config.idle_timeout == 90.0


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_idle_timeout_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="idle-timeout"):
        options_from_args(_parse("--idle-timeout", value))


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parse("--environment", "staging")
    with pytest.raises(ValueError, match="environment"):
        SimulatorOptions(environment="staging")


def test_disabling_a_key_the_account_lacks_is_refused(tmp_path: Path) -> None:
    options = SimulatorOptions(
        state_dir=tmp_path, devices=0, config=SimulatorConfig(disabled_key_ids=frozenset({"NOPE"}))
    )
    with pytest.raises(ValueError, match="NOPE"):
        Simulator.build(options)


def test_a_production_simulator_builds_production_devices_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = SimulatorOptions(
        port=2197,
        control_port=None,
        devices=2,
        state_dir=tmp_path,
        environment="production",
        other_environment_port=2198,
    )
    sim = Simulator.build(options)
    for name in ("iphone-1", "iphone-2"):
        token = sim.apns.registry.devices[name].push_to_start_token
        token_info = sim.apns.registry.lookup(token)
        assert token_info is not None and token_info.environment == "production"
    info = sim.info()
    assert info["environment"] == "production"
    assert info["apns_url"] == "https://127.0.0.1:2197"
    assert info["apns_urls"] == {
        "sandbox": "https://127.0.0.1:2198",
        "production": "https://127.0.0.1:2197",
    }
    _print_banner(info, sim)
    out = capsys.readouterr().out
    assert "APNs production" in out and "https://127.0.0.1:2197" in out
    assert "APNs sandbox" in out and "https://127.0.0.1:2198" in out
    for environment in ("sandbox", "production"):
        assert str(sim.client_certificates[environment].resolve()) in out
        assert f"client cert {environment}" in out
    assert "lock screens page" not in out  # no control port, no page
    _print_banner({**info, "control_url": "http://127.0.0.1:8790"}, sim)
    assert (
        "lock screens page      http://127.0.0.1:8790/  (in a browser)" in capsys.readouterr().out
    )


def test_plain_http_has_no_client_certificates(tmp_path: Path) -> None:
    sim = Simulator.build(
        SimulatorOptions(port=2197, control_port=None, devices=0, state_dir=tmp_path, tls=False)
    )
    info = sim.info()
    assert info["client_certificates"] == {}
    assert info["apns_urls"] == {"sandbox": "http://127.0.0.1:2197", "production": None}
    assert not list(tmp_path.glob("client-*.pem"))
