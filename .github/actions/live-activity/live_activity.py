"""The step of the `live-activity` GitHub Action: one call of Lockstep's HTTP API.

Reads the action's inputs from the environment (`INPUT_*`, `LOCKSTEP_URL`, `LOCKSTEP_API_KEY`,
`LOCKSTEP_TIMEOUT`; action.yml maps them), builds the request, and:

- `end` false: `PUT {url}/live-activity/stream/{stream-key}` with the content state (the first
  call starts the Live Activity, later ones update it);
- `end` true: `DELETE {url}/live-activity/stream/{stream-key}`, with the final content state if
  any input gives one.

On a 2xx answer it writes the outputs `activity_id` and `response` (the compact JSON answer) to
`$GITHUB_OUTPUT` and a line to the job's summary (`$GITHUB_STEP_SUMMARY`); on anything else it
prints a `::error::` line with the server's message and exits 1, which fails the step. The API
key goes only into the Authorization header.

Standard library only, so that it runs on any runner with python3.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STREAM_KEY = re.compile(r"[A-Za-z0-9_-]{1,255}")
NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")

# Input name (as in action.yml, upper-cased with _) -> content_state field.
TEXT_FIELDS = {
    "TYPE": "type",
    "TITLE": "title",
    "SUBTITLE": "subtitle",
    "COLOR": "color",
    "STEP_COLOR": "step_color",
    "MESSAGE": "message",
}
NUMBER_FIELDS = {
    "NUMBER_OF_STEPS": "number_of_steps",
    "CURRENT_STEP": "current_step",
    "PERCENTAGE": "percentage",
    "UPPER_LIMIT": "upper_limit",
    "DURATION_SECONDS": "duration_seconds",
    "AUTO_DISMISS_SECONDS": "auto_dismiss_seconds",
    "AUTO_DISMISS_MINUTES": "auto_dismiss_minutes",
}


class InputError(Exception):
    """An input cannot make a request; the message names the input."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the Authorization header somewhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def scalar(text: str) -> int | float | str:
    """A plain decimal number as a number; anything else unchanged (the server says if wrong)."""
    text = text.strip()
    if NUMBER.fullmatch(text) is None:
        return text
    return float(text) if "." in text else int(text)


def json_input(env: Mapping[str, str], name: str, kind: type) -> Any:
    """The JSON value of input `name` (None when empty), which must be of `kind`."""
    raw = env.get(f"INPUT_{name}", "").strip()
    if not raw:
        return None
    label = name.lower().replace("_", "-")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, kind):
        raise InputError(f"{label} must be a JSON {'object' if kind is dict else 'array'}")
    return value


def content_state(env: Mapping[str, str]) -> dict[str, Any]:
    """`content-state` first, then every other content input over it."""
    state: dict[str, Any] = json_input(env, "CONTENT_STATE", dict) or {}
    for name, field in TEXT_FIELDS.items():
        if env.get(f"INPUT_{name}", ""):
            state[field] = env[f"INPUT_{name}"]
    for name, field in NUMBER_FIELDS.items():
        if env.get(f"INPUT_{name}", "").strip():
            state[field] = scalar(env[f"INPUT_{name}"])
    if env.get("INPUT_VALUE", "").strip():
        state["value"] = scalar(env["INPUT_VALUE"])
    if env.get("INPUT_ICON", ""):
        state["icon"] = {"symbol": env["INPUT_ICON"]}
    if env.get("INPUT_BADGE", ""):
        state["badge"] = {"title": env["INPUT_BADGE"]}
    metrics = json_input(env, "METRICS", list)
    if metrics is not None:
        state["metrics"] = metrics
    return state


