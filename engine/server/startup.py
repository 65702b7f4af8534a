"""Start-up failures of `lockstep serve`, each told in one line that names the port or the file.

A server that cannot start is almost always the user's setup, not a bug: the port is taken, the
`--db` file is something else, the state directory is a file or not theirs. Those failures are
raised (or found) here as values with a message that says which port or which file and what is
wrong with it; `lockstep serve` prints that line and exits non-zero instead of a trio traceback.
Anything not recognised here is a bug and keeps its traceback.

`failure_lines` is the pure part: an exception (trio nurseries wrap even a lone one in an
`ExceptionGroup`) to the exit status and the lines to print, or None when any part of it is not
a start-up failure. The status is 2 when every part is a configuration error (as for a bad flag),
1 otherwise.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

import trio

from engine.config import ConfigError
from engine.server.store.base import StoreError

__all__ = [
    "STATE_DIR_MODE",
    "StartupError",
    "check_state_dir",
    "failure_lines",
    "listen_failure",
    "os_reason",
    "sole_os_error",
]

STATE_DIR_MODE: Final = 0o700
"""A state directory this server creates is its owner's only: it holds the keys and the data."""


class StartupError(Exception):
    """The server cannot start; the message is the line to show (it names the port or file)."""


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in words ("address already in use"), without errno or file."""
    words = exc.strerror or str(exc)
    return words[:1].lower() + words[1:]


def _os_line(exc: OSError) -> str:
    if exc.filename is None:
        return os_reason(exc)
    return f"{exc.filename}: {os_reason(exc)}"


def check_state_dir(path: Path) -> None:
    """Create the state directory (owner-only) or check it is a directory; `StartupError` if not.

    Run before anything is read from or written to it, so that a state dir that is a file, or
    one this user cannot write, is one line naming it rather than a failure deep in the keys,
    the database or the simulator.
    """
    try:
        if path.exists() and not path.is_dir():
            raise StartupError(f"state dir {path} is not a directory")
        path.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    except OSError as exc:
        raise StartupError(f"state dir {path}: {os_reason(exc)}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"state dir {path}: not readable and writable by this user")


def listen_failure(what: str, address: str, exc: OSError, *, hint: str = "") -> StartupError:
    """The failure to listen on `address` ("127.0.0.1:8787") for `what` ("the HTTP API").

    `hint` (how to choose another port) is added when the port is the problem: in use.
    """
    line = f"cannot listen on {address} for {what}: "
    if exc.errno == errno.EADDRINUSE:
        line += "the port is already in use" + (f" ({hint})" if hint else "")
    else:
        line += os_reason(exc)
    return StartupError(line)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def sole_os_error(exc: BaseException) -> OSError | None:
    """The OSError `exc` is, or the only one a (nested) group of them wraps; else None.

    A listener started in a nursery of its own (hypercorn's) fails with a group around the
    OSError, the h11 front with the OSError itself: both are the same failure to listen.
    """
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    if len(leaves) == 1 and isinstance(leaves[0], OSError):
        return leaves[0]
    return None


def failure_lines(exc: BaseException) -> tuple[int, list[str]] | None:
    """The exit status and the lines that tell start-up failure `exc`; None if not one.

    One line per distinct failure. The cancellations a failing start leaves behind in sibling
    tasks are not failures of their own and are left out; any other exception that is not a
    recognised start-up failure makes the whole answer None, so that a bug is never reduced to
    one line.
    """
    lines: list[str] = []
    status = 2
    for leaf in _leaves(exc):
        if isinstance(leaf, trio.Cancelled):
            continue
        if not isinstance(leaf, ConfigError):
            status = 1
        if isinstance(leaf, StartupError | ConfigError | StoreError):
            line = str(leaf)
        elif isinstance(leaf, OSError):
            line = _os_line(leaf)
        else:
            return None
        if line not in lines:
            lines.append(line)
    return (status, lines) if lines else None
