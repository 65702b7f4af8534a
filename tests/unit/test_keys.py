"""Named API keys: scopes, hashing, `[keys.NAME]` in lockstep.toml, the key file, the key ring."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.server.contract import errors
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.keys import (
    KeyFile,
    KeyRing,
    NamedKey,
    hash_key,
    new_key,
    parse_scope,
)
from engine.server.settings import load_settings

OPS = KeyScope.restricted_to("ops-bot", ["ops", "deploys"])
KEY_A = "lsk_unit_key_a_0123456789abcdef"
KEY_B = "lsk_unit_key_b_0123456789abcdef"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockstep.toml"
    path.write_text(text)
    return path


# -- scopes -----------------------------------------------------------------------------------


def test_scope_all_targets_what_was_asked_and_reaches_everything() -> None:
    assert FULL_ACCESS.targets(["billing"]) == ["billing"]
    assert FULL_ACCESS.targets([]) == []  # every device
    FULL_ACCESS.check_reach([], "activity a")
    assert not FULL_ACCESS.restricted and FULL_ACCESS.describe() == "all"


def test_restricted_scope_refuses_other_channels_with_403() -> None:
    with pytest.raises(errors.Forbidden) as caught:
        OPS.targets(["ops", "billing"])
    assert caught.value.status == 403
    assert caught.value.body() == {
        "error": "forbidden",
        "message": "API key 'ops-bot' may only send to channels deploys, ops; not to billing",
    }


def test_restricted_scope_without_target_means_its_own_channels() -> None:
    assert OPS.targets([]) == ["deploys", "ops"]
    assert OPS.targets(["ops"]) == ["ops"]


def test_restricted_scope_reaches_only_what_it_could_have_sent() -> None:
    OPS.check_reach(["ops"], "activity a")
    OPS.check_reach(["ops", "deploys"], "activity a")
    with pytest.raises(errors.Forbidden, match="sent to every device"):
        OPS.check_reach([], "activity a")
    with pytest.raises(errors.Forbidden, match="channels billing, ops"):
        OPS.check_reach(["ops", "billing"], "stream 's'")


def test_reads_see_only_what_a_restricted_key_reaches() -> None:
    assert OPS.reaches(["ops"]) and not OPS.reaches([]) and not OPS.reaches(["ops", "billing"])
    assert OPS.sees(["billing", "ops"]) and not OPS.sees(["billing"]) and not OPS.sees([])
    assert FULL_ACCESS.reaches([]) and FULL_ACCESS.sees([])


def test_a_restricted_scope_needs_a_channel() -> None:
    with pytest.raises(ValueError, match="at least one channel"):
        KeyScope.restricted_to("x", [])


# -- hashing ----------------------------------------------------------------------------------


def test_hash_is_sha256_of_the_key_and_never_contains_it() -> None:
    digest = hash_key(KEY_A)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert KEY_A not in digest and KEY_A[4:20] not in digest
    assert hash_key(KEY_A) == hash_key(KEY_A.encode())  # stable, str or bytes
    assert hash_key(KEY_A) != hash_key(KEY_B)


def test_new_keys_are_random_and_long() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith("lsk_") and len(k) >= 40 for k in keys)


# -- lockstep.toml ----------------------------------------------------------------------------


def test_config_keys_with_scopes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[keys.ci]
hash = "{hash_key(KEY_A)}"
scope = ["deploys", "ops"]

[keys.admin]
hash = "{hash_key(KEY_B)}"
scope = "all"
""",
    )
    s = load_settings(path, env={})
    by_name = {k.name: k for k in s.named_keys}
    assert by_name["ci"].scope == KeyScope("ci", frozenset({"deploys", "ops"}))
    assert by_name["admin"].scope == KeyScope("admin")
    assert {k.source for k in s.named_keys} == {"config"}
    assert hash_key(KEY_A) not in repr(s)  # digests stay out of reprs too


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('scope = "some"', 'scope must be "all" or a non-empty list of channels'),
        ("scope = []", 'scope must be "all" or a non-empty list of channels'),
        ('scope = ["Ops"]', "'Ops' is not a channel"),
        ('scope = ["ops", 3]', "3 is not a channel"),
        ("", 'scope is required: "all" or a list of channels'),
    ],
)
def test_bad_scopes_are_named(tmp_path: Path, table: str, message: str) -> None:
    path = write(tmp_path, f'[keys.ci]\nhash = "{hash_key(KEY_A)}"\n{table}\n')
    with pytest.raises(ConfigError, match=r"\[keys\.ci\]") as caught:
        load_settings(path, env={})
    assert message in str(caught.value)


