"""Named API keys: each with a scope, kept only as a hash, checked in constant time.

Two places hold them, and the server reads both:
- `lockstep.toml`, one table per key (written by hand, e.g. from `lockstep keys create --toml`):

      [keys.ci]
      hash = "sha256:9f2c..."       # never the key itself
      scope = ["deploys", "ops"]    # or scope = "all"

- the key file, `<state_dir>/api-keys.json` (mode 0600), which `lockstep keys create|revoke`
  edit. The server looks at the file's identity (inode, size, mtime) on every authenticated call
  and reloads it when it changed, so a key created or revoked from the shell works, or stops
  working, from the next request on, without a restart. The file is replaced atomically (write a
  0600 temporary, fsync, rename), so the server never reads half a file; edits are serialised
  with a lock file beside it.

The default API key(s) (`[server].api_keys`, `$LOCKSTEP_API_KEY` or the generated `api-key`
file) keep working with scope `all`; they are the key ring's `plain` entries.

Keys are random (`lsk_` + 32 random bytes, URL-safe), so one SHA-256 of the key, with a fixed
domain prefix, is as hard to invert as the key is to guess; a slow password hash would only slow
every request down. Authentication hashes the presented key once and compares the digest with
every stored one with `hmac.compare_digest`, without stopping at a match, so neither which key
matched nor how much of it did shows in the timing. No key, hash or digest is ever logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from engine.config import ConfigError
from engine.server.contract.models import CHANNEL_PATTERN, MAX_CHANNELS
from engine.server.contract.scope import FULL_ACCESS, KeyScope
from engine.server.files import OWNER_ONLY, tighten_all

__all__ = [
    "DEFAULT_NAME",
    "KEY_FILE_NAME",
    "KeyFile",
    "KeyRing",
    "NamedKey",
    "check_name",
    "hash_key",
    "new_key",
    "parse_config_keys",
    "parse_scope",
]

log = logging.getLogger("lockstep.keys")

KEY_FILE_NAME: Final = "api-keys.json"
"""The key file `lockstep keys` edits, in the server's state directory."""
DEFAULT_NAME: Final = "default"
"""The name of the default API key(s); no named key may take it."""
_STATE_DIR_MODE: Final = 0o700  # a state directory the CLI creates is as private as serve's
_PREFIX: Final = "sha256:"
_DOMAIN: Final = b"lockstep-api-key\x00"  # a digest of a key is never a digest of anything else
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_CHANNEL: Final = re.compile(CHANNEL_PATTERN[1:-1])
Source = Literal["default", "config", "file"]


def new_key() -> str:
    """A fresh API key: `lsk_` and 32 random bytes, URL-safe base64."""
    return "lsk_" + secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    """What is stored instead of `key`: `sha256:<64 hex digits>`."""
    raw = key.encode() if isinstance(key, str) else key
    return _PREFIX + hashlib.sha256(_DOMAIN + raw).hexdigest()


def check_name(name: object, where: str) -> str:
    """A key name: 1-64 letters, digits, `_ . -`, starting with a letter or digit."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(
            f"{where}: a key name is 1-64 letters, digits, '_', '.' or '-' (starting with a "
            f"letter or digit), got {name!r}"
        )
    if name == DEFAULT_NAME:
        raise ConfigError(f"{where}: {DEFAULT_NAME!r} names the server's default API key")
    return name


def parse_scope(value: object, where: str, name: str) -> KeyScope:
    """`"all"`, or a non-empty list of channel slugs (the device API's channel rules)."""
    if value == "all":
        return KeyScope(name)
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f'{where}: scope must be "all" or a non-empty list of channels, got {value!r}'
        )
    if len(value) > MAX_CHANNELS:
        raise ConfigError(f"{where}: scope lists {len(value)} channels; at most {MAX_CHANNELS}")
    for slug in value:
        if not isinstance(slug, str) or _CHANNEL.fullmatch(slug) is None:
            raise ConfigError(
                f"{where}: {slug!r} is not a channel (1-64 of a-z 0-9 '_' '-', starting with a "
                "letter or digit)"
            )
    return KeyScope.restricted_to(name, value)


