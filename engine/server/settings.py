"""Server settings: `lockstep.toml`, environment variables and command-line flags, in that order.

    [server]
    host = "127.0.0.1"
    port = 8787
    db = "lockstep-data/lockstep.db"
    api_keys = ["..."]            # or LOCKSTEP_API_KEY (comma-separated)
    device_keys = ["..."]         # or LOCKSTEP_DEVICE_KEY (comma-separated)
    max_connections = 1024        # HTTP connections at once; when full, the longest-idle one
                                  # is closed for a new client (never one being answered)
    head_timeout = 10.0           # seconds for a whole request head (from its first byte;
                                  # a new connection's first head: from the accept)
    body_timeout = 30.0           # seconds for a whole request body, from the end of its head
    idle_timeout = 60.0           # seconds a keep-alive connection may wait for its next request
    send_timeout = 30.0           # seconds for the client to take an answer
    http_parser = "httptools"     # or "h11": the same HTTP/1.1 front with h11 parsing (slower)
    storage_retry_after = 5       # `Retry-After` (s) of a 503 storage_unavailable
    access_log = true             # one log line per request (--no-access-log turns it off)
    log_format = "text"           # or "json" (--log-format): one JSON object per log line
    workers = 1                   # processes sharing the port (--workers); > 1 needs PostgreSQL

    [cluster]
    node_id = "web-1"             # this process's name among the nodes (default: <host>-<pid>;
                                  # LOCKSTEP_NODE_ID overrides; workers get <node_id>-w<i>)

    [store]                       # leave out for SQLite at [server] db
    url = "postgresql://lockstep@db.example:5432/lockstep"   # or "sqlite:///path/to/lockstep.db"

    [apns]                        # leave out to run against the built-in simulator
    team_id = "ABCDE12345"
    key_id = "KEY1234567"
    key_path = "AuthKey_KEY1234567.p8"
    bundle_id = "com.example.app"
    environment = "sandbox"       # or "production"

    [delivery]                    # any field of engine.config.DeliveryConfig
    connections = 4

    [live]                        # any field of engine.server.service.LiveConfig
    notify_wait = 0.25
    device_limit = 5              # Live Activities a device shows at once
    limit_policy = "end_oldest"   # or "refuse" (429 live_activity_limit)

    [keys.ci]                     # named API keys (engine/server/keys.py), any number
    hash = "sha256:..."           # the key's hash, never the key (`lockstep keys create --toml`)
    scope = ["deploys"]           # or "all"; a restricted key reaches only these channels

    [simulate]                    # simulate mode only
    devices = 3
    fresh = false                 # true: new phones instead of the ones kept in the state dir
    profile = { low_power = true }  # the simulated iPhones' profile (README, "Device profiles")
    [widgets]                     # widget reload pushes (engine.server.service.widgets)
    daily_budget = 40             # pushes per device per day (WidgetKit's reload budget)
    min_interval = 60             # seconds between two pushes to one device

    [cluster]                     # PostgreSQL stores only (engine/server/cluster/config.py)
    node_id = "api-1"             # default <hostname>-<pid>; lease_ttl, listen, advertise, ...

    [[webhooks]]                  # inbound webhooks (engine.server.webhooks.config), any number
    name = "github"               # POST /api/webhooks/github
    kind = "github"               # or "generic" (JSON pointers: stream_key, [webhooks.map], ...)
    secret = "..."                # at least 16 characters; or secret_env = "VARIABLE"
    channels = ["ops"]

Without `[apns]` the server runs in simulate mode: the simulator is started in-process as its
APNs, with `simulate.devices` simulated iPhones registered through the device API. Keys that are
not configured anywhere are generated once and kept (mode 0600) in the state directory, so a
newcomer's key stays the same from run to run. Each scope's `KeyOrigin` records where its keys
came from, so that the start-up banner can name the file or variable instead of printing a key.

Those default API keys have scope `all`. Named keys with a scope come from `[keys.NAME]` tables
here and from the key file `<state_dir>/api-keys.json` that `lockstep keys` edits
(`Settings.key_file`); both hold only hashes.
"""

from __future__ import annotations

import math
import os
import secrets
import shlex
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from engine.config import ApnsEndpoint, ConfigError, Credentials, DeliveryConfig
from engine.server.cluster.config import ClusterSettings
from engine.server.files import private_file
from engine.server.http.h11server import DEFAULT_PARSER, PARSERS, H11Limits
from engine.server.keys import KEY_FILE_NAME, NamedKey, parse_config_keys
from engine.server.logs import FORMATS, LogFormat
from engine.server.service.live import LiveConfig
from engine.server.service.widgets import WidgetConfig
from engine.server.webhooks.config import WebhookConfig

