"""The README's Python snippet for pointing the official SDK at Lockstep, run as documented.

The snippet is read from README.md ("Pointing the official SDKs at Lockstep", its first `python`
block) and executed unmodified but for the server address (the live server listens on a port
picked at start, not 8787) from a directory holding `lockstep-data/api-key`, as after `make run`.
The simulated iPhones must show the activity it streamed, ended.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.serverkit import API_KEY, LiveServer, server_fixture, wait_until

pytestmark = pytest.mark.e2e

server = server_fixture(seed=4143)

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Pointing the official SDKs at Lockstep"
DOCUMENTED_URL = "http://127.0.0.1:8787/api"


def python_snippet() -> str:
    """The first ```python block of the README section."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no python block after {SECTION!r}"
    return match.group(1)


def test_the_documented_python_snippet_runs_against_lockstep(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snippet = python_snippet()
    assert snippet.count(DOCUMENTED_URL) == 1, "the snippet names the server once"
    assert "from activitysmith import ActivitySmith" in snippet  # the high-level client
    (tmp_path / "lockstep-data").mkdir()
    (tmp_path / "lockstep-data" / "api-key").write_text(API_KEY + "\n")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(
            compile(snippet.replace(DOCUMENTED_URL, server.api_base), str(README), "exec"),
            namespace,
        )
    reply = namespace["reply"]
    assert reply.operation == "started"
    assert out.getvalue() == f"started {reply.activity_id}\n"
    expected = {
        "type": "metrics",
        "title": "Server Health",
        "metrics": [
            {"label": "CPU", "value": 9, "unit": "%"},
            {"label": "MEM", "value": 45, "unit": "%"},
        ],
    }

    def ended(shown: dict[str, dict[str, Any]]) -> bool:
        return len(shown) == 2 and all(
            a["state"] == "ended" and a["content_state"] == expected for a in shown.values()
        )

    wait_until(
        lambda: server.shown(reply.activity_id),
        ended,
        timeout=10.0,
        what="the README's stream ended on both phones",
    )