def _scope_value(scope: KeyScope) -> str | list[str]:
    return "all" if scope.channels is None else sorted(scope.channels)


@dataclass(frozen=True, slots=True)
class NamedKey:
    """One key as stored: its name, the hash of the key, its scope and where it is kept."""

    name: str
    digest: str = field(repr=False)
    scope: KeyScope
    source: Source
    created_at: str | None = None  # ISO-8601 (key file entries)

    def to_json(self) -> dict[str, Any]:
        """The key file's entry."""
        entry: dict[str, Any] = {"name": self.name, "hash": self.digest}
        entry["scope"] = _scope_value(self.scope)
        if self.created_at is not None:
            entry["created_at"] = self.created_at
        return entry


def _entry(name: str, table: Mapping[str, Any], where: str, source: Source) -> NamedKey:
    """One key from a `[keys.NAME]` table or a key file entry."""
    known = {"hash", "scope"} | ({"name", "created_at"} if source == "file" else set())
    unknown = set(table) - known
    if "key" in table:
        raise ConfigError(
            f"{where}: put the key's hash here, never the key itself "
            f'(hash = "sha256:..."; `lockstep keys create {name} --toml` prints one)'
        )
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    digest = table.get("hash")
    if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
        raise ConfigError(f'{where}: hash must be "sha256:" and 64 lower-case hex digits')
    if "scope" not in table:
        raise ConfigError(f'{where}: scope is required: "all" or a list of channels')
    scope = parse_scope(table["scope"], f"{where}.scope", name)
    created = table.get("created_at")
    return NamedKey(name, digest, scope, source, created if isinstance(created, str) else None)


def parse_config_keys(section: object, where: str = "[keys]") -> tuple[NamedKey, ...]:
    """The `[keys.NAME]` tables of `lockstep.toml`."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: must hold one table per key ([keys.NAME])")
    out: list[NamedKey] = []
    for name, table in section.items():
        at = f"[keys.{name}]"
        check_name(name, at)
        if not isinstance(table, dict):
            raise ConfigError(f'{at}: must be a table with hash = "sha256:..." and scope')
        out.append(_entry(name, table, at, "config"))
    _check_unique(out, where)
    return tuple(out)


def _check_unique(keys: Sequence[NamedKey], where: str) -> None:
    names: set[str] = set()
    digests: set[str] = set()
    for key in keys:
        if key.name in names:
            raise ConfigError(f"{where}: key {key.name!r} is there twice")
        if key.digest in digests:
            raise ConfigError(f"{where}: key {key.name!r} has the same key as another one")
        names.add(key.name)
        digests.add(key.digest)


# -- the key file -------------------------------------------------------------------------------


class KeyFile:
    """`<state_dir>/api-keys.json`: the keys `lockstep keys` creates (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[NamedKey, ...]:
        """Every key in the file (none when there is no file); ConfigError when unreadable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot be read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigError(f"{self.path}: not valid JSON") from None
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ConfigError(f'{self.path}: must be {{"keys": [...]}}')
        keys = []
        for i, entry in enumerate(entries):
            where = f"{self.path}: keys[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: must be an object")
            keys.append(_entry(check_name(entry.get("name"), where), entry, where, "file"))
        _check_unique(keys, str(self.path))
        return tuple(keys)

    def write(self, keys: Sequence[NamedKey]) -> None:
        """Replace the file's content atomically (0600 temporary, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=_STATE_DIR_MODE)
        data = json.dumps({"keys": [k.to_json() for k in keys]}, indent=2) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY)
        try:
            os.fchmod(fd, OWNER_ONLY)  # a leftover temporary keeps its old mode otherwise
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the key file's lock (`api-keys.json.lock`) so two edits never lose one."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=_STATE_DIR_MODE)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, OWNER_ONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def create(self, name: str, scope: KeyScope, reserved: Sequence[str] = ()) -> str:
        """Add a new key named `name`; returns the key (the only time it exists in clear).

        `reserved`: names taken elsewhere (`lockstep.toml`), refused like the file's own.
        """
        check_name(name, "key name")
        with self.locked():
            keys = self.read()
            if name in reserved or any(k.name == name for k in keys):
                where = "the config file" if name in reserved else str(self.path)
                raise ConfigError(f"a key named {name!r} already exists (in {where})")
            key = new_key()
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            entry = NamedKey(name, hash_key(key), KeyScope(name, scope.channels), "file", created)
            self.write([*keys, entry])
        return key

    def revoke(self, name: str) -> NamedKey:
        """Remove the key named `name` (ConfigError when the file has no such key)."""
        with self.locked():
            keys = self.read()
            gone = [k for k in keys if k.name == name]
            if not gone:
                raise ConfigError(f"no key named {name!r} in {self.path}")
            self.write([k for k in keys if k.name != name])
        return gone[0]