DEFAULT_STATE_DIR = Path("lockstep-data")


@dataclass(frozen=True, slots=True)
class KeyOrigin:
    """Where one scope's keys come from: a key `file`, an `env` variable or the `config` file.

    `where` is the file's path, the variable's name or the config file's path ("" when the keys
    were handed over in code).
    """

    kind: Literal["file", "env", "config"] = "config"
    where: str = ""

    def describe(self) -> str:
        """Where the key is, in words, for the banner (never the key itself)."""
        if self.kind == "file":
            return f"in {self.where}"
        if self.kind == "env":
            return f"the first of ${self.where}"
        return f"the first of [server] {self.where or 'keys configured'}"

    def shell(self) -> str | None:
        """A shell expression that yields the (first) key, or None when there is none."""
        if self.kind == "file":
            return f"$(cat {shlex.quote(self.where)})"
        if self.kind == "env":
            return f"${{{self.where}%%,*}}"  # the first of a comma-separated list
        return None


@dataclass(frozen=True, slots=True)
class SimulateSettings:
    """The in-process simulator of simulate mode."""

    devices: int = 3
    control_port: int | None = 8790
    seed: int = 0
    fresh: bool = False  # True: new phones, not the ones kept in <state_dir>/simulator
    profile: dict[str, Any] = field(default_factory=dict)  # the simulated iPhones' profile


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `lockstep serve` needs."""

    host: str = "127.0.0.1"
    port: int = 8787
    state_dir: Path = DEFAULT_STATE_DIR
    db: Path | None = None  # default: <state_dir>/lockstep.db
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    device_keys: tuple[str, ...] = field(default=(), repr=False)
    credentials: Credentials | None = None  # None: simulate mode
    endpoint: ApnsEndpoint = field(default_factory=ApnsEndpoint)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    simulate: SimulateSettings = field(default_factory=SimulateSettings)
    widgets: WidgetConfig = field(default_factory=WidgetConfig)
    max_body: int = 64 * 1024
    record: Path | None = None
    api_key_origin: KeyOrigin = field(default_factory=KeyOrigin)
    device_key_origin: KeyOrigin = field(default_factory=KeyOrigin)
    http: H11Limits = field(default_factory=H11Limits)  # the HTTP front's bounds ([server])
    storage_retry_after: float = 5.0  # `Retry-After` of a 503 storage_unavailable (s)
    access_log: bool = True  # one `lockstep.access` line per request (engine.server.logs)
    log_format: LogFormat = "text"
    named_keys: tuple[NamedKey, ...] = ()  # `[keys.NAME]` of lockstep.toml (hashes and scopes)
    # `[store] url` when it names a PostgreSQL database (None: SQLite at `db_path`); it may hold
    # a password, so it is never shown (`store_where` is).
    store_url: str | None = field(default=None, repr=False)
    # `[cluster]`: used on a PostgreSQL store, where every server is a cluster node
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    workers: int = 1  # `[server] workers` / --workers: processes sharing the port (cli/workers.py)
    # This process's name among the nodes sharing a database (LOCKSTEP_NODE_ID, else
    # `[cluster] node_id`, else `<hostname>-<pid>`); `lockstep serve --workers N` gives each worker
    # its own (`<node_id or hostname>-w<i>`), stable across that worker's restarts.
    node_id: str = field(default_factory=lambda: default_node_id())

    @property
    def key_file(self) -> Path:
        """The key file `lockstep keys` edits and the server reads (`engine.server.keys`)."""
        return self.state_dir / KEY_FILE_NAME

    webhooks: tuple[WebhookConfig, ...] = ()  # inbound webhooks ([[webhooks]]; secrets not in repr)

    @property
    def db_path(self) -> Path:
        """Where the SQLite database lives."""
        return self.db or self.state_dir / "lockstep.db"

    @property
    def store_where(self) -> str:
        """The database for messages and the banner: the SQLite file, or PostgreSQL's
        `host:port/dbname` (never the URL's user or password)."""
        if self.store_url is None:
            return str(self.db_path)
        # The netloc after any `user:password@`; the path is the database name.
        parts = urlsplit(self.store_url)
        host = parts.netloc.rpartition("@")[2] or "localhost"
        return f"PostgreSQL {host}{parts.path}"

    @property
    def simulated(self) -> bool:
        """True when no APNs credentials are configured."""
        return self.credentials is None


def load_settings(path: Path | None, env: dict[str, str] | None = None, **flags: Any) -> Settings:
    """Read `path` (optional), then the environment, then non-None `flags`."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {
        "server",
        "apns",
        "delivery",
        "live",
        "simulate",
        "keys",
        "widgets",
        "webhooks",
        "store",
        "cluster",
    }
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    server = data.get("server", {})
    unknown = set(server) - _SERVER_KEYS
    if unknown:
        raise ConfigError(
            f"[server]: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_SERVER_KEYS))}"
        )
    db, store_url = _store(data.get("store", {}), server.get("db"))
    settings = Settings(
        host=server.get("host", "127.0.0.1"),
        port=int(server.get("port", 8787)),
        state_dir=Path(server.get("state_dir", DEFAULT_STATE_DIR)),
        db=db,
        store_url=store_url,
        api_keys=_keys(server.get("api_keys"), env.get("LOCKSTEP_API_KEY"), "server.api_keys"),
        device_keys=_keys(
            server.get("device_keys"), env.get("LOCKSTEP_DEVICE_KEY"), "server.device_keys"
        ),
        delivery=_section(DeliveryConfig, data.get("delivery", {}), "delivery"),
        live=_section(LiveConfig, data.get("live", {}), "live"),
        simulate=_section(SimulateSettings, data.get("simulate", {}), "simulate"),
        widgets=_widgets(data.get("widgets", {})),
        max_body=int(server.get("max_body", 64 * 1024)),
        api_key_origin=_origin(env, "LOCKSTEP_API_KEY", path, "api_keys"),
        device_key_origin=_origin(env, "LOCKSTEP_DEVICE_KEY", path, "device_keys"),
        http=_http_limits(server),
        storage_retry_after=_seconds(server, "storage_retry_after", 5.0),
        access_log=_flag(server, "access_log", True),
        log_format=_log_format(server.get("log_format", "text")),
        named_keys=parse_config_keys(data["keys"]) if "keys" in data else (),
        webhooks=_webhooks(data.get("webhooks", []), env),
        cluster=_cluster(data.get("cluster", {})),
        workers=_workers(server.get("workers", 1)),
        node_id=_node_id(data.get("cluster", {}), env),
    )
    if "apns" in data:
        settings = _with_apns(settings, data["apns"], base=path.parent if path else Path())
    overrides = {k: v for k, v in flags.items() if v is not None}
    if settings.store_url is not None and overrides.get("db") is not None:
        raise ConfigError("--db names a SQLite file but [store].url names PostgreSQL; keep one")
    if "workers" in overrides:
        overrides["workers"] = _workers(overrides["workers"], "--workers")
    return replace(settings, **overrides)


NODE_ID_ENV = "LOCKSTEP_NODE_ID"
"""The variable naming this process's node; `lockstep serve --workers N` sets it per worker."""

_NODE_ID_MAX = 64


def default_node_id() -> str:
    """`<hostname>-<pid>`: unique among the processes of one machine and across machines."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _node_id(cluster: Any, env: dict[str, str]) -> str:
    """`[cluster] node_id`, overridden by `LOCKSTEP_NODE_ID`; default `<hostname>-<pid>`."""
    if not isinstance(cluster, dict):
        raise ConfigError("[cluster]: must be a table")  # its other keys: `_cluster`
    if env.get(NODE_ID_ENV):
        value: Any = env[NODE_ID_ENV]
        where = NODE_ID_ENV
    elif "node_id" in cluster:
        value, where = cluster["node_id"], "[cluster].node_id"
    else:
        return default_node_id()
    # Printable ASCII without spaces: it names the node in logs, headers and database rows.
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _NODE_ID_MAX
        or not all("!" <= c <= "~" for c in value)
    ):
        raise ConfigError(
            f"{where}: must be 1 to {_NODE_ID_MAX} printable ASCII characters without spaces, "
            f"got {value!r}"
        )
    return value


def _workers(value: Any, where: str = "[server].workers") -> int:
    """`[server] workers` / --workers: a positive number of processes."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(f"{where}: must be a whole number from 1 to 256, got {value!r}")
    return value


_STORE_KEYS = frozenset({"url"})
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite:///"


def _store(store: Any, db: Any) -> tuple[Path | None, str | None]:
    """`[store]` (and `[server] db`): the SQLite file, or the PostgreSQL URL.

    `url` absent: SQLite at `[server] db` (or the state dir's). `sqlite:///PATH`: SQLite at PATH
    (`sqlite:////var/lib/x.db` is absolute). `postgresql://...` (or `postgres://`): PostgreSQL.
    """
    if not isinstance(store, dict):
        raise ConfigError("[store]: must be a table")
    unknown = set(store) - _STORE_KEYS
    if unknown:
        raise ConfigError(f"[store]: unknown key(s) {', '.join(sorted(unknown))}; known: url")
    path = Path(db) if db is not None else None
    if "url" not in store:
        return path, None
    url = store["url"]
    if not isinstance(url, str):
        raise ConfigError("[store].url: must be a string")
    if db is not None:
        raise ConfigError("[store].url and [server].db both name the database; keep one")
    if url.startswith(_SQLITE_SCHEME) and len(url) > len(_SQLITE_SCHEME):
        return Path(url.removeprefix(_SQLITE_SCHEME)), None
    if url.startswith(_POSTGRES_SCHEMES) and len(url) > len("postgres://"):
        return None, url
    # Never echo the URL: it may hold a password.
    raise ConfigError(
        "[store].url: must start with postgresql:// (a PostgreSQL database) or "
        "sqlite:/// followed by a path"
    )


def ensure_keys(settings: Settings) -> Settings:
    """Fill in missing API / device keys from (or into) the state directory."""
    api, api_origin = settings.api_keys, settings.api_key_origin
    if not api:
        api, api_origin = _stored_key(settings.state_dir / "api-key", "lsk_")
    dev, dev_origin = settings.device_keys, settings.device_key_origin
    if not dev:
        dev, dev_origin = _stored_key(settings.state_dir / "device-key", "lsd_")
    if set(api) & set(dev):
        raise ConfigError("an API key must not also be a device key (separate scopes)")
    return replace(
        settings,
        api_keys=tuple(api),
        device_keys=tuple(dev),
        api_key_origin=api_origin,
        device_key_origin=dev_origin,
    )


def _stored_key(path: Path, prefix: str) -> tuple[tuple[str], KeyOrigin]:
    origin = KeyOrigin("file", str(path))
    if path.exists():
        private_file(path)  # a key file someone made readable to all is tightened (and logged)
        key = path.read_text().strip()
        if key:
            return (key,), origin
    path.parent.mkdir(parents=True, exist_ok=True)
    key = prefix + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return (key,), origin


def _origin(env: dict[str, str], var: str, config: Path | None, name: str) -> KeyOrigin:
    """Where `_keys` takes a scope's keys from (the variable wins over the config file)."""
    if env.get(var):
        return KeyOrigin("env", var)
    return KeyOrigin("config", f"{name} in {config}" if config is not None else name)


_SECTIONS = frozenset(
    {"server", "apns", "delivery", "live", "simulate", "keys", "widgets", "webhooks"}
)
_HTTP_KEYS = ("max_connections", "head_timeout", "body_timeout", "idle_timeout", "send_timeout")
_SERVER_KEYS = frozenset(
    {
        "host",
        "port",
        "state_dir",
        "db",
        "api_keys",
        "device_keys",
        "max_body",
        "storage_retry_after",
        "access_log",
        "log_format",
        "http_parser",
        "workers",
        *_HTTP_KEYS,
    }
)


def _flag(server: dict[str, Any], key: str, default: bool) -> bool:
    """A `[server]` key that is true or false."""
    value = server.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"[server].{key}: must be true or false, got {value!r}")
    return value


