"""What every `lockstep` client subcommand shares: the server and key, the options, one HTTP call.

A subcommand (its own module, registered through the `lockstep.commands` entry points) adds its
options with `add_connection` (always) and, as its route takes them, `add_channels`, `add_tags`
and `add_metadata`; its handler calls `run(args, perform, summarize)`, where `perform` builds and
sends its request(s) through a `Session` and returns the answer to show. `run` turns every outcome
into the exit status and output:

- 0: a 2xx answer: a short summary on stdout (`summarize`), the answer's JSON with `--json`, or
  one field with `--id-only`;
- 1: any non-2xx answer (its message and error code on stderr; with `--json` the error body on
  stdout too), or a server that cannot be reached;
- 2: a usage error (bad option, no key, unreadable file), before any request is sent.

A new subcommand is one module and one entry point, touching no other command:

    # engine/cli/badge.py
    def register(sub):
        p = sub.add_parser("badge", help="set the app icon badge")
        p.add_argument("count", type=int)
        add_connection(p)
        add_channels(p)
        p.set_defaults(handler=lambda args: run(args, lambda s: s.call(
            ApiRequest("POST", "/badge", {"badge": args.count})), summarize_fields))

    # pyproject.toml, [project.entry-points."lockstep.commands"]
    badge = "engine.cli.badge:register"

Server and key (`Session.resolve`): `--url`, else the `[server]` host and port of `--config
lockstep.toml` (or `$LOCKSTEP_CONFIG`), else `$LOCKSTEP_URL`, else http://127.0.0.1:8787/api. Key:
`--key`, else `$LOCKSTEP_API_KEY`, else the config's first `[server].api_keys` entry, else the
first line of `<state_dir>/api-key` (the config's `state_dir`, default `lockstep-data`), the file a
local `lockstep serve` writes. The key is sent only in the `Authorization` header, never printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "DEFAULT_URL",
    "KEY_FILE",
    "ApiRequest",
    "ApiResponse",
    "ClientError",
    "ConfigTarget",
    "Session",
    "UsageError",
    "add_channels",
    "add_connection",
    "add_metadata",
    "add_server",
    "add_tags",
    "channels_of",
    "error_text",
    "load_config",
    "metadata_of",
    "parse_json_object",
    "read_json_file",
    "resolve_key",
    "resolve_url",
    "run",
    "send",
    "split_list",
    "summarize_fields",
    "tags_of",
]

DEFAULT_URL: Final = "http://127.0.0.1:8787/api"
"""Where a locally started `lockstep serve` listens (its API base path)."""

DEFAULT_STATE_DIR: Final = Path("lockstep-data")
KEY_FILE: Final = DEFAULT_STATE_DIR / "api-key"
"""The API key file a local server writes, relative to the working directory."""


class UsageError(Exception):
    """The command line cannot make a valid request (exit status 2)."""


class ClientError(Exception):
    """The server could not be reached or answered with something that is not HTTP."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP API call: method, path below the base URL, and the JSON body (None: no body)."""

    method: str
    path: str
    body: dict[str, Any] | None

    def data(self) -> bytes | None:
        """The encoded body."""
        return None if self.body is None else json.dumps(self.body).encode()


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A server answer: status and the decoded JSON body (the raw text if it is not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300


# -- option values -------------------------------------------------------------------------------


def parse_json_object(text: str, what: str = "--content-state") -> dict[str, Any]:
    """A JSON object given on the command line (or read from a file) for the option `what`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def read_json_file(path: str, what: str) -> dict[str, Any]:
    """The JSON object in the file `path` (`-`: standard input), for the option `what`."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what}: {path} is not UTF-8 text") from None
    return parse_json_object(text, f"{what} {path}")


def split_list(values: Sequence[str] | None) -> list[str]:
    """Repeated and comma-separated values as one list: `["a,b", "c"]` -> `["a", "b", "c"]`."""
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def channels_of(args: argparse.Namespace) -> list[str]:
    """The channels `--channels` names (empty: the key's scope, every device)."""
    return split_list(getattr(args, "channels", None))


def tags_of(args: argparse.Namespace) -> list[str] | None:
    """`tags` for the body: the `--tags` given, `[]` for `--clear-tags`, None to keep them."""
    tags = split_list(getattr(args, "tags", None))
    if getattr(args, "clear_tags", False):
        if tags:
            raise UsageError("--tags and --clear-tags cannot be used together")
        return []
    return tags or None