def build(env: Mapping[str, str]) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path below the base URL, JSON body or None) for the inputs in `env`."""
    key = env.get("INPUT_STREAM_KEY", "").strip()
    if STREAM_KEY.fullmatch(key) is None:
        raise InputError(f"stream-key must be 1-255 letters, digits, _ or -; got {key!r}")
    end = env.get("INPUT_END", "").strip().lower() or "false"
    if end not in ("true", "false"):
        raise InputError(f"end must be true or false; got {end!r}")
    body: dict[str, Any] = {}
    state = content_state(env)
    if state:
        body["content_state"] = state
    alert = {
        field: env[f"INPUT_ALERT_{field.upper()}"]
        for field in ("title", "body")
        if env.get(f"INPUT_ALERT_{field.upper()}", "")
    }
    if alert:
        body["alert"] = alert
    channels = re.split(r"[\s,]+", env.get("INPUT_CHANNELS", "").strip())
    path = "/live-activity/stream/" + urllib.parse.quote(key, safe="")
    if end == "true":
        return "DELETE", path, body or None
    if channels != [""]:
        body["channels"] = channels
    return "PUT", path, body


def send(
    method: str, url: str, body: dict[str, Any] | None, key: str, timeout: float
) -> tuple[int, Any]:
    """One request: (status, decoded JSON or the text); OSError when the server is unreachable."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, decode(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, decode(exc.read())


def decode(raw: bytes) -> Any:
    """JSON when it is JSON, else the text."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def error_text(status: int, body: Any) -> str:
    """The server's message and code, or the start of a non-JSON answer."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error") or body.get("code") or ""
        return f"{body['message']} (HTTP {status}{', ' + code if code else ''})"
    snippet = str(body).strip()[:200] if body else ""
    return f"HTTP {status}" + (f": {snippet}" if snippet else "")


def escape(text: str) -> str:
    """A workflow command's message (`%`, CR and LF escaped as GitHub reads them)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def fail(message: str) -> int:
    """Print the error for the log and the annotations; exit status 1 fails the step."""
    print(f"::error title=Lockstep::{escape(message)}")
    return 1


def write_outputs(path: str, outputs: Mapping[str, str]) -> None:
    """Append `name=value` lines to the `$GITHUB_OUTPUT` file (values are single lines)."""
    with Path(path).open("a", encoding="utf-8") as out:
        out.writelines(f"{name}={value}\n" for name, value in outputs.items())


def write_summary(path: str, answer: Mapping[str, Any]) -> None:
    """One line for the job's summary page: the stream, what happened, on how many devices."""
    what = answer.get("operation") or ("ok" if answer.get("success") else "answered")
    line = f"Lockstep: stream `{answer.get('stream_key', '?')}` {what}"
    if answer.get("activity_id"):
        line += f", Live Activity `{answer['activity_id']}`"
    counts = [f"{answer[k]} {k.replace('_', ' ')}" for k in ("devices_notified", "devices_queued")
              if isinstance(answer.get(k), int)]  # fmt: skip
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(line + (f" ({', '.join(counts)})" if counts else "") + "\n")


def main(env: Mapping[str, str]) -> int:
    """Run the step; the exit status."""
    url = env.get("LOCKSTEP_URL", "").strip().rstrip("/")
    key = env.get("LOCKSTEP_API_KEY", "").strip()
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return fail(f"url must be an http:// or https:// URL ending in /api; got {url!r}")
    if not key:
        return fail("api-key is empty (is the secret set for this repository?)")
    try:
        method, path, body = build(env)
        timeout = float(env.get("LOCKSTEP_TIMEOUT", "") or 30)
    except InputError as exc:
        return fail(str(exc))
    except ValueError:
        return fail("timeout must be a number of seconds")
    try:
        status, answer = send(method, url + path, body, key, timeout)
    except (OSError, ValueError) as exc:
        return fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}")
    if not 200 <= status < 300:
        return fail(f"{method} {path}: {error_text(status, answer)}")
    response = json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
    activity_id = answer.get("activity_id") if isinstance(answer, dict) else None
    print(f"Lockstep: {method} {path} -> HTTP {status}: {response}")
    if env.get("GITHUB_STEP_SUMMARY") and isinstance(answer, dict):
        write_summary(env["GITHUB_STEP_SUMMARY"], answer)
    if env.get("GITHUB_OUTPUT"):
        write_outputs(
            env["GITHUB_OUTPUT"], {"activity_id": activity_id or "", "response": response}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(os.environ))
