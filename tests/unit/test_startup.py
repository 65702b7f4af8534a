"""Start-up failures told in one line each, and a banner that names where the keys are.

engine/server/startup.py (which failures are the user's setup, and their lines) and
engine/server/serve.py's `banner` (never a key, always a command that pastes as is).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio

from engine.config import ConfigError
from engine.server.serve import Running, banner
from engine.server.settings import KeyOrigin, Settings, ensure_keys, load_settings
from engine.server.startup import (
    StartupError,
    check_state_dir,
    failure_lines,
    listen_failure,
    os_reason,
    sole_os_error,
)
from engine.server.store import StoreError
from engine.server.webhooks.config import WebhookConfig

API_KEY = "lsk_secret-api-key-0123456789"
DEVICE_KEY = "lsd_secret-device-key-0123456789"


def cancelled() -> trio.Cancelled:
    """A real `trio.Cancelled`, as a failing start leaves in its sibling tasks."""

    async def main() -> trio.Cancelled:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled as exc:
                return exc
        raise AssertionError("the sleep was not cancelled")

    return trio.run(main)


IN_USE = OSError(errno.EADDRINUSE, "Address already in use")


# -- the lines -----------------------------------------------------------------------------------


def test_os_reason_is_the_strerror_in_lower_case_or_the_message() -> None:
    assert os_reason(IN_USE) == "address already in use"
    assert os_reason(OSError("Something odd")) == "something odd"


def test_a_port_in_use_names_the_address_and_how_to_choose_another() -> None:
    exc = listen_failure("the HTTP API", "127.0.0.1:8787", IN_USE, hint="choose one with --port")
    assert str(exc) == (
        "cannot listen on 127.0.0.1:8787 for the HTTP API: the port is already in use "
        "(choose one with --port)"
    )
    assert str(listen_failure("x", "[::1]:1", IN_USE)) == (
        "cannot listen on [::1]:1 for x: the port is already in use"
    )


def test_another_listen_failure_gives_its_reason_and_no_port_hint() -> None:
    exc = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    assert str(listen_failure("the HTTP API", "10.9.9.9:80", exc, hint="choose one")) == (
        "cannot listen on 10.9.9.9:80 for the HTTP API: cannot assign requested address"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (StartupError("state dir x is not a directory"), (1, ["state dir x is not a directory"])),
        (
            StoreError("cannot open store j.db: file is not a database"),
            (1, ["cannot open store j.db: file is not a database"]),
        ),
        (ConfigError("[apns]: missing key_id"), (2, ["[apns]: missing key_id"])),
        (
            PermissionError(13, "Permission denied", "sd/api-key"),
            (1, ["sd/api-key: permission denied"]),
        ),
        (IN_USE, (1, ["address already in use"])),
        (RuntimeError("a bug"), None),
    ],
)
def test_each_kind_of_failure_alone(exc: Exception, expected: Any) -> None:
    assert failure_lines(exc) == expected


def test_a_nursery_group_is_read_through_and_cancellations_are_left_out() -> None:
    store = StoreError("cannot open store j.db: file is not a database")
    group = BaseExceptionGroup("nursery", [ExceptionGroup("inner", [store]), cancelled()])
    assert failure_lines(group) == (1, [str(store)])


def test_configuration_errors_only_exit_2_and_repeats_are_told_once() -> None:
    bad = ConfigError("[simulate]: bad profile")
    assert failure_lines(ExceptionGroup("g", [bad, ConfigError(str(bad))])) == (2, [str(bad)])
    mixed = ExceptionGroup("g", [bad, StartupError("port")])
    assert failure_lines(mixed) == (1, [str(bad), "port"])


def test_a_bug_anywhere_in_the_group_keeps_its_traceback() -> None:
    assert failure_lines(ExceptionGroup("g", [StartupError("port"), KeyError("k")])) is None
    assert failure_lines(BaseExceptionGroup("g", [cancelled()])) is None


def test_sole_os_error_finds_the_listener_failure_in_or_out_of_a_group() -> None:
    assert sole_os_error(IN_USE) is IN_USE
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [IN_USE]), cancelled()])
    assert sole_os_error(nested) is IN_USE
    assert sole_os_error(ExceptionGroup("two", [IN_USE, OSError("other")])) is None
    assert sole_os_error(ExceptionGroup("bug", [ValueError("x")])) is None


# -- the state directory -------------------------------------------------------------------------


def test_a_new_state_dir_is_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        check_state_dir(tmp_path / "a" / "state")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "state").stat().st_mode) == 0o700


def test_an_existing_state_dir_is_used_as_it_is(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    check_state_dir(tmp_path)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_a_state_dir_that_is_a_file_or_under_one_is_named(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StartupError, match=rf"^state dir {afile} is not a directory$"):
        check_state_dir(afile)
    with pytest.raises(StartupError, match=rf"^state dir {afile}/sub: not a directory$"):
        check_state_dir(afile / "sub")


def test_a_state_dir_this_user_cannot_use_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a chmod 000 directory, which would not stop a test run as root.
    seen: list[object] = []

    def no_access(path: object, mode: int) -> bool:
        seen.append(path)
        return False

    monkeypatch.setattr(os, "access", no_access)
    with pytest.raises(StartupError, match="not readable and writable by this user"):
        check_state_dir(tmp_path)
    assert seen == [tmp_path]


# -- the banner ----------------------------------------------------------------------------------


def running(settings: Settings, *, simulator: bool = True) -> Running:
    sim = SimpleNamespace(control_url="http://127.0.0.1:8790") if simulator else None
    return Running(
        api_base="http://127.0.0.1:8787/api",
        port=8787,
        service=cast(Any, None),
        settings=settings,
        simulator=sim,
        engine=cast(Any, None),
    )


def test_the_banner_names_the_key_files_and_reads_the_key_from_them(tmp_path: Path) -> None:
    state = tmp_path / "my state"  # a space: the command must quote it
    state.mkdir()
    (state / "api-key").write_text(API_KEY + "\n")
    (state / "device-key").write_text(DEVICE_KEY + "\n")
    settings = ensure_keys(load_settings(None, env={}, state_dir=state))
    text = banner(running(settings))
    assert API_KEY not in text and DEVICE_KEY not in text
    assert "  lock screens in the browser: http://127.0.0.1:8787/\n" in text
    assert f"  API key: in {state}/api-key\n" in text
    assert f"  device key (the iOS app's): in {state}/device-key\n" in text
    assert f"-H \"Authorization: Bearer $(cat '{state}/api-key')\"" in text
    assert "Try:\n" in text


def test_on_other_ports_and_key_files_the_banner_points_the_cli_and_the_viewer_there(
    tmp_path: Path,
) -> None:
    settings = ensure_keys(load_settings(None, env={}, state_dir=tmp_path / "sd"))
    moved = replace(
        running(settings),
        api_base="http://127.0.0.1:9000/api",
        simulator=SimpleNamespace(control_url="http://127.0.0.1:9001"),
    )
    text = banner(moved)
    assert (
        "  watch the lock screens: lockstep devices --watch --url http://127.0.0.1:9001\n" in text
    )
    assert (
        "  the CLI: export LOCKSTEP_URL=http://127.0.0.1:9000/api "
        f"LOCKSTEP_API_KEY=$(cat {tmp_path}/sd/api-key)\n"
    ) in text
    assert API_KEY not in text


def test_on_the_defaults_the_banner_needs_no_cli_hint(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ensure_keys(load_settings(None, env={}))
    text = banner(running(settings))
    assert "the CLI:" not in text
    assert "  watch the lock screens: lockstep devices --watch\n" in text


def test_keys_from_the_environment_are_named_by_variable(tmp_path: Path) -> None:
    env = {"LOCKSTEP_API_KEY": f"{API_KEY},lsk_second-key-0123456789"}
    settings = ensure_keys(load_settings(None, env=env, state_dir=tmp_path))
    text = banner(running(settings, simulator=False))
    assert API_KEY not in text
    assert "  API key: the first of $LOCKSTEP_API_KEY\n" in text
    assert '-H "Authorization: Bearer ${LOCKSTEP_API_KEY%%,*}"' in text
    assert f"  device key (the iOS app's): in {tmp_path}/device-key\n" in text


def test_keys_from_the_config_file_are_named_by_file_and_the_example_uses_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "lockstep.toml"
    config.write_text(f'[server]\napi_keys = ["{API_KEY}"]\ndevice_keys = ["{DEVICE_KEY}"]\n')
    settings = ensure_keys(load_settings(config, env={}, state_dir=tmp_path))
    text = banner(running(settings))
    assert API_KEY not in text and DEVICE_KEY not in text
    assert f"  API key: the first of [server] api_keys in {config}\n" in text
    assert f"  device key (the iOS app's): the first of [server] device_keys in {config}\n" in text
    assert "Try (with KEY set to your API key):\n" in text
    assert '-H "Authorization: Bearer $KEY"' in text
    assert not (tmp_path / "api-key").exists()  # configured keys are never written out


def test_keys_handed_over_in_code_are_described_generically() -> None:
    origin = KeyOrigin()
    assert (origin.describe(), origin.shell()) == ("the first of [server] keys configured", None)


def test_the_banner_lists_each_webhooks_url_never_its_secret(tmp_path: Path) -> None:
    secret = "banner-webhook-secret-0123456789"
    hook = WebhookConfig(name="github", kind="github", secret=secret)
    settings = ensure_keys(load_settings(None, env={}, state_dir=tmp_path, webhooks=(hook,)))
    text = banner(running(settings))
    assert "  webhook github (github): POST http://127.0.0.1:8787/api/webhooks/github\n" in text
    assert secret not in text