def _log_format(value: Any) -> LogFormat:
    """`[server].log_format`: one of `FORMATS`."""
    for fmt in FORMATS:
        if value == fmt:
            return fmt
    raise ConfigError(f"[server].log_format: must be one of {', '.join(FORMATS)}, got {value!r}")


def _seconds(server: dict[str, Any], key: str, default: float) -> float:
    """A `[server]` key that is a positive finite number of seconds."""
    value = server.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"[server].{key}: must be a positive number of seconds, got {value!r}")
    return float(value)


def _http_limits(server: dict[str, Any]) -> H11Limits:
    """The HTTP front's bounds from `[server]`: a positive count and positive finite seconds."""
    values: dict[str, Any] = {}
    for key in _HTTP_KEYS:
        if key not in server:
            continue
        value = server[key]
        integral = key == "max_connections"
        kinds = (int,) if integral else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value < math.inf:
            kind = "a positive integer" if integral else "a positive number of seconds"
            raise ConfigError(f"[server].{key}: must be {kind}, got {value!r}")
        values[key] = value if integral else float(value)
    parser = server.get("http_parser", DEFAULT_PARSER)
    if parser not in PARSERS:
        raise ConfigError(
            f"[server].http_parser: must be one of {', '.join(PARSERS)}, got {parser!r}"
        )
    return H11Limits(**values, parser=parser)


