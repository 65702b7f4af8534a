"""Files that hold secrets or tokens: created owner-only (0600), tightened when found open.

The server keeps private things on disk: the API and device keys, the SQLite database with its
`-wal` and `-shm` files (device tokens, metadata, webhook bodies) and the `--record` file (request
bodies). Each is created readable by its owner only, whatever the umask, and one that already
exists with group or other bits set (an older release, a copy, a restored backup) is tightened to
its owner's bits, with a warning naming it; when it cannot be tightened (another user's file) the
warning says so and the server goes on, since refusing to start would not make it less readable.

SQLite creates the `-wal` and `-shm` files with the database file's own mode, so creating the
database 0600 before SQLite opens it is what keeps them private too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["OWNER_ONLY", "create_private", "open_private", "private_file", "tighten", "tighten_all"]

log = logging.getLogger("lockstep.files")

OWNER_ONLY: Final = 0o600
"""The mode of every file this server creates that holds a secret or a token."""

_OPEN_TO_OTHERS: Final = stat.S_IRWXG | stat.S_IRWXO


def tighten(path: Path) -> str | None:
    """Clear the group and other bits of `path` if set; a warning to log, or None.

    A missing file, or anything that is not a regular file, is nothing to do (None). The
    owner's own bits are kept, so a database made read-only on purpose stays read-only.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or not mode & _OPEN_TO_OTHERS:
        return None  # a directory in a file's place is for the opener to report, not to chmod
    try:
        path.chmod(mode & ~_OPEN_TO_OTHERS)
    except OSError as exc:
        return (
            f"{path} is readable by other users (mode {mode:04o}) and could not be made "
            f"private: {exc.strerror or exc}"
        )
    return (
        f"{path} was readable by other users (mode {mode:04o}); now {mode & ~_OPEN_TO_OTHERS:04o}"
    )


def create_private(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (an existing one is left alone)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY))


def tighten_all(path: Path, *companions: str) -> None:
    """`tighten` `path` and its `companions`, logging each warning.

    `companions` are suffixes of sibling files that share its secrets (SQLite's "-wal" and
    "-shm"); those are tightened when they exist, never created.
    """
    for target in (path, *(path.with_name(path.name + s) for s in companions)):
        warning = tighten(target)
        if warning is not None:
            log.warning("%s", warning)


def private_file(path: Path, *companions: str) -> None:
    """Make sure `path` exists owner-only: created 0600 if missing, tightened if open."""
    create_private(path)
    tighten_all(path, *companions)


def open_private(path: Path) -> BinaryIO:
    """Open `path` for writing from scratch (truncated), owner-only even if it existed before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY)
    try:
        # O_CREAT's mode only applies to a new file: an existing one keeps its own until now.
        os.fchmod(fd, OWNER_ONLY)
    except OSError as exc:
        log.warning("%s: could not be made private (mode 0600): %s", path, exc.strerror or exc)
    return os.fdopen(fd, "wb")
