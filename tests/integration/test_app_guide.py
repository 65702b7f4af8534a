"""The iOS app guide (`docs/ios-app.md`) says what the server really sends.

Its JSON blocks are regenerated from the real service, engine and simulated iPhones
(`tests.helpers.appguide`) and must equal the committed text; its Swift attributes type must
declare exactly the fields a content state can carry (from the server's own models), so an app
built from the guide decodes every push.
"""

from __future__ import annotations

import json
import re

import msgspec

from engine.server.contract import content
from tests.helpers import appguide


def _swift() -> str:
    text = appguide.GUIDE.read_text()
    match = re.search(r"<!-- swift:attributes -->\n```swift\n(.*?)```", text, re.DOTALL)
    assert match, "docs/ios-app.md lost its Swift attributes block"
    return match.group(1)


def _swift_fields(source: str, struct: str) -> set[str]:
    match = re.search(rf"struct {struct}\b[^{{\n]*\{{([^\n]*)\}}", source)  # one line
    if match is None:
        match = re.search(rf"struct {struct}\b[^{{]*\{{(.*?)\n    \}}", source, re.DOTALL)
    assert match, f"no struct {struct} in the guide's Swift"
    return set(re.findall(r"\blet (\w+):", match.group(1)))


def _fields(model: type[msgspec.Struct]) -> set[str]:
    return {f.name for f in msgspec.structs.fields(model)}


def test_the_guide_shows_the_pushes_the_server_sends() -> None:
    text = appguide.GUIDE.read_text()
    fresh = appguide.render(text, appguide.blocks())
    assert fresh == text, "docs/ios-app.md is stale: python -m tests.helpers.appguide --write"


def test_the_swift_attributes_declare_every_field_a_push_can_carry() -> None:
    swift = _swift()
    shown = (_fields(content.ContentState) - {"auto_dismiss_minutes", "auto_dismiss_seconds"}) | {
        "action",
        "secondary_action",
    }
    assert _swift_fields(swift, "ContentState") == shown
    assert _swift_fields(swift, "Icon") == _fields(content.Icon)
    assert _swift_fields(swift, "Badge") == _fields(content.Badge)
    assert _swift_fields(swift, "Metric") == _fields(content.Metric)
    assert _swift_fields(swift, "Action") == {"title", "type", "url"}  # what reaches a device
    assert _swift_fields(swift, "LockstepActivityAttributes") >= {"activity_id", "stream_key"}


def test_every_generated_state_uses_only_declared_fields() -> None:
    swift = _swift()
    declared = _swift_fields(swift, "ContentState")
    block = appguide.blocks()["content_states"]
    states = [json.loads(line) for line in block.splitlines() if line.startswith("{")]
    assert len(states) >= 3 * len(content.CONTENT_TYPES)
    assert {s["type"] for s in states} == set(content.CONTENT_TYPES)
    for state in states:
        assert set(state) <= declared, set(state) - declared