def test_a_plain_key_in_the_config_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, f'[keys.ci]\nkey = "{KEY_A}"\nscope = "all"\n')
    with pytest.raises(ConfigError, match="never the key itself") as caught:
        load_settings(path, env={})
    assert KEY_A not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[keys.ci]\nhash = "md5:abc"\nscope = "all"\n', 'hash must be "sha256:"'),
        ('[keys.ci]\nhash = "{h}"\nscope = "all"\ncolour = 1\n', "unknown field(s) colour"),
        ('[keys.ci]\nhash = "{h}"\nscope = "all"\nname = "x"\n', "unknown field(s) name"),
        ('[keys.default]\nhash = "{h}"\nscope = "all"\n', "names the server's default API key"),
        ('[keys."a b"]\nhash = "{h}"\nscope = "all"\n', "a key name is 1-64"),
        ('[keys]\nci = "x"\n', "must be a table"),
        ('[keys.a]\nhash = "{h}"\nscope = "all"\n[keys.b]\nhash = "{h}"\nscope = "all"\n', "same"),
    ],
)
def test_bad_key_tables_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text.replace("{h}", hash_key(KEY_A)))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert message in str(caught.value)


def test_parse_scope_caps_the_channel_count() -> None:
    with pytest.raises(ConfigError, match="at most 100"):
        parse_scope([f"c{i}" for i in range(101)], "--channels", "x")
    assert parse_scope("all", "w", "x") == KeyScope("x")


def test_key_file_lives_in_the_state_dir(tmp_path: Path) -> None:
    s = load_settings(None, env={}, state_dir=tmp_path / "data")
    assert s.key_file == tmp_path / "data" / "api-keys.json"


# -- the key file -----------------------------------------------------------------------------


def test_created_keys_are_kept_hashed_in_a_private_file(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "data" / "api-keys.json")
    key = file.create("ci", OPS)
    text = file.path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    (entry,) = file.read()
    assert (entry.name, entry.digest, entry.source) == ("ci", hash_key(key), "file")
    assert entry.scope == KeyScope("ci", OPS.channels)
    assert entry.created_at is not None and entry.created_at.endswith("Z")
    assert json.loads(text)["keys"][0]["scope"] == ["deploys", "ops"]


def test_names_are_unique_across_the_file_and_the_config(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    file.create("ci", FULL_ACCESS)
    with pytest.raises(ConfigError, match="'ci' already exists"):
        file.create("ci", FULL_ACCESS)
    with pytest.raises(ConfigError, match="already exists \\(in the config file\\)"):
        file.create("admin", FULL_ACCESS, reserved=["admin"])
    assert [k.name for k in file.read()] == ["ci"]


def test_revoke_removes_only_that_key(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    file.create("a", FULL_ACCESS)
    file.create("b", OPS)
    assert file.revoke("a").name == "a"
    assert [k.name for k in file.read()] == ["b"]
    with pytest.raises(ConfigError, match="no key named 'a'"):
        file.revoke("a")


def test_an_opened_up_file_is_rewritten_private(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    file.create("a", FULL_ACCESS)
    file.path.chmod(0o644)
    file.create("b", FULL_ACCESS)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600


def test_a_broken_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        KeyFile(path).read()
    path.write_text('{"keys": [{"name": "x", "hash": "sha256:00", "scope": "all"}]}')
    with pytest.raises(ConfigError, match=r"keys\[0\]: hash must be"):
        KeyFile(path).read()


# -- the key ring -------------------------------------------------------------------------------


def named(name: str, key: str, scope: KeyScope) -> NamedKey:
    return NamedKey(name, hash_key(key), scope, "config")


def test_ring_finds_each_keys_scope() -> None:
    ring = KeyRing(plain=[KEY_A, ""], named=[named("ops-bot", KEY_B, OPS)])
    assert ring.find(KEY_A.encode()) is FULL_ACCESS
    assert ring.find(KEY_B.encode()) == OPS
    assert ring.find(b"lsk_nobody") is None
    assert ring.find(b"") is None  # an empty configured key never matches
    assert KEY_A not in repr(ring) and hash_key(KEY_B) not in repr(ring)


def test_ring_follows_the_key_file_as_it_changes(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    ring = KeyRing(file=file)  # no file yet: nothing from it
    key = file.create("ci", OPS)
    assert ring.find(key.encode()) == KeyScope("ci", OPS.channels)
    other = file.create("other", FULL_ACCESS)
    assert ring.find(other.encode()) == KeyScope("other")
    file.revoke("ci")
    assert ring.find(key.encode()) is None  # revoked: refused from the next call on
    assert ring.find(other.encode()) is not None


def test_ring_drops_a_key_file_that_turns_unreadable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    key = file.create("ci", FULL_ACCESS)
    ring = KeyRing(file=file)
    assert ring.find(key.encode()) is not None
    file.path.write_text("{broken")
    os.utime(file.path, ns=(1, 1))  # a different identity even on a coarse clock
    with caplog.at_level(logging.ERROR, logger="lockstep.keys"):
        assert ring.find(key.encode()) is None
    assert "not valid JSON" in caplog.text and key not in caplog.text


def test_ring_refuses_a_name_in_both_places_at_start(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    file.create("ci", FULL_ACCESS)
    with pytest.raises(ConfigError, match=r"also in lockstep\.toml"):
        KeyRing(named=[named("ci", KEY_B, OPS)], file=file)


def test_ring_tightens_an_open_key_file_at_start(tmp_path: Path) -> None:
    file = KeyFile(tmp_path / "api-keys.json")
    file.create("ci", FULL_ACCESS)
    file.path.chmod(0o644)
    KeyRing(file=file)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