# -- the server's view -----------------------------------------------------------------------------


_Identity = tuple[int, int, int, int, int]


def _identity(path: Path) -> _Identity | None:
    """What changes whenever the file is replaced or written (a rename changes the ctime)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class KeyRing:
    """Every send key the server accepts, each with its scope; `find` authenticates one.

    `plain` are the default keys (scope `all`), `named` the `lockstep.toml` ones, and `file`
    the key file, reloaded whenever it changes (a file that turns unreadable drops its keys,
    with an error in the log naming the file: a revocation must never be undone by a typo).
    """

    def __init__(
        self,
        plain: Sequence[str] = (),
        named: Sequence[NamedKey] = (),
        file: KeyFile | None = None,
    ) -> None:
        # Empty keys would let "Bearer " through: they are configuration mistakes, never keys.
        fixed = [(hash_key(k).encode(), FULL_ACCESS) for k in plain if k]
        self._fixed = tuple(fixed + [(k.digest.encode(), k.scope) for k in named])
        self._reserved = frozenset(k.name for k in named)
        self._file = file
        self._seen: _Identity | None = None
        self._from_file: tuple[tuple[bytes, KeyScope], ...] = ()
        if file is not None:
            tighten_all(file.path)  # a key file someone opened up is made private (and logged)
            self._load(file, _identity(file.path), strict=True)

    def __repr__(self) -> str:  # digests stay out of reprs as well
        return f"KeyRing({len(self._fixed)} fixed, {len(self._from_file)} from the key file)"

    def find(self, token: bytes) -> KeyScope | None:
        """The scope of the key `token`, or None for an unknown key (constant time)."""
        return self.find_digest(hash_key(token).encode())

    def find_digest(self, digest: bytes) -> KeyScope | None:
        """`find` for a key's digest (`hash_key(token).encode()`): one digest serves several
        rings."""
        self._refresh()
        found: KeyScope | None = None
        for stored, scope in (*self._fixed, *self._from_file):
            if hmac.compare_digest(digest, stored) and found is None:
                found = scope
        return found

    def _refresh(self) -> None:
        if self._file is None:
            return
        seen = _identity(self._file.path)
        if seen != self._seen:
            self._load(self._file, seen, strict=False)

    def _load(self, file: KeyFile, seen: _Identity | None, *, strict: bool) -> None:
        self._seen = seen
        try:
            keys = file.read()
        except ConfigError as exc:
            if strict:
                raise
            log.error("key file ignored, its keys no longer work: %s", exc)
            self._from_file = ()
            return
        clash = sorted(k.name for k in keys if k.name in self._reserved)
        if clash and strict:
            raise ConfigError(
                f"{file.path}: key(s) {', '.join(clash)} also in lockstep.toml; revoke one of them"
            )
        for name in clash:
            log.warning(
                "%s: key %r is also in lockstep.toml; the file's is ignored", file.path, name
            )
        self._from_file = tuple(
            (k.digest.encode(), k.scope) for k in keys if k.name not in self._reserved
        )
