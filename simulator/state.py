"""Simulated iPhones that survive a restart: the device registry kept in `<state dir>/devices.json`.

With a state directory, a restarted simulator (standalone, or inside `lockstep serve`) finds its
devices as they were: their tokens (live and dead: a dismissed activity's token still answers 410),
profiles, activities with their shown and held states, event logs, budgets, the pushes APNs keeps
for offline devices, and the token generator, so new tokens never repeat old ones. A restart looks
like a server restart, not like new phones. Time-based changes (stale, the 8 h lifetime, held
updates falling due) are recomputed from the saved dates when the simulator comes back.

The file holds device tokens, so it is written 0600, atomically (a temporary file renamed over the
old one): a crash leaves the previous save or the new one, never half of one. `StateKeeper.run`
saves at most every `interval` seconds while something changed, and once more when it stops.
A damaged file stops the simulator with a message naming it (nothing is overwritten); `fresh`
starts with new phones instead and replaces the file on the first save.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import msgspec
import trio

from simulator.devices import DeviceRegistry

STATE_FILE: Final = "devices.json"
VERSION: Final = 1

log = logging.getLogger("lockstep.simulator.state")


class StateError(OSError):
    """The saved devices cannot be read back; the message names the file and what is wrong.

    An OSError, as any other unusable file is, so `lockstep serve` reports it the same way.
    """


def save(registry: DeviceRegistry, path: Path) -> None:
    """Write the registry to `path` atomically, readable by its owner only."""
    data = msgspec.json.encode({"version": VERSION, **registry.export_state()})
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


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

    def __init__(self, registry: DeviceRegistry, path: Path, *, interval: float = 1.0) -> None:
        """Keep `registry` in `path`, saving at most every `interval` seconds."""
        self.registry = registry
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
        """Save every `interval` seconds while something changed; save once more when cancelled."""
        try:
            while True:
                await trio.sleep(self.interval)
                self._save_logged()
        finally:
            self._save_logged()

    def _save_logged(self) -> None:
        """Save, logging (never raising) a disk error: the simulator keeps serving."""
        try:
            self.save_if_changed()
        except OSError as exc:
            log.warning("could not save the simulated devices to %s: %s", self.path, exc)
