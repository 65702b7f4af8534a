"""The browser tests' Chromium lookup: skip without one locally, fail without one under CI=true."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import browserkit


def test_without_chromium_the_browser_tests_skip_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium on PATH"):
        browserkit.require_chromium()


def test_without_chromium_under_ci_the_browser_tests_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        browserkit.require_chromium()


def test_the_system_chromium_is_found_by_either_name(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {"chromium-browser": "/usr/bin/chromium-browser"}
    monkeypatch.setattr(shutil, "which", found.get)
    monkeypatch.setenv("CI", "true")
    assert browserkit.require_chromium() == "/usr/bin/chromium-browser"