def metadata_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """`metadata` for the body: `--metadata` or `--metadata-file` (`{}` clears), None to keep."""
    text, path = getattr(args, "metadata", None), getattr(args, "metadata_file", None)
    if text is not None and path is not None:
        raise UsageError("--metadata and --metadata-file cannot be used together")
    if text is not None:
        return parse_json_object(text, "--metadata")
    if path is not None:
        return read_json_file(path, "--metadata-file")
    return None


# -- server and key ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigTarget:
    """What a `lockstep.toml` says about where its server listens and which key it takes."""

    url: str
    key: str | None
    state_dir: Path


def load_config(path: Path, cwd: Path) -> ConfigTarget:
    """Read the `[server]` table of a `lockstep.toml`: host, port, api_keys, state_dir.

    A server listening on every address (`0.0.0.0`, `::`) is reached on loopback. A relative
    `state_dir` is taken from `cwd`, as `lockstep serve` does, else from the config's directory.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise UsageError(f"{path}: [server] must be a table")
    host, port = server.get("host", "127.0.0.1"), server.get("port", 8787)
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        raise UsageError(f"{path}: [server] host must be a string and port an integer")
    keys = server.get("api_keys", [])
    key = next((k.strip() for k in keys if isinstance(k, str) and k.strip()), None)
    state_dir = Path(server.get("state_dir", DEFAULT_STATE_DIR))
    if not state_dir.is_absolute() and not (cwd / state_dir).exists():
        beside = path.parent / state_dir
        state_dir = beside if beside.exists() else cwd / state_dir
    return ConfigTarget(f"http://{_connect_host(host)}:{port}/api", key, state_dir)


def _connect_host(host: str) -> str:
    """The address to connect to for a server bound to `host` (URL form)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass  # a host name
    return host


def resolve_url(flag: str | None, config: ConfigTarget | None, env: Mapping[str, str]) -> str:
    """`--url`, else the config's server, else `$LOCKSTEP_URL`, else the local default."""
    url = flag or (config.url if config else None) or env.get("LOCKSTEP_URL") or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"--url must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def resolve_key(
    flag: str | None, env: Mapping[str, str], cwd: Path, config: ConfigTarget | None = None
) -> str:
    """`--key`, else `$LOCKSTEP_API_KEY`, else the config's key, else `<state_dir>/api-key`."""
    if flag and flag.strip():
        return flag.strip()
    if env.get("LOCKSTEP_API_KEY", "").strip():
        return env["LOCKSTEP_API_KEY"].strip()
    if config is not None and config.key:
        return config.key
    path = config.state_dir / "api-key" if config is not None else cwd / KEY_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise UsageError(f"cannot read the API key file {path}: {exc.strerror}") from None
    key = next((line.strip() for line in lines if line.strip()), "")
    if not key:
        where = f"{path}" if config is not None else f"{KEY_FILE}"
        raise UsageError(
            f"no API key: pass --key, set LOCKSTEP_API_KEY, pass --config, or run where {where} "
            "exists"
        )
    return key


# -- I/O -----------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: they would carry the Authorization header to another place."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect())


def send(request: ApiRequest, *, url: str, key: str, timeout: float) -> ApiResponse:
    """Send one request; any HTTP status is a response, a transport failure a `ClientError`."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    data = request.data()
    if data is not None:
        headers["Content-Type"] = "application/json"
    http_request = urllib.request.Request(
        url + request.path, data=data, headers=headers, method=request.method
    )
    try:
        with _OPENER.open(http_request, timeout=timeout) as answer:
            return ApiResponse(answer.status, _decode(answer.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return ApiResponse(exc.code, _decode(exc.read()))
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise ClientError(f"request to {url} failed: {exc}") from None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Session:
    """Where requests go and with which key; `call` sends one."""

    url: str
    key: str = field(repr=False)  # never in a repr, a traceback or a log line
    timeout: float

    @classmethod
    def resolve(cls, args: argparse.Namespace, env: Mapping[str, str], cwd: Path) -> Session:
        """The session the connection options (and the environment) describe."""
        config_path = args.config or env.get("LOCKSTEP_CONFIG") or None
        config = load_config(Path(config_path), cwd) if config_path else None
        return cls(
            url=resolve_url(args.url, config, env),
            key=resolve_key(args.key, env, cwd, config),
            timeout=args.timeout,
        )

    def call(self, request: ApiRequest) -> ApiResponse:
        """Send `request` (raises ClientError when the server cannot be reached)."""
        return send(request, url=self.url, key=self.key, timeout=self.timeout)


def error_text(response: ApiResponse) -> str:
    """One line for stderr from an error answer: the server's message and code."""
    body = response.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error") or body.get("code") or ""
        extra = {k: v for k, v in body.items() if k not in ("error", "message", "code")}
        text = f"{body['message']} (HTTP {response.status}{', ' + code if code else ''})"
        return text + (f" {json.dumps(extra, sort_keys=True)}" if extra else "")
    snippet = str(body).strip()[:200] if body else ""
    return f"HTTP {response.status}" + (f": {snippet}" if snippet else "")


