"""`lockstep keys create|list|revoke` through the real command line (`engine.cli.main.main`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from engine.cli.keys import scope_of
from engine.cli.main import main
from engine.server.contract.scope import KeyScope
from engine.server.keys import KeyFile, KeyRing, hash_key
from engine.server.settings import load_settings

Capture = pytest.CaptureFixture[str]


def keys(*args: str) -> int:
    return main(["keys", *args])


def test_create_prints_the_key_once_and_keeps_only_its_hash(
    tmp_path: Path, capsys: Capture
) -> None:
    state = tmp_path / "data"
    assert keys("create", "ci", "--channels", "ops, deploys", "--state-dir", str(state)) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("lsk_") and out == key + "\n"  # alone on stdout: KEY=$(...)
    assert key not in err and "'ci' (scope: deploys, ops)" in err
    file = state / "api-keys.json"
    assert key not in file.read_text() and hash_key(key) in file.read_text()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    ring = KeyRing(file=KeyFile(file))
    assert ring.find(key.encode()) == KeyScope("ci", frozenset({"ops", "deploys"}))
    # Listing shows names and scopes, never a key or a hash.
    assert keys("list", "--state-dir", str(state)) == 0
    out, _ = capsys.readouterr()
    assert "ci" in out and "deploys, ops" in out and "default" in out
    assert key not in out and hash_key(key)[7:] not in out


def test_create_without_channels_is_scope_all(tmp_path: Path, capsys: Capture) -> None:
    assert keys("create", "admin", "--state-dir", str(tmp_path)) == 0
    capsys.readouterr()
    assert keys("list", "--json", "--state-dir", str(tmp_path)) == 0
    rows = json.loads(capsys.readouterr().out)["keys"]
    assert [(r["name"], r["scope"]) for r in rows] == [("default", "all"), ("admin", "all")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "ci", "--channels", "Ops"], "--channels: 'Ops' is not a channel"),
        (["create", "ci", "--channels", ","], '--channels: scope must be "all" or a non-empty'),
        (["create", "a b"], "a key name is 1-64"),
        (["create", "default"], "names the server's default API key"),
        (["revoke", "nobody"], "no key named 'nobody'"),
        (["revoke", "default"], "the default key is not in the key file"),
    ],
)
def test_refusals_exit_1_with_the_reason(
    tmp_path: Path, capsys: Capture, args: list[str], message: str
) -> None:
    assert keys(*args, "--state-dir", str(tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out == "" and message in err
    assert not (tmp_path / "api-keys.json").exists()


def test_revoke_removes_the_key(tmp_path: Path, capsys: Capture) -> None:
    keys("create", "ci", "--state-dir", str(tmp_path))
    keys("create", "other", "--state-dir", str(tmp_path))
    key = capsys.readouterr().out.splitlines()[0]
    ring = KeyRing(file=KeyFile(tmp_path / "api-keys.json"))
    assert ring.find(key.encode()) is not None
    assert keys("revoke", "ci", "--state-dir", str(tmp_path)) == 0
    assert "revoked API key 'ci'" in capsys.readouterr().err
    assert ring.find(key.encode()) is None
    assert [k.name for k in KeyFile(tmp_path / "api-keys.json").read()] == ["other"]
    assert keys("create", "ci", "--state-dir", str(tmp_path)) == 0  # the name is free again


def test_config_keys_are_listed_and_their_names_taken(tmp_path: Path, capsys: Capture) -> None:
    config = tmp_path / "lockstep.toml"
    config.write_text(
        f'[server]\nstate_dir = "{tmp_path / "sd"}"\n'
        f'[keys.ci]\nhash = "{hash_key("lsk_x" * 8)}"\nscope = ["ops"]\n'
    )
    assert keys("create", "ci", "--config", str(config)) == 1
    assert "a key named 'ci' already exists (in the config file)" in capsys.readouterr().err
    assert keys("revoke", "ci", "--config", str(config)) == 1
    assert "remove its [keys.ci] table there" in capsys.readouterr().err
    assert keys("list", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "ci" in out and "ops" in out and "config file" in out


def test_toml_prints_a_table_and_keeps_the_key_off_stdout(tmp_path: Path, capsys: Capture) -> None:
    assert keys("create", "ci", "--channels", "ops", "--toml", "--state-dir", str(tmp_path)) == 0
    out, err = capsys.readouterr()
    key = err.rsplit(": ", 1)[1].strip()
    assert key.startswith("lsk_") and key not in out
    config = tmp_path / "lockstep.toml"
    config.write_text(out)  # what `>> lockstep.toml` does
    (named,) = load_settings(config, env={}).named_keys
    assert named.digest == hash_key(key) and named.scope == KeyScope("ci", frozenset({"ops"}))
    assert not (tmp_path / "api-keys.json").exists()  # nothing stored


def test_toml_refuses_a_name_the_key_file_has(tmp_path: Path, capsys: Capture) -> None:
    assert keys("create", "ci", "--state-dir", str(tmp_path)) == 0
    capsys.readouterr()
    assert keys("create", "ci", "--toml", "--state-dir", str(tmp_path)) != 0
    out, err = capsys.readouterr()
    assert out == "" and "already exists" in err and "api-keys.json" in err


def test_scope_of_reads_the_channels_flag() -> None:
    assert scope_of("x", None) == KeyScope("x")
    assert scope_of("x", "a,b") == KeyScope("x", frozenset({"a", "b"}))


def test_keys_without_an_action_prints_usage(capsys: Capture) -> None:
    assert keys() == 2
    assert "create" in capsys.readouterr().out


def test_a_new_state_dir_is_private_and_an_unwritable_one_is_one_line(
    tmp_path: Path, capsys: Capture
) -> None:
    state = tmp_path / "new" / "data"
    assert keys("create", "ci", "--state-dir", str(state)) == 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    blocker = tmp_path / "file"
    blocker.write_text("")
    capsys.readouterr()
    assert keys("create", "ci", "--state-dir", str(blocker / "data")) == 1
    _, err = capsys.readouterr()
    assert err.startswith("lockstep keys: ") and "Not a directory" in err
