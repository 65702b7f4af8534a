"""`lockstep keys create|list|revoke`: named API keys with a scope, kept hashed.

    lockstep keys create ci --channels deploys,ops    # prints the new key, once, on stdout
    lockstep keys create admin                        # scope all
    lockstep keys create ci --channels ops --toml     # a [keys.ci] table for lockstep.toml
    lockstep keys list [--json]
    lockstep keys revoke ci

Created keys go to the key file `<state_dir>/api-keys.json` (0600, only hashes; see
`engine.server.keys`), which a running server re-reads when it changes: a new key works and a
revoked one is refused from the next request on. `--config lockstep.toml` (or `--state-dir`)
points at the same state directory as `lockstep serve`; names in the config's `[keys]` are taken.

`create` prints the key alone on stdout (so `KEY=$(lockstep keys create ci)` works) and what it
did on stderr; it is the only time the key is shown, since only its hash is kept. With `--toml`
nothing is written: stdout gets the `[keys.NAME]` table to paste into `lockstep.toml`, and the
key goes to stderr, so that redirecting stdout into the config never writes the key there.

Exit status: 0 done; 1 refused (a taken name, an unknown key, a bad scope, a broken config or key
file; the reason on stderr); 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.config import ConfigError
from engine.server.contract.scope import KeyScope
from engine.server.keys import (
    DEFAULT_NAME,
    KeyFile,
    NamedKey,
    check_name,
    hash_key,
    new_key,
    parse_scope,
)
from engine.server.settings import Settings, load_settings

__all__ = ["register", "scope_of"]


def scope_of(name: str, channels: str | None) -> KeyScope:
    """The scope `--channels a,b` asks for (none: scope `all`)."""
    if channels is None:
        return KeyScope(name)
    listed = [c.strip() for c in channels.split(",") if c.strip()]
    return parse_scope(listed, "--channels", name)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, state_dir=args.state_dir)


def _toml_table(name: str, digest: str, scope: KeyScope) -> str:
    value = '"all"' if scope.channels is None else json.dumps(sorted(scope.channels))
    return f'[keys.{name}]\nhash = "{digest}"\nscope = {value}\n'


def _create(args: argparse.Namespace) -> int:
    name = check_name(args.name, "key name")
    scope = scope_of(name, args.channels)
    settings = _settings(args)
    taken = [k.name for k in settings.named_keys]
    if args.toml:
        if name in taken:
            raise ConfigError(f"a key named {name!r} already exists (in the config file)")
        if name in {k.name for k in KeyFile(settings.key_file).read()}:
            raise ConfigError(f"a key named {name!r} already exists (in {settings.key_file})")
        key = new_key()
        sys.stdout.write(_toml_table(name, hash_key(key), scope))
        print(
            f"API key {name!r} (shown once; only its hash is in the table): {key}", file=sys.stderr
        )
        return 0
    key = KeyFile(settings.key_file).create(name, scope, reserved=taken)
    print(key)
    print(
        f"created API key {name!r} (scope: {scope.describe()}), kept hashed in "
        f"{settings.key_file}; this is the only time it is shown",
        file=sys.stderr,
    )
    return 0


def _rows(settings: Settings) -> list[dict[str, str]]:
    default_origin = settings.api_key_origin.describe()
    if not settings.api_keys:
        default_origin = f"in {settings.state_dir / 'api-key'}"
    rows = [{"name": DEFAULT_NAME, "scope": "all", "source": default_origin, "created_at": ""}]
    keys: list[NamedKey] = [*settings.named_keys, *KeyFile(settings.key_file).read()]
    for key in keys:
        source = "config file" if key.source == "config" else str(settings.key_file)
        rows.append(
            {
                "name": key.name,
                "scope": key.scope.describe(),
                "source": source,
                "created_at": key.created_at or "",
            }
        )
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = _rows(_settings(args))
    if args.json:
        print(json.dumps({"keys": rows}, indent=2))
        return 0
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in ("name", "scope", "created_at")}
    head = ("NAME", "SCOPE", "CREATED", "KEPT")
    print(
        f"{head[0]:<{widths['name']}}  {head[1]:<{widths['scope']}}  "
        f"{head[2]:<{widths['created_at']}}  {head[3]}"
    )
    for r in rows:
        print(
            f"{r['name']:<{widths['name']}}  {r['scope']:<{widths['scope']}}  "
            f"{r['created_at']:<{widths['created_at']}}  {r['source']}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.name == DEFAULT_NAME:
        raise ConfigError(
            "the default key is not in the key file: change [server].api_keys or "
            f"$LOCKSTEP_API_KEY, or delete {settings.state_dir / 'api-key'} for a new one"
        )
    if any(k.name == args.name for k in settings.named_keys):
        raise ConfigError(
            f"key {args.name!r} is configured in the config file: remove its [keys.{args.name}] "
            "table there and restart the server"
        )
    KeyFile(settings.key_file).revoke(args.name)
    print(
        f"revoked API key {args.name!r}; a running server refuses it from its next request on",
        file=sys.stderr,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.action(args))
    except ConfigError as exc:
        print(f"lockstep keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the state directory or key file cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"lockstep keys: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lockstep keys create|list|revoke`."""
    p = sub.add_parser("keys", help="named API keys with a scope: create, list, revoke")

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(handler=usage)
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, default=None, help="lockstep.toml (as for serve)")
        q.add_argument("--state-dir", type=Path, default=None, help="default ./lockstep-data")
        q.set_defaults(handler=_run)

    c = actions.add_parser("create", help="create a key and print it (once)")
    c.add_argument("name", help="1-64 letters, digits, '_', '.', '-'")
    c.add_argument("--channels", default=None, help="a,b: reach only these channels")
    c.add_argument(
        "--toml", action="store_true", help="print a [keys.NAME] table instead of storing it"
    )
    common(c)
    c.set_defaults(action=_create)

    ls = actions.add_parser("list", help="every key's name, scope and where it is kept")
    ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    common(ls)
    ls.set_defaults(action=_list)

    r = actions.add_parser("revoke", help="remove a created key")
    r.add_argument("name")
    common(r)
    r.set_defaults(action=_revoke)
