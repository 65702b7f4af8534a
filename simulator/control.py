"""The simulator's control API: JSON over HTTP on its own port (served by hypercorn, trio worker).

Routes (shapes in the README):
- `GET  /healthz`              → `{"ok": true}`
- `GET  /info`                 → where the CA, signing key and APNs listener are, plus counters
- `GET  /devices`              → every simulated device with its Live Activities
- `GET  /devices/{name}`       → one device (404 if unknown)
- `POST /devices`              → create a device: `{"name", "push_to_start_token"?, "channels"?,
                                 "profile"?}` (profile fields: simulator/profile.py)
- `POST /devices/{name}/actions` → what the user or the network does to a device:
                                 `{"action": "allow" | "deny" | "dismiss" | "rotate-token" |
                                 "offline" | "online" | "expire-token", "activity_id"?,
                                 "token"?}`; answers
                                 `{"action", "device", "activity_id"?, "token"?, "delivered"?}`
- `GET  /pushes?limit=N&token=T` → the newest received pushes with their outcome, oldest first
- `GET  /`, `GET /ui/app.css`, `GET /ui/app.js` → the lock screens page (webui), read-only
- `GET  /api/dashboard`        → what that page draws (simulator/webview.py), `"activities": null`
                                 (the server's view is on `lockstep serve`'s own page)

Errors are always `{"error": "<code>", "message": "<sentence>"}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qs, unquote

import msgspec

from simulator.apns import FakeApns
from simulator.profile import DeviceProfile
from simulator.webview import page_state
from webui import asset_at, page_headers

_T = TypeVar("_T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_BODY = 64 * 1024
_encoder = msgspec.json.Encoder()


class NewDevice(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /devices`."""

    name: str
    push_to_start_token: str | None = None
    channels: list[str] = msgspec.field(default_factory=list)
    profile: DeviceProfile | None = None