def summarize_fields(body: Any) -> str:
    """A generic summary: one `name: value` line per top-level field of a JSON answer."""
    if not isinstance(body, dict):
        return str(body)
    return "\n".join(
        f"{name}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for name, value in body.items()
    )


Perform = Callable[[Session], ApiResponse]
Summarize = Callable[[Any], str]


def run(args: argparse.Namespace, perform: Perform, summarize: Summarize) -> int:
    """Resolve the session, perform the call(s), print the outcome; returns the exit status."""
    prog = f"lockstep {args.command}"
    try:
        session = Session.resolve(args, os.environ, Path.cwd())
        response = perform(session)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    as_json = bool(getattr(args, "json", False))
    if not response.ok:
        print(f"{prog}: {error_text(response)}", file=sys.stderr)
        if as_json and response.body is not None:
            print(json.dumps(response.body, indent=2, ensure_ascii=False))
        return 1
    id_field = getattr(args, "id_only", None)
    if id_field and isinstance(response.body, dict) and response.body.get(id_field):
        print(response.body[id_field])
    elif as_json:
        if response.body is not None:
            print(json.dumps(response.body, indent=2, ensure_ascii=False))
    elif response.body is not None:
        print(summarize(response.body))
    return 0


# -- options -------------------------------------------------------------------------------------

Options = argparse._ActionsContainer
"""A parser or an argument group: where the option helpers add their options."""

CONNECTION_HELP: Final = """\
server: --url, else --config's [server] host:port, else $LOCKSTEP_URL, else http://127.0.0.1:8787/api
API key: --key, else $LOCKSTEP_API_KEY, else --config's api_keys, else ./lockstep-data/api-key
exit status: 0 success, 1 error answer (any non-2xx) or server unreachable, 2 usage error
"""


def add_connection(p: argparse.ArgumentParser) -> None:
    """--url, --key (--api-key), --config, --timeout and --json."""
    g = add_server(p)
    g.add_argument(
        "--json", action="store_true", help="print the server's JSON answer (errors too)"
    )


def add_server(p: argparse.ArgumentParser) -> Options:
    """--url, --key (--api-key), --config and --timeout (what `Session.resolve` reads), in a
    `server` group, which it returns."""
    g = p.add_argument_group("server")
    g.add_argument("--url", help=f"API base URL (default $LOCKSTEP_URL or {DEFAULT_URL})")
    g.add_argument(
        "--key",
        "--api-key",
        dest="key",
        help=f"API key (default $LOCKSTEP_API_KEY, else the file ./{KEY_FILE})",
    )
    g.add_argument(
        "--config",
        metavar="LOCKSTEP_TOML",
        help="find the server and key in this lockstep.toml (default $LOCKSTEP_CONFIG)",
    )
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    return g


def add_channels(p: Options) -> None:
    """--channels a,b (repeatable; --channel is the same)."""
    p.add_argument(
        "--channels",
        "--channel",
        dest="channels",
        action="append",
        metavar="SLUGS",
        help="recipient channel slugs, comma-separated (repeatable); default: every device",
    )


def add_tags(p: Options, *, clearable: bool) -> None:
    """--tags a,b (repeatable; --tag is the same) and, where tags can be replaced, --clear-tags."""
    p.add_argument(
        "--tags",
        "--tag",
        dest="tags",
        action="append",
        metavar="TAGS",
        help="history tags, comma-separated (repeatable)"
        + ("; replaces the current ones" if clearable else ""),
    )
    if clearable:
        p.add_argument("--clear-tags", action="store_true", help="remove every tag")


def add_metadata(p: Options) -> None:
    """--metadata JSON and --metadata-file PATH (server-side only; `{}` clears)."""
    p.add_argument(
        "--metadata",
        metavar="OBJECT",
        help="server-side details as a JSON object of scalars; '{}' clears them",
    )
    p.add_argument("--metadata-file", metavar="PATH", help="--metadata read from a file (- stdin)")
