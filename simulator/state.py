"""Simulated iPhones that survive a restart: the device registry kept in `<state dir>/devices.json`.

With a state directory, a restarted simulator (standalone, or inside `lockstep serve`) finds its
devices as they were: their tokens (live and dead: a dismissed activity's token still answers 410),
profiles, activities with their shown and held states, event logs, budgets, the pushes APNs keeps
for offline devices, and the token generator, so new tokens never repeat old ones. A restart looks
like a server restart, not like new phones. Time-based changes (stale, the 8 h lifetime, held
updates falling due) are recomputed from the saved dates when the simulator comes back.

The file holds device tokens, so it is written 0600, atomically (a temporary file renamed over the
old one, then the folder synced): a crash leaves the previous save or the new one, never half of
one. `StateKeeper.run` saves at most every `interval` seconds while something changed, writing in a
worker thread, and once more when it stops.
A damaged file stops the simulator with a message naming it (nothing is overwritten); `fresh`
starts with new phones instead and replaces the file on the first save.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import msgspec
import trio

from simulator.devices import DeviceRegistry

OffLoop = Callable[[Callable[[Path, bytes], None], Path, bytes], Awaitable[None]]
"""How a state write is run away from the trio loop (`trio.to_thread.run_sync` by default)."""

STATE_FILE: Final = "devices.json"
VERSION: Final = 1

log = logging.getLogger("lockstep.simulator.state")


class StateError(OSError):
    """The saved devices cannot be read back; the message names the file and what is wrong.

    An OSError, as any other unusable file is, so `lockstep serve` reports it the same way.
    """


def encode(registry: DeviceRegistry) -> bytes:
    """The registry as the bytes of a state file (quick: msgspec; the I/O is `write_atomic`)."""
    return msgspec.json.encode({"version": VERSION, **registry.export_state()})


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically, readable by its owner only, durably."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode otherwise
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def save(registry: DeviceRegistry, path: Path) -> None:
    """Write the registry to `path` atomically, readable by its owner only."""
    write_atomic(path, encode(registry))


def load(registry: DeviceRegistry, path: Path) -> bool:
    """Restore the registry from `path`; False when there is no saved state yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    try:
        state = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise StateError(f"{path} is not valid JSON; start with --fresh to replace it") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise StateError(f"{path} is not a version-{VERSION} device file; --fresh replaces it")
    try:
        registry.restore_state(state)
    except ValueError as exc:
        raise StateError(f"{path}: {exc}; start with --fresh to replace it") from None
    return True


class StateKeeper:
    """Saves a registry to its state file while the simulator runs (the thin trio shell)."""

    def __init__(
        self,
        registry: DeviceRegistry,
        path: Path,
        *,
        interval: float = 1.0,
        off_loop: OffLoop = trio.to_thread.run_sync,
    ) -> None:
        """Keep `registry` in `path`, saving at most every `interval` seconds; `off_loop` runs
        the write away from the trio loop (tests pass one that runs it in place)."""
        self.registry = registry
        self._off_loop = off_loop
        self.path = path
        self.interval = interval
        self.saved_at_change = -1  # `registry.changes` at the last save
        self.saves = 0

    def save_if_changed(self) -> bool:
        """Save now if anything changed since the last save; True when it wrote."""
        if self.registry.changes == self.saved_at_change:
            return False
        changes = self.registry.changes
        save(self.registry, self.path)
        self.saved_at_change = changes
        self.saves += 1
        return True

    async def run(self) -> None:
        """Save every `interval` seconds while something changed; save once more when cancelled.

        The registry is encoded on the trio thread (it must not change meanwhile) and written in
        a worker thread, so the disk never stalls the APNs connections.
        """
        try:
            while True:
                await trio.sleep(self.interval)
                if self.registry.changes == self.saved_at_change:
                    continue
                changes, data = self.registry.changes, encode(self.registry)
                try:
                    await self._off_loop(write_atomic, self.path, data)
                except OSError as exc:
                    log.warning("could not save the simulated devices to %s: %s", self.path, exc)
                    continue
                self.saved_at_change = changes
                self.saves += 1
        finally:
            self._save_logged()

    def _save_logged(self) -> None:
        """Save, logging (never raising) a disk error: the simulator keeps serving."""
        try:
            self.save_if_changed()
        except OSError as exc:
            log.warning("could not save the simulated devices to %s: %s", self.path, exc)
