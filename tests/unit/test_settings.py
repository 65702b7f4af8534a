"""`lockstep.toml`, environment and flags → `Settings`; keys generated once and kept."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.server.settings import ensure_keys, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockstep.toml"
    path.write_text(text)
    return path


def test_defaults_are_simulate_mode_on_localhost() -> None:
    s = load_settings(None, env={})
    assert (s.host, s.port, s.simulated) == ("127.0.0.1", 8787, True)
    assert s.db_path == Path("lockstep-data/lockstep.db")


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
port = 9000
api_keys = ["file-key-0123456789"]
[delivery]
connections = 2
[live]
notify_wait = 0.5
[simulate]
devices = 5
""",
    )
    s = load_settings(
        path, env={"LOCKSTEP_API_KEY": "env-key-0123456789,second-key-012345"}, port=9100, host=None
    )
    assert s.port == 9100  # the flag wins
    assert s.api_keys == ("env-key-0123456789", "second-key-012345")  # env beats the file
    assert s.delivery.connections == 2 and s.live.notify_wait == 0.5
    assert s.simulate.devices == 5
    assert "env-key-0123456789" not in repr(s)  # keys never in reprs (logs)


def test_apns_section_selects_apple(tmp_path: Path) -> None:
    (tmp_path / "AuthKey.p8").write_text("not read here")
    path = write(
        tmp_path,
        """
[apns]
team_id = "TEAM123456"
key_id = "KEY1234567"
key_path = "AuthKey.p8"
bundle_id = "com.example.app"
environment = "sandbox"
""",
    )
    s = load_settings(path, env={})
    assert not s.simulated
    assert s.endpoint.host == "api.sandbox.push.apple.com"
    assert s.credentials is not None and s.credentials.key_path == tmp_path / "AuthKey.p8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\n", "unknown config section"),
        ("[delivery]\nconections = 2\n", "[delivery]: unknown key(s) conections"),
        ("[delivery]\nconnections = 0\n", "delivery.connections"),
        ("[server]\napi_keys = ['short']\n", "at least 16"),
        ("[server]\napi_key = ['a-long-enough-key-0123']\n", "[server]: unknown key(s) api_key"),
        ("[apns]\nteam_id = 'T'\n", "[apns]: missing key_id"),
        (
            "[apns]\nteam_id='T'\nkey_id='K'\nkey_path='missing.p8'\nbundle_id='b'\n",
            "does not exist",
        ),
        (
            "[apns]\nteam_id='T'\nkey_id='K'\nkey_path='x'\nbundle_id='b'\nenvironment='dev'\n",
            "environment",
        ),
        ("not toml [", "not valid TOML"),
        ("[server]\nstorage_retry_after = 0\n", "[server].storage_retry_after"),
        ("[server]\nstorage_retry_after = 'soon'\n", "[server].storage_retry_after"),
        ("[live]\ntoken_timeout = -1\n", "[live].token_timeout"),
        ("[server]\nworkers = 0\n", "[server].workers: must be a whole number from 1 to 256"),
        ("[server]\nworkers = true\n", "[server].workers"),
        ("[cluster]\nnode = 'a'\n", "[cluster]: unknown key(s) node"),
        ("[cluster]\nnode_id = 'web 1'\n", "[cluster].node_id: must be 1 to 64 printable"),
        ("[cluster]\nnode_id = ''\n", "[cluster].node_id"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert message in str(info.value)


def test_short_keys_from_the_environment_are_refused_too() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(None, env={"LOCKSTEP_API_KEY": "abc"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", env={})


def test_generated_keys_are_kept_private_and_stable(tmp_path: Path) -> None:
    s = load_settings(None, env={}, state_dir=tmp_path)
    first = ensure_keys(s)
    again = ensure_keys(s)
    assert first.api_keys == again.api_keys and first.device_keys == again.device_keys
    assert first.api_keys[0] != first.device_keys[0]
    mode = stat.S_IMODE((tmp_path / "api-key").stat().st_mode)
    assert mode == 0o600


def test_a_key_in_both_scopes_is_refused(tmp_path: Path) -> None:
    key = "same-key-0123456789"
    s = load_settings(
        None, env={"LOCKSTEP_API_KEY": key, "LOCKSTEP_DEVICE_KEY": key}, state_dir=tmp_path
    )
    with pytest.raises(ConfigError, match="separate scopes"):
        ensure_keys(s)


def test_storage_retry_after_and_token_timeout_are_read(tmp_path: Path) -> None:
    assert load_settings(None, env={}).storage_retry_after == 5.0
    text = "[server]\nstorage_retry_after = 12\n[live]\ntoken_timeout = 30\n"
    s = load_settings(write(tmp_path, text), env={})
    assert (s.storage_retry_after, s.live.token_timeout) == (12.0, 30.0)


def test_widgets_section_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "lockstep.toml"
    path.write_text("[widgets]\ndaily_budget = 70\nmin_interval = 5\n")
    widgets = load_settings(path, env={}).widgets
    assert (widgets.daily_budget, widgets.min_interval, widgets.priority) == (70, 5, 5)
    path.write_text("[widgets]\ndaily_budget = 0\n")
    with pytest.raises(ConfigError, match=r"^\[widgets\]: daily_budget must be at least 1"):
        load_settings(path, env={})
    path.write_text("[widgets]\nbudget = 3\n")
    with pytest.raises(ConfigError, match=r"^\[widgets\]: unknown key\(s\) budget"):
        load_settings(path, env={})


def test_store_url_chooses_postgresql_or_a_sqlite_path(tmp_path: Path) -> None:
    url = "postgresql://lockstep:s3cret-pass@db.example:5433/live?sslmode=require"
    s = load_settings(write(tmp_path, f'[store]\nurl = "{url}"\n'), env={})
    assert s.store_url == url
    assert s.store_where == "PostgreSQL db.example:5433/live"  # no user, no password
    assert "s3cret-pass" not in repr(s)
    s = load_settings(write(tmp_path, '[store]\nurl = "sqlite:///data/x.db"\n'), env={})
    assert (s.store_url, s.db_path, s.store_where) == (None, Path("data/x.db"), "data/x.db")
    s = load_settings(write(tmp_path, '[store]\nurl = "sqlite:////var/x.db"\n'), env={})
    assert (s.store_url, s.db_path) == (None, Path("/var/x.db"))
    assert load_settings(None, env={}).store_url is None  # SQLite stays the default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[store]\nurl = "mysql://u:hunter2-pass@h/db"\n', "must start with postgresql://"),
        ('[store]\nurl = "sqlite:///"\n', "must start with postgresql://"),
        ("[store]\nurl = 5\n", "[store].url: must be a string"),
        ('[store]\nhost = "x"\n', "[store]: unknown key(s) host"),
        ('[server]\ndb = "a.db"\n[store]\nurl = "sqlite:///b.db"\n', "both name the database"),
    ],
)
def test_bad_store_section_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_db_flag_with_a_postgresql_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "postgresql://127.0.0.1/test"\n')
    with pytest.raises(ConfigError, match="--db names a SQLite file"):
        load_settings(path, env={}, db=Path("x.db"))
    assert load_settings(path, env={}, db=None).store_url == "postgresql://127.0.0.1/test"


def test_workers_come_from_the_file_then_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nworkers = 3\n")
    assert load_settings(None, env={}).workers == 1
    assert load_settings(path, env={}).workers == 3
    assert load_settings(path, env={}, workers=2).workers == 2
    with pytest.raises(ConfigError, match="--workers: must be a whole number"):
        load_settings(path, env={}, workers=0)


def test_the_node_id_defaults_to_host_and_pid_and_the_variable_wins(tmp_path: Path) -> None:
    assert load_settings(None, env={}).node_id == f"{socket.gethostname()}-{os.getpid()}"
    path = write(tmp_path, "[cluster]\nnode_id = 'web-1'\n")
    assert load_settings(path, env={}).node_id == "web-1"
    assert load_settings(path, env={"LOCKSTEP_NODE_ID": "web-1-w0"}).node_id == "web-1-w0"
    with pytest.raises(ConfigError, match="LOCKSTEP_NODE_ID: must be"):
        load_settings(None, env={"LOCKSTEP_NODE_ID": "x" * 65})
