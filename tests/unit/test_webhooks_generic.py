"""JSON pointers (RFC 6901), the generic mapping (sans-IO) and the `[[webhooks]]` settings."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.config import ConfigError
from engine.server.contract import errors
from engine.server.settings import load_settings
from engine.server.webhooks import generic, pointer
from engine.server.webhooks.config import WebhookConfig
from engine.server.webhooks.plan import Finish, Put

SECRET = "generic-secret-0123456789"

# RFC 6901 §5: the example document and what each pointer names.
RFC_DOC: dict[str, Any] = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("ptr", "value"),
    [
        ("", RFC_DOC),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_the_rfc_6901_examples(ptr: str, value: Any) -> None:
    assert pointer.resolve(RFC_DOC, ptr) == value


@pytest.mark.parametrize("ptr", ["/nope", "/foo/2", "/foo/01", "/foo/-", "/foo/0/x", "/foo/²"])
def test_a_pointer_naming_nothing_is_missing(ptr: str) -> None:
    assert pointer.resolve(RFC_DOC, ptr) is pointer.MISSING


@pytest.mark.parametrize("ptr", ["foo", "/a~2b", "/~"])
def test_invalid_pointers_are_refused(ptr: str) -> None:
    with pytest.raises(pointer.PointerError):
        pointer.check(ptr)


# -- the mapping ----------------------------------------------------------------------------------


def deploys(**changes: Any) -> WebhookConfig:
    values: dict[str, Any] = {
        "name": "deploys",
        "kind": "generic",
        "secret": SECRET,
        "stream_key": "/deploy/id",
        "map": {"title": "/deploy/name", "percentage": "/deploy/progress", "color": "/color"},
        "set": {"type": "progress", "color": "blue"},
        "end": "/deploy/state",
        "end_values": ("succeeded", "failed"),
        **changes,
    }
    return WebhookConfig(**values)


def state(action: Put | Finish) -> dict[str, Any]:
    return dict(msgspec.to_builtins(action.request.content_state))


def test_pointers_fill_the_content_state_and_constants_fill_the_rest() -> None:
    body = {"deploy": {"id": 42, "name": "api v2", "progress": 40, "state": "running"}}
    plan = generic.plan(body, deploys())
    [action] = plan.actions
    assert isinstance(action, Put) and action.key == "deploys-42"
    assert state(action) == {
        "title": "api v2",
        "type": "progress",
        "percentage": 40,
        "color": "blue",
    }
    assert plan.event == "delivery" and "deploys-42" in plan.summary


def test_a_mapped_value_wins_over_the_constant_and_null_leaves_it() -> None:
    body = {"deploy": {"id": "a", "name": "x", "progress": None}, "color": "red"}
    [action] = generic.plan(body, deploys()).actions
    assert state(action) == {"title": "x", "type": "progress", "color": "red"}


@pytest.mark.parametrize(
    ("value", "ends"), [("succeeded", True), ("failed", True), ("running", False)]
)
def test_the_end_pointer_ends_the_stream(value: str, ends: bool) -> None:
    body = {"deploy": {"id": 1, "name": "x", "progress": 100, "state": value}}
    [action] = generic.plan(body, deploys(auto_dismiss_minutes=1)).actions
    assert isinstance(action, Finish) is ends


def test_end_values_compare_types_too() -> None:
    cfg = deploys(end="/done", end_values=(True,))
    body = {"deploy": {"id": 1, "name": "x"}, "done": 1}
    assert isinstance(generic.plan(body, cfg).actions[0], Put)
    body["done"] = True
    assert isinstance(generic.plan(body, cfg).actions[0], Finish)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1], "payload (root): must be a JSON object"),
        ({"deploy": {"name": "x"}}, "payload /deploy/id: is missing"),
        ({"deploy": {"id": {"a": 1}, "name": "x"}}, "payload /deploy/id: must be a string"),
        ({"deploy": {"id": "a b", "name": "x"}}, "payload /deploy/id: must be letters"),
        ({"deploy": {"id": 1}}, "content_state.title: is required"),
        ({"deploy": {"id": 1, "name": "x", "progress": 140}}, "(mapped from /deploy/progress)"),
        ({"deploy": {"id": 1, "name": "x"}, "color": "teal"}, "(mapped from /color)"),
    ],
)
def test_malformed_deliveries_are_400s_naming_the_pointer(body: Any, message: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        generic.plan(body, deploys())
    assert message in caught.value.message


# -- settings -------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "lockstep.toml"
    path.write_text(textwrap.dedent(text))
    return load_settings(path, env=env or {})


GITHUB = f"""
[[webhooks]]
name = "gh"
kind = "github"
secret = "{SECRET}"
channels = ["ops"]
"""


def test_webhooks_load_from_the_config_and_hide_their_secret(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        GITHUB
        + """
        [[webhooks]]
        name = "deploys"
        kind = "generic"
        secret_env = "DEPLOY_HOOK_SECRET"
        stream_key = "/id"
        end = "/done"
        [webhooks.map]
        title = "/name"
        [webhooks.set]
        type = "value"
        value = "deploying"
        """,
        env={"DEPLOY_HOOK_SECRET": "from-the-environment-1234"},
    )
    gh, deploy = settings.webhooks
    assert (gh.name, gh.kind, gh.channels, gh.keep) == ("gh", "github", ("ops",), 100)
    assert deploy.secret == "from-the-environment-1234" and deploy.map == {"title": "/name"}
    assert SECRET not in repr(settings) and "from-the-environment" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GITHUB.replace('"github"', '"gitlab"'), "kind: must be one of github, generic"),
        (GITHUB.replace(f'secret = "{SECRET}"', ""), "secret: required"),
        (GITHUB.replace(SECRET, "short"), "secret: required, at least 16"),
        (GITHUB + GITHUB, "the name 'gh' is used twice"),
        (GITHUB.replace('"gh"', '"g h"'), "name: 'g h' must be"),
        (GITHUB.replace('["ops"]', '["Ops"]'), "channels: 'Ops' is not a channel slug"),
        (GITHUB + 'stream_key = "/id"', "only apply to kind 'generic'"),
        (GITHUB + "colour = 1", "unknown key(s) colour"),
        (GITHUB + "keep = 0", "keep: must be an integer >= 1"),
        (GITHUB.replace('"github"', '"generic"'), "stream_key: required"),
        (GITHUB.replace('"github"', '"generic"') + 'stream_key = "id"', "must be empty or start"),
        (
            GITHUB.replace('"github"', '"generic"')
            + 'stream_key = "/id"\n[webhooks.map]\nx = "/x"',
            "unknown content_state field(s) x",
        ),
        (
            GITHUB.replace('"github"', '"generic"')
            + 'stream_key = "/id"\n[webhooks.set]\ntitle = "t"',
            "content_state.type needs a map or set entry",
        ),
        (
            GITHUB.replace('"github"', '"generic"')
            + 'stream_key = "/id"\n[webhooks.set]\ntitle = "t"\ntype = "flashy"',
            ".set:",
        ),
        ("webhooks = 3", "must be an array of tables"),
        (GITHUB.replace(f'secret = "{SECRET}"', 'secret_env = "NOPE"'), "'NOPE' is not set"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)