class DeviceAction(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /devices/{name}/actions`."""

    action: Literal["allow", "deny", "dismiss", "rotate-token", "offline", "online", "expire-token"]
    activity_id: str | None = None
    token: str | None = None  # expire-token: which of the device's tokens


_NEEDS_ACTIVITY: Final = frozenset({"allow", "deny", "dismiss", "rotate-token"})


class ControlError(Exception):
    """An error answer of the control API."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


class ControlApp:
    """ASGI application exposing the simulator's state."""

    def __init__(self, apns: FakeApns, info: Callable[[], dict[str, Any]] | None = None) -> None:
        self.apns = apns
        self.info = info or dict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: lifespan events, or one HTTP request answered with JSON."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and await _page_file(scope["path"], send):
            return
        try:
            body = await _read_body(receive)
            status, payload = self.route(
                scope["method"], scope["path"], scope.get("query_string", b""), body
            )
        except ControlError as exc:
            status, payload = exc.status, {"error": exc.error, "message": exc.message}
        await _respond(send, status, payload)

    def route(self, method: str, path: str, query: bytes, body: bytes) -> tuple[int, Any]:
        """Dispatch one request; raises `ControlError` for error answers."""
        parts = [p for p in path.split("/") if p]
        now = self.apns.wall_clock()
        if parts == ["healthz"]:
            return 200, {"ok": True}
        if parts == ["info"]:
            return 200, {**self.info(), **self.apns.snapshot()}
        if parts == ["devices"] and method == "GET":
            self.apns.tick(now)
            return 200, {"devices": self.apns.registry.snapshot(now)}
        if parts == ["devices"] and method == "POST":
            return 201, self._create_device(body, now)
        if len(parts) == 3 and parts[0] == "devices" and parts[2] == "actions":
            if method != "POST":
                raise ControlError(405, "method_not_allowed", f"{method} is not allowed on {path}")
            return 200, self._act(unquote(parts[1]), body, now)
        if len(parts) == 2 and parts[0] == "devices" and method == "GET":
            self.apns.tick(now)
            device = self.apns.registry.device_snapshot(unquote(parts[1]), now)
            if device is None:
                raise ControlError(404, "not_found", f"no simulated device named {parts[1]!r}")
            return 200, device
        if parts == ["pushes"] and method == "GET":
            return 200, {"pushes": self._pushes(query)}
        if parts == ["api", "dashboard"] and method == "GET":
            return 200, {**page_state(self.apns, now), "source": "simulator", "activities": None}
        if parts and parts[0] in {"healthz", "info", "devices", "pushes", "api"}:
            raise ControlError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise ControlError(404, "not_found", f"no route for {path}")

    def _create_device(self, body: bytes, now: float) -> dict[str, Any]:
        new = _decode(body, NewDevice, "device")
        try:
            self.apns.registry.add_device(
                new.name,
                push_to_start_token=new.push_to_start_token,
                channels=new.channels,
                profile=new.profile,
                now=now,
            )
        except ValueError as exc:
            raise ControlError(409, "conflict", str(exc)) from None
        snapshot = self.apns.registry.device_snapshot(new.name, now)
        assert snapshot is not None
        for sink in self.apns.device_sinks:
            sink(snapshot)
        return snapshot

    def _act(self, name: str, body: bytes, now: float) -> dict[str, Any]:
        """Carry out one device action; the answer carries the device as it is afterwards."""
        act = _decode(body, DeviceAction, "action")
        registry = self.apns.registry
        if registry.device_snapshot(name, now) is None:
            raise ControlError(404, "not_found", f"no simulated device named {name!r}")
        answer: dict[str, Any] = {"action": act.action}
        if act.action in _NEEDS_ACTIVITY:
            if act.activity_id is None:
                raise ControlError(400, "bad_request", f"{act.action!r} needs an activity_id")
            answer["activity_id"] = act.activity_id
        if act.action == "expire-token" and act.token is None:
            raise ControlError(400, "bad_request", "'expire-token' needs a token")
        try:
            answer.update(self._do(act, name, now))
        except KeyError as exc:
            raise ControlError(404, "not_found", str(exc.args[0])) from None
        except LookupError as exc:
            raise ControlError(409, "conflict", str(exc)) from None
        self.apns.forward_token_reports()
        answer["device"] = registry.device_snapshot(name, now)
        return answer

    def _do(self, act: DeviceAction, name: str, now: float) -> dict[str, Any]:
        """The registry call behind one action, and what it adds to the answer."""
        registry, activity_id = self.apns.registry, act.activity_id or ""
        if act.action == "allow":
            return {"token": registry.allow(name, activity_id, now=now)}
        if act.action == "rotate-token":
            return {"token": registry.rotate(name, activity_id, now=now)}
        if act.action == "expire-token":
            assert act.token is not None  # checked by `_act`
            registry.expire_device_token(name, act.token.lower(), now=now)
            return {"token": act.token.lower()}
        if act.action == "deny":
            registry.deny(name, activity_id, now=now)
        elif act.action == "dismiss":
            registry.dismiss(name, activity_id, now=now)
        else:
            outcomes = registry.set_online(name, act.action == "online", now=now)
            return {"delivered": [o.to_json() for o in outcomes]}
        return {}

    def _pushes(self, query: bytes) -> list[dict[str, Any]]:
        params = parse_qs(query.decode("latin-1"))
        try:
            limit = int(params.get("limit", ["100"])[0])
        except ValueError:
            raise ControlError(400, "bad_request", "limit must be an integer") from None
        if not 1 <= limit <= 100_000:
            raise ControlError(400, "bad_request", "limit must be between 1 and 100000")
        token = params.get("token", [None])[0]
        records = [r for r in self.apns.log if token is None or r.token == token]
        return [r.to_json() for r in records[-limit:]]


def _decode(body: bytes, kind: type[_T], what: str) -> _T:
    """Decode a JSON body into `kind`; a 400 saying what is wrong otherwise."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise ControlError(400, "bad_request", f"invalid {what}: {exc}") from None
    except msgspec.DecodeError:
        raise ControlError(400, "bad_request", "body is not valid JSON") from None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise ControlError(413, "payload_too_large", f"request body over {_MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _page_file(path: str, send: Send) -> bool:
    """Serve a file of the lock screens page (`webui.PATHS`); False for any other path."""
    found = asset_at(path)
    if found is None:
        return False  # answered by `route`: 404 naming the path
    headers = [
        (b"content-type", found.content_type),
        (b"content-length", str(len(found.body)).encode()),
        (b"cache-control", b"no-store"),
        *page_headers(),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": found.body})
    return True


async def _respond(send: Send, status: int, payload: Any) -> None:
    body = _encoder.encode(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
