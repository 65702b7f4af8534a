"""Files holding secrets or tokens are owner-only: created 0600, tightened when found open.

The database with its -wal and -shm, the --record file and the key files; each created under a
permissive umask (0), so that only the code's own modes can keep them private.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from engine.server.files import create_private, open_private, private_file, tighten, tighten_all
from engine.server.record import TrafficRecorder
from engine.server.settings import ensure_keys, load_settings
from engine.server.store import DeviceRow, PutDevice, SqliteStore, StoreError

TIMEOUT = 20.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets every created file be world-readable unless the code says otherwise."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- engine/server/files.py ---------------------------------------------------------------------


@pytest.mark.usefixtures("open_umask")
def test_create_private_makes_a_0600_file_and_leaves_an_existing_one(tmp_path: Path) -> None:
    new = tmp_path / "new"
    create_private(new)
    assert new.read_bytes() == b"" and mode(new) == 0o600
    old = tmp_path / "old"
    old.write_bytes(b"kept")
    old.chmod(0o640)
    create_private(old)
    assert old.read_bytes() == b"kept" and mode(old) == 0o640  # tightening is tighten()'s job


@pytest.mark.parametrize(
    ("before", "after"), [(0o644, 0o600), (0o666, 0o600), (0o444, 0o400), (0o604, 0o600)]
)
def test_tighten_clears_group_and_other_bits_only(tmp_path: Path, before: int, after: int) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"x")
    path.chmod(before)
    warning = tighten(path)
    assert mode(path) == after
    assert warning == f"{path} was readable by other users (mode {before:04o}); now {after:04o}"


def test_tighten_leaves_private_missing_and_non_files_alone(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.write_bytes(b"x")
    private.chmod(0o600)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert tighten(private) is None and mode(private) == 0o600
    assert tighten(tmp_path / "absent") is None
    assert tighten(folder) is None and mode(folder) == 0o755


def test_a_file_that_cannot_be_tightened_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "theirs.db"
    path.write_bytes(b"x")
    path.chmod(0o644)

    def refuse(self: Path, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refuse)
    warning = tighten(path)
    assert warning == (
        f"{path} is readable by other users (mode 0644) and could not be made private: "
        "Operation not permitted"
    )


def test_tighten_all_covers_the_companions_and_logs_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "lockstep.db"
    for suffix in ("", "-wal", "-shm"):
        target = db.with_name(db.name + suffix)
        target.write_bytes(b"x")
        target.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="lockstep.files"):
        tighten_all(db, "-wal", "-shm", "-journal")  # no -journal: nothing to say about it
    assert [mode(db.with_name(db.name + s)) for s in ("", "-wal", "-shm")] == [0o600] * 3
    assert len(caplog.records) == 3
    assert all("readable by other users (mode 0644)" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("open_umask")
def test_private_file_creates_or_tightens(tmp_path: Path) -> None:
    new, old = tmp_path / "new", tmp_path / "old"
    old.write_bytes(b"secret")
    old.chmod(0o664)
    private_file(new)
    private_file(old)
    assert mode(new) == 0o600 and mode(old) == 0o600 and old.read_bytes() == b"secret"


@pytest.mark.usefixtures("open_umask")
def test_open_private_truncates_and_makes_an_existing_file_private(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(b"old line\n")
    path.chmod(0o666)
    with open_private(path) as fh:
        fh.write(b"new\n")
    assert path.read_bytes() == b"new\n" and mode(path) == 0o600


def test_open_private_reports_a_mode_it_cannot_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    path = tmp_path / "theirs.jsonl"
    with caplog.at_level(logging.WARNING, logger="lockstep.files"), open_private(path) as fh:
        fh.write(b"x")
    assert path.read_bytes() == b"x"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: could not be made private (mode 0600): Operation not permitted"
    ]


# -- the database, its WAL, the --record file, the keys ------------------------------------------


def row() -> DeviceRow:
    return DeviceRow(
        device_id="d1",
        name="iPhone",
        push_to_start_token="c0ffee" * 10,
        channels=["ops"],
        registered_at=1.0,
    )


@pytest.mark.usefixtures("open_umask")
async def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "lockstep.db"
    store = SqliteStore(path)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write([PutDevice(row())])
            wal, shm = path.with_name("lockstep.db-wal"), path.with_name("lockstep.db-shm")
            assert wal.exists() and shm.exists()  # WAL mode, connection open: both are there
            assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
            store.close()


async def test_an_open_database_and_wal_are_tightened_before_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lockstep.db"
    first = SqliteStore(path)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await first.write([PutDevice(row())])
            # Left open by an older release (or a copy): the data file and the WAL beside it.
            for target in (path, path.with_name("lockstep.db-wal")):
                target.chmod(0o644)
            with caplog.at_level(logging.WARNING, logger="lockstep.files"):
                second = SqliteStore(path)
                assert len((await second.load()).devices) == 1
            # Checked while open: the last connection to close removes the WAL.
            assert mode(path) == 0o600 and mode(path.with_name("lockstep.db-wal")) == 0o600
            second.close()
            first.close()
    assert sorted(r.getMessage().split(" ", 1)[0] for r in caplog.records) == [
        str(path),
        f"{path}-wal",
    ]


async def test_junk_named_as_the_database_is_refused_by_name_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(bytes(range(256)) * 20)
    path.chmod(0o644)
    store = SqliteStore(path)
    with trio.fail_after(TIMEOUT), pytest.raises(StoreError) as caught:
        await store.load()
    store.close()
    assert str(caught.value) == f"cannot open store {path}: file is not a database"
    assert mode(path) == 0o644  # not ours: refused before anything about it was changed


@pytest.mark.usefixtures("open_umask")
def test_the_record_file_is_0600_even_when_it_existed_open(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    with TrafficRecorder(path) as recorder:
        recorder.record("PUT", "/api/live-activity/stream/x", b'{"content_state": {}}')
    assert mode(path) == 0o600 and path.read_bytes().count(b"\n") == 1


@pytest.mark.usefixtures("open_umask")
def test_key_files_are_created_0600_and_an_open_one_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "device-key").write_text("lsd_an-existing-device-key-0123\n")
    (tmp_path / "device-key").chmod(0o644)
    settings = ensure_keys(load_settings(None, env={}, state_dir=tmp_path))
    assert mode(tmp_path / "api-key") == 0o600 and mode(tmp_path / "device-key") == 0o600
    assert settings.device_keys == ("lsd_an-existing-device-key-0123",)


async def test_rows_that_cannot_be_read_back_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lockstep.db"
    store = SqliteStore(path)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.write([PutDevice(row())])
            store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE devices SET channels = 'not json'")
    conn.close()
    again = SqliteStore(path)
    with trio.fail_after(TIMEOUT), pytest.raises(StoreError, match=f"^cannot load store {path}: "):
        await again.load()
    again.close()