def _keys(configured: Any, from_env: str | None, name: str) -> tuple[str, ...]:
    if from_env:
        configured, name = [k.strip() for k in from_env.split(",") if k.strip()], "env " + name
    if configured is None:
        return ()
    if not isinstance(configured, list) or not all(isinstance(k, str) and k for k in configured):
        raise ConfigError(f"{name}: must be a list of non-empty strings")
    if any(len(k) < 16 for k in configured):
        raise ConfigError(f"{name}: keys must be at least 16 characters")
    return tuple(configured)


WEBHOOK_KEYS = frozenset(
    {
        "name",
        "kind",
        "secret",
        "secret_env",
        "channels",
        "auto_dismiss_minutes",
        "keep",
        "stream_key",
        "map",
        "set",
        "end",
        "end_values",
    }
)
"""The keys of a `[[webhooks]]` entry."""


def _webhooks(entries: Any, env: dict[str, str]) -> tuple[WebhookConfig, ...]:
    """`[[webhooks]]`: each entry checked (`WebhookConfig`), names unique. The secret comes from
    `secret` or from the variable `secret_env` names; no message ever shows it."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("webhooks: must be an array of tables ([[webhooks]] entries)")
    out: list[WebhookConfig] = []
    for index, entry in enumerate(entries):
        where = f"[[webhooks]] #{index + 1} ({entry.get('name', 'no name')!r})"
        unknown = set(entry) - WEBHOOK_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(WEBHOOK_KEYS))}"
            )
        for key in ("name", "kind"):
            if not isinstance(entry.get(key), str):
                raise ConfigError(f"{where}.{key}: required, a string")
        values = dict(entry)
        variable = values.pop("secret_env", None)
        if variable is not None:
            if "secret" in values:
                raise ConfigError(f"{where}: give secret or secret_env, not both")
            if not isinstance(variable, str) or not env.get(variable):
                raise ConfigError(f"{where}.secret_env: the variable {variable!r} is not set")
            values["secret"] = env[variable]
        if "secret" not in values:
            raise ConfigError(f"{where}.secret: required (or secret_env)")
        for key in ("channels", "end_values"):
            if key in values:
                if not isinstance(values[key], list):
                    raise ConfigError(f"{where}.{key}: must be an array")
                values[key] = tuple(values[key])
        for key in ("map", "set"):
            if key in values and not isinstance(values[key], dict):
                raise ConfigError(f"{where}.{key}: must be a table ([webhooks.{key}])")
        try:
            cfg = WebhookConfig(**values)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if any(c.name == cfg.name for c in out):
            raise ConfigError(f"[[webhooks]]: the name {cfg.name!r} is used twice")
        out.append(cfg)
    return tuple(out)


def _section(cls: Any, values: dict[str, Any], name: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(names))}"
        )
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{name}]: {exc}") from None


def _cluster(values: Any) -> ClusterSettings:
    if not isinstance(values, dict):
        raise ConfigError("[cluster]: must be a table")
    try:
        config: ClusterSettings = _section(ClusterSettings, values, "cluster")
    except ConfigError:
        raise
    except ValueError as exc:  # ClusterSettings checks its own bounds
        raise ConfigError(f"[cluster]: {exc}") from None
    return config


def _widgets(values: dict[str, Any]) -> WidgetConfig:
    try:
        config: WidgetConfig = _section(WidgetConfig, values, "widgets")
    except ConfigError:
        raise
    except ValueError as exc:  # WidgetConfig checks its own bounds
        raise ConfigError(f"[widgets]: {exc}") from None
    return config


def _with_apns(settings: Settings, apns: dict[str, Any], *, base: Path) -> Settings:
    required = ("team_id", "key_id", "key_path", "bundle_id")
    missing = [k for k in required if not apns.get(k)]
    if missing:
        raise ConfigError(f"[apns]: missing {', '.join(missing)}")
    env = apns.get("environment", "production")
    if env not in ("sandbox", "production"):
        raise ConfigError(f"[apns].environment must be 'sandbox' or 'production', got {env!r}")
    key_path = Path(apns["key_path"])
    if not key_path.is_absolute():
        key_path = base / key_path
    if not key_path.exists():
        raise ConfigError(f"[apns].key_path: {key_path} does not exist")
    creds = Credentials(apns["team_id"], apns["key_id"], key_path, apns["bundle_id"])
    endpoint = ApnsEndpoint.apple(sandbox=env == "sandbox", port=int(apns.get("port", 443)))
    return replace(settings, credentials=creds, endpoint=endpoint)
